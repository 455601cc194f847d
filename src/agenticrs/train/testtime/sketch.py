"""Hierarchical probabilistic hashing (MATT-CTR, arXiv:2510.08932): how often each feature
combination of a row occurred in training, with a lower bound that holds at a stated probability.

What the paper says (abstract and a third-party summary only): frequencies of feature
combinations of several orders are bounded by a hashing structure; high-frequency combinations
are isolated in a min-heap with exact counts, low-frequency ones are modelled probabilistically
to derive a lower bound. Everything below is **our design** following that sentence
(`../shared/specs/matt_ctr.md` section 3):

- `CountMinSketch`: D rows of W counters. The estimate ĉ = min_r CMS[r][h_r(x)] never
  under-counts; with ε = e/W it over-counts by more than ε·N (N = the total counted) with
  probability at most δ = e^-D, so ĉ_low = max(0, ĉ - ε·N) is a lower bound on the true count
  with probability at least 1 - e^-D.
- `HeavyHitters`: the heavy combinations with exact counts. The paper's min-heap is a mergeable
  Space-Saving summary here, updated once per chunk of rows with the chunk's exact counts
  (vectorised; no per-row Python): an entry holds (count, error) with count - error <= true <=
  count, a key absent from a full summary has a true count at most the summary's minimum, and a
  key admitted before the summary filled (error 0) is exact. On a stream whose heavy keys occur in
  its first chunk (any shuffled log) every key heavier than N/H is held exactly.
- `HierarchicalHashing`: one sketch and one summary per interaction order (1: single values,
  2: every pair of fields, 3: the `max_triples` field triples with the largest summed field-label
  mutual information measured on the first chunk), built in ONE streaming pass over the
  categorical ids of the training split and saved as one `.npz` with the run.

Keys are 64-bit mixes (splitmix64) of (order, field indices, value ids); row r of a sketch hashes
with its own seed.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.data.shards import release_pages
from agenticrs.runtime.files import atomic_save

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array: a stable, well-spread 64-bit hash."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class CountMinSketch:
    """D x W counters; `estimate` never under-counts, `lower` holds with probability >= 1 - e^-D."""

    def __init__(self, depth: int, width: int, seed: int = 0) -> None:
        if depth < 1 or width < 2:
            raise ValueError(f"a count-min sketch needs depth >= 1 and width >= 2 (got depth {depth}, width {width})")
        self.depth, self.width, self.seed = depth, width, seed
        self.table = np.zeros((depth, width), dtype=np.int32)  # int32 halves the memory; `add` refuses overflow
        self.total = 0
        self._row_seeds = mix64(np.arange(depth, dtype=np.uint64) + np.uint64(seed) * np.uint64(1000003))

    @property
    def epsilon(self) -> float:
        """The relative error of the CMS guarantee: ĉ <= c + ε·N with probability >= 1 - δ."""
        return math.e / self.width

    @property
    def delta(self) -> float:
        return math.exp(-self.depth)

    def _columns(self, keys: np.ndarray, row: int) -> np.ndarray:
        return (mix64(keys ^ self._row_seeds[row]) % np.uint64(self.width)).astype(np.int64)

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add `counts` to `keys` (unique or not)."""
        counts = np.asarray(counts, dtype=np.int64)
        if self.total + int(counts.sum()) >= 2**31:
            raise ValueError("the count-min sketch holds int32 counters: more than 2^31 combinations were counted")
        for row in range(self.depth):
            added = np.bincount(self._columns(keys, row), weights=counts, minlength=self.width)
            self.table[row] += np.rint(added).astype(np.int32)
        self.total += int(counts.sum())

    def estimate(self, keys: np.ndarray) -> np.ndarray:
        """min over rows: an upper bound on every key's true count."""
        out = self.table[0, self._columns(keys, 0)].astype(np.int64)
        for row in range(1, self.depth):
            out = np.minimum(out, self.table[row, self._columns(keys, row)])
        return out

    def lower(self, keys: np.ndarray) -> np.ndarray:
        """max(0, ĉ - ε·N): a lower bound on the true count with probability >= 1 - e^-D."""
        return np.maximum(self.estimate(keys) - math.floor(self.epsilon * self.total), 0)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)


class HeavyHitters:
    """A mergeable Space-Saving summary of at most `capacity` keys: (key, count, error) sorted by key.

    Invariants (for every key of the stream so far): an entry's true count lies in
    [count - error, count]; a key without an entry has a true count <= `floor` (the minimum count
    when the summary is full, else 0). An entry with error 0 is exact."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the heavy-hitter summary needs a capacity >= 1 (got {capacity})")
        self.capacity = capacity
        self.keys = np.zeros(0, dtype=np.uint64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.errors = np.zeros(0, dtype=np.int64)

    @property
    def floor(self) -> int:
        return int(self.counts.min()) if len(self.keys) >= self.capacity else 0

    def update(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Merge a chunk's exact counts (`keys` unique)."""
        floor = self.floor
        present = np.isin(keys, self.keys, assume_unique=True)
        all_keys = np.concatenate([self.keys, keys])
        all_counts = np.concatenate([self.counts, counts + np.where(present, 0, floor)])
        all_errors = np.concatenate([self.errors, np.where(present, 0, floor)])
        merged, inverse = np.unique(all_keys, return_inverse=True)
        count = np.bincount(inverse, weights=all_counts, minlength=len(merged))
        # a key's error is its admission error: the chunk part of a present key adds 0
        error = np.zeros(len(merged), dtype=np.int64)
        np.maximum.at(error, inverse, all_errors)
        count = np.rint(count).astype(np.int64)
        if len(merged) > self.capacity:
            keep = np.argpartition(-count, self.capacity - 1)[: self.capacity]
            keep.sort()
            merged, count, error = merged[keep], count[keep], error[keep]
        self.keys, self.counts, self.errors = merged, count, error

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, count, error) for each key; count and error are 0 where not found."""
        if len(self.keys) == 0:
            zeros = np.zeros(keys.shape, dtype=np.int64)
            return np.zeros(keys.shape, dtype=bool), zeros, zeros
        position = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        found = self.keys[position] == keys
        return found, np.where(found, self.counts[position], 0), np.where(found, self.errors[position], 0)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.counts.nbytes + self.errors.nbytes)


class HashingConfig(BaseModel):
    """Settings of the hierarchical hashing (defaults from the spec: O = 2, D = 4, W = 2^20, H = 10^5)."""

    model_config = ConfigDict(extra="forbid")
    max_order: int = Field(2, ge=1, le=3, description="largest interaction order counted")
    depth: int = Field(4, ge=1, le=16, description="count-min rows D (the bound holds with prob. 1 - e^-D)")
    width: int = Field(1 << 20, ge=16, le=1 << 26, description="count-min columns W (ε = e/W)")
    heap_capacity: int = Field(100_000, ge=1, le=10_000_000, description="exact heavy-hitter entries H per order")
    max_triples: int = Field(20, ge=1, le=10_000, description="field triples counted at order 3")
    chunk_rows: int = Field(65_536, ge=1, description="rows per streaming chunk")
    seed: int = 0


@dataclass
class Bounds:
    """Counts of one order's combinations for a block of rows, each (B, C)."""

    lower: np.ndarray
    upper: np.ndarray
    exact: np.ndarray  # True where the count is known exactly (a heavy hitter with error 0)


class HierarchicalHashing:
    """One count-min sketch and one heavy-hitter summary per interaction order over categorical fields."""

    def __init__(self, config: HashingConfig, fields: list[str], combos: dict[int, list[tuple[int, ...]]]) -> None:
        self.config = config
        self.fields = list(fields)
        self.combos = {o: [tuple(c) for c in cs] for o, cs in combos.items()}
        self.sketches = {o: CountMinSketch(config.depth, config.width, config.seed * 7 + o) for o in self.combos}
        self.heavy = {o: HeavyHitters(config.heap_capacity) for o in self.combos}
        self.rows = 0
        self._field_keys = mix64(np.arange(len(fields), dtype=np.uint64) + np.uint64(0x51ED))

    @property
    def orders(self) -> list[int]:
        return sorted(self.combos)

    def incidence(self, order: int) -> np.ndarray:
        """(C, F) float: 1 where combination c of `order` contains field k."""
        out = np.zeros((len(self.combos[order]), len(self.fields)), dtype=np.float64)
        for c, combo in enumerate(self.combos[order]):
            out[c, list(combo)] = 1.0
        return out

    # -- keys --------------------------------------------------------------------------------------
    def keys(self, categorical: np.ndarray, order: int) -> np.ndarray:
        """(B, C) uint64 keys of the row's combinations of `order` (fields in `self.combos[order]`)."""
        values = np.asarray(categorical).astype(np.uint64)
        single = mix64(values ^ self._field_keys[None, :])  # (B, F): field and value
        combos = self.combos[order]
        if not combos:
            return np.zeros((len(values), 0), dtype=np.uint64)
        index = np.asarray(combos, dtype=np.int64)  # (C, order)
        key = np.full((len(values), len(combos)), np.uint64((order * int(_M2)) % (1 << 64)), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for position in range(order):
                key = mix64(key ^ single[:, index[:, position]])
        return key

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, categorical: Any, fields: list[str], config: HashingConfig | None = None,
              labels: Any = None) -> HierarchicalHashing:  # fmt: skip
        """One streaming pass over `categorical` ((N, F), a memory-mapped split array is read in
        `chunk_rows` blocks whose pages are released after use). `labels` (N,) choose the order-3
        triples from the first chunk's field-label mutual information (the first triples without)."""
        config = config or HashingConfig()
        n, f = categorical.shape
        if f != len(fields):
            raise ValueError(f"categorical has {f} columns but {len(fields)} field names were given")
        combos: dict[int, list[tuple[int, ...]]] = {1: [(k,) for k in range(f)]}
        if config.max_order >= 2 and f >= 2:
            combos[2] = list(itertools.combinations(range(f), 2))
        hph: HierarchicalHashing | None = None
        for start, block, block_labels in _blocks(categorical, labels, config.chunk_rows):
            if hph is None:
                if config.max_order >= 3 and f >= 3:
                    combos[3] = _top_triples(block, block_labels, config.max_triples)
                hph = cls(config, fields, combos)
            hph.add(block)
            del start
        return hph or cls(config, fields, combos)

    def add(self, categorical: np.ndarray) -> None:
        """Count one chunk of rows (every order)."""
        for order in self.orders:
            keys = self.keys(categorical, order).ravel()
            unique, counts = np.unique(keys, return_counts=True)
            self.sketches[order].add(unique, counts)
            self.heavy[order].update(unique, counts.astype(np.int64))
        self.rows += len(categorical)

    # -- queries ---------------------------------------------------------------------------------
    def bounds(self, categorical: np.ndarray, order: int) -> Bounds:
        """Lower and upper bounds on the training counts of a block's combinations of `order`.

        Exact for heavy hitters with error 0 (and 0 for a key missing from a summary that never
        filled); a summarised key with error e has [max(count - e, ĉ_low), min(count, ĉ)]; any other
        key [ĉ_low, min(ĉ, floor)], ĉ_low holding with probability >= 1 - e^-D."""
        return self.bounds_of_keys(self.keys(categorical, order), order)

    def bounds_of_keys(self, keys: np.ndarray, order: int) -> Bounds:
        """`bounds` for keys of `order` given directly (any shape)."""
        sketch, heavy = self.sketches[order], self.heavy[order]
        estimate = sketch.estimate(keys)
        low = np.maximum(estimate - math.floor(sketch.epsilon * sketch.total), 0)
        found, count, error = heavy.lookup(keys)
        full = len(heavy.keys) >= heavy.capacity
        # a summary that never filled has evicted nothing: a key without an entry never occurred
        absent_upper = np.minimum(estimate, heavy.floor) if full else np.zeros_like(estimate)
        upper = np.where(found, np.minimum(count, estimate), absent_upper)
        lower = np.minimum(np.where(found, np.maximum(count - error, low), low), upper)
        return Bounds(lower=lower, upper=upper, exact=(found & (error == 0)) | (~found & (not full)))

    def saturation(self, order: int) -> float:
        """κ of the confidence map: the median count of the order's heavy-hitter summary (>= 1)."""
        counts = self.heavy[order].counts
        return float(max(np.median(counts), 1.0)) if len(counts) else 1.0

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.sketches.values()) + sum(h.nbytes for h in self.heavy.values())

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        meta = {"config": self.config.model_dump(), "fields": self.fields, "rows": self.rows,
                "combos": {str(o): [list(c) for c in cs] for o, cs in self.combos.items()},
                "totals": {str(o): s.total for o, s in self.sketches.items()}}
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        for o in self.orders:
            arrays[f"table{o}"] = self.sketches[o].table
            arrays[f"keys{o}"] = self.heavy[o].keys
            arrays[f"counts{o}"] = self.heavy[o].counts
            arrays[f"errors{o}"] = self.heavy[o].errors
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> HierarchicalHashing:
        try:
            with np.load(path) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                hph = cls(HashingConfig.model_validate(meta["config"]), meta["fields"],
                          {int(o): [tuple(c) for c in cs] for o, cs in meta["combos"].items()})
                for o in hph.orders:
                    hph.sketches[o].table = data[f"table{o}"].astype(np.int32)
                    hph.sketches[o].total = int(meta["totals"][str(o)])
                    hph.heavy[o].keys = data[f"keys{o}"]
                    hph.heavy[o].counts = data[f"counts{o}"]
                    hph.heavy[o].errors = data[f"errors{o}"]
                hph.rows = int(meta["rows"])
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path} is not a saved hierarchical-hashing file ({exc}); delete it to rebuild") from exc
        return hph


def _blocks(categorical: Any, labels: Any, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    n = categorical.shape[0]
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        block = np.asarray(categorical[start:stop])
        block_labels = None if labels is None else np.asarray(labels[start:stop], dtype=np.float64)
        release_pages(categorical, start, stop)
        yield start, block, block_labels


def _field_label_information(block: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mutual information (nats) between each field's value and the binary label, on one block."""
    out = np.zeros(block.shape[1])
    y = (np.nan_to_num(labels) > 0.5).astype(np.int64)
    p1 = y.mean()
    if p1 in (0.0, 1.0):
        return out
    for k in range(block.shape[1]):
        _, value = np.unique(block[:, k], return_inverse=True)
        joint = np.bincount(value * 2 + y, minlength=2 * (value.max() + 1)).reshape(-1, 2) / len(y)
        pv = joint.sum(1, keepdims=True)
        py = np.array([[1 - p1, p1]])
        nz = joint > 0
        out[k] = float((joint[nz] * np.log(joint[nz] / (pv @ np.ones((1, 2)) * py)[nz])).sum())
    return out


def _top_triples(block: np.ndarray, labels: np.ndarray | None, limit: int) -> list[tuple[int, ...]]:
    triples = list(itertools.combinations(range(block.shape[1]), 3))
    if labels is None:
        return triples[:limit]
    information = _field_label_information(block, labels)
    scores = np.array([information[list(t)].sum() for t in triples])
    return [triples[i] for i in np.argsort(-scores, kind="stable")[:limit]]

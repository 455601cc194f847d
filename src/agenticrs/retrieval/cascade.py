"""Multi-objective retrieval data: every impression with the deepest cascade stage it reached.

Multi-objective embedding-based retrieval (CSMF, the multi-head two-tower) learns one user vector
per objective of the exposure -> click -> conversion cascade. Its positives are impressions
(objective 0: exposure), clicked impressions (1: click) and purchased ones (2: conversion); an
impression's `level` is the deepest of them it reached, so objective o trains on the rows with
level >= o. The simulator's impression logs hold all of it, each row with the user's behaviour
history at that moment (`hist_item_id`, oldest first): no leakage from later events.

Evaluation is retrieval from the whole catalogue. A query is a user on the validation (or test)
day, with the history of the user's first impression that day; its relevant set for objective o
is every item the user reached level >= o with that day. Recall@K and NDCG@K against those sets
are the metrics registry's `set_recall@k` / `set_ndcg@k`, named per objective
(`click/set_recall@50`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from agenticrs.data.errors import DataError
from agenticrs.gr.sequences import _sim_items, pad_histories
from agenticrs.retrieval.two_tower import attribute_matrix
from agenticrs.train.metrics import Hits, set_metrics

OBJECTIVES = ("exposure", "click", "conversion")
SPLITS = ("train", "valid", "test")
_COLUMNS = ["user_id", "item_id", "ts", "scenario", "hist_item_id", "click", "purchase"]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The flat positions of the ranges [start, start + length), in order (no Python loop)."""
    lengths = np.asarray(lengths, np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, np.int64), lengths) + (np.arange(int(lengths.sum())) - np.repeat(before, lengths))


@dataclass
class CascadeLog:
    """One split's impressions: (N,) users, items, ts, levels (0 exposed, 1 clicked, 2 purchased),
    scenario codes (index into `scenarios`), and the history CSR (`hist_offsets`, `hist_items`)."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    levels: np.ndarray
    scenario: np.ndarray
    hist_offsets: np.ndarray
    hist_items: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def histories(self, rows: np.ndarray, max_len: int) -> np.ndarray:
        """(len(rows), max_len) the rows' histories, most recent last, 0-padded on the left."""
        starts = self.hist_offsets[rows]
        lengths = self.hist_offsets[rows + 1] - starts
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        return pad_histories(offsets, self.hist_items[_ranges(starts, lengths)], max_len)


@dataclass
class CascadeData:
    """The train / valid / test impressions of one catalogue and the items' attribute bags."""

    name: str
    num_items: int
    train: CascadeLog
    valid: CascadeLog
    test: CascadeLog
    scenarios: tuple[str, ...]
    attribute_offsets: np.ndarray
    attributes: np.ndarray

    def split(self, name: str) -> CascadeLog:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def attribute_matrix(self, max_attributes: int, buckets: int) -> np.ndarray:
        """(num_items + 1, max_attributes) hashed attribute ids + 1 (`two_tower.attribute_matrix`)."""
        return attribute_matrix(self, max_attributes, buckets)  # type: ignore[arg-type]

    def positive_counts(self) -> np.ndarray:
        """(objectives, num_items + 1) how often each item is a training positive of each objective."""
        train = self.train
        return np.stack([np.bincount(train.items[train.levels >= o], minlength=self.num_items + 1)
                         for o in range(len(OBJECTIVES))])  # fmt: skip


def _read_split(path: Path, num_items: int, scenarios: dict[str, int]) -> CascadeLog:
    if not path.is_file():
        raise DataError("file not found", file=str(path), expected="a simulator output folder (impressions_*.parquet)")
    schema = pq.read_schema(str(path))
    missing = [c for c in _COLUMNS if c not in schema.names]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", file=str(path), field=missing[0],
                        expected=f"the simulator's impression columns {', '.join(_COLUMNS)}")  # fmt: skip
    table = pq.read_table(str(path), columns=_COLUMNS)
    items = table.column("item_id").to_numpy().astype(np.int64)
    bad = np.flatnonzero((items < 1) | (items > num_items))
    if len(bad):
        raise DataError(f"item id {items[bad[0]]} is outside the catalogue 1..{num_items}", file=str(path),
                        row=int(bad[0]), field="item_id", expected="ids of items.parquet")  # fmt: skip
    click = table.column("click").to_numpy().astype(np.int8)
    purchase = table.column("purchase").to_numpy().astype(np.int8)
    bad = np.flatnonzero(purchase > click)
    if len(bad):
        raise DataError("a purchase without a click", file=str(path), row=int(bad[0]), field="purchase",
                        expected="purchase = 1 only on clicked impressions")  # fmt: skip
    hist = table.column("hist_item_id").combine_chunks()
    if hist.null_count:
        hist = pc.fill_null(hist, pa.scalar([], hist.type))
    hist_offsets = hist.offsets.to_numpy().astype(np.int64)
    hist_offsets = hist_offsets - hist_offsets[0]
    hist_items = hist.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    if len(hist_items) and (hist_items.min() < 1 or hist_items.max() > num_items):
        row = int(np.searchsorted(hist_offsets, int(np.flatnonzero((hist_items < 1) | (hist_items > num_items))[0]),
                                  side="right") - 1)  # fmt: skip
        raise DataError("a history item is outside the catalogue", file=str(path), row=row, field="hist_item_id",
                        expected=f"ids in 1..{num_items}")  # fmt: skip
    names = table.column("scenario").to_numpy(zero_copy_only=False)
    codes = np.array([scenarios.setdefault(str(s), len(scenarios)) for s in np.unique(names)], dtype=np.int64)
    _, inverse = np.unique(names, return_inverse=True)
    return CascadeLog(
        users=table.column("user_id").to_numpy().astype(np.int64), items=items,
        ts=table.column("ts").to_numpy().astype(np.int64), levels=(click + purchase).astype(np.int8),
        scenario=codes[inverse], hist_offsets=hist_offsets, hist_items=hist_items,
    )  # fmt: skip


def load_cascade(out_dir: str | Path, name: str | None = None) -> CascadeData:
    """The cascade data of a simulator output folder (`impressions_{train,valid,test}.parquet`,
    `items.parquet`); a bad file or value names the file, row and field."""
    out_dir = Path(out_dir)
    num_items, _, attr_offsets, attributes = _sim_items(out_dir)
    scenarios: dict[str, int] = {}
    logs = {s: _read_split(out_dir / f"impressions_{s}.parquet", num_items, scenarios) for s in SPLITS}
    return CascadeData(
        name=name or str(out_dir), num_items=num_items, scenarios=tuple(scenarios), attribute_offsets=attr_offsets,
        attributes=attributes, **logs,
    )  # fmt: skip


def resolve_cascade(name: str, cache_dir: str | Path | None = None) -> CascadeData:
    """`sim-<preset>` (generated once into the cache) or a simulator output folder."""
    from agenticrs.data.cache import default_cache_root
    from agenticrs.data.simulated import simulated_dataset
    from agenticrs.sim.config import PRESETS

    path = Path(name)
    if path.is_dir():
        return load_cascade(path, name=str(path.resolve()))
    preset = name.removeprefix("sim-")
    if not name.startswith("sim-") or preset not in PRESETS:
        raise DataError(f"unknown cascade data set {name!r}", expected=f"sim-<preset> ({', '.join(PRESETS)}) or a "
                        "simulator output folder")  # fmt: skip
    spec = simulated_dataset(preset, "sequential", Path(cache_dir) if cache_dir else default_cache_root())
    return load_cascade(Path(spec.files["train"][0]).parent.parent, name=name)


# --- evaluation queries ---------------------------------------------------------------------
@dataclass
class CascadeQueries:
    """One split's retrieval queries: a user with the history of their first impression of the
    split, and per objective the CSR of the distinct items they reached that level with."""

    users: np.ndarray  # (Q,)
    history: np.ndarray  # (Q, max_len)
    scenario: np.ndarray  # (Q,) scenario of the first impression
    relevant: list[tuple[np.ndarray, np.ndarray]]  # per objective: (offsets (Q + 1,), items)

    def __len__(self) -> int:
        return len(self.users)

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield {"history": torch.from_numpy(self.history[start : start + batch_size]),
                   "user": torch.from_numpy(self.users[start : start + batch_size]),
                   "scenario": torch.from_numpy(self.scenario[start : start + batch_size])}  # fmt: skip

    def sample(self, n: int, seed: int) -> CascadeQueries:
        """A seeded sample of `n` queries (all of them when there are fewer), in their order."""
        if n >= len(self):
            return self
        keep = np.sort(np.random.default_rng([seed, 11]).choice(len(self), n, replace=False))
        relevant = []
        for offsets, items in self.relevant:
            counts = np.diff(offsets)[keep]
            relevant.append((np.r_[0, np.cumsum(counts)].astype(np.int64), items[_ranges(offsets[keep], counts)]))
        return CascadeQueries(users=self.users[keep], history=self.history[keep], scenario=self.scenario[keep],
                              relevant=relevant)  # fmt: skip

    def hits(self, objective: int, top: np.ndarray) -> Hits:
        """Hits of ranked lists `top` (Q, K) against the objective's relevant sets (queries without
        a relevant item dropped)."""
        offsets, items = self.relevant[objective]
        counts = np.diff(offsets)
        keep = np.flatnonzero(counts > 0)
        width = int(max(top.max(initial=0), items.max(initial=0))) + 1
        relevant_keys = np.repeat(np.arange(len(counts)), counts) * width + items
        keys = np.arange(len(top))[:, None] * width + top
        hit = np.isin(keys, relevant_keys) & (top > 0)
        return Hits(hits=hit[keep], relevant=counts[keep])


def cascade_queries(log: CascadeLog, max_len: int) -> CascadeQueries:
    """Per user of `log`: the first impression's history and the relevant items per objective."""
    order = np.lexsort((log.ts, log.users))
    users_sorted = log.users[order]
    first = order[np.r_[True, users_sorted[1:] != users_sorted[:-1]]]
    users = log.users[first]
    index = np.searchsorted(users, log.users)
    relevant = []
    for objective in range(len(OBJECTIVES)):
        rows = np.flatnonzero(log.levels >= objective)
        pairs = np.unique(np.stack([index[rows], log.items[rows]], axis=1), axis=0)
        counts = np.bincount(pairs[:, 0], minlength=len(users)) if len(pairs) else np.zeros(len(users), np.int64)
        relevant.append((np.r_[0, np.cumsum(counts)].astype(np.int64), pairs[:, 1].astype(np.int64)))
    return CascadeQueries(users=users, history=log.histories(first, max_len), scenario=log.scenario[first],
                          relevant=relevant)  # fmt: skip


def objective_metrics(queries: CascadeQueries, top: np.ndarray, objective: int, names: list[str],
                      prefix: str | None = None) -> dict[str, float]:  # fmt: skip
    """`names` (`set_recall@50`, ...) of ranked lists `top` against the objective's relevant sets,
    keyed `<prefix or objective name>/<name>`."""
    values = set_metrics(names, queries.hits(objective, top))
    return {f"{prefix or OBJECTIVES[objective]}/{name}": value for name, value in values.items()}

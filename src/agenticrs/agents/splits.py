"""The four splits of an evolution: train, valid, gate and test (plus an early-stopping slice).

- **train** trains the learners; a fixed slice of it (`stop`, whole requests) drives their early
  stopping, so the validation rows the EnsNAS statistics are computed on are not the rows that
  chose the learners' checkpoints.
- **valid** (half of the data set's validation users) is where every inner decision is made.
- **gate** (the other half: held-out users the proposers never see) is the promotion check.
- **test** is read only for the final report, never for a decision.

Splitting by user (the group key) keeps a user's rows on one side; without a group key rows are
split by a seeded permutation. Subsets are in-memory views with the `SplitArrays` interface.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agenticrs.data.cache import SplitArrays
from agenticrs.features.batching import REQUEST
from agenticrs.features.pipeline import ProcessedDataset

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class RowSubset:
    """Selected rows of a split, in memory, with the interface the trainer and batcher read."""

    def __init__(self, split: SplitArrays | RowSubset, rows: np.ndarray) -> None:
        self._arrays: dict[str, Any] = {}
        for key in split.keys():
            value = split[key]
            lazy = hasattr(value, "take") and not isinstance(value, np.ndarray)
            self._arrays[key] = value.take(rows) if lazy else np.asarray(value)[rows]
        self.rows = len(rows)

    def keys(self) -> list[str]:
        return list(self._arrays)

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __getitem__(self, key: str) -> Any:
        return self._arrays[key]

    def load_in_memory(self) -> None:
        """Already in memory."""


def _unit_hash(keys: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic uniform draw in [0, 1) per key (same key, same draw)."""
    mixed = (keys.astype(np.int64).view(np.uint64) ^ np.uint64(salt)) * _GOLDEN
    mixed ^= mixed >> np.uint64(29)
    mixed *= _GOLDEN
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_keys(split: SplitArrays | RowSubset, by: str) -> np.ndarray | None:
    return np.asarray(split[by]) if by in split else None


def draw(split: SplitArrays | RowSubset, by: tuple[str, ...], salt: int) -> np.ndarray:
    """Per-row uniform draws, equal for rows that share the first available key in `by`."""
    for key in by:
        values = split_keys(split, key)
        if values is not None:
            return _unit_hash(values, salt)
    return np.random.default_rng(salt).random(split.rows)


@dataclass
class EvolutionData:
    """The processed data set and the evolution's five row sets."""

    data: ProcessedDataset
    fit: ProcessedDataset  # splits: train (without the stop slice), valid (= the stop slice)
    valid: RowSubset
    gate: RowSubset
    test: SplitArrays | RowSubset | None

    def labels(self, split: str, label_index: int = 0) -> np.ndarray:
        return np.asarray(self.split(split)["labels"][:, label_index], dtype=np.float64)

    def split(self, name: str) -> SplitArrays | RowSubset:
        table = {"valid": self.valid, "gate": self.gate, "test": self.test, "train": self.fit.split("train")}
        found = table.get(name)
        if found is None:
            raise KeyError(f"no split '{name}' in this evolution (has train, valid, gate{', test' if self.test else ''})")
        return found

    @property
    def rows(self) -> dict[str, int]:
        counts = {"train": self.fit.split("train").rows, "stop": self.fit.split("valid").rows}
        counts.update(valid=self.valid.rows, gate=self.gate.rows)
        if self.test is not None:
            counts["test"] = self.test.rows
        return counts


def make_evolution_data(
    data: ProcessedDataset, gate_share: float = 0.5, stop_share: float = 0.1, salt: int = 2026
) -> EvolutionData:
    """Carve gate users out of the validation split and an early-stopping slice out of train."""
    if "valid" not in data.splits:
        raise ValueError(
            f"data set '{data.spec.name}' has no validation split; evolve needs train, valid (and ideally test)"
        )
    if not 0 < gate_share < 1 or not 0 < stop_share < 1:
        raise ValueError("gate_share and stop_share must be in (0, 1)")
    train = data.split("train")
    valid = data.split("valid")
    in_stop = draw(train, (REQUEST,), salt) < stop_share  # whole requests, mixed users
    in_gate = draw(valid, ("group",), salt + 1) < gate_share  # held-out users
    if in_gate.all() or not in_gate.any():
        raise ValueError(f"validation split of '{data.spec.name}' is too small to split into valid and gate users")
    fit = replace(
        data,
        splits={
            "train": RowSubset(train, np.flatnonzero(~in_stop)),
            "valid": RowSubset(train, np.flatnonzero(in_stop)),
        },
    )
    test = data.splits.get("test")
    return EvolutionData(
        data=data,
        fit=fit,
        valid=RowSubset(valid, np.flatnonzero(~in_gate)),
        gate=RowSubset(valid, np.flatnonzero(in_gate)),
        test=test if test is not None and "labels" in test else None,
    )

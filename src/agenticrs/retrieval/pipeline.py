"""Retrieval -> ranking pipelines in the simulator.

`RetrieverSource` turns any retriever of this package (anything with `recommend(batch, k)` over
item ids 1..I of the simulator's catalogue: popularity, co-occurrence, SASRec, two-tower, or the
two-tower through its ANN index) into the retrieval stage of `agenticrs.sim.environment.Pipeline`:
for every request it reads the user's behaviour history from the environment, retrieves the top
K *showable* items (launched by the request's day: a retriever trained on a later catalogue may
know items that do not exist yet) and hands them to the ranker. The environment checks the
contract again (launched, distinct, in the catalogue), so a faulty stage stops the experiment.

`pipeline_ab_test` runs the simulator's A/B test (`Environment.ab_test`, common random numbers,
delta-method confidence intervals of the lifts) on two pipelines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agenticrs.gr.base import SequenceData
from agenticrs.gr.sequences import pad_histories
from agenticrs.retrieval.baselines import CoOccurrenceRetriever, IndexRetriever, PopularityRetriever, VectorRetriever
from agenticrs.retrieval.index import INDEX_FILE, IndexConfig, VectorIndex
from agenticrs.sim.environment import ABResult, Environment, Pipeline, Policy
from agenticrs.sim.world import History, World

INDEX_DIR = "index"  # a retrieval run's ANN index, inside its run directory


class RetrieverSource:
    """A retriever as the environment's candidate source: (R,) users -> (R, k) launched items.

    Retrieves `k` + (items not yet launched) per request, drops the unlaunched ones and keeps the
    first `k`, in blocks of `block` requests (bounded memory on large catalogues)."""

    def __init__(self, retriever: object, k: int = 200, max_len: int = 50, block: int = 1024) -> None:
        if not hasattr(retriever, "recommend"):
            raise TypeError(f"{type(retriever).__name__} is not a retriever: it has no recommend(batch, k)")
        if k < 1 or max_len < 1 or block < 1:
            raise ValueError(f"k, max_len and block must be >= 1; got {k}, {max_len}, {block}")
        self.retriever, self.k, self.max_len, self.block = retriever, k, max_len, block

    def history_batch(self, users: np.ndarray, history: History) -> dict[str, torch.Tensor]:
        """The users' environment histories as a retriever batch (item ids = indices + 1, right-aligned)."""
        lengths = history.length[users].astype(np.int64)
        items = history.items[users]
        valid = np.arange(items.shape[1])[None, :] < lengths[:, None]
        flat = items[valid].astype(np.int64) + 1  # row-major: each user's items oldest first
        offsets = np.r_[0, np.cumsum(lengths)]
        return {"history": torch.from_numpy(pad_histories(offsets, flat, self.max_len)),
                "user": torch.from_numpy(np.asarray(users, np.int64) + 1)}  # fmt: skip

    def __call__(self, world: World, users: np.ndarray, history: History, day: int) -> np.ndarray:
        launched = world.item_launch_day <= day
        available = int(launched.sum())
        if available < self.k:
            raise ValueError(f"only {available} items are launched by day {day}; cannot retrieve k = {self.k}")
        wide = min(self.k + int((~launched).sum()), world.n_items)
        out = np.empty((len(users), self.k), np.int64)
        for start in range(0, len(users), self.block):
            part = users[start : start + self.block]
            with torch.no_grad():
                top = np.asarray(self.retriever.recommend(self.history_batch(part, history), wide)) - 1  # type: ignore[attr-defined]
            showable = launched[np.clip(top, 0, world.n_items - 1)] & (top >= 0)
            if (showable.sum(1) < self.k).any():
                raise ValueError(f"the retriever returned fewer than k = {self.k} launched items for a request")
            order = np.argsort(~showable, axis=1, kind="stable")[:, : self.k]  # showable first, rank order kept
            out[start : start + len(part)] = np.take_along_axis(top, order, axis=1)
        return out


def pipeline_ab_test(env: Environment, retriever_a: object, retriever_b: object, ranker_a: Policy,
                     ranker_b: Policy | None = None, k: int = 200, days: int = 1, names: tuple[str, str] = ("A", "B"),
                     alpha: float = 0.05) -> ABResult:  # fmt: skip
    """A/B test of two retrieval -> ranking pipelines (the same ranker unless `ranker_b`)."""
    a = Pipeline(RetrieverSource(retriever_a, k), ranker_a, names[0])
    b = Pipeline(RetrieverSource(retriever_b, k), ranker_b or ranker_a, names[1])
    return env.ab_test(a, b, days=days, crn="full", alpha=alpha, names=names)


RETRIEVER_NAMES = ("popularity", "co-occurrence")


def load_retriever(spec: str | Path, train: SequenceData | None = None, use_index: bool = True) -> object:
    """A retriever by name (`popularity`, `co-occurrence`: counted on `train`) or from a run
    directory (a `two_tower` or `sasrec` run, or a multi-objective one: CSMF's fused query with the
    default weights; through the run's saved ANN index, `index/`, when it has one and `use_index`)."""
    if str(spec) in RETRIEVER_NAMES:
        if train is None:
            raise ValueError(f"the {spec} retriever counts clicks: it needs the training sequences")
        return PopularityRetriever(train) if str(spec) == "popularity" else CoOccurrenceRetriever(train)
    folder = Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"retriever '{spec}' is neither one of {', '.join(RETRIEVER_NAMES)} nor a run directory")
    model = _run_model(folder)
    if use_index and (folder / INDEX_DIR / INDEX_FILE).is_file():
        return IndexRetriever(VectorRetriever(model), VectorIndex.load(folder / INDEX_DIR))
    return model


def _run_model(folder: Path, scenario: str = "default") -> torch.nn.Module:
    """The retriever of a run directory: a sequential run's model, or a multi-objective run's
    fused query for `scenario`'s weights (`multi_objective.FusedQuery`)."""
    from agenticrs.gr.train import load_sequential_run
    from agenticrs.train.run import run_task

    if run_task(folder) == "multi_objective_retrieval":
        from agenticrs.retrieval.cascade_train import load_multi_objective_run
        from agenticrs.retrieval.multi_objective import FusedQuery

        return FusedQuery(load_multi_objective_run(folder)[0], scenario)
    return load_sequential_run(folder)[0]


def save_run_index(run_dir: str | Path, config: IndexConfig | None = None) -> VectorIndex:
    """Build the ANN index of a two-tower, SASRec or multi-objective run's item vectors and save it in the run
    directory (`index/`), where `load_retriever` finds it.

    Default: IVF with about sqrt(items) cells and 16 probed. On a two-tower run's own user
    queries (sim-medium, `bench/results/retrieval_index_check.json`) IVF reached 0.98 recall@100
    where HNSW stayed below 0.85 at any beam we tried: user vectors are not distributed like the
    item vectors a graph index is built from."""

    items = VectorRetriever(_run_model(Path(run_dir))).item_vectors()
    if config is None:
        config = IndexConfig(kind="ivf", nlist=max(1, round(len(items) ** 0.5)), nprobe=16)
    index = VectorIndex.build(items, np.arange(1, len(items) + 1), config)
    index.save(Path(run_dir) / INDEX_DIR)
    return index

"""Retrieval -> ranking pipelines served by the simulator's environment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs.gr.base import SequenceData
from agenticrs.gr.sequences import leave_one_out
from agenticrs.retrieval.baselines import IndexRetriever, PopularityRetriever
from agenticrs.retrieval.ground_truth import true_scores
from agenticrs.retrieval.index import IndexConfig, neighbour_recall
from agenticrs.retrieval.pipeline import RetrieverSource, load_retriever, pipeline_ab_test, save_run_index
from agenticrs.retrieval.train import RetrievalTrainConfig, train_retrieval
from agenticrs.sim import build_world, sim_preset
from agenticrs.sim.environment import Environment, OraclePolicy, Pipeline
from agenticrs.sim.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(sim_preset("tiny"))


class _NewestFirst(torch.nn.Module):
    """Prefers the newest items, most of which are not launched yet on the environment's day."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        return torch.arange(self.n_items, self.n_items - k, -1).repeat(len(batch["history"]), 1)


class _TrueInterest(torch.nn.Module):
    """Retrieves by the world's true click probability (the best retrieval stage there is)."""

    def __init__(self, world: World, day: int) -> None:
        super().__init__()
        self.world, self.day = world, day

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        history = batch["history"][:, -self.world.config.history_len :].numpy() - 1
        scores = true_scores(self.world, batch["user"].numpy() - 1, history, self.day)
        return torch.from_numpy(np.argsort(-scores, axis=1)[:, :k] + 1)


def _popularity(world: World) -> PopularityRetriever:
    clicks = np.random.default_rng(0).choice(world.n_items, 5000, p=world.item_popularity / world.item_popularity.sum()) + 1
    return PopularityRetriever(SequenceData("pop", world.n_items, np.array([1]), np.array([0, len(clicks)]), clicks))


def test_the_retrieved_set_never_holds_items_the_user_cannot_be_shown(world: World) -> None:
    env = Environment(world, seed=0)
    day = env.start_day
    assert (world.item_launch_day > day).sum() > 40  # the newest items are not launched yet
    source = RetrieverSource(_NewestFirst(world.n_items), k=40, block=7)
    batch = env.requests(0, source)
    assert (world.item_launch_day[batch.item] <= day).all()
    rows = batch.slates.request_index
    assert np.bincount(rows).tolist() == [40] * len(batch.requests.user)
    per_request = batch.item.reshape(-1, 40)
    assert (np.diff(np.sort(per_request, axis=1), axis=1) > 0).all()  # distinct within a request
    # the same requests as the scenario pools: only the candidates change
    assert np.array_equal(batch.requests.request_id, env.requests(0).requests.request_id)


def test_the_environment_refuses_a_stage_that_returns_unlaunched_or_repeated_items(world: World) -> None:
    env = Environment(world, seed=0)
    unlaunched = int(np.flatnonzero(world.item_launch_day > env.start_day)[0])

    def bad(world_: World, users: np.ndarray, history: object, day: int) -> np.ndarray:
        items = np.tile(np.arange(12), (len(users), 1))
        items[:, 0] = unlaunched
        return items

    with pytest.raises(ValueError, match="not launched by day"):
        env.requests(0, bad)
    with pytest.raises(ValueError, match="an item twice"):
        env.requests(0, lambda w, users, h, d: np.zeros((len(users), 12), np.int64))
    with pytest.raises(ValueError, match="largest slate"):
        env.requests(0, lambda w, users, h, d: np.tile(np.arange(3), (len(users), 1)))


def test_a_better_retrieval_stage_wins_the_pipeline_ab_test(world: World) -> None:
    env = Environment(world, seed=0)
    result = pipeline_ab_test(env, _popularity(world), _TrueInterest(world, env.start_day), OraclePolicy(), k=30,
                              names=("popularity", "truth"))  # fmt: skip
    clicks = result.comparisons["clicks"]
    assert clicks.significant and clicks.lift > 0.1 and clicks.ci_low > 0
    assert result.arm_a.impressions == result.arm_b.impressions  # same requests, same slates sizes
    same = env.ab_test(Pipeline(RetrieverSource(_popularity(world), 30), OraclePolicy()),
                       Pipeline(RetrieverSource(_popularity(world), 30), OraclePolicy()))  # fmt: skip
    assert same.comparisons["clicks"].lift == 0.0  # common random numbers: identical arms, identical outcomes


def test_a_run_with_its_saved_index_loads_as_an_ann_retriever(clustered: SequenceData, tmp_path: Path) -> None:
    config = RetrievalTrainConfig(epochs=1, batch_size=64, ks=[5, 10], monitor="recall@10", num_threads=1)
    model, _ = train_retrieval(clustered, {"dim": 8, "hidden": 16, "out_dim": 8, "user_buckets": 16}, config,
                               run_dir=tmp_path / "run")  # fmt: skip
    assert not isinstance(load_retriever(tmp_path / "run", clustered), IndexRetriever)  # no index yet: exact
    save_run_index(tmp_path / "run", IndexConfig(kind="hnsw", ef_search=200))
    ann = load_retriever(tmp_path / "run", clustered)
    assert isinstance(ann, IndexRetriever)
    batch = next(leave_one_out(clustered).test.batches(50, 64))
    exact = model.eval().recommend(batch, 10).numpy()
    assert neighbour_recall(exact, ann.recommend(batch, 10).numpy()) > 0.95
    assert isinstance(load_retriever("popularity", clustered), PopularityRetriever)
    with pytest.raises(FileNotFoundError, match="neither one of popularity, co-occurrence nor a run directory"):
        load_retriever(tmp_path / "missing", clustered)


def test_cli_pipeline_compares_two_pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from agenticrs.cli.main import app

    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ab.json"
    result = CliRunner().invoke(app, ["pipeline", "--preset", "tiny", "--retriever-a", "popularity", "--retriever-b",
                                      "co-occurrence", "--ranker", "oracle", "--k", "30", "--json", str(out)],
                                env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "clicks" in result.output and "95% CI" in result.output
    rows = json.loads(out.read_text())["comparisons"]
    assert [r["metric"] for r in rows] == ["clicks", "carts", "purchases", "gmv"]
    bad = CliRunner().invoke(app, ["pipeline", "--preset", "tiny", "--retriever-b", "nope", "--ranker", "oracle"])
    assert bad.exit_code == 2 and "retriever 'nope' is neither" in bad.output

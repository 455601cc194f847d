"""Retrieval -> ranking pipelines served by the simulator's environment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agenticrs.gr.base import SequenceData
from agenticrs.retrieval.baselines import PopularityRetriever
from agenticrs.retrieval.ground_truth import true_scores
from agenticrs.retrieval.pipeline import RetrieverSource, pipeline_ab_test
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

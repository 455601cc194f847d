"""The simulator's ground truth of what a user would click: the world's own click model, over
the whole catalogue, launched items only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agenticrs.gr.sequences import EvalExamples
from agenticrs.retrieval.ground_truth import relevant_items, simulator_truth, true_scores, truth_metrics
from agenticrs.sim import build_world, sim_preset
from agenticrs.sim.world import World, sigmoid


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(sim_preset("tiny"))


def _histories(world: World, n: int) -> tuple[np.ndarray, np.ndarray]:
    warm = world.warmup_history()
    users = np.arange(n)
    return users, warm.items[users].astype(np.int64)


def test_true_scores_are_the_worlds_click_probability_averaged_over_hours(world: World) -> None:
    users, history = _histories(world, 4)
    day = world.config.n_days - 1
    scores = true_scores(world, users, history, day)
    launched = np.flatnonzero(world.item_launch_day <= day)[:50]
    u = np.repeat(users, len(launched))
    i = np.tile(launched, len(users))
    relevance = world.relevance(i, history[u].astype(np.int32), (history[u] >= 0).sum(1))
    logits = np.mean([world.click_logit(u, i, np.zeros_like(u), np.zeros(len(u)), np.full(len(u), h),
                                        np.full(len(u), day), relevance) for h in range(24)], axis=0)  # fmt: skip
    assert np.allclose(scores[:, launched].ravel(), sigmoid(logits), atol=1e-12)


def test_relevant_items_are_launched_and_truly_the_most_likely(world: World) -> None:
    users, history = _histories(world, 10)
    day = 0  # items launching later in the log are not yet shown to anyone
    top = relevant_items(world, users, history, day, top_n=20, block=3)
    assert (world.item_launch_day[top] <= day).all()
    scores = true_scores(world, users, history, day)
    assert np.allclose(np.take_along_axis(scores, top, 1), -np.sort(-scores, axis=1)[:, :20])
    bought = relevant_items(world, users, history, day, top_n=20, objective="purchase")
    assert not np.array_equal(bought, top)  # price and conversion move the purchase ranking


class _Oracle(torch.nn.Module):
    def __init__(self, world: World, day: int) -> None:
        super().__init__()
        self.world, self.day = world, day

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        history = batch["history"][:, -self.world.config.history_len :].numpy() - 1
        scores = true_scores(self.world, batch["user"].numpy() - 1, history, self.day)
        return torch.from_numpy(np.argsort(-scores, axis=1)[:, :k] + 1)


def test_an_oracle_retriever_has_perfect_recall_and_a_random_one_does_not(world: World) -> None:
    users, history = _histories(world, 30)
    lengths = (history >= 0).sum(1)
    flat = history[history >= 0] + 1
    examples = EvalExamples(users + 1, np.r_[0, np.cumsum(lengths)], flat, np.ones(30, np.int64))
    day = world.config.n_days - 1
    truth = simulator_truth(world, examples, day, top_n=20, users=None)
    assert truth.relevant.shape == (30, 20)
    perfect = truth_metrics(_Oracle(world, day), truth, ks=(20,))
    assert perfect["set_recall@20"] == pytest.approx(1.0) and perfect["set_ndcg@20"] == pytest.approx(1.0)

    class _Random(torch.nn.Module):
        def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
            return torch.randperm(world.n_items)[:k].repeat(len(batch["user"]), 1) + 1

    torch.manual_seed(0)
    assert truth_metrics(_Random(), truth, ks=(20,))["set_recall@20"] < 0.2

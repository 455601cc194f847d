"""Top-k metrics on hand-checked rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agenticrs.gr.metrics import (
    MISS,
    metrics_from_ranks,
    rank_metrics,
    ranks_from_scores,
    target_ranks,
)


def test_rank_metrics_hand_checked() -> None:
    topk = np.array([[3, 1, 2], [5, 6, 7], [9, 8, 4], [4, 2, 6]])
    targets = np.array([1, 7, 10, 4])  # ranks 1, 2, miss, 0
    np.testing.assert_array_equal(target_ranks(topk, targets), [1, 2, MISS, 0])
    m = rank_metrics(topk, targets, ks=(1, 2, 3))
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@2"] == pytest.approx(2 / 4)
    assert m["recall@3"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert set(m) == {f"{name}@{k}" for name in ("recall", "ndcg") for k in (1, 2, 3)}


def test_metrics_from_ranks_and_errors() -> None:
    m = metrics_from_ranks(np.array([0, 4, 9, 10]), ks=(5, 10))
    assert m["recall@5"] == 0.5 and m["recall@10"] == 0.75
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(11)) / 4)
    with pytest.raises(ValueError, match="fewer than the largest cut-off 5"):
        rank_metrics(np.ones((2, 3), dtype=int), np.ones(2, dtype=int), ks=(5,))
    with pytest.raises(ValueError, match="non-empty"):
        metrics_from_ranks(np.zeros(0, dtype=int))


def test_ranks_from_scores_pessimistic_ties_and_padding() -> None:
    scores = torch.tensor(
        [
            [100.0, 0.5, 0.9, 0.5, 0.1],  # the padding column's score is ignored
            [100.0, 0.5, 0.9, 0.5, 0.1],
            [0.0, 1.0, 1.0, 1.0, 1.0],  # a constant scorer ranks the target last
            [0.0, float("nan"), 1.0, 2.0, 3.0],
        ]
    )
    ranks = ranks_from_scores(scores, torch.tensor([1, 2, 3, 1]))
    np.testing.assert_array_equal(ranks, [2, 0, 3, 4])
    np.testing.assert_array_equal(ranks_from_scores(scores.numpy(), np.array([4, 4, 4, 4])), [3, 3, 3, 0])
    with pytest.raises(ValueError, match="item ids 1..4"):
        ranks_from_scores(scores, torch.tensor([0, 1, 1, 1]))

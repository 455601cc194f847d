"""Retrieval metrics of the one registry, on hand-checked inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agenticrs.gr.metrics import rank_metrics
from agenticrs.retrieval.ground_truth import set_hits
from agenticrs.train.metrics import Hits, compute_metrics, metric_spec, set_metrics


def test_set_recall_and_ndcg_match_a_hand_computation() -> None:
    # query 0: relevant {3, 7}; list [7, 1, 3, 9] -> hits at ranks 0 and 2
    # query 1: relevant {5};    list [2, 4, 6, 5] -> hit at rank 3
    hits = set_hits(np.array([[7, 1, 3, 9], [2, 4, 6, 5]]), [np.array([3, 7]), np.array([5])])
    assert hits.hits.tolist() == [[True, False, True, False], [False, False, False, True]]
    assert hits.relevant.tolist() == [2, 1]
    got = set_metrics(["set_recall@2", "set_recall@4", "set_ndcg@4", "set_ndcg@2"], hits)
    assert got["set_recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["set_recall@4"] == pytest.approx((2 / 2 + 1) / 2)
    ndcg0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg1 = (1 / math.log2(5)) / 1.0
    assert got["set_ndcg@4"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert got["set_ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 0) / 2)


def test_set_metrics_are_registered_with_their_direction() -> None:
    metric, k = metric_spec("set_recall@50")
    assert metric.higher_is_better and k == 50
    with pytest.raises(ValueError, match="set-retrieval metric"):
        compute_metrics(["set_ndcg@5"], np.array([0, 1]), np.array([0.1, 0.9]))


def test_hits_refuse_a_query_without_relevant_items() -> None:
    with pytest.raises(ValueError, match="at least one relevant item"):
        Hits(np.zeros((1, 3), bool), np.array([0]))


def test_single_target_recall_and_ndcg_at_retrieval_cutoffs() -> None:
    # leave-one-out retrieval: one target per user; target ranks 0, 2 and a miss
    top = np.array([[5, 1, 2], [1, 2, 5], [1, 2, 3]])
    got = rank_metrics(top, np.array([5, 5, 5]), ks=(1, 3))
    assert got["recall@3"] == pytest.approx(2 / 3)
    assert got["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert got["recall@1"] == pytest.approx(1 / 3)

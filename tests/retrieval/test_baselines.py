"""Popularity and co-occurrence retrievers and the vector view of trained models."""

from __future__ import annotations

import numpy as np
import torch

from agenticrs.gr.base import SequenceData
from agenticrs.gr.models.sasrec import SASRec, SASRecConfig
from agenticrs.gr.sequences import leave_one_out
from agenticrs.gr.train import evaluate_sequential
from agenticrs.retrieval.baselines import CoOccurrenceRetriever, PopularityRetriever, VectorRetriever


def _tiny() -> SequenceData:
    # user 1: 1 2 3, user 2: 2 3 4, user 3: 5 1 2
    return SequenceData("t", 5, np.array([1, 2, 3]), np.array([0, 3, 6, 9]), np.array([1, 2, 3, 2, 3, 4, 5, 1, 2]))


def test_popularity_returns_the_most_clicked_items_to_everyone() -> None:
    retriever = PopularityRetriever(_tiny())
    top = retriever.recommend({"history": torch.zeros(2, 4, dtype=torch.long)}, 3)
    assert top.tolist() == [[2, 1, 3], [2, 1, 3]]  # counts 2:3, 1:2, 3:2 (ties: lower id first)


def test_co_occurrence_scores_neighbours_of_the_history_by_hand() -> None:
    retriever = CoOccurrenceRetriever(_tiny(), window=1, recent=1)
    # pairs at lag 1 (both directions): 1-2, 2-3, 2-3, 3-4, 5-1, 1-2 -> row of item 3: {2: 2, 4: 1} / 3
    scores = retriever.score_all({"history": torch.tensor([[0, 3]])})[0].numpy()
    assert scores[2] - scores[4] > 0.3 and abs(scores[2] - 2 / 3) < 1e-5 and abs(scores[4] - 1 / 3) < 1e-5
    assert retriever.recommend({"history": torch.tensor([[0, 3]])}, 2).tolist() == [[2, 4]]


def test_co_occurrence_beats_popularity_on_clustered_clicks(clustered: SequenceData) -> None:
    splits = leave_one_out(clustered)
    pop = evaluate_sequential(PopularityRetriever(splits.train), splits.test, (10,), max_len=20)
    co = evaluate_sequential(CoOccurrenceRetriever(splits.train), splits.test, (10,), max_len=20)
    assert co["recall@10"] > pop["recall@10"] + 0.1


def test_sasrec_item_table_retrieves_what_sasrec_ranks() -> None:
    torch.manual_seed(0)
    model = SASRec(30, SASRecConfig(dim=8, max_len=5)).eval()
    batch = {"history": torch.tensor([[0, 3, 4, 5, 6], [1, 2, 3, 4, 5]])}
    vectors = VectorRetriever(model)
    scores = vectors.user_vectors(batch) @ vectors.item_vectors().T  # items 1..30
    assert np.array_equal(np.argsort(-scores, axis=1)[:, :5] + 1, model.recommend(batch, 5).numpy())

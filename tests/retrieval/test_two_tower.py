"""Two-tower retrieval: the sampled-softmax loss with log-Q correction, training through the one
engine, and the run directory reloading to the same retrieval."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs.gr.base import SequenceData
from agenticrs.gr.sequences import leave_one_out
from agenticrs.gr.train import evaluate_sequential, load_sequential_run
from agenticrs.models.base import MODELS, list_models
from agenticrs.retrieval.baselines import PopularityRetriever
from agenticrs.retrieval.train import RetrievalTrainConfig, train_retrieval
from agenticrs.retrieval.two_tower import TwoTower, attribute_matrix, in_batch_softmax_loss, target_counts


def test_logq_corrected_loss_matches_a_hand_computation() -> None:
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    item = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    ids = torch.tensor([4, 9])
    log_q = torch.log(torch.tensor([0.5, 0.1]))
    tau = 0.5
    # logits[i][j] = <u_i, v_j> / tau - log q_j
    l00, l01 = 0.6 / tau - math.log(0.5), 1.0 / tau - math.log(0.1)
    l10, l11 = 0.8 / tau - math.log(0.5), 0.0 / tau - math.log(0.1)
    expected = (-(l00 - math.log(math.exp(l00) + math.exp(l01))) - (l11 - math.log(math.exp(l10) + math.exp(l11)))) / 2
    got = in_batch_softmax_loss(user, item, ids, tau, log_q)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # without the correction: plain in-batch softmax
    plain = (-(0.6 / tau - math.log(math.exp(0.6 / tau) + math.exp(1.0 / tau)))
             - (0.0 - math.log(math.exp(0.8 / tau) + math.exp(0.0)))) / 2  # fmt: skip
    assert float(in_batch_softmax_loss(user, item, ids, tau)) == pytest.approx(plain, rel=1e-6)


def test_a_repeated_item_in_the_batch_is_not_its_own_negative() -> None:
    user = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    item = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ids = torch.tensor([3, 3])  # both rows clicked item 3: each row's only candidate is itself
    assert float(in_batch_softmax_loss(user, item, ids, 1.0)) == pytest.approx(0.0, abs=1e-7)


def test_item_sampling_probability_counts_every_training_target(clustered: SequenceData) -> None:
    train = leave_one_out(clustered).train
    counts = target_counts(train)
    # every training item but each user's first is a target of one "prefixes" example
    assert counts.sum() == len(train.items) - len(train.users)
    assert counts[0] == 0
    attrs = attribute_matrix(clustered, 4, buckets=100)
    assert attrs[1, 0] == 1 and attrs[1, 1:].sum() == 0 and attrs[120, 0] == 6
    assert attribute_matrix(clustered, 4, buckets=4)[120, 0] == 5 % 4 + 1  # hashed into 4 rows


def test_two_tower_is_a_retrieval_model_of_the_one_registry() -> None:
    assert "two_tower" in list_models("retrieval")
    assert MODELS.get("two_tower") is TwoTower
    assert "two_tower" not in list_models("sequential")


def test_two_tower_trains_through_the_engine_beats_popularity_and_reloads(clustered: SequenceData, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = RetrievalTrainConfig(epochs=8, batch_size=64, learning_rate=3e-3, ks=[5, 10], monitor="recall@10",
                                  patience=8, num_threads=1)  # fmt: skip
    model, result = train_retrieval(clustered, {"dim": 16, "hidden": 32, "out_dim": 16, "user_buckets": 64},
                                    config, run_dir=tmp_path / "run")  # fmt: skip
    assert result.stopped_by == "epochs"
    splits = leave_one_out(clustered)
    popular = evaluate_sequential(PopularityRetriever(splits.train), splits.test, (10,), max_len=50)
    # 6 clusters of 20 items: the right cluster's items hold the target; popularity cannot know it
    assert result.test["recall@10"] > popular["recall@10"] + 0.15
    assert (tmp_path / "run" / "summary.json").is_file()
    reloaded, run_config = load_sequential_run(tmp_path / "run")
    assert run_config.model == "two_tower"
    again = evaluate_sequential(reloaded, splits.test, (5, 10), max_len=50)
    assert again == pytest.approx({k: result.test[k] for k in again})
    assert torch.equal(reloaded.log_q, model.log_q) and torch.equal(reloaded.item_attributes, model.item_attributes)
    # the sequential task handed the model its training statistics before the first step
    counts = torch.from_numpy(target_counts(splits.train)).double().clamp_min(1)  # unseen items: one occurrence
    assert torch.allclose(model.log_q.double(), torch.log(counts / counts.sum()), atol=1e-5)
    assert int(model.item_attributes[1, 0]) == 1


def test_two_tower_refuses_attributes_of_another_shape(clustered: SequenceData) -> None:
    model = TwoTower(10, TwoTower.Config(max_attributes=2))
    with pytest.raises(ValueError, match="model expects"):
        model.set_item_attributes(torch.zeros(5, 2, dtype=torch.long))
    assert np.isfinite(model.log_q.numpy()).all()

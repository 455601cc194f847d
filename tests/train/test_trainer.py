"""The trainer: determinism, early stopping, LR decay, checkpoints, logs, regularisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agenticrs.models.base import build_model
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import predict_probs
from agenticrs.train.run import Run
from agenticrs.train.trainer import Trainer

QUICK = dict(batch_size=512, epochs=2, max_steps_per_epoch=8, eval_batch_size=4096)


def _fit(data, model_name="deepfm", run=None, **overrides):
    torch.manual_seed(0)
    model = build_model(model_name, data.schema, smoke=True)
    result = Trainer(TrainConfig(**{**QUICK, **overrides})).fit(model, data, run)
    return model, result


def test_same_seed_gives_identical_metrics_and_weights(tiny_synthetic):
    model_a, result_a = _fit(tiny_synthetic, seed=7)
    model_b, result_b = _fit(tiny_synthetic, seed=7)
    assert result_a.valid == result_b.valid
    assert result_a.test == result_b.test
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), name


def test_different_seed_gives_different_model(tiny_synthetic):
    _, result_a = _fit(tiny_synthetic, seed=1)
    _, result_b = _fit(tiny_synthetic, seed=2)
    assert result_a.valid["auc"] != result_b.valid["auc"]


def test_training_improves_over_untrained_model(tiny_synthetic):
    torch.manual_seed(0)
    untrained = build_model("fm", tiny_synthetic.schema, smoke=True)
    from agenticrs.train.ctr import evaluate

    before, _ = evaluate(untrained, tiny_synthetic.split("valid"), ["logloss"])
    _, result = _fit(tiny_synthetic, "fm", epochs=3, learning_rate=0.01, max_steps_per_epoch=None)
    assert result.valid["logloss"] < before["logloss"] - 0.05
    assert result.valid["auc"] > 0.6


def test_early_stopping_decays_lr_and_restores_best_checkpoint(tiny_synthetic, tmp_path):
    # a learning rate so large that validation AUC stops improving quickly
    run = Run.create(tmp_path, "es")
    model, result = _fit(
        tiny_synthetic, "lr", run=run, epochs=30, learning_rate=5.0, patience=2, lr_decay_patience=1,
        lr_decay_factor=0.5, max_steps_per_epoch=4,
    )
    assert result.stopped_by == "patience"
    assert len(result.history) < 30
    lrs = [r["lr"] for r in result.history]
    assert min(lrs) < 5.0  # decayed on a plateau
    best = max(result.history, key=lambda r: r["valid_auc"])
    assert result.best_epoch == best["epoch"]
    assert result.valid["auc"] == pytest.approx(best["valid_auc"], abs=1e-12)
    # the restored model is the saved best checkpoint
    saved = torch.load(run.folder / "weights.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_run_directory_logs_every_epoch_and_a_summary(tiny_synthetic, tmp_path):
    run = Run.create(tmp_path, "logs")
    _, result = _fit(tiny_synthetic, "fm", run=run, epochs=3)
    lines = (run.folder / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.history) == 3
    first = json.loads(lines[0])
    assert {"epoch", "train_loss", "lr", "valid_auc", "valid_logloss", "valid_gauc"} <= set(first)
    summary = json.loads((run.folder / "summary.json").read_text())
    assert summary["best_epoch"] == result.best_epoch
    assert summary["test"]["auc"] == result.test["auc"]
    assert summary["epochs_run"] == 3


def test_embedding_l2_shrinks_embeddings(tiny_synthetic):
    model_free, _ = _fit(tiny_synthetic, "fm", epochs=2, learning_rate=0.01)
    model_reg, _ = _fit(tiny_synthetic, "fm", epochs=2, learning_rate=0.01, embedding_l2=1.0)
    norm = lambda m: sum(float(p.detach().norm()) for p in m.embedding_parameters())  # noqa: E731
    assert norm(model_reg) < 0.5 * norm(model_free)


def test_adagrad_trains(tiny_synthetic):
    _, result = _fit(tiny_synthetic, "fm", optimizer="adagrad", learning_rate=0.05, epochs=2)
    assert result.valid["auc"] > 0.55


def test_time_budget_stops_training(tiny_synthetic):
    _, result = _fit(tiny_synthetic, "deepfm", epochs=50, max_steps_per_epoch=None, time_budget_s=0.01)
    assert result.stopped_by == "time budget"
    assert len(result.history) == 1


def test_unknown_label_and_metric_are_refused(tiny_synthetic):
    with pytest.raises(ValueError, match="label 'nope'"):
        _fit(tiny_synthetic, "lr", label="nope")
    with pytest.raises(ValueError, match="unknown metric"):
        Trainer(TrainConfig(metrics=["auc", "nope"]))


def test_predictions_do_not_depend_on_eval_batch_size(tiny_synthetic):
    model, _ = _fit(tiny_synthetic, "deepfm")
    a = predict_probs(model, tiny_synthetic.split("test"), batch_size=4096)
    b = predict_probs(model, tiny_synthetic.split("test"), batch_size=1000)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

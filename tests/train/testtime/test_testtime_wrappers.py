"""MATT and UTTSI around a trained run: the base model when every confidence is 1, row-local paths,
reproducible from the saved statistics, the exploration budget, the CLI end to end, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agenticrs.cli.main import app
from agenticrs.features.batching import iterate_batches
from agenticrs.features.schema import OOV_INDEX
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.ctr import predict_probs
from agenticrs.train.testtime.matt import Matt, MattConfig
from agenticrs.train.testtime.paths import stacked_logits
from agenticrs.train.testtime.sketch import HashingConfig, HierarchicalHashing
from agenticrs.train.testtime.uttsi import Uttsi, UttsiConfig
from agenticrs.train.testtime.workflow import evaluate_test_time, parse_settings, wrap_run
from agenticrs.train.workflow import train_run

SMALL = ["hashing.width=2048", "hashing.depth=2"]


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tiny_cache, tmp_path_factory):
    config = RunConfig(dataset="synthetic-tiny", model="deepfm", smoke=True,
                       train=TrainConfig(batch_size=512, epochs=1, max_steps_per_epoch=8, eval_batch_size=2048))
    return train_run(config, tmp_path_factory.mktemp("tt-runs"), tiny_cache, data=tiny_synthetic)


@pytest.fixture(scope="module")
def exact_hashing(trained):
    train = trained.data.split("train")
    return HierarchicalHashing.build(np.asarray(train["categorical"]), trained.data.schema.categorical_names,
                                     HashingConfig(width=512, heap_capacity=1_000_000))


def _batch(split, rows: int = 300):
    return next(iterate_batches(split, rows, label_index=None))


def test_every_confidence_one_leaves_predictions_unchanged(trained, exact_hashing):
    """Training rows with κ = 1 and exact counts: every combination occurred, so every confidence is 1."""
    batch = _batch(trained.data.split("train"))
    base = torch.sigmoid(trained.model.eval()(batch)["logit"]).detach().numpy()
    matt = Matt(exact_hashing, MattConfig(saturation=1.0, paths=4))
    keep, alpha = matt.sample_paths(batch["categorical"].numpy())
    assert keep.all() and np.allclose(alpha, 1.0)
    probs, stats = matt.score(trained.model, batch)
    assert stats["explored"] == 0
    np.testing.assert_allclose(probs, base, rtol=0, atol=1e-6)
    uttsi = Uttsi(exact_hashing, UttsiConfig(saturation=1.0, min_count=1, threshold=0.0))
    probs, stats = uttsi.score(trained.model, batch)
    assert stats["explored"] == 0 and stats["forward_rows"] == len(probs)
    np.testing.assert_allclose(probs, base, rtol=0, atol=1e-6)


def test_low_confidence_fields_are_dropped_more_often(trained, exact_hashing):
    split = trained.data.split("test")
    cat = _batch(split, 500)["categorical"].numpy()
    matt = Matt(exact_hashing, MattConfig(paths=16, iterative=False, min_keep=0.0))
    feature = matt.feature_confidences(matt.combination_confidences(cat))
    keep, _ = matt.sample_paths(cat)
    assert ((feature >= 0) & (feature <= 1)).all()
    low, high = feature < 0.3, feature > 0.8
    assert keep.mean(1)[low].mean() < 0.35 < 0.75 < keep.mean(1)[high].mean()
    # the ablation: the row's mean confidence for every field drops about as many fields, not the rare ones
    uniform = Matt(exact_hashing, MattConfig(paths=16, iterative=False, min_keep=0.0, guidance="uniform"))
    keep_uniform, _ = uniform.sample_paths(cat)
    assert abs(keep_uniform.mean() - keep.mean()) < 0.05
    assert abs(keep_uniform.mean(1)[low].mean() - keep_uniform.mean(1)[high].mean()) < 0.25


class _Spy(torch.nn.Module):
    """A model that records what it is given; its logit is a fixed function of the row's ids."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, batch):
        self.seen.append({k: v.clone() for k, v in batch.items()})
        return {"logit": (batch["categorical"].float() * 0.01).sin().sum(1)}


def test_paths_of_one_row_never_see_another_row(trained, exact_hashing):
    split = trained.data.split("test")
    batch = _batch(split, 64)
    batch["request"] = torch.arange(64) // 8  # requests of 8 candidates
    keep = np.random.default_rng(0).random((64, 5, batch["categorical"].shape[1])) < 0.5
    spy = _Spy()
    stacked_logits(spy, batch, keep, OOV_INDEX)
    seen = spy.seen[0]
    cat = seen["categorical"].reshape(5, 64, -1)
    source = batch["categorical"].unsqueeze(0).expand(5, -1, -1)
    assert bool(((cat == source) | (cat == OOV_INDEX)).all())  # each stacked row is a path of its own source row
    requests = seen["request"].reshape(5, 64)
    for p in range(5):  # a path's rows share a request only with the same path of the same request
        for q in range(p + 1, 5):
            assert not set(requests[p].tolist()) & set(requests[q].tolist())
    # a row's score does not depend on which rows it is scored with (permutation and split batches)
    for scorer in (Matt(exact_hashing, MattConfig(paths=6)), Uttsi(exact_hashing, UttsiConfig(threshold=0.0))):
        whole = _batch(split, 200)
        probs, _ = scorer.score(trained.model, whole)
        perm = torch.randperm(200, generator=torch.Generator().manual_seed(1))
        shuffled, _ = scorer.score(trained.model, {k: v[perm] for k, v in whole.items()})
        np.testing.assert_allclose(shuffled, probs[perm.numpy()], rtol=0, atol=1e-6)
        half, _ = scorer.score(trained.model, {k: v[:37] for k, v in whole.items()})
        np.testing.assert_allclose(half, probs[:37], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_wrapped_run_reloads_and_reproduces_its_scores(trained, tiny_cache):
    for method in ("matt", "uttsi"):
        metrics, probs, record = evaluate_test_time(trained.run.folder, method, overrides=SMALL, cache_dir=tiny_cache)
        assert record["build_seconds"] > 0 or method == "uttsi"  # built once, then loaded
        again, probs_again, record_again = evaluate_test_time(trained.run.folder, method, overrides=SMALL,
                                                              cache_dir=tiny_cache)
        assert record_again["build_seconds"] == 0.0 and np.array_equal(probs, probs_again) and again == metrics
        saved = json.loads((trained.run.folder / "testtime" / f"{method}-test.json").read_text())
        assert saved["metrics"] == metrics and set(saved["base_metrics"]) == set(metrics)
        assert saved["base_metrics"]["auc"] == pytest.approx(trained.result.test["auc"], abs=1e-12)
        assert 1.0 <= saved["compute_vs_base"]
    assert record["compute_vs_base"] <= 1 + UttsiConfig().max_paths


def test_uttsi_explores_the_target_share_of_validation_rows(trained, tiny_cache):
    wrapped = wrap_run(trained.run.folder, "uttsi", parse_settings([*SMALL, "uttsi.explore_share=0.3"]), tiny_cache)
    valid = trained.data.split("valid")
    uncertainty = np.concatenate([wrapped.scorer.base(wrapped.model, b)[1]
                                  for b in iterate_batches(valid, 1000, label_index=None)])
    assert np.mean(uncertainty > wrapped.scorer.threshold) == pytest.approx(0.3, abs=0.01)


@pytest.mark.slow
def test_the_cli_flag_works_end_to_end(trained, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    folder = str(trained.run.folder)
    result = runner.invoke(app, ["evaluate", "--run", folder, "--test-time", "matt", "-q", "--cache-dir", str(tiny_cache),
                                 *[a for s in SMALL for a in ("--tt-set", s)], "--tt-set", "matt.paths=3"])
    assert result.exit_code == 0, result.output
    assert "rows explored" in result.output and "forward rows per row: 4.00" in result.output
    test_file = trained.data.spec.files["test"][0]
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", "--run", folder, "-i", test_file, "-o", str(out), "--test-time", "uttsi",
                                 "-q", "--cache-dir", str(tiny_cache), *[a for s in SMALL for a in ("--tt-set", s)]])
    assert result.exit_code == 0, result.output
    scores = np.loadtxt(out, delimiter=",", skiprows=1)
    _, expected, _ = evaluate_test_time(folder, "uttsi", overrides=SMALL, cache_dir=tiny_cache)
    np.testing.assert_allclose(scores[:, 1], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["--test-time", "nope"], "unknown test-time method 'nope'"),
    (["--test-time", "matt", "--tt-set", "matt.paths=0"], "matt.paths"),
    (["--test-time", "uttsi", "--tt-set", "uttsi.nope=1"], "uttsi.nope"),
    (["--tt-set", "matt.paths=2"], "--tt-set has no effect without --test-time"),
])
def test_bad_settings_are_clear_errors(trained, tiny_cache, monkeypatch, args, message):
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(app, ["evaluate", "--run", str(trained.run.folder), "-q", "--cache-dir",
                                      str(tiny_cache), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_uncalibrated_uttsi_refuses_to_score(trained, exact_hashing):
    with pytest.raises(ValueError, match="no threshold"):
        Uttsi(exact_hashing).score(trained.model, _batch(trained.data.split("test"), 10))
    assert predict_probs(trained.model, trained.data.split("test")).shape == (trained.data.split("test").rows,)


def test_the_api_evaluates_with_a_test_time_method(trained, tiny_cache):
    from agenticrs import api

    metrics = api.evaluate(trained.run.folder, cache_dir=tiny_cache, test_time="matt",
                           test_time_settings={"hashing": {"width": 2048, "depth": 2}})
    saved = json.loads((trained.run.folder / "testtime" / "matt-test.json").read_text())
    assert metrics == saved["metrics"]
    with pytest.raises(ValueError, match="no effect without test_time"):
        api.evaluate(trained.run.folder, cache_dir=tiny_cache, test_time_settings={"matt": {"paths": 2}})

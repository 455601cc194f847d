"""Run directories are self-describing: evaluate/predict on a saved run reproduce it exactly."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.run import Run
from agenticrs.train.workflow import evaluate_run, predict_files, train_run


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tiny_cache, tmp_path_factory):
    config = RunConfig(
        dataset="synthetic-tiny",
        model="deepfm",
        smoke=True,
        train=TrainConfig(batch_size=512, epochs=2, max_steps_per_epoch=10, eval_batch_size=3000),
    )
    return train_run(config, tmp_path_factory.mktemp("runs"), tiny_cache, data=tiny_synthetic)


def test_run_directory_holds_everything_needed(trained):
    names = {p.name for p in trained.run.folder.iterdir()}
    assert {"config.yaml", "dataset.yaml", "encoder.json", "schema.json", "weights.pt", "metrics.jsonl",
            "summary.json"} <= names
    run = Run(trained.run.folder)
    assert run.config.model == "deepfm"
    assert run.schema == trained.data.schema
    assert run.encoder.to_dict() == trained.data.encoder.to_dict()


def test_evaluate_reproduces_the_summary_exactly(trained, tiny_cache):
    metrics, probs = evaluate_run(trained.run.folder, "test", cache_dir=tiny_cache)
    summary = trained.run.summary
    for name, value in summary["test"].items():
        assert metrics[name] == value, name
    assert len(probs) == trained.data.split("test").rows


def test_predict_on_the_raw_file_equals_evaluation_predictions(trained, tiny_cache, tmp_path):
    _, eval_probs = evaluate_run(trained.run.folder, "test", cache_dir=tiny_cache)
    test_file = trained.data.spec.files["test"][0]
    # an unlabelled copy: prediction must not need labels
    table = pq.read_table(test_file).drop_columns(["click"])
    unlabelled = tmp_path / "unlabelled.parquet"
    pq.write_table(table, unlabelled)
    probs = predict_files(trained.run.folder, [str(unlabelled)], cache_dir=tiny_cache)
    assert np.array_equal(probs, eval_probs)


def test_loaded_model_matches_trained_model(trained):
    from agenticrs.train.ctr import predict_probs

    loaded = Run(trained.run.folder).load_model()
    split = trained.data.split("valid")
    assert np.array_equal(predict_probs(loaded, split), predict_probs(trained.model, split))


def test_unknown_split_is_a_clear_error(trained, tiny_cache):
    with pytest.raises(KeyError, match="no split 'nope'"):
        evaluate_run(trained.run.folder, "nope", cache_dir=tiny_cache)


def test_incomplete_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        _ = Run(tmp_path).config


def test_a_killed_run_resumes_from_the_command_line_to_the_same_result(tiny_synthetic, tiny_cache, tmp_path,
                                                                      monkeypatch):
    """`agenticrs train --resume RUN` after a crash mid-epoch: same summary as an uninterrupted run."""
    from typer.testing import CliRunner

    from agenticrs.cli.main import app
    from agenticrs.train.ctr import CTRTask

    config = RunConfig(dataset="synthetic-tiny", model="deepfm", smoke=True, model_params={"dropout": 0.1},
                       train=TrainConfig(batch_size=512, epochs=2, eval_every_steps=6, eval_batch_size=3000, seed=4))
    whole = train_run(config, tmp_path / "whole", tiny_cache, data=tiny_synthetic)

    calls = {"n": 0}
    original = CTRTask.loss

    def dying(self, model, batch):
        calls["n"] += 1
        if calls["n"] > 15:
            raise KeyboardInterrupt  # the process is stopped mid-epoch
        return original(self, model, batch)

    monkeypatch.setattr(CTRTask, "loss", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "killed", tiny_cache, data=tiny_synthetic)
    monkeypatch.setattr(CTRTask, "loss", original)
    (killed,) = (tmp_path / "killed").iterdir()
    assert (killed / "checkpoint.pt").is_file() and not (killed / "summary.json").exists()

    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tiny_cache))
    result = CliRunner().invoke(app, ["train", "--resume", str(killed), "-q", "--cache-dir", str(tiny_cache)])
    assert result.exit_code == 0, result.output
    resumed = Run(killed).summary
    assert resumed["test"] == whole.run.summary["test"] and resumed["steps"] == whole.run.summary["steps"]
    assert not (killed / "checkpoint.pt").exists()

"""CLI smoke runs: every command answers --help; train → evaluate → predict end to end."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from agenticrs.cli.main import app
from agenticrs.train.run import Run

runner = CliRunner()


@pytest.fixture()
def env(tiny_cache, tiny_synthetic, monkeypatch):
    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tiny_cache))
    monkeypatch.setenv("COLUMNS", "200")
    return tiny_cache


@pytest.mark.parametrize("command", ["datasets", "models", "train", "evaluate", "predict", "demo"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_models_lists_the_zoo():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ["lr", "fm", "deepfm", "dcnv2", "din", "finalmlp", "autoint"]:
        assert name in result.output


def test_datasets_lists_the_registry():
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    assert "synthetic" in result.output and "frappe" in result.output


def test_train_evaluate_predict_end_to_end(env, tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(
        app,
        ["train", "-d", "synthetic-tiny", "-m", "fm", "--smoke", "-q", "--runs-dir", str(runs),
         "--set", "train.epochs=1", "--set", "train.batch_size=1024", "--set", "train.learning_rate=1e-2"],
    )
    assert result.exit_code == 0, result.output
    assert "train:" in result.output and "learning_rate: 0.01" in result.output  # effective config printed
    run_dir = next(runs.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())

    result = runner.invoke(app, ["evaluate", "--run", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert f"{summary['test']['auc']:.5f}" in result.output

    test_file = Run(run_dir).spec.files["test"][0]
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "--run", str(run_dir), "-i", test_file, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2000  # the tiny preset's test split
    assert all(0.0 < float(r["prediction"]) < 1.0 for r in rows)


def test_unknown_dataset_is_a_clean_error(env, tmp_path):
    result = runner.invoke(app, ["train", "-d", "nope", "-m", "fm", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown data set 'nope'" in result.output
    assert "Traceback" not in result.output


def test_unknown_model_and_bad_override_are_clean_errors(env, tmp_path):
    result = runner.invoke(app, ["train", "-d", "synthetic-tiny", "-m", "nope", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model 'nope'" in result.output
    result = runner.invoke(app, ["train", "-d", "synthetic-tiny", "-m", "fm", "--set", "oops", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "key=value" in result.output
    result = runner.invoke(
        app, ["train", "-d", "synthetic-tiny", "-m", "fm", "--set", "model_params.nope=1", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "nope" in result.output


def test_bad_data_file_names_file_row_and_field(env, tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("label,user,item\n1,a,x\n0,b,y\n7,c,z\n")
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\nfiles: {train: bad.csv}\nfields:\n"
        "  - {name: label, kind: label}\n  - {name: user, kind: categorical}\n  - {name: item, kind: categorical}\n"
    )
    result = runner.invoke(app, ["train", "-d", str(spec), "-m", "fm", "-q", "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "bad.csv" in result.output and "row 3" in result.output and "'label'" in result.output

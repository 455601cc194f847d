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


@pytest.fixture()
def wide(monkeypatch):
    """A wide console whatever the environment the CLI module was imported under."""
    from agenticrs.cli import common

    def set_width(columns: int) -> None:
        monkeypatch.setattr(common.console, "width", columns)

    return set_width


def _rows(output: str) -> dict[str, list[str]]:
    """Table rows of a rich table by their first cell (continuation lines of wrapped cells skipped)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) > 1 and cells[0]:
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_models_lists_the_zoo_of_every_task(wide):
    wide(250)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    for name in ["lr", "fm", "deepfm", "dcnv2", "din", "finalmlp", "autoint"]:
        assert rows[name][0] == "ctr"
    assert rows["sasrec"][0] == "sequential" and rows["tiger"][0] == "sequential"
    assert "semantic IDs" in rows["tiger"][2] and "semantic IDs" not in rows["sasrec"][2]


def _blocks(output: str) -> dict[str, str]:
    """`models -v` output cut into one text block per model (a block starts at an unindented line)."""
    blocks: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = line
        elif name is not None:
            blocks[name] += "\n" + line
    return blocks


def test_models_verbose_shows_sequential_defaults(wide):
    wide(400)
    result = runner.invoke(app, ["models", "-v"])
    assert result.exit_code == 0, result.output
    blocks = _blocks(result.output)
    assert "d_model=128" in blocks["tiger"] and "dim=64" in blocks["sasrec"]
    assert "embedding_dim=" in blocks["deepfm"] and "[ctr]" in blocks["deepfm"]


def test_models_verbose_never_splits_a_setting_at_80_columns(wide):
    """At 80 columns every `key=value` setting stays on one line (lines break between settings)."""
    wide(80)
    result = runner.invoke(app, ["models", "-v"])
    assert result.exit_code == 0, result.output
    blocks = _blocks(result.output)
    assert set(blocks) >= {"deepfm", "sort", "mgdin", "sasrec", "tiger"}
    assert "hidden_units=[400,400,400]" in blocks["dcnv2"].replace("\n", " ")
    words = [w for line in result.output.splitlines() for w in line.split()]
    for setting in ("embedding_dim=10", "hidden_units=[400,400,400]", "structure=parallel"):
        assert setting in words, (setting, blocks["dcnv2"])
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_datasets_lists_ctr_and_sequence_data_sets(monkeypatch, tmp_path, wide):
    wide(250)
    monkeypatch.setenv("AGENTICRS_DATA_DIR", str(tmp_path))  # an empty data root: public data is missing
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["synthetic"][1] == "generated" and rows["frappe"][1].startswith("no")
    assert rows["amazon_beauty"][0] == "next item (sequences)"
    assert rows["amazon_beauty"][1] == "no (amazon_beauty not found)"
    assert "yelp" in rows and "movielens_100k" in rows
    (tmp_path / "amazon_beauty").mkdir()
    assert _rows(runner.invoke(app, ["datasets"]).output)["amazon_beauty"][1] == "yes"


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

"""The CLI never ignores what it is told (issue 23): ineffective or unknown settings are errors that
name the key that works, long steps show progress, cross-task mistakes say what the run is, runs
never collide, the LLM fallback is said out loud, and the small doc mismatches stay fixed."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agenticrs.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# -- 1. settings that would be ignored ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "works"),
    [("train.epochs=1", "start.epochs"), ("train.learning_rate=0.1", "start.learning_rate"),
     ("train.batch_size=64", "start.batch_size"), ("train.optimizer=adagrad", "start.optimizer"),
     ("train.embedding_l2=0.1", "start.embedding_l2"), ("train.seed=3", "use seed instead")],
)
def test_evolve_refuses_train_keys_every_candidate_overrides(tmp_path: Path, key: str, works: str) -> None:
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", str(tmp_path / "k.db"), "--set", key],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert key.split("=")[0] in line and works in line and "no effect" in line
    assert not (tmp_path / "k.db").exists()


def test_evolve_refuses_unknown_keys_and_knobs_the_start_model_lacks(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", db, "--set", "nope=1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "nope" in result.output
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", db, "--set", "train.nope=1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "nope" in result.output
    # the default starting model (lr) has no hidden layers
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", db, "--set", "start.hidden_units=[8]"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "start.hidden_units" in result.output and "'lr'" in result.output
    # the keys that work are accepted (the error comes later: the database flag is a folder)
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", str(tmp_path), "--set", "start.epochs=1",
                                 "--set", "start.model=dnn", "--set", "start.hidden_units=[8]", "--set", "train.patience=1"],
                           env={"COLUMNS": "300"})
    assert "no effect" not in result.output


def test_evolve_resume_refuses_what_it_would_ignore(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evolve", "--resume", "-d", "sim-tiny", "--db", str(tmp_path / "k.db")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "--dataset has no effect with --resume" in result.output


def test_train_refuses_keys_it_would_ignore(tmp_path: Path) -> None:
    base = ["train", "--runs-dir", str(tmp_path / "runs"), "-q"]
    cases = [
        (["-d", "sim-tiny", "-m", "fm", "--set", "nope=1"], "nope"),
        (["-d", "sim-tiny", "-m", "fm", "--set", "train.nope=1"], "nope"),
        (["--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--set", "train.label=click"], "train.label"),
        (["--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--set", "tokenizer.levels=2"], "tokenizer.levels"),
        (["--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--smoke"], "--smoke"),
        (["--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--set", "train.nope=1"], "nope"),
        (["--resume", str(tmp_path), "--set", "train.epochs=3"], "--set has no effect with --resume"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, base + args, env={"COLUMNS": "300"})
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
    assert not (tmp_path / "runs").exists()


# -- 2. progress on long steps -------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.tasks: list[tuple[str, float | None]] = []
        self.advances: list[dict] = []

    def log(self, message: str) -> None:
        pass

    def task(self, description: str, total: float | None = None):
        from contextlib import contextmanager

        recorder = self

        class Task:
            def advance(self, amount: float = 1, **fields: object) -> None:
                recorder.advances.append(fields)

            def update(self, **fields: object) -> None:
                pass

        @contextmanager
        def cm():
            recorder.tasks.append((description, total))
            yield Task()

        return cm()


def test_rq_vae_tokenizer_fit_reports_every_epoch(tiny_cache: Path, tmp_path: Path) -> None:
    from agenticrs.gr.sequences import resolve_sequences
    from agenticrs.gr.workflow import TokenizerSettings, build_semantic_ids

    data = resolve_sequences("sim-tiny", tiny_cache)
    settings = TokenizerSettings(method="rq_vae", source="attributes", levels=2, codebook_size=8,
                                 params={"epochs": 3, "batch_size": 256})
    recorder = Recorder()
    build_semantic_ids(data, settings, tiny_cache, tmp_path, recorder)
    assert recorder.tasks == [("tokenizer rq_vae fit", 3)]
    assert [a["epoch"] for a in recorder.advances] == ["1/3", "2/3", "3/3"]


def test_readme_training_example_has_a_budget_and_a_duration() -> None:
    readme = (ROOT / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if "train -d sim7/ctr.yaml -m sort" in line]
    assert "time_budget_s" in line or "max_steps" in line
    assert "min" in line.split("#", 1)[1]


# -- 3. cross-task mistakes ------------------------------------------------------------------------
def test_evaluate_a_sequential_run_and_recommend_a_ctr_run_say_what_fits(tmp_path: Path) -> None:
    seq = tmp_path / "sasrec-run"
    seq.mkdir()
    (seq / "job.yaml").write_text(yaml.safe_dump({"dataset": "sim-tiny", "model": "sasrec"}))
    (seq / "config.yaml").write_text(yaml.safe_dump({"dataset": "sim-tiny", "model": "sasrec", "num_items": 5}))
    for command in (["evaluate", "--run", str(seq)], ["predict", "--run", str(seq), "-i", "x.csv", "-o", str(tmp_path / "o.csv")]):
        result = runner.invoke(app, command, env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        [line] = error_lines(result.output)
        assert "sequential" in line and "agenticrs recommend" in line and "validation error" not in result.output
    ctr = tmp_path / "fm-run"
    ctr.mkdir()
    (ctr / "dataset.yaml").write_text("name: x\n")
    (ctr / "config.yaml").write_text(yaml.safe_dump({"dataset": "x", "model": "fm", "train": {"epochs": 1}}))
    result = runner.invoke(app, ["recommend", "--run", str(ctr), "--user", "1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert "CTR run" in line and "agenticrs evaluate" in line and "validation error" not in result.output


# -- 4. one naming rule ------------------------------------------------------------------------------
@pytest.mark.slow
def test_rerunning_the_same_sequential_train_makes_a_new_run(tiny_cache: Path, tmp_path: Path) -> None:
    args = ["train", "--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--set", "train.epochs=1",
            "--set", "train.max_steps_per_epoch=2", "--set", "model_params.dim=16", "--set", "train.num_threads=1",
            "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tiny_cache), "-q"]
    for _ in range(2):
        result = runner.invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 2 and all(name.startswith("sasrec-sim-tiny-") for name in names)


# -- 5. the LLM fallback is said, and --strict stops -------------------------------------------------
@pytest.mark.slow
def test_llm_fallback_is_said_once_and_strict_stops(tiny_cache: Path, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    common = ["evolve", "-d", "sim-tiny", "-n", "1", "--proposer", "llm", "-q", "--set", f"llm.base_url={url}",
              "--set", "llm.model=m", "--set", "llm.timeout_s=2", "--set", "start.epochs=1",
              "--set", "train.max_steps_per_epoch=3", "--set", "train.num_threads=1", "--set", "bootstrap=20",
              "--set", f"cache_dir={tiny_cache}"]
    result = runner.invoke(app, [*common, "--db", str(tmp_path / "a.db"), "--set", f"artifacts={tmp_path / 'a'}"],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and url in warnings[0] and "--strict" in warnings[0] and "built-in" in warnings[0]
    result = runner.invoke(app, [*common, "--strict", "--db", str(tmp_path / "b.db"), "--set", f"artifacts={tmp_path / 'b'}"],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert "llm proposer gave no usable candidate" in line and url in line and "ConnectError" in line


# -- 6. small doc mismatches -------------------------------------------------------------------------
def test_train_prints_the_overrides_separately(tiny_cache: Path, tiny_synthetic: object, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "-d", "synthetic-tiny", "-m", "lr", "--smoke", "-q", "--runs-dir",
                                 str(tmp_path), "--cache-dir", str(tiny_cache), "--set", "train.epochs=1",
                                 "--set", "train.max_steps=3"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("overrides (--set):")]
    assert "train.epochs=1" in line and "train.max_steps=3" in line


def test_predict_writes_an_unquoted_header_and_a_row_column(tmp_path: Path) -> None:
    import numpy as np

    from agenticrs.train.workflow import write_predictions

    out = tmp_path / "p.csv"
    write_predictions(out, np.array([0.25, 0.5, 0.75]))
    lines = out.read_text().splitlines()
    assert lines[0] == "row,prediction"
    rows = list(csv.DictReader(out.open()))
    assert [int(r["row"]) for r in rows] == [0, 1, 2] and [float(r["prediction"]) for r in rows] == [0.25, 0.5, 0.75]


def test_readme_demo_heading_matches_the_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "`agenticrs demo --dataset" not in readme  # plain `demo --dataset X` runs evolve, not the zoo table
    assert "`agenticrs demo --zoo --dataset synthetic`" in readme


def test_docs_name_the_splits_key_of_meta_json() -> None:
    assert 'meta["splits"]' in (ROOT / "docs" / "synthetic.md").read_text()
    assert 'meta["splits"]' in (ROOT / "docs" / "simulator.md").read_text()


@pytest.mark.parametrize("script", ["bench/report.py", "bench/gr_table.py"])
def test_bench_table_scripts_answer_help(script: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("command", ["datasets", "models"])
def test_names_are_whole_at_80_columns(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from agenticrs.cli import common
    from agenticrs.data.registry import DATASETS
    from agenticrs.gr.sequences import SEQUENCE_DATASETS
    from agenticrs.models.base import list_models

    monkeypatch.setattr(common.console, "width", 80)
    result = runner.invoke(app, [command])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    first_cells = {line.strip("│ ").split("│")[0].strip() for line in result.output.splitlines()}
    names = [*DATASETS, *SEQUENCE_DATASETS] if command == "datasets" else list_models(None)
    missing = [name for name in names if name not in first_cells]
    assert not missing, missing


def test_evolve_refuses_a_config_file_whose_train_section_would_be_ignored(tmp_path: Path) -> None:
    config = tmp_path / "evolve.yaml"
    config.write_text(yaml.safe_dump({"dataset": "sim-tiny", "train": {"patience": 3, "epochs": 1}}))
    result = runner.invoke(app, ["evolve", "--config", str(config), "--db", str(tmp_path / "k.db")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert str(config) in line and "train.epochs" in line and "start.epochs" in line and "no effect" in line
    assert not (tmp_path / "k.db").exists()

"""bench/ctr_benchmark.py and bench/tune_ctr.py end to end on the tiny synthetic set: the same
optimiser-step budget for every model, `stopped_by` in every record, a validation-only grid."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    """The script as an importable module (its workers run in spawned processes, which import it
    by name)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_every_record_has_the_common_step_budget_and_what_stopped_it(tiny_cache: Path, tmp_path: Path) -> None:
    bench = _load("ctr_benchmark")
    out = tmp_path / "bench.json"
    code = bench.main(["--dataset", "synthetic-tiny", "--models", "lr,fm", "--seeds", "1", "--step-budget", "12",
                       "--set", "train.batch_size=512", "--set", "train.eval_every_steps=5", "--set", "smoke=true",
                       "--set", "train.num_threads=1", "--cache-dir", str(tiny_cache), "--json", str(out)])  # fmt: skip
    assert code == 0
    records = json.loads(out.read_text())
    assert [r["model"] for r in records] == ["lr", "fm"]
    for record in records:
        assert record["stopped_by"] == "step budget" and record["steps"] == 12
        assert record["train_settings"]["max_steps"] == 12 and 0 < record["best_step"] <= 12
    report = _load("report").markdown(records)
    assert "| step budget |" in report and "12 (" in report


def test_tuning_reads_the_validation_split_only_and_names_the_winner(tiny_cache: Path, tmp_path: Path, capsys) -> None:
    tune = _load("tune_ctr")
    grid = tmp_path / "grid.yaml"
    grid.write_text("lr:\n  train.learning_rate: [0.0001, 0.05]\n")
    out = tmp_path / "trials.json"
    args = ["--dataset", "synthetic-tiny", "--grid", str(grid), "--seeds", "1", "--set", "train.max_steps=30",
            "--set", "train.batch_size=512", "--set", "smoke=true", "--set", "train.num_threads=1",
            "--cache-dir", str(tiny_cache), "--json", str(out)]  # fmt: skip
    assert tune.main(args) == 0
    trials = json.loads(out.read_text())
    assert len(trials) == 2 and all("test" not in json.dumps(t) for t in trials)
    best = max(trials, key=lambda t: t["valid_auc"])
    assert best["point"] == ["train.learning_rate=0.05"]  # 30 steps at 1e-4 barely move LR
    assert "lr: chosen train.learning_rate=0.05" in capsys.readouterr().out
    assert tune.main(args) == 0 and len(json.loads(out.read_text())) == 2  # resumable: nothing re-run


def test_speed_ratios_are_measured_in_one_process_against_deepfm(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tiny_cache))
    config = tmp_path / "bench.yaml"
    config.write_text("overrides: [train.batch_size=256]\nmodels:\n  dnn: ['model_params.hidden_units=[8]']\n")
    out = tmp_path / "speed.json"
    assert _load("speed_ratio").main(["--dataset", "synthetic-tiny", "--config", str(config), "--models", "lr,dnn",
                                      "--steps", "2", "--rounds", "2", "--json", str(out)]) == 0  # fmt: skip
    records = {r["model"]: r for r in json.loads(out.read_text())}
    assert list(records) == ["deepfm", "lr", "dnn (defaults)", "dnn"]
    assert records["deepfm"]["ratio_to_deepfm"] == 1.0 and len(records["lr"]["rounds"]) == 2
    assert records["dnn"]["model_params"] == {"hidden_units": [8]} and records["dnn (defaults)"]["model_params"] == {}
    assert records["dnn"]["parameters"] < records["dnn (defaults)"]["parameters"]

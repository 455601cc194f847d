"""Single-class splits: undefined metrics are warned about once per split, written as JSON null, and
early stopping follows a metric that is defined (the validation log loss) instead of keeping epoch 1."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import process_dataset
from agenticrs.models.base import build_model
from agenticrs.progress import SILENT
from agenticrs.runtime.files import atomic_write_json, dumps_json, json_safe
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import evaluate
from agenticrs.train.engine import TRAIN_LOSS, Engine
from agenticrs.train.run import CHECKPOINT, SUMMARY, WEIGHTS, Run
from agenticrs.train.trainer import Trainer


class Recorder:
    """A reporter that keeps what is logged."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[object]:
        with SILENT.task(description, total) as task:
            yield task

    def log(self, message: str) -> None:
        self.lines.append(message)


def strict_json(text: str) -> object:
    """json.loads that refuses the NaN / Infinity tokens Python's json writes by default."""

    def refuse(token: str) -> None:
        raise AssertionError(f"not valid JSON: bare {token}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- the JSON writer
def test_atomic_write_json_writes_null_for_non_finite_numbers(tmp_path: Path):
    path = tmp_path / "out.json"
    obj = {"auc": float("nan"), "up": math.inf, "down": -math.inf, "ok": 0.5, "np": np.float32("nan"),
           "nested": [{"x": np.float64("inf")}, (1.0, float("nan"))], "n": 3, "s": "nan", "none": None}  # fmt: skip
    atomic_write_json(path, obj)
    assert strict_json(path.read_text()) == {
        "auc": None, "up": None, "down": None, "ok": 0.5, "np": None,
        "nested": [{"x": None}, [1.0, None]], "n": 3, "s": "nan", "none": None,
    }  # fmt: skip
    assert json_safe({"a": [np.int64(2), np.float32(0.5)]}) == {"a": [2, 0.5]}
    assert strict_json(dumps_json([float("nan")])) == [None]


# ----------------------------------------------------------------------------- data
def _data(tmp_path: Path, valid_labels: str = "zero", rows: int = 600):
    """Train has both classes (a learnable click); valid is all zeros (or all ones)."""
    rng = np.random.default_rng(0)

    def write(name: str, n: int, constant: int | None) -> str:
        users = rng.integers(0, 20, n)
        clicks = (rng.random(n) < np.where(users < 10, 0.8, 0.1)).astype(int) if constant is None else np.full(n, constant)
        buys = clicks * (rng.random(n) < 0.5)
        lines = ["click,buy,user"] + [f"{c},{b},u{u}" for c, b, u in zip(clicks, buys, users)]
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    constant = {"zero": 0, "one": 1}[valid_labels]
    files = {"train": write("train.csv", rows, None), "valid": write("valid.csv", 200, constant),
             "test": write("test.csv", 200, None)}  # fmt: skip
    spec = DatasetSpec.from_dict({
        "name": f"single-{valid_labels}", "files": files, "group_key": "user",
        "fields": [{"name": "click", "kind": "label"}, {"name": "buy", "kind": "label"},
                   {"name": "user", "kind": "categorical"}],
    })  # fmt: skip
    return process_dataset(spec, tmp_path / "cache")


# ----------------------------------------------------------------------------- the warning
@pytest.mark.parametrize("valid_labels", ["zero", "one"])
def test_undefined_metrics_are_warned_once_naming_the_split(tmp_path: Path, valid_labels: str):
    data = _data(tmp_path, valid_labels)
    torch.manual_seed(0)
    model = build_model("lr", data.schema, smoke=True)
    recorder, warned = Recorder(), set()
    metrics = ["auc", "logloss", "gauc", "calibration"]
    for _ in range(3):
        values, _ = evaluate(model, data.split("valid"), metrics, reporter=recorder, label_names=["click"],
                             split_name="valid", warned=warned)  # fmt: skip
    assert math.isnan(values["auc"]) and math.isnan(values["gauc"]) and math.isfinite(values["logloss"])
    assert len(recorder.lines) == 1  # once, however many evaluations
    line = recorder.lines[0]
    assert "valid split" in line and "'click'" in line and "auc" in line and "gauc" in line
    assert f"all {1 if valid_labels == 'one' else 0}" in line
    # a split with both classes warns about nothing
    evaluate(model, data.split("test"), metrics, reporter=recorder, split_name="test", warned=warned)
    assert len(recorder.lines) == 1


def test_multi_task_mean_is_over_the_labels_where_a_metric_is_defined(tmp_path: Path):
    data = _data(tmp_path)
    model = build_model("mmoe", data.schema, {"embedding_dim": 4, "expert_units": [8], "tower_units": [4]})
    recorder = Recorder()
    values, _ = evaluate(model, data.split("test"), ["auc"], label_index=[0, 1], label_names=["click", "buy"],
                         reporter=recorder)  # fmt: skip
    assert values["auc"] == pytest.approx((values["click/auc"] + values["buy/auc"]) / 2)
    values, _ = evaluate(model, data.split("valid"), ["auc", "logloss"], label_index=[0, 1],
                         label_names=["click", "buy"], reporter=recorder, split_name="valid")  # fmt: skip
    assert math.isnan(values["auc"]) and math.isfinite(values["logloss"])
    assert len(recorder.lines) == 2 and "'click'" in recorder.lines[0] and "'buy'" in recorder.lines[1]


# ----------------------------------------------------------------------------- early stopping
class NanMonitorTask:
    """Validation AUC undefined at every evaluation; the log loss (if reported) follows a script."""

    def __init__(self, losses: list[float] | None) -> None:
        self.losses = losses
        self.evaluations = 0

    def prepare(self, model: nn.Module) -> None:
        pass

    def steps_per_epoch(self) -> int:
        return 1

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        yield from ({} for _ in range(skip, 1))

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        return model.weight.sum() * 0.0 + 0.5, 1

    def has_validation(self) -> bool:
        return True

    def evaluate(self, model: nn.Module, split: str, reporter=None) -> dict[str, float] | None:
        if split != "valid":
            return None
        out = {"auc": float("nan")}
        if self.losses is not None:
            out["logloss"] = self.losses[min(self.evaluations, len(self.losses) - 1)]
        self.evaluations += 1
        return out


def test_early_stopping_falls_back_to_the_validation_logloss(tmp_path: Path):
    recorder = Recorder()
    run = Run.create(tmp_path, "fallback")
    task = NanMonitorTask([0.7, 0.6, 0.5, 0.55, 0.56, 0.57])
    config = TrainConfig(monitor="auc", patience=2, epochs=10, metrics=[], lr_schedule="constant")
    result = Engine(config, recorder).fit(nn.Linear(1, 1, bias=False), task, run)
    assert result.best_epoch == 3 and result.stopped_by == "patience"  # not epoch 1
    assert result.monitor_fallback == "logloss"
    assert [r["improved"] for r in result.history] == [True, True, True, False, False]
    assert sum("follow valid logloss" in line for line in recorder.lines) == 1
    summary = strict_json((run.folder / SUMMARY).read_text())
    assert summary["monitor"] == "auc" and summary["monitor_fallback"] == "logloss"
    assert summary["valid"]["auc"] is None
    for line in (run.folder / "metrics.jsonl").read_text().splitlines():
        assert strict_json(line)["valid_auc"] is None


def test_without_a_defined_validation_metric_the_training_loss_is_followed():
    recorder = Recorder()
    config = TrainConfig(monitor="auc", patience=2, epochs=4, metrics=[], lr_schedule="constant")
    result = Engine(config, recorder).fit(nn.Linear(1, 1, bias=False), NanMonitorTask(None))
    assert result.monitor_fallback == TRAIN_LOSS
    assert result.history[0]["improved"] and result.best_epoch >= 1
    assert any("training loss" in line for line in recorder.lines)


def test_all_zero_validation_labels_end_to_end(tmp_path: Path):
    data = _data(tmp_path)
    run = Run.create(tmp_path / "runs", "zeros")
    torch.manual_seed(0)
    model = build_model("lr", data.schema, smoke=True)
    recorder = Recorder()
    config = TrainConfig(batch_size=128, epochs=4, learning_rate=0.05, patience=2, lr_schedule="constant")
    result = Trainer(config, recorder).fit(model, data, run)
    # the best epoch is the one with the lowest validation log loss (before: epoch 1, or none at all)
    losses = [r["valid_logloss"] for r in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1 > 1 and result.monitor_fallback == "logloss"
    summary = strict_json((run.folder / SUMMARY).read_text())
    assert summary["valid"]["auc"] is None and summary["valid"]["gauc"] is None
    assert summary["valid"]["logloss"] == pytest.approx(losses[result.best_epoch - 1], abs=1e-9)  # the best restored
    assert (run.folder / WEIGHTS).is_file() and not (run.folder / CHECKPOINT).exists()
    warnings = [line for line in recorder.lines if line.startswith("warning: the valid split")]
    assert len(warnings) == 1 and "'click'" in warnings[0]

"""Training faults the user can fix are ValueErrors with a clear message (the CLI's exit 2): a
diverged model, and batch norm meeting a batch of one row (which used to crash the last batch of
an epoch whenever the training split had `k * batch_size + 1` rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import process_dataset
from agenticrs.models.base import build_model
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import CTRTask, evaluate
from agenticrs.train.metrics import NonFiniteError
from agenticrs.train.trainer import Trainer


def _data(tmp_path: Path, rows: int):
    lines = ["click,user,item,price"] + [f"{i % 2 if i % 5 else 1},u{i % 4},i{i % 6},{i * 0.5}" for i in range(rows)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "valid.csv").write_text("\n".join(lines[:21]) + "\n")
    spec = DatasetSpec.from_dict({
        "name": f"tiny{rows}", "files": {"train": str(tmp_path / "train.csv"), "valid": str(tmp_path / "valid.csv")},
        "fields": [{"name": "click", "kind": "label"}, {"name": "user", "kind": "categorical"},
                   {"name": "item", "kind": "categorical"}, {"name": "price", "kind": "numeric", "transform": "log1p"}],
    })  # fmt: skip
    return process_dataset(spec, tmp_path / "cache")


@pytest.mark.parametrize(("model_name", "params"), [("deepfm", {}), ("dnn", {}), ("dcnv2", {"batch_norm": True})])
def test_a_last_batch_of_one_row_is_left_out_for_batch_norm(tmp_path: Path, model_name: str, params: dict):
    data = _data(tmp_path, rows=41)  # batches of 20: 20, 20 and 1
    torch.manual_seed(0)
    model = build_model(model_name, data.schema, params, smoke=True)
    config = TrainConfig(batch_size=20, epochs=2, metrics=["logloss"], monitor="logloss")
    task = CTRTask(data, config, model)
    assert task.steps_per_epoch() == 2 and [len(b["label"]) for b in task.batches(1)] == [20, 20]
    result = Trainer(config).fit(model, data)
    assert result.steps == 4 and np.isfinite(result.valid["logloss"])


def test_models_without_batch_norm_keep_every_row(tmp_path: Path):
    data = _data(tmp_path, rows=41)
    task = CTRTask(data, TrainConfig(batch_size=20), build_model("fm", data.schema, smoke=True))
    assert [len(b["label"]) for b in task.batches(1)] == [20, 20, 1]


def test_batch_norm_with_batches_of_one_row_is_refused_clearly(tmp_path: Path):
    data = _data(tmp_path, rows=41)
    model = build_model("deepfm", data.schema, smoke=True)
    with pytest.raises(ValueError, match="batch_size is 1.*batch norm"):
        CTRTask(data, TrainConfig(batch_size=1), model)


def test_a_diverged_model_is_a_value_error_naming_the_cause(tmp_path: Path):
    data = _data(tmp_path, rows=40)
    model = build_model("fm", data.schema, smoke=True)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="predicts NaN on the valid split") as info:
        evaluate(model, data.split("valid"), ["auc"], split_name="valid")
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)
    with pytest.raises(ValueError, match="training loss is nan"):
        Trainer(TrainConfig(batch_size=8, epochs=1, metrics=["auc"])).fit(model, data)

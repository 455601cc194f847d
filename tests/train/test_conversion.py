"""Per-task conversion metrics (ctr_auc, cvr_auc, ctcvr_auc): hand values with missing labels, and
how multi-task runs (ESMM, MMoE, PLE) report them through the one evaluation path."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import build_model
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.ctr import CTRTask, predict_probs
from agenticrs.train.metrics import (
    Funnel,
    auc,
    compute_metrics,
    conversion_metrics,
    metric_improves,
    metric_spec,
)
from agenticrs.train.trainer import Trainer
from agenticrs.train.workflow import evaluate_run, train_run

NAN = float("nan")


def test_conversion_metrics_by_hand_with_missing_labels():
    funnel = Funnel(
        click=np.array([1, 1, 1, 0, 0, 1, NAN]),
        conversion=np.array([1, 0, NAN, 0, NAN, 0, 1]),
        p_ctr=np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.15, 0.5]),
        p_cvr=np.array([0.6, 0.4, 0.9, 0.9, 0.1, 0.6, 0.2]),
        p_ctcvr=np.array([0.25, 0.2, 0.6, 0.3, 0.05, 0.1, 0.4]),
    )
    # ctr: rows 0-5 (row 6 has no click label); positives .9 .8 .7 .15, negatives .2 .1:
    # 4 x 2 pairs, .15 loses to .2 -> 7 / 8
    # cvr: clicked rows with a conversion label, 0, 1, 5 (row 2 has none; rows 3, 4 are not clicked
    # and row 3's .9 must not count): positive .6 beats .4, ties .6 -> 1.5 / 2
    # ctcvr: click AND conversion on rows 0, 1, 3, 4 (unclicked: 0 whatever the conversion label), 5;
    # row 2 (clicked, conversion missing) and row 6 (click missing) are out: .25 beats .2 .05 .1,
    # loses to .3 -> 3 / 4
    assert conversion_metrics(["ctr_auc", "cvr_auc", "ctcvr_auc"], funnel) == {
        "ctr_auc": 0.875, "cvr_auc": 0.75, "ctcvr_auc": 0.75,
    }  # fmt: skip
    np.testing.assert_array_equal(funnel.ctcvr_labels(), [1, 0, NAN, 0, 0, 0, NAN])
    # a task with one class (or no rows) left is undefined, not an error
    no_buyer = Funnel(np.array([1.0, 0.0]), np.array([0.0, NAN]), *(np.array([0.5, 0.4]),) * 3)
    values = conversion_metrics(["ctr_auc", "cvr_auc", "ctcvr_auc"], no_buyer)
    assert values["ctr_auc"] == 1.0 and np.isnan(values["cvr_auc"]) and np.isnan(values["ctcvr_auc"])


def test_conversion_metrics_are_registered_with_their_direction():
    for name in ("ctr_auc", "cvr_auc", "ctcvr_auc"):
        metric, _ = metric_spec(name)
        assert metric.higher_is_better and metric.needs == ("funnel",)
        assert metric_improves(name, 0.7, 0.6) and not metric_improves(name, 0.6, 0.7)
    with pytest.raises(ValueError, match="conversion metric; use conversion_metrics"):
        compute_metrics(["cvr_auc"], np.array([0, 1]), np.array([0.1, 0.9]))
    with pytest.raises(ValueError, match="not a conversion metric"):
        conversion_metrics(["auc"], Funnel(*(np.zeros(2),) * 5))


# -- multi-task runs -----------------------------------------------------------------------------
def _data(root: Path, conversion_on_clicks_only: bool = False, rows: int = 5000) -> ProcessedDataset:
    """click ~ user, purchase | click ~ item (planted), splits train / valid / test."""
    rng = np.random.default_rng(11)
    user, item = rng.integers(0, 30, rows), rng.integers(0, 40, rows)
    u_score, i_score = np.random.default_rng(1).normal(size=30), np.random.default_rng(2).normal(size=40)
    click = rng.random(rows) < 1 / (1 + np.exp(-(u_score[user] * 2.5 - 0.5)))
    buy = click & (rng.random(rows) < 1 / (1 + np.exp(-(i_score[item] * 3.0))))
    purchase = np.where(click, buy, np.nan if conversion_on_clicks_only else 0.0)
    table = pa.table({"click": click.astype(np.float64), "purchase": purchase,
                      "user": [f"u{u}" for u in user], "item": [f"i{i}" for i in item]})  # fmt: skip
    files = {}
    for split, (lo, hi) in {"train": (0, 3500), "valid": (3500, 4000), "test": (4000, rows)}.items():
        pq.write_table(table.slice(lo, hi - lo), root / f"{split}.parquet")
        files[split] = str(root / f"{split}.parquet")
    spec = DatasetSpec.from_dict({
        "name": "funnel", "files": files, "reader": {"format": "parquet"},
        "fields": [{"name": "click", "kind": "label"},
                   {"name": "purchase", "kind": "label", "optional": conversion_on_clicks_only},
                   {"name": "user", "kind": "categorical"}, {"name": "item", "kind": "categorical"}],
    })  # fmt: skip
    (root / "funnel.yaml").write_text(spec.to_yaml())
    return process_dataset(spec, root / "cache")


SMALL = {
    "esmm": {"embedding_dim": 4, "ctr_units": [16], "cvr_units": [16]},
    "mmoe": {"embedding_dim": 4, "expert_units": [16], "tower_units": [8], "num_experts": 2, "dropout": 0.0},
    "ple": {"embedding_dim": 4, "expert_units": [16], "tower_units": [8], "specific_experts": 1,
            "shared_experts": 1, "dropout": 0.0},
}  # fmt: skip


def _config(model: str, **extra) -> TrainConfig:
    conversion = {} if model == "esmm" else {"conversion_labels": ["click", "purchase"]}
    return TrainConfig(batch_size=256, epochs=6, learning_rate=0.01, metrics=["auc", "logloss"], patience=6,
                       **conversion, **extra)  # fmt: skip


@pytest.mark.parametrize("model", ["esmm", "mmoe", "ple"])
def test_multi_task_conversion_runs_report_the_funnel_metrics(model, tmp_path):
    data = _data(tmp_path)
    torch.manual_seed(0)
    net = build_model(model, data.schema, SMALL[model])
    config = _config(model)
    task = CTRTask(data, config, net)
    assert task.conversion.space == "impressions" and task.metrics[-3:] == ["ctr_auc", "cvr_auc", "ctcvr_auc"]
    test = Trainer(config).fit(net, data).test
    assert {"click/auc", "purchase/auc", "ctr_auc", "cvr_auc", "ctcvr_auc"} <= set(test)
    # CTR and CTCVR on impressions are the two heads' own AUCs (purchase is 0 on unclicked rows) ...
    assert test["ctr_auc"] == pytest.approx(test["click/auc"], abs=1e-12)
    assert test["ctcvr_auc"] == pytest.approx(test["purchase/auc"], abs=1e-12)
    # ... and CVR ranks the clicked rows by P(click AND purchase) / P(click)
    probs = predict_probs(net, data.split("test")).astype(np.float64)
    labels = np.asarray(data.split("test")["labels"])
    clicked = labels[:, 0] == 1
    assert test["cvr_auc"] == pytest.approx(auc(labels[clicked, 1], probs[clicked, 1] / probs[clicked, 0]), abs=1e-12)
    print(model, {k: round(v, 3) for k, v in test.items() if k.endswith("_auc")})
    assert test["ctr_auc"] > 0.75 and test["cvr_auc"] > 0.7 and test["ctcvr_auc"] > 0.75  # both planted signals


def test_a_conversion_head_trained_on_clicks_only_is_the_cvr(tmp_path):
    data = _data(tmp_path, conversion_on_clicks_only=True)
    torch.manual_seed(0)
    net = build_model("mmoe", data.schema, SMALL["mmoe"])
    config = _config("mmoe")
    task = CTRTask(data, config, net)
    assert task.conversion.space == "clicks"
    test = Trainer(config).fit(net, data).test
    probs = predict_probs(net, data.split("test")).astype(np.float64)
    labels = np.asarray(data.split("test")["labels"])
    clicked = labels[:, 0] == 1
    assert test["cvr_auc"] == pytest.approx(test["purchase/auc"], abs=1e-12)  # the head is P(purchase | click)
    ctcvr = np.where(labels[:, 0] == 0, 0.0, labels[:, 1])
    assert test["ctcvr_auc"] == pytest.approx(auc(ctcvr, probs[:, 0] * probs[:, 1]), abs=1e-12)
    assert not np.isnan(labels[clicked, 1]).any()


def test_funnel_settings_are_checked(tmp_path):
    data = _data(tmp_path)
    mmoe = build_model("mmoe", data.schema, SMALL["mmoe"])
    with pytest.raises(ValueError, match=r"need a click -> conversion funnel.*train.conversion_labels"):
        CTRTask(data, TrainConfig(metrics=["auc", "cvr_auc"]), mmoe)
    single = build_model("lr", data.schema, smoke=True)
    with pytest.raises(ValueError, match="must be trained labels"):
        CTRTask(data, TrainConfig(label="click", conversion_labels=["click", "purchase"]), single)
    esmm = build_model("esmm", data.schema, SMALL["esmm"])
    with pytest.raises(ValueError, match="differ from the model's funnel"):
        CTRTask(data, TrainConfig(conversion_labels=["purchase", "click"]), esmm)
    with pytest.raises(ValueError, match="two different labels"):
        TrainConfig(conversion_labels=["click", "click"])


def test_evaluate_run_reproduces_a_conversion_runs_summary(tmp_path):
    _data(tmp_path)
    config = RunConfig(dataset=str(tmp_path / "funnel.yaml"), model="esmm", model_params=SMALL["esmm"],
                       train=TrainConfig(batch_size=256, max_steps=30, metrics=["auc"]))  # fmt: skip
    trained = train_run(config, tmp_path / "runs", tmp_path / "cache")
    summary_test = trained.result.test
    assert trained.result.monitor == "ctcvr_auc"  # ESMM's own training default
    again, _ = evaluate_run(trained.run.folder, cache_dir=tmp_path / "cache")
    assert again == summary_test
    assert {"ctr_auc", "cvr_auc", "ctcvr_auc", "click/auc", "purchase/auc"} <= set(again)


# -- real data: the Taobao UserBehavior sample ---------------------------------------------------
DATA_DIR = Path(os.environ.get("AGENTICRS_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
TAOBAO_SAMPLE = DATA_DIR / "taobao_userbehavior_sample" / "UserBehavior_head4321.csv"
TAOBAO_PARAMS = {
    "esmm": {**SMALL["esmm"], "click_label": "is_engage", "conversion_label": "is_buy"},
    "mmoe": {**SMALL["mmoe"], "tasks": ["is_engage", "is_buy"]},
    "ple": {**SMALL["ple"], "tasks": ["is_engage", "is_buy"]},
}


@pytest.fixture(scope="module")
def taobao_pairs(tmp_path_factory) -> ProcessedDataset:
    if not TAOBAO_SAMPLE.exists():
        pytest.skip(f"real data file {TAOBAO_SAMPLE} is absent (set AGENTICRS_DATA_DIR)")
    from agenticrs.data.adapters.taobao import convert_taobao

    root = tmp_path_factory.mktemp("taobao_pairs")
    spec = convert_taobao(TAOBAO_SAMPLE, root / "converted", history_len=20, sample="user_item")
    return process_dataset(spec, root / "cache")


@pytest.mark.realdata
@pytest.mark.parametrize("model", ["esmm", "mmoe", "ple"])
def test_conversion_models_train_on_the_taobao_sample(model, taobao_pairs):
    """(user, item) pairs of the 4,321-event sample with engage -> buy labels: each model trains
    (finite loss) and reports the funnel metrics. Too small for figures (tens of buyers)."""
    torch.manual_seed(0)
    net = build_model(model, taobao_pairs.schema, TAOBAO_PARAMS[model])
    funnel = {} if model == "esmm" else {"conversion_labels": ["is_engage", "is_buy"]}
    config = TrainConfig(batch_size=256, max_steps=20, learning_rate=0.01, metrics=["auc", "logloss"],
                         eval_every_steps=10, **funnel)  # fmt: skip
    result = Trainer(config).fit(net, taobao_pairs)
    assert result.history and all(math.isfinite(record["train_loss"]) for record in result.history)
    assert {"is_engage/auc", "is_buy/auc", "ctr_auc", "cvr_auc", "ctcvr_auc"} <= set(result.test)
    assert math.isfinite(result.test["ctr_auc"]) and math.isfinite(result.test["ctcvr_auc"])
    assert math.isfinite(result.test["cvr_auc"])  # the test day has buyers and non-buyers among the engaged
    assert math.isfinite(result.test["is_buy/logloss"])


class _RecordedReads:
    """A split whose `labels` record how many rows each read takes (the other arrays as they are)."""

    def __init__(self, split) -> None:
        self.split, self.rows, self.reads = split, split.rows, []

    def keys(self):
        return self.split.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.split

    def __getitem__(self, key: str):
        value = self.split[key]
        if key != "labels":
            return value
        outer = self

        class Labels:
            shape, dtype = value.shape, value.dtype

            def __getitem__(self, index):
                part = value[index]
                outer.reads.append(len(part))
                return part

        return Labels()


@pytest.mark.parametrize("on_clicks", [False, True])
def test_the_task_reads_the_training_labels_in_blocks(tmp_path, on_clicks):
    """Missing labels and the funnel's space are found block by block (flat memory on a mapped
    split), with the answers of the whole-array reading, across block boundaries."""
    from dataclasses import replace

    data = _data(tmp_path, conversion_on_clicks_only=on_clicks)
    net = build_model("mmoe", data.schema, SMALL["mmoe"])
    whole = CTRTask(data, _config("mmoe"), net)
    recorded = _RecordedReads(data.split("train"))
    blocked = CTRTask(replace(data, splits={**data.splits, "train": recorded}), _config("mmoe", shuffle_block_rows=256),
                      net)  # fmt: skip
    assert recorded.reads and max(recorded.reads) <= 256 and sum(recorded.reads) == data.split("train").rows
    assert (blocked.has_missing, blocked.conversion) == (whole.has_missing, whole.conversion)
    assert blocked.conversion.space == ("clicks" if on_clicks else "impressions") and blocked.has_missing == on_clicks

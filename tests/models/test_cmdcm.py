"""CM-DCM: each tower learns its planted signal, the gate reads the user state, the chain and the
counterfactual loss equal hand computations, and the engine trains it through the CTR task."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions
from agenticrs.features.batching import LABELS, iterate_batches
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import IncompatibleDataError, build_model
from agenticrs.models.cmdcm import chain_logit, ips_dr_loss
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.ctr import CTRTask
from agenticrs.train.metrics import auc
from agenticrs.train.workflow import train_run

ROWS = 6000
LEVELS = 8
S_DIR = np.linspace(-2.5, 0.5, LEVELS)
S_ATC = np.linspace(-2.0, 2.0, LEVELS)
S_DEL = np.linspace(-2.0, 2.0, LEVELS)


def _table(seed: int) -> pa.Table:
    """y_dir depends on field `a`, y_atc on field `b`, y_del | atc on field `c`; u is a user-state count."""
    rng = np.random.default_rng(seed)
    a, b, c = (rng.integers(0, LEVELS, ROWS) for _ in range(3))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    y_atc = rng.random(ROWS) < sig(S_ATC[b])
    y_del = y_atc & (rng.random(ROWS) < sig(S_DEL[c]))
    y_dir = rng.random(ROWS) < sig(S_DIR[a])
    return pa.table({
        "request_id": np.arange(ROWS), "a": [f"a{v}" for v in a], "b": [f"b{v}" for v in b], "c": [f"c{v}" for v in c],
        "hist_carts": rng.integers(0, 10, ROWS).astype(np.float64),
        "y_dir": y_dir.astype(np.int8), "y_atc": y_atc.astype(np.int8), "y_del": y_del.astype(np.int8),
    })  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> ProcessedDataset:
    folder = tmp_path_factory.mktemp("cmdcm")
    files = {}
    for split, seed in (("train", 0), ("valid", 1), ("test", 2)):
        pq.write_table(_table(seed), folder / f"{split}.parquet")
        files[split] = [str(folder / f"{split}.parquet")]
    spec = DatasetSpec(
        name="cmdcm-planted", files=files, reader=ReaderOptions(format="parquet"),
        fields=[*(FieldSpec(name=n, kind="label") for n in ("y_dir", "y_atc", "y_del")),
                *(FieldSpec(name=n, kind="categorical") for n in ("a", "b", "c")),
                FieldSpec(name="hist_carts", kind="numeric", transform="log1p")],
    )  # fmt: skip
    data = process_dataset(spec, folder / "cache")
    for split in data.splits.values():
        split.load_in_memory()
    return data


def _outputs(model, split) -> dict[str, np.ndarray]:
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for batch in iterate_batches(split, 4096, label_index=None):
            for key, value in model(batch).items():
                if value.dim() == 1:
                    parts.setdefault(key, []).append(value.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_each_tower_learns_its_planted_signal_through_the_engine(planted, tmp_path: Path):
    params = {"embedding_dim": 4, "num_experts": 2, "expert_units": [16], "tower_units": [8], "gate_units": [8],
              "dropout": 0.0, "user_state_fields": ["hist_carts"]}  # fmt: skip
    train = TrainConfig(epochs=6, batch_size=256, learning_rate=5e-3, seed=0, num_threads=1, patience=6)
    trained = train_run(RunConfig(dataset="planted", model="cmdcm", model_params=params, train=train),
                        runs_dir=tmp_path, data=planted)  # fmt: skip
    test = planted.split("test")
    out = _outputs(trained.model, test)
    y = np.asarray(test["labels"])
    y_dir, y_atc, y_del = y[:, 0], y[:, 1], y[:, 2]
    carted = y_atc == 1
    assert auc(y_dir, out["p_dir"]) > 0.7
    assert auc(y_atc, out["p_atc"]) > 0.75
    assert auc(y_del[carted], out["p_del_given_atc"][carted]) > 0.75  # the transition tower, on carted clicks
    assert auc(y_del, out["p_del"]) > 0.75
    # each tower follows its own field: the ATC tower ranks b's levels, the transition tower c's
    b, c = (np.asarray(test["categorical"][:, planted.schema.categorical_index(n)]) for n in ("b", "c"))
    by_b = [out["p_atc"][b == v].mean() for v in np.unique(b)]
    by_c = [out["p_del_given_atc"][c == v].mean() for v in np.unique(c)]
    assert np.ptp(by_b) > 0.4 and np.ptp(by_c) > 0.4
    assert out["score"].min() >= out["p_dir"].min() and np.allclose(
        out["score"], out["p_dir"] + (1 - out["p_dir"]) * out["p_del"], atol=1e-6)
    assert trained.result.stopped_by in ("epochs", "patience")


def test_the_gate_reads_the_user_state_and_only_it(planted):
    torch.manual_seed(0)
    model = build_model("cmdcm", planted.schema, {"embedding_dim": 4, "num_experts": 3, "expert_units": [8],
                                                  "tower_units": [4], "gate_units": [8], "dropout": 0.0,
                                                  "user_state_fields": ["hist_carts"]}).eval()  # fmt: skip
    with torch.no_grad():
        model.embedding.numeric_weight.normal_(std=1.0)
    batch = next(iter(iterate_batches(planted.split("valid"), 16, label_index=None)))
    base = model.components(batch)
    more = dict(batch, numeric=batch["numeric"] + 2.0)  # a different user state
    other_item = dict(batch, categorical=batch["categorical"].roll(1, dims=0))  # other fields, same state
    with torch.no_grad():
        changed, same = model.components(more), model.components(other_item)
    assert (changed["gates"] - base["gates"]).abs().max() > 1e-3
    assert (changed["scale"] - base["scale"]).abs().max() > 1e-3
    assert torch.allclose(same["gates"], base["gates"]) and torch.allclose(same["scale"], base["scale"])
    assert torch.allclose(base["gates"].sum(-1), torch.ones(16, 4))
    assert ((base["scale"] > 0) & (base["scale"] < 2)).all()  # 2 sigma(W u)
    # without gating the gates read every field (plain MMoE)
    plain = build_model("cmdcm", planted.schema, {"embedding_dim": 4, "gating": False,
                                                  "user_state_fields": ["hist_carts"]}).eval()  # fmt: skip
    with torch.no_grad():
        plain.embedding.embedding.weight.normal_(std=1.0)
        assert (plain.components(other_item)["gates"] - plain.components(batch)["gates"]).abs().max() > 1e-4


def test_chain_logit_is_the_product_in_log_space():
    a = torch.tensor([0.3, -2.0, 4.0, -60.0, 60.0, 30.0])
    b = torch.tensor([1.2, 0.5, -3.0, -60.0, 60.0, 1.0])
    logit = chain_logit(a, b)
    expected = torch.sigmoid(a.double()) * torch.sigmoid(b.double())
    assert torch.isfinite(logit).all()
    assert torch.allclose(torch.sigmoid(logit.double())[:4], expected[:4], rtol=1e-5, atol=1e-30)
    assert torch.sigmoid(logit[4]) > 0.999 and torch.sigmoid(logit[5]) > 0.7
    a.requires_grad_(True)
    chain_logit(a, b).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_ips_and_doubly_robust_losses_equal_a_hand_computation():
    d = torch.tensor([0.5, -1.0, 2.0, 0.0])  # p_del|atc logits
    y = torch.tensor([1.0, 0.0, float("nan"), 1.0])  # the third row has no delayed label
    o = torch.tensor([1.0, 1.0, 1.0, 0.0])  # carted
    p = torch.tensor([0.5, 0.01, 0.9, 0.2])  # p_atc (the second is clipped to 0.05)
    r = torch.tensor([0.0, 1.0, 0.0, -1.0])  # imputation logits
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = lambda z, t: -(t * math.log(sig(z)) + (1 - t) * math.log(1 - sig(z)))  # noqa: E731
    e = [bce(0.5, 1), bce(-1.0, 0)]
    e_hat = [bce(0.5, sig(0.0)), bce(-1.0, sig(1.0)), None, bce(0.0, sig(-1.0))]
    ips = (e[0] / 0.5 + e[1] / 0.05) / 3
    assert ips_dr_loss(d, y, o, p, None, clip=0.05).item() == pytest.approx(ips, rel=1e-5)
    dr = (e_hat[0] + (e[0] - e_hat[0]) / 0.5 + e_hat[1] + (e[1] - e_hat[1]) / 0.05 + e_hat[3]) / 3
    imputation = ((e[0] - e_hat[0]) ** 2 / 0.5 + (e[1] - e_hat[1]) ** 2 / 0.05) / 3
    assert ips_dr_loss(d, y, o, p, r, clip=0.05).item() == pytest.approx(dr + imputation, rel=1e-5)
    # the propensity is a constant: no gradient flows into p_atc
    p_grad = p.clone().requires_grad_(True)
    ips_dr_loss(d.clone().requires_grad_(True), y, o, p_grad, r, clip=0.05).backward()
    assert p_grad.grad is None


def test_the_ctr_task_adds_the_counterfactual_term_and_skips_missing_labels(planted):
    torch.manual_seed(0)
    config = {"embedding_dim": 4, "expert_units": [8], "tower_units": [4], "user_state_fields": ["hist_carts"]}
    model = build_model("cmdcm", planted.schema, config)
    task = CTRTask(planted, TrainConfig(batch_size=64), model)
    assert task.label_names == ["y_dir", "y_atc", "y_del"]
    batch = next(iter(task.batches(1)))
    batch[LABELS][::2, 2] = float("nan")  # half the rows have no delayed label yet
    model.eval()
    with torch.no_grad():
        total, _ = task.loss(model, batch)
        out = model(batch)
        labels = batch[LABELS]
        present = ~torch.isnan(labels)
        safe = torch.where(present, labels, torch.zeros_like(labels))
        bce = (F.binary_cross_entropy_with_logits(out["logit"], safe, reduction="none") * present).sum(0)
        expected = (bce / present.sum(0)).sum() + model.labelled_loss(out, labels)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.labelled_loss(out, labels).item() > 0
    off = build_model("cmdcm", planted.schema, {**config, "counterfactual": False})
    assert off.labelled_loss(off(batch), labels).item() == 0.0


def test_missing_labels_and_state_fields_are_named(planted):
    with pytest.raises(ValueError, match=r"label\(s\) \['y_buy'\]"):
        build_model("cmdcm", planted.schema, {"labels": ["y_dir", "y_atc", "y_buy"]})
    with pytest.raises(ValueError, match="user_state_fields"):
        build_model("cmdcm", planted.schema, {"user_state_fields": ["nowhere"]})
    assert build_model("cmdcm", planted.schema, {}).state_index == [3]  # the default fields it has: hist_carts
    one_label = dataclasses.replace(planted.schema, labels=("y_dir",))
    with pytest.raises(IncompatibleDataError, match="at least 3 label"):
        build_model("cmdcm", one_label, {"user_state_fields": ["hist_carts"]})

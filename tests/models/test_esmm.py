"""ESMM: the CTR x CVR chain, its stability, its loss over the entire space and what it learns."""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from zoo_helpers import funnel_data

from agenticrs.data.simulated import write_simulation
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.batching import LABELS, iterate_batches
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import IncompatibleDataError, build_model
from agenticrs.models.esmm import ctcvr_logit
from agenticrs.sim import sim_preset
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import CTRTask, predict_probs
from agenticrs.train.metrics import auc

SMALL = {"embedding_dim": 4, "ctr_units": [8], "cvr_units": [8]}


@pytest.fixture(scope="module")
def funnel(tmp_path_factory) -> ProcessedDataset:
    return funnel_data(tmp_path_factory.mktemp("esmm_funnel"))


def _batch(data: ProcessedDataset, size: int = 64) -> dict[str, torch.Tensor]:
    return next(iterate_batches(data.split("train"), size, label_index=[0, 1]))


# -- the chain: pCTCVR = pCTR x pCVR, stable at any logit -------------------------------------------
EXTREMES = [-1e4, -700.0, -100.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 30.0, 100.0, 700.0, 1e4]


def _exact_ctcvr_logit(a: float, b: float) -> float:
    """logit(s(a) s(b)) in 50-digit decimals: ln p - ln(1 - p), with 1 - p = s(-a) + s(a) s(-b)
    (each term representable however close p is to 1)."""
    getcontext().prec = 50
    s = lambda v: 1 / (1 + (-Decimal(v)).exp())  # noqa: E731
    return float((s(a) * s(b)).ln() - (s(-a) + s(a) * s(-b)).ln())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_ctcvr_logit_is_the_logit_of_the_product_and_finite_at_extreme_logits(dtype):
    a, b = torch.tensor(EXTREMES, dtype=dtype).view(-1, 1), torch.tensor(EXTREMES, dtype=dtype).view(1, -1)
    a, b = a.expand(len(EXTREMES), -1).clone().requires_grad_(), b.expand(len(EXTREMES), -1).clone().requires_grad_()
    z = ctcvr_logit(a, b)
    assert torch.isfinite(z).all()
    values = z.detach()
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    for i, x in enumerate(EXTREMES):
        for j, y in enumerate(EXTREMES):
            assert float(values[i, j]) == pytest.approx(_exact_ctcvr_logit(x, y), rel=tolerance, abs=tolerance), (x, y)
    # the BCE on it is the BCE of the log-probabilities, finite, with finite gradients for both labels
    for label in (0.0, 1.0):
        loss = F.binary_cross_entropy_with_logits(z, torch.full_like(z, label), reduction="sum")
        assert torch.isfinite(loss)
        (ga, gb) = torch.autograd.grad(loss, (a, b), retain_graph=True)
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()


def test_sigmoid_of_the_ctcvr_logit_equals_the_product_in_the_usual_range():
    a, b = torch.randn(1000, dtype=torch.float64) * 4, torch.randn(1000, dtype=torch.float64) * 4
    assert torch.allclose(torch.sigmoid(ctcvr_logit(a, b)), torch.sigmoid(a) * torch.sigmoid(b), rtol=1e-12, atol=0)
    log_p = F.logsigmoid(a) + F.logsigmoid(b)
    log_q = torch.log1p(-torch.exp(log_p))
    for y in (torch.zeros(1000, dtype=torch.float64), torch.ones(1000, dtype=torch.float64)):
        from_logs = -(y * log_p + (1 - y) * log_q)
        bce = F.binary_cross_entropy_with_logits(ctcvr_logit(a, b), y, reduction="none")
        assert torch.allclose(bce, from_logs, rtol=1e-9, atol=1e-12)


def test_the_model_outputs_ctr_and_ctcvr_and_its_probabilities_chain_exactly(funnel):
    torch.manual_seed(0)
    model = build_model("esmm", funnel.schema, SMALL).eval()
    batch = _batch(funnel)
    with torch.no_grad():
        logit = model(batch)["logit"]
        ctr, cvr = model.tower_logits(batch)
    probs = model.task_probabilities(batch)
    assert logit.shape == (64, 2) and model.output_labels == ["click", "purchase"]
    assert torch.equal(logit[:, 0], ctr)
    assert torch.equal(probs["ctcvr"], probs["ctr"] * probs["cvr"])  # CTCVR = CTR x CVR, exactly
    assert torch.allclose(torch.sigmoid(logit[:, 1]), probs["ctcvr"], rtol=1e-5, atol=0)
    assert torch.equal(probs["cvr"], torch.sigmoid(cvr))


# -- the loss over the entire space -------------------------------------------------------------
def test_targets_are_click_and_click_and_conversion(funnel):
    nan = float("nan")
    labels = torch.tensor([[0, nan], [0, 1], [0, 0], [1, 0], [1, 1], [1, nan], [nan, 1]])
    got = build_model("esmm", funnel.schema, SMALL).targets(labels)
    expected = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 0], [1, 1], [1, nan], [nan, nan]])
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.equal(torch.nan_to_num(got, 7.0), torch.nan_to_num(expected, 7.0))


def test_the_task_loss_is_the_papers_loss_and_never_trains_cvr_directly(funnel):
    torch.manual_seed(1)
    model = build_model("esmm", funnel.schema, SMALL)
    task = CTRTask(funnel, TrainConfig(batch_size=128), model)
    assert task.label_names == ["click", "purchase"] and task.conversion is not None
    assert task.conversion.space == "impressions"
    batch = next(task.batches(1))
    loss, _ = task.loss(model, batch)
    labels = batch[LABELS]
    ctr, cvr = model.tower_logits(batch)
    p_ctcvr = torch.sigmoid(ctr) * torch.sigmoid(cvr)
    y_ctcvr = labels[:, 0] * labels[:, 1]
    paper = F.binary_cross_entropy(torch.sigmoid(ctr), labels[:, 0]) + F.binary_cross_entropy(p_ctcvr, y_ctcvr)
    assert loss.item() == pytest.approx(paper.item(), rel=1e-5)
    # the CTR loss alone reaches the CTR tower only; the CTCVR loss reaches both towers
    logit = model(batch)["logit"]
    ctr_loss = F.binary_cross_entropy_with_logits(logit[:, 0], labels[:, 0])
    grads = torch.autograd.grad(ctr_loss, list(model.cvr_tower.parameters()), allow_unused=True, retain_graph=True)
    assert all(g is None or (g == 0).all() for g in grads)
    model.zero_grad()
    F.binary_cross_entropy_with_logits(logit[:, 1], y_ctcvr).backward()
    for tower in (model.ctr_tower, model.cvr_tower):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())
    assert model.embedding.embedding.weight.grad.abs().sum() > 0


def test_a_conversion_label_missing_on_clicked_rows_leaves_only_its_ctcvr_term(tmp_path):
    data = funnel_data(tmp_path)
    model = build_model("esmm", data.schema, SMALL)
    task = CTRTask(data, TrainConfig(batch_size=600), model)
    batch = next(task.batches(1))
    clicked = torch.nonzero(batch[LABELS][:, 0] == 1)[:5, 0]
    batch[LABELS][clicked, 1] = float("nan")
    loss, _ = task.loss(model, batch)
    assert torch.isfinite(loss)
    logit, labels = model(batch)["logit"], batch[LABELS]
    keep = ~torch.isnan(labels[:, 1])
    expected = F.binary_cross_entropy_with_logits(logit[:, 0], labels[:, 0]) + F.binary_cross_entropy_with_logits(
        logit[keep, 1], (labels[:, 0] * labels[:, 1])[keep]
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_names_are_settings_and_a_missing_one_is_named(tmp_path):
    data = funnel_data(tmp_path, click="is_click", conversion="is_buy")
    with pytest.raises(IncompatibleDataError, match=r"model_params.click_label 'click' is not a label.*is_click"):
        build_model("esmm", data.schema, SMALL)
    with pytest.raises(IncompatibleDataError, match=r"model_params.conversion_label 'purchase'"):
        build_model("esmm", data.schema, {**SMALL, "click_label": "is_click"})
    model = build_model("esmm", data.schema, {**SMALL, "click_label": "is_click", "conversion_label": "is_buy"})
    assert model.output_labels == ["is_click", "is_buy"] and model.conversion_labels == ("is_click", "is_buy")


# -- it learns the simulator's conversion signal --------------------------------------------------
def test_esmm_learns_the_simulated_conversion_signal_beyond_its_ctr(tmp_path):
    """150 steps on `sim-tiny`'s click + purchase impressions: the CVR tower, trained only through
    pCTCVR, ranks the validation clicks by purchase clearly better than chance and than pCTR does
    (the simulator's oracle CVR AUC there is about 0.68)."""
    write_simulation(sim_preset("tiny", seed=5), tmp_path / "sim", name="sim-tiny")
    data = process_dataset(DatasetSpec.from_yaml(tmp_path / "sim" / "multi_scenario.yaml"), tmp_path / "cache")
    fields = ["user_id", "item_id", "cate_l2", "brand", "price", "scenario", "position"]
    torch.manual_seed(0)
    model = build_model("esmm", data.schema, {"embedding_dim": 8, "ctr_units": [32], "cvr_units": [32],
                                              "input_fields": fields})  # fmt: skip
    task = CTRTask(data, TrainConfig(batch_size=512, seed=0), model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    step, epoch = 0, 1
    while step < 150:
        for batch in task.batches(epoch):
            optimizer.zero_grad()
            task.loss(model, batch)[0].backward()
            optimizer.step()
            step += 1
            if step == 150:
                break
        epoch += 1
    valid = task.evaluate(model, "valid")
    labels = np.asarray(data.split("valid")["labels"])
    clicked = labels[:, 0] == 1
    by_ctr = auc(labels[clicked, 1], predict_probs(model, data.split("valid"))[clicked, 0])
    print(f"valid: ctr_auc {valid['ctr_auc']:.3f} cvr_auc {valid['cvr_auc']:.3f} (pCTR on clicks {by_ctr:.3f}) "
          f"ctcvr_auc {valid['ctcvr_auc']:.3f}")  # fmt: skip
    assert valid["ctr_auc"] > 0.65 and valid["ctcvr_auc"] > 0.65
    assert valid["cvr_auc"] > 0.58 and valid["cvr_auc"] > by_ctr + 0.05


def test_the_zoo_contract_on_two_labels(funnel, tmp_path):
    """What the shared zoo tests check (they skip ESMM: their data set has one label): save/load
    gives identical outputs, a row's output does not depend on the other rows, every parameter
    gets a finite gradient, and the default and smoke configs build and run."""
    torch.manual_seed(2)
    model = build_model("esmm", funnel.schema, smoke=True)
    batch = _batch(funnel, 128)
    task = CTRTask(funnel, TrainConfig(batch_size=128), model)
    loss, _ = task.loss(model, batch)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    torch.save(model.state_dict(), tmp_path / "esmm.pt")
    fresh = build_model("esmm", funnel.schema, smoke=True)
    fresh.load_state_dict(torch.load(tmp_path / "esmm.pt", weights_only=True))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        out = model(batch)["logit"]
        assert torch.equal(out, fresh(batch)["logit"])
        alone = model({k: v[:5] for k, v in batch.items()})["logit"]
        assert torch.allclose(alone, out[:5], rtol=1e-5, atol=1e-6)
        assert build_model("esmm", funnel.schema).eval()(batch)["logit"].shape == (128, 2)

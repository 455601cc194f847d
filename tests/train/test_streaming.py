"""The streaming protocol: the observed-label view, the samplers, the delayed-feedback losses on
hand-checked values, ES-DFM's importance weights on a case with a known distribution, resume
after a kill, bad input located to its row, and an end-to-end stream on sim-tiny."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs.data.errors import DataError
from agenticrs.train.streaming import StreamConfig, StreamInput, WindowGrid, load_clicks, observed_view, run_stream
from agenticrs.train.streaming.labels import stream_steps
from agenticrs.train.streaming.methods import (
    ClickTimes,
    MethodSettings,
    dfm_loss,
    es_dfm_loss,
    fnw_loss,
    importance_weights,
    method,
    tn_dp_loss,
    weight_model_metrics,
)  # fmt: skip
from agenticrs.train.streaming.protocol import holdout_split, stream_train_defaults
from agenticrs.train.streaming.task import WindowTask

NAN = float("nan")
# a hand-built log: 5 clicks (seconds); click 1 converts at 50, click 2 at 250, click 3 at 1000, 4 never
CLICKS = np.array([10.0, 20.0, 120.0, 150.0, 230.0])
CONVERSIONS = np.array([NAN, 50.0, 250.0, 1000.0, NAN])


def test_observed_view_at_a_cut() -> None:
    view = observed_view(CLICKS, CONVERSIONS, cut=200.0)
    assert view.rows.tolist() == [0, 1, 2, 3]  # the click at 230 is not known at 200
    assert view.label.tolist() == [0.0, 1.0, 0.0, 0.0]  # 250 and 1000 lie after the cut: negatives for now
    assert view.elapsed.tolist() == [190.0, 180.0, 80.0, 50.0]
    assert view.delay[1] == 30.0 and np.isnan(view.delay[[0, 2, 3]]).all()
    unknown = observed_view(CLICKS, CONVERSIONS, cut=200.0, unconverted="unknown")
    assert unknown.label[1] == 1.0 and np.isnan(unknown.label[[0, 2, 3]]).all()
    later = observed_view(CLICKS, CONVERSIONS, cut=300.0)  # the conversion at 250 is now seen
    assert later.label.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    per_click = observed_view(CLICKS, CONVERSIONS, cut=np.array([100.0, 100, 200, 200, 300]))
    assert per_click.label.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def _times(**settings) -> ClickTimes:
    grid = WindowGrid(start=0.0, span=100.0, end=1100.0)  # windows [0,100), [100,200), ...
    return ClickTimes(CLICKS, CONVERSIONS, grid, MethodSettings(**settings))


def test_samplers_put_each_sample_in_its_window_with_the_label_seen_then() -> None:
    vanilla = method("vanilla").samples(_times())
    # labels as observed at each click's window end (100, 100, 200, 200, 300)
    assert vanilla.row.tolist() == [0, 1, 2, 3, 4] and vanilla.labels[:, 0].tolist() == [0, 1, 0, 0, 0]
    oracle = method("oracle").samples(_times())
    assert oracle.labels[:, 0].tolist() == [0, 1, 1, 1, 0]
    fnw = method("fnw").samples(_times())
    # every click a negative at click time, a positive duplicate at conversion time, in time order
    assert fnw.ts.tolist() == [10, 20, 50, 120, 150, 230, 250, 1000]
    assert fnw.row.tolist() == [0, 1, 1, 2, 3, 4, 2, 3] and fnw.labels[:, 0].tolist() == [0, 0, 1, 0, 0, 0, 1, 1]
    log = _times(elapsed_cut_s=60.0)
    es = method("es_dfm").samples(ClickTimes(log.click_ts, log.conversion_ts, log.grid, log.settings,
                                             f_dp=np.full(5, 0.5), f_tn=np.full(5, 0.8)))  # fmt: skip
    # click + c; click 1 converts within c (delay 30): a positive at once; clicks 2 and 3 are
    # delayed positives: negatives at click + c, duplicates at 250 and 1000
    assert es.ts.tolist() == [70, 80, 180, 210, 250, 290, 1000]
    assert es.row.tolist() == [0, 1, 2, 3, 2, 4, 3] and es.labels[:, 0].tolist() == [0, 1, 0, 0, 1, 0, 1]
    np.testing.assert_allclose(es.labels[:, 1], 1.5) and np.testing.assert_allclose(es.labels[:, 2], 1.2)
    dfm = method("dfm").samples(_times(delay_unit_s=10.0, dfm_refresh_s=(300.0,)))
    # [z, d, e, r] in units of 10 s: each click at its window's end (click 1 converted, d = 3); a
    # click still unconverted at age 300 comes back with e = 30 retracting its e (clicks 0, 3, 4);
    # a late conversion comes back as a positive retracting the e counted last (click 2 at 250:
    # r = 8; click 3 at 1000: r = 30, the refresh at 450)
    assert dfm.ts.tolist() == [10, 20, 120, 150, 230, 250, 310, 450, 530, 1000]
    assert dfm.row.tolist() == [0, 1, 2, 3, 4, 2, 0, 3, 4, 3]
    np.testing.assert_allclose(dfm.labels, [
        [0, NAN, 9, 0], [1, 3, 0, 0], [0, NAN, 8, 0], [0, NAN, 5, 0], [0, NAN, 7, 0],
        [1, 13, 0, 8], [0, NAN, 30, 9], [0, NAN, 30, 5], [0, NAN, 30, 7], [1, 85, 0, 30]])  # fmt: skip
    dropped = method("dfm").samples(_times(delay_unit_s=10.0, dfm_late="drop"))  # ES-DFM's code: no later samples
    assert dropped.row.tolist() == [0, 1, 2, 3, 4] and dropped.labels[:, 0].tolist() == [0, 1, 0, 0, 0]


def test_window_grid_and_steps_skip_windows_without_clicks() -> None:
    grid = WindowGrid(start=100.0, span=100.0, end=600.0)
    assert grid.count == 5
    assert grid.index(np.array([50.0, 100, 199, 200, 599, 600])).tolist() == [-1, 0, 0, 1, 4, 5]
    steps = stream_steps(np.array([0, 0, 1, 3, 3, 4]), grid.count)
    # window 2 has no click: step 1 trains on windows 1 and 2 and is evaluated on window 3
    assert steps.train_from.tolist() == [0, 1, 3] and steps.evaluate.tolist() == [1, 3, 4]


def _bce(s: float, y: float) -> float:
    p = 1 / (1 + math.exp(-s))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_fnw_and_dfm_losses_on_hand_checked_values() -> None:
    s = torch.tensor([0.0, 1.0])
    z = torch.tensor([[1.0], [0.0]])
    p1 = 1 / (1 + math.exp(-1.0))
    expected = ((1 + 0.5) * _bce(0.0, 1) + (1 - p1) * (1 + p1) * _bce(1.0, 0)) / 2
    assert float(fnw_loss(s, z)) == pytest.approx(expected, rel=1e-6)
    s.requires_grad_(True)
    fnw_loss(s, z).backward()  # the weights are stop-gradient: d/ds of w * bce with w constant
    assert float(s.grad[0]) == pytest.approx(1.5 * (0.5 - 1) / 2, rel=1e-6)
    # DFM: p = σ(0) = 0.5, λ = softplus(h)
    logit = torch.tensor([[0.0, 0.5], [0.0, -0.3]])
    labels = torch.tensor([[1.0, 2.0, NAN, 0.0], [0.0, NAN, 3.0, 0.0]])
    lam0, lam1 = math.log1p(math.exp(0.5)), math.log1p(math.exp(-0.3))
    pos = -(math.log(0.5) + math.log(lam0) - lam0 * 2.0)
    neg = -math.log(1 - 0.5 + 0.5 * math.exp(-lam1 * 3.0))
    assert float(dfm_loss(logit, labels)) == pytest.approx((pos + neg) / 2, rel=1e-5)


def _chapelle(s: float, h: float, converted: bool, t: float) -> float:
    """Chapelle's per-click term: converted with delay t, or unconverted after elapsed time t."""
    p, lam = 1 / (1 + math.exp(-s)), math.log1p(math.exp(h)) + 1e-6  # λ as dfm_loss computes it
    return -(math.log(p) + math.log(lam) - lam * t) if converted else -math.log(1 - p + p * math.exp(-lam * t))


@pytest.mark.parametrize("now", [100.0, 200.0, 300.0, 400.0, 500.0, 1100.0])
def test_dfm_stream_counts_every_click_once_in_its_latest_state(now: float) -> None:
    # the DFM stream's samples that entered before `now`, summed with the model held fixed, give
    # Chapelle's likelihood of the clicks seen so far, each counted once: converted (by then) with
    # its delay, else unconverted with the largest elapsed time it was observed at (its window's
    # end, or a refresh age passed). The known defect was a late positive counted twice: once
    # unconverted, once converted
    samples = method("dfm").samples(_times(delay_unit_s=10.0, dfm_refresh_s=(300.0,)))
    shown = samples.ts < now
    rows, labels = samples.row[shown], torch.tensor(samples.labels[shown], dtype=torch.float64)
    s, h = np.array([-0.4, 0.3, 0.8, -1.1, 0.1]), np.array([0.2, -0.5, 0.9, 0.0, -0.2])
    logit = torch.tensor(np.stack([s[rows], h[rows]], axis=1))
    total = float(dfm_loss(logit, labels)) * len(rows)
    expected = 0.0
    for i, (click, conversion) in enumerate(zip(CLICKS, CONVERSIONS, strict=True)):
        if click >= now:
            continue
        window_end = (click // 100 + 1) * 100
        converted = not math.isnan(conversion) and conversion < now
        elapsed = max([window_end - click, *(age for age in (300.0,) if click + age < now)])
        t = (conversion - click if converted else elapsed) / 10
        expected += _chapelle(s[i], h[i], converted, t)
    assert total == pytest.approx(expected, rel=1e-9)
    dropped = method("dfm").samples(_times(delay_unit_s=10.0, dfm_late="drop"))
    assert len(np.unique(dropped.row)) == len(dropped)  # the drop form: each click once as well


def test_fnc_calibrates_at_inference() -> None:
    fnc = method("fnc")
    p = torch.tensor([0.2, 0.4])
    served = fnc.probability(torch.logit(p))
    torch.testing.assert_close(served, p / (1 - p))


def test_es_dfm_weighted_loss_equals_the_true_label_loss_in_expectation() -> None:
    # one feature vector x with true p(y=1|x) = 0.3, of which a share 0.6 converts after c: the
    # elapsed-time stream (first insertions + duplicates of delayed positives) has, per click,
    #   q-mass of label 1 = p - p_dp (positives within c) + p_dp (duplicates) = p
    #   q-mass of label 0 = (1 - p) + p_dp (fake negatives)
    # out of 1 + p_dp samples. With the exact f_dp = p_dp and f_tn = (1 - p)/(1 - p + p_dp), the
    # expected weighted loss per stream sample equals the true-label BCE per click.
    p, share = 0.3, 0.6
    p_dp = p * share
    f_dp, f_tn = p_dp, (1 - p) / (1 - p + p_dp)
    w_pos, w_neg = importance_weights(np.array([f_dp]), np.array([f_tn]))
    for s in (-1.3, 0.0, 0.7, 2.0):
        q1, q0 = p / (1 + p_dp), (1 - p + p_dp) / (1 + p_dp)
        logits = torch.tensor([s, s], dtype=torch.float64)
        labels = torch.tensor([[1.0, w_pos[0], w_neg[0]], [0.0, w_pos[0], w_neg[0]]], dtype=torch.float64)
        per_label = [float(es_dfm_loss(logits[i:i + 1], labels[i:i + 1])) for i in range(2)]
        expected_weighted = q1 * per_label[0] + q0 * per_label[1]
        true_loss = p * _bce(s, 1) + (1 - p) * _bce(s, 0)
        assert expected_weighted == pytest.approx(true_loss, rel=1e-9)
    # without the weights the stream's loss is minimised at the biased q, not at p
    assert w_pos[0] == pytest.approx(1.18) and w_neg[0] == pytest.approx(1.18 * 0.7 / 0.88)
    capped = importance_weights(np.array([0.9]), np.array([0.9]), cap=1.5)
    assert capped[0].tolist() == [1.5] and capped[1].tolist() == [pytest.approx(1.5)]


def test_weight_model_loss_masks_true_negatives_only_on_observed_negatives() -> None:
    logit = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-1.0, 1.0]])
    # a true negative, a positive within c (mask 0 for f_tn), a delayed positive
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    l_dp = (_bce(0.0, 0) + _bce(-1.0, 0) + _bce(1.0, 1)) / 3
    l_tn = (_bce(0.0, 1) + _bce(-1.0, 0)) / 2
    assert float(tn_dp_loss(logit, labels)) == pytest.approx(l_tn + l_dp, rel=1e-6)


def test_weight_model_metrics_score_held_out_clicks_by_its_own_loss() -> None:
    logit = np.array([[0.0, 0.0], [2.0, -1.0], [-1.0, 1.0], [1.0, -2.0]])
    labels = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    out = weight_model_metrics(logit, labels)
    l_dp = (_bce(0.0, 0) + _bce(-1.0, 0) + _bce(1.0, 1) + _bce(-2.0, 0)) / 4
    l_tn = (_bce(0.0, 1) + _bce(-1.0, 0) + _bce(1.0, 1)) / 3  # the observed negatives: rows 0, 2 and 3
    assert out["logloss"] == pytest.approx(l_tn + l_dp, rel=1e-6)
    assert out["dp/logloss"] == pytest.approx(l_dp, rel=1e-6) and out["tn/logloss"] == pytest.approx(l_tn, rel=1e-5)
    assert out["dp/auc"] == 1.0  # the delayed positive has the highest dp logit
    # f_tn is scored on the observed negatives only (rows 0, 2, 3): both true negatives (tn logits 0
    # and 1) outrank the delayed positive (-1); row 1, converted within c, is left out
    assert out["tn/auc"] == 1.0
    flipped = weight_model_metrics(logit * np.array([[-1.0, 1.0]]), labels)
    assert flipped["tn/auc"] == 0.0 and flipped["dp/auc"] == 1.0


def test_holdout_split_keeps_the_latest_rows_out() -> None:
    fit, held = holdout_split(10, 0.2)
    assert fit.tolist() == list(range(8)) and held.tolist() == [8, 9]
    assert holdout_split(10, 0.0)[1].size == 0 and holdout_split(1, 0.5)[1].size == 0
    assert holdout_split(3, 0.01)[1].tolist() == [2]  # at least one row when a share is asked for


# ---------------------------------------------------------------------------------- end to end
SMALL = {"embedding_dim": 4, "hidden_units": [16], "batch_norm": False}


def _config(source: str = "sim-tiny", **update) -> StreamConfig:
    train = stream_train_defaults().model_copy(update={"batch_size": 256, "num_threads": 1})
    base = dict(input=StreamInput(source=source), window_s=12 * 3600.0, pretrain_epochs=2, model_params=SMALL, train=train)
    return StreamConfig(**{**base, **update})


@pytest.fixture(scope="module")
def tiny_log():
    return load_clicks(StreamInput(source="sim-tiny"), None)


def test_stream_on_sim_tiny_oracle_beats_vanilla_and_reports_segments(tiny_log) -> None:
    # one-day windows, a larger learning rate: on sim-tiny the pre-promotion days' purchases wait
    # for the promotion day, so vanilla trains on fake negatives there; the oracle does not
    results = {}
    for name in ("vanilla", "oracle"):
        config = _config(method=name, window_s=86_400.0, pretrain_epochs=3,
                         train=_config().train.model_copy(update={"learning_rate": 3e-3}))  # fmt: skip
        results[name] = run_stream(config, log=tiny_log)
    vanilla, oracle = results["vanilla"], results["oracle"]
    assert vanilla["windows"] == oracle["windows"] == 7  # days 7..13 evaluated, after pre-training on days 0..5
    assert oracle["overall"]["auc"] >= vanilla["overall"]["auc"]
    assert set(vanilla["segments"]) == {"ordinary", "pre_promo", "promo"}
    ceiling = vanilla["ceiling"]["overall"]
    assert ceiling["auc"] > vanilla["overall"]["auc"] and ceiling["rows"] == vanilla["overall"]["rows"]
    assert vanilla["samples"]["extra_samples"] == 0


def test_every_method_streams(tiny_log) -> None:
    for name in ("fnw", "fnc", "dfm", "es_dfm"):
        summary = run_stream(_config(method=name, max_windows=3, pretrain_epochs=1), log=tiny_log)
        assert summary["windows"] == 3 and summary["samples"]["extra_samples"] > 0, name
        assert 0.0 < summary["overall"]["logloss"] < 5.0 and 0.0 <= summary["overall"]["ece"] <= 1.0


def test_es_dfm_weight_model_keeps_its_best_held_out_epoch_and_the_stream_batch_is_a_setting(
    tiny_log, tmp_path: Path
) -> None:  # fmt: skip
    config = _config(method="es_dfm", max_windows=2, pretrain_epochs=1, weight_model_epochs=4, stream_batch_size=16,
                     train=_config().train.model_copy(update={"learning_rate": 1e-2}))  # fmt: skip
    run_stream(config, tmp_path / "run", log=tiny_log)
    weight = tmp_path / "run" / "weight_model"
    records = [json.loads(line) for line in (weight / "metrics.jsonl").read_text().splitlines()]
    held = [r["valid_logloss"] for r in records]
    assert len(held) >= 2 and all(0.0 < v < 5.0 for v in held) and "valid_dp/auc" in records[0]
    summary = json.loads((weight / "summary.json").read_text())
    assert summary["monitor"] == "logloss" and held[summary["best_epoch"] - 1] == min(held)
    stream = [json.loads(line) for line in (tmp_path / "run" / "stream" / "metrics.jsonl").read_text().splitlines()]
    pre = int(np.sum(tiny_log.click_ts < tiny_log.pretrain_end))
    assert summary["best_epoch"] <= 4 and pre > 0
    # batch 16: a window of n samples is ceil(n / 16) optimiser steps (the pre-training batch, 256, would be 1)
    assert stream[1]["step"] - stream[0]["step"] > 1


class _Killed(RuntimeError):
    pass


def test_a_killed_stream_resumes_to_the_same_result(tiny_log, tmp_path: Path, monkeypatch) -> None:
    config = _config(method="es_dfm", window_s=6 * 3600.0, max_windows=6, pretrain_epochs=1)
    whole = run_stream(config, tmp_path / "whole", log=tiny_log)

    original = WindowTask.batches

    def crash_after_window_3(self, epoch: int, skip: int = 0):
        if self.evaluation is not None and epoch == 4:  # the stream's 4th window: 3 are recorded
            raise _Killed
        return original(self, epoch, skip)

    monkeypatch.setattr(WindowTask, "batches", crash_after_window_3)
    with pytest.raises(_Killed):
        run_stream(config, tmp_path / "killed", log=tiny_log)
    records = [json.loads(line) for line in (tmp_path / "killed" / "stream" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and (tmp_path / "killed" / "stream" / "checkpoint.pt").is_file()
    assert not (tmp_path / "killed" / "stream.json").exists()
    monkeypatch.setattr(WindowTask, "batches", original)
    resumed = run_stream(config, tmp_path / "killed", resume=True, log=tiny_log)
    assert resumed["per_window"] == whole["per_window"]
    assert resumed["overall"] == whole["overall"] and resumed["windows"] == 6
    assert json.loads((tmp_path / "killed" / "stream.json").read_text())["overall"] == whole["overall"]


# ---------------------------------------------------------------------------------- input contract
def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("click_ts,conversion_ts,user,item,price\n" + "\n".join(rows) + "\n")
    return path


def _good_rows(n: int = 400) -> list[str]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        click = i * 1800.0
        converts = rng.random() < 0.3
        conversion = f"{click + rng.exponential(7200):.0f}" if converts else ""
        rows.append(f"{click:.0f},{conversion},u{i % 17},i{i % 23},{rng.random():.3f}")
    return rows


@pytest.mark.parametrize(("bad", "row", "field", "says"), [
    ("100,50,u1,i1,0.5", 3, "conversion_ts", "comes before its click"),
    (",500,u1,i1,0.5", 3, "click_ts", "click time is missing"),
    ("noon,,u1,i1,0.5", 3, "click_ts", "as a number"),
    ("100,later,u1,i1,0.5", 3, "conversion_ts", "as a number"),
])  # fmt: skip
def test_bad_input_names_the_file_row_and_field(tmp_path: Path, bad: str, row: int, field: str, says: str) -> None:
    path = _write_csv(tmp_path / "clicks.csv", ["10,20,u0,i0,0.1", "20,,u0,i1,0.2", bad, "30,,u2,i2,0.3"])
    with pytest.raises(DataError) as info:
        load_clicks(StreamInput(source=str(path)), None)
    error = info.value
    assert error.file == str(path) and error.row == row and error.field == field and says in str(error)


def test_a_users_csv_streams(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "clicks.csv", _good_rows())
    log = load_clicks(StreamInput(source=str(path), numeric=["price"]), None)
    assert log.rows == 400 and log.arrays["categorical"].shape == (400, 2) and log.oracle_prob is None
    summary = run_stream(_config(source=str(path), method="fnw", window_s=6 * 3600.0, input=StreamInput(
        source=str(path), numeric=["price"])), log=log)  # fmt: skip
    assert summary["ceiling"] is None and summary["windows"] > 5 and summary["segments"] == {}


def test_excluded_feature_columns_leave_the_model_inputs(tiny_log) -> None:
    sequences = ["hist_item_id", "hist_cate_l2", "hist_type"]
    assert any(k.startswith("seq/") for k in tiny_log.arrays)
    log = load_clicks(StreamInput(source="sim-tiny", exclude=sequences), None)
    assert not any(k.startswith(("seq/", "seqlen/")) for k in log.arrays)
    assert not set(sequences) & set(log.schema.categorical_names)
    assert np.array_equal(log.click_ts, tiny_log.click_ts) and log.arrays["categorical"].shape[0] == tiny_log.rows
    with pytest.raises(DataError, match="tied to the excluded"):
        load_clicks(StreamInput(source="sim-tiny", exclude=["hist_item_id"]), None)
    with pytest.raises(DataError, match="not feature fields"):
        load_clicks(StreamInput(source="sim-tiny", exclude=["no_such_column"]), None)

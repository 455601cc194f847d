"""bench/cvr_benchmark.py's report: ES-DFM paired against every other method over the seeds they
share, and the share of the vanilla -> oracle gap it closes, on hand-made records; and its
`es_true_weights` diagnostic's weights."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench():
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("cvr_benchmark")


def _record(method: str, seed: int, auc: float, logloss: float) -> dict:
    return {"method": method, "seed": seed, "overall": {"auc": auc, "logloss": logloss}}


def test_es_dfm_paired_report_on_hand_made_records() -> None:
    bench = _bench()
    records = [
        _record("vanilla", 0, 0.60, 1.0), _record("oracle", 0, 0.62, 0.6), _record("es_dfm", 0, 0.615, 0.7),
        _record("vanilla", 1, 0.58, 1.2), _record("oracle", 1, 0.59, 0.6), _record("es_dfm", 1, 0.588, 0.8),
        _record("vanilla", 2, 0.61, 1.1), _record("oracle", 2, 0.63, 0.6), _record("es_dfm", 2, 0.62, 0.75),
        _record("dfm", 0, 0.61, 0.8),  # one shared seed only: no interval
    ]  # fmt: skip
    out = bench.es_dfm_paired(records)
    assert out["gap_closed_per_seed"] == pytest.approx({"0": 0.75, "1": 0.8, "2": 0.5})
    auc = out["against"]["vanilla"]["auc"]
    assert auc["mean"] == pytest.approx(np.mean([0.015, 0.008, 0.010])) and auc["verdict"] == "holds"
    logloss = out["against"]["vanilla"]["logloss"]  # lower is better: the effect is vanilla's minus ES-DFM's
    assert logloss["mean"] == pytest.approx(np.mean([0.3, 0.4, 0.35])) and logloss["verdict"] == "holds"
    assert out["against"]["oracle"]["auc"]["mean"] < 0 and set(out["against"]) == {"vanilla", "oracle", "dfm"}
    assert out["against"]["dfm"]["auc"]["n"] == 1 and out["against"]["dfm"]["auc"]["low"] is None


def test_es_true_weights_come_from_the_worlds_probability_and_the_share_within_c() -> None:
    from agenticrs.train.streaming.labels import WindowGrid
    from agenticrs.train.streaming.methods import ClickTimes, MethodSettings

    bench = _bench()
    nan = float("nan")
    click = np.array([0.0, 10.0, 20.0, 30.0])
    conversion = np.array([100.0, 5000.0, nan, nan])  # one within c = 900 s, one later: s = 1/2
    p = np.array([0.5, 0.4, 0.2, 0.1])
    bench.TRUE_PROBABILITY["p"] = p
    try:
        log = ClickTimes(click, conversion, WindowGrid(0.0, 3600.0, 7200.0), MethodSettings(elapsed_cut_s=900.0))
        samples = bench.STREAM_METHODS["es_true_weights"]().samples(log)
    finally:
        bench.TRUE_PROBABILITY.clear()
    f_dp = p * 0.5
    first = samples.ts == click[samples.row] + 900.0
    assert samples.labels[first, 1] == pytest.approx((1 + f_dp)[samples.row[first]])
    w_neg = (1 + f_dp) * (1 - p) / (1 - p + f_dp)
    assert samples.labels[first, 2] == pytest.approx(w_neg[samples.row[first]])
    assert samples.row[~first].tolist() == [1]  # the delayed positive's duplicate

"""ES-DFM at an observation cut (the pre-promotion row) and bench/cvr_prepromo.py's ES-DFM row and
selectable online control, end to end on a shrunken world."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agenticrs.train.streaming import StreamInput, load_clicks
from agenticrs.train.streaming.at_cut import es_dfm_at_cut
from agenticrs.train.streaming.protocol import stream_train_defaults

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_es_dfm_at_a_cut_trains_on_what_the_stream_holds_then() -> None:
    log = load_clicks(StreamInput(source="sim-tiny"), None)
    c = 900.0
    cut = float(np.quantile(log.click_ts, 0.7))
    before = np.flatnonzero(log.click_ts < cut)
    rng = np.random.default_rng(0)
    valid = rng.random(len(before)) < 0.1
    train_rows, valid_rows = before[~valid], before[valid]
    known = train_rows[~(log.conversion_ts[train_rows] > cut)]  # outcome known at the cut
    train = stream_train_defaults().model_copy(update={
        "max_steps": 6, "eval_every_steps": 3, "patience": 5, "monitor": "auc", "epochs": 100, "num_threads": 1,
        "metrics": ["auc", "logloss", "calibration"]})  # fmt: skip
    labels = log.converted.astype(np.float64)
    fit = es_dfm_at_cut(log.arrays, log.schema, log.click_ts, log.conversion_ts, cut, train_rows, known, valid_rows,
                        labels, train, model_params={"hidden_units": [16]}, elapsed_cut_s=c,
                        weight_model_epochs=1)  # fmt: skip
    click, conv = log.click_ts[train_rows], log.conversion_ts[train_rows]
    entered = click + c <= cut
    duplicates = (conv - click > c) & (conv <= cut)  # delayed positives converted by the cut
    in_time = entered & (conv - click <= c)
    assert fit.samples["first_insertions"] == int(entered.sum())
    assert fit.samples["duplicates"] == int(duplicates.sum()) > 0
    assert fit.samples["positives"] == int(in_time.sum() + duplicates.sum())
    # a click converting after the cut is in only as its fake negative
    assert int(((conv > cut) & entered).sum()) > 0
    assert fit.samples["weight_rows"] == len(known)
    assert 1.0 <= fit.samples["mean_w_pos"] <= 2.0 and 0.0 < fit.samples["mean_w_neg"] <= 2.0
    assert fit.result.stopped_by == "step budget" and fit.result.steps == 6
    assert fit.result.monitor == "auc" and 0.0 < fit.result.valid["auc"] < 1.0


@pytest.mark.slow
def test_prepromo_bench_es_dfm_row_and_esmm_as_online_control(tmp_path: Path) -> None:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    bench = importlib.import_module("cvr_prepromo")
    out = tmp_path / "out.json"
    # the control need not be in --models: it is trained as a row of its own
    code = bench.main(["--models", "cmdcm,es_dfm", "--ablations", "none", "--seeds", "1", "--smoke", "--online",
                       "--online-control", "esmm", "--work", str(tmp_path / "work"), "--json", str(out)])  # fmt: skip
    assert code == 0
    payload = json.loads(out.read_text())
    rows = {r["row"]: r for r in payload["offline"]}
    assert set(rows) == {"cmdcm", "es-dfm", "esmm"}
    es_dfm = rows["es-dfm"]
    assert es_dfm["stopped_by"] in ("step budget", "patience") and es_dfm["monitor"] == "auc"
    assert es_dfm["es_dfm"]["duplicates"] > 0 and es_dfm["es_dfm"]["elapsed_cut_s"] == 900.0
    assert 0.0 < es_dfm["del_auc"] < 1.0 and es_dfm["train"]["max_steps"] == 4
    online = payload["online"]
    assert online["control"] == "esmm" and online["arms"][0] == "pCTR x pCVR(esmm) x price"
    assert set(online["pooled"]) == {"pre_promotion", "promotion_day"}
    with pytest.raises(SystemExit):
        bench.main(["--online", "--online-control", "cmdcm", "--smoke"])

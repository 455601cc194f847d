"""ES-DFM trained once at an observation cut (the pre-promotion comparison), on the streaming code.

The streaming protocol (`protocol.py`) trains ES-DFM one pass per window. A batch benchmark asks
a different question: given every click observed up to a cut time, fit a model under a fixed
optimiser-step budget with early stopping on a valid split, like any other row of a table. This
module does that with ES-DFM's own pieces, unchanged (no second ES-DFM):

1. the weight model (f_tn, f_dp; `tn_dp_loss` on `weight_model_labels`) is trained on the clicks
   whose eventual outcome is known at the cut (`weight_rows`), for at most `weight_model_epochs` epochs
   (the epoch of lowest loss on the latest `weight_model_holdout` share of them is kept),
   then frozen (the spec's pre-training, section 6 step 3);
2. ES-DFM's sampler (`ESDFM.samples`: every click at click + c, positive iff converted within c,
   plus a positive duplicate of each delayed positive at its conversion time) is applied to the
   training clicks and every sample that has entered by the cut is kept: a click whose delayed
   conversion has not happened yet by the cut is in only as its (fake) negative, exactly what a
   stream holds at that moment;
3. the CVR model trains on those samples with the importance-weighted loss (`es_dfm_loss`,
   w_pos = 1 + f_dp, w_neg = (1 + f_dp) f_tn, stop-gradient) through the one engine, evaluated on
   `valid_rows` with their eventual labels (early stopping and the best checkpoint per `train`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import build_model
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device, seed_everything
from agenticrs.train.config import TrainConfig
from agenticrs.train.engine import Engine, TrainResult
from agenticrs.train.run import Run
from agenticrs.train.streaming.labels import WindowGrid
from agenticrs.train.streaming.methods import (
    ESDFM,
    ClickTimes,
    MethodSettings,
    Samples,
    es_dfm_loss,
    weight_model_labels,
)  # fmt: skip
from agenticrs.train.streaming.protocol import ESDFM_BACKBONE, Heads, stage_config, weight_model_task
from agenticrs.train.streaming.task import RowsView, WindowTask, has_batch_norm, predict


@dataclass
class AtCutFit:
    """The trained CVR model, its engine result, and what the weights and samples looked like."""

    model: nn.Module
    result: TrainResult
    weight_result: TrainResult
    samples: dict[str, Any]


def es_dfm_at_cut(
    arrays: dict[str, np.ndarray], schema: FeatureSchema, click_ts: np.ndarray, conversion_ts: np.ndarray, cut: float,
    train_rows: np.ndarray, weight_rows: np.ndarray, valid_rows: np.ndarray, valid_labels: np.ndarray,
    train: TrainConfig, *, model: str = "dnn", model_params: dict[str, Any] | None = None,
    elapsed_cut_s: float = 900.0, weight_model_epochs: int = 5, weight_cap: float | None = None,
    weight_model_holdout: float = 0.1, folder: str | Path | None = None, reporter: Reporter = SILENT,
) -> AtCutFit:  # fmt: skip
    """Fit ES-DFM on the samples of `train_rows` that have entered the stream by `cut`.

    `arrays` are model inputs, one row per click (train, valid and any other rows); `click_ts` and
    `conversion_ts` (NaN: never converts) are per row of `arrays`, the conversion being the event
    the model predicts (its eventual time, even when after the cut: the sampler only keeps what
    has happened by then). `weight_rows` (clicks whose outcome is known at the cut) train the
    weight model; `valid_labels` (per row of `arrays`) are the eventual labels of `valid_rows`."""
    params = {**(ESDFM_BACKBONE if model == "dnn" else {}), **(model_params or {})}
    folder = Path(folder) if folder is not None else None
    metrics = list(train.metrics)
    device = resolve_device(train.device)

    # 1. the weight model on the clicks with a known outcome, frozen afterwards
    seed_everything(train.seed)
    weights = Heads({"tn": build_model(model, schema, params), "dp": build_model(model, schema, params)})
    batch_norm = has_batch_norm(weights)
    ordered = weight_rows[np.argsort(click_ts[weight_rows], kind="stable")]  # the held-out share is the latest
    labels = weight_model_labels(click_ts[ordered], conversion_ts[ordered], elapsed_cut_s)
    task = weight_model_task(arrays, ordered, labels, stage_config(train, weight_model_epochs, metrics),
                             weight_model_holdout, batch_norm)  # fmt: skip
    weight_run = Run.at(folder / "weight_model") if folder is not None else None
    weight_result = Engine(task.config, reporter).fit(weights, task, weight_run)
    probs = predict(weights, RowsView(arrays, train_rows), torch.sigmoid, train.eval_batch_size, device)
    f_tn, f_dp = probs[:, 0], probs[:, 1]

    # 2. ES-DFM's samples of the training clicks, as the stream holds them at the cut
    settings = MethodSettings(elapsed_cut_s=elapsed_cut_s, weight_cap=weight_cap)
    times = ClickTimes(click_ts[train_rows], conversion_ts[train_rows], WindowGrid(cut, 1.0, cut + 1.0), settings,
                       f_dp=f_dp, f_tn=f_tn)  # fmt: skip
    every = ESDFM().samples(times)
    entered = every.ts <= cut
    samples = Samples(train_rows[every.row[entered]], every.ts[entered], every.labels[entered])
    # a first insertion enters at exactly click + c; a duplicate later (its delay is > c)
    first = entered & (every.ts == times.click_ts[every.row] + elapsed_cut_s)

    # 3. the CVR model on those samples, with ES-DFM's importance-weighted loss
    seed_everything(train.seed)
    cvr = build_model(model, schema, params)
    task = WindowTask(arrays, samples.row, samples.labels, [(0, len(samples))], es_dfm_loss, train, repeat=True,
                      evaluation=[valid_rows], eval_labels=valid_labels, metrics=metrics, probability=torch.sigmoid,
                      batch_norm=has_batch_norm(cvr))  # fmt: skip
    run = Run.at(folder / "cvr") if folder is not None else None
    result = Engine(train, reporter).fit(cvr, task, run)
    z = samples.labels[:, 0]
    info = {
        "samples": int(len(samples)), "first_insertions": int(first.sum()),
        "duplicates": int(len(samples) - first.sum()), "positives": int(z.sum()),
        "clicks_not_yet_entered": int(len(train_rows) - first.sum()),
        "weight_rows": int(len(weight_rows)),
        "mean_f_dp": float(f_dp.mean()), "mean_f_tn": float(f_tn.mean()),
        "mean_w_pos": float(samples.labels[z > 0, 1].mean()) if (z > 0).any() else float("nan"),
        "mean_w_neg": float(samples.labels[z == 0, 2].mean()) if (z == 0).any() else float("nan"),
    }  # fmt: skip
    return AtCutFit(model=cvr, result=result, weight_result=weight_result, samples=info)

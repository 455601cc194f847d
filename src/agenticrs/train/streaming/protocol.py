"""The streaming protocol (ES-DFM's, spec section 6): pre-train, then replay the log window by window.

1. The log's first days are the pre-training period (default: up to the first pre-promotion day
   on the simulator, so the stream holds the pre-promotion days and the promotion day; half the
   log for a file). The CVR model is pre-trained there (`pretrain_epochs`, shuffled; BCE on the
   clicks' eventual labels, or as observed at the period's end with `pretrain_labels: observed`;
   DFM trains its own loss on the observed view). ES-DFM's weight model (f_tn, f_dp) is pre-trained
   there too and then frozen.
2. The rest is cut into windows of `window_s` seconds (default 1 hour). Step t trains one pass
   over the samples the method puts in window t (labels as observable by the window's end, per
   method) and is evaluated on the clicks of window t+1 with their eventual labels.
3. Per window: AUC, log loss, ECE and the predicted / observed ratio (`calibration`), overall and
   per segment (ordinary, pre-promotion and promotion days on the simulator). Overall: the mean
   over windows weighted by each window's rows (ES-DFM's code, `ScalarMovingAverage`); a window
   where a metric is undefined (one class) is left out of that metric's mean. The oracle's true
   probabilities, where the data has them, give the ceiling row on the same windows.

Every stage trains through the one `Engine` (see `task.py`): a stream is an engine run whose
epochs are the stream's steps. With a folder, each stage is an ordinary run directory
(`pretrain/`, `weight_model/`, `stream/`: `metrics.jsonl` holds one record per window as it
finishes, `checkpoint.pt` the state after the last one), so a stream killed mid-way resumes from
its last window and ends with the same results as an uninterrupted one; `stream.json` is written
last.
"""

from __future__ import annotations

import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from agenticrs.models.base import build_model
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device, seed_everything
from agenticrs.train.config import TrainConfig
from agenticrs.train.engine import Engine, TrainResult
from agenticrs.train.metrics import METRICS
from agenticrs.train.run import Run
from agenticrs.train.streaming.data import ClickLog, StreamInput, load_clicks
from agenticrs.train.streaming.labels import Steps, WindowGrid, observed_view, stream_steps
from agenticrs.train.streaming.methods import (
    METHODS,
    ClickTimes,
    MethodSettings,
    Samples,
    method,
    tn_dp_loss,
    weight_model_labels,
    weight_model_metrics,
)  # fmt: skip
from agenticrs.train.streaming.task import Holdout, RowsView, WindowTask, has_batch_norm, predict, window_metrics

# ES-DFM's backbone (spec section 3) on the zoo's DNN: embeddings of 8, MLP 256-256-128. Ours: ReLU
# (the zoo has no leaky ReLU) and no batch norm by default: a simulator window holds ~50 clicks, and
# BN statistics of one such batch per window cost the oracle 0.03 AUC on sim-small (0.545 with BN,
# 0.578 without; `model_params: {batch_norm: true}` restores it for windows of thousands of rows).
ESDFM_BACKBONE: dict[str, Any] = {"embedding_dim": 8, "hidden_units": [256, 256, 128], "activation": "relu",
                                  "dropout": 0.0, "batch_norm": False}  # fmt: skip
STREAM_METRICS = ["auc", "logloss", "ece", "calibration"]
STAGES = ("pretrain", "weight_model", "stream")
SUMMARY = "stream.json"


def stream_train_defaults() -> TrainConfig:
    """ES-DFM's optimisation (spec section 6): Adam, lr 1e-3, batch 1024, L2 1e-6, seed 0."""
    return TrainConfig(batch_size=1024, learning_rate=1e-3, weight_l2=1e-6, seed=0, lr_schedule="constant",
                       metrics=STREAM_METRICS, eval_batch_size=8192)  # fmt: skip


class StreamConfig(BaseModel):
    """One streaming run: data, method, backbone and the protocol's settings (YAML-loadable)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input: StreamInput
    method: str = Field(default="es_dfm", description=f"one of {', '.join(sorted(METHODS))}")
    model: str = Field(default="dnn", description="the backbone (any CTR model of the zoo)")
    model_params: dict[str, Any] = Field(default_factory=dict, description="backbone settings (dnn: ES-DFM's)")
    window_s: float = Field(default=3600.0, gt=0, description="window length in seconds")
    pretrain_days: float | None = Field(default=None, gt=0, description="length of the pre-training period")
    pretrain_epochs: int = Field(default=5, ge=0, description="epochs over the pre-training period (0: none)")
    pretrain_labels: Literal["eventual", "observed"] = Field(
        default="eventual", description="pre-training labels: eventual (ES-DFM's code) or as observed at its end")
    weight_model_epochs: int | None = Field(
        default=None, ge=1, description="ES-DFM weight model: the most epochs (default: pretrain_epochs)")
    weight_model_holdout: float = Field(
        default=0.1, ge=0.0, lt=1.0,
        description="ES-DFM weight model: the latest share of the pre-training clicks held out; the model keeps its "
        "epoch of lowest held-out loss (ours; 0: every epoch on every click, the spec's code)")
    elapsed_cut_s: float = Field(default=900.0, gt=0, description="ES-DFM's elapsed time c in seconds")
    weight_cap: float | None = Field(default=None, gt=0, description="ES-DFM: cap on the importance weights")
    delay_unit_s: float = Field(default=3600.0, gt=0, description="DFM: the time unit of delays")
    dfm_late: Literal["retract", "drop"] = Field(
        default="retract", description="DFM: a conversion after its click's window retracts the click's unconverted "
        "term and adds its converted one (each click counts once), or is dropped (ES-DFM's code)")
    dfm_refresh_s: list[float] = Field(
        default_factory=lambda: [21_600.0, 86_400.0, 259_200.0, 604_800.0],
        description="DFM: ages (seconds) at which a still unconverted click comes back with its larger elapsed time")
    max_windows: int | None = Field(default=None, ge=1, description="stop after this many stream steps")
    stream_batch_size: int | None = Field(
        default=None, ge=1, description="the stream's batch size (default: train.batch_size, as pre-training); "
        "with a few hundred clicks per window, batch 1024 is one optimiser step per window")
    stream_learning_rate: float | None = Field(
        default=None, gt=0, description="the stream's learning rate (default: train.learning_rate, as pre-training)")
    metrics: list[str] = Field(default_factory=lambda: list(STREAM_METRICS))
    train: TrainConfig = Field(default_factory=stream_train_defaults)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown streaming method '{value}'; known: {', '.join(sorted(METHODS))}")
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METRICS or "groups" in METRICS[m].needs or "ranks" in METRICS[m].needs]
        if unknown or "logloss" not in value:
            raise ValueError(f"stream metrics must be label metrics including logloss; got {value}")
        return value

    def backbone_params(self) -> dict[str, Any]:
        return {**(ESDFM_BACKBONE if self.model == "dnn" else {}), **self.model_params}


class Heads(nn.Module):
    """One backbone per head (ours: ES-DFM's code shares one trunk between the weight model's two
    heads and DFM uses two linear models; separate backbones fit any model of the zoo).
    `logit` is (B,) for one head, (B, H) for several."""

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = [head(batch)["logit"] for head in self.heads.values()]
        return {"logit": torch.stack(logits, dim=-1)}

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [p for head in self.heads.values() for p in head.embedding_parameters()]  # type: ignore[operator]


def stage_config(train: TrainConfig, epochs: int, metrics: list[str]) -> TrainConfig:
    """A stage of the protocol: `epochs` passes, a constant learning rate, no early stopping."""
    return train.model_copy(update={
        "epochs": epochs, "patience": epochs + 1, "restore_best": False, "eval_every_steps": None,
        "eval_every_epochs": 1, "max_steps": None, "lr_schedule": "constant", "metrics": metrics})  # fmt: skip


def holdout_split(rows: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first (1 - share) of `rows` time-ordered rows and of the latest `share` (at
    least one row each when share > 0, none held out when share is 0 or there are fewer than 2 rows)."""
    held = min(max(int(round(rows * share)), 1), rows - 1) if share > 0 and rows >= 2 else 0
    return np.arange(rows - held), np.arange(rows - held, rows)


def weight_model_task(
    arrays: dict[str, np.ndarray], rows: np.ndarray, labels: np.ndarray, config: TrainConfig, holdout: float,
    batch_norm: bool,
) -> WindowTask:  # fmt: skip
    """ES-DFM's weight-model stage on `rows` (in time order) with their [y_tn, y_dp, y] labels.

    Ours: the latest `holdout` share of the rows is held out and the model keeps the epoch of
    lowest held-out loss (L_tn + L_dp). The spec's code trains a fixed 5 epochs; on the simulator,
    where user and item ids are most of the input, that weight model overfits the pre-training
    clicks, and its noisy per-click weights cost ES-DFM more AUC than its sampling gains
    (docs/conversion.md, "Why ES-DFM lost")."""
    fit, held = holdout_split(len(rows), holdout)
    if len(held):
        config = config.model_copy(update={"monitor": "logloss", "patience": 1, "restore_best": True})
    return WindowTask(arrays, rows[fit], labels[fit], [(0, len(fit))], tn_dp_loss, config, repeat=True,
                      batch_norm=batch_norm,
                      holdout=Holdout(rows[held], labels[held], weight_model_metrics) if len(held) else None)  # fmt: skip


def _build(config: StreamConfig, log: ClickLog, heads: tuple[str, ...]) -> nn.Module:
    seed_everything(config.train.seed)
    make = lambda: build_model(config.model, log.schema, config.backbone_params())  # noqa: E731
    return make() if len(heads) == 1 else Heads({name: make() for name in heads})


def _stage(
    name: str, model: nn.Module, task: WindowTask, config: TrainConfig, folder: Path | None, resume: bool,
    reporter: Reporter,
) -> TrainResult | None:  # fmt: skip
    """Train one stage through the engine, or load it when its run directory says it finished."""
    run = Run.at(folder / name) if folder is not None else None
    if resume and run is not None and (run.folder / "summary.json").is_file() and run.has_weights():
        model.load_state_dict(run.load_weights(resolve_device(config.device)))
        reporter.log(f"{name}: finished before, weights loaded from {run.folder}")
        return None
    reporter.log(f"{name}: {len(task.steps)} step(s), {config.epochs} epoch(s)")
    return Engine(config, reporter).fit(model, task, run, resume=resume and run is not None and run.has_checkpoint())


def _ranges(window_of_sample: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    lo = np.searchsorted(window_of_sample, starts, side="left")
    hi = np.searchsorted(window_of_sample, stops, side="left")
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def weighted_overall(windows: list[dict[str, float]], prefix: str = "") -> dict[str, float]:
    """The mean of every metric over windows weighted by rows (`<prefix>rows`), over the windows
    where it is defined; `rows` is the total."""
    out: dict[str, float] = {}
    names = {k[len(prefix):] for w in windows for k in w if k.startswith(prefix) and "/" not in k[len(prefix):]}
    for name in sorted(names - {"rows", "positives", "window"}):
        pairs = [(w[f"{prefix}rows"], w[f"{prefix}{name}"]) for w in windows
                 if w.get(f"{prefix}{name}") is not None and not np.isnan(w[f"{prefix}{name}"])]  # fmt: skip
        weight = sum(r for r, _ in pairs)
        out[name] = float(sum(r * v for r, v in pairs) / weight) if weight else float("nan")
    out["rows"] = float(sum(w.get(f"{prefix}rows", 0.0) for w in windows))
    out["positives"] = float(sum(w.get(f"{prefix}positives", 0.0) for w in windows))
    return out


def summarise(windows: list[dict[str, float]], segment_names: list[str]) -> dict[str, Any]:
    """Overall and per-segment results of per-window records."""
    segments = {name: weighted_overall(windows, f"{name}/") for name in segment_names
                if any(f"{name}/rows" in w for w in windows)}  # fmt: skip
    return {"overall": weighted_overall(windows), "segments": segments}


def _view_labels(config: StreamConfig, log: ClickLog, rows: np.ndarray) -> np.ndarray:
    if config.pretrain_labels == "eventual":
        return log.converted[rows].astype(np.float64)
    return observed_view(log.click_ts[rows], log.conversion_ts[rows], log.pretrain_end).label


def run_stream(
    config: StreamConfig, folder: str | Path | None = None, resume: bool = False, reporter: Reporter = SILENT,
    log: ClickLog | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run (or, with `resume`, continue) one streaming run; returns what `stream.json` holds."""
    started = time.perf_counter()
    folder = Path(folder) if folder is not None else None
    if folder is not None:
        root = Run.at(folder)
        if resume and (folder / SUMMARY).is_file():
            import json

            return json.loads((folder / SUMMARY).read_text())
        root.write_config(config.model_dump(mode="json"))
    chosen = method(config.method)
    log = log if log is not None else load_clicks(config.input, config.pretrain_days)
    grid = WindowGrid(start=log.pretrain_end, span=config.window_s, end=log.end)
    if grid.count < 2:
        raise ValueError(f"the stream after the pre-training period holds {grid.count} window(s) of {config.window_s:g} s; "
                         "it needs at least 2 (a shorter pretrain_days or window_s)")  # fmt: skip
    settings = MethodSettings(elapsed_cut_s=config.elapsed_cut_s, weight_cap=config.weight_cap,
                              delay_unit_s=config.delay_unit_s, dfm_late=config.dfm_late,
                              dfm_refresh_s=tuple(config.dfm_refresh_s))  # fmt: skip
    times = ClickTimes(log.click_ts, log.conversion_ts, grid, settings)
    pre = np.flatnonzero(log.click_ts < log.pretrain_end)
    stage_cfg = lambda epochs: stage_config(config.train, epochs, config.metrics)  # noqa: E731

    # 1. pre-train the CVR model
    model = _build(config, log, chosen.heads)
    batch_norm = has_batch_norm(model)
    if config.pretrain_epochs:
        samples, loss = chosen.pretrain(times, pre, _view_labels(config, log, pre), log.pretrain_end)
        task = WindowTask(log.arrays, samples.row, samples.labels, [(0, len(samples))], loss,
                          stage_cfg(config.pretrain_epochs), repeat=True, batch_norm=batch_norm)  # fmt: skip
        _stage("pretrain", model, task, task.config, folder, resume, reporter)

    # 2. ES-DFM's weight model, pre-trained on the same period, then frozen
    weight_seconds = 0.0
    if chosen.name == "es_dfm":
        clock = time.perf_counter()
        weights = _build(config, log, ("tn", "dp"))
        labels = weight_model_labels(log.click_ts[pre], np.where(
            _view_labels(config, log, pre) > 0, log.conversion_ts[pre], np.nan), config.elapsed_cut_s)  # fmt: skip
        epochs = config.weight_model_epochs or max(config.pretrain_epochs, 1)
        task = weight_model_task(log.arrays, pre, labels, stage_cfg(epochs), config.weight_model_holdout, batch_norm)
        _stage("weight_model", weights, task, task.config, folder, resume, reporter)
        probs = predict(weights, RowsView(log.arrays, np.arange(log.rows)), torch.sigmoid,
                        config.train.eval_batch_size, resolve_device(config.train.device))  # fmt: skip
        times = replace(times, f_tn=probs[:, 0], f_dp=probs[:, 1])
        weight_seconds = time.perf_counter() - clock

    # 3. the stream
    samples = chosen.samples(times)
    sample_window = grid.index(samples.ts)
    inside = (sample_window >= 0) & (sample_window < grid.count)
    samples = Samples(samples.row[inside], samples.ts[inside], samples.labels[inside])
    sample_window = sample_window[inside]
    click_window = grid.index(log.click_ts)
    steps: Steps = stream_steps(click_window, grid.count, config.max_windows)
    if len(steps) == 0:
        raise ValueError("the stream has no window with clicks to evaluate after the first one")
    train_ranges = _ranges(sample_window, steps.train_from, steps.evaluate)
    eval_lo = np.searchsorted(click_window, steps.evaluate, side="left")
    eval_hi = np.searchsorted(click_window, steps.evaluate, side="right")
    evaluation = [np.arange(lo, hi) for lo, hi in zip(eval_lo, eval_hi, strict=True)]
    stream_cfg = stage_cfg(len(steps)).model_copy(update={
        "monitor": "logloss", "learning_rate": config.stream_learning_rate or config.train.learning_rate,
        "batch_size": config.stream_batch_size or config.train.batch_size})  # fmt: skip
    task = WindowTask(
        log.arrays, samples.row, samples.labels, train_ranges, chosen.loss, stream_cfg,
        evaluation=evaluation, eval_labels=log.converted.astype(np.float64), segment=log.segment,
        segment_names=log.segment_names, probability=chosen.probability, metrics=config.metrics,
        batch_norm=batch_norm, window_ids=steps.evaluate,
    )  # fmt: skip
    stream_clock = time.perf_counter()
    result = _stage("stream", model, task, stream_cfg, folder, resume, reporter)
    stream_seconds = time.perf_counter() - stream_clock
    if result is None:  # finished before, but stream.json was not written: read its records back
        history = Run.at(folder / "stream").metrics_log()  # type: ignore[operator]
        epoch_seconds: list[float] = []
        stopped_by = "epochs"
    else:
        history, epoch_seconds, stopped_by = result.history, result.epoch_seconds, result.stopped_by
    windows = [{k[len("valid_"):]: v for k, v in record.items() if k.startswith("valid_")} for record in history]

    # the ceiling: the oracle's true probabilities on the same windows
    ceiling = None
    if log.oracle_prob is not None:
        ceiling_windows = [window_metrics(config.metrics, log.converted[rows].astype(np.float64), log.oracle_prob[rows],
                                          log.segment[rows] if log.segment is not None else None, log.segment_names)
                           for rows in evaluation]  # fmt: skip
        ceiling = summarise(ceiling_windows, log.segment_names)
    used = np.concatenate([np.arange(lo, hi) for lo, hi in train_ranges]) if train_ranges else np.empty(0, np.int64)
    clicks_streamed = int(np.sum((click_window >= 0) & (click_window < steps.evaluate[-1])))
    summary = {
        "method": config.method,
        "data": log.description,
        "settings": config.model_dump(mode="json"),
        "windows": len(steps),
        "window_s": config.window_s,
        "pretrain_end_s": log.pretrain_end,
        "pretrain_clicks": int(len(pre)),
        **summarise(windows, log.segment_names),
        "ceiling": ceiling,
        "per_window": windows,
        "stopped_by": stopped_by,
        "samples": {
            "stream_samples": int(len(used)),
            "stream_clicks": clicks_streamed,
            "extra_samples": int(len(used)) - clicks_streamed,  # duplicates (fnw, fnc, dfm, es_dfm)
        },
        "cost": {
            "seconds": time.perf_counter() - started,
            "stream_seconds": stream_seconds,
            "train_seconds_per_window": float(np.mean(epoch_seconds)) if epoch_seconds else None,
            "stream_seconds_per_window": stream_seconds / len(steps),
            "weight_model_seconds": weight_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        },
    }
    if folder is not None:
        Run.at(folder).write_json(SUMMARY, summary)
    return summary

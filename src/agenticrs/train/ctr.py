"""The CTR task of the engine: one label or several (multi-task), binary cross-entropy.

Batches come from the processed split (`iterate_batches`, seeded per epoch; whole requests for
request-centric models). A single-label model returns `{"logit": (B,)}`; a multi-task model
returns `{"logit": (B, T)}`, one column per trained label (`train.labels`, or the model's own
`output_labels`). Rows whose label is missing (an optional label, NaN) leave that label's loss
and metrics; each label's loss is its mean over the rows that have it, weighted by
`train.task_weights`. An optional `aux_loss` in the output is added to the loss, and so is
`model.labelled_loss(output, labels)` for a model that defines it: a supervised term of its own
that needs the batch's labels ((B, T), the trained labels in order, NaN where missing; e.g. the
counterfactual loss of CM-DCM), so no model is special-cased here. A single-label model may also
return `label_mask` (B,) bool: only those rows' labels enter the BCE (generative pre-training
scores the label only where its token was masked; `agenticrs.models.gen_backbone`).

Evaluation reports every metric per label as `label/metric` plus, for several labels, the mean
over labels under the plain metric name (so `monitor: auc` watches the mean AUC), taken over the
labels where the metric is defined. A metric that is undefined on a split (AUC and calibration
when a label has one class only there, GAUC when every group has) is NaN in memory, null in the
run's JSON files, and a warning in the log, once per split.

A model may train its heads on targets derived from the labels (`Model.targets`: ESMM's second
head learns click AND conversion); the loss and the per-head metrics use those targets.

Conversion runs (a funnel of a click label and a conversion label: the model's
`conversion_labels`, or `train.conversion_labels` for any multi-task model) also report the
per-task funnel metrics `ctr_auc` (click, every impression), `cvr_auc` (conversion, clicked rows
only) and `ctcvr_auc` (click AND conversion, every impression), each over the rows that have its
label (`agenticrs.train.metrics.Funnel`). Their scores come from the two heads: P(click) is the
click head; the conversion head is P(click AND conversion) when it is trained over impressions
(ESMM; MMoE / PLE on labels that are 0 on unclicked impressions), so P(conversion | click) is its
ratio to P(click); when its target is missing on every unclicked training row it is
P(conversion | click) and P(click AND conversion) is its product with P(click).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.data.shards import release_pages, split_in_memory
from agenticrs.features.batching import LABEL, LABELS, iterate_batches, num_batches
from agenticrs.features.blocks import iterate_block_batches
from agenticrs.features.pipeline import ProcessedDataset
from agenticrs.models.base import Model
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device
from agenticrs.train.config import TrainConfig
from agenticrs.train.metrics import (
    METRICS,
    Funnel,
    NonFiniteError,
    compute_metrics,
    conversion_metrics,
    is_conversion_metric,
)

Batch = dict[str, torch.Tensor]
Targets = Callable[[np.ndarray], np.ndarray]
CONVERSION_METRICS = ["ctr_auc", "cvr_auc", "ctcvr_auc"]


@dataclass(frozen=True)
class Conversion:
    """The click -> conversion funnel of a run: which heads (columns of the model's output) hold
    the click and the conversion label, and what the conversion head predicts (`space`:
    "impressions" = P(click AND conversion), "clicks" = P(conversion | click))."""

    click: str
    conversion: str
    click_column: int
    conversion_column: int
    space: Literal["impressions", "clicks"]

    def funnel(self, labels: np.ndarray, probs: np.ndarray) -> Funnel:
        """The funnel of a split: raw label columns (N, L) in head order, head probabilities (N, T)."""
        p_ctr = probs[:, self.click_column].astype(np.float64)
        head = probs[:, self.conversion_column].astype(np.float64)
        if self.space == "clicks":
            p_cvr, p_ctcvr = head, p_ctr * head
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                p_cvr = np.where(p_ctr > 0, head / np.maximum(p_ctr, np.finfo(np.float64).tiny), 0.0)
            p_ctcvr = head
        return Funnel(labels[:, self.click_column], labels[:, self.conversion_column], p_ctr, p_cvr, p_ctcvr)

    def to_json(self) -> dict[str, Any]:
        return {"click": self.click, "conversion": self.conversion, "space": self.space}

    @classmethod
    def from_json(cls, value: dict[str, Any], label_names: list[str]) -> Conversion:
        return cls(value["click"], value["conversion"], label_names.index(value["click"]),
                   label_names.index(value["conversion"]), value["space"])  # fmt: skip


def with_conversion_metrics(metrics: list[str], conversion: Conversion | None) -> list[str]:
    """The metrics a run reports: the configured ones, plus the funnel metrics of a conversion run."""
    return list(metrics) + [m for m in (CONVERSION_METRICS if conversion else []) if m not in metrics]


def model_targets(model: nn.Module) -> Targets | None:
    """The model's `targets` (labels -> head targets) as a NumPy function; None when it has none
    or keeps the default (each head learns its label)."""
    targets = getattr(model, "targets", None)
    if targets is None or getattr(type(model), "targets", None) is Model.targets:
        return None

    def apply(labels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return targets(torch.from_numpy(np.ascontiguousarray(labels))).numpy()

    return apply


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    split: SplitArrays,
    batch_size: int = 16384,
    device: torch.device | str = "cpu",
    reporter: Reporter = SILENT,
    description: str = "predict",
) -> np.ndarray:
    """Probabilities for every row of a split, in row order (float32): (N,) for a single-head
    model, (N, T) for a multi-task one."""
    model.eval()
    parts = []
    with reporter.task(description, total=split.rows) as task:
        for batch in iterate_batches(split, batch_size, label_index=None, device=device):
            probs = torch.sigmoid(model(batch)["logit"].float()).cpu().numpy()
            parts.append(probs)
            task.advance(len(probs))
    if not parts:
        return np.empty(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def label_metrics(
    metrics: list[str], labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None
) -> dict[str, float]:
    """Metrics of one label over the rows that have it (NaN = missing); metrics that need groups
    are skipped when there are none, and every metric is skipped on rows of one class only."""
    present = ~np.isnan(labels)
    if not present.all():
        labels, probs = labels[present], probs[present]
        groups = groups[present] if groups is not None else None
    usable = [m for m in metrics if groups is not None or "groups" not in METRICS[m].needs]
    if len(labels) == 0:
        return {}
    return compute_metrics(usable, labels, probs.astype(np.float64), groups)


def undefined_metrics_warning(split: str, label: str, labels: np.ndarray, values: dict[str, float]) -> str | None:
    """The warning for metrics of one label that are undefined (NaN) on a split, saying why; None
    when every metric is defined."""
    undefined = [name for name, value in values.items() if isinstance(value, float) and math.isnan(value)]
    if not undefined:
        return None
    present = labels[~np.isnan(labels)]
    if len(present) and present.min() == present.max():
        why = f"has one class only for label '{label}' (all {present[0]:g})"
    elif undefined == ["gauc"]:
        why = f"has one class only in every group for label '{label}'"
    else:
        why = f"leaves metrics of label '{label}' undefined"
    return f"warning: the {split} split {why}: {', '.join(undefined)} undefined there (nan; null in the run's JSON files)"


def evaluate(
    model: nn.Module,
    split: SplitArrays,
    metrics: list[str],
    batch_size: int = 16384,
    label_index: int | list[int] = 0,
    device: torch.device | str = "cpu",
    reporter: Reporter = SILENT,
    description: str = "evaluate",
    label_names: list[str] | None = None,
    split_name: str | None = None,
    warned: set[str] | None = None,
    targets: Targets | None = None,
    conversion: Conversion | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on a labelled split, and the predictions. With several label indices, metrics are
    named `label/metric` (plus their mean over the labels where it is defined, under `metric`),
    against the model's head targets (`targets`: the label columns (N, L) -> (N, T); default the
    labels); with a `conversion` funnel, the conversion metrics in `metrics` (`ctr_auc`, ...) too.

    A metric undefined on the split is logged as a warning through `reporter`, once per split when
    a `warned` set is shared between calls (`split_name` names the split; `description` otherwise).
    """
    probs = predict_probs(model, split, batch_size, device, reporter, description)
    shown_split = split_name or description
    if not np.isfinite(probs).all():
        raise NonFiniteError(
            f"the model predicts NaN on the {shown_split} split: its weights are not finite (training diverged?); "
            "lower the learning rate or set train.grad_clip"
        )
    groups = np.asarray(split["group"]) if "group" in split else None
    indices = label_index if isinstance(label_index, list) else [label_index]
    names = label_names or [str(i) for i in indices]
    funnel_metrics = [m for m in metrics if is_conversion_metric(m)]
    if funnel_metrics and (conversion is None or not isinstance(label_index, list)):
        raise ValueError(
            f"metrics {funnel_metrics} need a click -> conversion funnel: train a conversion model (esmm) or set "
            "train.conversion_labels=[<click label>, <conversion label>] with a multi-task model"
        )
    metrics = [m for m in metrics if m not in funnel_metrics]
    raw = np.asarray(split["labels"][:, indices], dtype=np.float64)
    heads = targets(raw) if targets is not None and isinstance(label_index, list) else raw
    out: dict[str, float] = {}
    per_label = []
    for column, name in enumerate(names):
        labels = heads[:, column]
        values = label_metrics(metrics, labels, probs[:, column] if isinstance(label_index, list) else probs, groups)
        per_label.append(values)
        message = undefined_metrics_warning(shown_split, name, labels, values)
        key = f"{shown_split}\0{name}"
        if message is not None and (warned is None or key not in warned):
            reporter.log(message)
            if warned is not None:
                warned.add(key)
        if isinstance(label_index, list):
            out.update({f"{name}/{k}": v for k, v in values.items()})
    if not isinstance(label_index, list):
        return per_label[0], probs
    for metric in metrics:
        values = [v[metric] for v in per_label if metric in v]
        defined = [v for v in values if not math.isnan(v)]
        if values:
            out[metric] = float(np.mean(defined)) if defined else float("nan")
    if funnel_metrics and conversion is not None:
        out.update(conversion_metrics(funnel_metrics, conversion.funnel(raw, probs)))
    return out, probs


class CTRTask:
    """Binary click (or conversion) prediction on a processed data set, one label or several."""

    def __init__(self, data: ProcessedDataset, config: TrainConfig, model: nn.Module | None = None,
                 train_split: str = "train") -> None:  # fmt: skip
        self.data = data
        self.config = config
        self.train = data.split(train_split)
        self.device = resolve_device(config.device)
        self.label_names = self._labels(data, config, model)
        all_labels = list(data.schema.labels)
        self.label_indices = [all_labels.index(name) for name in self.label_names]
        self.multi = len(self.label_names) > 1 or config.labels is not None
        self.keep_requests = bool(getattr(getattr(model, "inputs", None), "request_centric", False))
        self.targets = model_targets(model) if model is not None and self.multi else None
        pair = self._funnel_pair(config, model)
        self.has_missing, on_clicks = self._scan_labels(pair, config.shuffle_block_rows)
        self.conversion = None if pair is None else Conversion(
            self.label_names[pair[0]], self.label_names[pair[1]], pair[0], pair[1],
            "clicks" if on_clicks else "impressions")
        asked = [m for m in config.metrics if is_conversion_metric(m)]
        if asked and self.conversion is None:
            raise ValueError(
                f"train.metrics {asked} need a click -> conversion funnel: train a conversion model (esmm) or set "
                "train.conversion_labels=[<click label>, <conversion label>] with a multi-task model"
            )
        self.metrics = with_conversion_metrics(config.metrics, self.conversion)
        weights = [config.task_weights.get(name, 1.0) for name in self.label_names]
        unknown = set(config.task_weights) - set(self.label_names)
        if unknown:
            raise ValueError(f"train.task_weights names labels that are not trained: {sorted(unknown)}")
        self.weights = torch.tensor(weights, dtype=torch.float32, device=self.device)
        self._warned: set[str] = set()  # splits and labels whose undefined metrics were reported
        self.drop_last = self._single_row_batches(model)

    def _single_row_batches(self, model: nn.Module | None) -> bool:
        """Whether the epoch's last batch (of one row) is left out: batch norm cannot train on one row.

        Only for a model with batch norm and a training split of `k * batch_size + 1` rows; a batch
        size of 1 or a training split of one row cannot work at all and is refused here."""
        if model is None or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            return False
        name = getattr(model, "name", type(model).__name__)
        if self.config.batch_size == 1 or self.train.rows == 1:
            what = "train.batch_size is 1" if self.config.batch_size == 1 else "the training split has one row"
            raise ValueError(
                f"{what}, but model '{name}' uses batch norm, which needs at least 2 rows per training batch "
                "(use a larger batch size, or set batch_norm / input_norm off in model_params)"
            )
        return self.train.rows % self.config.batch_size == 1

    @staticmethod
    def _labels(data: ProcessedDataset, config: TrainConfig, model: nn.Module | None) -> list[str]:
        available = list(data.schema.labels)
        heads = getattr(model, "output_labels", None)
        wanted = config.labels or heads or [config.label or (available[0] if available else "")]
        missing = [name for name in wanted if name not in available]
        if missing:
            shown = ", ".join(f"'{name}'" for name in missing)
            raise ValueError(f"label {shown} is not a label of the data set (labels: {available})")
        if heads is not None and list(heads) != list(wanted):
            raise ValueError(f"the model predicts labels {list(heads)} but train.labels asks for {list(wanted)}")
        return list(wanted)

    def _funnel_pair(self, config: TrainConfig, model: nn.Module | None) -> tuple[int, int] | None:
        """The head columns of the run's funnel (click, conversion): `train.conversion_labels`,
        else the model's `conversion_labels`; None without a funnel."""
        own = getattr(model, "conversion_labels", None)
        pair = tuple(config.conversion_labels) if config.conversion_labels is not None else own
        if pair is None:
            return None
        if own is not None and tuple(own) != pair:
            raise ValueError(f"train.conversion_labels {list(pair)} differ from the model's funnel {list(own)}")
        missing = [name for name in pair if name not in self.label_names]
        if missing or not self.multi:
            raise ValueError(
                f"train.conversion_labels {list(pair)}: {missing or list(pair)} must be trained labels "
                f"(train.labels or the model's heads: {self.label_names}), with one head each"
            )
        click, conversion = (self.label_names.index(name) for name in pair)
        return click, conversion

    def _scan_labels(self, pair: tuple[int, int] | None, block_rows: int) -> tuple[bool, bool]:
        """(whether a head target is missing anywhere, whether the funnel's conversion head is
        trained on clicks only: its target missing on every unclicked row).

        Read in blocks of `block_rows` rows, each one released after it is read, vectorised within
        a block: copying the training labels whole would cost 4 bytes a row and label (200 MB at
        50M rows) and break the flat memory of a split that stays memory-mapped."""
        labels = self.train["labels"]
        has_missing, any_unclicked, unclicked_all_missing = False, False, True
        for start in range(0, self.train.rows, max(block_rows, 1)):
            stop = min(start + block_rows, self.train.rows)
            block = np.asarray(labels[start:stop])[:, self.label_indices]
            release_pages(labels, start, stop)
            heads = self.targets(block) if self.targets is not None else block
            has_missing = has_missing or bool(np.isnan(heads).any())
            if pair is not None:
                unclicked = block[:, pair[0]] == 0
                any_unclicked = any_unclicked or bool(unclicked.any())
                unclicked_all_missing = unclicked_all_missing and bool(np.isnan(heads[unclicked, pair[1]]).all())
        return has_missing, any_unclicked and unclicked_all_missing

    @property
    def label_index(self) -> int | list[int]:
        return self.label_indices if self.multi else self.label_indices[0]

    # -- the engine's contract ------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> None:
        prepare = getattr(model, "prepare", None)
        if prepare is not None:
            prepare(self.train, self.label_indices[0])

    def steps_per_epoch(self) -> int:
        return num_batches(self.train.rows, self.config.batch_size, drop_last=self.drop_last)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        if self.config.memory_budget_mb is not None and not split_in_memory(self.train) and not self.keep_requests:
            return iterate_block_batches(
                self.train, self.config.batch_size, block_rows=max(self.config.shuffle_block_rows, self.config.batch_size),
                seed=self.config.seed, epoch=epoch, label_index=self.label_index, device=self.device, skip_batches=skip,
            )  # fmt: skip
        return iterate_batches(
            self.train, self.config.batch_size, shuffle=True, seed=self.config.seed, epoch=epoch,
            label_index=self.label_index, device=self.device, keep_requests=self.keep_requests,
            skip_batches=skip, drop_last=self.drop_last,
        )  # fmt: skip

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        output = model(batch)
        logit = output["logit"]
        if self.multi:
            labels = batch[LABELS]
            if self.targets is not None:
                labels = model.targets(labels)
            if logit.dim() != 2 or logit.shape[1] != labels.shape[1]:
                raise ValueError(
                    f"model '{getattr(model, 'name', type(model).__name__)}' returns logits of shape "
                    f"{tuple(logit.shape)}; training labels {self.label_names} needs one column per label"
                )
            loss = self._multi_loss(logit, labels)
        else:
            labels = batch[LABEL]
            counted = output.get("label_mask")  # rows whose label is in the loss (the model's choice)
            if self.has_missing or counted is not None:
                present = ~torch.isnan(labels)
                if counted is not None:
                    present = present & counted
                per_row = F.binary_cross_entropy_with_logits(logit, labels.nan_to_num(0.0), reduction="none")
                loss = (per_row * present).sum() / present.sum().clamp_min(1)
            else:
                loss = F.binary_cross_entropy_with_logits(logit, labels)
        if "aux_loss" in output:
            loss = loss + output["aux_loss"]
        labelled_loss = getattr(model, "labelled_loss", None)
        if labelled_loss is not None:  # a model's own supervised term (e.g. CM-DCM's counterfactual loss)
            loss = loss + labelled_loss(output, labels if labels.dim() == 2 else labels.unsqueeze(1))
        return loss, len(labels)

    def _multi_loss(self, logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        present = ~torch.isnan(labels)
        safe = torch.where(present, labels, torch.zeros_like(labels))
        per_cell = F.binary_cross_entropy_with_logits(logit, safe, reduction="none") * present
        per_label = per_cell.sum(0) / present.sum(0).clamp_min(1)
        return (per_label * self.weights).sum()

    def has_validation(self) -> bool:
        return "valid" in self.data.splits

    def evaluate(self, model: nn.Module, split: str, reporter: Reporter = SILENT) -> dict[str, float] | None:
        rows = self.data.splits.get(split)
        if rows is None or "labels" not in rows:
            return None
        metrics, _ = evaluate(
            model, rows, self.metrics, self.config.eval_batch_size, self.label_index, self.device,
            reporter, "validate" if split == "valid" else split, self.label_names, split, self._warned,
            self.targets, self.conversion,
        )  # fmt: skip
        return metrics

    def split_rows(self, split: str) -> int:
        rows = self.data.splits.get(split)
        return rows.rows if rows is not None else 0

    def summary(self, model: nn.Module) -> dict[str, object]:
        return {
            "parameters": sum(p.numel() for p in model.parameters()),
            "label": self.label_names[0] if not self.multi else None,
            "labels": self.label_names,
            **({"conversion": self.conversion.to_json()} if self.conversion else {}),
        }

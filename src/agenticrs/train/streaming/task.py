"""The streaming task of the one engine: an epoch is one step of the stream.

Epoch e (1-based) of the engine trains one pass over the samples of stream step e - 1 (the
samples that entered the stream in its training windows, shuffled within the step, seeded by
(seed, e)); the engine's evaluation after that epoch is the step's evaluation window (the clicks
of the next window, with their eventual labels). So the engine's own loop, optimisers,
checkpoints (one per window), resume and run directory serve the stream unchanged; the stream's
per-window results are the engine's `metrics.jsonl` records (`valid_*`).

Pre-training uses the same task with one step repeated for every epoch and no evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agenticrs.features.batching import LABELS, iterate_batches, num_batches
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device
from agenticrs.train.config import TrainConfig
from agenticrs.train.metrics import NonFiniteError, compute_metrics
from agenticrs.train.streaming.methods import LossFn

Batch = dict[str, torch.Tensor]


class RowsView:
    """A split-like view (what `iterate_batches` reads) of some click rows plus sample labels."""

    def __init__(self, arrays: dict[str, np.ndarray], rows: np.ndarray, labels: np.ndarray | None = None) -> None:
        self._arrays, self._index, self._labels = arrays, rows, labels
        self.rows = len(rows)
        self._cache: dict[str, np.ndarray] = {}

    def keys(self) -> list[str]:
        return [*self._arrays, *(["labels"] if self._labels is not None else [])]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "labels" and self._labels is not None:
            return self._labels
        if key not in self._cache:
            self._cache[key] = self._arrays[key][self._index]
        return self._cache[key]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def predict(model: nn.Module, view: RowsView, probability, batch_size: int, device: torch.device) -> np.ndarray:
    """The served probability of every row of `view` (float64)."""
    model.eval()
    parts = [probability(model(batch)["logit"]).float().cpu().numpy()
             for batch in iterate_batches(view, batch_size, label_index=None, device=device)]  # fmt: skip
    out = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    if not np.isfinite(out).all():
        raise NonFiniteError("the model predicts NaN on the stream: lower the learning rate or set train.grad_clip")
    return out


def window_metrics(
    metrics: list[str], labels: np.ndarray, probs: np.ndarray, segment: np.ndarray | None, segment_names: list[str]
) -> dict[str, float]:
    """Metrics of one evaluation window, overall and per segment (`<segment>/<metric>`), with the
    row counts (`rows`, `<segment>/rows`) that weight the averages over windows. A metric that is
    undefined on the window (AUC with one class) is NaN and left out of those averages."""
    def block(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return {"rows": float(len(y)), "positives": float(y.sum()), **compute_metrics(metrics, y, p)}

    out = block(labels, probs)
    if segment is not None:
        for code, name in enumerate(segment_names):
            keep = segment == code
            if keep.any():
                out.update({f"{name}/{k}": v for k, v in block(labels[keep], probs[keep]).items()})
    return out


@dataclass(frozen=True)
class Holdout:
    """Held-out clicks of a pre-training stage: their rows, their label columns, and how the
    stage's raw logits on them are scored (`score(logit, labels)`: metrics, the monitor among them)."""

    rows: np.ndarray
    labels: np.ndarray
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]]


class WindowTask:
    """The engine's task over a sample stream cut into steps (see the module docstring)."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        sample_rows: np.ndarray,
        sample_labels: np.ndarray,
        steps: list[tuple[int, int]],
        loss_fn: LossFn,
        config: TrainConfig,
        *,
        repeat: bool = False,
        evaluation: list[np.ndarray] | None = None,
        eval_labels: np.ndarray | None = None,
        segment: np.ndarray | None = None,
        segment_names: list[str] | None = None,
        probability=None,
        metrics: list[str] | None = None,
        batch_norm: bool = False,
        window_ids: np.ndarray | None = None,
        holdout: Holdout | None = None,
    ) -> None:
        self.arrays, self.sample_rows, self.sample_labels = arrays, sample_rows, sample_labels
        self.steps, self.loss_fn, self.config, self.repeat = steps, loss_fn, config, repeat
        self.evaluation, self.eval_labels = evaluation, eval_labels
        self.segment, self.segment_names = segment, segment_names or []
        self.probability, self.metrics = probability, metrics or ["auc", "logloss"]
        self.batch_norm = batch_norm
        self.window_ids = window_ids
        self.holdout = holdout  # a pre-training stage's held-out clicks: what its early stopping follows
        self.device = resolve_device(config.device)
        self.current = 0  # the step whose batches were asked for last (0-based)

    def _step(self, epoch: int) -> int:
        return 0 if self.repeat else epoch - 1

    def _drop_last(self, rows: int) -> bool:
        # batch norm cannot train on a batch of one row: a step's last batch of one sample is left out
        return self.batch_norm and rows % self.config.batch_size == 1

    # -- the engine's contract ----------------------------------------------------------------
    def prepare(self, model: nn.Module) -> None:
        prepare = getattr(model, "prepare", None)
        if prepare is not None and self.steps:
            lo, hi = self.steps[0]
            prepare(RowsView(self.arrays, self.sample_rows[lo:hi], self.sample_labels[lo:hi]), 0)

    def steps_per_epoch(self) -> int:
        return max((num_batches(hi - lo, self.config.batch_size, self._drop_last(hi - lo)) for lo, hi in self.steps),
                   default=0)  # fmt: skip

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        self.current = self._step(epoch)
        lo, hi = self.steps[self.current]
        view = RowsView(self.arrays, self.sample_rows[lo:hi], self.sample_labels[lo:hi])
        width = self.sample_labels.shape[1]
        return iterate_batches(view, self.config.batch_size, shuffle=True, seed=self.config.seed, epoch=epoch,
                               label_index=list(range(width)), device=self.device, skip_batches=skip,
                               drop_last=self._drop_last(hi - lo))  # fmt: skip

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        output = model(batch)
        labels = batch[LABELS]
        loss = self.loss_fn(output["logit"], labels)
        if "aux_loss" in output:
            loss = loss + output["aux_loss"]
        return loss, len(labels)

    def has_validation(self) -> bool:
        return self.evaluation is not None or self.holdout is not None

    def evaluate(self, model: nn.Module, split: str, reporter: Reporter = SILENT) -> dict[str, float] | None:
        if split == "valid" and self.holdout is not None:
            held = self.holdout
            logit = predict(model, RowsView(self.arrays, held.rows), lambda x: x, self.config.eval_batch_size, self.device)
            return held.score(logit, held.labels)
        if split != "valid" or self.evaluation is None or self.eval_labels is None:
            return None
        rows = self.evaluation[self.current]
        probs = predict(model, RowsView(self.arrays, rows), self.probability, self.config.eval_batch_size, self.device)
        segment = self.segment[rows] if self.segment is not None else None
        out = window_metrics(self.metrics, self.eval_labels[rows], probs, segment, self.segment_names)
        window = self.window_ids[self.current] if self.window_ids is not None else self.current
        return {"window": float(window), **out}

    def split_rows(self, split: str) -> int:
        if split == "valid" and self.holdout is not None:
            return len(self.holdout.rows)
        return len(self.evaluation[self.current]) if split == "valid" and self.evaluation is not None else 0

"""Training a two-tower retriever through the one engine.

The retrieval task is the sequential task of `agenticrs.gr.train` (leave-one-out splits,
next-item batches, full-ranking Recall@k / NDCG@k over the whole catalogue) with one addition in
`prepare`: the statistics of the training stream the two-tower model is built around, namely
the items' frequencies as training targets (log q of the log-Q correction) and their attribute
bags (the item tower's side information). Both land in buffers saved with the weights, so a
reloaded run (`agenticrs.gr.train.load_sequential_run`) scores exactly as the trained one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from agenticrs.gr.base import SequenceData
from agenticrs.gr.train import SeqTrainResult, SequentialTask, SequentialTrainConfig, _write_setup
from agenticrs.gr.zoo import build_sequential
from agenticrs.progress import SILENT, Reporter
from agenticrs.train.engine import Engine
from agenticrs.train.run import Run


class RetrievalTrainConfig(SequentialTrainConfig):
    """Sequential training settings with retrieval's cut-offs (the issue's Recall@50/@200) and a
    larger batch (in-batch negatives: more of them, a better estimate of the full softmax)."""

    batch_size: int = Field(default=512, ge=2)
    learning_rate: float = Field(default=1e-3, gt=0)
    ks: list[int] = Field(default_factory=lambda: [10, 50, 200])
    monitor: str = Field(default="recall@50")
    patience: int = Field(default=3, ge=1)


def target_counts(train: SequenceData) -> np.ndarray:
    """(num_items + 1,) how often each item is a training target of the "prefixes" examples (every
    item of a training sequence but its first): the sampling distribution of in-batch negatives."""
    offsets = np.asarray(train.offsets, np.int64)
    items = np.asarray(train.items, np.int64)
    first = np.zeros(len(items), bool)
    starts = offsets[:-1][np.diff(offsets) > 0]
    first[starts] = True
    return np.bincount(items[~first], minlength=train.num_items + 1)


def attribute_matrix(data: SequenceData, max_attributes: int) -> tuple[np.ndarray, int]:
    """((num_items + 1, max_attributes) attribute ids + 1, 0 = none; the attribute vocabulary).
    Items with more attributes keep their first `max_attributes`."""
    out = np.zeros((data.num_items + 1, max_attributes), np.int64)
    if data.attribute_offsets is None or data.attributes is None or len(data.attributes) == 0:
        return out, 0
    offsets = np.asarray(data.attribute_offsets, np.int64)
    lengths = np.diff(offsets)
    item_of = np.repeat(np.arange(len(lengths)), lengths)
    slot = np.arange(len(item_of)) - offsets[:-1][item_of]
    keep = (slot < max_attributes) & (item_of <= data.num_items)
    attrs = np.asarray(data.attributes, np.int64)
    out[item_of[keep], slot[keep]] = attrs[keep] + 1
    return out, int(attrs.max()) + 1


class RetrievalTask(SequentialTask):
    """The sequential task, plus the training-stream statistics a two-tower model needs."""

    def prepare(self, model: nn.Module) -> None:
        if hasattr(model, "set_item_frequencies"):
            model.set_item_frequencies(torch.from_numpy(target_counts(self.splits.train)))
        if hasattr(model, "set_item_attributes"):
            attrs, _ = attribute_matrix(self.data, model.config.max_attributes)
            model.set_item_attributes(torch.from_numpy(attrs).to(model.item_attributes.device))


def build_two_tower(data: SequenceData, params: dict | None = None) -> nn.Module:
    """A two-tower model over `data`'s items, its attribute vocabulary read from the data."""
    params = dict(params or {})
    max_attributes = int(params.get("max_attributes", 8))
    _, vocab = attribute_matrix(data, max_attributes)
    params.setdefault("num_attributes", vocab)
    return build_sequential("two_tower", data.num_items, params)


def train_retrieval(
    data: SequenceData,
    params: dict | None = None,
    config: RetrievalTrainConfig | None = None,
    run_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
) -> tuple[nn.Module, SeqTrainResult]:
    """Train a two-tower retriever on `data`'s leave-one-out training part through the engine;
    the run directory is an ordinary sequential run (`load_sequential_run` reloads it)."""
    cfg = config or RetrievalTrainConfig()
    torch.manual_seed(cfg.seed)
    model = build_two_tower(data, params)
    task = RetrievalTask(model, data, cfg)
    run = Run.at(run_dir) if run_dir is not None else None
    if run is not None:
        _write_setup(run, model, data, cfg, None)
    result = Engine(cfg, reporter).fit(model, task, run)
    return model, SeqTrainResult(
        best_epoch=result.best_epoch, epochs_run=result.epochs_run, valid=result.valid, test=result.test or {},
        history=result.history, epoch_seconds=result.epoch_seconds, train_seconds=result.train_seconds,
        eval_seconds=result.eval_seconds, stopped_by=result.stopped_by, run_dir=run.folder if run else None,
        steps=result.steps, best_step=result.best_step,
    )  # fmt: skip


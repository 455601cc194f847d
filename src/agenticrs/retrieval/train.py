"""Training a two-tower retriever through the one engine.

The retrieval task is the sequential task of `agenticrs.gr.train` (leave-one-out splits,
next-item "prefixes" batches, full-ranking Recall@k / NDCG@k over the whole catalogue): the
two-tower model computes what it is built around (item frequencies for log q, attribute bags) in
`prepare_data`, which the task calls before the first step, into buffers saved with the weights;
so `agenticrs train --task sequential -m two_tower` trains it too, and a run reloads with
`agenticrs.gr.train.load_sequential_run` to exactly the trained retriever.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from agenticrs.gr.base import SequenceData
from agenticrs.gr.train import SeqTrainResult, SequentialTrainConfig, train_sequential
from agenticrs.gr.zoo import build_sequential
from agenticrs.progress import SILENT, Reporter


class RetrievalTrainConfig(SequentialTrainConfig):
    """Sequential training settings with retrieval's cut-offs (the issue's Recall@50/@200) and a
    larger batch (in-batch negatives: more of them, a better estimate of the full softmax)."""

    batch_size: int = Field(default=512, ge=2)
    learning_rate: float = Field(default=1e-3, gt=0)
    ks: list[int] = Field(default_factory=lambda: [10, 50, 200])
    monitor: str = Field(default="recall@50")
    patience: int = Field(default=3, ge=1)


def train_retrieval(
    data: SequenceData,
    params: dict | None = None,
    config: RetrievalTrainConfig | None = None,
    run_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
    resume: bool = False,
) -> tuple[nn.Module, SeqTrainResult]:
    """Train a two-tower retriever on `data`'s leave-one-out training part through the engine
    (initial weights seeded by `config.seed`); the run directory is an ordinary sequential run,
    and `resume` continues it from its checkpoint."""
    cfg = config or RetrievalTrainConfig()
    torch.manual_seed(cfg.seed)
    model = build_sequential("two_tower", data.num_items, params or {})
    return model, train_sequential(model, data, cfg, run_dir, reporter, resume=resume)

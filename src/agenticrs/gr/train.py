"""The sequential task of the one engine: next-item training and full-ranking evaluation.

`train_sequential` hands a `SequentialTask` to `agenticrs.train.engine.Engine`, which owns the
loop, early stopping (patience in evaluations, direction from the metric registry), budgets,
resume and the run directory. The task calls `model.loss(batch)` on next-item batches and
`model.recommend(batch, k)` for full-ranking evaluation (Recall@k / NDCG@k), never the model's
kind.

A run directory holds what every run holds (`config.yaml` with the model name and params, the
train config, the data set name and `num_items`; `weights.pt`, `metrics.jsonl`, `summary.json`)
plus `semantic_ids.npz` for models that decode semantic IDs; `load_sequential_run` rebuilds the
model from it.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from agenticrs.config import load_yaml
from agenticrs.data.shards import rank_bounds
from agenticrs.gr.base import EVENT_FIELDS, SemanticIds, SequenceData, SequentialModel
from agenticrs.gr.metrics import rank_metrics
from agenticrs.gr.sequences import (
    EvalExamples,
    LOOSplits,
    conversion_split,
    count_next_item_examples,
    leave_one_out,
    next_item_batches,
)
from agenticrs.gr.zoo import build_sequential
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device
from agenticrs.train import distributed
from agenticrs.train.config import TrainConfig
from agenticrs.train.engine import Engine
from agenticrs.train.run import CONFIG, WEIGHTS, Run, run_task

SEMANTIC_IDS = "semantic_ids.npz"


class SequentialTrainConfig(TrainConfig):
    """How to train a sequential model; the defaults follow SASRec (Adam, lr 1e-3, batch 128,
    constant learning rate, patience 10 evaluations on NDCG@10)."""

    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=1024, ge=1)
    optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adamw"
    lr_schedule: Literal["plateau", "cosine", "constant"] = "constant"
    patience: int = Field(default=10, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(default=0.0, ge=0, description="a validation gain at or below this is no improvement")
    monitor: str = Field(default="ndcg@10", description="validation metric for early stopping and the best checkpoint")
    metrics: list[str] = Field(default_factory=list, description="default: recall@k and ndcg@k for every k in ks")
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    max_len: int | None = Field(default=None, ge=1, description="history length; default: the model's max_len")
    examples: Literal["sequence", "prefixes"] | None = Field(
        default=None, description="training examples; default: the model's `train_examples`"
    )
    length_pool: int | None = Field(
        default=None, ge=1, description="batch examples of similar history length within pools of this many batches"
    )
    targets: Literal["next", "conversion"] = Field(
        default="next",
        description="evaluation targets: 'next' = leave-one-out on every user's last events; 'conversion' = on the "
                    "users' last two purchases (multi-behaviour data, `sequences.conversion_split`)",
    )  # fmt: skip
    valid_users: int | None = Field(
        default=None, ge=1,
        description="validate on a fixed random sample of this many users (seeded) instead of all: a quicker early "
                    "stopping signal on large data sets; the test split is always every user",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """`weight_decay` (decoupled, on every parameter) and `eval_every` (epochs), as older
        configs and run directories write them."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "weight_decay" in data:
            decay = data.pop("weight_decay")
            data.setdefault("weight_l2", decay)
            data.setdefault("embedding_l2", decay)
        if "eval_every" in data:
            data.setdefault("eval_every_epochs", data.pop("eval_every"))
        return data

    @model_validator(mode="after")
    def _check_monitor(self) -> SequentialTrainConfig:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        if not self.metrics:
            self.metrics = [f"{m}@{k}" for k in self.ks for m in ("recall", "ndcg")]
        known = [f"{m}@{k}" for k in self.ks for m in ("recall", "ndcg")]
        if self.monitor not in known:
            raise ValueError(f"monitor '{self.monitor}' is not computed; choose one of {known}")
        return self


class SequentialRunConfig(BaseModel):
    """What `config.yaml` of a run holds: enough to rebuild the model."""

    model_config = ConfigDict(extra="forbid")

    model: str
    model_params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    num_items: int
    train: SequentialTrainConfig = Field(default_factory=SequentialTrainConfig)


@dataclass
class SeqTrainResult:
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped_by: str = "epochs"
    run_dir: Path | None = None
    steps: int = 0
    best_step: int = 0

    @property
    def seconds_per_epoch(self) -> float | None:
        """Mean training seconds per epoch. A run read back from its summary (finished before a
        benchmark was killed) keeps only the total, so the mean is the total over the epochs."""
        if self.epoch_seconds:
            return float(sum(self.epoch_seconds) / len(self.epoch_seconds))
        return self.train_seconds / self.epochs_run if self.epochs_run else None


def _model_max_len(model: SequentialModel, override: int | None = None) -> int:
    own = getattr(getattr(model, "config", None), "max_len", None)
    if override is not None:
        if own is not None and override > own:
            raise ValueError(f"max_len {override} exceeds the model's max_len {own}")
        return override
    return int(own) if own is not None else 50


@torch.no_grad()
def evaluate_sequential(
    model: SequentialModel,
    examples: EvalExamples,
    ks: Sequence[int] = (5, 10, 20),
    batch_size: int = 1024,
    max_len: int | None = None,
    device: torch.device | str = "cpu",
    reporter: Reporter = SILENT,
    description: str = "evaluate",
) -> dict[str, float]:
    """Recall@k and NDCG@k of `model.recommend(batch, max(ks))` on every example (full ranking).

    A model that returns fewer than max(ks) items is padded with 0 (never a target)."""
    if len(examples) == 0:
        raise ValueError("no evaluation examples (every user has fewer than 3 items?)")
    model.eval()
    k = max(ks)
    lists = []
    n_batches = -(-len(examples) // batch_size)
    with reporter.task(description, total=n_batches) as task:
        for batch in examples.batches(_model_max_len(model, max_len), batch_size):
            batch = {name: value.to(device) for name, value in batch.items()}
            top = model.recommend(batch, k).cpu().numpy()
            if top.shape[1] < k:
                top = np.pad(top, ((0, 0), (0, k - top.shape[1])))
            lists.append(top)
            task.advance()
    return rank_metrics(np.concatenate(lists), examples.targets, ks)


def decoding_latency_ms(model: SequentialModel, examples: EvalExamples, users: int = 512, k: int = 10) -> float:
    """Milliseconds per user of one `recommend(batch, k)` call on the first `users` examples (after
    one untimed warm-up call): what a benchmark quotes as a model's decoding latency."""
    batch = next(iter(examples.batches(_model_max_len(model), users)))
    batch = {name: value for name, value in batch.items() if name in ("history", "user")}
    model.eval()
    model.recommend(batch, k)
    start = time.perf_counter()
    model.recommend(batch, k)
    return 1000 * (time.perf_counter() - start) / len(batch["history"])


def examples_per_user(train_part: SequenceData, mode: str) -> np.ndarray:
    """(U,) training examples each user gives per epoch (as `count_next_item_examples` counts them)."""
    lengths = np.diff(np.asarray(train_part.offsets, dtype=np.int64))
    return (lengths >= 2).astype(np.int64) if mode == "sequence" else np.maximum(lengths - 1, 0)


def rank_users(train_part: SequenceData, mode: str, rank: int, world_size: int) -> SequenceData:
    """Rank `rank`'s users of the training part: a contiguous run of users whose examples are
    `rank_bounds` of the epoch's examples (exactly, one example a user; to within one user's
    prefixes otherwise), so ranks hold disjoint users, together every example, and equal numbers
    of steps per epoch. Slices of the CSR arrays, no per-user loop."""
    per_user = examples_per_user(train_part, mode)
    before = np.concatenate([[0], np.cumsum(per_user)])  # before[k]: examples of users [0, k)
    first, last = rank_bounds(int(before[-1]), rank, world_size)
    start = int(np.searchsorted(before, first, side="left")) if rank else 0
    stop = int(np.searchsorted(before, last, side="left")) if rank < world_size - 1 else len(per_user)
    offsets = np.asarray(train_part.offsets, dtype=np.int64)
    return dataclasses.replace(
        train_part, users=np.asarray(train_part.users)[start:stop], offsets=offsets[start : stop + 1] - offsets[start],
        items=np.asarray(train_part.items)[offsets[start] : offsets[stop]],
        **{name: np.asarray(getattr(train_part, name))[offsets[start] : offsets[stop]] for name in EVENT_FIELDS
           if getattr(train_part, name) is not None},
    )  # fmt: skip


class LossModule(nn.Module):
    """A module whose forward is the model's training loss.

    `DistributedDataParallel` all-reduces the gradients of the parameters that its wrapped
    module's *forward* used; a sequential model's loss is `model.loss(batch)`, not its forward,
    so the engine trains (and DDP wraps) this module instead: DDP's reducer then sees every
    parameter the loss used. The parameters are the model's own (no copy)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)  # type: ignore[operator]


class SequentialTask:
    """Leave-one-out next-item training of a `SequentialModel` (the engine's task contract).

    In a torch.distributed group (`train --task sequential --nproc N`) the training part is this
    rank's users (`rank_users`) and each step takes `batch_size / N` of them: `batch_size` is the
    global batch. Evaluation reads every user (the engine evaluates on rank 0 only)."""

    def __init__(self, model: SequentialModel, data: SequenceData, config: SequentialTrainConfig) -> None:
        self.data = data
        self.config = config
        self.device = resolve_device(config.device)
        self.max_len = _model_max_len(model, config.max_len)
        self.mode = config.examples or getattr(model, "train_examples", "sequence")
        self.splits: LOOSplits = leave_one_out(data) if config.targets == "next" else conversion_split(data)
        if len(self.splits.valid) == 0:
            raise ValueError(f"data set '{data.name}' has no user with 3 or more items: nothing to validate on")
        if config.valid_users is not None:
            self.splits.valid = self.splits.valid.sample(config.valid_users, config.seed)
        self.n_examples = count_next_item_examples(self.splits.train, self.mode)
        if self.n_examples == 0:
            raise ValueError(f"data set '{data.name}' gives no training example (every training part is 1 item long)")
        ctx = distributed.current()
        self.batch_size = distributed.local_batch_size(config.batch_size, ctx.world_size)
        # the statistics `prepare` hands the model stay those of every user, so every rank's model is the same
        self.train_part = rank_users(self.splits.train, self.mode, ctx.rank, ctx.world_size) if ctx.active \
            else self.splits.train
        self.rank_examples = count_next_item_examples(self.train_part, self.mode)

    def prepare(self, model: nn.Module) -> None:
        """The model's statistics of the training part (`SequentialModel.prepare_data`), if any."""
        prepare_data = getattr(model, "prepare_data", None)
        if prepare_data is not None:
            prepare_data(self.splits.train, self.data)

    def steps_per_epoch(self) -> int:
        return -(-self.rank_examples // self.batch_size)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.config
        batches = next_item_batches(self.train_part, self.max_len, self.batch_size, cfg.seed, epoch, self.mode,
                                    cfg.length_pool)  # fmt: skip
        for batch in itertools.islice(batches, skip, None):
            yield {name: value.to(self.device) for name, value in batch.items()}

    def train_module(self, model: nn.Module) -> nn.Module:
        """What the engine trains (and DDP wraps): the model with its loss as forward."""
        return LossModule(model)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """`model` is what the engine trains: `train_module`'s module (DDP-wrapped in a group), or
        a bare sequential model when called directly."""
        loss = model(batch) if isinstance(model, (LossModule, distributed.DataParallel)) else model.loss(batch)
        return loss, len(batch["target"])

    def has_validation(self) -> bool:
        return True

    def evaluate(self, model: nn.Module, split: str, reporter: Reporter = SILENT) -> dict[str, float] | None:
        examples = getattr(self.splits, split, None)
        if examples is None:
            return None
        what = "validate" if split == "valid" else split
        metrics = evaluate_sequential(model, examples, self.config.ks, self.config.eval_batch_size, self.max_len,
                                      self.device, reporter, what)  # fmt: skip
        return {name: metrics[name] for name in self.config.metrics}

    def split_rows(self, split: str) -> int:
        return len(getattr(self.splits, split))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        return {
            "model": getattr(model, "name", type(model).__name__), "dataset": self.data.name,
            "train_examples": self.n_examples, "valid_users": len(self.splits.valid),
            "test_users": len(self.splits.test), "parameters": sum(p.numel() for p in model.parameters()),
        }  # fmt: skip


def _write_setup(
    run: Run, model: SequentialModel, data: SequenceData, config: SequentialTrainConfig,
    semantic_ids: SemanticIds | None,
) -> None:  # fmt: skip
    params = model.config.model_dump(mode="json") if hasattr(model, "config") else {}
    run_config = SequentialRunConfig(model=model.name, model_params=params, dataset=data.name,
                                     num_items=data.num_items, train=config)  # fmt: skip
    run.write_config(run_config.model_dump(mode="json"))
    if semantic_ids is not None:
        run.save_arrays(SEMANTIC_IDS, codes=semantic_ids.codes, vocab_sizes=np.asarray(semantic_ids.vocab_sizes))


def train_sequential(
    model: SequentialModel,
    data: SequenceData,
    config: SequentialTrainConfig | None = None,
    run_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
    semantic_ids: SemanticIds | None = None,
    resume: bool = False,
) -> SeqTrainResult:
    """Train on the leave-one-out training part, validate every `eval_every_epochs` epochs (or
    `eval_every_steps` steps), restore the best checkpoint, and report its validation and test
    metrics.

    Batch order, dropout and sampled negatives follow `config.seed`; the initial weights are the
    caller's (seed torch before building the model for a fully reproducible run).
    `semantic_ids` (default: the model's `semantic_ids` attribute, if any) are saved with the run
    so that `load_sequential_run` can rebuild models that decode them.
    """
    cfg = config or SequentialTrainConfig()
    task = SequentialTask(model, data, cfg)
    if semantic_ids is None and isinstance(getattr(model, "semantic_ids", None), SemanticIds):
        semantic_ids = model.semantic_ids
    run = Run.at(run_dir) if run_dir is not None else None
    if run is not None and not resume:
        _write_setup(run, model, data, cfg, semantic_ids)
    result = Engine(cfg, reporter).fit(model, task, run, resume=resume)
    return SeqTrainResult(
        best_epoch=result.best_epoch, epochs_run=result.epochs_run, valid=result.valid, test=result.test or {},
        history=result.history, epoch_seconds=result.epoch_seconds, train_seconds=result.train_seconds,
        eval_seconds=result.eval_seconds, stopped_by=result.stopped_by, run_dir=run.folder if run else None,
        steps=result.steps, best_step=result.best_step,
    )  # fmt: skip


def load_sequential_config(run_dir: str | Path) -> tuple[Path, SequentialRunConfig]:
    folder = Path(run_dir)
    if not (folder / CONFIG).is_file():
        raise FileNotFoundError(f"{folder} is not a sequential run directory: {CONFIG} is missing")
    if run_task(folder) == "ctr":
        raise ValueError(
            f"{folder} is a CTR run (click model); `recommend` takes sequential runs (train --task sequential). "
            f"For this run use `agenticrs evaluate --run {folder}` or `agenticrs predict --run {folder} -i FILE -o OUT`"
        )
    if run_task(folder) == "multi_objective_retrieval":
        raise ValueError(f"{folder} is a multi-objective retrieval run (csmf, multihead_two_tower): load it with "
                         "agenticrs.retrieval.cascade_train.load_multi_objective_run")  # fmt: skip
    return folder, SequentialRunConfig.model_validate(load_yaml(folder / CONFIG))


def config_semantic_ids(run_dir: str | Path) -> SemanticIds | None:
    """The semantic IDs saved with a run, if its model decodes them."""
    path = Path(run_dir) / SEMANTIC_IDS
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return SemanticIds(codes=saved["codes"], vocab_sizes=tuple(int(v) for v in saved["vocab_sizes"]))


def load_sequential_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[SequentialModel, SequentialRunConfig]:
    """The trained model of a run directory (best checkpoint, eval mode) and its config."""
    folder, config = load_sequential_config(run_dir)
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a complete sequential run directory: {WEIGHTS} is missing")
    semantic_ids = config_semantic_ids(folder)
    model = build_sequential(config.model, config.num_items, config.model_params, semantic_ids=semantic_ids)
    model.load_state_dict(Run(folder).load_weights(device))
    return model.to(device).eval(), config

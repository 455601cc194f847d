"""Training and evaluation of sequential / generative recommenders under leave-one-out.

One loop for every `SequentialModel`: it calls `model.loss(batch)` on next-item batches and
`model.recommend(batch, k)` for full-ranking evaluation (Recall@k / NDCG@k), never the model's
kind. Seeded (same seed -> same metrics on CPU), early stopping on a validation metric with
patience counted in evaluations, best-checkpoint restore, a JSON-lines metrics log.

A run directory holds `config.yaml` (model name and params, train config, data set name,
`num_items`), `weights.pt` (the best checkpoint), `semantic_ids.npz` (models that decode semantic
IDs), `metrics.jsonl` (one record per evaluation, appended as training goes) and `summary.json`
(written last); `load_sequential_run` rebuilds the model from it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agenticrs.config import dump_yaml, load_yaml
from agenticrs.gr.base import SemanticIds, SequenceData, SequentialModel
from agenticrs.gr.metrics import rank_metrics
from agenticrs.gr.sequences import (
    EvalExamples,
    count_next_item_examples,
    leave_one_out,
    next_item_batches,
)
from agenticrs.gr.zoo import build_sequential
from agenticrs.progress import SILENT, Reporter
from agenticrs.train.trainer import resolve_device, seed_everything

CONFIG, WEIGHTS, SEMANTIC_IDS, METRICS, SUMMARY = (
    "config.yaml", "weights.pt", "semantic_ids.npz", "metrics.jsonl", "summary.json",
)  # fmt: skip


class SequentialTrainConfig(BaseModel):
    """How to train; the defaults follow SASRec (Adam, lr 1e-3, batch 128)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled (AdamW); 0 = plain Adam")
    grad_clip: float | None = Field(default=None, gt=0, description="clip the gradient norm to this")
    patience: int = Field(default=10, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(default=0.0, ge=0, description="a validation gain at or below this is no improvement")
    eval_every: int = Field(default=1, ge=1, description="epochs between validations")
    monitor: str = Field(default="ndcg@10", description="validation metric for early stopping and the best checkpoint")
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    seed: int = 2024
    num_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; default: all cores")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    max_len: int | None = Field(default=None, ge=1, description="history length; default: the model's max_len")
    examples: Literal["sequence", "prefixes"] | None = Field(
        default=None, description="training examples; default: the model's `train_examples`"
    )
    length_pool: int | None = Field(
        default=None, ge=1, description="batch examples of similar history length within pools of this many batches"
    )
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap steps per epoch (quick runs)")
    time_budget_s: float | None = Field(default=None, gt=0, description="stop training after this many seconds")

    @model_validator(mode="after")
    def _check_monitor(self) -> SequentialTrainConfig:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
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


def _save_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    tmp = folder / (WEIGHTS + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / WEIGHTS)


def _write_setup(
    folder: Path, model: SequentialModel, data: SequenceData, config: SequentialTrainConfig,
    semantic_ids: SemanticIds | None,
) -> None:  # fmt: skip
    params = model.config.model_dump(mode="json") if hasattr(model, "config") else {}
    run_config = SequentialRunConfig(model=model.name, model_params=params, dataset=data.name,
                                     num_items=data.num_items, train=config)  # fmt: skip
    dump_yaml(run_config.model_dump(mode="json"), folder / CONFIG)
    if semantic_ids is not None:
        np.savez(folder / SEMANTIC_IDS, codes=semantic_ids.codes, vocab_sizes=np.asarray(semantic_ids.vocab_sizes))
    (folder / METRICS).write_text("")


def train_sequential(
    model: SequentialModel,
    data: SequenceData,
    config: SequentialTrainConfig | None = None,
    run_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
    semantic_ids: SemanticIds | None = None,
) -> SeqTrainResult:
    """Train on the leave-one-out training part, validate every `eval_every` epochs, restore the
    best checkpoint, and report its validation and test metrics.

    Batch order, dropout and sampled negatives follow `config.seed`; the initial weights are the
    caller's (seed torch before building the model for a fully reproducible run).
    `semantic_ids` (default: the model's `semantic_ids` attribute, if any) are saved with the run
    so that `load_sequential_run` can rebuild models that decode them.
    """
    cfg = config or SequentialTrainConfig()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    max_len = _model_max_len(model, cfg.max_len)
    mode = cfg.examples or getattr(model, "train_examples", "sequence")
    splits = leave_one_out(data)
    if len(splits.valid) == 0:
        raise ValueError(f"data set '{data.name}' has no user with 3 or more items: nothing to validate on")
    folder = Path(run_dir) if run_dir is not None else None
    if semantic_ids is None and isinstance(getattr(model, "semantic_ids", None), SemanticIds):
        semantic_ids = model.semantic_ids
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_setup(folder, model, data, cfg, semantic_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n_examples = count_next_item_examples(splits.train, mode)
    steps = -(-n_examples // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"data set '{data.name}' gives no training example (every training part is 1 item long)")

    def evaluate(split: str, what: str) -> dict[str, float]:
        examples = getattr(splits, split)
        return evaluate_sequential(model, examples, cfg.ks, cfg.eval_batch_size, max_len, device, reporter, what)

    best_state: dict[str, torch.Tensor] | None = None
    best_value: float | None = None
    best_epoch, wait, stopped_by = 0, 0, "epochs"
    history: list[dict[str, Any]] = []
    epoch_seconds: list[float] = []
    eval_seconds = 0.0
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        t0 = time.perf_counter()
        with reporter.task(f"epoch {epoch}", total=steps) as task:
            batches = next_item_batches(splits.train, max_len, cfg.batch_size, cfg.seed, epoch, mode, cfg.length_pool)
            for step, batch in enumerate(batches, start=1):
                batch = {name: value.to(device) for name, value in batch.items()}
                loss = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loss_sum += loss.detach() * len(batch["target"])
                seen += len(batch["target"])
                if step % 20 == 0 or step == steps:
                    task.update(completed=step, loss=float(loss_sum) / max(seen, 1))
                if step >= steps:
                    break
                if cfg.time_budget_s and time.perf_counter() - started > cfg.time_budget_s:
                    stopped_by = "time budget"
                    break
        epoch_seconds.append(time.perf_counter() - t0)
        if epoch % cfg.eval_every and epoch != cfg.epochs and stopped_by == "epochs":
            continue
        t1 = time.perf_counter()
        metrics = evaluate("valid", "validate")
        eval_seconds += time.perf_counter() - t1
        record: dict[str, Any] = {
            "epoch": epoch, "train_loss": float(loss_sum) / max(seen, 1), "epoch_seconds": epoch_seconds[-1],
            "examples_per_s": seen / max(epoch_seconds[-1], 1e-9), **{f"valid_{k}": v for k, v in metrics.items()},
        }  # fmt: skip
        history.append(record)
        if folder is not None:
            with (folder / METRICS).open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        current = metrics[cfg.monitor]
        improved = best_value is None or current - best_value > cfg.min_delta
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        reporter.log(f"epoch {epoch}: loss {record['train_loss']:.4f}  valid {shown}" + ("  [best]" if improved else ""))
        if improved:
            best_value, best_epoch, wait = current, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if folder is not None:
                _save_weights(folder, best_state)
        else:
            wait += 1
            if wait >= cfg.patience:
                stopped_by = "early stopping"
        if stopped_by != "epochs":
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    t1 = time.perf_counter()
    valid = evaluate("valid", "validate best")
    test = evaluate("test", "test")
    eval_seconds += time.perf_counter() - t1
    result = SeqTrainResult(
        best_epoch=best_epoch, epochs_run=len(epoch_seconds), valid=valid, test=test, history=history,
        epoch_seconds=epoch_seconds, train_seconds=sum(epoch_seconds), eval_seconds=eval_seconds,
        stopped_by=stopped_by, run_dir=folder,
    )  # fmt: skip
    if folder is not None:
        summary = {
            "model": model.name, "dataset": data.name, "best_epoch": best_epoch, "epochs_run": result.epochs_run,
            "monitor": cfg.monitor, "valid": valid, "test": test, "stopped_by": stopped_by,
            "train_seconds": result.train_seconds, "eval_seconds": eval_seconds,
            "mean_epoch_seconds": result.train_seconds / max(result.epochs_run, 1),
            "train_examples": n_examples, "valid_users": len(splits.valid), "test_users": len(splits.test),
            "parameters": sum(p.numel() for p in model.parameters()),
        }  # fmt: skip
        (folder / SUMMARY).write_text(json.dumps(summary, indent=1))
    return result


def load_sequential_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[SequentialModel, SequentialRunConfig]:
    """The trained model of a run directory (best checkpoint, eval mode) and its config."""
    folder = Path(run_dir)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a complete sequential run directory: {name} is missing")
    config = SequentialRunConfig.model_validate(load_yaml(folder / CONFIG))
    semantic_ids = None
    if (folder / SEMANTIC_IDS).is_file():
        with np.load(folder / SEMANTIC_IDS) as saved:
            semantic_ids = SemanticIds(codes=saved["codes"], vocab_sizes=tuple(int(v) for v in saved["vocab_sizes"]))
    model = build_sequential(config.model, config.num_items, config.model_params, semantic_ids=semantic_ids)
    state = torch.load(folder / WEIGHTS, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), config

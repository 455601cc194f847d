"""The CTR trainer: one loop for every model of the zoo.

Adam or Adagrad, L2 on embeddings and on weights, early stopping on a validation metric with
patience, LR decay on plateau, best-checkpoint restore, seeded determinism (same seed -> same
metrics on CPU), a JSON-lines metrics log and a final summary. The trainer reads only the
model's output contract (`logit`, optional `aux_loss`), never the model's kind.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agenticrs.data.cache import SplitArrays
from agenticrs.features.batching import LABEL, iterate_batches, num_batches
from agenticrs.features.pipeline import ProcessedDataset
from agenticrs.models.base import Model
from agenticrs.progress import SILENT, Reporter
from agenticrs.train.config import TrainConfig
from agenticrs.train.metrics import METRICS, compute_metrics, is_better
from agenticrs.train.run import Run


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


@torch.no_grad()
def predict_probs(
    model: Model,
    split: SplitArrays,
    batch_size: int = 16384,
    device: torch.device | str = "cpu",
    reporter: Reporter = SILENT,
    description: str = "predict",
) -> np.ndarray:
    """Click probabilities for every row of a split, in row order (float32)."""
    model.eval()
    out = np.empty(split.rows, dtype=np.float32)
    position = 0
    with reporter.task(description, total=split.rows) as task:
        for batch in iterate_batches(split, batch_size, label_index=None, device=device):
            probs = torch.sigmoid(model(batch)["logit"].float()).cpu().numpy()
            out[position : position + len(probs)] = probs
            position += len(probs)
            task.advance(len(probs))
    return out


def evaluate(
    model: Model,
    split: SplitArrays,
    metrics: list[str],
    batch_size: int = 16384,
    label_index: int = 0,
    device: torch.device | str = "cpu",
    reporter: Reporter = SILENT,
    description: str = "evaluate",
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on a labelled split (metrics that need groups are skipped when it has none)."""
    probs = predict_probs(model, split, batch_size, device, reporter, description)
    labels = np.asarray(split["labels"][:, label_index], dtype=np.float64)
    groups = np.asarray(split["group"]) if "group" in split else None
    usable = [m for m in metrics if groups is not None or "groups" not in METRICS[m].needs]
    return compute_metrics(usable, labels, probs.astype(np.float64), groups), probs


def make_optimizer(params: list, name: str, learning_rate: float) -> torch.optim.Optimizer:
    """Adam or Adagrad, fused where torch supports it: on CPU the fused Adam step is ~10x faster
    than the per-parameter loop, which matters with millions of embedding rows."""
    cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[name]
    try:
        return cls(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return cls(params, lr=learning_rate, foreach=True)


@dataclass
class TrainResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float = 0.0
    eval_samples_per_s: float = 0.0
    train_seconds: float = 0.0
    stopped_by: str = "epochs"


class Trainer:
    def __init__(self, config: TrainConfig, reporter: Reporter = SILENT) -> None:
        self.config = config
        self.reporter = reporter
        unknown = [m for m in [*config.metrics, config.monitor] if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")

    def _optimizer(self, model: Model) -> torch.optim.Optimizer:
        embedding_ids = {id(p) for p in model.embedding_parameters()}
        embeddings = [p for p in model.parameters() if id(p) in embedding_ids and p.requires_grad]
        others = [p for p in model.parameters() if id(p) not in embedding_ids and p.requires_grad]
        groups = [
            {"params": embeddings, "weight_decay": self.config.embedding_l2},
            {"params": others, "weight_decay": self.config.weight_l2},
        ]
        return make_optimizer([g for g in groups if g["params"]], self.config.optimizer, self.config.learning_rate)

    def _label_index(self, data: ProcessedDataset) -> int:
        labels = list(data.schema.labels)
        if self.config.label is None:
            return 0
        if self.config.label not in labels:
            raise ValueError(f"label '{self.config.label}' is not a label of the data set (labels: {labels})")
        return labels.index(self.config.label)

    def fit(self, model: Model, data: ProcessedDataset, run: Run | None = None) -> TrainResult:
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        model.to(device)
        optimizer = self._optimizer(model)
        label_index = self._label_index(data)
        train = data.split("train")
        model.prepare(train, label_index)
        valid = data.splits.get("valid")
        test = data.splits.get("test")
        steps = num_batches(train.rows, cfg.batch_size)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)

        best_state: dict[str, torch.Tensor] | None = None
        best_value: float | None = None
        best_epoch, wait, plateau = 0, 0, 0
        history: list[dict[str, Any]] = []
        trained_samples, train_seconds = 0, 0.0
        eval_samples, eval_seconds = 0, 0.0
        started = time.perf_counter()
        stopped_by = "epochs"

        for epoch in range(1, cfg.epochs + 1):
            model.train()
            loss_sum = torch.zeros((), device=device)
            seen = 0
            epoch_start = time.perf_counter()
            with self.reporter.task(f"epoch {epoch}", total=steps) as task:
                batches = iterate_batches(
                    train,
                    cfg.batch_size,
                    shuffle=True,
                    seed=cfg.seed,
                    epoch=epoch,
                    label_index=label_index,
                    device=device,
                    keep_requests=getattr(getattr(model, "inputs", None), "request_centric", False),
                )
                for step, batch in enumerate(batches, start=1):
                    output = model(batch)
                    loss = F.binary_cross_entropy_with_logits(output["logit"], batch[LABEL])
                    total = loss + output["aux_loss"] if "aux_loss" in output else loss
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    optimizer.step()
                    loss_sum += loss.detach() * len(batch[LABEL])
                    seen += len(batch[LABEL])
                    if step % cfg.log_every == 0 or step == steps:
                        task.advance(cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every,
                                     loss=float(loss_sum) / max(seen, 1))
                    if step >= steps:
                        break
                    if cfg.time_budget_s and time.perf_counter() - started > cfg.time_budget_s:
                        stopped_by = "time budget"
                        break
            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            trained_samples += seen
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / max(seen, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "train_samples_per_s": seen / max(epoch_seconds, 1e-9),
            }
            if valid is not None:
                t0 = time.perf_counter()
                metrics, _ = evaluate(
                    model, valid, cfg.metrics, cfg.eval_batch_size, label_index, device, self.reporter, "validate"
                )
                eval_seconds += time.perf_counter() - t0
                eval_samples += valid.rows
                record.update({f"valid_{k}": v for k, v in metrics.items()})
                current = metrics.get(cfg.monitor)
            else:
                current = -record["train_loss"] if cfg.monitor == "logloss" else None
            history.append(record)
            if run is not None:
                run.log(record)
            improved = best_value is None or (
                current is not None
                and is_better(cfg.monitor, current, best_value)
                and abs(current - best_value) > cfg.min_delta
            )
            shown = "  ".join(f"{k[6:]}={v:.5f}" for k, v in record.items() if k.startswith("valid_"))
            self.reporter.log(
                f"epoch {epoch}: train loss {record['train_loss']:.5f}  valid {shown}  lr {record['lr']:.2g}"
                + ("  [best]" if improved else "")
            )
            if improved:
                best_value, best_epoch, wait, plateau = current, epoch, 0, 0
                best_state = copy.deepcopy(model.state_dict())
                if run is not None:
                    run.save_weights(best_state)
            else:
                wait += 1
                plateau += 1
                if plateau >= cfg.lr_decay_patience:
                    plateau = 0
                    for group in optimizer.param_groups:
                        group["lr"] = max(group["lr"] * cfg.lr_decay_factor, cfg.min_lr)
                if wait >= cfg.patience:
                    stopped_by = "early stopping"
                    break
            if stopped_by == "time budget":
                break

        if best_state is not None:
            model.load_state_dict(best_state)
        valid_metrics: dict[str, float] = {}
        test_metrics: dict[str, float] | None = None
        if valid is not None:
            t0 = time.perf_counter()
            valid_metrics, _ = evaluate(
                model, valid, cfg.metrics, cfg.eval_batch_size, label_index, device, self.reporter, "validate best"
            )
            eval_seconds += time.perf_counter() - t0
            eval_samples += valid.rows
        if test is not None and "labels" in test:
            test_metrics, _ = evaluate(
                model, test, cfg.metrics, cfg.eval_batch_size, label_index, device, self.reporter, "test"
            )
        result = TrainResult(
            best_epoch=best_epoch,
            valid=valid_metrics,
            test=test_metrics,
            history=history,
            train_samples_per_s=trained_samples / max(train_seconds, 1e-9),
            eval_samples_per_s=eval_samples / max(eval_seconds, 1e-9) if eval_samples else 0.0,
            train_seconds=train_seconds,
            stopped_by=stopped_by,
        )
        if run is not None:
            if best_state is not None:
                run.save_weights(best_state)
            run.write_summary(
                {
                    "best_epoch": best_epoch,
                    "monitor": cfg.monitor,
                    "valid": valid_metrics,
                    "test": test_metrics,
                    "train_samples_per_s": result.train_samples_per_s,
                    "eval_samples_per_s": result.eval_samples_per_s,
                    "train_seconds": train_seconds,
                    "epochs_run": len(history),
                    "stopped_by": stopped_by,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "label": data.schema.labels[label_index],
                }
            )
        return result

"""The one training engine: every task (CTR, multi-task, sequential, generative) trains here.

A task (`Task`) supplies batches, the loss of a batch and its evaluation; the engine owns the
rest: optimisers over parameter groups, LR schedules (warm-up, cosine, plateau), gradient
clipping, step / time / epoch budgets, the evaluation cadence (every epoch or every
`eval_every_steps` optimiser steps), early stopping whose direction comes from the metric
registry, best-checkpoint restore (or the last weights, `restore_best: false`, as a stream wants;
`eval_at_start` makes the starting weights a candidate too, as fine-tuning wants),
resume from a checkpoint (mid-epoch, bit-exact on CPU), live
progress and the run directory. A new kind of model never brings its own loop.

Data parallel (`agenticrs.train.distributed`): when a torch.distributed group is initialised the
task's batches are this rank's, the step goes through DistributedDataParallel (gradients
all-reduced), every rank takes the group's smallest number of steps per epoch, rank 0 alone
evaluates, decides early stopping and writes the run directory, and broadcasts its decisions.

An undefined monitor (AUC on a validation split of one class: NaN) cannot rank evaluations, so
early stopping and the best checkpoint then follow the validation log loss (else the training
loss), as the log says; NaN metrics are written as null in `metrics.jsonl` and `summary.json`. A
non-finite training loss stops the run with a `NonFiniteError` (a `ValueError`: a setting to fix).

Phases: a model may define `begin_step(step)`, called before every optimiser step with the run's
1-based global step (a resumed run passes the same steps), and `evaluation_counts(step) -> bool`:
an evaluation that does not count is logged (`"counts": false`) but neither becomes the best
checkpoint, nor uses up patience, nor cuts a plateau learning rate. The generative CTR models pre-train for their first steps and
fine-tune after them this way, inside the one step budget (`agenticrs.models.gen_backbone`).

Resume: at each evaluation (and every `checkpoint_every_steps`) the engine writes `checkpoint.pt`
with the model, the optimisers, the schedule, the engine's counters, its history and every
random generator's state. Batches of an epoch depend only on (seed, epoch), so a resumed run skips
the steps already taken and continues exactly where the checkpoint was written.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device, rng_state, seed_everything, set_rng_state
from agenticrs.train import distributed
from agenticrs.train.config import TrainConfig
from agenticrs.train.metrics import NonFiniteError, metric_improves, metric_spec
from agenticrs.train.optim import LRSchedule, build_optimizers, current_lr
from agenticrs.train.run import Run

Batch = dict[str, torch.Tensor]
TRAIN_LOSS = "train_loss"  # what is monitored (lower is better) when a task has no validation split


class Task(Protocol):
    """What a kind of training tells the engine. Everything else is the engine's."""

    def prepare(self, model: nn.Module) -> None:
        """Once, before the first step (e.g. statistics of the training split the model keeps)."""

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one full pass over the training data."""

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The epoch's batches (a function of the seed and `epoch` only), from batch `skip` on."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """(scalar loss to minimise, examples in the batch). `model` is what the engine trains:
        the model, or the task's optional `train_module(model)` (a module whose forward computes
        what the loss needs, so that DistributedDataParallel sees the parameters the loss uses),
        DDP-wrapped in a data-parallel run."""

    def has_validation(self) -> bool:
        """Whether `evaluate(model, "valid")` can be called."""

    def evaluate(self, model: nn.Module, split: str, reporter: Reporter) -> dict[str, float] | None:
        """Metrics of `split` ("valid" or "test"); None when the task has no such split."""


@dataclass
class TrainResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float = 0.0
    eval_samples_per_s: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped_by: str = "epochs"  # epochs | patience | step budget | time budget
    best_step: int = 0
    steps: int = 0
    epochs_run: int = 0
    monitor: str = ""
    epoch_seconds: list[float] = field(default_factory=list)
    monitor_fallback: str | None = None  # followed instead of `monitor` when that was undefined


@dataclass
class _State:
    """The engine's counters: everything besides tensors that a checkpoint must restore."""

    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    best_value: float | None = None
    best_step: int = 0
    best_epoch: int = 0
    wait: int = 0
    loss_sum: float = 0.0
    loss_seen: int = 0
    trained_samples: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str | None = None
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch
    this_epoch_seconds: float = 0.0
    # what early stopping follows instead of the monitor when the monitor is undefined (NaN) on
    # the validation split (AUC on one class): a validation loss, or the running training loss
    monitor_fallback: str | None = None

    def add_train_time(self, seconds: float) -> None:
        self.train_seconds += seconds
        self.this_epoch_seconds += seconds

    def close_epoch(self) -> None:
        self.epoch_seconds.append(self.this_epoch_seconds)
        self.this_epoch_seconds = 0.0


def _undefined(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fallback_metric(monitor: str, metrics: dict[str, float]) -> str:
    """What early stopping follows when `monitor` is undefined on the validation split: the
    validation log loss (or Brier score) of the same head, of all heads, else the training loss."""
    head = monitor.rsplit("/", 1)[0] + "/" if "/" in monitor else ""
    for name in (f"{head}logloss", f"{head}brier", "logloss", "brier"):
        if name in metrics and not _undefined(metrics[name]):
            return name
    return TRAIN_LOSS


def _shown(metric: str) -> str:
    return "the training loss" if metric == TRAIN_LOSS else f"valid {metric}"


class Engine:
    """Trains a model on a task under one `TrainConfig`."""

    def __init__(self, config: TrainConfig, reporter: Reporter = SILENT) -> None:
        self.config = config
        self.reporter = reporter
        self._best: dict[str, torch.Tensor] | None = None
        self._dist = distributed.DistContext()
        self._device = torch.device("cpu")

    # -- public -----------------------------------------------------------------------------
    def fit(self, model: nn.Module, task: Task, run: Run | None = None, resume: bool = False) -> TrainResult:
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        device = resolve_device(cfg.device)
        model.to(device)
        ctx = self._dist = distributed.current()
        self._device = device
        if ctx.active:
            if resume:
                raise ValueError("a data-parallel run cannot resume from a checkpoint; start it again")
            run = run if ctx.is_main else None  # the run directory is written once, by rank 0
        has_valid = task.has_validation()
        monitor = cfg.monitor if has_valid else TRAIN_LOSS
        metric_spec(monitor)  # an unknown monitor fails now, not after an epoch
        task.prepare(model)
        seed_everything(cfg.seed)
        # a task whose loss is not the model's forward (sequential: `model.loss`) trains a module whose
        # forward is that loss, so that DDP sees the parameters it uses; the parameters are the model's
        train_module = getattr(task, "train_module", None)
        trained = train_module(model) if train_module is not None else model
        train_model = distributed.wrap(trained, device)  # DDP: rank 0's weights everywhere, gradients all-reduced
        optimizers = build_optimizers(model, cfg)
        per_epoch = task.steps_per_epoch()
        if cfg.max_steps_per_epoch:
            per_epoch = min(per_epoch, cfg.max_steps_per_epoch)
        per_epoch = distributed.all_min(per_epoch, device)  # every rank takes every step
        if per_epoch < 1:
            raise ValueError("the task has no training batch")
        budget = min(cfg.max_steps or math.inf, cfg.epochs * per_epoch)
        schedule = LRSchedule(cfg, total_steps=int(budget))
        state = _State()
        best_state: dict[str, torch.Tensor] | None = None
        if resume:
            if run is None:
                raise ValueError("resume needs the run directory that holds the checkpoint")
            state, best_state = self._restore(run, model, optimizers, schedule, device)
            self.reporter.log(f"resumed at step {state.global_step} (epoch {state.epoch})")
        elif run is not None:
            run.reset_log()

        self._best = best_state
        started = time.perf_counter() - state.train_seconds - state.eval_seconds
        steps_capped = cfg.max_steps is not None and cfg.max_steps < cfg.epochs * per_epoch

        begin_step = getattr(model, "begin_step", None)

        def evaluate(epoch: int | None = None) -> None:
            self._evaluate(model, task, run, state, schedule, optimizers, monitor, has_valid, epoch)

        if cfg.eval_at_start and not resume and has_valid:
            evaluate(0)  # the starting weights are a candidate for the best checkpoint (fine-tuning)
        while state.stopped_by is None and state.epoch <= cfg.epochs:
            train_model.train()
            clock = time.perf_counter()
            with self.reporter.task(f"epoch {state.epoch}", total=per_epoch) as progress:
                progress.update(completed=state.step_in_epoch)
                for batch in task.batches(state.epoch, skip=state.step_in_epoch):
                    if state.step_in_epoch >= per_epoch:
                        break
                    state.global_step += 1
                    state.step_in_epoch += 1
                    if begin_step is not None:  # a model with phases (generative pre-training, then fine-tuning)
                        begin_step(state.global_step)
                    self._step(train_model, task, batch, optimizers, schedule, state)
                    if state.step_in_epoch % cfg.log_every == 0 or state.step_in_epoch == per_epoch:
                        progress.update(completed=state.step_in_epoch, loss=state.loss_sum / max(state.loss_seen, 1))
                    if steps_capped and state.global_step >= budget:
                        state.stopped_by = "step budget"
                    elif cfg.time_budget_s is not None and self._over_time(started):
                        state.stopped_by = "time budget"
                    due = cfg.eval_every_steps is not None and state.global_step % cfg.eval_every_steps == 0
                    checkpoint_due = cfg.checkpoint_every_steps is not None and (
                        state.global_step % cfg.checkpoint_every_steps == 0)
                    if due or state.stopped_by is not None or (checkpoint_due and run is not None):
                        state.add_train_time(time.perf_counter() - clock)
                        if due or state.stopped_by is not None:
                            evaluate()
                            train_model.train()
                        else:
                            self._checkpoint(run, model, optimizers, schedule, state)  # type: ignore[arg-type]
                        clock = time.perf_counter()
                    if state.stopped_by is not None:
                        break
            if state.stopped_by is not None:
                state.close_epoch()
                break
            state.add_train_time(time.perf_counter() - clock)
            state.close_epoch()
            finished = state.epoch
            state.epoch, state.step_in_epoch = finished + 1, 0
            last = finished >= cfg.epochs
            if cfg.eval_every_steps is None:
                if finished % cfg.eval_every_epochs == 0 or last:
                    evaluate(finished)
            elif last and (not state.history or state.history[-1]["step"] != state.global_step):
                evaluate(finished)
        stopped_by = state.stopped_by or "epochs"
        state.stopped_by = stopped_by
        best_state = self._best
        if best_state is not None:
            model.load_state_dict(best_state)
        valid_metrics: dict[str, float] = {}
        if has_valid and ctx.is_main:
            t0 = time.perf_counter()
            valid_metrics = task.evaluate(model, "valid", self.reporter) or {}
            state.eval_seconds += time.perf_counter() - t0
        test_metrics = task.evaluate(model, "test", self.reporter) if ctx.is_main else None
        result = TrainResult(
            best_epoch=state.best_epoch,
            valid=valid_metrics,
            test=test_metrics,
            history=state.history,
            train_samples_per_s=state.trained_samples / max(state.train_seconds, 1e-9),
            eval_samples_per_s=state.eval_samples / max(state.eval_seconds, 1e-9) if state.eval_samples else 0.0,
            train_seconds=state.train_seconds,
            eval_seconds=state.eval_seconds,
            stopped_by=stopped_by,
            best_step=state.best_step,
            steps=state.global_step,
            epochs_run=len(state.epoch_seconds),
            monitor=monitor,
            epoch_seconds=list(state.epoch_seconds),
            monitor_fallback=state.monitor_fallback,
        )
        if run is not None:
            # a finished run always holds weights: the best ones, or the last if none ever improved
            run.save_weights(best_state if best_state is not None else model.state_dict())
            extra = getattr(task, "summary", None)
            run.write_summary({
                "best_epoch": result.best_epoch, "best_step": result.best_step, "monitor": monitor,
                **({"monitor_fallback": state.monitor_fallback} if state.monitor_fallback else {}),
                "valid": result.valid, "test": result.test, "stopped_by": stopped_by,
                "steps": result.steps, "epochs_run": result.epochs_run,
                "train_samples_per_s": result.train_samples_per_s, "eval_samples_per_s": result.eval_samples_per_s,
                "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
                **(extra(model) if extra is not None else {}),
            })  # fmt: skip
            run.remove_checkpoint()
        return result

    # -- one step, evaluation, early stopping, checkpoints -----------------------------------
    def _step(
        self, model: nn.Module, task: Task, batch: Batch, optimizers: list[torch.optim.Optimizer],
        schedule: LRSchedule, state: _State,
    ) -> None:  # fmt: skip
        schedule.apply(optimizers, state.global_step)
        loss, examples = task.loss(model, batch)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteError(
                f"the training loss is {float(loss.detach())} at step {state.global_step} (epoch {state.epoch}); "
                "lower the learning rate or set train.grad_clip"
            )
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        for optimizer in optimizers:
            optimizer.step()
        state.loss_sum += float(loss.detach()) * examples
        state.loss_seen += examples
        state.trained_samples += examples * self._dist.world_size  # every rank trained a batch this size

    def _evaluate(
        self, model: nn.Module, task: Task, run: Run | None, state: _State, schedule: LRSchedule,
        optimizers: list[torch.optim.Optimizer], monitor: str, has_valid: bool, epoch: int | None = None,
    ) -> None:  # fmt: skip
        cfg = self.config
        record: dict[str, Any] = {
            "epoch": epoch if epoch is not None else state.epoch,
            "step": state.global_step,
            TRAIN_LOSS: state.loss_sum / max(state.loss_seen, 1),
            "lr": current_lr(optimizers),
            "train_samples_per_s": state.trained_samples / max(state.train_seconds, 1e-9),
        }
        state.loss_sum, state.loss_seen = 0.0, 0
        # what the model measured while training since the last evaluation (e.g. GRPO's reward and
        # the share of groups whose advantages vanish), recorded beside the loss
        stats = getattr(model, "training_stats", None)
        record.update({f"train_{k}": v for k, v in (stats() if callable(stats) else {}).items()})
        if not self._dist.is_main:
            self._follow_main(model, state, schedule, record)
            return
        if has_valid:
            t0 = time.perf_counter()
            metrics = task.evaluate(model, "valid", self.reporter) or {}
            state.eval_seconds += time.perf_counter() - t0
            state.eval_samples += int(getattr(task, "split_rows", lambda _split: 0)("valid"))
            record.update({f"valid_{k}": v for k, v in metrics.items()})
            if metrics.get(monitor) is None:
                raise ValueError(f"monitor '{monitor}' is not among the task's metrics {sorted(metrics)}")
            if state.monitor_fallback is None and _undefined(metrics[monitor]):
                state.monitor_fallback = _fallback_metric(monitor, metrics)
                state.best_value = None  # it held values of the monitor, not of the fallback
                self.reporter.log(
                    f"warning: valid {monitor} is undefined (nan: one class only?); early stopping and the best "
                    f"checkpoint follow {_shown(state.monitor_fallback)} instead"
                )
            watched = state.monitor_fallback or monitor
            current = record[TRAIN_LOSS] if watched == TRAIN_LOSS else metrics[watched]
        else:
            watched, current = monitor, record[TRAIN_LOSS]
        counts = getattr(model, "evaluation_counts", lambda _step: True)(state.global_step)
        improved = counts and metric_improves(watched, current, state.best_value, cfg.min_delta)
        record["improved"] = improved
        if not counts:
            record["counts"] = False  # e.g. during generative pre-training: no best checkpoint, no patience
        state.history.append(record)
        shown = "  ".join(f"{k[6:]}={v:.5f}" for k, v in record.items() if k.startswith("valid_"))
        self.reporter.log(
            f"epoch {record['epoch']} step {state.global_step}: train loss {record[TRAIN_LOSS]:.5f}"
            + (f"  valid {shown}" if shown else "") + f"  lr {record['lr']:.2g}" + ("  [best]" if improved else "")
        )
        if improved:
            state.best_value, state.best_step, state.best_epoch, state.wait = current, state.global_step, record["epoch"], 0
            if cfg.restore_best:
                self._best = copy.deepcopy(model.state_dict())
                if run is not None:
                    run.save_weights(self._best)
        elif counts:
            state.wait += 1
            if state.wait >= cfg.patience and state.stopped_by is None:
                state.stopped_by = "patience"
        # rank 0 decides; the other ranks follow (same schedule cut, same stop, same best step)
        distributed.broadcast_from_main([float(improved), float(state.stopped_by == "patience")], self._device)
        if counts:
            schedule.after_evaluation(improved)
        if run is not None:
            run.log(record)  # the run writer writes an undefined metric as null
            self._checkpoint(run, model, optimizers, schedule, state)

    def _follow_main(self, model: nn.Module, state: _State, schedule: LRSchedule, record: dict[str, Any]) -> None:
        """A rank other than 0 at an evaluation: take rank 0's verdict instead of evaluating."""
        improved_flag, stop_flag = distributed.broadcast_from_main([0.0, 0.0], self._device)
        improved = bool(improved_flag)
        counts = getattr(model, "evaluation_counts", lambda _step: True)(state.global_step)
        record["improved"] = improved
        state.history.append(record)
        if improved:
            state.best_step, state.best_epoch, state.wait = state.global_step, record["epoch"], 0
            if self.config.restore_best:
                self._best = copy.deepcopy(model.state_dict())
        elif counts:
            state.wait += 1
        if stop_flag and state.stopped_by is None:
            state.stopped_by = "patience"
        if counts:
            schedule.after_evaluation(improved)

    def _over_time(self, started: float) -> bool:
        """Whether the time budget is spent: rank 0's clock decides for every rank."""
        over = time.perf_counter() - started > (self.config.time_budget_s or math.inf)
        return bool(distributed.broadcast_from_main([float(over)], self._device)[0])

    def _checkpoint(
        self, run: Run, model: nn.Module, optimizers: list[torch.optim.Optimizer], schedule: LRSchedule, state: _State
    ) -> None:
        run.save_checkpoint({
            "model": model.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            "schedule": schedule.state_dict(),
            "engine": asdict(state),
            "rng": rng_state(),
            "config": self.config.model_dump(mode="json"),
        })  # fmt: skip

    def _restore(
        self, run: Run, model: nn.Module, optimizers: list[torch.optim.Optimizer], schedule: LRSchedule,
        device: torch.device,
    ) -> tuple[_State, dict[str, torch.Tensor] | None]:  # fmt: skip
        # read on the CPU: generator states must stay CPU tensors, and load_state_dict moves the
        # model's and the optimisers' tensors to wherever their parameters live
        saved = run.load_checkpoint("cpu")
        if saved is None:
            raise FileNotFoundError(f"{run.folder} has no checkpoint to resume from")
        if saved["config"] != self.config.model_dump(mode="json"):
            raise ValueError(f"{run.folder}: the checkpoint was written under another training config")
        model.load_state_dict(saved["model"])
        if len(saved["optimizers"]) != len(optimizers):
            raise ValueError(f"{run.folder}: the checkpoint has {len(saved['optimizers'])} optimisers, the run {len(optimizers)}")
        for optimizer, optimizer_state in zip(optimizers, saved["optimizers"], strict=True):
            optimizer.load_state_dict(optimizer_state)
        schedule.load_state_dict(saved["schedule"])
        state = _State(**saved["engine"])
        set_rng_state(saved["rng"])
        run.rewrite_log(state.history)
        best = run.load_weights(device) if run.has_weights() and state.best_step and self.config.restore_best else None
        return state, best

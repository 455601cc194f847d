"""The one engine: early-stopping direction from the metric registry (with and without a
validation split), step-based cadence and patience, budgets, schedules, parameter groups, exact
resume mid-epoch, multi-task batches with missing labels, and the sequential task on it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.batching import LABELS, iterate_batches
from agenticrs.features.pipeline import process_dataset
from agenticrs.models.base import MODELS, build_model, register
from agenticrs.train.config import ParamGroupConfig, TrainConfig, with_model_defaults
from agenticrs.train.ctr import CTRTask
from agenticrs.train.engine import TRAIN_LOSS, Engine
from agenticrs.train.metrics import METRICS, compute_metrics, metric_spec
from agenticrs.train.optim import LRSchedule, build_optimizers
from agenticrs.train.run import CHECKPOINT, Run
from agenticrs.train.trainer import Trainer


class ScriptedTask:
    """A task whose training loss and validation metric follow a script (one value per step /
    per evaluation), on a one-parameter model: the engine's bookkeeping in isolation."""

    def __init__(self, losses: list[float], metric: str | None = None, values: list[float] | None = None,
                 steps_per_epoch: int = 1) -> None:  # fmt: skip
        self.losses, self.metric, self.values = losses, metric, values or []
        self.per_epoch = steps_per_epoch
        self.step = 0
        self.evaluations = 0

    def prepare(self, model: nn.Module) -> None:
        pass

    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(skip, self.per_epoch):
            yield {}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        value = self.losses[min(self.step, len(self.losses) - 1)]
        self.step += 1
        return model.weight.sum() * 0.0 + value, 1

    def has_validation(self) -> bool:
        return self.metric is not None

    def evaluate(self, model: nn.Module, split: str, reporter=None) -> dict[str, float] | None:
        if self.metric is None or split != "valid":
            return None
        value = self.values[min(self.evaluations, len(self.values) - 1)]
        self.evaluations += 1
        return {self.metric: value}


def _one_param() -> nn.Module:
    return nn.Linear(1, 1, bias=False)


def _monitorable() -> list[str]:
    names = []
    for name, metric in METRICS.items():
        if name == TRAIN_LOSS:
            continue
        names.append(f"{name}@10" if metric.at_k else name)
    return names


@pytest.mark.parametrize("monitor", _monitorable())
def test_early_stopping_follows_each_registered_metric_direction(monitor: str) -> None:
    metric, _ = metric_spec(monitor)
    # evaluation 2 is the best in the metric's own direction, then it gets worse twice
    if metric.target is not None:
        values = [metric.target + 0.3, metric.target + 0.01, metric.target - 0.2, metric.target + 0.4]
    elif metric.higher_is_better:
        values = [0.5, 0.8, 0.7, 0.6]
    else:
        values = [0.5, 0.2, 0.3, 0.4]
    task = ScriptedTask([0.1] * 10, monitor, values)
    config = TrainConfig(monitor=monitor, patience=2, epochs=10, lr_schedule="constant", metrics=[])
    result = Engine(config).fit(_one_param(), task)
    assert result.best_epoch == 2 and result.stopped_by == "patience" and result.epochs_run == 4
    assert [r["improved"] for r in result.history] == [True, True, False, False]


@pytest.mark.parametrize("monitor", [*_monitorable()])
def test_without_validation_a_rising_training_loss_is_never_an_improvement(monitor: str) -> None:
    # the old bug: with monitor=logloss and no valid split, -train_loss was compared as a logloss
    task = ScriptedTask([0.30, 0.40, 0.50, 0.60, 0.70])
    config = TrainConfig(monitor=monitor, patience=2, epochs=5, lr_schedule="constant", metrics=[])
    result = Engine(config).fit(_one_param(), task)
    assert result.monitor == TRAIN_LOSS
    assert result.best_epoch == 1 and result.stopped_by == "patience" and len(result.history) == 3


def test_without_validation_a_falling_training_loss_keeps_improving() -> None:
    task = ScriptedTask([0.9, 0.8, 0.7, 0.6])
    result = Engine(TrainConfig(monitor="logloss", patience=1, epochs=4, metrics=[])).fit(_one_param(), task)
    assert result.best_epoch == 4 and result.stopped_by == "epochs"


def test_cadence_and_patience_count_optimiser_steps() -> None:
    # 10 steps per epoch, an evaluation every 3 steps: evaluations at steps 3, 6, 9, 12, ...
    task = ScriptedTask([0.1] * 100, "auc", [0.6, 0.7, 0.65, 0.64, 0.99], steps_per_epoch=10)
    config = TrainConfig(eval_every_steps=3, patience=2, epochs=5, metrics=[], lr_schedule="constant")
    result = Engine(config).fit(_one_param(), task)
    assert [r["step"] for r in result.history] == [3, 6, 9, 12]
    assert result.best_step == 6 and result.stopped_by == "patience" and result.steps == 12


def test_eval_at_start_lets_the_starting_weights_be_the_best_checkpoint() -> None:
    # fine-tuning that only makes things worse: the run ends with the weights it started from
    class Moving(ScriptedTask):  # every step moves the weight (the scripted loss alone has no gradient)
        def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
            return (model.weight.sum() - 5.0) ** 2, 1

    model = _one_param()
    start = model.weight.detach().clone()
    task = Moving([1.0], "auc", [0.8, 0.7, 0.6, 0.5], steps_per_epoch=10)
    config = TrainConfig(eval_every_steps=5, patience=2, epochs=5, metrics=[], lr_schedule="constant",
                         learning_rate=0.1, eval_at_start=True)  # fmt: skip
    result = Engine(config).fit(model, task)
    assert [r["step"] for r in result.history] == [0, 5, 10] and result.best_step == 0
    assert result.stopped_by == "patience" and torch.equal(model.weight, start)
    assert result.steps == 10  # ten steps were taken (each moved the weight) and undone
    # without it the first evaluation after a step is the best the run can return
    moved = Engine(config.model_copy(update={"eval_at_start": False})).fit(_one_param(),
                                                                           ScriptedTask([1.0] * 100, "auc", [0.7, 0.6, 0.5], 10))  # fmt: skip
    assert moved.best_step == 5


def test_step_budget_stops_mid_epoch_and_is_recorded() -> None:
    task = ScriptedTask([0.1] * 100, "auc", [0.5 + 0.01 * i for i in range(50)], steps_per_epoch=10)
    result = Engine(TrainConfig(max_steps=25, epochs=10, metrics=[], eval_every_steps=10)).fit(_one_param(), task)
    assert result.steps == 25 and result.stopped_by == "step budget"
    assert [r["step"] for r in result.history] == [10, 20, 25]
    # the epoch count alone ends a run as "epochs"
    task = ScriptedTask([0.1] * 100, "auc", [0.5 + 0.01 * i for i in range(50)], steps_per_epoch=10)
    result = Engine(TrainConfig(max_steps=1000, epochs=2, metrics=[])).fit(_one_param(), task)
    assert result.steps == 20 and result.stopped_by == "epochs"


def test_warmup_then_cosine_and_plateau_schedules() -> None:
    config = TrainConfig(learning_rate=1.0, warmup_steps=4, lr_schedule="cosine", min_lr=0.0, max_steps=14)
    schedule = LRSchedule(config, total_steps=14)
    assert [schedule.factor(s) for s in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert schedule.factor(9) == pytest.approx(0.5)  # half-way through the cosine part
    assert schedule.factor(14) == pytest.approx(0.0, abs=1e-12)
    plateau = LRSchedule(TrainConfig(learning_rate=1.0, lr_decay_factor=0.5, lr_decay_patience=2, min_lr=0.2), None)
    cuts = [plateau.after_evaluation(improved) for improved in (False, False, True, False, False, False, False)]
    assert cuts == [False, True, False, False, True, False, True]
    assert plateau.factor(100) == pytest.approx(0.2)  # 1 -> 0.5 -> 0.25 -> 0.125, floored at min_lr / lr


def test_param_groups_mix_optimisers_and_settings(tiny_synthetic) -> None:
    model = build_model("deepfm", tiny_synthetic.schema, smoke=True)
    config = TrainConfig(
        embedding_l2=0.01, weight_l2=0.001,
        param_groups=[ParamGroupConfig(match=r"embedding\.embedding\.weight", optimizer="adagrad", learning_rate=0.05)],
    )  # fmt: skip
    optimizers = build_optimizers(model, config)
    kinds = sorted(type(o).__name__ for o in optimizers)
    assert kinds == ["Adagrad", "Adam"]
    adagrad = next(o for o in optimizers if isinstance(o, torch.optim.Adagrad))
    assert adagrad.param_groups[0]["lr"] == 0.05 and adagrad.param_groups[0]["weight_decay"] == 0.01
    adam = next(o for o in optimizers if isinstance(o, torch.optim.Adam))
    decays = {g["group"]: g["weight_decay"] for g in adam.param_groups}
    assert decays["weights"] == 0.001
    counted = sum(p.numel() for o in optimizers for g in o.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())


def test_gradient_clipping_bounds_the_update(tiny_synthetic) -> None:
    def first_step_change(clip: float | None) -> float:
        torch.manual_seed(0)
        model = build_model("lr", tiny_synthetic.schema, smoke=True)
        before = [p.detach().clone() for p in model.parameters()]
        config = TrainConfig(optimizer="sgd", learning_rate=1.0, grad_clip=clip, max_steps=1, batch_size=256, metrics=["auc"])
        Trainer(config).fit(model, tiny_synthetic)
        return math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before, strict=True)))

    assert first_step_change(1e-3) == pytest.approx(1e-3, rel=1e-3)
    assert first_step_change(None) > 1e-2


def test_non_finite_loss_is_a_clear_error() -> None:
    task = ScriptedTask([0.1, float("nan")])
    with pytest.raises(FloatingPointError, match="step 2"):
        Engine(TrainConfig(epochs=3, metrics=[])).fit(_one_param(), task)


class _Crash(Exception):
    pass


class CrashingTask(CTRTask):
    """The CTR task, killed after a given number of steps (a process dying mid-epoch)."""

    def __init__(self, *args, crash_after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after, self.done = crash_after, 0

    def loss(self, model, batch):
        if self.done == self.crash_after:
            raise _Crash()
        self.done += 1
        return super().loss(model, batch)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")])])
def test_resume_mid_epoch_gives_the_same_final_weights(tiny_synthetic, tmp_path: Path, device: str) -> None:
    # deepfm with dropout: the resumed run must also continue the random generators exactly (on a
    # GPU the checkpoint is read on the CPU and moved: generator states must stay CPU tensors)
    config = TrainConfig(batch_size=512, epochs=2, eval_every_steps=7, checkpoint_every_steps=5, patience=5,
                         eval_batch_size=4096, seed=3, metrics=["auc", "logloss"], device=device)  # fmt: skip
    params = {"dropout": 0.2}

    def fresh():
        torch.manual_seed(0)
        return build_model("deepfm", tiny_synthetic.schema, params, smoke=True)

    whole = fresh()
    full_run = Run.at(tmp_path / "whole")
    expected = Trainer(config).fit(whole, tiny_synthetic, full_run)
    assert expected.steps > 20  # the crash below falls inside the first epoch, after a checkpoint

    crashed_run = Run.at(tmp_path / "crashed")
    model = fresh()
    task = CrashingTask(tiny_synthetic, config, model, crash_after=17)
    with pytest.raises(_Crash):
        Engine(config).fit(model, task, crashed_run)
    assert (crashed_run.folder / CHECKPOINT).is_file()
    logged = crashed_run.metrics_log()
    assert [r["step"] for r in logged] == [7, 14]  # what was recorded survives the crash

    resumed_model = fresh()  # the process restarts: a new model, the checkpoint brings the state back
    result = Trainer(config).fit(resumed_model, tiny_synthetic, crashed_run, resume=True)
    assert result.steps == expected.steps and result.best_step == expected.best_step
    assert result.stopped_by == expected.stopped_by
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        if device == "cpu":
            assert torch.equal(a, b), name
        else:  # GPU embedding backward sums with atomics: equal up to float rounding, not bit for bit
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    if device == "cpu":
        assert result.valid == expected.valid
    assert [r["step"] for r in crashed_run.metrics_log()] == [r["step"] for r in full_run.metrics_log()]
    assert not (crashed_run.folder / CHECKPOINT).exists()  # removed once training ended


def test_resume_refuses_another_config(tiny_synthetic, tmp_path: Path) -> None:
    config = TrainConfig(batch_size=512, epochs=1, eval_every_steps=5, eval_batch_size=4096, metrics=["auc"])
    run = Run.at(tmp_path / "r")
    model = build_model("lr", tiny_synthetic.schema, smoke=True)
    with pytest.raises(_Crash):
        Engine(config).fit(model, CrashingTask(tiny_synthetic, config, model, crash_after=6), run)
    with pytest.raises(ValueError, match="another training config"):
        Trainer(config.model_copy(update={"learning_rate": 0.5})).fit(model, tiny_synthetic, run, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(config).fit(model, tiny_synthetic, Run.at(tmp_path / "empty"), resume=True)


# -- multi-task ----------------------------------------------------------------------------------
def _two_label_data(tmp_path: Path, rows: int = 3000):
    rng = np.random.default_rng(0)
    user = rng.integers(0, 50, rows)
    item = rng.integers(0, 40, rows)
    click = (rng.random(rows) < 0.2 + 0.5 * (item % 2)).astype(int)
    buy = np.where(click == 1, (rng.random(rows) < 0.1 + 0.6 * (user % 2)).astype(float), np.nan)
    lines = ["user,item,click,buy"] + [
        f"u{u},i{i},{c},{'' if np.isnan(b) else int(b)}" for u, i, c, b in zip(user, item, click, buy, strict=True)
    ]
    files = {}
    for split, part in (("train", slice(0, 2000)), ("valid", slice(2000, 2500)), ("test", slice(2500, rows))):
        path = tmp_path / f"{split}.csv"
        path.write_text("\n".join([lines[0], *lines[1:][part]]) + "\n")
        files[split] = str(path)
    spec = DatasetSpec.from_dict({
        "name": "two-labels", "files": files, "group_key": "user",
        "fields": [{"name": "click", "kind": "label"}, {"name": "buy", "kind": "label", "optional": True},
                   {"name": "user", "kind": "categorical"}, {"name": "item", "kind": "categorical"}],
    })  # fmt: skip
    return process_dataset(spec, tmp_path / "cache"), click, buy


def test_a_missing_required_label_is_still_an_error(tmp_path: Path) -> None:
    from agenticrs.data.errors import DataError

    path = tmp_path / "train.csv"
    path.write_text("user,click\nu1,1\nu2,\n")
    spec = DatasetSpec.from_dict({"name": "bad", "files": {"train": str(path)},
                                  "fields": [{"name": "click", "kind": "label"}, {"name": "user", "kind": "categorical"}]})
    with pytest.raises(DataError, match="row 2.*click.*missing|missing.*row 2"):
        process_dataset(spec, tmp_path / "cache")


def test_multi_label_batches_keep_missing_labels_as_nan(tmp_path: Path) -> None:
    data, click, buy = _two_label_data(tmp_path)
    train = data.split("train")
    batch = next(iterate_batches(train, 4096, label_index=[0, 1]))
    labels = batch[LABELS].numpy()
    assert labels.shape == (2000, 2)
    np.testing.assert_array_equal(labels[:, 0], click[:2000])
    np.testing.assert_array_equal(np.isnan(labels[:, 1]), np.isnan(buy[:2000]))


def test_multi_task_training_masks_missing_labels_and_reports_each_head(tmp_path: Path) -> None:
    data, click, buy = _two_label_data(tmp_path)
    torch.manual_seed(0)
    model = build_model("mmoe", data.schema, {"embedding_dim": 8, "expert_units": [16], "tower_units": [8]})
    assert model.output_labels == ["click", "buy"]
    config = TrainConfig(batch_size=256, epochs=15, learning_rate=0.01, metrics=["auc", "logloss"], patience=3,
                         labels=["click", "buy"], task_weights={"buy": 2.0})  # fmt: skip
    task = CTRTask(data, config, model)
    batch = next(task.batches(1))
    loss, _ = task.loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    result = Trainer(config).fit(model, data)
    test = result.test
    assert set(test) >= {"click/auc", "buy/auc", "auc", "click/logloss", "buy/logloss"}
    assert test["auc"] == pytest.approx((test["click/auc"] + test["buy/auc"]) / 2)
    assert test["click/auc"] > 0.7 and test["buy/auc"] > 0.65  # both planted signals are learned
    # the buy head's metrics are over the rows that have a buy label only, exactly
    from agenticrs.train.ctr import predict_probs

    probs = predict_probs(model, data.split("test"))
    present = ~np.isnan(buy[2500:])
    expected = compute_metrics(["auc"], buy[2500:][present], probs[present, 1].astype(np.float64))
    assert test["buy/auc"] == pytest.approx(expected["auc"], abs=1e-12)


def test_multi_task_label_errors(tmp_path: Path) -> None:
    data, _, _ = _two_label_data(tmp_path)
    model = build_model("mmoe", data.schema, {"embedding_dim": 4, "expert_units": [8], "tower_units": [4]})
    with pytest.raises(ValueError, match="predicts labels"):
        CTRTask(data, TrainConfig(labels=["buy", "click"]), model)
    with pytest.raises(ValueError, match="task_weights"):
        CTRTask(data, TrainConfig(labels=["click", "buy"], task_weights={"cart": 1.0}), model)
    single = build_model("lr", data.schema, smoke=True)
    task = CTRTask(data, TrainConfig(labels=["click", "buy"]), single)
    with pytest.raises(ValueError, match="one column per label"):
        task.loss(single, next(task.batches(1)))
    with pytest.raises(ValueError, match="either `label`"):
        TrainConfig(label="click", labels=["click"])


# -- registry and model defaults -------------------------------------------------------------
def test_the_model_registry_rejects_a_duplicate_name_across_tasks() -> None:
    with pytest.raises(ValueError, match="'sasrec' is already registered"):

        @register("sasrec")
        class Impostor(nn.Module):  # noqa: F841
            pass

    assert "sasrec" in MODELS and MODELS.get("sasrec").task == "sequential"


def test_model_training_defaults_fill_only_what_the_user_left_unset() -> None:
    user = TrainConfig(patience=7)
    merged = with_model_defaults(user, {"patience": 4, "warmup_steps": 100, "lr_schedule": "cosine"})
    assert merged.patience == 7 and merged.warmup_steps == 100 and merged.lr_schedule == "cosine"
    with pytest.raises(ValueError, match="unknown settings"):
        with_model_defaults(user, {"warmup": 3})

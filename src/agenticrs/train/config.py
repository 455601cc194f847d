"""Typed training configuration (YAML-loadable, `--set train.x=y` overridable).

One `TrainConfig` drives the one engine (`agenticrs.train.engine`) for every task; a task adds
only what is its own (`SequentialTrainConfig` adds cut-offs and history settings). Patience and
the plateau schedule count *evaluations*; evaluations happen every epoch or every
`eval_every_steps` optimiser steps, so a data set with 11 steps per epoch and one with 10,000
can be given the same optimiser-step budget (`max_steps`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from agenticrs.features.actions import FeatureAction

OptimizerName = Literal["adam", "adamw", "adagrad", "sgd"]


class ParamGroupConfig(BaseModel):
    """Settings for the parameters whose name matches `match` (a regular expression, searched).

    Lets one run mix optimisers (e.g. Adagrad on embedding tables, Adam on the rest), learning
    rates and weight decays; the first matching group wins, the rest follow the run's settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    match: str = Field(description="regular expression searched in the parameter's name")
    optimizer: OptimizerName | None = None
    learning_rate: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"match {value!r} is not a regular expression: {exc}") from None
        return value


class TrainConfig(BaseModel):
    """How to train; the defaults follow FuxiCTR's usual CTR settings. Infinite and NaN numbers are
    refused (a learning rate of `inf` would only show as NaN scores after training starts)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # -- optimisation ----------------------------------------------------------------------
    optimizer: OptimizerName = "adam"
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=4096, ge=1)
    eval_batch_size: int = Field(default=16384, ge=1)
    embedding_l2: float = Field(default=0.0, ge=0, description="L2 on embedding-like parameters")
    weight_l2: float = Field(default=0.0, ge=0, description="L2 on all other weights")
    param_groups: list[ParamGroupConfig] = Field(default_factory=list, description="per-parameter-group settings")
    grad_clip: float | None = Field(default=None, gt=0, description="clip the global gradient norm to this")
    # -- schedule --------------------------------------------------------------------------
    lr_schedule: Literal["plateau", "cosine", "constant"] = Field(
        default="plateau",
        description="plateau: cut on flat evaluations; cosine: to min_lr over min(max_steps, epochs x steps per epoch)",
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear LR warm-up over this many optimiser steps")
    lr_decay_factor: float = Field(default=0.1, gt=0, le=1, description="LR multiplier on a plateau")
    lr_decay_patience: int = Field(default=1, ge=1, description="evaluations without improvement before a cut")
    min_lr: float = Field(default=1e-6, ge=0)
    # -- budgets ---------------------------------------------------------------------------
    epochs: int = Field(default=100, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="optimiser-step budget of the whole run")
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap steps per epoch (quick runs)")
    time_budget_s: float | None = Field(default=None, gt=0, description="stop training after this many seconds")
    # -- evaluation and early stopping -----------------------------------------------------
    eval_every_steps: int | None = Field(
        default=None, ge=1, description="evaluate every this many optimiser steps (default: at each epoch's end)"
    )
    eval_every_epochs: int = Field(default=1, ge=1, description="with epoch cadence: evaluate every this many epochs")
    monitor: str = Field(default="auc", description="validation metric for early stopping and the best checkpoint")
    patience: int = Field(default=2, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(
        default=1e-5, ge=0, description="a validation gain at or below this counts as no improvement"
    )
    metrics: list[str] = Field(default_factory=lambda: ["auc", "logloss", "gauc", "calibration"])
    eval_at_start: bool = Field(
        default=False, description="evaluate the initial weights (step 0) too, so that they can be the best "
        "checkpoint: a fine-tuning run then never ends worse on validation than it started",
    )
    restore_best: bool = Field(
        default=True, description="end with the best evaluation's weights; off: keep the last ones (a stream, "
        "whose every evaluation is on a new window, keeps the model it ended with)",
    )
    checkpoint_every_steps: int | None = Field(
        default=None, ge=1, description="also write the resume checkpoint every this many steps (it is always "
        "written at each evaluation when the run has a directory)",
    )
    # -- labels (CTR and multi-task) -------------------------------------------------------
    label: str | None = Field(default=None, description="which label to train on; default: the first")
    labels: list[str] | None = Field(
        default=None, description="multi-task: train these labels at once (the model must have one head each)"
    )
    task_weights: dict[str, float] = Field(default_factory=dict, description="multi-task loss weight per label")
    conversion_labels: list[str] | None = Field(
        default=None, min_length=2, max_length=2,
        description="multi-task conversion: [click label, conversion label]; adds ctr_auc, cvr_auc and ctcvr_auc "
        "to the metrics (a conversion model such as esmm names its own)",
    )
    # -- data beyond memory ----------------------------------------------------------------
    memory_budget_mb: float | None = Field(
        default=None, gt=0, description="a split whose arrays are larger than this stays memory-mapped: training "
        "reads it in shuffled blocks (shuffle_block_rows) and evaluation in order, releasing pages as it goes; "
        "default: every split is loaded into memory",
    )
    shuffle_block_rows: int = Field(
        default=65_536, ge=1, description="rows per contiguous block read when training from a memory-mapped split",
    )
    # -- runtime ---------------------------------------------------------------------------
    seed: int = Field(default=2024, ge=0, lt=2**32, description="seeds Python, NumPy and torch (NumPy needs < 2^32)")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    num_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; default: all cores")
    log_every: int = Field(default=20, ge=1, description="steps between live loss updates")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.labels is not None and self.label is not None:
            raise ValueError("give either `label` (one task) or `labels` (multi-task), not both")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"`labels` repeats a label: {self.labels}")
        if self.conversion_labels is not None and self.conversion_labels[0] == self.conversion_labels[1]:
            raise ValueError(f"`conversion_labels` needs two different labels, got {self.conversion_labels}")
        return self


def with_model_defaults(config: TrainConfig, model_defaults: dict[str, Any], explicit: set[str] | None = None) -> TrainConfig:
    """`config` with the model's own training defaults (`Model.train_defaults`) filled in where the
    user did not set the field (`explicit`: the fields the user set; default: pydantic's record)."""
    if not model_defaults:
        return config
    unknown = set(model_defaults) - set(type(config).model_fields)
    if unknown:
        raise ValueError(f"model training defaults name unknown settings {sorted(unknown)}")
    given = explicit if explicit is not None else config.model_fields_set
    fill = {k: v for k, v in model_defaults.items() if k not in given}
    return type(config).model_validate({**config.model_dump(), **fill}) if fill else config


class RunConfig(BaseModel):
    """Everything that defines a run: data, model and training."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="a registered data set name or a dataset-spec YAML path")
    model: str
    model_params: dict[str, Any] = Field(default_factory=dict, description="model hyper-parameters")
    smoke: bool = Field(default=False, description="start from the model's tiny smoke config")
    train: TrainConfig = Field(default_factory=TrainConfig)
    name: str | None = None
    features: list[FeatureAction] = Field(
        default_factory=list, description="feature actions (agenticrs.features.actions), fitted on train and "
        "applied at training and scoring time alike",
    )

    @model_serializer(mode="wrap")
    def _without_empty_features(self, handler: Any) -> dict[str, Any]:
        """A run without actions is written as before (no `features` key): configs, and whatever is
        keyed by them, stay as they were."""
        data = handler(self)
        if isinstance(data, dict) and not self.features:
            data.pop("features", None)
        return data

"""Typed training configuration (YAML-loadable, `--set train.x=y` overridable)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """How to train; the defaults follow FuxiCTR's usual CTR settings."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adam", "adagrad"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=4096, ge=1)
    eval_batch_size: int = Field(default=16384, ge=1)
    epochs: int = Field(default=100, ge=1)
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap steps per epoch (quick runs)")
    time_budget_s: float | None = Field(default=None, gt=0, description="stop training after this many seconds")
    embedding_l2: float = Field(default=0.0, ge=0, description="L2 on embedding tables")
    weight_l2: float = Field(default=0.0, ge=0, description="L2 on all other weights")
    monitor: str = Field(default="auc", description="validation metric for early stopping and the best checkpoint")
    patience: int = Field(default=2, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(
        default=1e-5, ge=0, description="a validation gain at or below this counts as no improvement"
    )
    lr_decay_factor: float = Field(default=0.1, gt=0, le=1, description="LR multiplier on a plateau")
    lr_decay_patience: int = Field(default=1, ge=1)
    min_lr: float = Field(default=1e-6, ge=0)
    metrics: list[str] = Field(default_factory=lambda: ["auc", "logloss", "gauc", "calibration"])
    label: str | None = Field(default=None, description="which label to train on; default: the first")
    seed: int = 2024
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    num_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; default: all cores")
    log_every: int = Field(default=20, ge=1, description="steps between live loss updates")


class RunConfig(BaseModel):
    """Everything that defines a run: data, model and training."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="a registered data set name or a dataset-spec YAML path")
    model: str
    model_params: dict[str, Any] = Field(default_factory=dict, description="model hyper-parameters")
    smoke: bool = Field(default=False, description="start from the model's tiny smoke config")
    train: TrainConfig = Field(default_factory=TrainConfig)
    name: str | None = None

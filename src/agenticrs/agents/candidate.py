"""A candidate is data, never code: a typed configuration over the model zoo.

It fixes the model family and its hyper-parameters, the input fields (and a feature-bagging
rate), the optimiser and the training budget. Every proposer (built-in, Optuna, an LLM) emits
one of these; nothing a proposer returns is executed. The hash is taken over the *effective*
configuration (knobs a model does not have are dropped, defaults filled in), so two spellings of
one model hash alike and a rejected configuration is never trained twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from agenticrs.features.actions import FeatureAction, dump_actions
from agenticrs.features.subset import bag_fields
from agenticrs.models.base import make_config, model_class
from agenticrs.train.config import RunConfig, TrainConfig

# knobs the candidate carries at the top level; each goes to the model only if its Config has it
SHARED_KNOBS = ("embedding_dim", "hidden_units", "dropout")


def active_knobs(model: str) -> set[str]:
    """The Config fields of a model that change its network (less the inert ones)."""
    cls = model_class(model)
    return set(cls.Config.model_fields) - set(cls.inert_config) - {"input_fields"}


class Candidate(BaseModel):
    """One point of the search space."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a model of the zoo (agenticrs models)")
    embedding_dim: int = Field(default=10, ge=2, le=128)
    hidden_units: list[int] = Field(default_factory=lambda: [400, 400, 400], min_length=1, max_length=8)
    dropout: float = Field(default=0.2, ge=0.0, le=0.9)
    model_params: dict[str, Any] = Field(default_factory=dict, description="other hyper-parameters of the model")
    optimizer: Literal["adam", "adagrad"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0, le=0.1)
    batch_size: int = Field(default=4096, ge=16, le=65536)
    embedding_l2: float = Field(default=0.0, ge=0.0, le=1.0)
    epochs: int = Field(default=10, ge=1, le=200, description="training budget: at most this many epochs")
    input_fields: list[str] | None = Field(default=None, description="fields the model sees; None: all")
    feature_bagging: float = Field(default=1.0, gt=0.0, le=1.0, description="share of fields each learner keeps")
    features: list[FeatureAction] = Field(
        default_factory=list, description="feature actions applied before the model (AutoFeature's decisions)"
    )

    @model_serializer(mode="wrap")
    def _without_empty_features(self, handler: Any) -> dict[str, Any]:
        """A candidate without feature actions is stored and shown (prompts, records) as before."""
        data = handler(self)
        if isinstance(data, dict) and not self.features:
            data.pop("features", None)
        return data

    @model_validator(mode="after")
    def _known_model(self) -> Candidate:
        model_class(self.model)  # raises KeyError with the known names
        clash = [k for k in self.model_params if k in (*SHARED_KNOBS, "input_fields")]
        if clash:
            raise ValueError(f"model_params must not set {clash}: they are top-level candidate fields")
        return self

    # -- effective configuration --------------------------------------------------------------
    def model_knobs(self) -> dict[str, Any]:
        """The hyper-parameters the model really takes, validated by the model's own Config."""
        active = active_knobs(self.model)
        params = {k: getattr(self, k) for k in SHARED_KNOBS if k in active}
        params.update(self.model_params)
        config = make_config(self.model, params)
        return config.model_dump(mode="json", exclude={"input_fields", *model_class(self.model).inert_config})

    def knobs_as_given(self) -> dict[str, Any]:
        """The model's knobs as validated (`model_knobs`), or, for a candidate whose model_params
        its model's Config refuses, as given: such a candidate can still be described and recorded
        as invalid (`config_hash(strict=False)`; the check says why)."""
        try:
            return self.model_knobs()
        except (ValueError, KeyError):
            active = active_knobs(self.model)
            return {**{k: getattr(self, k) for k in SHARED_KNOBS if k in active}, **self.model_params}

    def effective(self, strict: bool = True) -> dict[str, Any]:
        """What defines the learners (the hash's input): no knob the model ignores. `strict`: a
        ValueError for model_params the model's Config refuses; otherwise they are taken as given."""
        effective = {
            "model": self.model,
            "model_config": self.model_knobs() if strict else self.knobs_as_given(),
            "optimizer": self.optimizer,
            "learning_rate": float(self.learning_rate),
            "batch_size": self.batch_size,
            "embedding_l2": float(self.embedding_l2),
            "epochs": self.epochs,
            "input_fields": self.input_fields,
            "feature_bagging": float(self.feature_bagging),
        }
        if self.features:  # only when there are any: the hashes of candidates without actions stay as they were
            effective["features"] = dump_actions(self.features)
        return effective

    def config_hash(self, strict: bool = True) -> str:
        """Hash of the effective configuration (`strict=False`: also for a candidate whose
        model_params are invalid, to record it; a valid candidate hashes alike either way)."""
        payload = json.dumps(self.effective(strict), sort_keys=True, separators=(",", ":"), default=repr)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def canonical(self) -> Candidate:
        """The same candidate with ignored knobs reset, for display and storage."""
        active = active_knobs(self.model)
        reset = {k: Candidate.model_fields[k].get_default(call_default_factory=True) for k in SHARED_KNOBS if k not in active}
        return self.model_copy(update=reset)

    def describe(self) -> str:
        knobs = self.knobs_as_given()
        parts = [self.model]
        for key in ("embedding_dim", "hidden_units", "dropout"):
            if key in knobs:
                parts.append(f"{key}={knobs[key]}")
        parts.append(f"lr={self.learning_rate:.2g}")
        if self.input_fields is not None:
            parts.append(f"fields={len(self.input_fields)}")
        if self.feature_bagging < 1:
            parts.append(f"bag={self.feature_bagging:.2f}")
        if self.features:
            parts.append(f"features={len(self.features)}")
        return " ".join(parts)

    # -- learners -----------------------------------------------------------------------------
    def member_fields(self, all_fields: list[str], seed: int, protected: set[str]) -> list[str] | None:
        """The fields one learner sees: the subset, then this learner's own bag (drawn with its seed)."""
        fields = list(self.input_fields) if self.input_fields is not None else list(all_fields)
        if self.feature_bagging >= 1:
            return None if self.input_fields is None else fields
        return bag_fields(fields, self.feature_bagging, seed, protected)

    def run_config(
        self,
        dataset: str,
        seed: int,
        base: TrainConfig,
        all_fields: list[str],
        protected: set[str],
        name: str | None = None,
    ) -> RunConfig:
        params = self.model_knobs()
        fields = self.member_fields(all_fields, seed, protected)
        if fields is not None:
            params["input_fields"] = fields
        train = base.model_copy(
            update={
                "optimizer": self.optimizer,
                "learning_rate": self.learning_rate,
                "batch_size": self.batch_size,
                "embedding_l2": self.embedding_l2,
                "epochs": self.epochs,
                "seed": seed,
            }
        )
        return RunConfig(dataset=dataset, model=self.model, model_params=params, train=train, name=name,
                         features=list(self.features))

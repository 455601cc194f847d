"""Model base class, declared inputs and the registry of the model zoo.

A model states what it needs (`ModelInputs`); a data set that cannot satisfy it is refused with a
clear message before any training starts. The trainer never special-cases a model: it calls
`forward(batch)` and reads `{"logit": (B,), "aux_loss": optional scalar}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.features.schema import FeatureSchema
from agenticrs.features.subset import FieldSubset, SubsetSplitView

Batch = dict[str, torch.Tensor]


class ModelConfig(BaseModel):
    """Base of every model's typed hyper-parameters; defaults are the paper's settings."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = 10
    input_fields: list[str] | None = None  # build on these fields only (feature subsets, bagging)


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs from a data set."""

    min_categorical: int = 1
    needs_target_sequence: bool = False  # a sequence paired with a candidate field (target attention)
    min_fields_for_interaction: int = 1  # e.g. FM needs at least two fields to interact
    request_centric: bool = False  # trains on whole requests (candidates of one request in one batch)

    def problems(self, schema: FeatureSchema) -> list[str]:
        found: list[str] = []
        if len(schema.categorical) < self.min_categorical:
            found.append(
                f"needs at least {self.min_categorical} categorical field(s); the data set has {len(schema.categorical)}"
            )
        n_fields = len(schema.categorical) + len(schema.numeric) + len(schema.id_sequences)
        if n_fields < self.min_fields_for_interaction:
            found.append(f"needs at least {self.min_fields_for_interaction} fields; the data set has {n_fields}")
        if self.needs_target_sequence and not any(
            s.target in schema.categorical_names for s in schema.id_sequences
        ):
            found.append(
                "needs a behaviour sequence paired with a candidate field (a sequence field with "
                "`share_vocab_with`/`target`, e.g. hist_item_id -> item_id); the data set has none"
            )
        if not schema.labels:
            found.append("needs a binary label")
        return found


class Model(nn.Module):
    """A CTR model over the shared feature layer."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    inputs: ClassVar[ModelInputs] = ModelInputs()
    # a small configuration for smoke tests and quick demos
    smoke_overrides: ClassVar[dict[str, Any]] = {}
    # Config fields the network ignores (search must not treat them as real knobs)
    inert_config: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, schema: FeatureSchema, config: ModelConfig) -> None:
        super().__init__()
        self.schema = schema
        self.config = config

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, train: SplitArrays, label_index: int = 0) -> None:
        """Statistics of the training split the model is built around (e.g. MGDIN's field
        information density). Called by the trainer before the first step; store the result in
        buffers so that it is saved with the run's weights. Default: nothing to prepare."""

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Embedding tables (for the trainer's separate L2 on embeddings)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]

    def mlp_ceiling_spec(self) -> tuple[int, list[int]] | None:
        """(input width, hidden units) of the model's main MLP, for the throughput ceiling."""
        return None

    @classmethod
    def default_config(cls) -> ModelConfig:
        return cls.Config()

    @classmethod
    def smoke_config(cls) -> ModelConfig:
        return cls.Config(**cls.smoke_overrides)


_REGISTRY: dict[str, type[Model]] = {}


def register(name: str) -> Callable[[type[Model]], type[Model]]:
    """Class decorator: `@register("deepfm")` makes the model available by name."""

    def wrap(cls: type[Model]) -> type[Model]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name '{name}' is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_zoo() -> None:
    import agenticrs.models.zoo  # noqa: F401  (registers the built-in models)


def model_class(name: str) -> type[Model]:
    _load_zoo()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[str]:
    _load_zoo()
    return sorted(_REGISTRY)


class IncompatibleDataError(ValueError):
    """The data set lacks inputs the model declares it needs."""


def make_config(name: str, overrides: dict[str, Any] | None = None, smoke: bool = False) -> ModelConfig:
    cls = model_class(name)
    base = cls.smoke_overrides if smoke else {}
    try:
        return cls.Config(**{**base, **(overrides or {})})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"invalid config for model '{name}': {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None


def build_model(
    name: str, schema: FeatureSchema, config: ModelConfig | dict[str, Any] | None = None, smoke: bool = False
) -> Model:
    """Check the data set against the model's needs, then build it."""
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = make_config(name, config, smoke=smoke)
    subset = FieldSubset.select(schema, config.input_fields) if config.input_fields is not None else None
    problems = cls.inputs.problems(subset.schema if subset else schema)
    if problems:
        scope = "on the selected input fields" if subset else "on this data set"
        raise IncompatibleDataError(f"model '{name}' cannot train {scope}: " + "; ".join(problems))
    if subset is None:
        return cls(schema, config)
    model = cls(subset.schema, config)
    model.register_forward_pre_hook(lambda _module, args: (subset(args[0]), *args[1:]))
    prepare = model.prepare
    model.prepare = lambda train, label_index=0: prepare(SubsetSplitView(train, subset), label_index)  # type: ignore[method-assign]
    return model

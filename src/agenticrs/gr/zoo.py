"""Building sequential / generative recommenders by name.

Sequential models share the one model registry (`agenticrs.models.base.MODELS`) with every other
task. A model is a `SequentialModel` subclass in `agenticrs.gr.models` decorated with
`@register_sequential("name")`; its constructor is `(num_items, config)` or, for models that
decode semantic IDs, `(num_items, config, semantic_ids)`. Callers build models by name with typed,
validated hyper-parameters and never special-case one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from agenticrs.gr.base import SemanticIds, SequentialConfig, SequentialModel
from agenticrs.models.base import MODELS, list_models, register


def register_sequential(name: str) -> Callable[[type[SequentialModel]], type[SequentialModel]]:
    """Class decorator: `@register_sequential("sasrec")`; the models' one registry
    (`agenticrs.models.base.MODELS`) holds it beside the CTR models."""
    return register(name)


def sequential_model_class(name: str) -> type[SequentialModel]:
    if name not in MODELS:
        raise KeyError(f"unknown sequential model '{name}'; known sequential models: {', '.join(list_sequential_models())}")
    cls = MODELS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, SequentialModel)):
        raise KeyError(
            f"model '{name}' is not a sequential model; known sequential models: {', '.join(list_sequential_models())}"
        )
    return cls


def list_sequential_models() -> list[str]:
    return list_models("sequential")


def needs_semantic_ids(cls: type[SequentialModel]) -> bool:
    """Whether the constructor requires semantic IDs (a `semantic_ids` parameter without default)."""
    param = inspect.signature(cls.__init__).parameters.get("semantic_ids")
    return param is not None and param.default is inspect.Parameter.empty


def make_sequential_config(name: str, params: dict[str, Any] | None = None) -> SequentialConfig:
    """The model's typed config from plain params; an unknown or bad value names the field."""
    cls = sequential_model_class(name)
    try:
        return cls.Config(**(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"invalid config for sequential model '{name}': {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None


def build_sequential(
    name: str,
    num_items: int,
    params: dict[str, Any] | SequentialConfig | None = None,
    semantic_ids: SemanticIds | None = None,
) -> SequentialModel:
    """Build a registered model over items 1..num_items."""
    cls = sequential_model_class(name)
    config = params if isinstance(params, SequentialConfig) else make_sequential_config(name, params)
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    takes_sids = "semantic_ids" in inspect.signature(cls.__init__).parameters
    if semantic_ids is not None and semantic_ids.num_items != num_items:
        raise ValueError(f"semantic IDs cover {semantic_ids.num_items} items, the data has {num_items}")
    if takes_sids:
        if semantic_ids is None and needs_semantic_ids(cls):
            raise ValueError(f"sequential model '{name}' needs semantic IDs (build them with agenticrs.gr.tokenizers)")
        return cls(num_items, config, semantic_ids=semantic_ids)
    if semantic_ids is not None:
        raise ValueError(f"sequential model '{name}' does not use semantic IDs")
    return cls(num_items, config)

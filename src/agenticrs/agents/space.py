"""The typed search space and the checks every candidate passes before any training.

The space bounds what proposers may change (model families, widths, depths, embedding sizes,
dropout, learning rate, input fields, feature-bagging rate) and carries the guardrails that
AutoPerf would enforce: a parameter budget and a latency budget. `check` validates the model's
typed config, counts the parameters on PyTorch's `meta` device (shapes only, nothing allocated:
a proposal of a billion-unit layer is refused in milliseconds, not by an out-of-memory crash),
and only a model within the budget is built for real and timed on 1,000 synthetic rows. So an
over-budget or incompatible candidate costs milliseconds, not a training, and every failure is
a `CheckReport` with a reason, never an exception.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.overrides import TorchFunctionMode

from agenticrs.agents.candidate import Candidate, active_knobs
from agenticrs.features.actions import transformed_schema, validate_actions
from agenticrs.features.schema import MISSING_INDEX, FeatureSchema
from agenticrs.features.subset import field_names, protected_fields
from agenticrs.models.base import IncompatibleDataError, build_model, model_class

DEFAULT_MODELS = ["lr", "fm", "dnn", "deepfm", "dcnv2", "autoint", "finalmlp", "din"]


class SearchSpace(BaseModel):
    """Bounds of what the proposers may change, and the guardrails."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    embedding_dims: list[int] = Field(default_factory=lambda: [4, 8, 10, 16, 24, 32])
    widths: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 400, 512])
    depth_min: int = Field(default=1, ge=1)
    depth_max: int = Field(default=4, ge=1)
    dropout_min: float = 0.0
    dropout_max: float = 0.5
    learning_rate_min: float = 1e-4
    learning_rate_max: float = 1e-2
    feature_bagging_min: float = Field(default=0.5, gt=0, le=1)
    min_fields: int = Field(default=2, ge=1, description="a feature subset keeps at least this many fields")
    max_parameters: int = Field(default=20_000_000, ge=1)
    max_latency_ms_per_1000: float = Field(default=200.0, gt=0, description="CPU forward time per 1,000 rows")

    def compatible_models(self, schema: FeatureSchema) -> list[str]:
        found = []
        for name in self.models:
            if not model_class(name).inputs.problems(schema):
                found.append(name)
        return found

    def describe(self, schema: FeatureSchema) -> dict[str, Any]:
        """The space as plain data, for LLM prompts and reports."""
        return {
            "models": self.compatible_models(schema),
            "embedding_dim": self.embedding_dims,
            "hidden_units": {"widths": self.widths, "depth": [self.depth_min, self.depth_max]},
            "dropout": [self.dropout_min, self.dropout_max],
            "learning_rate": [self.learning_rate_min, self.learning_rate_max],
            "feature_bagging": [self.feature_bagging_min, 1.0],
            "input_fields": {"all": field_names(schema), "always_kept": sorted(protected_fields(schema))},
            "max_parameters": self.max_parameters,
            "max_latency_ms_per_1000": self.max_latency_ms_per_1000,
        }


@dataclass
class CheckReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    parameters: int | None = None
    latency_ms_per_1000: float | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.problems) if self.problems else "valid"


def synthetic_batch(schema: FeatureSchema, rows: int = 1000) -> dict[str, torch.Tensor]:
    """A batch of the schema's shape (ids at the 'missing' index), for timing without data."""
    batch: dict[str, torch.Tensor] = {
        "categorical": torch.full((rows, len(schema.categorical)), MISSING_INDEX, dtype=torch.int32),
        "numeric": torch.zeros(rows, len(schema.numeric)),
        "request": torch.arange(rows, dtype=torch.int64) // 4,
    }
    for seq in schema.sequences:
        dtype = torch.int32 if seq.element == "categorical" else torch.float32
        values = torch.full((rows, seq.max_len), MISSING_INDEX if seq.element == "categorical" else 0, dtype=dtype)
        batch[f"seq/{seq.name}"] = values
        batch[f"seqlen/{seq.name}"] = torch.full((rows,), seq.max_len, dtype=torch.int32)
    return batch


def time_calls(call: Callable[[], Any], repeats: int = 3, warmup: int = 1, threads: int | None = 1,
               cuda: bool = False) -> list[float]:
    """Seconds of each of `repeats` calls of `call` after `warmup` untimed ones, under
    `torch.inference_mode`. `threads`: intra-op threads while timing (1: comparable across runs and
    machines; None: leave as set). `cuda`: synchronise the device before reading the clock, so a
    call's asynchronous kernels are counted. Shared by `check` and AutoPerf (`agents/autoperf.py`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times = []
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for i in range(-warmup, repeats):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                call()
                if cuda:
                    torch.cuda.synchronize()
                if i >= 0:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(saved)
    return times


def latency_ms_per_1000(model: torch.nn.Module, schema: FeatureSchema, repeats: int = 3) -> float:
    """Median single-thread forward time for 1,000 rows (one thread: comparable across runs)."""
    batch = synthetic_batch(schema, 1000)
    model.eval()
    times = time_calls(lambda: model(batch), repeats=repeats, warmup=1, threads=1)
    return 1000.0 * sorted(times)[len(times) // 2]


def bounds_problems(candidate: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[str]:
    problems = []
    if candidate.model not in space.models:
        problems.append(f"model '{candidate.model}' is not in the search space ({space.models})")
    knobs = active_knobs(candidate.model)
    if "embedding_dim" in knobs and candidate.embedding_dim not in space.embedding_dims:
        problems.append(f"embedding_dim {candidate.embedding_dim} not in {space.embedding_dims}")
    if "hidden_units" in knobs:
        depth = len(candidate.hidden_units)
        if not space.depth_min <= depth <= space.depth_max:
            problems.append(f"depth {depth} outside [{space.depth_min}, {space.depth_max}]")
        odd = [w for w in candidate.hidden_units if w not in space.widths]
        if odd:
            problems.append(f"widths {odd} not in {space.widths}")
    if "dropout" in knobs and not space.dropout_min <= candidate.dropout <= space.dropout_max:
        problems.append(f"dropout {candidate.dropout} outside [{space.dropout_min}, {space.dropout_max}]")
    if not space.learning_rate_min <= candidate.learning_rate <= space.learning_rate_max:
        problems.append(
            f"learning_rate {candidate.learning_rate:g} outside [{space.learning_rate_min:g}, {space.learning_rate_max:g}]"
        )
    if candidate.feature_bagging < space.feature_bagging_min:
        problems.append(f"feature_bagging {candidate.feature_bagging} below {space.feature_bagging_min}")
    if candidate.input_fields is not None:
        known = field_names(schema)
        unknown = [f for f in candidate.input_fields if f not in known]
        if unknown:
            problems.append(f"input_fields {unknown} are not fields of the data set")
        dropped = sorted(protected_fields(schema) - set(candidate.input_fields))
        if dropped:
            problems.append(f"input_fields drops {dropped}: sequence tables and targets are always kept")
        if len(set(candidate.input_fields)) < space.min_fields:
            problems.append(f"input_fields keeps {len(set(candidate.input_fields))} fields; at least {space.min_fields}")
    return problems


# factory functions whose first argument (or `size=`) is the shape of the tensor they allocate
_SIZED_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.empty_strided})
LARGE_TENSOR = 1 << 20  # elements; the fallback keeps smaller tensors real


def _requested_numel(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    size = kwargs.get("size")
    if size is None:
        if not args:
            return 0
        size = args if isinstance(args[0], int) else args[0]  # torch.empty(2, 3) or torch.empty((2, 3))
    try:
        return math.prod(int(s) for s in size)
    except TypeError:
        return 0


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Tensors of at least `limit` elements created without a device go to `meta`; smaller ones stay
    real, so a model whose constructor computes from small tensors (index plans, `.item()`) builds."""

    def __init__(self, limit: int = LARGE_TENSOR) -> None:
        super().__init__()
        self.limit = limit

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _SIZED_FACTORIES and kwargs.get("device") is None and _requested_numel(args, kwargs) >= self.limit:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def count_parameters(model: str, schema: FeatureSchema, params: dict[str, Any]) -> tuple[int, int]:
    """(parameters, buffer elements) of the model `params` describe, counted without allocating them.

    The model is built on the `meta` device (shapes, no storage). A constructor that reads tensor
    values (MGDIN's token plan, SSR's view indices) cannot run there; it is built again with only
    its large tensors on `meta`. Config and data problems raise as `build_model` raises them."""
    try:
        with torch.device("meta"):
            shell = build_model(model, schema, params)
    except (RuntimeError, NotImplementedError):  # data-dependent construction
        with _LargeTensorsOnMeta():
            shell = build_model(model, schema, params)
    return sum(p.numel() for p in shell.parameters()), sum(b.numel() for b in shell.buffers())


def check(candidate: Candidate, space: SearchSpace, schema: FeatureSchema) -> CheckReport:
    """Schema, bounds, parameter count and latency, before any training.

    Never raises for a bad candidate: every problem (a config the model's typed Config refuses, a
    model that cannot be built, one over the budgets, a failing forward pass) is a failed report.
    A candidate's feature actions are validated first; the model is then checked on the schema
    they produce (`input_fields` name fields of that schema)."""
    if candidate.features:
        problems = validate_actions(candidate.features, schema)
        if problems:
            return CheckReport(False, problems)
        schema = transformed_schema(candidate.features, schema)
    try:
        problems = bounds_problems(candidate, space, schema)
        if problems:
            return CheckReport(False, problems)
        params = candidate.model_knobs()
    except (ValueError, KeyError) as exc:
        return CheckReport(False, [_message(exc)])
    if candidate.input_fields is not None:
        params["input_fields"] = candidate.input_fields
    try:
        count, buffers = count_parameters(candidate.model, schema, params)
    except (IncompatibleDataError, ValueError, KeyError) as exc:
        return CheckReport(False, [_message(exc)])
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built is a failed check, not a crash
        return CheckReport(False, [f"the model cannot be built: {type(exc).__name__}: {_message(exc)}"])
    if count > space.max_parameters:
        return CheckReport(False, [f"{count:,} parameters exceed the budget of {space.max_parameters:,}"], count)
    if buffers > space.max_parameters:
        return CheckReport(False, [f"{buffers:,} buffer elements exceed the budget of {space.max_parameters:,}"], count)
    try:
        model = build_model(candidate.model, schema, params)
        latency = latency_ms_per_1000(model, schema)
    except Exception as exc:  # noqa: BLE001 - e.g. a forward pass that fails for this configuration
        return CheckReport(False, [f"the model fails on a synthetic batch: {type(exc).__name__}: {_message(exc)}"], count)
    if not math.isfinite(latency) or latency > space.max_latency_ms_per_1000:
        return CheckReport(
            False, [f"latency {latency:.1f} ms/1k rows exceeds {space.max_latency_ms_per_1000:.1f}"], count, latency
        )
    return CheckReport(True, [], count, latency)


def _message(exc: BaseException) -> str:
    """An exception as one line (a KeyError's message without its quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__

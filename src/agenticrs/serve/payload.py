"""The scoring request: one user context plus a list of candidates, as raw field values.

A request is checked against the served run's data set (its input fields and their kinds) before
anything is encoded, so a bad payload is a 4xx whose message names the field, never a 500:
unknown or missing fields, wrong types (a string where a number belongs, a scalar where a
sequence belongs), NaN or infinities, and sizes beyond the service's limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

Scalar = int | float | str | None
Value = Scalar | list[Scalar]


class ScoreRequest(BaseModel):
    """`context` holds the fields shared by every candidate (the user, the scenario, the history);
    each candidate holds the item's fields. A field may sit in either place, not in both."""

    model_config = ConfigDict(extra="forbid")

    context: dict[str, Value] = Field(default_factory=dict, description="fields shared by all candidates")
    candidates: list[dict[str, Value]] = Field(min_length=1, description="one object of item fields per candidate")


class ScoreResponse(BaseModel):
    scores: list[float]
    arm: str
    model: str
    version: int


class PayloadError(ValueError):
    """A request the service refuses: `status` is the HTTP status, the message names the field."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FieldKinds:
    """The input fields a run reads, by kind (from its saved dataset spec)."""

    categorical: frozenset[str]
    numeric: frozenset[str]
    sequence: frozenset[str]
    other: frozenset[str]  # text and timestamp fields: strings or numbers
    request_key: str | None

    @classmethod
    def of(cls, encoder: Any) -> FieldKinds:
        spec = encoder.spec
        by_kind: dict[str, set[str]] = {"categorical": set(), "numeric": set(), "sequence": set(), "other": set()}
        for f in spec.fields:
            if f.kind == "label":
                continue
            by_kind[f.kind if f.kind in by_kind else "other"].add(f.source)
        request_key = spec.request_key
        return cls(*(frozenset(by_kind[k]) for k in ("categorical", "numeric", "sequence", "other")), request_key)

    @property
    def required(self) -> frozenset[str]:
        return self.categorical | self.numeric | self.sequence | self.other

    def kind(self, name: str) -> str:
        for kind in ("categorical", "numeric", "sequence"):
            if name in getattr(self, kind):
                return kind
        return "other"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_value(where: str, kind: str, value: Any) -> None:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: expected a {'number' if kind == 'numeric' else 'value'}, got a boolean")
    if kind == "sequence":
        if value is None:
            return
        if not isinstance(value, list):
            raise PayloadError(f"{where}: expected a list (a behaviour sequence), got {_describe(value)}")
        for i, element in enumerate(value):
            if isinstance(element, list | dict) or isinstance(element, bool):
                raise PayloadError(f"{where}[{i}]: expected a number or a string, got {_describe(element)}")
            if isinstance(element, float) and not math.isfinite(element):
                raise PayloadError(f"{where}[{i}]: {element} is not a value")
        return
    if isinstance(value, list):
        raise PayloadError(f"{where}: expected a single value, got a list")
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"{where}: {value} is not a value (send null for a missing value)")
    if kind == "numeric" and isinstance(value, str):
        raise PayloadError(f"{where}: expected a number or null, got the string {_describe(value)}")


def _column(name: str, values: list[Any], kind: str) -> pa.Array:
    if kind == "sequence":
        values = [None if v is None else [str(e) if isinstance(e, str) else e for e in v] for v in values]
        if any(isinstance(e, str) for v in values if v for e in v):
            values = [None if v is None else [str(e) for e in v] for v in values]
        return pa.array(values)
    if kind == "numeric":
        return pa.array(values, pa.float64())
    if any(isinstance(v, str) for v in values):  # mixed ids: the encoder compares tokens as strings
        values = [None if v is None else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) for v in values]
        return pa.array(values, pa.string())
    if any(isinstance(v, float) for v in values):
        return pa.array(values, pa.float64())
    return pa.array(values, pa.int64())


def request_table(request: ScoreRequest, fields: FieldKinds, max_candidates: int, request_id: int = 0) -> pa.Table:
    """The request as a table of candidate rows (context values repeated), in candidate order."""
    n = len(request.candidates)
    if n > max_candidates:
        raise PayloadError(f"candidates: {n} candidates in one request; this service takes at most {max_candidates}", 413)
    known = fields.required | ({fields.request_key} if fields.request_key else set())
    reads = ", ".join(sorted(fields.required))
    for name in request.context:
        if name not in known:
            raise PayloadError(f"context.{name}: unknown field (this model reads {reads})")
    candidate_fields: set[str] = set()
    for i, candidate in enumerate(request.candidates):
        for name in candidate:
            if name not in known:
                raise PayloadError(f"candidates[{i}].{name}: unknown field (this model reads {reads})")
            if name in request.context:
                raise PayloadError(f"candidates[{i}].{name}: also given in context; give a field in one place")
        candidate_fields.update(candidate)
    missing = sorted(fields.required - set(request.context) - candidate_fields)
    if missing:
        raise PayloadError(f"{missing[0]}: missing field (required in context or in every candidate; "
                           f"{len(missing)} missing: {', '.join(missing[:8])})")  # fmt: skip
    columns: dict[str, pa.Array] = {}
    for name in sorted(fields.required):
        kind = fields.kind(name)
        if name in request.context:
            value = request.context[name]
            _check_value(f"context.{name}", kind, value)
            values = [value] * n
        else:
            values = []
            for i, candidate in enumerate(request.candidates):
                if name not in candidate:
                    raise PayloadError(f"candidates[{i}].{name}: missing field (it is not in context either)")
                _check_value(f"candidates[{i}].{name}", kind, candidate[name])
                values.append(candidate[name])
        try:
            columns[name] = _column(name, values, kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
            place = f"context.{name}" if name in request.context else f"candidates[*].{name}"
            raise PayloadError(f"{place}: values of mixed or unsupported types ({str(exc).splitlines()[0][:120]})") from None
    if fields.request_key and fields.request_key not in columns:
        columns[fields.request_key] = pa.array([request_id] * n, pa.int64())
    return pa.table(columns)

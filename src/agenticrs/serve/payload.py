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

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

_MISSING = object()
Scalar = int | float | str | None
Value = Scalar | list[Scalar]


class ScoreRequest(BaseModel):
    """`context` holds the fields shared by every candidate (the user, the scenario, the history);
    each candidate holds the item's fields. A field may sit in either place, not in both."""

    # NaN and infinities are refused (JSON has none; the careful path names them)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    if kind == "numeric" and isinstance(value, int) and abs(value) > 1.7e308:
        raise PayloadError(f"{where}: {_describe(value)} is beyond the range of a number (float64)")


_SCALARS = {int, float, str, type(None)}


def _finite(values: pa.Array) -> bool:
    """No NaN or infinity among the non-null values (nulls read back as NaN)."""
    if not pa.types.is_floating(values.type):
        return True
    return int(np.isfinite(values.to_numpy(zero_copy_only=False)).sum()) == len(values) - values.null_count


def _token(value: Any) -> str | None:
    """A value of a mixed column as the encoder's token: 3, 3.0 and "3" are one token; None stays missing."""
    if value is None:
        return None
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def values_column(values: list[Any], kind: str) -> pa.Array | None:
    """The column of one field, or None when a value is of the wrong type (the caller then finds
    and names it). One pass over Python values by type; the rest is Arrow."""
    types = {type(v) for v in values}
    if kind == "sequence":
        if not types <= {list, type(None)}:
            return None
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed element types: compare as strings
            try:
                column = pa.array([None if v is None else [_token(e) for e in v] for v in values], pa.list_(pa.string()))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return None
        if pa.types.is_null(column.type):
            return column
        if not pa.types.is_list(column.type) or pa.types.is_nested(column.type.value_type) or \
                pa.types.is_boolean(column.type.value_type) or not _finite(column.flatten()):  # fmt: skip
            return None
        return column
    if not types <= _SCALARS:
        return None
    if kind == "numeric":
        if str in types:
            return None
        try:
            column = pa.array(values, pa.float64())
        except (pa.ArrowInvalid, OverflowError):  # integers beyond float64's exact ones: rounded, as a float
            try:
                column = pa.array([None if v is None else float(v) for v in values], pa.float64())
            except OverflowError:
                return None
        return column if _finite(column) else None
    if str in types:  # mixed ids: the encoder compares tokens as strings ("3" and 3.0 are one token)
        if float in types and any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return None
        return pa.array([_token(v) for v in values], pa.string())
    if float in types:
        column = pa.array(values, pa.float64())
        return column if _finite(column) else None
    try:
        return pa.array(values, pa.int64())
    except (OverflowError, pa.ArrowInvalid):  # beyond 64 bits: an id, compared as a string
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _accepted(column: pa.Array, kind: str) -> pa.Array | None:
    """A column Arrow inferred from every candidate at once, if it is what `values_column` would have
    built for the field's kind (else None: the per-field path decides, and names a bad value)."""
    kind_type = column.type
    if kind == "sequence":
        if not pa.types.is_list(kind_type) or pa.types.is_nested(kind_type.value_type) or \
                pa.types.is_boolean(kind_type.value_type) or not _finite(column.flatten()):  # fmt: skip
            return None
        return column
    if pa.types.is_floating(kind_type):
        return column if _finite(column) else None
    if pa.types.is_integer(kind_type):
        if kind != "numeric":
            return column
        try:
            return column.cast(pa.float64())
        except pa.ArrowInvalid:  # beyond float64's exact integers: the per-field path rounds them
            return None
    if pa.types.is_string(kind_type) and kind != "numeric":
        return column
    return None  # booleans, all-null columns, nested values: the careful path


def _uniform_columns(candidates: list[dict[str, Value]], names: list[str], fields: FieldKinds) -> dict[str, pa.Array] | None:
    """Every candidate field's column in one Arrow call, when every candidate carries the same
    fields and Arrow's inferred types are acceptable; otherwise None."""
    try:
        table = pa.Table.from_pylist(candidates)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None
    columns = {}
    for name in names:
        column = _accepted(table.column(name).combine_chunks(), fields.kind(name))
        if column is None:
            return None
        columns[name] = column
    return columns


def check_size(request: ScoreRequest, max_candidates: int) -> None:
    n = len(request.candidates)
    if n > max_candidates:
        raise PayloadError(f"candidates: {n} candidates in one request; this service takes at most {max_candidates}", 413)


def request_table(request: ScoreRequest, fields: FieldKinds, max_candidates: int, request_id: int = 0) -> pa.Table:
    """The request as a table of candidate rows (context values repeated), in candidate order."""
    check_size(request, max_candidates)
    n = len(request.candidates)
    known = fields.required | ({fields.request_key} if fields.request_key else set())
    reads = ", ".join(sorted(fields.required))
    for name in request.context:
        if name not in known:
            raise PayloadError(f"context.{name}: unknown field (this model reads {reads})")
    shapes = {tuple(candidate) for candidate in request.candidates}  # usually one: every candidate alike
    candidate_fields: set[str] = set().union(*shapes)
    if not candidate_fields <= known or candidate_fields & request.context.keys():
        for i, candidate in enumerate(request.candidates):  # name the first offending candidate
            for name in candidate:
                if name not in known:
                    raise PayloadError(f"candidates[{i}].{name}: unknown field (this model reads {reads})")
                if name in request.context:
                    raise PayloadError(f"candidates[{i}].{name}: also given in context; give a field in one place")
    missing = sorted(fields.required - set(request.context) - candidate_fields)
    if missing:
        raise PayloadError(f"{missing[0]}: missing field (required in context or in every candidate; "
                           f"{len(missing)} missing: {', '.join(missing[:8])})")  # fmt: skip
    names = sorted(fields.required)
    uniform = len(shapes) == 1 and n > 1  # (a single candidate: the per-field path is as quick)
    columns = (_uniform_columns(request.candidates, [f for f in names if f in candidate_fields], fields)
               if uniform else None) or {}  # fmt: skip
    for name in names:
        if name in columns:
            continue
        kind = fields.kind(name)
        if name in request.context:
            value = request.context[name]
            _check_value(f"context.{name}", kind, value)
            column = values_column([value], kind)
            if column is None:
                raise PayloadError(f"context.{name}: unsupported value {_describe(value)}")
            columns[name] = pa.repeat(column[0], n) if n > 1 else column
            continue
        values = [c.get(name, _MISSING) for c in request.candidates]
        column = None if any(v is _MISSING for v in values) else values_column(values, kind)
        if column is None:  # the slow path: find the first bad candidate and name it
            for i, value in enumerate(values):
                if value is _MISSING:
                    raise PayloadError(f"candidates[{i}].{name}: missing field (it is not in context either)")
                _check_value(f"candidates[{i}].{name}", kind, value)
            raise PayloadError(f"candidates[*].{name}: values of mixed or unsupported types")
        columns[name] = column
    if fields.request_key and fields.request_key not in columns:
        columns[fields.request_key] = pa.array([request_id] * n, pa.int64())
    return pa.table(columns)

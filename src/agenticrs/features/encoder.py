"""Feature encoder: fitted on the training split only, applied identically to every split.

Categorical values map to dense ids through a frequency-sorted vocab (or a stable hash), with
reserved ids for padding, out-of-vocabulary and missing values; numeric values are transformed
with statistics of the training split; sequences are split, encoded with the vocab of the
field they share and truncated to their most recent `max_len` elements. Everything is a
vectorised Arrow/NumPy operation on a chunk, so any file size is encoded in bounded memory.
The fitted state is plain JSON, saved with the processed data and inside every trained run, so
that prediction applies exactly the same mapping as training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agenticrs.data.errors import DataError
from agenticrs.data.readers import Chunk
from agenticrs.data.spec import DatasetSpec, FieldSpec
from agenticrs.features.hashing import fnv1a_64
from agenticrs.features.schema import (
    MISSING_INDEX,
    NUM_RESERVED,
    OOV_INDEX,
    CategoricalInput,
    FeatureSchema,
    SequenceInput,
)

ENCODER_VERSION = 1
_QUANTILE_SAMPLE = 200_000


# ----------------------------------------------------------------------------- parsing
def _column(chunk: Chunk, spec_field: FieldSpec) -> pa.Array:
    col = chunk.table.column(spec_field.source)
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()  # one chunk: no copy
    return col


def _first_bad_row(values: pa.Array, parse) -> int:
    """Index of the first value `parse` rejects (error path only, so a Python loop is fine)."""
    for i, v in enumerate(values.to_pylist()):
        if v is None:
            continue
        try:
            parse(v)
        except (TypeError, ValueError):
            return i
    return 0


def parse_float(
    values: pa.Array,
    chunk: Chunk,
    spec_field: FieldSpec,
    null_tokens: pa.Array | None = None,
    *,
    finite: bool = True,
) -> np.ndarray:
    """float64 array with NaN for missing; a clear error naming the row of an unparseable value.

    Cells equal to one of `null_tokens` (e.g. "", "NA") are missing; the common all-numeric case
    costs one cast. With `finite` (numeric fields), an infinite value (`inf`, `-inf`, or a number
    beyond the float64 range such as `1e400`) is a DataError naming its row: it would otherwise turn
    every score of the model into NaN once training starts.
    """
    if pa.types.is_floating(values.type) or pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
        typed = values.cast(pa.float64())
    else:
        strings = values.cast(pa.string())
        try:
            typed = pc.cast(strings, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            typed = None
        if typed is None:
            trimmed = pc.utf8_trim_whitespace(strings)
            tokens = null_tokens if null_tokens is not None else pa.array([""], pa.string())
            cleaned = pc.if_else(pc.is_in(trimmed, value_set=tokens), pa.scalar(None, pa.string()), trimmed)
            try:
                typed = pc.cast(cleaned, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                # Arrow's own parser finds the row (Python's float() accepts more, e.g. "1_0")
                bad = _first_bad_row(cleaned, lambda v: pc.cast(pa.array([v], pa.string()), pa.float64()))
                raise DataError(
                    f"cannot parse {values[bad].as_py()!r} as a number",
                    file=chunk.file,
                    row=chunk.first_row + bad,
                    field=spec_field.name,
                    expected="a number or an empty cell",
                ) from None
    out = typed.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if finite:
        infinite = np.flatnonzero(np.isinf(out))
        if len(infinite):
            bad = int(infinite[0])
            raise DataError(
                f"{values[bad].as_py()!r} is not a finite number",
                file=chunk.file,
                row=chunk.first_row + bad,
                field=spec_field.name,
                expected="a finite number (magnitude below 1.8e308) or an empty cell",
            )
    return out


def _overflow_error(chunk: Chunk, spec_field: FieldSpec, raw: np.ndarray, bad: np.ndarray, what: str) -> DataError:
    """A DataError naming the first row whose (finite) value overflows once transformed."""
    row = int(np.flatnonzero(bad)[0])
    transform = f" (transform '{spec_field.transform}')" if spec_field.kind == "numeric" else ""
    hint = "; transform: log1p or quantile suits such values" if spec_field.kind == "numeric" else ""
    return DataError(
        f"{float(raw[row]):g} is too large {what}{transform}",
        file=chunk.file,
        row=chunk.first_row + row,
        field=spec_field.name,
        expected=f"a smaller magnitude{hint}",
    )


def as_strings(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_dictionary(values.type):
        if pa.types.is_string(values.type.value_type) or pa.types.is_large_string(values.type.value_type):
            return values  # kept encoded: counting and lookup work on the (small) dictionary
        values = values.cast(values.type.value_type)
    if pa.types.is_floating(values.type):
        # NaN is a missing value (as pandas writes it), never a token; out-of-range values (inf,
        # |x| >= 2**53) keep their float text
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
        exact = pc.and_(pc.less_equal(pc.abs(values), 2.0**53), pc.is_finite(values))
        safe = pc.if_else(exact, values, pa.scalar(0.0, values.type))
        # 3.0 and "3" must be the same token: integral floats are written without a fraction
        as_int = pc.cast(safe, pa.int64(), safe=False)
        integral = pc.and_(exact, pc.equal(pc.cast(as_int, values.type), values))
        return pc.if_else(integral, as_int.cast(pa.string()), values.cast(pa.string()))
    return values.cast(pa.string())


def _sequence_lists(values: pa.Array, spec_field: FieldSpec, delimiter: str) -> pa.Array:
    """A list array from a delimited string column or a stored list column (empty cell: empty list)."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values
    strings = as_strings(values)
    strings = pc.if_else(pc.equal(pc.binary_length(strings), 0), pa.scalar(None, strings.type), strings)
    return pc.split_pattern(strings, pattern=spec_field.list_delimiter or delimiter)


def pad_sequences(lengths: np.ndarray, flat: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's last `max_len` elements, left-aligned in chronological order, padded with 0."""
    n = len(lengths)
    if n == 1:  # one row (a served request's history): no index arithmetic
        keep = min(int(lengths[0]), max_len)
        out = np.zeros((1, max_len), dtype=flat.dtype)
        out[0, :keep] = flat[len(flat) - keep :]
        return out, np.array([keep], np.int32)
    keep = np.minimum(lengths, max_len)
    row_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else np.zeros(0, np.int64)
    first_kept = row_starts + lengths - keep
    total = int(keep.sum())
    out = np.zeros((n, max_len), dtype=flat.dtype)
    if total:
        rows = np.repeat(np.arange(n), keep)
        kept_before = np.repeat(np.cumsum(keep) - keep, keep)
        positions = np.arange(total) - kept_before
        out[rows, positions] = flat[np.repeat(first_kept, keep) + positions]
    return out, keep.astype(np.int32)


_POOL: ThreadPoolExecutor | None = None


# below this many rows a thread hand-off costs more than the field's work (a served request)
PARALLEL_MIN_ROWS = 8_192
# up to this many values, vocab lookups go through a cached dict instead of Arrow's index_in, which
# builds a hash table of the whole vocab on every call
SMALL_LOOKUP_ROWS = 2_048


def _run_parallel(tasks: list, rows: int | None = None) -> None:
    """Run independent per-field tasks on all cores (Arrow and NumPy release the GIL); inline for
    small chunks."""
    global _POOL
    workers = int(os.environ.get("AGENTICRS_NUM_THREADS", os.cpu_count() or 1))
    if len(tasks) <= 1 or workers <= 1 or (rows is not None and rows < PARALLEL_MIN_ROWS):
        for task in tasks:
            task()
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agenticrs-encode")
    for future in [_POOL.submit(task) for task in tasks]:
        future.result()


# ----------------------------------------------------------------------------- fitted state
@dataclass
class CategoricalState:
    vocab: list[str] = field(default_factory=list)
    hash_buckets: int | None = None

    @property
    def size(self) -> int:
        return NUM_RESERVED + (self.hash_buckets if self.hash_buckets else len(self.vocab))


@dataclass
class NumericState:
    mean: float = 0.0
    std: float = 1.0
    has_missing: bool = False
    edges: list[float] = field(default_factory=list)


class _CountAccumulator:
    """Value counts merged across chunks in Arrow, compacted to stay bounded."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.rows = 0

    def add(self, values: pa.Array) -> None:
        if isinstance(values, pa.DictionaryArray):
            indices = values.indices.to_numpy(zero_copy_only=False)
            if values.null_count:
                indices = indices[values.is_valid().to_numpy(zero_copy_only=False)]
            counts = np.bincount(indices.astype(np.int64), minlength=len(values.dictionary))
            present = np.flatnonzero(counts)
            table = pa.table(
                {"value": values.dictionary.cast(pa.string()).take(pa.array(present)), "count": pa.array(counts[present])}
            )
        else:
            values = pc.drop_null(values)
            if len(values) == 0:
                return
            counts = pc.value_counts(values)
            table = pa.table({"value": counts.field("values"), "count": counts.field("counts").cast(pa.int64())})
        if table.num_rows == 0:
            return
        self.parts.append(table)
        self.rows += table.num_rows
        if len(self.parts) > 16:
            self.parts = [self._merged()]
            self.rows = self.parts[0].num_rows

    def _merged(self) -> pa.Table:
        if not self.parts:
            return pa.table({"value": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        table = pa.concat_tables([p.cast(pa.schema([("value", pa.string()), ("count", pa.int64())])) for p in self.parts])
        return table.group_by("value").aggregate([("count", "sum")]).rename_columns(["value", "count"])

    def vocab(self, min_count: int, exclude: pa.Array | None = None) -> list[str]:
        table = self._merged()
        keep = pc.greater_equal(table["count"], min_count)
        if exclude is not None and len(exclude):
            keep = pc.and_(keep, pc.invert(pc.is_in(table["value"], value_set=exclude)))
        table = table.filter(keep)
        # most frequent first, ties by value: deterministic whatever the chunking
        table = table.sort_by([("count", "descending"), ("value", "ascending")])
        return table["value"].to_pylist()


class _Reservoir:
    """A uniform sample without replacement of bounded size (for quantile edges)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.values = np.zeros(0)
        self.keys = np.zeros(0)

    def add(self, values: np.ndarray) -> None:
        keys = self.rng.random(len(values))
        self.values = np.concatenate([self.values, values])
        self.keys = np.concatenate([self.keys, keys])
        if len(self.values) > self.size:
            keep = np.argpartition(self.keys, self.size)[: self.size]
            self.values, self.keys = self.values[keep], self.keys[keep]


# ----------------------------------------------------------------------------- the encoder
class FeatureEncoder:
    """Fit on training chunks, then transform any chunk into model-ready arrays."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.categorical: dict[str, CategoricalState] = {}
        self.numeric: dict[str, NumericState] = {}
        self.fitted = False
        # cells equal to one of these are missing values (categorical and numeric alike)
        self.null_tokens = pa.array(sorted(set(spec.reader.null_values)), pa.string())
        self._value_sets: dict[str, pa.Array] = {}
        self._lookups: dict[str, dict[str, int]] = {}
        self._integer_index: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- layout -----------------------------------------------------------------------
    @property
    def categorical_fields(self) -> list[FieldSpec]:
        """Fields that become one column of the categorical id matrix (quantile numerics too)."""
        return [
            f
            for f in self.spec.fields
            if f.kind == "categorical" or (f.kind == "numeric" and f.transform == "quantile")
        ]

    @property
    def dense_numeric_fields(self) -> list[FieldSpec]:
        return [f for f in self.spec.fields if f.kind == "numeric" and f.transform != "quantile"]

    @property
    def sequence_fields(self) -> list[FieldSpec]:
        return self.spec.of_kind("sequence")

    def vocab_owner(self, f: FieldSpec) -> str:
        return f.share_vocab_with or f.name

    def numeric_columns(self) -> list[str]:
        cols = []
        for f in self.dense_numeric_fields:
            cols.append(f.name)
            if self.numeric[f.name].has_missing:
                cols.append(f"{f.name}__missing")
        return cols

    def schema(self) -> FeatureSchema:
        self._require_fitted()
        return FeatureSchema(
            categorical=tuple(
                CategoricalInput(f.name, self._categorical_size(f)) for f in self.categorical_fields
            ),
            numeric=tuple(self.numeric_columns()),
            sequences=tuple(
                SequenceInput(
                    name=f.name,
                    max_len=f.max_len,
                    table=f.share_vocab_with,
                    target=f.paired_target,
                    vocab_size=0 if f.element == "numeric" else self.categorical[self.vocab_owner(f)].size,
                    element=f.element,
                    parallel_to=f.parallel_to,
                )
                for f in self.sequence_fields
            ),
            labels=tuple(f.name for f in self.spec.labels),
            has_group=self.spec.group_key is not None,
            text=tuple(f.name for f in self.spec.of_kind("text")),
            timestamps=tuple(f.name for f in self.spec.of_kind("timestamp")),
            has_request=self.spec.request_key is not None,
            request_fields=tuple(self.spec.request_fields),
        )

    def _categorical_size(self, f: FieldSpec) -> int:
        if f.kind == "numeric":
            return NUM_RESERVED + len(self.numeric[f.name].edges) + 1
        return self.categorical[f.name].size

    # -- parsing ----------------------------------------------------------------------
    def parse_chunk(self, chunk: Chunk) -> Chunk:
        """The chunk with numeric and label columns parsed to float64 (NaN = missing), once.

        Parsing is where bad values are found, so errors name the chunk's file and row here; the
        parsed chunk is what the pipeline spills, so the transform pass never parses again.
        """
        table = chunk.table
        present = set(table.column_names)  # (`column_names` builds a new list on every access)
        missing = [f for f in self.spec.fields if f.kind != "label" and f.source not in present]
        if missing:  # rows built in memory (scoring, serving) may lack a column a file reader would have caught
            names = ", ".join(f.source for f in missing)
            raise DataError(f"missing column(s) {names}", file=chunk.file, field=missing[0].name,
                            expected=f"a column for every input field of the data set ({len(missing)} missing)")
        parsed = {}
        for f in self.spec.fields:
            if f.kind == "label" and f.source not in present:
                continue  # unlabelled rows (predicting, serving)
            if f.kind in ("numeric", "label") and f.source not in parsed:
                column = _column(chunk, f)
                if f.kind == "label":
                    column = pa.array(self._labels(chunk, f))
                elif not pa.types.is_floating(column.type):
                    column = pa.array(parse_float(column, chunk, f, self.null_tokens))
                parsed[f.source] = column
        plain_sources = {f.source for f in self.spec.fields if f.kind != "categorical"}
        for f in self.spec.of_kind("categorical"):
            column = _column(chunk, f)
            if f.source not in plain_sources and f.source not in parsed and (
                pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            ):
                parsed[f.source] = pc.dictionary_encode(column)
        for name, column in parsed.items():
            table = table.set_column(table.schema.get_field_index(name), name, column)
        return Chunk(chunk.file, chunk.first_row, table)

    # -- fitting ----------------------------------------------------------------------
    def fit(self, chunks: Iterable[Chunk]) -> FeatureEncoder:
        """Vocabularies and statistics from the training chunks (one pass; fields in parallel)."""
        counters: dict[str, _CountAccumulator] = {}
        for f in self.spec.of_kind("categorical"):
            if not f.hash_buckets:
                counters[f.name] = _CountAccumulator()
        for f in self.sequence_fields:
            if f.element == "categorical" and f.share_vocab_with is None:
                counters[f.name] = _CountAccumulator()
        sums = {f.name: np.zeros(3) for f in self.dense_numeric_fields}  # count, sum, sum of squares
        missing = {f.name: False for f in self.spec.of_kind("numeric")}
        reservoirs = {
            f.name: _Reservoir(_QUANTILE_SAMPLE, seed=i)
            for i, f in enumerate(self.spec.of_kind("numeric"))
            if f.transform == "quantile"
        }

        def count_values(owner: str, values_of) -> None:
            counters[owner].add(values_of())

        def numeric_stats(chunk: Chunk, f: FieldSpec) -> None:
            values = self._numeric_raw(chunk, f)
            finite = values[~np.isnan(values)]
            missing[f.name] |= len(finite) < len(values)
            if f.transform == "quantile":
                reservoirs[f.name].add(finite)
            else:
                transformed = self._pre_transform(finite, f)
                with np.errstate(over="ignore", invalid="ignore"):
                    sums[f.name] += [len(transformed), transformed.sum(), np.square(transformed).sum()]
                if not np.isfinite(sums[f.name]).all():
                    # the statistics overflow (values beyond ~1e154): name the largest value of the chunk
                    worst = np.zeros(len(values), dtype=bool)
                    worst[np.flatnonzero(~np.isnan(values))[int(np.argmax(np.abs(transformed)))]] = True
                    what = "to standardize" if f.transform == "standardize" else "for a float32 model input"
                    raise _overflow_error(chunk, f, values, worst, what)

        rows = 0
        for chunk in chunks:
            rows += chunk.num_rows
            # one task per accumulator, so no two threads ever touch the same state
            per_owner: dict[str, list] = {}
            for f in self.spec.fields:
                if f.kind == "categorical" and f.name in counters:
                    per_owner.setdefault(f.name, []).append(lambda f=f, chunk=chunk: as_strings(_column(chunk, f)))
                elif f.kind == "sequence" and f.element == "categorical" and self.vocab_owner(f) in counters:
                    per_owner.setdefault(self.vocab_owner(f), []).append(
                        lambda f=f, chunk=chunk: as_strings(
                            pc.list_flatten(_sequence_lists(_column(chunk, f), f, self.spec.reader.list_delimiter))
                        )
                    )
            tasks = [
                (lambda owner=owner, getters=getters: [count_values(owner, g) for g in getters])
                for owner, getters in per_owner.items()
            ]
            tasks += [(lambda f=f, chunk=chunk: numeric_stats(chunk, f)) for f in self.spec.of_kind("numeric")]
            tasks += [(lambda f=f, chunk=chunk: self._labels(chunk, f)) for f in self.spec.labels]  # validates labels
            _run_parallel(tasks)
        if rows == 0:
            raise DataError("the training split has no rows", file=", ".join(self.spec.files["train"]))
        for f in self.spec.of_kind("categorical"):
            state = CategoricalState(hash_buckets=f.hash_buckets)
            if f.name in counters:
                state.vocab = counters[f.name].vocab(f.min_count, exclude=self.null_tokens)
            self.categorical[f.name] = state
        for f in self.sequence_fields:
            if f.element == "categorical" and f.share_vocab_with is None:
                self.categorical[f.name] = CategoricalState(
                    vocab=counters[f.name].vocab(f.min_count, exclude=self.null_tokens)
                )
        for f in self.spec.of_kind("numeric"):
            state = NumericState(has_missing=bool(missing[f.name]))
            if f.transform == "quantile":
                sample = reservoirs[f.name].values
                if len(sample):
                    qs = np.quantile(sample, np.linspace(0, 1, f.quantile_buckets + 1)[1:-1])
                    state.edges = [float(x) for x in np.unique(qs)]
            else:
                count, total, total_sq = sums[f.name]
                if count:
                    state.mean = float(total / count)
                    var = max(float(total_sq / count - state.mean**2), 0.0)
                    state.std = float(np.sqrt(var)) if var > 1e-24 else 1.0
            self.numeric[f.name] = state
        self.fitted = True
        return self

    # -- transforming -----------------------------------------------------------------
    def transform(self, chunk: Chunk, shared: Collection[str] = ()) -> dict[str, np.ndarray | pa.Array]:
        """Arrays for one chunk: `categorical` (n, F) int32, `numeric` (n, D) float32,
        `seq/<name>` (n, L) + `seqlen/<name>` (n,), `labels` (n, K) float32, `group` (n,) int64,
        `ts/<name>` (n,) int64, `text/<name>` Arrow strings. Fields are encoded in parallel.

        `shared` names source columns that hold one value for every row (a served request's user
        context: the user, their history): those are encoded from the first row only and repeated,
        so a request of 100 candidates looks up its history once, not 100 times."""
        self._require_fitted()
        n = chunk.num_rows
        head = Chunk(chunk.file, chunk.first_row, chunk.table.slice(0, 1)) if shared and n > 1 else chunk
        source_of = lambda f: head if f.source in shared else chunk  # noqa: E731
        out: dict[str, np.ndarray | pa.Array] = {}
        cat_fields = self.categorical_fields
        categorical = np.empty((n, len(cat_fields)), dtype=np.int32)
        numeric_names = self.numeric_columns()
        numeric = np.zeros((n, len(numeric_names)), dtype=np.float32)

        def encode_categorical(j: int, f: FieldSpec) -> None:
            rows = source_of(f)  # a shared field's single id is broadcast down the column
            if f.kind == "numeric":
                categorical[:, j] = self.bucketize(self._numeric_raw(rows, f), f)
            else:
                categorical[:, j] = self.encode_values(_column(rows, f), f.name)

        def encode_numeric(f: FieldSpec) -> None:
            state = self.numeric[f.name]
            rows = source_of(f)
            raw = self._numeric_raw(rows, f)
            value, is_missing = self.numeric_values(raw, f)
            too_large = np.abs(value) > np.finfo(np.float32).max  # the model's inputs are float32
            if too_large.any():
                raise _overflow_error(rows, f, raw, too_large, "for a float32 model input")
            column = numeric_names.index(f.name)
            numeric[:, column] = value
            if state.has_missing:
                numeric[:, column + 1] = is_missing

        def encode_sequence(f: FieldSpec) -> None:
            rows = source_of(f)
            lists = _sequence_lists(_column(rows, f), f, self.spec.reader.list_delimiter)
            lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
            flat_values = pc.list_flatten(lists)
            if f.element == "numeric":
                try:
                    parsed = parse_float(flat_values, rows, f, self.null_tokens) if len(flat_values) else np.zeros(0)
                    too_large = np.abs(np.nan_to_num(parsed)) > np.finfo(np.float32).max
                    if too_large.any():
                        raise _overflow_error(rows, f, parsed, too_large, "for a float32 model input")
                except DataError as exc:  # list elements are counted: name the row holding the element
                    row = int(np.searchsorted(np.cumsum(lengths), exc.row - rows.first_row, side="right"))
                    raise DataError(
                        exc.reason, file=exc.file, row=rows.first_row + row, field=exc.field, expected=exc.expected
                    ) from None
                flat = np.nan_to_num(parsed, nan=0.0).astype(np.float32)
            else:
                flat = self.encode_values(flat_values, self.vocab_owner(f))
            padded, kept = pad_sequences(lengths, flat, f.max_len)
            if rows is not chunk:  # one shared history, repeated for every row
                padded, kept = np.repeat(padded, n, axis=0), np.repeat(kept, n)
            out[f"seq/{f.name}"], out[f"seqlen/{f.name}"] = padded, kept

        tasks = [(lambda j=j, f=f: encode_categorical(j, f)) for j, f in enumerate(cat_fields)]
        tasks += [(lambda f=f: encode_numeric(f)) for f in self.dense_numeric_fields]
        tasks += [(lambda f=f: encode_sequence(f)) for f in self.sequence_fields]
        _run_parallel(tasks, n)
        out["categorical"] = categorical
        out["numeric"] = numeric
        if all(f.source in chunk.table.column_names for f in self.spec.labels):  # absent when predicting
            out["labels"] = np.stack([self._labels(chunk, f) for f in self.spec.labels], axis=1).astype(np.float32)
        for key, name in ((self.spec.group_key, "group"), (self.spec.request_key, "request")):
            if key is not None:
                column = chunk.table.column(self.spec.key_column(key)).combine_chunks()
                out[name] = fnv1a_64(as_strings(column)).view(np.int64)
        for f in self.spec.of_kind("timestamp"):
            out[f"ts/{f.name}"] = self._timestamps(chunk, f)
        for f in self.spec.of_kind("text"):
            out[f"text/{f.name}"] = as_strings(_column(chunk, f))
        return {k: out[k] for k in sorted(out)}

    def numeric_values(self, raw: np.ndarray, f: FieldSpec) -> tuple[np.ndarray, np.ndarray]:
        """A dense numeric field's model input from its raw values (NaN: missing), and the missing
        mask; the caller checks that the values fit a float32."""
        state = self.numeric[f.name]
        is_missing = np.isnan(raw)
        value = self._pre_transform(np.where(is_missing, 0.0, raw), f)
        if f.transform == "standardize":
            value = (value - state.mean) / state.std
        value[is_missing] = 0.0
        return value, is_missing

    def encode_values(self, values: pa.Array, owner: str) -> np.ndarray:
        """Ids of the values under the vocab (or hash) of categorical field `owner`. A value is
        its token: integers are looked up as their decimal text, without building that text."""
        if pa.types.is_integer(values.type) and not self.categorical[owner].hash_buckets and values.type != pa.uint64():
            return self._encode_integers(values, owner)
        values = as_strings(values)
        if isinstance(values, pa.DictionaryArray):
            # look up each distinct value once, then gather
            per_value = self.encode_values(values.dictionary.cast(pa.string()), owner)
            indices = pc.fill_null(values.indices, 0).to_numpy(zero_copy_only=False)
            ids = per_value[indices] if len(per_value) else np.full(len(values), MISSING_INDEX, np.int32)
            if values.null_count:
                ids[values.is_null().to_numpy(zero_copy_only=False)] = MISSING_INDEX
            return ids
        state = self.categorical[owner]
        if state.hash_buckets:
            ids = (fnv1a_64(values) % np.uint64(state.hash_buckets)).astype(np.int64) + NUM_RESERVED
            is_missing = pc.or_(pc.is_null(values), pc.is_in(values, value_set=self.null_tokens))
            ids[pc.fill_null(is_missing, True).to_numpy(zero_copy_only=False)] = MISSING_INDEX
            return ids.astype(np.int32)
        # one hash lookup finds vocab ids and null tokens alike: positions past the vocab are missing
        value_set = self._value_set(owner)
        if len(values) <= SMALL_LOOKUP_ROWS:  # a served request: Arrow would hash the whole vocab per call
            lookup = self._lookup(owner)
            index = np.fromiter((lookup.get(v, -1) for v in values.to_pylist()), np.int64, count=len(values))
        else:
            index = pc.fill_null(pc.index_in(values, value_set=value_set), -1).to_numpy(zero_copy_only=False)
        return self._ids_at(index, values, owner)

    def _encode_integers(self, values: pa.Array, owner: str) -> np.ndarray:
        """`encode_values` of an integer column by a sorted search over the integer tokens of the
        value set: the same ids as the text path (token "42" is the integer 42; "042" is no
        integer's text), with no string cast or hash table per call (a served request's hot path)."""
        keys, positions = self._integer_tokens(owner)
        # no Arrow compute call when there is no null: each costs tens of microseconds
        filled = pc.fill_null(values, 0) if values.null_count else values
        numbers = filled.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if len(keys):
            at = np.searchsorted(keys, numbers)
            np.minimum(at, len(keys) - 1, out=at)
            index = np.where(keys[at] == numbers, positions[at], -1)
        else:
            index = np.full(len(numbers), -1, np.int64)
        return self._ids_at(index, values, owner)

    def _ids_at(self, index: np.ndarray, values: pa.Array, owner: str) -> np.ndarray:
        """Ids from positions in the value set (-1: not in it): vocab positions are shifted past
        the reserved ids, unseen values are OOV, null tokens (after the vocab) and nulls missing."""
        ids = index.astype(np.int64) + NUM_RESERVED
        ids[index < 0] = OOV_INDEX
        ids[index >= len(self.categorical[owner].vocab)] = MISSING_INDEX
        if values.null_count:
            ids[values.is_null().to_numpy(zero_copy_only=False)] = MISSING_INDEX
        return ids.astype(np.int32)

    def _integer_tokens(self, owner: str) -> tuple[np.ndarray, np.ndarray]:
        """The value set's tokens that are an integer's decimal text, sorted, with their positions."""
        if owner not in self._integer_index:
            pairs = []
            for position, token in enumerate(self._value_set(owner).to_pylist()):
                try:
                    number = int(token)
                except ValueError:
                    continue
                if str(number) == token and -(2**63) <= number < 2**63:
                    pairs.append((number, position))
            pairs.sort()
            self._integer_index[owner] = (np.array([k for k, _ in pairs], np.int64), np.array([p for _, p in pairs], np.int64))
        return self._integer_index[owner]

    def _lookup(self, owner: str) -> dict[str, int]:
        """The value set as a dict (token -> position), built once: small batches look up in it."""
        if owner not in self._lookups:
            self._lookups[owner] = {token: i for i, token in enumerate(self._value_set(owner).to_pylist())}
        return self._lookups[owner]

    def _value_set(self, owner: str) -> pa.Array:
        if owner not in self._value_sets:
            vocab = self.categorical[owner].vocab
            tokens = [t for t in self.null_tokens.to_pylist() if t not in set(vocab)]
            self._value_sets[owner] = pa.array(vocab + tokens, pa.string())
        return self._value_sets[owner]

    def _numeric_raw(self, chunk: Chunk, f: FieldSpec) -> np.ndarray:
        return parse_float(_column(chunk, f), chunk, f, self.null_tokens)

    @staticmethod
    def _pre_transform(values: np.ndarray, f: FieldSpec) -> np.ndarray:
        if f.transform == "log1p":
            return np.sign(values) * np.log1p(np.abs(values))
        return values.astype(np.float64, copy=True)

    def bucketize(self, values: np.ndarray, f: FieldSpec) -> np.ndarray:
        """Bucket ids of a quantile numeric field's raw values (NaN: missing)."""
        edges = np.asarray(self.numeric[f.name].edges)
        ids = np.searchsorted(edges, np.nan_to_num(values), side="right") + NUM_RESERVED
        ids[np.isnan(values)] = MISSING_INDEX
        return ids

    def _labels(self, chunk: Chunk, f: FieldSpec) -> np.ndarray:
        values = _column(chunk, f)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
            values = pc.if_else(pc.equal(lowered, "true"), "1", pc.if_else(pc.equal(lowered, "false"), "0", values))
        labels = parse_float(values, chunk, f, self.null_tokens, finite=False)
        allowed = (labels == 0) | (labels == 1)
        if f.optional:
            allowed |= np.isnan(labels)
        bad = np.flatnonzero(~allowed)
        if len(bad):
            row = int(bad[0])
            shown = values[row].as_py()
            if isinstance(shown, str) and shown.strip() in self.null_tokens.to_pylist():
                shown = None
            raise DataError(
                f"label value {shown!r} is not binary" if shown is not None else "label is missing",
                file=chunk.file,
                row=chunk.first_row + row,
                field=f.name,
                expected="0 or 1",
            )
        return labels

    def _timestamps(self, chunk: Chunk, f: FieldSpec) -> np.ndarray:
        values = _column(chunk, f)
        if pa.types.is_timestamp(values.type):
            return values.cast(pa.timestamp("s")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        try:
            numbers = pc.cast(as_strings(values), pa.float64())
            return np.nan_to_num(numbers.to_numpy(zero_copy_only=False)).astype(np.int64)
        except pa.ArrowInvalid:
            pass
        try:
            parsed = pc.cast(as_strings(values), pa.timestamp("s"))
        except pa.ArrowInvalid:
            bad = _first_bad_row(values, lambda v: np.datetime64(str(v)))
            raise DataError(
                f"cannot parse {values[bad].as_py()!r} as a timestamp",
                file=chunk.file,
                row=chunk.first_row + bad,
                field=f.name,
                expected="unix seconds or an ISO-8601 date-time",
            ) from None
        return parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("the encoder is not fitted: call fit() on the training split first")

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict:
        self._require_fitted()
        return {
            "version": ENCODER_VERSION,
            "spec": self.spec.model_dump(mode="json"),
            "categorical": {
                k: {"vocab": v.vocab, "hash_buckets": v.hash_buckets} for k, v in self.categorical.items()
            },
            "numeric": {
                k: {"mean": v.mean, "std": v.std, "has_missing": v.has_missing, "edges": v.edges}
                for k, v in self.numeric.items()
            },
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureEncoder:
        if raw.get("version") != ENCODER_VERSION:
            raise ValueError(f"encoder version {raw.get('version')} is not supported (expected {ENCODER_VERSION})")
        encoder = cls(DatasetSpec.model_validate(raw["spec"]))
        encoder.categorical = {k: CategoricalState(**v) for k, v in raw["categorical"].items()}
        encoder.numeric = {k: NumericState(**v) for k, v in raw["numeric"].items()}
        encoder.fitted = True
        return encoder

    @classmethod
    def load(cls, path: str | Path) -> FeatureEncoder:
        return cls.from_dict(json.loads(Path(path).read_text()))

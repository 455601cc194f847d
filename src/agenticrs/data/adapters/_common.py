"""Machinery shared by the adapters: locating bad values, streaming text, conversion caching.

Adapters for layouts the generic reader cannot read directly convert them once into Parquet
files in a caller-chosen `out_dir`. A marker JSON, written last, records the fingerprint of the
source files and settings plus the resulting spec, so a second call with the same inputs is
free and an interrupted conversion (no marker) is redone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agenticrs.data import readers
from agenticrs.data.errors import DataError
from agenticrs.data.fingerprint import fingerprint
from agenticrs.data.readers import require_file
from agenticrs.data.spec import DatasetSpec, ReaderOptions
from agenticrs.runtime.files import atomic_write, atomic_write_text

PathLike = str | Path
SplitFiles = Mapping[str, PathLike | Sequence[PathLike]]

MARKER_NAME = "_conversion.json"
BLOCK_SIZE = 16 << 20
CHUNK_ROWS = 262_144
SPLITS = ("train", "valid", "test")
# A byte that never occurs in text layouts: reading with it as delimiter yields whole lines.
_LINE_DELIMITER = "\x1f"


# --- files ----------------------------------------------------------------------------------
def split_files(files: SplitFiles) -> dict[str, list[Path]]:
    """Normalise `{split: path or paths}`; 'train' is required and every file must exist."""
    out: dict[str, list[Path]] = {}
    for split, value in files.items():
        paths = [value] if isinstance(value, (str, Path)) else list(value)
        if not paths:
            raise DataError(f"split '{split}' names no files", expected="at least one file per split")
        out[split] = [require_file(p) for p in paths]
    if "train" not in out:
        raise DataError(f"no 'train' split among {sorted(out)}", expected="files for a 'train' split")
    return out


def all_sources(files: Mapping[str, list[Path]]) -> list[Path]:
    return [p for split in sorted(files) for p in files[split]]


# --- locating bad values ---------------------------------------------------------------------
def _castable(values: pa.Array, to: pa.DataType) -> bool:
    try:
        pc.cast(values, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def first_unparseable(values: pa.Array, to: pa.DataType) -> int:
    """Index of the first value that does not cast to `to` (bisection: O(n log n), error path only)."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _castable(values.slice(lo, mid - lo), to):
            lo = mid
        else:
            hi = mid
    return lo


def parse_numbers(
    values: pa.Array | pa.ChunkedArray,
    to: pa.DataType,
    *,
    file: str,
    rows: np.ndarray,
    field: str,
    expected: str,
) -> pa.Array:
    """Cast strings to numbers; a bad or missing value raises DataError with its row (rows[i])."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    try:
        out = pc.cast(values, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = first_unparseable(values, to)
        raise DataError(
            f"cannot parse {values[bad].as_py()!r}", file=file, row=int(rows[bad]), field=field, expected=expected
        ) from None
    if out.null_count:
        bad = int(np.flatnonzero(np.asarray(out.is_null()))[0])
        raise DataError("missing value", file=file, row=int(rows[bad]), field=field, expected=expected)
    return out


def first_false(mask: pa.Array | np.ndarray) -> int | None:
    """Index of the first False (or null) in a boolean mask, or None when all hold."""
    arr = np.asarray(pc.fill_null(mask, False)) if isinstance(mask, (pa.Array, pa.ChunkedArray)) else mask
    bad = np.flatnonzero(~arr)
    return int(bad[0]) if len(bad) else None


# --- streaming text ---------------------------------------------------------------------------
def iter_csv(
    path: PathLike,
    *,
    column_names: list[str] | None = None,
    delimiter: str = ",",
    quote_char: str | bool = '"',
    encoding: str = "utf8",
    block_size: int = BLOCK_SIZE,
    null_values: Sequence[str] = (),
    columns: list[str] | None = None,
) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """Yield (1-based data-row numbers, block of string columns) of a delimited file.

    The file is read by `readers.iter_csv` (header line unless `column_names`; cells equal to one
    of `null_values` become null). Empty lines are kept (as empty values) so row numbers stay
    physical; a line with the wrong number of values raises DataError naming its row, and so does
    a file without data rows.
    """
    options = ReaderOptions(
        delimiter=delimiter,
        header=column_names is None,
        column_names=column_names,
        null_values=list(null_values),
        block_size=block_size,
    )
    chunks = readers.iter_csv(
        path,
        options,
        columns,
        encoding=encoding,
        quote_char=quote_char,
        keep_empty_lines=True,
        null_strings=bool(null_values),
        use_threads=True,
    )
    total = 0
    for chunk in chunks:
        yield chunk.row_numbers, chunk.table
        total += chunk.num_rows
    if total == 0:
        raise DataError("the file holds no data rows", file=str(Path(path)), expected="data rows")


def iter_lines(
    path: PathLike, *, encoding: str = "utf8", block_size: int = BLOCK_SIZE, skip_blank: bool = True
) -> Iterator[tuple[np.ndarray, pa.Array]]:
    """Yield (1-based line numbers, lines) blocks of a text file (plain or .gz), whole lines as strings.

    Blank lines are dropped when `skip_blank` (line numbers of the others stay physical).
    """
    seen = False
    for rows, table in iter_csv(
        path,
        column_names=["line"],
        delimiter=_LINE_DELIMITER,
        quote_char=False,
        encoding=encoding,
        block_size=block_size,
        null_values=(),
    ):
        lines = pc.utf8_trim_whitespace(table.column("line").combine_chunks())
        if skip_blank:
            keep = np.asarray(pc.greater(pc.utf8_length(lines), 0))
            if not keep.all():
                lines = lines.filter(pa.array(keep))
                rows = rows[keep]
        if len(lines):
            seen = True
            yield rows, lines
    if not seen:
        raise DataError("the file holds no data lines", file=str(path), expected="data rows")


def split_tokens(values: pa.Array, pattern: str, *, regex: bool = False) -> pa.ListArray:
    """Split strings into lists of tokens, dropping empty tokens; a null becomes an empty list."""
    values = pc.utf8_trim_whitespace(values)
    lists = pc.split_pattern_regex(values, pattern) if regex else pc.split_pattern(values, pattern)
    flat = pc.list_flatten(lists)
    parents = np.asarray(pc.list_parent_indices(lists))
    keep = np.asarray(pc.greater(pc.utf8_length(flat), 0))
    counts = np.bincount(parents[keep], minlength=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)))


def read_first_line(path: PathLike, encoding: str = "utf8") -> str:
    """The first line of a (possibly gzipped) text file."""
    path = require_file(path)
    with pa.input_stream(str(path), compression="detect") as stream:
        data = b""
        while b"\n" not in data:
            block = stream.read(1 << 16)
            if not block:
                break
            data += block
    line = data.split(b"\n", 1)[0].rstrip(b"\r").decode(encoding, errors="replace")
    if not line.strip():
        raise DataError("the first line is empty", file=str(path), row=1, expected="data rows")
    return line


# --- histories --------------------------------------------------------------------------------
def group_positions(sorted_groups: np.ndarray) -> np.ndarray:
    """For an array sorted by group, each element's 0-based position within its group."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return np.arange(n, dtype=np.int64) - starts[np.cumsum(new) - 1]


def history_lists(values: pa.Array, positions: np.ndarray, rows: np.ndarray, max_len: int) -> pa.ListArray:
    """For each of `rows` (indices into group-sorted `values`), the up to `max_len` previous
    values of its group, oldest first - vectorised (no per-row Python)."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.minimum(positions[rows], max_len)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total >= 2**31:
        raise ValueError("history chunk too large; write fewer rows per chunk")
    idx = np.repeat(rows - lengths - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values.take(pa.array(idx)))


def as_strings(values: np.ndarray | pa.Array) -> pa.Array:
    """Categorical ids are stored as strings (the spec's convention)."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    return pc.cast(arr, pa.string())


# --- Parquet output and the conversion marker ------------------------------------------------
class ParquetSink:
    """Write tables to `path` chunk by chunk; the file appears under its name only when complete."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._file = ExitStack()  # the atomic temp file the writer streams into
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> ParquetSink:
        with ExitStack() as stack:  # a writer that fails to open removes its temp file
            handle = stack.enter_context(atomic_write(self.path))
            self._writer = pq.ParquetWriter(handle, self.schema, compression="zstd")
            self._file = stack.pop_all()
        return self

    def write(self, table: pa.Table) -> None:
        assert self._writer is not None
        if table.num_rows:
            self._writer.write_table(table.select(self.schema.names).cast(self.schema))
            self.rows += table.num_rows

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._writer is not None
        try:
            self._writer.close()  # writes the footer
        except BaseException as error:  # a file without its footer must not be published
            self._file.__exit__(type(error), error, error.__traceback__)
            raise
        self._file.__exit__(exc_type, exc, tb)  # publishes the file, or removes it on an error


def conversion_key(sources: Sequence[PathLike], settings: Mapping[str, object]) -> str:
    return fingerprint([str(s) for s in sources], dict(settings))


def load_cached(out_dir: PathLike, key: str) -> DatasetSpec | None:
    """The spec of a finished conversion with this key, or None (absent, other key, files gone)."""
    marker = Path(out_dir) / MARKER_NAME
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        spec = DatasetSpec.model_validate(data["spec"])
    except (KeyError, ValueError):
        return None
    if not all(Path(p).is_file() for paths in spec.files.values() for p in paths):
        return None
    return spec


def begin_conversion(out_dir: PathLike) -> Path:
    """Create `out_dir` and drop any old marker, so a crash from here on leaves no valid marker."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_NAME).unlink(missing_ok=True)
    return out.resolve()


def finish_conversion(out_dir: PathLike, key: str, spec: DatasetSpec, settings: Mapping[str, object]) -> None:
    """Write the marker last (atomically), naming the key, the settings and the spec."""
    payload = {"key": key, "settings": dict(settings), "spec": spec.model_dump(mode="json")}
    atomic_write_text(Path(out_dir) / MARKER_NAME, json.dumps(payload, indent=1, default=str))


def require_rows(split: str, rows: int, source: str, hint: str) -> None:
    if rows == 0:
        raise DataError(f"the '{split}' split came out empty; {hint}", file=source, expected="rows in every split")


class Conversion:
    """One adapter run into `out_dir`: the finished conversion of the same sources and settings
    (`cached`, to be returned as is), or else the splits written as `<split>.parquet` one by one
    and the spec of those files, with the marker written last.

        conversion = Conversion(out_dir, sources, settings)
        if conversion.cached is not None:
            return conversion.cached
        with conversion.split("train", schema, source, "what to change when it is empty") as sink:
            sink.write(table)
        ...
        return conversion.finish(name=..., fields=..., description=...)
    """

    def __init__(self, out_dir: PathLike, sources: Sequence[PathLike], settings: Mapping[str, object]) -> None:
        self.out_dir = Path(out_dir)
        self.settings = dict(settings)
        self.key = conversion_key(sources, self.settings)
        self.cached = load_cached(self.out_dir, self.key)
        self.files: dict[str, list[str]] = {}
        self._out: Path | None = None

    @contextmanager
    def split(
        self, split: str, schema: pa.Schema, source: PathLike | Sequence[PathLike], hint: str
    ) -> Iterator[ParquetSink]:
        """A sink for the split's Parquet file; a split without rows raises DataError naming `source`.

        The first split drops any old marker (see `begin_conversion`).
        """
        if self._out is None:
            self._out = begin_conversion(self.out_dir)
        target = self._out / f"{split}.parquet"
        with ParquetSink(target, schema) as sink:
            yield sink
        sources = [source] if isinstance(source, (str, Path)) else source
        require_rows(split, sink.rows, ", ".join(map(str, sources)), hint)
        self.files[split] = [str(target)]

    def finish(self, **spec: Any) -> DatasetSpec:
        """The spec of the written splits (read as Parquet; `spec` gives its other fields), then the marker."""
        if self._out is None:
            raise RuntimeError("finish() before any split was written")
        result = DatasetSpec(files=self.files, reader=ReaderOptions(format="parquet"), **spec)
        finish_conversion(self._out, self.key, result, self.settings)
        return result

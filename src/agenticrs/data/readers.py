"""Streaming readers: raw CSV/TSV/Parquet files -> Arrow record batches of bounded size.

Every needed column arrives as a string column (CSV) or its stored type (Parquet); typed
conversion happens in the encoder, which can then name the exact row and field of a bad value.
Reading in blocks keeps memory bounded whatever the file size.

`iter_csv` is the one streaming reader of delimited text: the processing pipeline reads the
spec's files through `iter_chunks`, and the adapters read raw layouts through it too (with their
own encoding, quoting and empty-line handling).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from agenticrs.data.errors import DataError
from agenticrs.data.spec import ReaderOptions


@dataclass(frozen=True)
class Chunk:
    """A block of rows; `first_row` is the 1-based data-row number of its first row in `file`."""

    file: str
    first_row: int
    table: pa.Table

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def row_numbers(self) -> np.ndarray:
        """The 1-based data-row number of every row of the chunk."""
        return np.arange(self.first_row, self.first_row + self.num_rows)


def require_file(path: str | Path) -> Path:
    """A readable, non-empty file, or a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if path.stat().st_size == 0:
        raise DataError("the file is empty", file=str(path), expected="data rows")
    return path


def _require_columns(path: Path, columns: list[str], available: list[str]) -> None:
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the file has {available}",
            file=str(path),
            field=missing[0],
            expected="every column the dataset spec or the file layout names",
        )


# --- delimited text ---------------------------------------------------------------------------
# leading bytes of binary formats that are sometimes saved under a text name (`train.csv`)
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data", (".gz",)),
    (b"BZh", "bzip2-compressed data", (".bz2",)),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", (".zst",)),
    (b"\x04\x22\x4d\x18", "lz4-compressed data", (".lz4",)),
    (b"\xfd7zXZ\x00", "xz-compressed data", ()),
    (b"PK\x03\x04", "a zip archive", ()),
    (b"PAR1", "Parquet data", ()),
)


def _require_text(path: Path) -> None:
    """A DataError when a file read as delimited text holds a compressed or binary format instead.

    Arrow picks the decompressor from the file name, so gzip bytes named `.csv` would be parsed as
    text and fail on a garbled line; this names the real content and the fix instead.
    """
    with path.open("rb") as handle:
        head = handle.read(8)
    if path.name.endswith((".gz", ".bz2", ".zst", ".lz4")):
        try:  # what the decompressed text starts with
            with pa.input_stream(str(path), compression="detect") as stream:
                head = stream.read(8)
        except (OSError, pa.ArrowException):
            return  # not what its name says: Arrow's own error names the file
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError("the file is UTF-16 text (it starts with a UTF-16 byte-order mark)", file=str(path),
                        expected="UTF-8 text: save the file as UTF-8")  # fmt: skip
    for magic, what, suffixes in _MAGIC:
        if not head.startswith(magic) or path.name.endswith(suffixes or ("\0",)):
            continue
        if what == "Parquet data":
            fix = "set reader.format: parquet in the dataset spec"
        elif suffixes:
            fix = f"a name ending in {suffixes[0]} (e.g. {path.name}{suffixes[0]}), so that it is decompressed"
        else:
            fix = "unpack it first"
        raise DataError(f"the file holds {what}, not delimited text", file=str(path), expected=fix)


def _one_line(text: str, limit: int = 120) -> str:
    """`text` quoted on one line (control characters escaped), cut to about `limit` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


@contextmanager
def _no_unraisable_reports() -> Iterator[None]:
    """Silence "Exception ignored in ..." reports while Arrow calls back into Python.

    Arrow decodes an invalid row's text before calling the handler; bytes that are not UTF-8 make
    that decoding fail inside the callback, which Python can only report on stderr (an
    ignored-exception traceback before the real message). The scan does without the text then.
    """
    previous = sys.unraisablehook
    sys.unraisablehook = lambda _unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


# "In CSV column #1: Row #401: CSV conversion error to string: invalid UTF8 data"
# "CSV parse error: Row #3: Expected 2 columns, got 3: 3,4,5"
_ARROW_ROW = re.compile(r"Row #(\d+)")
_ARROW_COLUMN = re.compile(r"In CSV column #(\d+)")
_ARROW_RAGGED = re.compile(r"Row #\d+: (Expected \d+ columns, got \d+): ?(.*)", re.DOTALL)


def _locate_csv_error(
    path: Path, read_options: pacsv.ReadOptions, parse_options: pacsv.ParseOptions, header_lines: int
) -> tuple[int | None, str | None]:
    """Re-scan single-threaded to learn the data row and text of a malformed line (error path only).

    Nothing is converted, so the scan stops at the first line with the wrong number of values.
    """
    found: list[tuple[int | None, str]] = []

    def handler(row: pacsv.InvalidRow) -> str:
        found.append((row.number, row.text))
        return "error"

    opts = pacsv.ReadOptions(
        block_size=read_options.block_size,
        column_names=read_options.column_names,
        autogenerate_column_names=read_options.autogenerate_column_names,
        encoding=read_options.encoding,
        use_threads=False,
    )
    popts = pacsv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        ignore_empty_lines=parse_options.ignore_empty_lines,
        invalid_row_handler=handler,
    )
    try:
        with _no_unraisable_reports():
            reader = pacsv.open_csv(
                pa.input_stream(str(path), compression="detect"),
                read_options=opts,
                parse_options=popts,
                convert_options=pacsv.ConvertOptions(include_columns=[]),
            )
            for _ in reader:
                pass
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError):
        pass
    if not found:
        return None, None
    number, text = found[0]
    return (number - header_lines if number is not None else None), text


@dataclass(frozen=True)
class _CsvFile:
    """One delimited file and how to read it: the spec's `ReaderOptions` plus the text knobs."""

    path: Path
    options: ReaderOptions
    encoding: str
    quote_char: str | bool
    keep_empty_lines: bool
    use_threads: bool

    def read_options(self, skip_rows: int = 0) -> pacsv.ReadOptions:
        header = self.options.header
        return pacsv.ReadOptions(
            block_size=self.options.block_size,
            skip_rows_after_names=skip_rows,
            column_names=None if header else self.options.column_names,
            autogenerate_column_names=not header and self.options.column_names is None,
            encoding=self.encoding,
            use_threads=self.use_threads,
        )

    def parse_options(self) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(
            delimiter=self.options.delimiter,
            quote_char=self.quote_char,
            ignore_empty_lines=not self.keep_empty_lines,
        )

    def open(self, convert_options: pacsv.ConvertOptions, skip_rows: int = 0) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            pa.input_stream(str(self.path), compression="detect"),
            read_options=self.read_options(skip_rows),
            parse_options=self.parse_options(),
            convert_options=convert_options,
        )

    def parse_error(
        self, exc: Exception, row: int | None = None, expected: str | None = None, columns: list[str] | None = None
    ) -> DataError:
        """A DataError for a parse failure, naming the malformed line, its row (and column) where it can be found.

        Arrow's message names the physical row when it reads single-threaded (`Row #401`: the header
        is row 1); otherwise the file is re-scanned to find it. Nothing of the file is shown but the
        malformed line itself, quoted on one line.
        """
        header_lines = 1 if self.options.header else 0
        message = str(exc)
        at_row = _ARROW_ROW.search(message)
        at_column = _ARROW_COLUMN.search(message)
        field = None
        if at_column is not None and columns is not None and int(at_column.group(1)) < len(columns):
            field = columns[int(at_column.group(1))]
        if isinstance(exc, UnicodeDecodeError) or "invalid UTF8" in message:
            encoding = "UTF-8" if self.encoding.lower().replace("-", "") == "utf8" else self.encoding
            return DataError(
                f"the text is not valid {encoding}",
                file=str(self.path),
                row=int(at_row.group(1)) - header_lines if at_row else None,
                field=field,
                expected=f"{encoding} text",
            )
        if at_row is not None:
            located, text = int(at_row.group(1)) - header_lines, None
            ragged = _ARROW_RAGGED.search(message)
            if ragged is not None:
                detail, text = ragged.group(1).lower(), ragged.group(2).rstrip("\r\n")
                others = [d for d in (",", "\t", ";", "|") if d != self.options.delimiter and d in text]
                if detail.endswith("got 1") and others:
                    detail += f" (the line holds {others[0]!r}: is reader.delimiter {self.options.delimiter!r} right?)"
        else:
            located, text = _locate_csv_error(self.path, self.read_options(), self.parse_options(), header_lines)
            detail = None
        detail = detail or _one_line(message.splitlines()[0] if message else type(exc).__name__, 200).strip("'\"")
        return DataError(
            f"malformed line {_one_line(text)}: {detail}" if text is not None else f"cannot parse as CSV: {detail}",
            file=str(self.path),
            row=located if located is not None else row,
            field=field,
            expected=expected,
        )

    def header(self) -> list[str]:
        """The column names (from the header line, or as given); reads only the first block."""
        try:
            return self.open(pacsv.ConvertOptions(column_types={}, include_columns=[])).schema.names
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
            if "Empty CSV file" in str(exc):
                expected = "a header and data rows" if self.options.header else "data rows"
                raise DataError("the file is empty", file=str(self.path), expected=expected) from None
            raise self.parse_error(exc) from None


def read_csv_header(path: str | Path, options: ReaderOptions, *, encoding: str = "utf8") -> list[str]:
    """The column names of a delimited file (its header line, or `options.column_names`)."""
    csv = _CsvFile(require_file(path), options, encoding, '"', keep_empty_lines=False, use_threads=False)
    _require_text(csv.path)
    return csv.header()


def iter_csv(
    path: str | Path,
    options: ReaderOptions,
    columns: list[str] | None = None,
    float_columns: frozenset[str] | set[str] = frozenset(),
    *,
    encoding: str = "utf8",
    quote_char: str | bool = '"',
    keep_empty_lines: bool = False,
    null_strings: bool = False,
    use_threads: bool = False,
) -> Iterator[Chunk]:
    """Yield the `columns` (all when None) of a delimited text file (plain or compressed) block by block.

    `float_columns` are parsed as numbers by the CSV reader itself (the fast path). If one of
    them holds a value that is not a number, reading goes on from that block with every column
    as text, so that the encoder can accept it ("true") or report its exact row. Other columns
    are strings; they are null for the `options.null_values` only when `null_strings` (null
    detection costs ~30% of parsing, so the pipeline leaves it to the encoder).

    `keep_empty_lines` yields empty lines as (empty) rows, so that row numbers stay physical.
    `use_threads=False` suits the pipeline, which reads in its own thread while other cores encode.
    A missing column, an empty file or a line with the wrong number of values raises DataError
    naming the file (and the row of the malformed line).
    """
    csv = _CsvFile(require_file(path), options, encoding, quote_char, keep_empty_lines, use_threads)
    _require_text(csv.path)
    available = csv.header()
    wanted = available if columns is None else columns
    _require_columns(csv.path, wanted, available)
    float_columns = frozenset(float_columns) & frozenset(wanted)
    expected = f"{len(available)} values separated by {options.delimiter!r}"

    def open_reader(skip_rows: int) -> pacsv.CSVStreamingReader:
        return csv.open(
            pacsv.ConvertOptions(
                column_types={c: pa.float64() if c in float_columns else pa.string() for c in wanted},
                include_columns=wanted,
                null_values=options.null_values,
                strings_can_be_null=null_strings,
            ),
            skip_rows,
        )

    first_row = 1
    reader = None
    while True:
        try:
            if reader is None:  # opening converts the first block: it may hold the bad cell
                reader = open_reader(skip_rows=first_row - 1)
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
            if float_columns and "conversion error" in str(exc).lower() and "invalid UTF8" not in str(exc):
                # a non-numeric cell in a numeric column: re-read the rest as text
                float_columns = frozenset()
                reader = None
                continue
            raise csv.parse_error(exc, row=first_row, expected=expected, columns=available) from None
        if batch.num_rows == 0:
            continue
        yield Chunk(str(csv.path), first_row, pa.Table.from_batches([batch]))
        first_row += batch.num_rows


# --- the pipeline's entry points --------------------------------------------------------------
def iter_chunks(
    path: str | Path,
    options: ReaderOptions,
    columns: list[str],
    float_columns: frozenset[str] | set[str] = frozenset(),
) -> Iterator[Chunk]:
    """Yield the `columns` of one file (CSV/TSV as `iter_csv` reads it, or Parquet) block by block."""
    path = require_file(path)
    if options.format == "parquet":
        yield from _iter_parquet(path, options, columns)
        return
    yield from iter_csv(path, options, columns, float_columns)


def _iter_parquet(path: Path, options: ReaderOptions, columns: list[str]) -> Iterator[Chunk]:
    try:
        parquet = pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot open as Parquet: {exc}", file=str(path)) from None
    _require_columns(path, columns, parquet.schema_arrow.names)
    row_width = max(1, len(columns)) * 16
    batch_rows = max(1024, options.block_size // row_width)
    first_row = 1
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        if batch.num_rows == 0:
            continue
        yield Chunk(str(path), first_row, pa.Table.from_batches([batch]))
        first_row += batch.num_rows


def iter_split(
    files: list[str],
    options: ReaderOptions,
    columns: list[str],
    float_columns: frozenset[str] | set[str] = frozenset(),
) -> Iterator[Chunk]:
    """Chunks of all files of one split, in order; raises if the split holds no rows."""
    total = 0
    for file in files:
        for chunk in iter_chunks(file, options, columns, float_columns):
            total += chunk.num_rows
            yield chunk
    if total == 0:
        raise DataError("no data rows", file=", ".join(files), expected="at least one row")

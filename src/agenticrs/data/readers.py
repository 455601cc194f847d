"""Streaming readers: raw CSV/TSV/Parquet files -> Arrow record batches of bounded size.

Every needed column arrives as a string column (CSV) or its stored type (Parquet); typed
conversion happens in the encoder, which can then name the exact row and field of a bad value.
Reading in blocks keeps memory bounded whatever the file size.

`iter_csv` is the one streaming reader of delimited text: the processing pipeline reads the
spec's files through `iter_chunks`, and the adapters read raw layouts through it too (with their
own encoding, quoting and empty-line handling).
"""

from __future__ import annotations

from collections.abc import Iterator
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
        reader = pacsv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=opts,
            parse_options=popts,
            convert_options=pacsv.ConvertOptions(include_columns=[]),
        )
        for _ in reader:
            pass
    except (pa.ArrowInvalid, UnicodeDecodeError):
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

    def parse_error(self, exc: Exception, row: int | None = None, expected: str | None = None) -> DataError:
        """A DataError for a parse failure, naming the malformed line and its row where it can be found."""
        header_lines = 1 if self.options.header else 0
        located, text = _locate_csv_error(self.path, self.read_options(), self.parse_options(), header_lines)
        return DataError(
            f"malformed line {text!r}: {exc}" if text is not None else f"cannot parse as CSV: {exc}",
            file=str(self.path),
            row=located if located is not None else row,
            expected=expected,
        )

    def header(self) -> list[str]:
        """The column names (from the header line, or as given); reads only the first block."""
        try:
            return self.open(pacsv.ConvertOptions(column_types={}, include_columns=[])).schema.names
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if "Empty CSV file" in str(exc):
                expected = "a header and data rows" if self.options.header else "data rows"
                raise DataError("the file is empty", file=str(self.path), expected=expected) from None
            raise self.parse_error(exc) from None


def read_csv_header(path: str | Path, options: ReaderOptions, *, encoding: str = "utf8") -> list[str]:
    """The column names of a delimited file (its header line, or `options.column_names`)."""
    csv = _CsvFile(require_file(path), options, encoding, '"', keep_empty_lines=False, use_threads=False)
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
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if float_columns and "conversion error" in str(exc).lower():
                # a non-numeric cell in a numeric column: re-read the rest as text
                float_columns = frozenset()
                reader = None
                continue
            raise csv.parse_error(exc, row=first_row, expected=expected) from None
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

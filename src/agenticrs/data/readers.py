"""Streaming readers: raw CSV/TSV/Parquet files -> Arrow record batches of bounded size.

Every needed column arrives as a string column (CSV) or its stored type (Parquet); typed
conversion happens in the encoder, which can then name the exact row and field of a bad value.
Reading in blocks keeps memory bounded whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def _csv_reader(
    path: Path,
    options: ReaderOptions,
    columns: list[str],
    float_columns: frozenset[str] = frozenset(),
    skip_rows: int = 0,
) -> pacsv.CSVStreamingReader:
    read_options = pacsv.ReadOptions(
        block_size=options.block_size,
        skip_rows_after_names=skip_rows,
        column_names=None if options.header else options.column_names,
        autogenerate_column_names=not options.header and options.column_names is None,
        use_threads=False,  # the pipeline reads in its own thread while other cores encode
    )
    parse_options = pacsv.ParseOptions(delimiter=options.delimiter, quote_char='"')
    try:
        head_reader = pacsv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=pacsv.ConvertOptions(
                column_types={}, include_columns=[], null_values=options.null_values
            ),
        )
        available = head_reader.schema.names
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "Empty CSV file" in message:
            raise DataError("the file is empty", file=str(path), expected="a header and data rows") from None
        raise DataError(f"cannot parse as CSV: {message}", file=str(path)) from None
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the file has {available}",
            file=str(path),
            field=missing[0],
            expected="every column the dataset spec names",
        )
    convert_options = pacsv.ConvertOptions(
        column_types={c: pa.float64() if c in float_columns else pa.string() for c in columns},
        include_columns=columns,
        null_values=options.null_values,
        # strings stay strings here (null detection costs ~30% of parsing); the encoder treats
        # cells equal to a null token as missing
        strings_can_be_null=False,
    )
    return pacsv.open_csv(
        pa.input_stream(str(path), compression="detect"),
        read_options=read_options,
        parse_options=parse_options,
        convert_options=convert_options,
    )


def iter_chunks(
    path: str | Path,
    options: ReaderOptions,
    columns: list[str],
    float_columns: frozenset[str] | set[str] = frozenset(),
) -> Iterator[Chunk]:
    """Yield the `columns` of one file block by block.

    `float_columns` are parsed as numbers by the CSV reader itself (the fast path). If one of
    them holds a value that is not a number, reading goes on from that block with every column
    as text, so that the encoder can accept it ("true") or report its exact row.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.stat().st_size == 0:
        raise DataError("the file is empty", file=str(path), expected="data rows")
    if options.format == "parquet":
        yield from _iter_parquet(path, options, columns)
        return
    float_columns = frozenset(float_columns) & frozenset(columns)
    first_row = 1
    try:
        reader = _csv_reader(path, options, columns, float_columns)
    except pa.ArrowInvalid as exc:  # opening converts the first block: it may hold the bad cell
        if not (float_columns and "conversion error" in str(exc).lower()):
            raise DataError(f"cannot parse as CSV: {exc}", file=str(path)) from None
        float_columns = frozenset()
        reader = _csv_reader(path, options, columns, float_columns)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            if float_columns and "conversion error" in str(exc).lower():
                # a non-numeric cell in a numeric column: re-read the rest as text
                float_columns = frozenset()
                reader = _csv_reader(path, options, columns, float_columns, skip_rows=first_row - 1)
                continue
            raise DataError(f"cannot parse as CSV near row {first_row}: {exc}", file=str(path)) from None
        if batch.num_rows == 0:
            continue
        yield Chunk(str(path), first_row, pa.Table.from_batches([batch]))
        first_row += batch.num_rows


def _iter_parquet(path: Path, options: ReaderOptions, columns: list[str]) -> Iterator[Chunk]:
    try:
        parquet = pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot open as Parquet: {exc}", file=str(path)) from None
    available = parquet.schema_arrow.names
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the file has {available}",
            file=str(path),
            field=missing[0],
            expected="every column the dataset spec names",
        )
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

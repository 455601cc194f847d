"""Streaming readers: CSV/TSV/gzip/Parquet chunks, row numbering and clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenticrs.data.errors import DataError
from agenticrs.data.readers import iter_chunks, iter_split
from agenticrs.data.spec import ReaderOptions

N = 300


def _rows(n: int = N) -> list[list[str]]:
    return [[f"u{i % 13}", f"item{i}", str(i * 0.5), str(i % 2)] for i in range(n)]


def _write_csv(path: Path, rows: list[list[str]], header: list[str] | None, delimiter: str = ",") -> Path:
    lines = ([delimiter.join(header)] if header else []) + [delimiter.join(r) for r in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


HEADER = ["user", "item", "price", "label"]


def _collect(chunks) -> tuple[list, dict[str, list]]:
    chunks = list(chunks)
    table = pa.concat_tables([c.table for c in chunks])
    return chunks, table.to_pydict()


def _check_numbering(chunks) -> None:
    expected = 1
    for c in chunks:
        assert c.first_row == expected
        assert c.num_rows > 0
        expected += c.num_rows


def test_csv_with_header_reads_strings_in_requested_order(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv", _rows(), HEADER)
    chunks, data = _collect(iter_chunks(path, ReaderOptions(), ["price", "user"]))
    assert len(chunks) == 1
    assert chunks[0].first_row == 1
    assert chunks[0].file == str(path)
    assert chunks[0].table.column_names == ["price", "user"]
    assert all(pa.types.is_string(t) for t in chunks[0].table.schema.types)  # no type inference
    assert data["price"] == [str(i * 0.5) for i in range(N)]
    assert data["user"] == [f"u{i % 13}" for i in range(N)]


def test_numbers_stay_strings_exactly(tmp_path: Path):
    path = tmp_path / "z.csv"
    path.write_text("code,label\n007,1\n1e3,0\n")
    _, data = _collect(iter_chunks(path, ReaderOptions(), ["code"]))
    assert data["code"] == ["007", "1e3"]


def test_csv_small_blocks_number_rows(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv", _rows(), HEADER)
    chunks, data = _collect(iter_chunks(path, ReaderOptions(block_size=256), ["item", "label"]))
    assert len(chunks) > 3
    _check_numbering(chunks)
    assert sum(c.num_rows for c in chunks) == N
    assert data["item"] == [f"item{i}" for i in range(N)]
    # first_row points at the chunk's first data row
    for c in chunks:
        assert c.table.column("item")[0].as_py() == f"item{c.first_row - 1}"


def test_headerless_with_column_names(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv", _rows(), None)
    options = ReaderOptions(header=False, column_names=HEADER, block_size=256)
    chunks, data = _collect(iter_chunks(path, options, ["user", "label"]))
    assert len(chunks) > 1
    _check_numbering(chunks)
    # no header: the first line is data row 1
    assert data["user"][0] == "u0"
    assert data["label"] == [str(i % 2) for i in range(N)]
    assert len(data["user"]) == N


def test_headerless_missing_column_names_the_column(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv", _rows(5), None)
    options = ReaderOptions(header=False, column_names=HEADER)
    with pytest.raises(DataError) as info:
        list(iter_chunks(path, options, ["user", "clicks"]))
    assert info.value.field == "clicks"
    assert info.value.file == str(path)


def test_tsv_delimiter(tmp_path: Path):
    rows = [["u1", "a b,c", "1.5", "1"], ["u2", "d", "2", "0"]]  # commas and spaces inside values
    path = _write_csv(tmp_path / "a.tsv", rows, HEADER, delimiter="\t")
    _, data = _collect(iter_chunks(path, ReaderOptions(delimiter="\t"), ["item", "price"]))
    assert data == {"item": ["a b,c", "d"], "price": ["1.5", "2"]}


def test_gzip_csv(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv.gz", _rows(), HEADER)
    chunks, data = _collect(iter_chunks(path, ReaderOptions(block_size=256), ["item"]))
    _check_numbering(chunks)
    assert data["item"] == [f"item{i}" for i in range(N)]


def test_quoted_cells(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text('user,item,label\nu1,"a,b",1\nu2,"say ""hi""",0\n')
    _, data = _collect(iter_chunks(path, ReaderOptions(), ["item", "label"]))
    assert data["item"] == ["a,b", 'say "hi"']
    assert data["label"] == ["1", "0"]


def test_parquet_with_list_columns_and_batches(tmp_path: Path):
    n = 3000
    table = pa.table(
        {
            "user": pa.array([i % 17 for i in range(n)], pa.int64()),
            "hist": pa.array([list(range(i % 4)) for i in range(n)], pa.list_(pa.int64())),
            "label": pa.array([i % 2 for i in range(n)], pa.int8()),
            "unused": pa.array([str(i) for i in range(n)]),
        }
    )
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=700)
    options = ReaderOptions(format="parquet", block_size=1)  # smallest batches the reader allows
    chunks, data = _collect(iter_chunks(path, options, ["hist", "user"]))
    assert len(chunks) >= 2
    _check_numbering(chunks)
    assert chunks[0].table.column_names == ["hist", "user"]
    assert chunks[0].table.schema.field("hist").type == pa.list_(pa.int64())  # stored types are kept
    assert data["hist"] == table.column("hist").to_pylist()
    assert data["user"] == table.column("user").to_pylist()


def test_parquet_missing_column(tmp_path: Path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(DataError) as info:
        list(iter_chunks(path, ReaderOptions(format="parquet"), ["a", "b"]))
    assert info.value.field == "b"
    assert str(path) in str(info.value)


def test_not_parquet(tmp_path: Path):
    path = tmp_path / "a.parquet"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="Parquet") as info:
        list(iter_chunks(path, ReaderOptions(format="parquet"), ["a"]))
    assert info.value.file == str(path)


def test_missing_column_names_file_and_column(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv", _rows(5), HEADER)
    with pytest.raises(DataError) as info:
        list(iter_chunks(path, ReaderOptions(), ["user", "clicks"]))
    err = info.value
    assert err.file == str(path)
    assert err.field == "clicks"
    assert str(path) in str(err)
    assert "clicks" in str(err)
    assert "user" in str(err)  # lists what the file does have


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="not found") as info:
        list(iter_chunks(tmp_path / "nope.csv", ReaderOptions(), ["a"]))
    assert info.value.file == str(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty") as info:
        list(iter_chunks(path, ReaderOptions(), ["a"]))
    assert info.value.file == str(path)


def test_empty_gzip_file(tmp_path: Path):
    path = tmp_path / "empty.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("")
    with pytest.raises(DataError, match="empty") as info:
        list(iter_chunks(path, ReaderOptions(), ["a"]))
    assert info.value.file == str(path)


def test_header_only_file_has_no_data_rows(tmp_path: Path):
    path = tmp_path / "header.csv"
    path.write_text("user,item,label\n")
    assert list(iter_chunks(path, ReaderOptions(), ["user"])) == []
    with pytest.raises(DataError, match="no data rows") as info:
        list(iter_split([str(path)], ReaderOptions(), ["user"]))
    assert str(path) in str(info.value)


def test_split_of_several_files_numbers_rows_per_file(tmp_path: Path):
    a = _write_csv(tmp_path / "a.csv", _rows(50), HEADER)
    b = _write_csv(tmp_path / "b.csv.gz", _rows(70), HEADER)
    chunks = list(iter_split([str(a), str(b)], ReaderOptions(block_size=256), ["item"]))
    by_file: dict[str, list] = {}
    for c in chunks:
        by_file.setdefault(c.file, []).append(c)
    assert list(by_file) == [str(a), str(b)]
    for file_chunks in by_file.values():
        _check_numbering(file_chunks)
    assert sum(c.num_rows for c in by_file[str(a)]) == 50
    assert sum(c.num_rows for c in by_file[str(b)]) == 70


def test_ragged_row_is_a_data_error(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError) as info:
        list(iter_chunks(path, ReaderOptions(), ["a"]))
    assert info.value.file == str(path)


# ----------------------------------------------------------------------------- numeric fast path
def _as_floats(values) -> list[float | None]:
    out = []
    for v in values:
        if v is None or v == "":
            out.append(None)
        elif isinstance(v, str) and v.lower() in ("true", "false"):
            out.append(float(v.lower() == "true"))
        else:
            out.append(float(v))
    return out


def test_float_columns_are_parsed_by_the_reader(tmp_path: Path):
    path = _write_csv(tmp_path / "a.csv", _rows(), HEADER)
    chunks, data = _collect(iter_chunks(path, ReaderOptions(), ["price", "user"], float_columns={"price"}))
    assert chunks[0].table.schema.field("price").type == pa.float64()
    assert chunks[0].table.schema.field("user").type == pa.string()
    assert data["price"] == [i * 0.5 for i in range(N)]


@pytest.mark.parametrize("bad_row", [2, 250])  # in the first block, or in a later one
def test_float_column_with_text_falls_back_without_losing_rows(tmp_path: Path, bad_row: int):
    rows = _rows()
    rows[bad_row - 1][3] = "true"
    path = _write_csv(tmp_path / "a.csv", rows, HEADER)
    options = ReaderOptions(block_size=512)
    chunks, data = _collect_mixed(iter_chunks(path, options, ["item", "label"], float_columns={"label"}))
    _check_numbering(chunks)
    assert sum(c.num_rows for c in chunks) == N
    assert data["item"] == [f"item{i}" for i in range(N)]
    expected = [float(i % 2) for i in range(N)]
    expected[bad_row - 1] = 1.0
    assert _as_floats(data["label"]) == expected


def test_float_column_fallback_in_headerless_file(tmp_path: Path):
    rows = _rows()
    rows[200][2] = "n/a"
    path = _write_csv(tmp_path / "a.csv", rows, None)
    options = ReaderOptions(header=False, column_names=HEADER, block_size=512)
    chunks, data = _collect_mixed(iter_chunks(path, options, ["item", "price"], float_columns={"price"}))
    _check_numbering(chunks)
    assert data["item"] == [f"item{i}" for i in range(N)]
    assert data["price"][200] == "n/a"
    assert [float(v) for i, v in enumerate(data["price"]) if i != 200] == [i * 0.5 for i in range(N) if i != 200]


def _collect_mixed(chunks) -> tuple[list, dict[str, list]]:
    """Chunks whose column types differ (float before a fallback, text after)."""
    chunks = list(chunks)
    data: dict[str, list] = {}
    for c in chunks:
        for name, values in c.table.to_pydict().items():
            data.setdefault(name, []).extend(values)
    return chunks, data

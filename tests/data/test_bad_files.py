"""Bad files give one clean message that names the real row: invalid UTF-8, compressed or binary
bytes under a text name, and paths that are not dataset specs (whose content is never echoed)."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenticrs.data.errors import DataError
from agenticrs.data.readers import iter_chunks, iter_csv, read_csv_header
from agenticrs.data.spec import DatasetSpec, ReaderOptions

HEADER = b"click,user,price\n"


def _rows(n: int, bad_row: int | None = None, bad: bytes = b"u\xff\xfe") -> bytes:
    lines = []
    for row in range(1, n + 1):
        user = bad if row == bad_row else f"u{row % 7}".encode()
        lines.append(b"%d,%s,%d\n" % (row % 2, user, row))
    return b"".join(lines)


def _read(path: Path, **options) -> int:
    columns = options.pop("columns", ["click", "user", "price"])
    return sum(c.num_rows for c in iter_chunks(path, ReaderOptions(**options), columns, {"price"}))


# ------------------------------------------------------------------------------ invalid UTF-8
@pytest.mark.parametrize("block_size", [1 << 20, 1024])  # in the first block, or in a later one
def test_invalid_utf8_names_the_real_row_and_field(tmp_path: Path, block_size: int):
    path = tmp_path / "train.csv"
    path.write_bytes(HEADER + _rows(1000, bad_row=400))
    with pytest.raises(DataError) as info:
        _read(path, block_size=block_size)
    error = info.value
    assert (error.file, error.row, error.field) == (str(path), 400, "user")
    assert "not valid UTF-8" in str(error)


def test_invalid_utf8_row_counts_data_rows_of_a_headerless_file(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_bytes(_rows(500, bad_row=321))
    with pytest.raises(DataError) as info:
        _read(path, header=False, column_names=["click", "user", "price"], block_size=2048)
    assert (info.value.row, info.value.field) == (321, "user")


def test_invalid_utf8_in_a_numeric_column_is_not_mistaken_for_text(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_bytes(HEADER + _rows(50).replace(b",17\n", b",1\xff7\n"))
    with pytest.raises(DataError) as info:
        _read(path)
    assert (info.value.row, info.value.field) == (17, "price")


# ------------------------------------------------------------------------ binary under a text name
@pytest.fixture()
def unraisable(monkeypatch) -> list:
    """What Python would print as "Exception ignored in ..." (with its traceback) on stderr."""
    seen: list = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


def test_gzip_bytes_named_csv_is_one_clean_message(tmp_path: Path, unraisable: list):
    path = tmp_path / "train.csv"
    path.write_bytes(gzip.compress(HEADER + _rows(2000)))
    with pytest.raises(DataError) as info:
        _read(path)
    assert unraisable == []  # no ignored-exception traceback before the message
    message = str(info.value)
    assert "gzip-compressed" in message and "train.csv.gz" in message and "\n" not in message
    assert info.value.file == str(path)
    with pytest.raises(DataError, match="gzip-compressed"):
        read_csv_header(path, ReaderOptions())
    # under its proper name it reads
    proper = tmp_path / "train.csv.gz"
    proper.write_bytes(path.read_bytes())
    assert _read(proper) == 2000


def test_parquet_bytes_named_csv_say_to_set_the_format(tmp_path: Path):
    path = tmp_path / "train.csv"
    pq.write_table(pa.table({"click": [0, 1], "user": ["a", "b"], "price": [1.0, 2.0]}), path)
    with pytest.raises(DataError, match="Parquet data") as info:
        _read(path)
    assert "format: parquet" in str(info.value)


def test_binary_garbage_is_a_one_line_message_without_ignored_exceptions(tmp_path: Path, unraisable: list):
    path = tmp_path / "train.csv"
    path.write_bytes(HEADER + b"0,u1,1\n" + bytes(range(128, 256)) + b",\r,\x00\n" + b"1,u2,2\n")
    # threaded reading: Arrow's message carries no row, so the file is re-scanned for it
    with pytest.raises(DataError) as info:
        list(iter_csv(path, ReaderOptions(), ["click", "user"], use_threads=True))
    assert unraisable == []
    assert "\n" not in str(info.value) and "\r" not in str(info.value)
    assert info.value.file == str(path)


def test_ragged_line_shows_the_line_and_its_row(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_bytes(HEADER + _rows(300) + b"1,u1,2,extra\n")
    with pytest.raises(DataError) as info:
        _read(path, block_size=1024)
    assert info.value.row == 301
    assert "'1,u1,2,extra'" in str(info.value) and "expected 3 columns, got 4" in str(info.value)


# ------------------------------------------------------------------------- not a dataset spec
PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


@pytest.mark.parametrize(
    "content",
    [
        PASSWD,
        "secret_value_line\nroot: x: 0\n",  # invalid YAML
        "- secret_value\n- other\n",  # a list
        "database_password: hunter2\nhost: db\n",  # a mapping, but no spec keys
        "just one secret_value scalar\n",
    ],
)
def test_a_file_that_is_not_a_spec_is_named_never_echoed(tmp_path: Path, content: str):
    path = tmp_path / "passwd"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        DatasetSpec.from_yaml(path)
    message = str(info.value)
    for word in ("root", "secret_value", "hunter2", "database_password", "daemon", "nologin"):
        assert word not in message.replace(str(tmp_path), "")
    assert "not a valid dataset spec YAML" in message or "not valid YAML at line" in message
    assert info.value.file == str(path)


def test_relative_path_to_a_system_file_is_not_echoed(tmp_path: Path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(DataError, match="not a valid dataset spec YAML") as info:
        DatasetSpec.from_yaml("../../etc/passwd")
    assert "root" not in str(info.value).replace("../../etc/passwd", "")


@pytest.mark.parametrize("kind", ["binary", "folder", "huge"])
def test_unreadable_specs_are_data_errors(tmp_path: Path, kind: str):
    path = tmp_path / "spec.yaml"
    if kind == "binary":
        path.write_bytes(b"name: x\n\xff\xfe\x00garbage")
    elif kind == "folder":
        path.mkdir()
    else:
        with path.open("wb") as handle:
            handle.truncate(17 << 20)  # sparse: no 17 MiB is written
    with pytest.raises(DataError) as info:
        DatasetSpec.from_yaml(path)
    assert info.value.file == str(path) and "\n" not in str(info.value)


def test_yaml_errors_give_line_and_column_only(tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: toy\nfields: [unclosed_secret\n")
    with pytest.raises(DataError, match=r"not valid YAML at line \d+, column \d+") as info:
        DatasetSpec.from_yaml(path)
    assert "unclosed_secret" not in str(info.value)


def test_utf16_text_is_named_as_such(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_bytes((HEADER + _rows(20)).decode().encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16") as info:
        _read(path)
    assert info.value.file == str(path) and "save the file as UTF-8" in str(info.value)


def test_utf16_inside_gzip_is_named_too(tmp_path: Path):
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress((HEADER + _rows(20)).decode().encode("utf-16")))
    with pytest.raises(DataError, match="UTF-16"):
        _read(path)


def test_a_wrong_delimiter_is_hinted(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_bytes(HEADER.replace(b",", b";") + _rows(20))
    with pytest.raises(DataError, match=r"is reader.delimiter ';' right\?") as info:
        _read(path, delimiter=";", columns=["click"])
    assert info.value.row == 1

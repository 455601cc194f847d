"""Columnar split cache (raw memmapped arrays, meta written last), publishing and fingerprints."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from agenticrs.data.cache import META, SplitArrays, SplitWriter, default_cache_root, publish
from agenticrs.data.fingerprint import file_fingerprint, fingerprint


def _chunk(start: int, n: int) -> dict:
    rows = np.arange(start, start + n)
    return {
        "categorical": np.stack([rows, rows * 2], axis=1).astype(np.int32),
        "numeric": (rows[:, None] * np.array([0.5, -1.0, 2.0])).astype(np.float32),
        "seq/hist": np.tile(rows[:, None], (1, 4)).astype(np.int32),
        "seqlen/hist": (rows % 5).astype(np.int32),
        "labels": (rows % 2).astype(np.float32)[:, None],
        "group": (rows * 1_000_000_007).astype(np.int64),
        "text/title": pa.array([f"t{r}" if r % 3 else None for r in rows]),
    }


def _write(folder: Path, sizes=(7, 5, 11)) -> int:
    writer = SplitWriter(folder)
    start = 0
    for n in sizes:
        writer.append(_chunk(start, n))
        start += n
    writer.close(extra={"note": "hi"})
    return start


def test_round_trip_across_chunks(tmp_path: Path):
    folder = tmp_path / "split"
    total = _write(folder)
    split = SplitArrays(folder)
    assert split.rows == total == 23
    assert split.meta["note"] == "hi"
    assert sorted(split.keys()) == sorted(_chunk(0, 1))
    assert "categorical" in split and "nope" not in split
    expected = _chunk(0, total)
    for key, value in expected.items():
        got = split[key]
        if isinstance(value, pa.Array):
            assert got.to_pylist() == value.to_pylist()
        else:
            assert isinstance(got, np.memmap)
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
    # keys with a slash live in flat files
    assert (folder / "seq__hist.bin").exists()
    assert (folder / "text__title.arrow").exists()
    # raw little-endian bytes, no header
    raw = np.fromfile(folder / "group.bin", dtype="<i8")
    np.testing.assert_array_equal(raw, expected["group"])


def test_memmaps_are_read_only(tmp_path: Path):
    _write(tmp_path / "s")
    split = SplitArrays(tmp_path / "s")
    with pytest.raises((ValueError, TypeError)):
        split["categorical"][0, 0] = 5


def test_load_in_memory(tmp_path: Path):
    _write(tmp_path / "s")
    split = SplitArrays(tmp_path / "s")
    before = np.array(split["numeric"])
    split.load_in_memory()
    assert not isinstance(split["numeric"], np.memmap)
    assert isinstance(split["numeric"], np.ndarray)
    np.testing.assert_array_equal(split["numeric"], before)


def test_meta_is_written_last(tmp_path: Path):
    folder = tmp_path / "s"
    writer = SplitWriter(folder)
    writer.append(_chunk(0, 3))
    assert not (folder / META).exists()
    with pytest.raises(FileNotFoundError, match=META):
        SplitArrays(folder)
    writer.close()
    meta = json.loads((folder / META).read_text())
    assert meta["rows"] == 3
    assert meta["arrays"]["categorical"] == {"dtype": "<i4", "shape": [2]}
    assert meta["arrays"]["text/title"]["dtype"] == "text"


def test_rows_must_agree_within_a_chunk(tmp_path: Path):
    writer = SplitWriter(tmp_path / "s")
    with pytest.raises(ValueError, match="rows"):
        writer.append({"a": np.zeros(3), "b": np.zeros(4)})


def test_dtype_and_shape_must_not_change(tmp_path: Path):
    writer = SplitWriter(tmp_path / "s")
    writer.append({"a": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match="changed"):
        writer.append({"a": np.zeros((2, 3), np.float64)})
    with pytest.raises(ValueError, match="changed"):
        writer.append({"a": np.zeros((2, 4), np.float32)})


def test_empty_split(tmp_path: Path):
    writer = SplitWriter(tmp_path / "s")
    writer.append({"a": np.zeros((0, 3), np.int32), "b": np.zeros(0, np.float32)})
    writer.close()
    split = SplitArrays(tmp_path / "s")
    assert split.rows == 0
    assert split["a"].shape == (0, 3) and split["a"].dtype == np.int32
    assert split["b"].shape == (0,)


def test_non_contiguous_input_is_written_in_row_order(tmp_path: Path):
    base = np.arange(24, dtype=np.int64).reshape(6, 4)
    writer = SplitWriter(tmp_path / "s")
    writer.append({"a": base[:, ::2], "b": base.T[:3].T[:, 0]})  # strided views
    writer.close()
    split = SplitArrays(tmp_path / "s")
    np.testing.assert_array_equal(split["a"], base[:, ::2])
    np.testing.assert_array_equal(split["b"], base[:, 0])


def test_publish_moves_folder_and_keeps_existing(tmp_path: Path):
    tmp = tmp_path / ".x.tmp"
    tmp.mkdir()
    (tmp / "f").write_text("new")
    final = tmp_path / "deep" / "x"
    publish(tmp, final)
    assert not tmp.exists()
    assert (final / "f").read_text() == "new"
    # a second writer that finishes later leaves the published folder alone and cleans up
    tmp2 = tmp_path / ".x.tmp2"
    tmp2.mkdir()
    (tmp2 / "f").write_text("other")
    publish(tmp2, final)
    assert not tmp2.exists()
    assert (final / "f").read_text() == "new"


def test_default_cache_root(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    monkeypatch.delenv("AGENTICRS_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_cache_root() == tmp_path / ".cache" / "agenticrs"


# ----------------------------------------------------------------------------- fingerprints
def test_file_fingerprint_changes_with_content_and_mtime(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,2\n")
    first = file_fingerprint(path)
    assert first == file_fingerprint(path)
    assert len(first) == 16
    path.write_text("a,b\n1,3\n")  # same size, other content
    second = file_fingerprint(path)
    assert second != first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched only
    assert file_fingerprint(path) != second


def test_file_fingerprint_reads_the_tail_of_big_files(tmp_path: Path):
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 << 20))
    path.write_bytes(bytes(data))
    stat = path.stat()
    before = file_fingerprint(path)
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only the bytes differ
    assert file_fingerprint(path) != before


def test_fingerprint_of_several_files_and_settings(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    key = fingerprint([a, b], {"x": 1, "y": [1, 2]})
    assert key == fingerprint([str(a), str(b)], {"y": [1, 2], "x": 1})  # key order does not matter
    assert key != fingerprint([b, a], {"x": 1, "y": [1, 2]})
    assert key != fingerprint([a, b], {"x": 2, "y": [1, 2]})
    assert key != fingerprint([a, b])
    time.sleep(0.01)
    b.write_text("3")
    assert key != fingerprint([a, b], {"x": 1, "y": [1, 2]})

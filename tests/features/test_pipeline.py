"""process_dataset: caching keyed by spec and files, atomic publishing, one parse of train."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agenticrs.features.pipeline as pipeline
from agenticrs.data.errors import DataError
from agenticrs.data.readers import iter_split
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.encoder import FeatureEncoder
from agenticrs.features.pipeline import ENCODER_FILE, process_dataset

HEADER = "user,item,cat,price,clicks,hist,label"
FIELDS = [
    {"name": "user", "kind": "categorical", "min_count": 2},
    {"name": "item_id", "kind": "categorical", "column": "item"},
    {"name": "cat", "kind": "categorical", "hash_buckets": 32},
    {"name": "price", "kind": "numeric", "transform": "standardize"},
    {"name": "clicks", "kind": "numeric", "transform": "quantile", "quantile_buckets": 8},
    {"name": "hist", "kind": "sequence", "share_vocab_with": "item_id", "max_len": 5},
    {"name": "label", "kind": "label"},
]


def _lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        hist = "|".join(f"i{x}" for x in rng.integers(0, 300, rng.integers(0, 9)))
        price = "" if rng.random() < 0.05 else f"{rng.normal(10, 3):.3f}"
        cat = "" if rng.random() < 0.05 else f"c{rng.integers(0, 100)}"
        label = ["0", "1", "true", "false"][rng.integers(0, 4)]
        out.append(f"u{rng.integers(0, 400)},i{rng.integers(0, 300)},{cat},{price},{rng.integers(0, 50)},{hist},{label}")
    return out


def _write(path: Path, lines: list[str]) -> str:
    text = "\n".join([HEADER, *lines]) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return str(path)


def _spec(files: dict, name: str = "toy", fields=FIELDS, **reader) -> DatasetSpec:
    return DatasetSpec.from_dict({"name": name, "files": files, "fields": fields, "group_key": "user", "reader": reader})


@pytest.fixture
def files(tmp_path: Path) -> dict:
    data = tmp_path / "raw"
    data.mkdir()
    return {
        "train": [_write(data / "train_a.csv", _lines(3000, 0)), _write(data / "train_b.csv", _lines(1000, 1))],
        "valid": [_write(data / "valid.csv", _lines(800, 2))],
        "test": [_write(data / "test.csv.gz", _lines(800, 3))],
    }


def _assert_same(a, b) -> None:
    assert sorted(a.splits) == sorted(b.splits)
    for name in a.splits:
        sa, sb = a.split(name), b.split(name)
        assert sa.rows == sb.rows
        assert sorted(sa.keys()) == sorted(sb.keys())
        for key in sa.keys():
            np.testing.assert_array_equal(np.asarray(sa[key]), np.asarray(sb[key]), err_msg=f"{name}/{key}")
            assert sa[key].dtype == sb[key].dtype


def _direct(spec: DatasetSpec) -> tuple[FeatureEncoder, dict]:
    """The same data encoded without the pipeline: fit on train chunks, transform every split."""
    encoder = FeatureEncoder(spec).fit(iter_split(spec.files["train"], spec.reader, spec.source_columns))
    out = {}
    for split, paths in spec.files.items():
        parts = [encoder.transform(c) for c in iter_split(paths, spec.reader, spec.source_columns)]
        out[split] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return encoder, out


def test_second_run_is_from_cache(files, tmp_path: Path, monkeypatch):
    spec = _spec(files, block_size=1 << 14)
    root = tmp_path / "cache"
    started = time.perf_counter()
    first = process_dataset(spec, root)
    first_seconds = time.perf_counter() - started
    assert not first.from_cache
    assert first.folder.parent == root and first.folder.name.startswith("toy-")
    assert {s: first.split(s).rows for s in first.splits} == {"train": 4000, "valid": 800, "test": 800}
    assert first.total_rows == 5600

    def no_reading(*args, **kwargs):
        raise AssertionError("a cached data set must not read its files")

    monkeypatch.setattr(pipeline, "iter_split", no_reading)
    started = time.perf_counter()
    second = process_dataset(spec, root)
    second_seconds = time.perf_counter() - started
    assert second.from_cache
    assert second.folder == first.folder
    assert second_seconds < first_seconds / 3
    assert second.encoder.to_dict() == first.encoder.to_dict()
    assert second.schema == first.schema
    _assert_same(first, second)
    with pytest.raises(KeyError, match="nope"):
        first.split("nope")


def test_matches_direct_encoding(files, tmp_path: Path):
    spec = _spec(files, block_size=1 << 14)
    dataset = process_dataset(spec, tmp_path / "cache")
    encoder, direct = _direct(spec)
    assert dataset.encoder.to_dict() == encoder.to_dict()
    for split, arrays in direct.items():
        stored = dataset.split(split)
        assert sorted(stored.keys()) == sorted(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(np.asarray(stored[key]), value, err_msg=f"{split}/{key}")


def test_train_and_other_splits_encode_identical_rows_identically(tmp_path: Path):
    """The train split goes through the parse-and-spill path, the others straight from the reader."""
    lines = _lines(1500, 5)
    files = {"train": _write(tmp_path / "a.csv", lines), "test": _write(tmp_path / "b.csv", lines)}
    dataset = process_dataset(_spec(files, block_size=1 << 13), tmp_path / "cache")
    train, test = dataset.split("train"), dataset.split("test")
    assert sorted(train.keys()) == sorted(test.keys())
    for key in train.keys():
        np.testing.assert_array_equal(np.asarray(train[key]), np.asarray(test[key]), err_msg=key)


def test_train_is_read_once(files, tmp_path: Path, monkeypatch):
    calls: list[list[str]] = []
    original = pipeline.iter_split

    def counting(paths, *args, **kwargs):
        calls.append(list(paths))
        return original(paths, *args, **kwargs)

    monkeypatch.setattr(pipeline, "iter_split", counting)
    process_dataset(_spec(files), tmp_path / "cache")
    assert sorted(map(tuple, calls)) == sorted(tuple(p) for p in files.values())


def test_changed_source_file_is_reprocessed(files, tmp_path: Path):
    spec = _spec(files)
    root = tmp_path / "cache"
    first = process_dataset(spec, root)
    lines = _lines(800, 2)
    lines[0] = "u1,brand_new_item,c1,1.0,1,,1"
    time.sleep(0.01)
    _write(Path(files["valid"][0]), lines)  # same size class, other content
    second = process_dataset(spec, root)
    assert not second.from_cache
    assert second.folder != first.folder
    assert first.folder.exists()  # the old cache is left alone
    # the new item is unseen in train: OOV in the re-processed valid split
    assert int(second.split("valid")["categorical"][0, 1]) == 1
    assert process_dataset(spec, root).from_cache


def test_different_spec_different_cache_folder(files, tmp_path: Path):
    root = tmp_path / "cache"
    a = process_dataset(_spec(files), root)
    fields = [dict(f) for f in FIELDS]
    fields[0]["min_count"] = 3
    b = process_dataset(_spec(files, fields=fields), root)
    assert not b.from_cache and b.folder != a.folder
    assert len(b.encoder.categorical["user"].vocab) < len(a.encoder.categorical["user"].vocab)
    c = process_dataset(_spec(files, name="other"), root)
    assert not c.from_cache and c.folder.name.startswith("other-")
    d = process_dataset(_spec(files), root, encoder=a.encoder, with_labels=False)
    assert not d.from_cache and d.folder != a.folder
    assert "labels" not in d.split("train")
    assert len({a.folder, b.folder, c.folder, d.folder}) == 4


def test_force_reprocesses(files, tmp_path: Path):
    spec = _spec(files)
    a = process_dataset(spec, tmp_path / "cache")
    b = process_dataset(spec, tmp_path / "cache", force=True)
    assert not b.from_cache and b.folder == a.folder
    _assert_same(a, b)


def test_encoder_json_beside_the_data(files, tmp_path: Path):
    dataset = process_dataset(_spec(files), tmp_path / "cache")
    folder = dataset.folder
    assert (folder / ENCODER_FILE).exists()
    loaded = FeatureEncoder.load(folder / ENCODER_FILE)
    assert loaded.to_dict() == dataset.encoder.to_dict()
    raw = json.loads((folder / ENCODER_FILE).read_text())
    assert raw["spec"]["name"] == "toy"
    for split in ("train", "valid", "test"):
        assert (folder / "splits" / split / "meta.json").exists()
    # nothing temporary is left, neither inside the published folder nor beside it
    assert not [p for p in folder.rglob("*spill*")]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]


@pytest.mark.parametrize("where", ["test", "train"])
def test_interrupted_run_publishes_nothing(files, tmp_path: Path, where: str):
    bad = _lines(800, 9)
    bad[456] = "u1,i1,c1,1.0,1,,2"  # data row 457: not a binary label
    path = Path(files[where][0])
    _write(path, bad)
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        process_dataset(_spec(files, block_size=1 << 13), root)
    assert (info.value.file, info.value.row, info.value.field) == (str(path), 457, "label")
    assert list(root.iterdir()) == []  # no published folder and no temporary one
    # once the file is fixed, processing succeeds from scratch
    bad[456] = "u1,i1,c1,1.0,1,,1"
    _write(path, bad)
    assert not process_dataset(_spec(files, block_size=1 << 13), root).from_cache


@pytest.mark.parametrize("row", [3, 700])  # in the first block or a later one
def test_bad_number_names_file_row_and_field(files, tmp_path: Path, row: int):
    lines = _lines(800, 4)
    parts = lines[row - 1].split(",")
    parts[3] = "12x"  # not a number
    lines[row - 1] = ",".join(parts)
    path = Path(files["valid"][0])
    _write(path, lines)
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        process_dataset(_spec(files, block_size=1 << 13), root)
    assert (info.value.file, info.value.row, info.value.field) == (str(path), row, "price")
    assert "12x" in str(info.value)
    assert list(root.iterdir()) == []


def test_interrupted_by_any_exception(files, tmp_path: Path, monkeypatch):
    original = FeatureEncoder.transform
    calls = {"n": 0}

    def failing(self, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, chunk)

    monkeypatch.setattr(FeatureEncoder, "transform", failing)
    root = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        process_dataset(_spec(files, block_size=1 << 13), root)
    assert list(root.iterdir()) == []


def test_spilled_small_blocks_match_one_big_block(files, tmp_path: Path, monkeypatch):
    """Small blocks and a training spill on disk give exactly what one in-memory block gives."""
    spills = []

    class Recording(pipeline._Spill):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            spills.append(self)

    monkeypatch.setattr(pipeline, "_Spill", Recording)
    big = process_dataset(_spec(files), tmp_path / "big")
    monkeypatch.setenv("AGENTICRS_SPILL_MB", "0.01")
    small = process_dataset(_spec(files, block_size=1 << 12), tmp_path / "small")
    assert small.folder.name != big.folder.name  # block size is part of the spec
    assert not getattr(spills[0], "on_disk", [])
    assert len(getattr(spills[1], "on_disk", [])) > 10  # the small run really spilled to disk
    assert small.encoder.categorical == big.encoder.categorical
    assert small.encoder.numeric["clicks"].edges == big.encoder.numeric["clicks"].edges
    assert small.encoder.numeric["price"].mean == pytest.approx(big.encoder.numeric["price"].mean, rel=1e-12)
    for split in ("train", "valid", "test"):
        a, b = small.split(split), big.split(split)
        for key in a.keys():
            if key == "numeric":  # standardised with sums accumulated in another order
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=f"{split}/{key}")


def test_given_encoder_without_labels(files, tmp_path: Path):
    spec = _spec(files)
    fitted = process_dataset(spec, tmp_path / "cache")
    unlabeled = tmp_path / "serve.csv"
    unlabeled.write_text("user,item,cat,price,clicks,hist\nu1,i1,c1,1.0,3,i1|i2\nzz,i9999,,,,\n")
    serve = _spec({"train": [str(unlabeled)]})
    out = process_dataset(serve, tmp_path / "cache", encoder=fitted.encoder, with_labels=False)
    assert out.encoder.to_dict() == fitted.encoder.to_dict()  # not refitted
    split = out.split("train")
    assert "labels" not in split
    assert split.rows == 2
    assert int(split["categorical"][1, 0]) == 1  # unseen user: OOV
    assert int(split["categorical"][1, 2]) == 2  # empty hashed cat: missing
    assert split["seqlen/hist"].tolist() == [2, 0]


def test_parquet_dataset_with_list_columns(tmp_path: Path):
    rng = np.random.default_rng(0)
    n = 2500

    def table(seed):
        rng = np.random.default_rng(seed)
        return pa.table(
            {
                "user": pa.array(rng.integers(0, 50, n), pa.int64()),
                "item": pa.array(rng.integers(0, 80, n), pa.int64()),
                "hist": pa.array([list(rng.integers(0, 80, rng.integers(0, 6))) for _ in range(n)], pa.list_(pa.int64())),
                "label": pa.array(rng.integers(0, 2, n), pa.int64()),
            }
        )

    pq.write_table(table(0), tmp_path / "train.parquet")
    pq.write_table(table(1), tmp_path / "test.parquet")
    spec = DatasetSpec.from_dict(
        {
            "name": "pq",
            "files": {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")},
            "reader": {"format": "parquet", "block_size": 1},
            "group_key": "user",
            "fields": [
                {"name": "user", "kind": "categorical"},
                {"name": "item", "kind": "categorical"},
                {"name": "hist", "kind": "sequence", "share_vocab_with": "item", "max_len": 3},
                {"name": "label", "kind": "label"},
            ],
        }
    )
    dataset = process_dataset(spec, tmp_path / "cache")
    train = table(0)
    split = dataset.split("train")
    assert split.rows == n
    vocab = dataset.encoder.categorical["item"].vocab
    ids = {v: i + 3 for i, v in enumerate(vocab)}
    hist = train.column("hist").to_pylist()
    expected = np.zeros((n, 3), np.int32)
    for r, h in enumerate(hist):
        tail = h[-3:]
        expected[r, : len(tail)] = [ids.get(str(x), 1) for x in tail]
    np.testing.assert_array_equal(split["seq/hist"], expected)
    np.testing.assert_array_equal(split["seqlen/hist"], [min(len(h), 3) for h in hist])
    np.testing.assert_array_equal(split["categorical"][:, 1], [ids.get(str(x), 1) for x in train.column("item").to_pylist()])
    np.testing.assert_array_equal(split["labels"][:, 0], train.column("label").to_numpy())
    del rng

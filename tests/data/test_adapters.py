"""Adapters for public data layouts: exact converted content on hand-written files, every error
path (DataError naming file/row/field), conversion reuse, and the real files in shared/data."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from agenticrs.data.adapters import (
    ADAPTERS,
    _common,
    bars_spec,
    convert_avazu,
    convert_libfm,
    convert_movielens_atomic,
    convert_movielens_dat,
    convert_s3rec,
    convert_taobao,
    criteo_spec,
    read_s3rec_sequences,
)
from agenticrs.data.adapters._common import MARKER_NAME
from agenticrs.data.errors import DataError
from agenticrs.data.readers import iter_split
from agenticrs.data.spec import DatasetSpec

DATA_DIR = Path(
    os.environ.get("AGENTICRS_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)


# --- helpers -------------------------------------------------------------------------------------
def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def read_split(spec: DatasetSpec, split: str) -> list[dict]:
    """The rows of a split as the generic pipeline reads them (readers.iter_split)."""
    chunks = list(iter_split(spec.files[split], spec.reader, spec.source_columns))
    return pa.concat_tables([c.table for c in chunks]).to_pylist()


def kinds(spec: DatasetSpec) -> dict[str, str]:
    return {f.name: f.kind for f in spec.fields}


def data_dir(sub: str) -> Path:
    path = DATA_DIR / sub
    if not path.exists():
        pytest.skip(f"real data folder {path} is absent (set AGENTICRS_DATA_DIR)")
    return path


def assert_error(exc: pytest.ExceptionInfo[DataError], file: Path | str, row: int | None = None,
                 field: str | None = None) -> None:  # fmt: skip
    err = exc.value
    assert err.file == str(file), str(err)
    assert str(file) in str(err)
    if row is not None:
        assert err.row == row, str(err)
        assert f"row {row}" in str(err)
    if field is not None:
        assert err.field == field, str(err)
        assert f"'{field}'" in str(err)


def test_registry_names_every_adapter() -> None:
    assert set(ADAPTERS) == {
        "bars", "criteo", "avazu", "libfm", "movielens_atomic", "movielens_dat", "s3rec", "taobao",
    }  # fmt: skip


# --- BARS ------------------------------------------------------------------------------------------
BARS_HEADER = "label,user,item,price\n"


def test_bars_spec_describes_splits_and_reads(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", BARS_HEADER + "1,u1,i1,3.5\n0,u2,i2,1\n")
    write(tmp_path / "valid.csv.gz", BARS_HEADER + "0,u1,i3,2\n")
    write(tmp_path / "test.csv", BARS_HEADER + "1,u2,i1,0\n")
    spec = bars_spec(tmp_path, numeric=["price"], numeric_transform="log1p", group_key="user", min_count=2)
    assert kinds(spec) == {"label": "label", "user": "categorical", "item": "categorical", "price": "numeric"}
    assert spec.field("price").transform == "log1p" and spec.field("item").min_count == 2
    assert spec.group_key == "user" and spec.reader.format == "csv" and spec.reader.header
    assert spec.files["valid"] == [str(tmp_path / "valid.csv.gz")]
    assert read_split(spec, "train") == [
        {"label": "1", "user": "u1", "item": "i1", "price": "3.5"},
        {"label": "0", "user": "u2", "item": "i2", "price": "1"},
    ]
    assert len(read_split(spec, "valid")) == 1 and len(read_split(spec, "test")) == 1


def test_bars_detects_clk_label(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "clk,a,b\n1,x,y\n")
    spec = bars_spec(tmp_path)
    assert spec.labels[0].name == "clk" and set(spec.files) == {"train"}


def test_bars_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        bars_spec(tmp_path)
    assert_error(exc, tmp_path)
    train = write(tmp_path / "train.csv", "y,a\n1,x\n")
    with pytest.raises(DataError) as exc:
        bars_spec(tmp_path)
    assert_error(exc, train, field="label")
    write(train, BARS_HEADER + "1,u,i,1\n")
    valid = write(tmp_path / "valid.csv", "label,user,item\n1,u,i\n")
    with pytest.raises(DataError) as exc:
        bars_spec(tmp_path)
    assert_error(exc, valid, field="price")
    valid.unlink()
    with pytest.raises(DataError) as exc:
        bars_spec(tmp_path, group_key="session")
    assert_error(exc, train, field="session")
    write(train, "")
    with pytest.raises(DataError, match="empty") as exc:
        bars_spec(tmp_path)
    assert_error(exc, train)


# --- Criteo ------------------------------------------------------------------------------------------
def criteo_line(label: int, ints: list[str], cats: list[str]) -> str:
    return "\t".join([str(label), *ints, *cats]) + "\n"


def test_criteo_spec_reads_tsv(tmp_path: Path) -> None:
    ints = ["1", "", "-2"] + [str(i) for i in range(10)]
    cats = ["68fd1e64", ""] + [f"{i:08x}" for i in range(24)]
    train = write(tmp_path / "train.txt", criteo_line(1, ints, cats) + criteo_line(0, ints, cats))
    valid = write(tmp_path / "valid.txt.gz", criteo_line(0, ints, cats))
    spec = criteo_spec({"train": train, "valid": [valid]}, min_count=10)
    k = kinds(spec)
    assert [n for n, v in k.items() if v == "numeric"] == [f"I{i}" for i in range(1, 14)]
    assert [n for n, v in k.items() if v == "categorical"] == [f"C{i}" for i in range(1, 27)]
    assert spec.field("I1").transform == "log1p" and spec.field("C1").min_count == 10
    assert spec.reader.delimiter == "\t" and not spec.reader.header
    rows = read_split(spec, "train")
    assert len(rows) == 2 and rows[0]["label"] == "1" and rows[0]["I3"] == "-2"
    # empty cells: missing (the reader may hand them over as null or as the null token "")
    assert rows[0]["I2"] in (None, "") and rows[0]["C2"] in (None, "") and rows[0]["C1"] == "68fd1e64"
    assert len(read_split(spec, "valid")) == 1


def test_criteo_errors(tmp_path: Path) -> None:
    unlabeled = write(tmp_path / "test.txt", "\t".join(["1"] * 39) + "\n")
    train = write(tmp_path / "train.txt", criteo_line(1, ["1"] * 13, ["a"] * 26))
    with pytest.raises(DataError, match="39") as exc:
        criteo_spec({"train": train, "test": unlabeled})
    assert_error(exc, unlabeled, row=1)
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(DataError, match="empty") as exc:
        criteo_spec({"train": empty})
    assert_error(exc, empty)
    with pytest.raises(DataError, match="not found"):
        criteo_spec({"train": tmp_path / "missing.txt"})


# --- Avazu ---------------------------------------------------------------------------------------------
AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,device_id,"
    "device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21\n"
)


def avazu_row(rid: str, click: str, hour: str, site: str = "s1") -> str:
    return f"{rid},{click},{hour},1005,0,{site},dom,cat,app,adom,acat,dev,ip,model,1,0,15706,320,50,1722,0,35,-1,79\n"


def test_avazu_derives_time_fields_and_reuses(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.csv",
        AVAZU_HEADER
        + avazu_row("1000009418151094273", "0", "14102100")  # Tue 2014-10-21 00h
        + avazu_row("2", "1", "14102523", "s2")  # Sat 23h
        + avazu_row("3", "0", "14102607"),  # Sun 07h
    )  # fmt: skip
    test = write(tmp_path / "test.csv.gz", AVAZU_HEADER + avazu_row("4", "1", "14103012"))  # Thu 12h
    out = tmp_path / "out"
    spec = convert_avazu({"train": train, "test": test}, out, min_count=2)
    k = kinds(spec)
    assert k["click"] == "label" and "id" not in k and "hour" not in k
    assert {k[c] for c in k if c != "click"} == {"categorical"}
    assert spec.field("device_ip").min_count == 2
    rows = read_split(spec, "train")
    assert [(r["click"], r["hour_of_day"], r["weekday"], r["is_weekend"]) for r in rows] == [
        (0, "0", "1", "0"),
        (1, "23", "5", "1"),
        (0, "7", "6", "1"),
    ]
    assert rows[1]["site_id"] == "s2" and rows[0]["C20"] == "-1" and "id" not in rows[0]
    assert [(r["weekday"], r["hour_of_day"]) for r in read_split(spec, "test")] == [("3", "12")]
    # reuse: same inputs -> same spec, files untouched
    stamp = Path(spec.files["train"][0]).stat().st_mtime_ns
    assert convert_avazu({"train": train, "test": test}, out, min_count=2) == spec
    assert Path(spec.files["train"][0]).stat().st_mtime_ns == stamp
    # other settings -> redone
    assert convert_avazu({"train": train, "test": test}, out, min_count=3).field("site_id").min_count == 3


def test_avazu_errors(tmp_path: Path) -> None:
    bad_click = write(tmp_path / "a.csv", AVAZU_HEADER + avazu_row("1", "0", "14102100") + avazu_row("2", "2", "14102100"))
    with pytest.raises(DataError, match="label") as exc:
        convert_avazu({"train": bad_click}, tmp_path / "o1")
    assert_error(exc, bad_click, row=2, field="click")
    bad_hour = write(tmp_path / "b.csv", AVAZU_HEADER + avazu_row("1", "0", "14132100"))
    with pytest.raises(DataError, match="YYMMDDHH") as exc:
        convert_avazu({"train": bad_hour}, tmp_path / "o2")
    assert_error(exc, bad_hour, row=1, field="hour")
    missing = write(tmp_path / "c.csv", AVAZU_HEADER.replace(",device_ip", "") + avazu_row("1", "0", "14102100").replace(",ip", ""))
    with pytest.raises(DataError, match="missing") as exc:
        convert_avazu({"train": missing}, tmp_path / "o3")
    assert_error(exc, missing, field="device_ip")
    garbled = write(tmp_path / "g.csv", AVAZU_HEADER + "1\n")
    with pytest.raises(DataError, match="malformed") as exc:
        convert_avazu({"train": garbled}, tmp_path / "o7")
    assert_error(exc, garbled, row=1)
    short = write(tmp_path / "d.csv", AVAZU_HEADER + avazu_row("1", "0", "14102100") + "2,1,14102100\n")
    with pytest.raises(DataError) as exc:
        convert_avazu({"train": short}, tmp_path / "o4")
    assert_error(exc, short, row=2)
    empty = write(tmp_path / "e.csv", "")
    with pytest.raises(DataError, match="empty") as exc:
        convert_avazu({"train": empty}, tmp_path / "o5")
    assert_error(exc, empty)
    header_only = write(tmp_path / "f.csv", AVAZU_HEADER)
    with pytest.raises(DataError) as exc:
        convert_avazu({"train": header_only}, tmp_path / "o6")
    assert_error(exc, header_only)


# --- libFM ---------------------------------------------------------------------------------------------
def test_libfm_converts_labels_tokens_and_values(tmp_path: Path) -> None:
    train = write(tmp_path / "train.libfm", "-1 3:1 10:1\n1 4:1 11:0.5\n\n+1 5:1 12:1\n")
    test = write(tmp_path / "test.libfm.gz", "0 3:1 12:2\n1 6:1 10:1\n")
    spec = convert_libfm({"train": train, "test": test}, tmp_path / "out")
    assert kinds(spec) == {"label": "label", "f0": "categorical", "f1": "categorical", "f1_value": "numeric"}
    rows = read_split(spec, "train")
    assert [(r["label"], r["f0"], r["f1"], r["f1_value"]) for r in rows] == [
        (0, "3", "10", 1.0),
        (1, "4", "11", 0.5),
        (1, "5", "12", 1.0),
    ]
    assert [(r["label"], r["f0"], r["f1_value"]) for r in read_split(spec, "test")] == [(0, "3", 2.0), (1, "6", 1.0)]
    named = convert_libfm({"train": train}, tmp_path / "named", field_names=["user", "item"])
    assert [f.name for f in named.fields] == ["label", "user", "item", "item_value"]
    assert read_split(named, "train")[0]["user"] == "3"


def test_libfm_errors(tmp_path: Path) -> None:
    cases = [
        ("count", "1 1:1 2:1\n\n1 1:1\n", 3, None, "features"),  # blank line 2 skipped, numbering kept
        ("token", "1 1:1 2:1\n-1 1-1 2:1\n", 2, "f0", "feature token"),
        ("index", "1 1:1 x:1\n", 1, "f1", "feature token"),
        ("value", "1 1:1 2:abc\n", 1, "f1", "abc"),
        ("label", "1 1:1 2:1\n2 1:1 2:1\n", 2, "label", "label"),
        ("label_text", "yes 1:1 2:1\n", 1, "label", "yes"),
    ]
    for name, text, row, field, match in cases:
        path = write(tmp_path / f"{name}.libfm", text)
        with pytest.raises(DataError, match=match) as exc:
            convert_libfm({"train": path}, tmp_path / f"out_{name}")
        assert_error(exc, path, row=row, field=field)
    empty = write(tmp_path / "empty.libfm.gz", "")
    with pytest.raises(DataError) as exc:
        convert_libfm({"train": empty}, tmp_path / "out_empty", num_fields=2)
    assert_error(exc, empty)


def test_interrupted_conversion_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = write(tmp_path / "train.libfm", "1 1:1\n-1 2:1\n")
    test = write(tmp_path / "test.libfm", "1 3:1\n")
    out = tmp_path / "out"
    real_write = _common.ParquetSink.write

    def failing(self: _common.ParquetSink, table: pa.Table) -> None:
        if self.path.name == "test.parquet":
            raise KeyboardInterrupt
        real_write(self, table)

    monkeypatch.setattr(_common.ParquetSink, "write", failing)
    with pytest.raises(KeyboardInterrupt):
        convert_libfm({"train": train, "test": test}, out)
    assert not (out / MARKER_NAME).exists() and not (out / "test.parquet").exists()
    monkeypatch.setattr(_common.ParquetSink, "write", real_write)
    spec = convert_libfm({"train": train, "test": test}, out)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["spec"]["name"] == spec.name and len(read_split(spec, "test")) == 1


# --- MovieLens -------------------------------------------------------------------------------------
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t5\t300\n"
    "1\t11\t3\t100\n"
    "2\t10\t4\t150\n"
    "1\t12\t4\t200\n"
    "2\t13\t1\t50\n"
    "1\t13\t2\t400\n"
    "2\t11\t5\t150\n"  # same second as the row above it: file order decides
    "1\t14\t4\t500\n"
    "2\t12\t2\t600\n"
    "2\t14\t5\t700\n"
)
USERS = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttech\t85711\n2\t53\tF\tother\t94043\n"
ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n11\tGoldenEye\t1995\tAction\n"
    "12\tFour Rooms\t1995\t\n13\tGet Shorty\t1995\tAction Comedy Drama\n14\tCopycat\t1995\tCrime\n"
)
# user 1 by time: 11(100) 12(200) 10(300) 13(400) 14(500); user 2: 13(50) 10(150) 11(150) 12(600) 14(700)
EXPECTED_HIST = {
    ("1", "11"): [], ("1", "12"): ["11"], ("1", "10"): ["11", "12"], ("1", "13"): ["12", "10"],
    ("1", "14"): ["10", "13"], ("2", "13"): [], ("2", "10"): ["13"], ("2", "11"): ["13", "10"],
    ("2", "12"): ["10", "11"], ("2", "14"): ["11", "12"],
}  # fmt: skip


def write_atomic(folder: Path, inter: str = INTER, users: str = USERS, items: str = ITEMS) -> Path:
    write(folder / "ml-tiny.inter.gz", inter)
    write(folder / "ml-tiny.user", users)
    write(folder / "ml-tiny.item", items)
    return folder


def all_rows(spec: DatasetSpec) -> list[dict]:
    return [r for split in spec.files for r in read_split(spec, split)]


def test_movielens_atomic_joins_and_histories(tmp_path: Path) -> None:
    spec = convert_movielens_atomic(write_atomic(tmp_path / "src"), tmp_path / "out", history_len=2)
    assert kinds(spec) == {
        "label": "label", "user_id": "categorical", "item_id": "categorical", "timestamp": "timestamp",
        "age": "categorical", "gender": "categorical", "occupation": "categorical", "zip_code": "categorical",
        "movie_title": "text", "release_year": "categorical", "genres": "sequence", "hist_item_id": "sequence",
    }  # fmt: skip
    assert spec.field("hist_item_id").share_vocab_with == "item_id" and spec.field("hist_item_id").max_len == 2
    assert spec.field("genres").share_vocab_with is None and spec.field("genres").max_len == 3
    assert spec.group_key == "user_id" and spec.name == "ml-tiny"
    assert [len(read_split(spec, s)) for s in ("train", "valid", "test")] == [8, 1, 1]
    rows = all_rows(spec)
    assert {(r["user_id"], r["item_id"]): r["hist_item_id"] for r in rows} == EXPECTED_HIST
    by_key = {(r["user_id"], r["item_id"]): r for r in rows}
    r = by_key[("1", "10")]
    assert (r["label"], r["timestamp"], r["gender"], r["zip_code"]) == (1, 300, "M", "85711")
    assert (r["movie_title"], r["release_year"], r["genres"]) == ("Toy Story", "1995", ["Animation", "Children's", "Comedy"])
    assert by_key[("2", "12")]["genres"] == [] and by_key[("1", "13")]["label"] == 0
    assert by_key[("2", "10")]["label"] == 1  # rating 4 >= threshold 4


def test_movielens_time_split_and_no_history(tmp_path: Path) -> None:
    spec = convert_movielens_atomic(write_atomic(tmp_path / "src"), tmp_path / "out", split="time", history_len=0,
                                    fractions=(0.6, 0.2, 0.2))  # fmt: skip
    assert "hist_item_id" not in kinds(spec)
    assert [r["timestamp"] for r in read_split(spec, "train")] == [50, 100, 150, 150, 200, 300]
    assert [r["timestamp"] for r in read_split(spec, "test")] == [600, 700]


def test_movielens_random_split_is_seeded(tmp_path: Path) -> None:
    src = write_atomic(tmp_path / "src")
    a = convert_movielens_atomic(src, tmp_path / "a", seed=1)
    b = convert_movielens_atomic(src, tmp_path / "b", seed=1)
    c = convert_movielens_atomic(src, tmp_path / "c", seed=2)
    assert read_split(a, "train") == read_split(b, "train") != read_split(c, "train")


def test_movielens_atomic_errors(tmp_path: Path) -> None:
    src = write_atomic(tmp_path / "a", inter=INTER.replace("rating:float", "score:float"))
    with pytest.raises(DataError, match="missing") as exc:
        convert_movielens_atomic(src, tmp_path / "o")
    assert_error(exc, src / "ml-tiny.inter.gz", field="rating")
    src = write_atomic(tmp_path / "b", inter=INTER.replace("2\t14\t5\t700", "2\t14\tfive\t700"))
    with pytest.raises(DataError, match="five") as exc:
        convert_movielens_atomic(src, tmp_path / "o")
    assert_error(exc, src / "ml-tiny.inter.gz", row=10, field="rating")
    src = write_atomic(tmp_path / "c", users=USERS + "1\t30\tF\tx\t1\n")
    with pytest.raises(DataError, match="duplicate") as exc:
        convert_movielens_atomic(src, tmp_path / "o")
    assert_error(exc, src / "ml-tiny.user", row=3, field="user_id")
    src = write_atomic(tmp_path / "d", items=ITEMS.replace("class:token_seq", "class"))
    with pytest.raises(DataError, match="header") as exc:
        convert_movielens_atomic(src, tmp_path / "o")
    assert_error(exc, src / "ml-tiny.item", field="class")
    src = write_atomic(tmp_path / "e", inter=INTER.replace("2\t13\t1\t50\n", "2\t13\t1\n"))
    with pytest.raises(DataError) as exc:
        convert_movielens_atomic(src, tmp_path / "o")
    assert_error(exc, src / "ml-tiny.inter.gz", row=5)
    src = write_atomic(tmp_path / "f", inter="")
    with pytest.raises(DataError, match="empty") as exc:
        convert_movielens_atomic(src, tmp_path / "o")
    assert_error(exc, src / "ml-tiny.inter.gz")
    with pytest.raises(DataError, match="interaction"):
        convert_movielens_atomic(tmp_path / "nowhere", tmp_path / "o")


def test_movielens_dat_matches_atomic_output(tmp_path: Path) -> None:
    src = tmp_path / "ml-1m"
    ratings = "".join(f"{line.split(chr(9))[0]}::{line.split(chr(9))[1]}::{line.split(chr(9))[2]}::"
                      f"{line.split(chr(9))[3]}\n" for line in INTER.splitlines()[1:])  # fmt: skip
    write(src / "ratings.dat", ratings)
    write(src / "users.dat", "1::M::25::12::85711\n2::F::50::1::94043-1\n")
    movies = (
        "10::Toy Story (1995)::Animation|Children's|Comedy\n11::GoldenEye (1995)::Action\n"
        "12::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n13::Untitled::Drama\n14::Copycat (1995)::Crime\n"
    )
    write(src / "movies.dat", movies, encoding="latin-1")
    spec = convert_movielens_dat(src, tmp_path / "out", history_len=2)
    atomic = convert_movielens_atomic(write_atomic(tmp_path / "atomic"), tmp_path / "out2", history_len=2)
    assert kinds(spec) == kinds(atomic)
    rows = all_rows(spec)
    assert {(r["user_id"], r["item_id"]): r["hist_item_id"] for r in rows} == EXPECTED_HIST
    by_key = {(r["user_id"], r["item_id"]): r for r in rows}
    r = by_key[("2", "12")]
    assert (r["movie_title"], r["release_year"], r["genres"]) == ("Cité des enfants perdus, La", "1995", ["Adventure", "Sci-Fi"])
    assert (r["gender"], r["age"], r["occupation"], r["zip_code"]) == ("F", "50", "1", "94043-1")
    assert (by_key[("1", "13")]["movie_title"], by_key[("1", "13")]["release_year"]) == ("Untitled", None)
    write(src / "ratings.dat", ratings + "1::15::4\n")
    with pytest.raises(DataError, match="'::'") as exc:
        convert_movielens_dat(src, tmp_path / "out")
    assert_error(exc, src / "ratings.dat", row=11)
    (src / "users.dat").unlink()
    with pytest.raises(DataError, match="not found") as exc:
        convert_movielens_dat(src, tmp_path / "out")
    assert_error(exc, src / "users.dat")


# --- S3-Rec ----------------------------------------------------------------------------------------
S3REC = "1 10 11 12 13 14\n2 20 21 22\n3 10 20\n"


def test_read_s3rec_sequences(tmp_path: Path) -> None:
    users, seqs = read_s3rec_sequences(write(tmp_path / "x.txt.gz", S3REC))
    assert users.to_pylist() == [1, 2, 3]
    assert seqs.to_pylist() == [[10, 11, 12, 13, 14], [20, 21, 22], [10, 20]]


def test_s3rec_leave_one_out_with_negatives(tmp_path: Path) -> None:
    path = write(tmp_path / "Tiny.txt", S3REC)
    spec = convert_s3rec(path, tmp_path / "out", negatives_per_positive=2, history_len=2, shuffle_train=False)
    assert kinds(spec) == {"label": "label", "user_id": "categorical", "item_id": "categorical", "hist_item_id": "sequence"}
    assert spec.field("hist_item_id").share_vocab_with == "item_id" and spec.group_key == "user_id"
    catalogue = {"10", "11", "12", "13", "14", "20", "21", "22"}

    def positives(split: str) -> list[tuple[str, str, list[str]]]:
        rows = read_split(spec, split)
        assert [r["label"] for r in rows] == [1, 0, 0] * (len(rows) // 3)
        for i in range(0, len(rows), 3):
            pos, negs = rows[i], rows[i + 1 : i + 3]
            for neg in negs:
                assert neg["item_id"] != pos["item_id"] and neg["item_id"] in catalogue
                assert (neg["user_id"], neg["hist_item_id"]) == (pos["user_id"], pos["hist_item_id"])
        return [(r["user_id"], r["item_id"], r["hist_item_id"]) for r in rows[::3]]

    assert positives("test") == [("1", "14", ["12", "13"]), ("2", "22", ["20", "21"]), ("3", "20", ["10"])]
    assert positives("valid") == [("1", "13", ["11", "12"]), ("2", "21", ["20"])]
    assert positives("train") == [("1", "11", ["10"]), ("1", "12", ["10", "11"])]
    again = convert_s3rec(path, tmp_path / "again", negatives_per_positive=2, history_len=2, shuffle_train=False)
    assert read_split(again, "test") == read_split(spec, "test")


def test_s3rec_negatives_are_uniform_and_never_the_target(tmp_path: Path) -> None:
    path = write(tmp_path / "Two.txt", "1 1 2 1 2 1 2 1 2 1 2\n2 3 1 3 2 1\n")
    spec = convert_s3rec(path, tmp_path / "out", negatives_per_positive=200, history_len=3)
    rows = read_split(spec, "train")
    negs = []
    for i in range(0, len(rows), 201):
        target = rows[i]["item_id"]
        block = [r["item_id"] for r in rows[i + 1 : i + 201]]
        assert target not in block
        negs += block
    counts = {item: negs.count(item) for item in ("1", "2", "3")}
    assert all(c > 0.2 * len(negs) for c in counts.values()), counts


def test_s3rec_errors(tmp_path: Path) -> None:
    for name, text, row, field, match in [
        ("lonely", "1 10 11\n2\n", 2, None, "no items"),
        ("token", "1 10 11\n\n2 20 x1\n", 3, "item_id", "x1"),
        ("dupe", "1 10 11\n2 5 6\n1 7 8\n", 3, "user_id", "again"),
    ]:
        path = write(tmp_path / f"{name}.txt", text)
        with pytest.raises(DataError, match=match) as exc:
            read_s3rec_sequences(path)
        assert_error(exc, path, row=row, field=field)
    empty = write(tmp_path / "empty.txt.gz", "")
    with pytest.raises(DataError) as exc:
        convert_s3rec(empty, tmp_path / "out")
    assert_error(exc, empty)


# --- Taobao ------------------------------------------------------------------------------------------
DAY = 86_400
T0 = 1_511_539_200  # 2017-11-25 00:00 China time (UTC+8) = 2017-11-24 16:00 UTC
TAOBAO = (
    f"1,100,7,pv,{T0 + 10}\n"  # row 1, day 0
    f"2,200,8,pv,{T0 + 20}\n"  # row 2
    f"1,101,7,cart,{T0 + DAY + 5}\n"  # row 3, day 1
    f"1,100,7,buy,{T0 + 5}\n"  # row 4: earlier than row 1 for user 1
    f"2,201,9,fav,{T0 + DAY + 30}\n"  # row 5
    f"1,102,8,pv,{T0 + 2 * DAY + 1}\n"  # row 6, day 2
    f"2,200,8,buy,{T0 + 2 * DAY + 2}\n"  # row 7
    f"1,103,9,buy,{T0 + 2 * DAY + 3}\n"  # row 8
)


def test_taobao_histories_labels_and_day_split(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", TAOBAO)
    spec = convert_taobao(path, tmp_path / "out", history_len=2)
    assert kinds(spec) == {
        "is_buy": "label", "is_cart": "label", "user_id": "categorical", "item_id": "categorical",
        "cate_id": "categorical", "timestamp": "timestamp", "hist_item_id": "sequence", "hist_cate_id": "sequence",
        "hist_behavior": "sequence", "hist_ts": "sequence",
    }  # fmt: skip
    assert spec.field("hist_item_id").share_vocab_with == "item_id"
    assert spec.field("hist_cate_id").share_vocab_with == "cate_id"
    assert spec.field("hist_behavior").share_vocab_with is None
    assert spec.field("hist_ts").element == "numeric" and spec.group_key == "user_id"
    train, valid, test = (read_split(spec, s) for s in ("train", "valid", "test"))
    assert [r["timestamp"] - T0 for r in train] == [5, 10, 20]
    assert [r["timestamp"] - T0 for r in valid] == [DAY + 5, DAY + 30]
    assert [r["timestamp"] - T0 for r in test] == [2 * DAY + 1, 2 * DAY + 2, 2 * DAY + 3]
    last = test[-1]  # user 1 buys 103; previous events 100 buy(5), 100 pv(10), 101 cart, 102 pv -> last 2
    assert (last["is_buy"], last["is_cart"], last["item_id"], last["cate_id"]) == (1, 0, "103", "9")
    assert last["hist_item_id"] == ["101", "102"] and last["hist_cate_id"] == ["7", "8"]
    assert last["hist_behavior"] == ["cart", "pv"] and last["hist_ts"] == [T0 + DAY + 5, T0 + 2 * DAY + 1]
    assert train[0]["hist_item_id"] == [] and train[0]["is_buy"] == 1
    assert train[1]["hist_item_id"] == ["100"] and train[1]["hist_behavior"] == ["buy"]
    assert (valid[0]["is_cart"], valid[0]["is_buy"]) == (1, 0)
    assert test[1]["hist_item_id"] == ["200", "201"] and test[1]["hist_ts"] == [T0 + 20, T0 + DAY + 30]


def test_taobao_user_item_samples_carry_funnel_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", TAOBAO)
    spec = convert_taobao(path, tmp_path / "out", history_len=2, sample="user_item")
    assert [f.name for f in spec.fields if f.kind == "label"] == ["is_engage", "is_cart", "is_buy"]
    train, valid, test = (read_split(spec, s) for s in ("train", "valid", "test"))
    pairs = lambda rows: [(r["user_id"], r["item_id"], r["is_engage"], r["is_cart"], r["is_buy"]) for r in rows]  # noqa: E731
    # one row per (user, item) at its first event, split by that time; labels over all its events:
    # (2, 200) is viewed on day 0 and bought on day 2 (the label looks ahead), (2, 201) favourited
    assert pairs(train) == [("1", "100", 1, 0, 1), ("2", "200", 1, 0, 1)]
    assert pairs(valid) == [("1", "101", 1, 1, 0), ("2", "201", 1, 0, 0)]
    assert pairs(test) == [("1", "102", 0, 0, 0), ("1", "103", 1, 0, 1)]
    assert [r["timestamp"] - T0 for r in train + valid + test] == [5, 20, DAY + 5, DAY + 30, 2 * DAY + 1, 2 * DAY + 3]
    assert valid[0]["hist_item_id"] == ["100", "100"] and valid[0]["hist_behavior"] == ["buy", "pv"]
    assert test[1]["hist_item_id"] == ["101", "102"] and train[1]["hist_item_id"] == []
    with pytest.raises(DataError, match="unknown sample"):
        convert_taobao(path, tmp_path / "o2", sample="pairs")  # type: ignore[arg-type]


def test_taobao_fraction_split(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", TAOBAO)
    spec = convert_taobao(path, tmp_path / "out", split_by="fraction", valid_fraction=0.25, test_fraction=0.25)
    assert [len(read_split(spec, s)) for s in ("train", "valid", "test")] == [4, 2, 2]
    assert [r["timestamp"] - T0 for r in read_split(spec, "test")] == [2 * DAY + 2, 2 * DAY + 3]


def test_taobao_errors(tmp_path: Path) -> None:
    bad = write(tmp_path / "a.csv", TAOBAO.replace("cart", "click"))
    with pytest.raises(DataError, match="click") as exc:
        convert_taobao(bad, tmp_path / "o")
    assert_error(exc, bad, row=3, field="behavior_type")
    bad = write(tmp_path / "b.csv", TAOBAO.replace("2,201,9", "2,20x,9"))
    with pytest.raises(DataError, match="20x") as exc:
        convert_taobao(bad, tmp_path / "o")
    assert_error(exc, bad, row=5, field="item_id")
    bad = write(tmp_path / "c.csv", TAOBAO + "3,1,1,pv\n")
    with pytest.raises(DataError) as exc:
        convert_taobao(bad, tmp_path / "o")
    assert_error(exc, bad, row=9)
    bad = write(tmp_path / "d.csv", "")
    with pytest.raises(DataError, match="empty") as exc:
        convert_taobao(bad, tmp_path / "o")
    assert_error(exc, bad)
    one_day = write(tmp_path / "e.csv", f"1,1,1,pv,{T0}\n1,2,1,pv,{T0 + 1}\n")
    with pytest.raises(DataError, match="'train' split came out empty") as exc:
        convert_taobao(one_day, tmp_path / "o")
    assert_error(exc, one_day)


# --- real data ---------------------------------------------------------------------------------------
def split_counts(spec: DatasetSpec) -> dict[str, int]:
    return {
        split: sum(c.num_rows for c in iter_split(files, spec.reader, spec.source_columns))
        for split, files in spec.files.items()
    }


@pytest.mark.realdata
def test_real_bars_frappe() -> None:
    spec = bars_spec(data_dir("frappe_nfm") / "split", group_key="user")
    assert spec.name == "frappe_nfm" and spec.group_key == "user"
    assert split_counts(spec) == {"train": 46_177, "valid": 11_545, "test": 28_860}
    assert [f.name for f in spec.fields] == [
        "label", "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city",
    ]  # fmt: skip


@pytest.mark.realdata
def test_real_bars_movielens() -> None:
    spec = bars_spec(data_dir("movielens_100k") / "ctr_split", group_key="user_id")
    assert split_counts(spec) == {"train": 80_000, "valid": 10_000, "test": 10_000}
    assert kinds(spec)["zip3"] == "categorical" and spec.group_key == "user_id"


@pytest.mark.realdata
def test_real_libfm_frappe_matches_csv(tmp_path: Path) -> None:
    folder = data_dir("frappe_nfm")
    names = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
    spec = convert_libfm({"train": folder / "frappe.test.libfm.gz"}, tmp_path, field_names=names)
    assert kinds(spec) == {"label": "label", **{n: "categorical" for n in names}}  # all values are 1
    converted = pa.concat_tables([c.table for c in iter_split(spec.files["train"], spec.reader, spec.source_columns)])
    csv = bars_spec(folder / "split")
    reference = pa.concat_tables([c.table for c in iter_split(csv.files["test"], csv.reader, csv.source_columns)])
    assert converted.num_rows == 28_860
    assert np.array_equal(np.asarray(converted["label"]), np.asarray(reference["label"].cast(pa.int8())))
    for name in names:
        assert converted[name].to_pylist() == reference[name].to_pylist(), name


@pytest.mark.realdata
def test_real_s3rec_beauty(tmp_path: Path) -> None:
    path = data_dir("amazon_beauty") / "Beauty.txt.gz"
    users, seqs = read_s3rec_sequences(path)
    assert len(users) == 22_363 and len(seqs.values) == 198_502
    spec = convert_s3rec(path, tmp_path, negatives_per_positive=1, history_len=20)
    counts = split_counts(spec)
    assert counts["test"] == counts["valid"] == 2 * 22_363
    assert counts["train"] == 2 * (198_502 - 3 * 22_363)


@pytest.mark.realdata
def test_real_movielens_atomic(tmp_path: Path) -> None:
    spec = convert_movielens_atomic(data_dir("movielens_100k"), tmp_path, history_len=20)
    assert split_counts(spec) == {"train": 80_000, "valid": 10_000, "test": 10_000}
    rows = pa.concat_tables([c.table for s in spec.files for c in iter_split(spec.files[s], spec.reader, spec.source_columns)])
    labels = np.asarray(rows["label"])
    assert labels.sum() == 34_174 + 21_201  # ratings 4 and 5
    assert set(rows["gender"].to_pylist()) == {"M", "F"}
    lengths = np.asarray(rows["hist_item_id"].combine_chunks().value_lengths())
    assert lengths.max() == 20 and (lengths == 0).sum() == 943  # each user's first rating has no history


@pytest.mark.realdata
def test_real_taobao_sample(tmp_path: Path) -> None:
    spec = convert_taobao(data_dir("taobao_userbehavior_sample") / "UserBehavior_head4321.csv", tmp_path)
    counts = split_counts(spec)
    assert sum(counts.values()) == 4_321 and min(counts.values()) > 0
    rows = pa.concat_tables([c.table for s in spec.files for c in iter_split(spec.files[s], spec.reader, spec.source_columns)])
    assert np.asarray(rows["is_buy"]).sum() == 77 and np.asarray(rows["is_cart"]).sum() == 190
    assert rows["user_id"].combine_chunks().unique().to_pylist().__len__() == 43

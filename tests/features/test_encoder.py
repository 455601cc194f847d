"""Feature encoder: exact vocabularies, ids, numeric transforms, sequences, labels and errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenticrs.data.errors import DataError
from agenticrs.data.readers import Chunk, iter_split
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.encoder import FeatureEncoder, pad_sequences
from agenticrs.features.hashing import fnv1a_64
from agenticrs.features.schema import MISSING_INDEX, NUM_RESERVED, OOV_INDEX, PAD_INDEX, SequenceInput

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv_reference(value: str) -> int:
    h = _FNV_OFFSET
    for byte in value.encode():
        h = ((h ^ byte) * _FNV_PRIME) & ((1 << 64) - 1)
    return h


def group_id(value: str) -> int:
    return int(np.array([fnv_reference(value)], dtype=np.uint64).view(np.int64)[0])


# ----------------------------------------------------------------------------- helpers
def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def make_spec(files: dict, fields: list[dict], group_key: str | None = None, **reader) -> DatasetSpec:
    return DatasetSpec.from_dict(
        {"name": "toy", "files": files, "fields": fields, "group_key": group_key, "reader": reader}
    )


def chunks(spec: DatasetSpec, split: str):
    return iter_split(spec.files[split], spec.reader, spec.source_columns)


def fit(spec: DatasetSpec) -> FeatureEncoder:
    return FeatureEncoder(spec).fit(chunks(spec, "train"))


def transform_split(encoder: FeatureEncoder, spec: DatasetSpec, split: str) -> dict:
    parts = [encoder.transform(c) for c in chunks(spec, split)]
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        out[key] = pa.concat_arrays(values) if isinstance(values[0], pa.Array) else np.concatenate(values)
    return out


HAND_FIELDS = [
    {"name": "user", "kind": "categorical", "min_count": 2},
    {"name": "item_id", "kind": "categorical", "column": "item", "min_count": 2},
    {"name": "cat", "kind": "categorical"},
    {"name": "price", "kind": "numeric", "transform": "standardize"},
    {"name": "clicks", "kind": "numeric", "transform": "log1p"},
    {"name": "hist", "kind": "sequence", "share_vocab_with": "item_id", "max_len": 2},
    {"name": "label", "kind": "label"},
]
HAND_TRAIN = """user,item,cat,price,clicks,hist,label
u1,a,x,1,10,a|b|c,1
u2,b,x,2,,b,0
u1,a,z,,3,,true
u3,c,,4,0,a|a|d,false
u2,a,y,3,-5,c|b,0
"""
HAND_VALID = """user,item,cat,price,clicks,hist,label
u9,q,x,5,1,q|a,1
u1,,w,,,a,0
"""


@pytest.fixture
def hand(tmp_path: Path):
    spec = make_spec(
        {"train": write(tmp_path / "train.csv", HAND_TRAIN), "valid": write(tmp_path / "valid.csv", HAND_VALID)},
        HAND_FIELDS,
        group_key="user",
    )
    return spec, fit(spec)


# ----------------------------------------------------------------------------- categorical
def test_reserved_ids():
    assert (PAD_INDEX, OOV_INDEX, MISSING_INDEX, NUM_RESERVED) == (0, 1, 2, 3)


def test_vocab_order_counts_then_value(hand):
    _, encoder = hand
    # item counts (item column + shared hist sequence): a 6, b 4, c 3, d 1 (< min_count 2)
    assert encoder.categorical["item_id"].vocab == ["a", "b", "c"]
    # user: u1 2, u2 2, u3 1 (< min_count 2)
    assert encoder.categorical["user"].vocab == ["u1", "u2"]
    # cat: x 2, then the ties z 1 / y 1 by value, although z comes first in the file
    assert encoder.categorical["cat"].vocab == ["x", "y", "z"]
    assert "hist" not in encoder.categorical  # the sequence has no vocab of its own


def test_categorical_ids_on_train(hand):
    spec, encoder = hand
    out = transform_split(encoder, spec, "train")
    assert out["categorical"].dtype == np.int32
    assert out["categorical"].tolist() == [
        [3, 3, 3],  # u1 a x
        [4, 4, 3],  # u2 b x
        [3, 3, 5],  # u1 a z
        [1, 5, 2],  # u3 (rarer than min_count -> OOV) c (missing cat)
        [4, 3, 4],  # u2 a y
    ]


def test_valid_unseen_values_are_oov_and_empty_cells_missing(hand):
    spec, encoder = hand
    out = transform_split(encoder, spec, "valid")
    assert out["categorical"].tolist() == [
        [OOV_INDEX, OOV_INDEX, 3],  # u9 and q never seen in train
        [3, MISSING_INDEX, OOV_INDEX],  # empty item, w unseen
    ]


def test_fit_only_sees_train(hand):
    _, encoder = hand
    everything = {v for state in encoder.categorical.values() for v in state.vocab}
    assert not everything & {"q", "u9", "w"}


def test_schema_of_hand_example(hand):
    _, encoder = hand
    schema = encoder.schema()
    assert [(c.name, c.vocab_size) for c in schema.categorical] == [("user", 5), ("item_id", 6), ("cat", 6)]
    assert schema.numeric == ("price", "price__missing", "clicks", "clicks__missing")
    assert schema.sequences == (
        SequenceInput(name="hist", max_len=2, table="item_id", target="item_id", vocab_size=6),
    )
    assert schema.labels == ("label",)
    assert schema.has_group is True


def test_transform_before_fit_raises(hand):
    spec, _ = hand
    with pytest.raises(RuntimeError, match="fit"):
        FeatureEncoder(spec).transform(next(chunks(spec, "train")))


def test_hash_buckets_stable_and_in_range(tmp_path: Path):
    values = [f"v{i}" for i in range(200)] + ["", "é中"]
    lines = ["h,label"] + [f'"{v}",{i % 2}' if v else f",{i % 2}" for i, v in enumerate(values)]
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "\n".join(lines) + "\n")},
        [{"name": "h", "kind": "categorical", "hash_buckets": 7}, {"name": "label", "kind": "label"}],
    )
    encoder = fit(spec)
    assert encoder.categorical["h"].vocab == []
    assert encoder.schema().categorical[0].vocab_size == 7 + NUM_RESERVED
    ids = transform_split(encoder, spec, "train")["categorical"][:, 0]
    expected = [fnv_reference(v) % 7 + NUM_RESERVED if v else MISSING_INDEX for v in values]
    assert ids.tolist() == expected
    assert ids[:-2].min() >= NUM_RESERVED and ids.max() < NUM_RESERVED + 7
    assert len(set(ids[:200].tolist())) == 7  # all buckets used
    # a fresh encoder gives the same ids, and so does another process with another hash seed
    again = transform_split(fit(spec), spec, "train")["categorical"][:, 0]
    assert again.tolist() == ids.tolist()
    code = (
        "import pyarrow as pa, sys\n"
        "from agenticrs.features.hashing import fnv1a_64\n"
        "print(','.join(str(int(x) % 7 + 3) for x in fnv1a_64(pa.array(sys.argv[1:]))))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, *values[:20]], capture_output=True, text=True, env=env, check=True
    )
    assert [int(x) for x in result.stdout.strip().split(",")] == ids[:20].tolist()


def test_null_tokens_are_missing(tmp_path: Path):
    text = "x,h,v,label\na,p,1,1\nNA,NULL,NA,0\n\\N,,\\N,1\na,p,,0\nnull,p,nan,1\n"
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", text)},
        [
            {"name": "x", "kind": "categorical"},
            {"name": "h", "kind": "categorical", "hash_buckets": 5},
            {"name": "v", "kind": "numeric"},
            {"name": "label", "kind": "label"},
        ],
    )
    encoder = fit(spec)
    assert encoder.categorical["x"].vocab == ["a"]  # null tokens are never vocabulary
    out = transform_split(encoder, spec, "train")
    p_id = fnv_reference("p") % 5 + NUM_RESERVED
    assert out["categorical"].tolist() == [[3, p_id], [2, 2], [2, 2], [3, p_id], [2, p_id]]
    assert encoder.numeric_columns() == ["v", "v__missing"]
    assert out["numeric"].tolist() == [[1, 0], [0, 1], [0, 1], [0, 1], [0, 1]]


def test_categorical_from_parquet_numbers(tmp_path: Path):
    """Integer and integral-float columns give the same tokens ('3', not '3.0')."""
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "a": pa.array([3, 3, 5, None], pa.int64()),
                "b": pa.array([3.0, 2.5, 3.0, None], pa.float64()),
                "label": pa.array([1, 0, 1, 0], pa.int64()),
            }
        ),
        path,
    )
    spec = make_spec(
        {"train": str(path)},
        [
            {"name": "a", "kind": "categorical"},
            {"name": "b", "kind": "categorical"},
            {"name": "label", "kind": "label"},
        ],
        format="parquet",
    )
    encoder = fit(spec)
    assert encoder.categorical["a"].vocab == ["3", "5"]
    assert encoder.categorical["b"].vocab == ["3", "2.5"]
    out = transform_split(encoder, spec, "train")
    assert out["categorical"].tolist() == [[3, 3], [3, 4], [4, 3], [2, 2]]


# ----------------------------------------------------------------------------- numeric
def test_numeric_transforms_exact(hand):
    spec, encoder = hand
    std = math.sqrt(1.25)  # train prices 1, 2, 4, 3: mean 2.5, population variance 1.25
    assert encoder.numeric["price"].mean == pytest.approx(2.5)
    assert encoder.numeric["price"].std == pytest.approx(std)
    assert encoder.numeric["price"].has_missing and encoder.numeric["clicks"].has_missing
    out = transform_split(encoder, spec, "train")
    numeric = out["numeric"]
    assert numeric.dtype == np.float32 and numeric.shape == (5, 4)
    expected = np.array(
        [
            [(1 - 2.5) / std, 0, math.log1p(10), 0],
            [(2 - 2.5) / std, 0, 0, 1],
            [0, 1, math.log1p(3), 0],
            [(4 - 2.5) / std, 0, 0, 0],
            [(3 - 2.5) / std, 0, -math.log1p(5), 0],  # log1p is sign-aware
        ]
    )
    np.testing.assert_allclose(numeric, expected, rtol=1e-6, atol=1e-7)
    valid = transform_split(encoder, spec, "valid")["numeric"]
    np.testing.assert_allclose(
        valid, [[(5 - 2.5) / std, 0, math.log1p(1), 0], [0, 1, 0, 1]], rtol=1e-6, atol=1e-7
    )


def test_no_missing_flag_without_missing_in_train(tmp_path: Path):
    spec = make_spec(
        {
            "train": write(tmp_path / "t.csv", "x,y,label\n1,-2,1\n2,0,0\n3,2,1\n"),
            "test": write(tmp_path / "s.csv", "x,y,label\n,5,1\n"),
        },
        [
            {"name": "x", "kind": "numeric"},
            {"name": "y", "kind": "numeric", "transform": "standardize"},
            {"name": "label", "kind": "label"},
        ],
    )
    encoder = fit(spec)
    assert encoder.numeric_columns() == ["x", "y"]
    train = transform_split(encoder, spec, "train")["numeric"]
    std = math.sqrt(8 / 3)
    np.testing.assert_allclose(train, [[1, -2 / std], [2, 0], [3, 2 / std]], rtol=1e-6)
    # a missing value in another split is 0, with no flag column (the schema is fixed by train)
    test = transform_split(encoder, spec, "test")["numeric"]
    np.testing.assert_allclose(test, [[0, 5 / std]], rtol=1e-6)


def test_constant_column_standardizes_to_zero(tmp_path: Path):
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "x,label\n7,1\n7,0\n7,1\n")},
        [{"name": "x", "kind": "numeric", "transform": "standardize"}, {"name": "label", "kind": "label"}],
    )
    encoder = fit(spec)
    assert encoder.numeric["x"].std == 1.0
    assert transform_split(encoder, spec, "train")["numeric"][:, 0].tolist() == [0.0, 0.0, 0.0]


def test_quantile_edges_and_bucket_ids(tmp_path: Path):
    lines = ["v,label"] + [f"{i},{i % 2}" for i in range(1, 101)] + [",0"]
    spec = make_spec(
        {
            "train": write(tmp_path / "t.csv", "\n".join(lines) + "\n"),
            "test": write(tmp_path / "s.csv", "v,label\n-100,1\n25.75,0\n26,0\n50.5,1\n75.3,1\n1000,0\n,1\n"),
        },
        [
            {"name": "v", "kind": "numeric", "transform": "quantile", "quantile_buckets": 4},
            {"name": "label", "kind": "label"},
        ],
    )
    encoder = fit(spec)
    assert encoder.numeric["v"].edges == pytest.approx([25.75, 50.5, 75.25])
    assert encoder.numeric["v"].has_missing
    assert encoder.numeric_columns() == []  # a quantile numeric is a categorical column
    assert encoder.schema().categorical[0].vocab_size == NUM_RESERVED + 4
    ids = transform_split(encoder, spec, "test")["categorical"][:, 0]
    # buckets: (-inf, 25.75) -> 3, [25.75, 50.5) -> 4, [50.5, 75.25) -> 5, [75.25, inf) -> 6; missing -> 2
    assert ids.tolist() == [3, 4, 4, 5, 6, 6, MISSING_INDEX]
    train_ids = transform_split(encoder, spec, "train")["categorical"][:, 0]
    assert np.bincount(train_ids, minlength=7).tolist() == [0, 0, 1, 25, 25, 25, 25]


def test_quantile_duplicate_edges_collapse(tmp_path: Path):
    lines = ["v,label"] + ["0,1"] * 90 + [f"{i},0" for i in range(1, 11)]
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "\n".join(lines) + "\n")},
        [
            {"name": "v", "kind": "numeric", "transform": "quantile", "quantile_buckets": 10},
            {"name": "label", "kind": "label"},
        ],
    )
    encoder = fit(spec)
    edges = encoder.numeric["v"].edges
    assert edges == sorted(set(edges))  # strictly increasing
    assert edges[0] == 0.0
    assert encoder.schema().categorical[0].vocab_size == NUM_RESERVED + len(edges) + 1


@pytest.mark.parametrize("bad, row", [("abc", 3), ("1_0", 2), ("1,5", 4)])
def test_unparseable_numeric_names_row_and_field(tmp_path: Path, bad: str, row: int):
    values = ["1", "2", "3", "4"]
    values[row - 1] = f'"{bad}"'
    lines = ["price,label"] + [f"{v},1" for v in values]
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    spec = make_spec({"train": path}, [{"name": "price", "kind": "numeric"}, {"name": "label", "kind": "label"}])
    with pytest.raises(DataError) as info:
        fit(spec)
    err = info.value
    assert (err.file, err.row, err.field) == (path, row, "price")
    assert f"row {row}" in str(err) and "'price'" in str(err) and path in str(err)
    assert bad in str(err)


# ----------------------------------------------------------------------------- sequences
def test_sequences_split_truncate_and_share_vocab(hand):
    spec, encoder = hand
    out = transform_split(encoder, spec, "train")
    seq, lengths = out["seq/hist"], out["seqlen/hist"]
    assert seq.shape == (5, 2)
    assert lengths.dtype == np.int32
    # a|b|c -> last two (b, c); b; empty -> all padding; a|a|d -> (a, OOV); c|b
    assert seq.tolist() == [[4, 5], [4, PAD_INDEX], [PAD_INDEX, PAD_INDEX], [3, OOV_INDEX], [5, 4]]
    assert lengths.tolist() == [2, 1, 0, 2, 2]
    # the same value has the same id in the item column and in the history
    item_col = out["categorical"][:, 1]
    assert item_col[1] == seq[1, 0] == 4  # b
    assert item_col[3] == seq[4, 0] == 5  # c
    valid = transform_split(encoder, spec, "valid")
    assert valid["seq/hist"].tolist() == [[OOV_INDEX, 3], [3, PAD_INDEX]]
    assert valid["seqlen/hist"].tolist() == [2, 1]


def test_truncation_keeps_last_elements_left_aligned(tmp_path: Path):
    tokens = [f"t{i:02d}" for i in range(12)]
    rows = ["|".join(tokens), "|".join(tokens[:3]), "", "t05", "|".join(tokens[:5])]
    lines = ["h,label"] + [f"{r},1" for r in rows]
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "\n".join(lines) + "\n")},
        [{"name": "h", "kind": "sequence", "max_len": 5}, {"name": "label", "kind": "label"}],
    )
    encoder = fit(spec)
    vocab = encoder.categorical["h"].vocab
    ids = {v: i + NUM_RESERVED for i, v in enumerate(vocab)}
    out = transform_split(encoder, spec, "train")
    expected = [
        [ids[t] for t in tokens[7:12]],
        [ids[t] for t in tokens[:3]] + [0, 0],
        [0] * 5,
        [ids["t05"]] + [0] * 4,
        [ids[t] for t in tokens[:5]],
    ]
    assert out["seq/h"].tolist() == expected
    assert out["seqlen/h"].tolist() == [5, 3, 0, 1, 5]
    # own vocab: t00..t02 are counted 3 times, t03..t05 twice, the rest once; ties by value
    assert vocab == [f"t{i:02d}" for i in range(12)]
    assert encoder.categorical["h"].size == 12 + NUM_RESERVED
    assert encoder.schema().sequence("h").table is None


def test_pad_sequences_direct():
    lengths = np.array([0, 3, 1, 5])
    flat = np.arange(1, 10, dtype=np.int32)  # rows: [], [1,2,3], [4], [5,6,7,8,9]
    padded, kept = pad_sequences(lengths, flat, 3)
    assert padded.tolist() == [[0, 0, 0], [1, 2, 3], [4, 0, 0], [7, 8, 9]]
    assert kept.tolist() == [0, 3, 1, 3]
    empty, kept = pad_sequences(np.zeros(0, np.int64), np.zeros(0, np.int32), 4)
    assert empty.shape == (0, 4) and kept.shape == (0,)


def test_custom_list_delimiter(tmp_path: Path):
    spec = make_spec(
        {"train": write(tmp_path / "t.tsv", "item\thist\tlabel\na\ta,b\t1\nb\tb;c\t0\n")},
        [
            {"name": "item", "kind": "categorical"},
            {"name": "hist", "kind": "sequence", "share_vocab_with": "item", "list_delimiter": ","},
            {"name": "label", "kind": "label"},
        ],
        delimiter="\t",
    )
    encoder = fit(spec)
    assert encoder.categorical["item"].vocab == ["a", "b", "b;c"]
    out = transform_split(encoder, spec, "train")
    assert out["seqlen/hist"].tolist() == [2, 1]


def test_parquet_list_int64_sequences_share_vocab(tmp_path: Path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([10, 20, 10, 20], pa.int64()),
                "hist_item_id": pa.array([[10, 20, 30], [20], [], None], pa.list_(pa.int64())),
                "hist_ts": pa.array([[1.5, 2.0, 3.0], [4.0], [], None], pa.list_(pa.float64())),
                "label": pa.array([1, 0, 1, 0], pa.int64()),
            }
        ),
        path,
    )
    spec = make_spec(
        {"train": str(path)},
        [
            {"name": "item_id", "kind": "categorical"},
            {"name": "hist_item_id", "kind": "sequence", "share_vocab_with": "item_id", "max_len": 2},
            {"name": "hist_ts", "kind": "sequence", "element": "numeric", "parallel_to": "hist_item_id", "max_len": 2},
            {"name": "label", "kind": "label"},
        ],
        format="parquet",
    )
    encoder = fit(spec)
    # counts over the item column and the history: 20 -> 4, 10 -> 3, 30 -> 1
    assert encoder.categorical["item_id"].vocab == ["20", "10", "30"]
    out = transform_split(encoder, spec, "train")
    assert out["categorical"][:, 0].tolist() == [4, 3, 4, 3]
    assert out["seq/hist_item_id"].tolist() == [[3, 5], [3, 0], [0, 0], [0, 0]]
    assert out["seqlen/hist_item_id"].tolist() == [2, 1, 0, 0]
    assert out["seq/hist_ts"].dtype == np.float32
    assert out["seq/hist_ts"].tolist() == [[2.0, 3.0], [4.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert out["seqlen/hist_ts"].tolist() == out["seqlen/hist_item_id"].tolist()
    ts = encoder.schema().sequence("hist_ts")
    assert (ts.vocab_size, ts.element, ts.parallel_to) == (0, "numeric", "hist_item_id")


def test_numeric_sequence_parse_error_names_the_row(tmp_path: Path):
    path = write(tmp_path / "t.csv", "ts,label\n1|2|3,1\n4,0\n,1\n5|oops,0\n6,1\n")
    spec = make_spec(
        {"train": path},
        [{"name": "ts", "kind": "sequence", "element": "numeric"}, {"name": "label", "kind": "label"}],
    )
    encoder = fit(spec)
    with pytest.raises(DataError) as info:
        transform_split(encoder, spec, "train")
    assert (info.value.file, info.value.row, info.value.field) == (path, 4, "ts")
    assert "oops" in str(info.value)


# ----------------------------------------------------------------------------- labels
def test_label_spellings(tmp_path: Path):
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "x,label\na,1\na,0\na,true\na,false\na, TRUE \na,False\na,1.0\n")},
        [{"name": "x", "kind": "categorical"}, {"name": "label", "kind": "label"}],
    )
    out = transform_split(fit(spec), spec, "train")
    assert out["labels"].dtype == np.float32
    assert out["labels"].shape == (7, 1)
    assert out["labels"][:, 0].tolist() == [1, 0, 1, 0, 1, 0, 1]


def test_two_labels_in_spec_order(tmp_path: Path):
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "x,click,buy\na,1,0\na,0,0\na,1,1\n")},
        [{"name": "x", "kind": "categorical"}, {"name": "buy", "kind": "label"}, {"name": "click", "kind": "label"}],
    )
    out = transform_split(fit(spec), spec, "train")
    assert out["labels"].tolist() == [[0, 1], [0, 0], [1, 1]]


@pytest.mark.parametrize(
    "bad, message", [("2", "not binary"), ("x", "cannot parse"), ("", "missing"), ("-1", "not binary")]
)
def test_bad_label_names_file_row_field(tmp_path: Path, bad: str, message: str):
    lines = ["x,label"] + [f"a,{i % 2}" for i in range(200)]
    lines[157] = f"a,{bad}"  # data row 157 (line 158 of the file, after the header)
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    spec = make_spec(
        {"train": path},
        [{"name": "x", "kind": "categorical"}, {"name": "label", "kind": "label"}],
        block_size=256,  # the bad row is in a later chunk
    )
    assert len(list(chunks(spec, "train"))) > 2
    with pytest.raises(DataError) as info:
        fit(spec)
    err = info.value
    assert (err.file, err.row, err.field) == (path, 157, "label")
    assert message in str(err)
    assert f"file {path}, row 157, field 'label'" in str(err)


def test_bad_label_in_headerless_file_counts_first_line_as_row_1(tmp_path: Path):
    path = write(tmp_path / "t.csv", "a,1\na,0\na,yes\n")
    spec = make_spec(
        {"train": path},
        [{"name": "x", "kind": "categorical"}, {"name": "label", "kind": "label"}],
        header=False,
        column_names=["x", "label"],
    )
    with pytest.raises(DataError) as info:
        fit(spec)
    assert (info.value.row, info.value.field) == (3, "label")


def test_bad_label_in_other_split_raises_on_transform(tmp_path: Path):
    train = write(tmp_path / "t.csv", "x,label\na,1\nb,0\n")
    test = write(tmp_path / "s.csv", "x,label\na,1\nb,0\nc,1\nd,7\n")
    spec = make_spec(
        {"train": train, "test": test}, [{"name": "x", "kind": "categorical"}, {"name": "label", "kind": "label"}]
    )
    encoder = fit(spec)
    with pytest.raises(DataError) as info:
        transform_split(encoder, spec, "test")
    assert (info.value.file, info.value.row, info.value.field) == (test, 4, "label")


def test_transform_without_label_column_omits_labels(hand):
    spec, encoder = hand
    columns = [c for c in spec.source_columns if c != "label"]
    chunk = next(iter_split(spec.files["valid"], spec.reader, columns))
    out = encoder.transform(chunk)
    assert "labels" not in out
    assert out["categorical"].shape == (2, 3)


# ----------------------------------------------------------------------------- other kinds
def test_group_ids_are_fnv_of_raw_value(hand):
    spec, encoder = hand
    out = transform_split(encoder, spec, "train")
    assert out["group"].dtype == np.int64
    assert out["group"].tolist() == [group_id(u) for u in ["u1", "u2", "u1", "u3", "u2"]]
    # valid: u9 is not in any vocab, but still has its own group id
    assert transform_split(encoder, spec, "valid")["group"].tolist() == [group_id("u9"), group_id("u1")]


def test_timestamps_and_text(tmp_path: Path):
    spec = make_spec(
        {"train": write(tmp_path / "t.csv", "ts,title,label\n1700000000,hello,1\n1700000060,,0\n")},
        [
            {"name": "ts", "kind": "timestamp"},
            {"name": "title", "kind": "text"},
            {"name": "label", "kind": "label"},
        ],
    )
    encoder = fit(spec)
    out = transform_split(encoder, spec, "train")
    assert out["ts/ts"].tolist() == [1700000000, 1700000060]
    assert out["text/title"].to_pylist()[0] == "hello"
    assert out["text/title"].to_pylist()[1] in ("", None)
    iso = make_spec(
        {"train": write(tmp_path / "i.csv", "ts,title,label\n2024-01-02T03:04:05,a,1\n")},
        spec.model_dump()["fields"],
    )
    out = transform_split(fit(iso), iso, "train")
    assert out["ts/ts"].tolist() == [int(np.datetime64("2024-01-02T03:04:05", "s").astype(np.int64))]


# ----------------------------------------------------------------------------- persistence
def test_save_load_gives_identical_transform(hand, tmp_path: Path):
    spec, encoder = hand
    path = tmp_path / "encoder.json"
    encoder.save(path)
    raw = json.loads(path.read_text())
    assert raw["categorical"]["item_id"]["vocab"] == ["a", "b", "c"]
    loaded = FeatureEncoder.load(path)
    assert loaded.to_dict() == encoder.to_dict()
    assert loaded.schema() == encoder.schema()
    for split in ("train", "valid"):
        a = transform_split(encoder, spec, split)
        b = transform_split(loaded, spec, split)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype


def test_load_rejects_other_version(hand, tmp_path: Path):
    _, encoder = hand
    raw = encoder.to_dict()
    raw["version"] = 999
    with pytest.raises(ValueError, match="version"):
        FeatureEncoder.from_dict(raw)


# ----------------------------------------------------------------------------- chunking
def _random_csv(path: Path, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = ["user,item,cat,price,clicks,q,hist,label"]
    for _ in range(n):
        hist = "|".join(f"i{x}" for x in rng.integers(0, 60, rng.integers(0, 8)))
        price = "" if rng.random() < 0.1 else str(rng.integers(-400, 400) / 4)
        lines.append(
            f"u{rng.integers(0, 50)},i{rng.integers(0, 60)},c{rng.zipf(1.5) % 40},{price},"
            f"{rng.integers(0, 1000)},{rng.integers(0, 100)},{hist},{rng.integers(0, 2)}"
        )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


CHUNK_FIELDS = [
    {"name": "user", "kind": "categorical", "min_count": 3},
    {"name": "item", "kind": "categorical", "min_count": 2},
    {"name": "cat", "kind": "categorical", "hash_buckets": 16},
    {"name": "price", "kind": "numeric", "transform": "standardize"},
    {"name": "clicks", "kind": "numeric", "transform": "log1p"},
    {"name": "q", "kind": "numeric", "transform": "quantile", "quantile_buckets": 5},
    {"name": "hist", "kind": "sequence", "share_vocab_with": "item", "max_len": 4},
    {"name": "label", "kind": "label"},
]


def test_deterministic_across_chunkings(tmp_path: Path):
    files = {"train": _random_csv(tmp_path / "t.csv", 3000, 0), "test": _random_csv(tmp_path / "s.csv", 500, 1)}
    small = make_spec(files, CHUNK_FIELDS, group_key="user", block_size=1024)
    big = make_spec(files, CHUNK_FIELDS, group_key="user")
    assert len(list(chunks(small, "train"))) > 20
    assert len(list(chunks(big, "train"))) == 1
    enc_small, enc_big = fit(small), fit(big)
    assert enc_small.categorical == enc_big.categorical
    assert enc_small.numeric["price"] == enc_big.numeric["price"]  # quarter-integers sum exactly
    assert enc_small.numeric["q"].edges == enc_big.numeric["q"].edges
    assert enc_small.numeric["clicks"].mean == pytest.approx(enc_big.numeric["clicks"].mean, rel=1e-12)
    for split in ("train", "test"):
        a = transform_split(enc_small, small, split)
        b = transform_split(enc_big, big, split)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # and the same encoder gives the same arrays whatever the chunking of the data it transforms
    a = transform_split(enc_big, small, "test")
    b = transform_split(enc_big, big, "test")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_transform_of_a_chunk_slice_matches(hand):
    """Arrow slices (non-zero offsets) encode like the rows they hold."""
    spec, encoder = hand
    chunk = next(chunks(spec, "train"))
    full = encoder.transform(chunk)
    part = encoder.transform(Chunk(chunk.file, chunk.first_row + 2, chunk.table.slice(2, 3)))
    for key in full:
        np.testing.assert_array_equal(np.asarray(full[key])[2:5], np.asarray(part[key]), err_msg=key)


def test_fnv_reference_matches_library():
    values = ["u1", "", "é"]
    assert fnv1a_64(pa.array(values)).tolist() == [fnv_reference(v) for v in values]


def test_float_categoricals_with_nan_and_huge_values() -> None:
    """A float column used as a categorical (pandas writes missing ints as NaN floats): NaN is a
    missing value, integral floats are the same token as their integer text, and values beyond
    the exact-integer range keep their float text instead of failing the cast."""
    import pyarrow as pa

    from agenticrs.features.encoder import as_strings

    values = pa.array([3.0, float("nan"), None, 2.5, 1e300, float("inf"), -4.0, 2.0**60])
    assert as_strings(values).to_pylist() == ["3", None, None, "2.5", "1e+300", "inf", "-4", "1.152921504606847e+18"]
    assert as_strings(pa.array([7.0], pa.float32())).to_pylist() == ["7"]


def test_small_batches_look_up_as_arrow_does(tiny_synthetic, monkeypatch) -> None:
    """Served requests (a few rows) look values up in a cached dict; the ids equal Arrow's
    index_in path (unseen -> OOV, null tokens and nulls -> missing, dictionary arrays)."""
    import agenticrs.features.encoder as encoder_module

    encoder = tiny_synthetic.encoder
    table = pq.read_table(tiny_synthetic.spec.files["valid"][0]).slice(0, 500)
    chunk = encoder.parse_chunk(Chunk(file="<rows>", first_row=1, table=table))
    small = encoder.transform(chunk)
    monkeypatch.setattr(encoder_module, "SMALL_LOOKUP_ROWS", -1)  # every lookup through Arrow
    large = encoder.transform(chunk)
    assert small.keys() == large.keys()
    for key in small:
        np.testing.assert_array_equal(np.asarray(small[key]), np.asarray(large[key]), err_msg=key)
    values = pa.array(["never-seen", None, "NULL", *encoder.categorical[encoder.categorical_fields[0].name].vocab[:3]])
    owner = encoder.categorical_fields[0].name
    monkeypatch.setattr(encoder_module, "SMALL_LOOKUP_ROWS", 2_048)
    via_dict = encoder.encode_values(values, owner)
    monkeypatch.setattr(encoder_module, "SMALL_LOOKUP_ROWS", -1)
    np.testing.assert_array_equal(via_dict, encoder.encode_values(values, owner))
    assert via_dict[0] == OOV_INDEX and via_dict[1] == MISSING_INDEX and via_dict[2] == MISSING_INDEX


def test_integer_values_get_the_ids_of_their_decimal_text(tmp_path: Path) -> None:
    """An integer column is looked up without a string cast; every id equals the text path's
    (vocab hits, unseen integers -> OOV, an integer null token and nulls -> missing, "042" is
    not 42's token), for small and large batches and every integer width."""
    import pyarrow.compute as pc

    rows = ["a,label", "1,1", "42,0", "042,1", "-7,0", "x,1", "?,0", "99,1", "3,0"]
    spec = make_spec({"train": write(tmp_path / "t.csv", "\n".join(rows) + "\n")},
                     [{"name": "a", "kind": "categorical"}, {"name": "label", "kind": "label"}],
                     null_values=["", "?", "-1"])  # fmt: skip
    encoder = fit(spec)
    assert {"1", "42", "042", "-7", "x"} <= set(encoder.categorical["a"].vocab)
    numbers = [1, 42, -7, 99, 3, -1, 5, 0, None, 2**40, -(2**62)]
    expected = encoder.encode_values(pc.cast(pa.array(numbers, pa.int64()), pa.string()), "a")
    assert list(expected[:5]) != [OOV_INDEX] * 5 and expected[5] == MISSING_INDEX and expected[8] == MISSING_INDEX
    assert expected[6] == OOV_INDEX and expected[9] == OOV_INDEX
    for kind in (pa.int64(), pa.int32()):
        fits = [v for v in numbers if v is None or abs(v) < 2**31]
        text = encoder.encode_values(pc.cast(pa.array(fits, kind), pa.string()), "a")
        np.testing.assert_array_equal(encoder.encode_values(pa.array(fits, kind), "a"), text, err_msg=str(kind))
    np.testing.assert_array_equal(encoder.encode_values(pa.array(numbers, pa.int64()), "a"), expected)
    big = pa.array(numbers * 500, pa.int64())  # past the small-batch size
    np.testing.assert_array_equal(encoder.encode_values(big, "a"), np.tile(expected, 500))
    assert encoder.encode_values(pa.array([], pa.int64()), "a").shape == (0,)

"""Dataset specs: YAML in and out, path resolution, and DataErrors that name the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions


def _raw() -> dict:
    return {
        "name": "toy",
        "files": {"train": "train.csv", "valid": ["valid.csv"], "test": ["test_a.csv", "test_b.csv"]},
        "reader": {"delimiter": "\t", "list_delimiter": ";", "block_size": 4096},
        "group_key": "user",
        "fields": [
            {"name": "user", "kind": "categorical", "min_count": 2},
            {"name": "item_id", "kind": "categorical", "column": "item"},
            {"name": "price", "kind": "numeric", "transform": "standardize"},
            {"name": "hist_item_id", "kind": "sequence", "share_vocab_with": "item_id", "max_len": 5},
            {"name": "hist_cate", "kind": "sequence", "parallel_to": "hist_item_id"},
            {"name": "click", "kind": "label"},
        ],
    }


def _error(raw: dict) -> DataError:
    with pytest.raises(DataError) as info:
        DatasetSpec.from_dict(raw, source="spec.yaml")
    return info.value


# ------------------------------------------------------------------------------- parsing
def test_from_dict_defaults_and_views():
    spec = DatasetSpec.from_dict(_raw())
    assert spec.files["train"] == ["train.csv"]  # a single path becomes a list
    assert spec.files["test"] == ["test_a.csv", "test_b.csv"]
    assert spec.reader.delimiter == "\t"
    assert spec.reader.header is True
    assert spec.reader.format == "csv"
    assert spec.field("item_id").source == "item"
    assert spec.field("user").source == "user"
    assert spec.field("hist_item_id").paired_target == "item_id"
    assert [f.name for f in spec.labels] == ["click"]
    assert [f.name for f in spec.of_kind("sequence")] == ["hist_item_id", "hist_cate"]
    assert spec.source_columns == ["user", "item", "price", "hist_item_id", "hist_cate", "click"]
    with pytest.raises(KeyError):
        spec.field("nope")


def test_group_key_not_a_field_is_an_extra_source_column():
    raw = _raw()
    raw["group_key"] = "session"
    spec = DatasetSpec.from_dict(raw)
    assert spec.source_columns[-1] == "session"
    assert spec.source_columns.count("user") == 1


def test_yaml_round_trip(tmp_path: Path):
    spec = DatasetSpec.from_dict(_raw())
    text = spec.to_yaml(tmp_path / "spec.yaml")
    assert (tmp_path / "spec.yaml").read_text() == text
    again = DatasetSpec.from_dict(yaml.safe_load(text))
    assert again == spec
    assert again.model_dump() == spec.model_dump()
    assert again.to_yaml() == text


def test_from_yaml_resolves_relative_paths(tmp_path: Path):
    folder = tmp_path / "specs"
    folder.mkdir()
    raw = _raw()
    absolute = str(tmp_path / "elsewhere" / "abs.csv")
    raw["files"]["valid"] = [absolute]
    (folder / "toy.yaml").write_text(yaml.safe_dump(raw))
    spec = DatasetSpec.from_yaml(folder / "toy.yaml")
    assert spec.files["train"] == [str(folder / "train.csv")]
    assert spec.files["test"] == [str(folder / "test_a.csv"), str(folder / "test_b.csv")]
    assert spec.files["valid"] == [absolute]  # absolute paths are kept
    # the round trip through YAML keeps the resolved (absolute) paths
    out = tmp_path / "out.yaml"
    spec.to_yaml(out)
    assert DatasetSpec.from_yaml(out).files == spec.files


def test_from_yaml_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(DataError, match="not found") as info:
        DatasetSpec.from_yaml(tmp_path / "absent.yaml")
    assert info.value.file == str(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\nfields: {")
    with pytest.raises(DataError, match="not valid YAML") as info:
        DatasetSpec.from_yaml(bad)
    assert info.value.file == str(bad)


def test_from_yaml_error_names_the_yaml_file(tmp_path: Path):
    raw = _raw()
    raw["fields"][2]["kind"] = "float"
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError) as info:
        DatasetSpec.from_yaml(path)
    assert info.value.file == str(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------- invalid specs
def test_invalid_kind_names_field_and_key():
    raw = _raw()
    raw["fields"][2]["kind"] = "float"
    err = _error(raw)
    assert err.field == "price"
    assert "'price'" in str(err)
    assert "fields.2.kind" in str(err)
    assert err.file == "spec.yaml"


def test_unknown_key_in_field():
    raw = _raw()
    raw["fields"][1]["vocab_sise"] = 10
    err = _error(raw)
    assert err.field == "item_id"
    assert "vocab_sise" in str(err)


def test_unknown_top_level_key():
    raw = _raw()
    raw["splits"] = {"train": "x.csv"}
    err = _error(raw)
    assert "splits" in str(err)
    assert err.field is None


def test_unknown_reader_option():
    raw = _raw()
    raw["reader"]["seperator"] = ","
    err = _error(raw)
    assert "reader.seperator" in str(err)


def test_bad_value_range():
    raw = _raw()
    raw["fields"][0]["min_count"] = 0
    err = _error(raw)
    assert err.field == "user"
    assert "min_count" in str(err)


def test_duplicate_field_name():
    raw = _raw()
    raw["fields"].append({"name": "price", "kind": "numeric"})
    err = _error(raw)
    assert "duplicate" in str(err)
    assert "price" in str(err)


@pytest.mark.parametrize("key", ["share_vocab_with", "target"])
def test_sequence_referring_to_unknown_field(key: str):
    raw = _raw()
    raw["fields"][3] = {"name": "hist_item_id", "kind": "sequence", key: "ghost"}
    err = _error(raw)
    assert "unknown field" in str(err)
    assert "hist_item_id" in str(err)
    assert "ghost" in str(err)


def test_sequence_referring_to_non_categorical_field():
    raw = _raw()
    raw["fields"][3]["share_vocab_with"] = "price"
    err = _error(raw)
    assert "hist_item_id" in str(err)
    assert "price" in str(err)
    assert "categorical" in str(err)


def test_parallel_to_must_be_a_sequence():
    raw = _raw()
    raw["fields"][4]["parallel_to"] = "item_id"
    err = _error(raw)
    assert "hist_cate" in str(err)
    assert "not a sequence" in str(err)


def test_numeric_sequence_cannot_share_vocab():
    raw = _raw()
    raw["fields"][3]["element"] = "numeric"
    err = _error(raw)
    assert "hist_item_id" in str(err)
    assert "numeric" in str(err)


def test_no_label():
    raw = _raw()
    raw["fields"] = [f for f in raw["fields"] if f["kind"] != "label"]
    err = _error(raw)
    assert "label" in str(err)


def test_no_train_split():
    raw = _raw()
    del raw["files"]["train"]
    err = _error(raw)
    assert "train" in str(err)
    assert "valid" in str(err)  # names the splits it did get


def test_missing_required_keys():
    err = _error({"name": "x"})
    assert "files" in str(err) or "fields" in str(err)
    assert "problems in all" in str(err)  # both are missing
    err = _error({"name": "x", "files": {"train": "t.csv"}, "fields": [{"kind": "label"}]})
    assert "fields.0.name" in str(err)


def test_not_a_mapping():
    with pytest.raises(DataError):
        DatasetSpec.from_dict(None)
    with pytest.raises(DataError):
        DatasetSpec.from_dict(["a", "b"])


def test_data_error_is_a_value_error_and_renders_location():
    err = DataError("bad value", file="f.csv", row=7, field="price", expected="a number")
    assert isinstance(err, ValueError)
    assert str(err) == "file f.csv, row 7, field 'price': bad value (expected a number)"
    assert (err.file, err.row, err.field, err.expected, err.reason) == ("f.csv", 7, "price", "a number", "bad value")
    assert str(DataError("plain")) == "plain"


def test_field_and_reader_defaults():
    f = FieldSpec(name="x", kind="categorical")
    assert (f.min_count, f.hash_buckets, f.transform, f.max_len, f.element) == (1, None, "none", 50, "categorical")
    r = ReaderOptions()
    assert r.list_delimiter == "|"
    assert "" in r.null_values and "NULL" in r.null_values
    # the models are independent copies (mutable defaults are not shared)
    r2 = ReaderOptions()
    r2.null_values.append("?")
    assert "?" not in ReaderOptions().null_values
    spec = DatasetSpec.from_dict(_raw())
    copied = DatasetSpec.from_dict(copy.deepcopy(_raw()))
    assert spec == copied

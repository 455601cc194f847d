"""Configuration helpers: `a.b=c` overrides and YAML in and out."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticrs.config import apply_overrides, dump_yaml, load_yaml, parse_override_value


def test_creates_nested_keys_and_keeps_the_rest():
    config = {"model": "deepfm", "train": {"epochs": 3, "metrics": ["auc"]}}
    out = apply_overrides(config, ["train.learning_rate=0.01", "model_params.tower.units=[400, 400]"])
    assert out == {
        "model": "deepfm",
        "train": {"epochs": 3, "metrics": ["auc"], "learning_rate": 0.01},
        "model_params": {"tower": {"units": [400, 400]}},
    }


def test_does_not_mutate_the_input():
    config = {"train": {"epochs": 3, "metrics": ["auc"]}}
    out = apply_overrides(config, ["train.epochs=5"])
    out["train"]["metrics"].append("logloss")
    assert config == {"train": {"epochs": 3, "metrics": ["auc"]}}
    assert out["train"]["epochs"] == 5


def test_later_overrides_win_and_replace_values():
    out = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.b=3", "c=x"])
    assert out == {"a": {"b": 3}, "c": "x"}
    # a section set to null becomes a section again
    assert apply_overrides({"a": None}, ["a.b=1"]) == {"a": {"b": 1}}


@pytest.mark.parametrize(
    "text, value",
    [
        ("1", 1),
        ("-7", -7),
        ("0.5", 0.5),
        ("1.5e-3", 0.0015),
        ("1e-3", 1e-3),
        ("2E+4", 2e4),
        ("[1e-3, 2]", [1e-3, 2]),
        ("'1e-3'", "1e-3"),  # quoted: stays text
        ("true", True),
        ("false", False),
        ("null", None),
        ("adam", "adam"),
        ("[400,400]", [400, 400]),
        ("[a, 1, 2.5]", ["a", 1, 2.5]),
        ("{x: 1}", {"x": 1}),
        ("'1'", "1"),
        ("", None),
        ("[unclosed", "[unclosed"),  # not YAML: kept as text
        ("a: b: c", "a: b: c"),
    ],
)
def test_values_are_yaml_scalars_or_lists(text, value):
    parsed = parse_override_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


def test_scientific_learning_rate_is_a_float():
    """The documented example `train.learning_rate=1e-3` gives a number, not the string '1e-3'."""
    out = apply_overrides({}, ["train.learning_rate=1e-3", "train.min_lr=5e-7"])
    assert out["train"]["learning_rate"] == pytest.approx(1e-3)
    assert isinstance(out["train"]["learning_rate"], float)
    assert out["train"]["min_lr"] == pytest.approx(5e-7)


def test_whitespace_around_key_and_value():
    assert apply_overrides({}, [" train.epochs = 4 "]) == {"train": {"epochs": 4}}


def test_value_may_contain_equals_sign():
    assert apply_overrides({}, ["name=a=b"]) == {"name": "a=b"}


@pytest.mark.parametrize("item", ["train.epochs", "justtext", ""])
def test_rejects_items_without_equals(item):
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, [item])


@pytest.mark.parametrize("item", ["=3", " =3", ".=3", "..=1"])
def test_rejects_empty_keys(item):
    with pytest.raises(ValueError, match="empty key"):
        apply_overrides({}, [item])


def test_rejects_descending_into_a_value():
    with pytest.raises(ValueError, match="'epochs' is a value"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.max=4"])
    with pytest.raises(ValueError, match="'model' is a value"):
        apply_overrides({"model": "lr"}, ["model.x=1"])


def test_yaml_round_trip(tmp_path: Path):
    data = {"model": "deepfm", "train": {"learning_rate": 0.001, "units": [400, 400], "flag": True}}
    path = tmp_path / "c.yaml"
    text = dump_yaml(data, path)
    assert path.read_text() == text
    assert list(load_yaml(path)) == ["model", "train"]  # order kept
    assert load_yaml(path) == data


def test_load_yaml_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(listing)

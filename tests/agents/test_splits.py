"""The evolution's splits: valid/gate by user, a request-whole early-stopping slice, in-memory row subsets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from agenticrs.agents.splits import RowSubset, make_evolution_data
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.train.workflow import load_data


@pytest.fixture(scope="module")
def sim_tiny(tiny_cache: Path) -> ProcessedDataset:
    return load_data("sim-tiny", tiny_cache)


def _csv(path: Path, rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = ["req,user,item,title,label"]
    for r in range(rows // 3):  # requests of three candidates, one user each
        user = rng.integers(0, 40)
        for _ in range(3):
            item = rng.integers(0, 30)
            title = "" if rng.random() < 0.1 else f"title {item} for u{user}"
            lines.append(f"r{seed}_{r},u{user},i{item},{title},{rng.integers(0, 2)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def with_text(tmp_path_factory: pytest.TempPathFactory) -> ProcessedDataset:
    """A small data set with a group key, request ids and a text column."""
    root = tmp_path_factory.mktemp("text-data")
    spec = DatasetSpec.from_dict(
        {
            "name": "toy-text",
            "files": {"train": _csv(root / "train.csv", 900, 0), "valid": _csv(root / "valid.csv", 600, 1)},
            "fields": [
                {"name": "user", "kind": "categorical"},
                {"name": "item", "kind": "categorical"},
                {"name": "title", "kind": "text"},
                {"name": "label", "kind": "label"},
            ],
            "group_key": "user",
            "request_key": "req",
        }
    )
    return process_dataset(spec, root / "cache")


def _values(split, key: str):
    value = split[key]
    return value.to_pylist() if isinstance(value, (pa.Array, pa.ChunkedArray)) else np.asarray(value)


def _assert_rows(subset, split, mask: np.ndarray) -> None:
    """Every array of `subset` equals the rows of `split` where `mask` holds, in order."""
    rows = np.flatnonzero(mask)
    assert subset.rows == len(rows)
    keys = split.keys()
    assert sorted(subset.keys()) == sorted(keys)
    for key in keys:
        got, full = _values(subset, key), _values(split, key)
        if isinstance(full, list):
            assert got == [full[i] for i in rows], key
        else:
            np.testing.assert_array_equal(got, full[rows], err_msg=key)
            assert got.dtype == full.dtype, key


def _check_by_group(evo, data: ProcessedDataset) -> None:
    valid = data.split("valid")
    groups = np.asarray(valid["group"])
    valid_groups = set(np.asarray(evo.valid["group"]).tolist())
    gate_groups = set(np.asarray(evo.gate["group"]).tolist())
    assert valid_groups and gate_groups
    assert not valid_groups & gate_groups  # no user on both sides
    assert valid_groups | gate_groups == set(groups.tolist())
    in_valid = np.isin(groups, list(valid_groups))
    _assert_rows(evo.valid, valid, in_valid)  # disjoint and covering: complementary masks
    _assert_rows(evo.gate, valid, ~in_valid)
    assert evo.valid.rows + evo.gate.rows == valid.rows


def test_valid_and_gate_split_users_and_cover_the_validation_split(tiny_synthetic):
    evo = make_evolution_data(tiny_synthetic)
    _check_by_group(evo, tiny_synthetic)
    users = len(np.unique(np.asarray(tiny_synthetic.split("valid")["group"])))
    gate_users = len(np.unique(np.asarray(evo.gate["group"])))
    assert 0.35 < gate_users / users < 0.65
    assert evo.test is tiny_synthetic.splits["test"]
    assert evo.data is tiny_synthetic


def test_gate_share_is_roughly_respected(tiny_synthetic):
    users = len(np.unique(np.asarray(tiny_synthetic.split("valid")["group"])))
    for share in (0.2, 0.8):
        evo = make_evolution_data(tiny_synthetic, gate_share=share)
        _check_by_group(evo, tiny_synthetic)
        gate_users = len(np.unique(np.asarray(evo.gate["group"])))
        assert abs(gate_users / users - share) < 0.12, (share, gate_users / users)


def test_stop_slice_without_requests_is_a_row_share_of_train(tiny_synthetic):
    evo = make_evolution_data(tiny_synthetic, stop_share=0.2)
    train = tiny_synthetic.split("train")
    fit_train, stop = evo.fit.split("train"), evo.fit.split("valid")
    assert fit_train.rows + stop.rows == train.rows
    assert abs(stop.rows / train.rows - 0.2) < 0.03
    assert evo.rows == {"train": fit_train.rows, "stop": stop.rows, "valid": evo.valid.rows,
                        "gate": evo.gate.rows, "test": 2000}
    assert evo.split("train") is fit_train
    assert evo.fit.spec == tiny_synthetic.spec and evo.fit.encoder is tiny_synthetic.encoder
    assert sorted(tiny_synthetic.splits) == ["test", "train", "valid"]  # the data set is not modified


def test_stop_slice_keeps_requests_whole(sim_tiny):
    train = sim_tiny.split("train")
    requests = np.asarray(train["request"])
    evo = make_evolution_data(sim_tiny)
    fit_train, stop = evo.fit.split("train"), evo.fit.split("valid")
    stop_requests = set(np.asarray(stop["request"]).tolist())
    assert not stop_requests & set(np.asarray(fit_train["request"]).tolist())
    in_stop = np.isin(requests, list(stop_requests))
    _assert_rows(stop, train, in_stop)  # train + stop = the original train rows, in order
    _assert_rows(fit_train, train, ~in_stop)
    share = len(stop_requests) / len(np.unique(requests))
    assert 0.06 < share < 0.14, share
    # requests stay contiguous in the stop slice
    stop_req = np.asarray(stop["request"])
    starts = np.r_[True, stop_req[1:] != stop_req[:-1]]
    assert starts.sum() == len(stop_requests)
    _check_by_group(evo, sim_tiny)


def test_split_is_deterministic_and_salted(sim_tiny):
    a, b = make_evolution_data(sim_tiny), make_evolution_data(sim_tiny)
    for name in ("train", "valid", "gate"):
        for key in ("request", "labels", "categorical"):
            np.testing.assert_array_equal(a.split(name)[key], b.split(name)[key])
    np.testing.assert_array_equal(a.fit.split("valid")["request"], b.fit.split("valid")["request"])
    other = make_evolution_data(sim_tiny, salt=7)
    assert not np.array_equal(np.asarray(other.gate["group"]), np.asarray(a.gate["group"]))
    assert not np.array_equal(np.asarray(other.fit.split("valid")["request"]), np.asarray(a.fit.split("valid")["request"]))


def test_labels_and_unknown_split(sim_tiny):
    evo = make_evolution_data(sim_tiny)
    labels = evo.labels("gate")
    assert labels.dtype == np.float64
    np.testing.assert_array_equal(labels, np.asarray(evo.gate["labels"])[:, 0])
    assert evo.labels("test").shape == (sim_tiny.split("test").rows,)
    with pytest.raises(KeyError, match="no split 'stop'"):
        evo.split("stop")


def test_text_columns_follow_their_rows(with_text):
    assert "text/title" in with_text.split("train")
    evo = make_evolution_data(with_text, gate_share=0.4, stop_share=0.3)
    assert evo.test is None
    assert "test" not in evo.rows
    _check_by_group(evo, with_text)
    train = with_text.split("train")
    stop = evo.fit.split("valid")
    in_stop = np.isin(np.asarray(train["request"]), np.unique(np.asarray(stop["request"])))
    _assert_rows(stop, train, in_stop)
    _assert_rows(evo.fit.split("train"), train, ~in_stop)
    titles = stop["text/title"].to_pylist() + evo.fit.split("train")["text/title"].to_pylist()
    assert sorted(titles) == sorted(train["text/title"].to_pylist())
    assert "" in titles and len(set(titles)) > 100  # missing titles and real ones, both carried
    with pytest.raises(KeyError, match=r"no split 'test' in this evolution \(has train, valid, gate\)"):
        evo.split("test")


def test_row_subset_takes_rows_in_the_given_order(with_text):
    split = with_text.split("valid")
    rows = np.array([5, 0, 17, 17, split.rows - 1])
    subset = RowSubset(split, rows)
    assert subset.rows == 5
    assert subset.keys() == split.keys()
    assert "text/title" in subset and "nope" not in subset
    titles = split["text/title"].to_pylist()
    assert subset["text/title"].to_pylist() == [titles[i] for i in rows]
    np.testing.assert_array_equal(subset["categorical"], np.asarray(split["categorical"])[rows])
    np.testing.assert_array_equal(subset["labels"], np.asarray(split["labels"])[rows])
    nested = RowSubset(subset, np.array([4, 1]))
    assert nested["text/title"].to_pylist() == [titles[split.rows - 1], titles[0]]
    np.testing.assert_array_equal(nested["group"], np.asarray(split["group"])[[split.rows - 1, 0]])
    subset.load_in_memory()  # a no-op
    assert subset.rows == 5


def test_errors(tiny_synthetic):
    no_valid = replace(tiny_synthetic, splits={"train": tiny_synthetic.split("train")})
    with pytest.raises(ValueError, match="has no validation split"):
        make_evolution_data(no_valid)
    for kwargs in ({"gate_share": 0}, {"gate_share": 1}, {"stop_share": 0.0}, {"stop_share": 1.5},
                   {"gate_share": -0.2}):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
            make_evolution_data(tiny_synthetic, **kwargs)
    valid = tiny_synthetic.split("valid")
    groups = np.asarray(valid["group"])
    one_user = replace(
        tiny_synthetic,
        splits={"train": tiny_synthetic.split("train"),
                "valid": RowSubset(valid, np.flatnonzero(groups == groups[0]))},
    )
    with pytest.raises(ValueError, match="too small to split into valid and gate users"):
        make_evolution_data(one_user)

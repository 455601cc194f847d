"""AutoFeature profiling: exact estimators, the leakage check on planted leaks, interaction
information of a planted XOR pair, time drift, and `agenticrs profile` storing its result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from agenticrs.agents.autofeature.profile import (
    DatasetProfile,
    cross_information,
    data_fingerprint,
    entropy,
    mutual_information,
    profile_dataset,
    psi,
    quantile_edges,
    record_profile,
    stored_profile,
)
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.cli.main import app
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import ProcessedDataset, process_dataset

ROWS = {"train": 4000, "valid": 1000, "test": 1000}
ORDINARY = ("a", "b", "c", "d", "price", "sparse", "hist")


def _table(split: str, rows: int, seed: int) -> pa.Table:
    """Clicks are a XOR b (10% flipped); `leak_score` is the click plus noise (rule 1); `dwell` is
    recorded only for clicks (rule 2); `d` drifts in the later half of train's time and after."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.integers(0, 2, rows), rng.integers(0, 2, rows), rng.integers(0, 8, rows)
    click = (a ^ b) ^ (rng.random(rows) < 0.1)
    ts = 1_000_000 + np.arange(rows) * 60 + (0 if split == "train" else 10_000_000)
    late = np.arange(rows) >= rows // 2 if split == "train" else np.ones(rows, bool)
    d = np.where(late & (rng.random(rows) < 0.8), 0, rng.integers(0, 4, rows))
    dwell = np.where(click, rng.exponential(30.0, rows), np.nan)
    sparse = np.where(rng.random(rows) < 0.5, rng.normal(size=rows), np.nan)  # missing at random
    hist = ["|".join(f"h{v}" for v in rng.integers(0, 20, k)) for k in rng.integers(0, 5, rows)]
    return pa.table({
        "click": click.astype(np.int8), "a": [f"a{v}" for v in a], "b": [f"b{v}" for v in b],
        "c": [f"c{v}" for v in c], "d": [f"d{v}" for v in d], "price": rng.lognormal(size=rows),
        "sparse": sparse, "leak_score": click + rng.normal(0.0, 0.05, rows), "dwell": dwell, "ts": ts,
        "hist": hist, "uid": rng.integers(0, rows // 2, rows),  # an id with ~2 rows per value
    })  # fmt: skip


def _spec(folder: Path, splits: tuple[str, ...] = tuple(ROWS)) -> DatasetSpec:
    files = {}
    for seed, (split, rows) in enumerate(ROWS.items()):
        pq.write_table(_table(split, rows, seed), folder / f"{split}.parquet")
        files[split] = [str(folder / f"{split}.parquet")]
    return DatasetSpec(
        name="planted-profile", files={k: v for k, v in files.items() if k in splits}, reader={"format": "parquet"},
        fields=[{"name": "click", "kind": "label"}, *({"name": n, "kind": "categorical"} for n in ("a", "b", "c", "d", "uid")),
                {"name": "price", "kind": "numeric", "transform": "log1p"},
                {"name": "sparse", "kind": "numeric", "transform": "standardize"},
                {"name": "leak_score", "kind": "numeric", "transform": "quantile", "quantile_buckets": 8},
                {"name": "dwell", "kind": "numeric", "transform": "log1p"},
                {"name": "ts", "kind": "timestamp"}, {"name": "hist", "kind": "sequence", "max_len": 4}],
    )  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[ProcessedDataset, Path]:
    folder = tmp_path_factory.mktemp("profile")
    spec = _spec(folder)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return process_dataset(spec, folder / "cache"), folder


@pytest.fixture(scope="module")
def profile(planted) -> DatasetProfile:
    return profile_dataset(planted[0])


# -- the estimators on hand-checked arrays ----------------------------------------------------------
def test_mutual_information_and_entropy_exact():
    assert mutual_information([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(math.log(2))
    assert mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0
    # joint (0,0)x2 (0,1)x1 (1,1)x1: H(Y) - H(Y|X) = ln 2 - 3/4 H(2/3, 1/3)
    expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    assert mutual_information([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(expected)
    assert expected == pytest.approx(math.log(2) - 0.75 * (-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)))
    # ids need not be small: they are renumbered
    assert mutual_information([10**9, 10**9, 7, 7], [0, 0, 1, 1]) == pytest.approx(math.log(2))
    # Miller-Madow: ((Kx-1) + (Ky-1) - (Kxy-1)) / 2N = (1 + 1 - 3) / 8 for the independent 2x2
    assert mutual_information([0, 0, 1, 1], [0, 1, 0, 1], corrected=True) == pytest.approx(-1 / 8)
    assert entropy([0, 1, 2, 3]) == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="x has 2 values but y has 3"):
        mutual_information([0, 1], [0, 1, 1])


def test_psi_and_quantile_edges_exact():
    # p = (1/2, 1/2), q = (1/4, 3/4): (1/4 - 1/2) ln(1/2) + (3/4 - 1/2) ln(3/2)
    assert psi([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0, 1, 2], [2, 1, 0]) == 0.0
    # an empty reference bin is floored at 1e-4: p = (1, 1e-4), q = (1/2, 1/2)
    assert psi([0, 0], [0, 1]) == pytest.approx(-0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))
    np.testing.assert_allclose(quantile_edges(np.arange(1, 9), 4), [2.75, 4.5, 6.25])
    # quartiles of (1, 1, 1, 2) at positions 0.75, 1.5, 2.25 are 1, 1, 1.25: the repeated edge merges
    np.testing.assert_array_equal(quantile_edges(np.array([1.0, 1.0, 1.0, 2.0]), 4), [1.0, 1.25])


# -- the profile of the planted data set --------------------------------------------------------------
def test_planted_leaks_are_flagged_and_ordinary_fields_are_not(profile):
    assert {f.name for f in profile.leaks} == {"leak_score", "dwell"}
    assert "single-field AUC" in profile.field("leak_score").leak and profile.field("leak_score").auc > 0.99
    for name in ORDINARY:
        field = profile.field(name)
        assert field.leak is None, (name, field.leak)
        assert field.auc < 0.6 and field.normalised_mi < 0.05, field
    assert profile.field("uid").leak is None and profile.field("uid").cardinality > 1000


def test_without_later_splits_the_auc_is_held_out(tmp_path):
    """Only a train split: the single-field AUC is scored on a half of train the rates were not
    fitted on, so an id with ~2 rows per value does not look like a leak, and the leaks still do."""
    data = process_dataset(_spec(tmp_path, splits=("train",)), tmp_path / "cache")
    alone = profile_dataset(data)
    assert alone.settings["auc_split"] == "a held-out half of train" and alone.settings["windows"] == []
    assert {f.name for f in alone.leaks} == {"leak_score", "dwell"}
    assert alone.field("uid").auc < 0.6 and set(alone.field("c").psi) == {"train_late"}


def test_a_post_outcome_field_is_flagged_by_rule_two(planted, profile):
    dwell = profile.field("dwell")
    assert dwell.leak is not None and "exists only after the outcome" in dwell.leak
    assert "present for 100.0% of positives and 0.0% of negatives" in dwell.leak
    # with rule 1 out of reach, rule 2 alone still flags it
    alone = profile_dataset(planted[0], leak_auc=1.01, leak_nmi=10.0)
    assert [f.name for f in alone.leaks] == ["dwell"] and "single-field" not in alone.field("dwell").leak
    # missing at random (half the rows, both classes alike) is not a leak
    assert profile.field("sparse").missing_rate == pytest.approx(0.5, abs=0.03)


def test_counts_and_mutual_information_match_the_encoded_arrays(planted, profile):
    data = planted[0]
    clicks = np.asarray(data.split("train")["labels"][:, 0])
    assert profile.rows == ROWS["train"] and profile.label == "click"
    assert [f.kind for f in profile.fields[:7]] == ["categorical"] * 5 + ["numeric"] * 2
    assert profile.field("c").cardinality == 8 and profile.field("a").cardinality == 2
    dwell = profile.field("dwell")
    assert dwell.missing_rate == pytest.approx(1 - clicks.mean()) and dwell.coverage == pytest.approx(clicks.mean())
    column = data.schema.categorical_index("c")
    assert profile.field("c").mutual_information == pytest.approx(
        mutual_information(np.asarray(data.split("train")["categorical"][:, column]), clicks))
    # the label entropy normalises MI
    h = profile.settings["label_entropy"]
    assert h == pytest.approx(entropy(clicks))
    assert profile.field("dwell").normalised_mi == pytest.approx(profile.field("dwell").mutual_information / h)
    hist = profile.field("hist")
    assert hist.kind == "sequence" and hist.cardinality == 20 and 0.15 < hist.missing_rate < 0.25


def test_a_sample_of_max_rows_finds_the_same_leaks(planted):
    sampled = profile_dataset(planted[0], max_rows=1000)
    assert sampled.rows == 1000 and sampled.settings["max_rows"] == 1000
    assert {f.name for f in sampled.leaks} == {"leak_score", "dwell"}
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        profile_dataset(planted[0], max_rows=0)


def test_drift_by_split_and_by_time(profile):
    assert profile.settings["windows"] == ["valid", "test"] and profile.settings["time_field"] == "ts"
    d, c = profile.field("d"), profile.field("c")
    assert set(d.psi) == {"valid", "test", "train_late"}
    assert d.psi["train_late"] > 0.5 and d.psi["valid"] > 0.25
    assert c.psi["train_late"] < 0.05 and c.psi["valid"] < 0.05


def test_cross_information_of_an_xor_pair_and_of_independent_fields(planted, profile):
    data = planted[0]
    # MI((a, b); y) = ln 2 - H(0.1) for y = a XOR b with 10% flipped; each field alone ~0
    expected = math.log(2) + 0.1 * math.log(0.1) + 0.9 * math.log(0.9)
    assert cross_information(data, "a", "b") == pytest.approx(expected, abs=0.03)
    assert profile.field("a").mutual_information < 0.005 and profile.field("b").mutual_information < 0.005
    assert abs(cross_information(data, "c", "price")) < 0.01
    assert abs(cross_information(data, "c", "d")) < 0.01
    with pytest.raises(ValueError, match="field 'nope' is not a profiled field"):
        cross_information(data, "a", "nope")


def test_bad_label_and_round_trip(planted, profile, tmp_path):
    with pytest.raises(ValueError, match="label 'buy' is not a label of 'planted-profile'"):
        profile_dataset(planted[0], label="buy")
    again = DatasetProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    fingerprint = data_fingerprint(planted[0])
    first = record_profile(store, profile, fingerprint)
    assert record_profile(store, profile, fingerprint) == first  # one row per snapshot and label
    found = stored_profile(store, fingerprint, "click")
    assert found is not None and found[0] == first and found[1] == profile
    with store.transaction() as tx:
        (row,) = tx.profiles()
    assert {leak["field"] for leak in row.leaks} == {"leak_score", "dwell"}


# -- the command ----------------------------------------------------------------------------------
def test_cli_prints_and_stores_and_a_second_run_returns_the_stored_row(planted, tmp_path, monkeypatch):
    from agenticrs.cli import common

    monkeypatch.setattr(common.console, "width", 220)
    folder = planted[1]
    db = f"sqlite:///{tmp_path / 'knowledge.db'}"
    args = ["profile", "--dataset", str(folder / "spec.yaml"), "--db", db, "--cache-dir", str(folder / "cache"), "-q"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert "leaks: leak_score, dwell" in result.output and "profile #1 stored" in result.output
    assert "exists only after the outcome" in result.output and "PSI train_late" in result.output
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["id"] == 1 and {f["name"] for f in written["fields"] if f["leak"]} == {"leak_score", "dwell"}
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "stored profile #1 of this data snapshot (not recomputed" in again.output
    store = KnowledgeStore(db, readonly=True)
    with store.transaction() as tx:
        rows = tx.profiles("planted-profile")
    assert len(rows) == 1 and rows[0].rows == ROWS["train"] and rows[0].label == "click"
    bad = runner.invoke(app, [*args, "--label", "buy"])
    assert bad.exit_code == 2 and "label 'buy' is not a label" in bad.output


def test_leaks_are_red_in_the_table(profile):
    from agenticrs.cli.profile import profile_table

    table = profile_table(profile)
    names = [f.name for f in profile.fields]
    styles = {name: table.rows[i].style for i, name in enumerate(names)}
    assert styles["dwell"] == "red" and styles["leak_score"] == "red" and styles["a"] is None

"""The embedded `synthetic` data set: determinism, calibration, oracle metrics, histories, spec."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from agenticrs.data.errors import DataError
from agenticrs.data.readers import iter_split
from agenticrs.data.spec import DatasetSpec
from agenticrs.data.synthetic import (
    MARKER_NAME,
    SPLITS,
    SyntheticConfig,
    build_world,
    generate_synthetic,
    oracle_auc,
    preset,
    rank_auc,
    relevance_score,
    simulate,
)

SEQUENCE_FIELDS = ("hist_item_id", "hist_cate_id")


def _read(spec: DatasetSpec, split: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in spec.files[split]])


def _read_all(spec: DatasetSpec) -> pa.Table:
    return pa.concat_tables([_read(spec, s) for s in SPLITS])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticConfig, DatasetSpec, Path]:
    out = tmp_path_factory.mktemp("tiny")
    config = preset("tiny")
    return config, generate_synthetic(config, out), out


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticConfig, DatasetSpec, Path]:
    out = tmp_path_factory.mktemp("default")
    config = preset("default")
    return config, generate_synthetic(config, out), out


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tiny, tmp_path: Path) -> None:
    config, spec, out = tiny
    again = generate_synthetic(config, tmp_path)
    for split in SPLITS:
        a, b = spec.files[split][0], again.files[split][0]
        assert Path(a).read_bytes() == Path(b).read_bytes()
        assert pq.read_table(a).equals(pq.read_table(b))


def test_different_seed_gives_different_data(tiny, tmp_path: Path) -> None:
    config, spec, _ = tiny
    other = generate_synthetic(config.model_copy(update={"seed": 1}), tmp_path)
    a, b = _read(spec, "train"), _read(other, "train")
    assert not a.equals(b)
    assert not np.array_equal(a["item_id"].to_numpy(), b["item_id"].to_numpy())


def test_tiny_is_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    generate_synthetic("tiny", tmp_path)
    # ~0.3 s measured; the bound is loose so that a loaded CI machine does not flake
    assert time.perf_counter() - started < 3.0


# --- calibration and oracle metrics ---------------------------------------------------------


def test_clicks_are_calibrated_to_true_prob(default) -> None:
    _, spec, _ = default
    table = _read_all(spec)
    y = table["click"].to_numpy().astype(np.float64)
    p = table["true_prob"].to_numpy()
    assert set(np.unique(y)) == {0.0, 1.0}
    assert np.all((p > 0) & (p < 1))
    # overall: within 4 standard errors of the Bernoulli sum
    se = math.sqrt(float((p * (1 - p)).sum())) / y.size
    assert abs(y.mean() - p.mean()) < 4 * se
    # per decile of true_prob (20k rows each): |click rate - mean true_prob| < 0.015 (> 4 s.e.)
    edges = np.quantile(p, np.linspace(0, 1, 11))
    decile = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for d in range(10):
        m = decile == d
        assert m.sum() > 1000
        assert abs(y[m].mean() - p[m].mean()) < 0.015, f"decile {d}"


def test_meta_oracle_metrics_match_files(tiny) -> None:
    config, spec, out = tiny
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"] == config.model_dump(mode="json")
    assert meta["config_hash"] == config.config_hash()
    for split in SPLITS:
        table = _read(spec, split)
        y = table["click"].to_numpy()
        p = table["true_prob"].to_numpy()
        m = meta["splits"][split]
        assert m["rows"] == table.num_rows
        assert m["positive_rate"] == pytest.approx(y.mean(), abs=1e-12)
        assert m["oracle_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        assert m["oracle_auc"] == pytest.approx(oracle_auc(spec.files[split]), abs=1e-12)
        logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        assert m["oracle_logloss"] == pytest.approx(logloss, rel=1e-9)
        assert 0.7 < m["oracle_auc"] < 0.97
        assert 0.05 < m["positive_rate"] < 0.5


def test_rank_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.random(5000) + 0.3 * y, 1)  # many ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(rank_auc(np.ones(4), np.arange(4)))


# --- histories ----------------------------------------------------------------------------


def test_history_is_the_users_last_k_earlier_stream_items(tiny) -> None:
    config, spec, _ = tiny
    world = build_world(config)
    K = config.history_len
    table = _read_all(spec)
    users = table["user_id"].to_numpy() - 1
    ts = table["ts"].to_numpy()
    hist_items = table["hist_item_id"].to_pylist()
    hist_cates = table["hist_cate_id"].to_pylist()
    assert max(len(h) for h in hist_items) <= K
    assert any(len(h) < K for h in hist_items)  # cold-start users exist
    rng = np.random.default_rng(123)
    for row in rng.choice(table.num_rows, 300, replace=False):
        u, t = int(users[row]), int(ts[row])
        mine = np.flatnonzero(world.ev_user == u)
        mine = mine[np.argsort(world.ev_time[mine], kind="stable")]
        earlier = mine[world.ev_time[mine] < t]
        expected = (world.ev_item[earlier[-K:]] + 1).tolist() if earlier.size else []
        assert hist_items[row] == expected, f"row {row}"
        assert hist_cates[row] == [int(world.item_cate[i - 1]) + 1 for i in expected]


def test_splits_are_ordered_in_time_and_sized(tiny) -> None:
    config, spec, _ = tiny
    tables = {s: _read(spec, s) for s in SPLITS}
    sizes = {s: t.num_rows for s, t in tables.items()}
    assert sum(sizes.values()) == config.n_impressions
    assert sizes["train"] == round(0.8 * config.n_impressions)
    assert sizes["valid"] == round(0.1 * config.n_impressions)
    ts = {s: t["ts"].to_numpy() for s, t in tables.items()}
    for s in SPLITS:
        assert np.all(np.diff(ts[s]) >= 0)
    assert ts["train"].max() <= ts["valid"].min() and ts["valid"].max() <= ts["test"].min()


def test_random_split(tmp_path: Path) -> None:
    spec = generate_synthetic(preset("tiny", split="random", n_impressions=5000), tmp_path)
    ts = {s: _read(spec, s)["ts"].to_numpy() for s in SPLITS}
    assert sum(v.size for v in ts.values()) == 5000
    assert ts["train"].max() > ts["test"].min()  # interleaved in time


# --- spec ---------------------------------------------------------------------------------


def test_spec_is_valid_and_files_are_readable(tiny) -> None:
    config, spec, out = tiny
    DatasetSpec.model_validate(spec.model_dump())
    names = [f.name for f in spec.fields]
    assert names == [
        "user_id", "item_id", "cate_id", "brand_id", "user_age_bucket", "user_gender", "hour",
        "device", "position", "price", "hist_item_id", "hist_cate_id", "click",
    ]  # fmt: skip
    assert "true_prob" not in names and "true_prob" not in spec.source_columns
    assert "ts" not in spec.source_columns
    assert spec.name == "synthetic" and spec.group_key == "user_id"
    assert spec.field("hist_item_id").share_vocab_with == "item_id"
    assert spec.field("hist_cate_id").share_vocab_with == "cate_id"
    assert spec.field("hist_cate_id").parallel_to == "hist_item_id"  # DIN attends over [item, cate]
    assert spec.field("hist_item_id").max_len == config.history_len
    assert spec.field("price").transform in ("log1p", "standardize")
    assert [f.name for f in spec.labels] == ["click"]
    for split in SPLITS:
        chunks = list(iter_split(spec.files[split], spec.reader, spec.source_columns))
        table = pa.concat_tables([c.table for c in chunks])
        assert table.column_names == spec.source_columns
        assert table.num_rows == _read(spec, split).num_rows
        for name in SEQUENCE_FIELDS:
            assert table.schema.field(name).type == pa.list_(pa.int64())
        assert table.schema.field("item_id").type == pa.int64()
        assert table.schema.field("price").type == pa.float64()
        assert "true_prob" not in table.column_names
        assert table["item_id"].to_numpy().min() >= 1
    # the stored YAML spec (relative paths) resolves to the same files
    loaded = DatasetSpec.from_yaml(out / "dataset.yaml")
    assert {k: [str(Path(p).resolve()) for p in v] for k, v in loaded.files.items()} == spec.files
    assert loaded.fields == spec.fields


# --- cache marker -------------------------------------------------------------------------


def test_marker_skips_regeneration_and_new_config_regenerates(tmp_path: Path) -> None:
    config = preset("tiny", n_impressions=2000)
    spec = generate_synthetic(config, tmp_path)
    marker = tmp_path / MARKER_NAME
    assert json.loads(marker.read_text())["key"] == config.config_hash()
    train = Path(spec.files["train"][0])
    mtime = train.stat().st_mtime_ns
    assert generate_synthetic(config, tmp_path) == spec
    assert train.stat().st_mtime_ns == mtime  # skipped
    other = config.model_copy(update={"seed": 5})
    assert other.config_hash() != config.config_hash()
    generate_synthetic(other, tmp_path)
    assert json.loads(marker.read_text())["key"] == other.config_hash()
    assert train.stat().st_mtime_ns != mtime
    marker.write_text("{broken")  # an interrupted run regenerates
    mtime = train.stat().st_mtime_ns
    generate_synthetic(other, tmp_path)
    assert train.stat().st_mtime_ns != mtime


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        SyntheticConfig(train_frac=0.8, valid_frac=0.2, test_frac=0.1)
    with pytest.raises(ValidationError):
        SyntheticConfig(n_items=10, n_categories=50)
    with pytest.raises(ValidationError):
        SyntheticConfig(colour="red")
    with pytest.raises(ValidationError):
        SyntheticConfig(relevance_power=0.5)
    with pytest.raises(DataError):
        preset("huge")
    assert preset("default") == SyntheticConfig()
    assert preset("relevance").relevance_power > 1 and preset("relevance", seed=3).seed == 3


# --- ground truth: relevance ---------------------------------------------------------------


def _reference_relevance(world, item: int, hist: list[int], power: float = 1.0) -> float:
    """R = max over history items of the same category of ((1 + cos(v_target, v_hist)) / 2) ** power."""
    best = 0.0
    v = world.item_latent[item - 1]
    for h in hist:
        if world.item_cate[h - 1] == world.item_cate[item - 1]:
            w = world.item_latent[h - 1]
            best = max(best, ((1 + float(v @ w) / (np.linalg.norm(v) * np.linalg.norm(w))) / 2) ** power)
    return best


def test_relevance_weight_controls_relevance_signal(tmp_path: Path) -> None:
    aucs = {}
    for weight in (0.0, 6.0):
        config = preset("tiny", relevance_weight=weight)
        spec = generate_synthetic(config, tmp_path / str(weight))
        world = build_world(config)
        table = _read_all(spec)
        R = relevance_score(world, table["item_id"].to_numpy(), table["hist_item_id"])
        items, hists = table["item_id"].to_pylist(), table["hist_item_id"].to_pylist()
        for row in range(0, table.num_rows, 97):
            assert R[row] == pytest.approx(_reference_relevance(world, items[row], hists[row]), abs=1e-9)
        aucs[weight] = rank_auc(table["click"].to_numpy(), R)
        meta = json.loads((tmp_path / str(weight) / "meta.json").read_text())
        assert meta["all"]["component_auc"]["R"] == pytest.approx(aucs[weight], abs=1e-9)
    # R still correlates with the interest-driven user x item term at weight 0, hence > 0.5
    assert aucs[6.0] > aucs[0.0] + 0.1
    assert aucs[6.0] > 0.8


def test_simulate_true_prob_is_sigmoid_of_documented_logit() -> None:
    config = preset("tiny", n_impressions=3000)
    _, cols = simulate(config)
    logit = config.base_logit + config.field_weight * cols["F"] + config.interaction_weight * cols["I"]
    logit = logit + config.relevance_weight * cols["R"]
    np.testing.assert_allclose(cols["true_prob"], 1 / (1 + np.exp(-logit)), rtol=1e-12)
    assert np.all(np.diff(cols["ts"]) >= 0)


def test_relevance_preset_makes_item_level_matches_drive_clicks(tmp_path: Path) -> None:
    """The 'relevance' preset: a sharp kernel, so R is about the target itself or a close twin."""
    config = preset("relevance", n_impressions=20_000)
    spec = generate_synthetic(config, tmp_path)
    world = build_world(config)
    table = _read_all(spec)
    items, hists = table["item_id"].to_pylist(), table["hist_item_id"].to_pylist()
    R = relevance_score(world, table["item_id"].to_numpy(), table["hist_item_id"])
    for row in range(0, table.num_rows, 97):
        expected = _reference_relevance(world, items[row], hists[row], config.relevance_power)
        assert R[row] == pytest.approx(expected, abs=1e-9)
    assert max(len(h) for h in hists) == config.history_len == 30
    repeat = np.array([item in hist for item, hist in zip(items, hists)])
    assert R[repeat].min() == pytest.approx(1.0)  # the target itself in the history: cos = 1
    # R is mostly carried by the target itself being in the history, not by its category's share
    assert R[repeat].sum() > 0.6 * R.sum()
    assert R[~repeat].mean() < 0.1
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["all"]["component_auc"]["R"] > 0.9
    assert meta["all"]["oracle_auc"] > 0.9
    assert 0.15 < meta["all"]["positive_rate"] < 0.4

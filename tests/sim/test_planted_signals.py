"""Planted signals: a cross the click function uses (only as a pair) and a leak drawn after the outcome."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from agenticrs.data.registry import DATASETS
from agenticrs.data.simulated import write_simulation
from agenticrs.features.pipeline import process_dataset
from agenticrs.features.schema import MISSING_INDEX
from agenticrs.sim import build_world, sim_preset
from agenticrs.sim.config import PlantedSignals
from agenticrs.sim.environment import Environment, OraclePolicy
from agenticrs.sim.world import balanced_signs
from agenticrs.train.metrics import auc

SEGMENT, STYLE, LEAK = "user_segment", "item_style", "dwell_bucket"


@pytest.fixture(scope="module")
def planted_sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim_tiny_planted")
    write_simulation(sim_preset("tiny-planted", seed=0), out, name="sim-tiny-planted")
    return out


@pytest.fixture(scope="module")
def impressions(planted_sim, split_tables) -> pa.Table:
    return split_tables(planted_sim, "impressions")


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in MI (nats) of a discrete x (0..k-1) with a 0/1 label, from the joint counts."""
    k = int(x.max()) + 1
    joint = np.bincount(x * 2 + y, minlength=2 * k).reshape(k, 2) / len(y)
    independent = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    seen = joint > 0
    return float((joint[seen] * np.log(joint[seen] / independent[seen])).sum())


def _content_hash(folder: Path) -> str:
    """Every Parquet table's schema and values, and the click sequences (independent of the Parquet writer)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(str(path))
        digest.update(path.name.encode())
        digest.update(table.schema.to_string(show_schema_metadata=False).encode())
        for name in table.column_names:
            digest.update(repr(table.column(name).to_pylist()).encode())
    digest.update((folder / "sequences.txt").read_bytes())
    return digest.hexdigest()[:16]


def test_the_pair_carries_the_signal_and_each_field_alone_almost_none(impressions):
    y = impressions["click"].to_numpy().astype(np.int64)
    a = impressions[SEGMENT].to_numpy().astype(np.int64) - 1
    b = impressions[STYLE].to_numpy().astype(np.int64) - 1
    k = PlantedSignals().cross_values
    assert a.min() == 0 and a.max() == k - 1 and b.min() == 0 and b.max() == k - 1
    mi_a, mi_b, mi_pair = _mutual_information(a, y), _mutual_information(b, y), _mutual_information(a * k + b, y)
    interaction = mi_pair - mi_a - mi_b  # what the hashed cross adds beyond the two fields
    assert interaction > 0.015, (mi_a, mi_b, mi_pair)  # measured 0.025 nats (H(click) = 0.29)
    assert mi_a < 0.1 * interaction and mi_b < 0.2 * interaction, (mi_a, mi_b, interaction)
    # the segments are dealt so every value gets about the same share of traffic
    assert np.ptp(np.bincount(a) / len(a)) < 0.03


def test_the_click_function_uses_the_cross_and_the_oracle_with_it_wins(impressions):
    config = sim_preset("tiny-planted", seed=0)
    world = build_world(config)
    weight = config.planted.cross_weight
    sign = world.planted_sign
    assert set(np.unique(sign)) == {-1, 1}
    assert (sign.sum(0) == 0).all() and (sign.sum(1) == 0).all()  # balanced: zero marginal effect
    # the ground truth: the same world without the cross differs by exactly w s(a, b)
    without = build_world(sim_preset("tiny-planted", seed=0, planted={"cross_weight": 0.0}))
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, world.n_users, 500), rng.integers(0, config.n_items, 500)
    context = (np.zeros(500, np.int64), rng.integers(0, 10, 500), rng.integers(0, 24, 500), np.full(500, 3), rng.random(500))
    difference = world.click_logit(users, items, *context) - without.click_logit(users, items, *context)
    expected = weight * sign[world.user_planted[users], world.item_planted[items]]
    np.testing.assert_allclose(difference, expected, atol=1e-12)
    # the logged truth: an oracle keeping the cross ranks clicks better than one that drops it
    y = impressions["click"].to_numpy().astype(np.int64)
    p = impressions["p_click"].to_numpy().astype(np.float64)
    s = sign[impressions[SEGMENT].to_numpy() - 1, impressions[STYLE].to_numpy() - 1]
    logit = np.log(p / (1 - p))
    assert auc(y, logit) > auc(y, logit - weight * s) + 0.02
    assert np.mean(logit[s > 0]) - np.mean(logit[s < 0]) == pytest.approx(2 * weight, abs=0.25)


def test_the_leak_exists_only_after_a_click(planted_sim, impressions, tmp_path):
    y = impressions["click"].to_numpy().astype(bool)
    missing = impressions[LEAK].is_null().to_numpy(zero_copy_only=False)
    assert missing[~y].all() and not missing[y].any()
    dwell = impressions[LEAK].to_numpy(zero_copy_only=False)[y].astype(np.int64)
    assert set(np.unique(dwell)) <= {1, 2, 3, 4, 5}
    cart = impressions["cart"].to_numpy()[y].astype(bool)
    assert dwell[cart].mean() > dwell[~cart].mean() + 0.5  # longer dwell before a cart: informative beyond the click
    # the data set's fields include the planted columns; the encoder maps the leak to "missing" on every non-click
    data = process_dataset(write_simulation(sim_preset("tiny-planted", seed=0), planted_sim)["ctr"], tmp_path)
    names = [f.name for f in data.schema.categorical]
    assert {SEGMENT, STYLE, LEAK} <= set(names) and SEGMENT in data.spec.request_fields
    train = data.split("train")
    codes, label = train["categorical"][:, names.index(LEAK)], train["labels"][:, 0]
    assert (codes[label == 0] == MISSING_INDEX).all() and (codes[label == 1] != MISSING_INDEX).all()


def test_the_serving_table_has_the_planted_fields_and_no_leak():
    world = build_world(sim_preset("tiny-planted", seed=0))
    env = Environment(world, seed=1)
    batch = env.requests(0)
    table = batch.table
    assert table[LEAK].null_count == table.num_rows > 0  # the outcome is unknown when a request is served
    np.testing.assert_array_equal(table[SEGMENT].to_numpy(), world.user_planted[batch.user] + 1)
    np.testing.assert_array_equal(table[STYLE].to_numpy(), world.item_planted[batch.item] + 1)
    oracle, _ = env.serve(OraclePolicy(), 0)
    assert oracle.totals["clicks"] > 0


def test_default_worlds_are_unchanged(tiny_sim):
    # fingerprints computed on main at b73280c, before planted signals existed:
    # _content_hash of write_simulation(sim_preset("tiny", seed=5)) and of Environment(build_world(
    # sim_preset("tiny", seed=0)), seed=3).requests(0).table (the same digest over one table)
    assert sim_preset("tiny", seed=5).config_hash() == "d0923269b2994bce"
    assert sim_preset("tiny", seed=0).config_hash() == "d6e68cb718e5f4ea"
    assert _content_hash(tiny_sim) == "d39a56ecefbc825e"
    table = Environment(build_world(sim_preset("tiny", seed=0)), seed=3).requests(0).table
    digest = hashlib.sha256(table.schema.to_string(show_schema_metadata=False).encode())
    for name in table.column_names:
        digest.update(repr(table.column(name).to_pylist()).encode())
    assert digest.hexdigest()[:16] == "d6b0fd0b800c71b9"
    assert not {SEGMENT, STYLE, LEAK} & set(table.column_names)


def test_planted_settings_are_checked_and_the_presets_registered():
    with pytest.raises(ValidationError, match="'brand'"):
        PlantedSignals(cross_fields=("user_segment", "brand"))
    with pytest.raises(ValidationError, match="even"):
        PlantedSignals(cross_values=7)
    with pytest.raises(ValidationError, match="differ"):
        PlantedSignals(cross_fields=("segment", "segment"))
    with pytest.raises(ValueError, match="even"):
        balanced_signs(5, np.random.default_rng(0))
    for k in (2, 4, 16):
        sign = balanced_signs(k, np.random.default_rng(k))
        assert (sign.sum(0) == 0).all() and (sign.sum(1) == 0).all()
    assert sim_preset("small-planted").planted == PlantedSignals()
    assert {"sim-tiny-planted", "sim-small-planted", "sim-tiny-planted-cvr_delayed"} <= set(DATASETS)

"""Several promotions in one calendar: windows, deferred purchases, the derived CM-DCM columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agenticrs.data.prepromo import prepromo_clicks, write_prepromo_dataset
from agenticrs.data.simulated import write_simulation
from agenticrs.sim import SimConfig, sim_preset
from agenticrs.sim.logs import generate_logs
from agenticrs.sim.promo import promotion_columns
from agenticrs.sim.world import CART, PURCHASE, SECONDS_PER_DAY

SHRUNK = {"n_users": 500, "n_items": 500, "new_items_per_day": 5, "requests_per_user_day": 1.0}


@pytest.fixture(scope="module")
def promo_sim(tmp_path_factory) -> tuple[SimConfig, Path]:
    config = sim_preset("promo", seed=3, **SHRUNK)
    out = tmp_path_factory.mktemp("sim_promo")
    write_simulation(config, out, name="sim-promo")
    return config, out


def test_calendar_helpers_follow_every_promotion():
    config = SimConfig(n_days=16, promo_days=(5, 12), pre_promo_days=2)
    day = np.arange(16)
    assert config.promotions == (5, 12)
    assert config.next_promo(day).tolist() == [5] * 6 + [12] * 7 + [-1] * 3
    assert config.days_to_promo(day).tolist() == [5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, -1, -1, -1]
    assert np.flatnonzero(config.is_pre_promo(day)).tolist() == [3, 4, 10, 11]
    assert np.flatnonzero(config.is_promo_day(day)).tolist() == [5, 12]
    assert bool(config.is_pre_promo(4)) and not bool(config.is_pre_promo(5)) and config.is_promo_day(12)
    # the single promotion of the older presets is the same calendar
    single = SimConfig()
    assert single.promotions == (single.promo_day,)
    assert np.flatnonzero(single.is_pre_promo(np.arange(14))).tolist() == [6, 7, 8]


def test_invalid_promotion_calendars_are_refused():
    with pytest.raises(ValueError, match="more than pre_promo_days"):
        SimConfig(n_days=20, promo_days=(5, 7), pre_promo_days=3)
    with pytest.raises(ValueError, match="more than pre_promo_days"):
        SimConfig(n_days=20, promo_days=(12, 6))
    with pytest.raises(ValueError, match="must fall in the log"):
        SimConfig(n_days=20, promo_days=(6, 20))
    with pytest.raises(ValueError, match="first promotion"):
        SimConfig(n_days=20, promo_days=(2, 9))


def test_existing_presets_keep_their_hash_and_a_one_day_list_gives_the_same_world(tmp_path):
    # the hashes of `small` and `tiny` before promotions became a list (they key cached worlds)
    assert sim_preset("small").config_hash() == "de3cb3dbbb922dd8"
    assert sim_preset("tiny").config_hash() == "d6e68cb718e5f4ea"
    base = sim_preset("tiny", seed=2, n_users=150, n_items=200, n_days=8, promo_day=4)
    generate_logs(base, tmp_path / "a")
    generate_logs(base.model_copy(update={"promo_days": (4,)}), tmp_path / "b")
    for name in ("impressions_train", "clicks_train", "events"):
        assert pq.read_table(str(tmp_path / "a" / f"{name}.parquet")).equals(
            pq.read_table(str(tmp_path / "b" / f"{name}.parquet"))), name


def test_pre_promotion_purchases_wait_for_their_own_promotion(promo_sim):
    config, folder = promo_sim
    assert len(config.promotions) >= 3
    clicks = promotion_columns(pq.read_table(str(folder / "clicks_train.parquet")), config)
    day = clicks["day"].to_numpy()
    purchase = clicks["purchase"].to_numpy() == 1
    bought_on = clicks["purchase_ts"].fill_null(-1).to_numpy() // SECONDS_PER_DAY
    pre = clicks["pre_promo"].to_numpy() == 1
    cart = clicks["cart"].to_numpy() == 1
    assert (pre == config.is_pre_promo(day)).all()
    for promo in config.promotions:
        if promo >= config.train_days:
            continue
        window = pre & (config.next_promo(day) == promo)
        assert window.sum() > 100, promo
        on_promo = bought_on[window & purchase & cart] == promo
        assert on_promo.mean() > 0.75, (promo, on_promo.mean())  # deferred after a cart: defer_prob 0.9
        # uncarted purchases defer less (defer_prob_no_cart 0.3)
        assert (bought_on[window & purchase & ~cart] == promo).mean() < on_promo.mean() - 0.2
        # ordinary days before the window do not defer to this promotion
        before = (day < promo - config.pre_promo_days) & (day > promo - 8) & purchase & ~pre
        assert (bought_on[before] == promo).mean() < 0.2
    # labels: y_del = pre-promotion purchase on the click's promotion day, y_dir = the other purchases
    y_del, y_dir = clicks["y_del"].to_numpy() == 1, clicks["y_dir"].to_numpy() == 1
    assert (y_del == (pre & purchase & (bought_on == config.next_promo(day)))).all()
    assert (y_dir == (purchase & ~y_del)).all() and (clicks["y_atc"].to_numpy() == cart).all()
    assert (clicks["days_to_promo"].to_numpy() == config.days_to_promo(day)).all()


def test_user_state_counts_match_the_history(promo_sim):
    config, folder = promo_sim
    clicks = promotion_columns(pq.read_table(str(folder / "clicks_train.parquet")), config)
    clicks = clicks.slice(clicks.num_rows - 300)  # late days: histories hold earlier promotions
    types, stamps = clicks["hist_type"].to_pylist(), clicks["hist_ts"].to_pylist()
    promos = set(config.promotions)
    expect = {
        "hist_len": [len(t) for t in types],
        "hist_carts": [t.count(CART) for t in types],
        "hist_purchases": [t.count(PURCHASE) for t in types],
        "hist_promo_purchases": [sum(k == PURCHASE and s // SECONDS_PER_DAY in promos for k, s in zip(t, ts))
                                 for t, ts in zip(types, stamps)],
    }  # fmt: skip
    for name, values in expect.items():
        assert clicks[name].to_numpy().tolist() == values, name
    assert sum(expect["hist_promo_purchases"]) > 0


def test_prepromo_splits_hold_history_current_and_held_out_days(promo_sim, tmp_path):
    config, folder = promo_sim
    spec = write_prepromo_dataset(folder, config, tmp_path / "h", observed_days=1)
    tables = {s: pq.read_table(spec.files[s][0]) for s in ("train", "valid", "test")}
    last = config.promotions[-1]
    test_days = set(tables["test"]["day"].to_numpy().tolist())
    assert test_days == set(range(last - config.pre_promo_days + 1, last))
    train = tables["train"]
    current = train["promo_index"].to_numpy() == len(config.promotions) - 1
    assert current.any() and (train["day"].to_numpy()[current] == last - config.pre_promo_days).all()
    assert train["y_del"].to_numpy(zero_copy_only=False)[current].tolist() == [None] * int(current.sum()) or \
        np.isnan(train["y_del"].to_numpy(zero_copy_only=False)[current]).all()
    assert not np.isnan(tables["test"]["y_del"].to_numpy(zero_copy_only=False)).any()
    assert (train["promo_index"].to_numpy() < len(config.promotions) - 1).any()
    alone = write_prepromo_dataset(folder, config, tmp_path / "c", history=False)
    assert (pq.read_table(alone.files["train"][0])["promo_index"].to_numpy() == len(config.promotions) - 1).all()
    assert len(prepromo_clicks(folder, config)) > len(train)
    past = write_prepromo_dataset(folder, config, tmp_path / "p", include_current=False)  # the fine-tune's first stage
    past_tables = {s: pq.read_table(past.files[s][0]) for s in ("train", "valid", "test")}
    assert (past_tables["train"]["promo_index"].to_numpy() < len(config.promotions) - 1).all()
    assert past_tables["test"]["request_id"].to_pylist() == tables["test"]["request_id"].to_pylist()
    with pytest.raises(ValueError, match="leave no training data"):
        write_prepromo_dataset(folder, config, tmp_path / "y", history=False, include_current=False)
    with pytest.raises(ValueError, match="no historical promotion"):
        write_prepromo_dataset(folder, config, tmp_path / "x", eval_promo=0)

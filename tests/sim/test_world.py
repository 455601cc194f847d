"""The world's ground truth shows the behaviours it is documented to have."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from agenticrs.data.simulated import write_simulation
from agenticrs.sim import SimConfig, build_world, sim_preset
from agenticrs.sim.world import SECONDS_PER_DAY, History


def test_same_seed_gives_identical_tables_and_another_seed_does_not(tmp_path, tiny_sim):
    again = tmp_path / "again"
    write_simulation(sim_preset("tiny", seed=5), again, name="sim-tiny")
    for name in ("impressions_train", "impressions_test", "clicks_valid", "items", "users", "events"):
        assert pq.read_table(str(tiny_sim / f"{name}.parquet")).equals(pq.read_table(str(again / f"{name}.parquet"))), name
    assert (tiny_sim / "sequences.txt").read_text() == (again / "sequences.txt").read_text()
    other = tmp_path / "other"
    write_simulation(sim_preset("tiny", seed=6), other, name="sim-tiny")
    assert not pq.read_table(str(tiny_sim / "impressions_train.parquet")).equals(
        pq.read_table(str(other / "impressions_train.parquet"))
    )


def _calibration_gaps(p: np.ndarray, y: np.ndarray, bins: int = 10) -> np.ndarray:
    """|empirical rate - mean true probability| / standard error, per quantile bin of p."""
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    n = np.bincount(index, minlength=bins)
    mean_p = np.bincount(index, weights=p, minlength=bins) / n
    rate = np.bincount(index, weights=y, minlength=bins) / n
    se = np.sqrt(mean_p * (1 - mean_p) / n)
    return np.abs(rate - mean_p) / se


def test_stored_true_probabilities_match_empirical_rates(small_impressions):
    t = small_impressions
    assert t.num_rows > 150_000
    p_click, click = t["p_click"].to_numpy().astype(np.float64), t["click"].to_numpy()
    # every decile of the true click probability: within 4 standard errors of its empirical rate
    assert _calibration_gaps(p_click, click).max() < 4.0
    assert abs(click.mean() - p_click.mean()) < 0.003
    clicked = click == 1
    p_cart, cart = t["p_cart"].to_numpy()[clicked].astype(np.float64), t["cart"].to_numpy()[clicked]
    assert _calibration_gaps(p_cart, cart, bins=5).max() < 4.0
    p_buy, buy = t["p_purchase"].to_numpy()[clicked].astype(np.float64), t["purchase"].to_numpy()[clicked]
    assert _calibration_gaps(p_buy, buy, bins=5).max() < 4.0
    # no outcome without a click; purchases carry a time after the click
    assert not (t["cart"].to_numpy()[~clicked]).any() and not (t["purchase"].to_numpy()[~clicked]).any()
    bought = t["purchase"].to_numpy() == 1
    assert (t["purchase_ts"].to_numpy(zero_copy_only=False)[bought] > t["ts"].to_numpy()[bought]).all()


def test_pre_promotion_days_defer_conversions_and_raise_carting(small_sim, split_tables):
    config = sim_preset("small")
    clicks = split_tables(small_sim, "clicks")
    day = clicks["day"].to_numpy()
    purchase = clicks["purchase"].to_numpy() == 1
    purchase_day = np.where(purchase, clicks["purchase_ts"].fill_null(-1).to_numpy() // SECONDS_PER_DAY, -1)
    same_day = purchase & (purchase_day == day)
    pre = (day >= config.promo_day - config.pre_promo_days) & (day < config.promo_day)
    promo = day == config.promo_day
    ordinary = ~pre & ~promo
    cart = clicks["cart"].to_numpy() == 1
    pre_cvr, promo_cvr = same_day[pre].mean(), same_day[promo].mean()
    print(f"same-day CVR: pre-promotion {pre_cvr:.4f}, promotion day {promo_cvr:.4f}, ordinary {same_day[ordinary].mean():.4f}")
    assert pre_cvr < 0.3 * promo_cvr
    assert cart[pre].mean() > cart[promo].mean() + 0.05
    assert cart[pre].mean() > cart[ordinary].mean() + 0.1
    # the deferred purchases land on the promotion day
    deferred = purchase & pre
    assert (purchase_day[deferred] == config.promo_day).mean() > 0.8


def test_cold_start_items_get_fewer_impressions_and_clicks_at_launch(small_impressions):
    t = small_impressions
    config = sim_preset("small")
    age = t["item_age_days"].to_numpy()
    launched_in_log = (t["day"].to_numpy().astype(np.int64) - age) >= 0
    item, click = t["item_id"].to_numpy(), t["click"].to_numpy()
    # per (item, age) of the items launched during the log: impressions and clicks
    young = launched_in_log & (age == 0)
    mature = launched_in_log & (age >= config.launch_ramp_days)
    items_young = np.unique(item[young]).size
    n_launched_young = config.new_items_per_day * (config.n_days)  # every launch day is observed at age 0
    mature_days = launched_in_log & (age >= config.launch_ramp_days)
    item_days_mature = np.unique(np.stack([item[mature_days], age[mature_days]]), axis=1).shape[1]
    impressions_young = young.sum() / n_launched_young
    impressions_mature = mature.sum() / max(item_days_mature, 1)
    print(f"impressions per item-day at launch {impressions_young:.2f} vs mature {impressions_mature:.2f}")
    assert impressions_young < 0.35 * impressions_mature
    assert click[young].sum() / n_launched_young < 0.35 * click[mature].sum() / max(item_days_mature, 1)
    assert items_young <= n_launched_young


def test_scenario_base_rates_and_feature_distributions_differ(small_impressions):
    t = small_impressions
    scenario = t["scenario"].combine_chunks()
    names = scenario.dictionary.to_pylist()
    index = scenario.indices.to_numpy()
    click = t["click"].to_numpy()
    rates = {}
    for s, name in enumerate(names):
        rows = index == s
        rate = click[rows].mean()
        rates[name] = (rate, np.sqrt(rate * (1 - rate) / rows.sum()))
    print({k: round(v[0], 4) for k, v in rates.items()})
    values = list(rates.values())
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            (a, sa), (b, sb) = values[i], values[j]
            assert abs(a - b) > 5 * np.hypot(sa, sb)
    query = t["query_cate_l2"].is_valid().to_numpy(zero_copy_only=False)
    search = index == names.index("search")
    assert query[search].all() and not query[~search].any()  # only search requests carry a query
    position = t["position"].to_numpy()
    assert position[index == names.index("cart_page")].max() < position[index == names.index("home_feed")].max()


def test_history_holds_the_users_behaviours_before_the_round(tiny_sim):
    """An impression's history = the user's last K behaviours strictly before its round began."""
    config = sim_preset("tiny", seed=5)
    events = pq.read_table(str(tiny_sim / "events.parquet")).to_pandas()
    t = pq.read_table(str(tiny_sim / "impressions_train.parquet")).slice(5000, 400).to_pandas()
    round_seconds = SECONDS_PER_DAY // config.rounds_per_day
    by_user = {u: g for u, g in events.groupby("user_id")}
    checked = 0
    for row in t.itertuples():
        start = (row.ts // round_seconds) * round_seconds
        mine = by_user.get(row.user_id)
        before = mine[mine.ts < start] if mine is not None else events.iloc[:0]
        expected = before.item_id.to_numpy()[-config.history_len :]
        if len(before) and np.unique(before.ts.to_numpy()[-config.history_len - 1 :]).size < min(len(before), config.history_len + 1):
            continue  # tied timestamps make the order ambiguous
        assert list(row.hist_item_id) == expected.tolist()
        assert list(row.hist_type) == before.behaviour.to_numpy()[-config.history_len :].tolist()
        checked += 1
    assert checked > 300


def test_history_append_keeps_the_latest_k_in_time_order():
    h = History.empty(3, 4)
    h.append(np.array([0, 0, 1]), np.array([10, 11, 20], np.int32), np.array([1, 2, 1], np.int8), np.array([5, 6, 1]))
    h.append(np.array([0, 0, 0, 2]), np.array([13, 12, 14, 30], np.int32), np.ones(4, np.int8), np.array([9, 8, 10, 3]))
    assert h.items[0].tolist() == [11, 12, 13, 14] and h.length[0] == 4
    assert h.items[1].tolist() == [20, -1, -1, -1] and h.length[1] == 1
    assert h.items[2].tolist() == [30, -1, -1, -1]
    assert h.ts[0].tolist() == [6, 8, 9, 10]


def test_items_have_titles_from_their_category_brand_and_colour(tiny_sim):
    items = pq.read_table(str(tiny_sim / "items.parquet")).to_pandas()
    row = items.iloc[0]
    assert row.brand_name in row.title and row.cate_l2_name in row.title
    assert items.title.str.count(",").eq(2).all()
    assert (items.launch_day >= 0).sum() == sim_preset("tiny").new_items_per_day * (sim_preset("tiny").n_days + 7)


def test_interest_drifts_slowly():
    world = build_world(sim_preset("tiny"))
    users = np.arange(world.n_users)
    u0, u1, u30 = world.interest(users, 0), world.interest(users, 1), world.interest(users, 30)
    assert np.allclose(np.linalg.norm(u30, axis=1), 1.0)
    assert (np.einsum("ud,ud->u", u0, u1) > 0.99).all()
    assert np.einsum("ud,ud->u", u0, u30).mean() < 0.9


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="unknown simulator preset"):
        sim_preset("huge")
    with pytest.raises(ValueError, match="promo_day"):
        SimConfig(n_days=10, promo_day=9)

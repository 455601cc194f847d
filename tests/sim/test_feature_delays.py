"""Feature-dependent conversion delays: off by default (the older worlds unchanged), and when on,
the delay's median follows the item's price and top category and the pre-promotion deferral
follows the user's price sensitivity times the item's price."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from agenticrs.sim import SimConfig, build_world, sim_preset
from agenticrs.sim.logs import generate_logs
from agenticrs.sim.world import SECONDS_PER_DAY

KNOBS = {"delay_price_weight": 0.8, "delay_category_sigma": 0.7, "defer_price_weight": 2.0}


def _delays(config: SimConfig, day: int, n: int = 40_000, items: bool = True):
    world = build_world(config)
    rng = np.random.default_rng(0)
    users = rng.integers(0, world.n_users, n)
    item = rng.integers(0, len(world.item_top), n)
    ts = day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, n).astype(np.float64)
    delay = world.purchase_delay(np.full(n, day), ts, np.random.default_rng(1), users, np.ones(n, bool),
                                 item if items else None)  # fmt: skip
    return world, users, item, delay, ts


def test_knobs_off_by_default_keep_every_preset_hash_and_the_draws():
    config = SimConfig()
    assert (config.delay_price_weight, config.delay_category_sigma, config.defer_price_weight) == (0.0, 0.0, 0.0)
    for name, digest in (("small", "de3cb3dbbb922dd8"), ("tiny", "d6e68cb718e5f4ea")):
        assert sim_preset(name).config_hash() == digest
    assert sim_preset("small", delay_price_weight=0.5).config_hash() != sim_preset("small").config_hash()
    # with the knobs at 0, passing the items changes no delay (ordinary and pre-promotion days)
    tiny = sim_preset("tiny", seed=1)
    for day in (2, tiny.promo_day - 1):
        assert np.array_equal(_delays(tiny, day)[3], _delays(tiny, day, items=False)[3])


def test_default_logs_are_identical_and_the_knobs_change_only_delays(tmp_path):
    base = sim_preset("tiny", seed=2, n_users=800, n_items=250, n_days=7, promo_day=4)
    generate_logs(base, tmp_path / "a")
    generate_logs(base.model_copy(update={"delay_price_weight": 0.0, "delay_category_sigma": 0.0}), tmp_path / "b")
    generate_logs(base.model_copy(update=KNOBS), tmp_path / "c")
    read = lambda folder: pq.read_table(str(tmp_path / folder / "clicks_train.parquet"))  # noqa: E731
    a, b, c = read("a"), read("b"), read("c")
    assert a.equals(b)
    # the same requests, clicks and purchases in the first round (later rounds' histories hold
    # purchases that entered at other times); only the delays differ
    first = lambda t: t.filter(pc.less(t["ts"], SECONDS_PER_DAY // 4))  # noqa: E731
    a, c = first(a), first(c)
    for column in ("request_id", "item_id", "click", "purchase"):
        assert a[column].equals(c[column]), column
    bought = a["purchase"].to_numpy() == 1
    assert bought.sum() >= 5
    assert not np.array_equal(a["delay_s"].to_numpy(zero_copy_only=False)[bought],
                              c["delay_s"].to_numpy(zero_copy_only=False)[bought])  # fmt: skip


def test_delay_median_follows_price_and_category():
    config = sim_preset("tiny", seed=3, delay_price_weight=0.8, delay_category_sigma=0.7)
    world, _, item, delay, _ = _delays(config, day=1)
    z, top = world.item_price_z[item], world.item_top[item]
    log_delay = np.log(delay.astype(np.float64))
    # regress log delay on z and the category indicators: slope ~ the price weight (the cap and
    # rounding barely matter at these medians)
    design = np.column_stack([z, np.eye(world.n_tops)[top]])
    coef = np.linalg.lstsq(design, log_delay, rcond=None)[0]
    assert coef[0] == pytest.approx(0.8, abs=0.06)
    offsets = coef[1:] - np.log(config.delay_median_hours * 3600)
    assert np.allclose(offsets, 0.7 * world.top_delay_z, atol=0.08)
    # off: no dependence on price
    plain = sim_preset("tiny", seed=3)
    world0, _, item0, delay0, _ = _delays(plain, day=1)
    slope = np.polyfit(world0.item_price_z[item0], np.log(delay0.astype(np.float64)), 1)[0]
    assert abs(slope) < 0.05


def test_pre_promotion_deferral_follows_price_sensitivity_times_price():
    config = sim_preset("tiny", seed=4, defer_prob=0.5, defer_price_weight=2.0)
    day = config.promo_day - config.pre_promo_days  # a log-normal delay rarely reaches the promotion from here
    world, users, item, delay, ts = _delays(config, day)
    deferred = (ts + delay) // SECONDS_PER_DAY == config.promo_day
    x = world.user_price_sensitivity[users] * world.item_price_z[item]
    high, low = deferred[x > 0.5].mean(), deferred[x < -0.5].mean()
    assert high > 0.75 and low < 0.3, (high, low)
    # the probability itself: logit(defer_prob) + w s_u z_i
    p = world.defer_probability(users[:5], np.ones(5, bool), item[:5])
    assert np.allclose(p, 1 / (1 + np.exp(-2.0 * x[:5])))
    # off: the same rate whatever the price
    off = sim_preset("tiny", seed=4, defer_prob=0.5)
    world0, users0, item0, delay0, ts0 = _delays(off, day)
    deferred0 = (ts0 + delay0) // SECONDS_PER_DAY == off.promo_day
    x0 = world0.user_price_sensitivity[users0] * world0.item_price_z[item0]
    assert abs(deferred0[x0 > 0.5].mean() - deferred0[x0 < -0.5].mean()) < 0.05

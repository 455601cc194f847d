"""The online environment: policies, common random numbers and the A/B test's statistics."""

from __future__ import annotations

import numpy as np
import pytest

from agenticrs.sim import build_world, sim_preset
from agenticrs.sim.environment import (
    Environment,
    OraclePolicy,
    PopularityPolicy,
    RandomPolicy,
    relative_lift,
)


@pytest.fixture(scope="module")
def world():
    return build_world(sim_preset("tiny", seed=2))


def test_requests_are_deterministic_and_pools_hold_distinct_items(world):
    env = Environment(world, seed=3)
    a, b = env.requests(0), env.requests(0)
    assert np.array_equal(a.item, b.item) and np.array_equal(a.requests.user, b.requests.user)
    rows = a.slates.request_index
    assert np.all(np.diff(rows) >= 0)  # contiguous per request
    pairs = rows.astype(np.int64) * world.n_items + a.item
    assert np.unique(pairs).size >= 0.999 * pairs.size  # (almost) no item twice in one pool
    launched = world.item_launch_day[a.item] <= env.start_day
    assert launched.all()
    table = a.table
    assert table.num_rows == a.num_rows and "p_click" not in table.column_names and "click" not in table.column_names


def test_serving_shows_the_policys_top_slate(world):
    env = Environment(world, seed=3)
    batch = env.requests(0)
    scores = OraclePolicy()(batch)
    shown, position = env._top_slates(batch, scores)
    rows = batch.slates.request_index
    for request in np.unique(rows)[:50]:
        pool = np.flatnonzero(rows == request)
        mine = np.isin(shown, pool)
        slate = world.config.scenarios[batch.requests.scenario[request]].slate_size
        assert mine.sum() == slate
        best = pool[np.argsort(-scores[pool], kind="stable")[:slate]]
        assert np.array_equal(shown[mine][np.argsort(position[mine])], best)


def test_oracle_beats_random_with_a_significant_lift(world):
    env = Environment(world, seed=1)
    result = env.ab_test(RandomPolicy(seed=1), OraclePolicy(), crn="full")
    clicks = result.comparisons["clicks"]
    print({m: (round(c.lift, 3), round(c.ci_low, 3), round(c.ci_high, 3)) for m, c in result.comparisons.items()})
    assert clicks.significant and clicks.ci_low > 0.2
    assert result.arm_b.totals["clicks"] > result.arm_a.totals["clicks"]
    assert result.comparisons["gmv"].lift > 0
    assert result.arm_a.impressions == result.arm_b.impressions  # same requests and slates sizes in both arms


def test_the_same_policy_with_common_random_numbers_gives_identical_arms(world):
    env = Environment(world, seed=4)
    result = env.ab_test(OraclePolicy(), OraclePolicy(), crn="full")
    for metric in ("clicks", "carts", "purchases", "gmv"):
        assert np.array_equal(result.arm_a.per_user[metric], result.arm_b.per_user[metric])
        assert result.comparisons[metric].lift == 0 and not result.comparisons[metric].significant


@pytest.mark.parametrize("crn", ["requests", "none"])
def test_aa_false_positive_rate_is_near_alpha(world, crn):
    """Oracle vs itself over 200 seeds at alpha = 0.05 (independent outcome draws per arm)."""
    rejections = []
    for seed in range(200):
        env = Environment(world, seed=seed, rate_scale=2.0)  # enough requests for the normal approximation
        result = env.ab_test(OraclePolicy(), OraclePolicy(), crn=crn)
        rejections.append(result.comparisons["clicks"].significant)
    rate = float(np.mean(rejections))
    print(f"A/A false-positive rate ({crn}): {rate:.3f}")
    assert 0.01 <= rate <= 0.10  # 5% +- 3 binomial standard errors (1.5%)


def test_common_random_numbers_shrink_the_confidence_interval(world):
    """A small real difference (the oracle vs a slightly noisy oracle): common random numbers give
    a much narrower interval than independent draws on the same requests."""
    oracle = OraclePolicy()

    def noisy_oracle(batch):
        noise = np.random.default_rng(int(batch.requests.request_id[0])).standard_normal(batch.num_rows)
        return oracle(batch) * np.exp(0.3 * noise)

    env = Environment(world, seed=9)
    full = env.ab_test(noisy_oracle, oracle, crn="full").comparisons["clicks"]
    independent = env.ab_test(noisy_oracle, oracle, crn="requests").comparisons["clicks"]
    print(f"CI width with CRN {full.ci_high - full.ci_low:.3f}, independent draws {independent.ci_high - independent.ci_low:.3f}")
    assert (full.ci_high - full.ci_low) < 0.6 * (independent.ci_high - independent.ci_low)


def test_relative_lift_matches_a_hand_computation():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([2.0, 2.0, 4.0, 5.0])
    lift, low, high, p = relative_lift(a, b, paired=True)
    mx, my = 2.5, 3.25
    cov = np.cov(a, b, ddof=1)
    var = (cov[1, 1] / mx**2 - 2 * my * cov[0, 1] / mx**3 + my**2 * cov[0, 0] / mx**4) / 4
    assert lift == pytest.approx(0.3)
    assert (high - low) / 2 == pytest.approx(1.959964 * np.sqrt(var), rel=1e-5)
    unpaired = relative_lift(a, b, paired=False)
    assert (unpaired[2] - unpaired[1]) > (high - low)  # positively correlated arms: pairing helps


def test_a_policy_with_wrong_output_shape_is_refused(world):
    env = Environment(world, seed=0)
    with pytest.raises(ValueError, match="one per candidate"):
        env.serve(lambda batch: np.zeros(3))


def test_popularity_ranks_by_exposure_and_sits_between_random_and_oracle(world):
    env = Environment(world, seed=5, rate_scale=2.0)
    batch = env.requests(0)
    scores = PopularityPolicy()(batch)
    assert np.array_equal(scores, world.exposure_weights(env.start_day)[batch.item])
    random_clicks = env.serve(RandomPolicy(seed=5), batch=batch)[0].totals["clicks"]
    popular_clicks = env.serve(PopularityPolicy(), batch=batch)[0].totals["clicks"]
    oracle_clicks = env.serve(OraclePolicy(), batch=batch)[0].totals["clicks"]
    assert random_clicks < popular_clicks < oracle_clicks

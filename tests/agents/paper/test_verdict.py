"""The verdict of a paired comparison on planted effects, with hand-checked values.

t quantiles (two-sided 95 %): t(0.975, 2) = 4.302653, t(0.975, 3) = 3.182446."""

from __future__ import annotations

import math

import pytest

from agenticrs.agents.paper.verdict import paired_effect

BASE = [0.80, 0.81, 0.79]


def test_a_real_gain_holds():
    # d = 0.020, 0.021, 0.019: mean 0.020, sd 0.001, half-width 4.302653 * 0.001 / sqrt(3) = 0.0024841
    effect = paired_effect([0.820, 0.831, 0.809], BASE)
    assert effect.verdict == "holds"
    assert effect.n == 3
    assert effect.mean == pytest.approx(0.020, abs=1e-12)
    assert effect.std == pytest.approx(0.001, abs=1e-12)
    assert effect.low == pytest.approx(0.0175159, abs=1e-6)
    assert effect.high == pytest.approx(0.0224841, abs=1e-6)


def test_no_gain_is_not_shown():
    # d = +0.002, -0.002, 0.000: mean 0, sd 0.002, half-width 0.0049683
    effect = paired_effect([0.802, 0.808, 0.790], BASE)
    assert effect.verdict == "not shown"
    assert effect.mean == pytest.approx(0.0, abs=1e-12)
    assert (effect.low, effect.high) == (pytest.approx(-0.0049683, abs=1e-6), pytest.approx(0.0049683, abs=1e-6))


def test_a_loss_contradicts_the_claim():
    # d = -0.010, -0.012, -0.008, -0.010: mean -0.010, sd 0.0016330, half-width 3.182446 * 0.0016330 / 2 = 0.0025985
    effect = paired_effect([0.790, 0.798, 0.782, 0.800], [0.80, 0.81, 0.79, 0.81])
    assert effect.verdict == "contradicted"
    assert effect.mean == pytest.approx(-0.010, abs=1e-12)
    assert effect.high == pytest.approx(-0.0074015, abs=1e-6)


def test_pairing_is_what_makes_a_small_consistent_gain_visible():
    # the method is 0.003 better on every seed, while the seeds differ by 0.02: paired, it holds
    baseline = [0.78, 0.80, 0.82]
    effect = paired_effect([b + 0.003 for b in baseline], baseline)
    assert effect.verdict == "holds" and effect.std == pytest.approx(0.0, abs=1e-12)


def test_a_lower_is_better_metric_is_signed_so_that_positive_is_better():
    effect = paired_effect([0.40, 0.41, 0.39], [0.42, 0.431, 0.409], direction="lower")  # logloss down by 0.020
    assert effect.verdict == "holds" and effect.mean == pytest.approx(0.020, abs=1e-12)


def test_the_margin_must_be_exceeded():
    effect = paired_effect([0.820, 0.831, 0.809], BASE, margin=0.018)  # lower bound 0.01752 < 0.018
    assert effect.verdict == "not shown"


def test_one_seed_gives_no_interval_and_shows_nothing():
    effect = paired_effect([0.9], [0.8])
    assert effect.verdict == "not shown" and math.isnan(effect.low)
    assert effect.as_dict()["low"] is None


def test_unpaired_values_are_refused():
    with pytest.raises(ValueError, match="same non-zero number of seeds"):
        paired_effect([0.8, 0.9], [0.8])

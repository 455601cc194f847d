"""EnsNAS statistics and the acceptance rule: the decomposition identities, the paper's inequality
versus the exact rule, the paired bootstrap, and input validation."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from agenticrs.agents.ensnas import (
    Comparison,
    MemberStats,
    compare,
    measured_ensemble_error,
    member_stats,
    paper_condition,
    predicted_improvement,
    residual_stats,
    residuals,
)


def _learners(
    rng: np.random.Generator, n: int, n_learners: int, shared: float, own: float, bias_spread: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(L, N) probabilities = true CTR + shared noise + per-learner noise (+ per-learner bias), and labels."""
    ctr = rng.beta(2.0, 5.0, n)
    labels = (rng.random(n) < ctr).astype(np.float64)
    offsets = rng.uniform(-bias_spread, bias_spread, (n_learners, 1))
    p = ctr + rng.normal(0.0, shared, n) + rng.normal(0.0, own, (n_learners, n)) + offsets
    return np.clip(p, 0.0, 1.0), labels


def _arm(rng: np.random.Generator, ctr: np.ndarray, n_learners: int, shared: float, own: float) -> np.ndarray:
    return np.clip(
        ctr + rng.normal(0.0, shared, ctr.size) + rng.normal(0.0, own, (n_learners, ctr.size)), 0, 1
    )


# ---------------------------------------------------------------------------------------------
# 1-2. decomposition identities


@pytest.mark.parametrize("draw", range(6))
def test_two_learner_prediction_equals_measured_two_ensemble(draw: int) -> None:
    rng = np.random.default_rng(draw)
    shared, own = [(0.0, 0.2), (0.2, 0.01), (0.1, 0.1), (0.3, 0.0), (0.05, 0.3), (0.15, 0.05)][draw]
    # bias_spread gives the two learners different mean residuals, which per-learner centring would miss
    p, y = _learners(rng, 2000, 2, shared, own, bias_spread=0.05)
    stats = member_stats(p, y)
    assert stats.learners == 2 and stats.n == 2000
    assert stats.ensemble_error(2) == pytest.approx(measured_ensemble_error(p, y), abs=1e-12)
    # and the general structure: Ê = μ̂² + σ̂² on the sample, M = 1 is the single-learner error
    assert stats.error == pytest.approx(stats.bias**2 + stats.variance, abs=1e-12)
    assert stats.ensemble_error(1) == stats.error


def test_two_learners_identical_predictions() -> None:
    rng = np.random.default_rng(3)
    p, y = _learners(rng, 500, 1, 0.1, 0.1)
    p2 = np.vstack([p, p])  # perfectly correlated learners: the ensemble is the single learner
    stats = member_stats(p2, y)
    assert stats.correlation == pytest.approx(1.0, abs=1e-12)
    assert stats.ensemble_error(2) == pytest.approx(measured_ensemble_error(p2, y), abs=1e-12)
    assert stats.ensemble_error(100) == pytest.approx(stats.error, abs=1e-12)


def test_eight_learner_prediction_equals_measured_eight_ensemble() -> None:
    """With L learners, (*) at M = L from the pooled statistics IS the L-ensemble Brier, exactly.

    Proof: with d_k = e_k − μ̂ (pooled mean), ē − μ̂ = (1/L) Σ d_k, so
    mean(ē²) = μ̂² + (1/L²)[Σ_k mean(d_k²) + Σ_{i≠j} mean(d_i d_j)] = μ̂² + σ̂²/L + ((L−1)/L) ĉ,
    while (*) gives Ê − ((L−1)/L)(σ̂² − ĉ) = μ̂² + σ̂²/L + ((L−1)/L) ĉ since Ê = μ̂² + σ̂².
    This needs σ̂² and ĉ centred on the POOLED mean; centring each learner on its own mean leaves
    an error equal to the population variance of the learners' mean residuals (checked below).
    For M != L (*) is a prediction under the homogeneity assumptions, not an identity.
    """
    rng = np.random.default_rng(8)
    p, y = _learners(rng, 3000, 8, 0.1, 0.08, bias_spread=0.04)
    stats = member_stats(p, y)
    measured = measured_ensemble_error(p, y)
    assert stats.learners == 8
    assert stats.ensemble_error(8) == pytest.approx(measured, abs=1e-12)

    # the alternative (per-learner centring) is off by exactly var(learner means): the test can tell them apart
    e = residuals(p, y)
    means = e.mean(axis=1)
    var_own = e.var(axis=1).mean()
    centred = e - means[:, None]
    cov_own = np.mean([np.mean(centred[i] * centred[j]) for i in range(8) for j in range(i + 1, 8)])
    own_pred = stats.error - (7 / 8) * (var_own - cov_own)
    assert own_pred - measured == pytest.approx(means.var(), abs=1e-12)
    assert means.var() > 1e-5


# ---------------------------------------------------------------------------------------------
# 3-4. the paper's inequality versus the exact rule


def _residual_arm(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two learners' residuals with a random bias, random shared/individual noise mix."""
    bias = rng.uniform(-0.15, 0.15)
    shared, own = rng.uniform(0.02, 0.3, 2)
    return bias + shared * rng.normal(size=n) + own * rng.normal(size=(2, n))


def test_paper_condition_equals_exact_rule_when_variances_match() -> None:
    rng = np.random.default_rng(0)
    outcomes: set[tuple[bool, bool]] = set()
    kept = 0
    for _ in range(400):
        e_inc = _residual_arm(rng, 400)
        e_cand = _residual_arm(rng, 400)
        inc = residual_stats(e_inc)
        cand0 = residual_stats(e_cand)
        # rescale the candidate's residuals about their pooled mean: σ̂² matches, ρ̂ and μ̂ are unchanged
        scale = math.sqrt(inc.variance / cand0.variance)
        cand = residual_stats(cand0.bias + scale * (e_cand - cand0.bias))
        assert cand.variance == pytest.approx(inc.variance, rel=1e-12)
        assert cand.correlation == pytest.approx(cand0.correlation, abs=1e-12)
        m = int(rng.integers(2, 200))
        improvement = predicted_improvement(cand, inc, m)
        if abs(improvement) < 1e-12:  # round-off could flip a tie either way
            continue
        kept += 1
        exact = improvement > 0.0
        assert paper_condition(cand, inc, m) == exact
        outcomes.add((exact, paper_condition(cand, inc, m)))
    assert kept > 390
    assert outcomes == {(True, True), (False, False)}  # both verdicts were exercised


def test_paper_condition_sufficient_when_candidate_variance_not_lower() -> None:
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(600):
        inc = residual_stats(_residual_arm(rng, 300))
        cand = residual_stats(_residual_arm(rng, 300))
        if cand.variance < inc.variance:
            continue
        m = int(rng.integers(2, 200))
        if paper_condition(cand, inc, m):
            checked += 1
            assert predicted_improvement(cand, inc, m) > 0.0
    assert checked > 50


def test_paper_condition_not_sufficient_when_candidate_variance_lower() -> None:
    """The dropped variance-shift term is negative here: the paper accepts a worse ensemble."""
    inc = MemberStats(n=10, learners=2, error=0.10, bias=0.0, variance=0.10, covariance=0.05, correlation=0.5)
    # same single-learner error, slightly less correlated, but much lower variance (larger bias)
    cand = MemberStats(
        n=10, learners=2, error=0.10, bias=math.sqrt(0.08), variance=0.02, covariance=0.008, correlation=0.4
    )
    assert paper_condition(cand, inc, 10)
    assert predicted_improvement(cand, inc, 10) < 0.0


# ---------------------------------------------------------------------------------------------
# 5. hand-checked numbers


def test_hand_checked_statistics() -> None:
    y = np.array([1.0, 0.0, 1.0, 1.0])
    p = np.array([[0.5, 0.25, 0.75, 1.0], [0.75, 0.5, 1.0, 0.75]])
    # e_A = [-1/2, 1/4, -1/4, 0] (mean -1/8), e_B = [-1/4, 1/2, 0, -1/4] (mean 0)
    # Ê  = ½(3/8 / 4 + 3/8 / 4) = 3/32 = 0.09375
    # μ̂  = ½(-1/8 + 0) = -1/16
    # σ̂² = Ê − μ̂² = 3/32 − 1/256 = 23/256          (= mean of (e − μ̂)² over both learners)
    # ĉ  = mean(e_A e_B) − μ̂² = 1/16 − 1/256 = 15/256
    # ρ̂  = 15/23
    # 2-ensemble: ē = [-3/8, 3/8, -1/8, -1/8], Brier = (9+9+1+1)/64 / 4 = 5/64 = Ê − ½(σ̂² − ĉ)
    np.testing.assert_array_equal(residuals(p, y), [[-0.5, 0.25, -0.25, 0.0], [-0.25, 0.5, 0.0, -0.25]])
    s = member_stats(p, y)
    assert (s.n, s.learners) == (4, 2)
    assert s.error == pytest.approx(3 / 32, abs=1e-15)
    assert s.bias == pytest.approx(-1 / 16, abs=1e-15)
    assert s.variance == pytest.approx(23 / 256, abs=1e-15)
    assert s.covariance == pytest.approx(15 / 256, abs=1e-15)
    assert s.correlation == pytest.approx(15 / 23, abs=1e-15)
    assert measured_ensemble_error(p, y) == pytest.approx(5 / 64, abs=1e-15)
    assert s.ensemble_error(2) == pytest.approx(5 / 64, abs=1e-15)
    # M = 4: 3/32 − (3/4)(8/256) = 3/32 − 3/128 = 9/128
    assert s.ensemble_error(4) == pytest.approx(9 / 128, abs=1e-15)


def test_constant_residuals_have_unit_correlation() -> None:
    y = np.array([0.0, 0.0, 1.0])
    p = np.array([[0.2, 0.2, 1.0], [0.2, 0.2, 1.0]])  # residuals 0.2, 0.2, 0.0: not constant
    assert member_stats(p, y).variance > 0
    s = member_stats(np.full((2, 3), 0.5), np.array([0.5, 0.5, 0.5]))  # soft labels: all residuals 0
    assert (s.variance, s.covariance, s.correlation, s.error) == (0.0, 0.0, 1.0, 0.0)


# ---------------------------------------------------------------------------------------------
# 6. compare(): decision, bootstrap, diagnostics


def test_identical_candidate_and_incumbent_is_rejected() -> None:
    p, y = _learners(np.random.default_rng(4), 5000, 2, 0.1, 0.05)
    c = compare(p, p.copy(), y, 16)
    assert c.improvement == 0.0
    assert c.ci_low == 0.0 and c.ci_high == 0.0
    assert not c.accepted and not c.exact_condition and not c.paper_condition
    assert c.reason.startswith("rejected: no diversity gain and no accuracy gain")


def test_clearly_better_candidate_is_accepted() -> None:
    rng = np.random.default_rng(5)
    ctr = rng.beta(2.0, 5.0, 20_000)
    y = (rng.random(ctr.size) < ctr).astype(np.float64)
    inc = _arm(rng, ctr, 2, 0.10, 0.08)
    cand = _arm(rng, ctr, 2, 0.03, 0.02)  # much less noise
    c = compare(cand, inc, y, 16, bootstrap=300, level=0.95)
    assert c.accepted and c.exact_condition and c.paper_condition
    assert 0.0 < c.ci_low <= c.improvement <= c.ci_high
    assert c.gain_accuracy > 0
    assert c.reason.startswith("accepted:")
    assert c.resamples == 300 and c.level == 0.95
    # swapped roles: the worse architecture must not replace the better one
    r = compare(inc, cand, y, 16, bootstrap=300)
    assert not r.accepted and r.improvement == pytest.approx(-c.improvement, abs=1e-15)


def test_gain_decomposition_sums_to_improvement() -> None:
    rng = np.random.default_rng(6)
    for _ in range(20):
        ctr = rng.beta(2.0, 5.0, 2000)
        y = (rng.random(ctr.size) < ctr).astype(np.float64)
        inc = _arm(rng, ctr, int(rng.integers(2, 5)), *rng.uniform(0.0, 0.2, 2))
        cand = _arm(rng, ctr, int(rng.integers(2, 5)), *rng.uniform(0.0, 0.2, 2))
        m = int(rng.integers(2, 100))
        c = compare(cand, inc, y, m, bootstrap=0)
        total = c.gain_accuracy + c.gain_diversity + c.gain_variance_shift
        assert total == pytest.approx(c.improvement, abs=1e-12)
        assert c.improvement == pytest.approx(c.predicted_incumbent - c.predicted_candidate, abs=1e-15)
        assert c.delta_error == pytest.approx(c.candidate.error - c.incumbent.error, abs=1e-15)
        assert c.gain_accuracy == -c.delta_error
        assert c.paper_condition == paper_condition(c.candidate, c.incumbent, m)


def test_diversity_can_outweigh_accuracy_for_large_ensembles() -> None:
    """A less accurate but far less correlated candidate loses at M = 2 and wins at M = 50."""
    rng = np.random.default_rng(7)
    ctr = rng.beta(2.0, 5.0, 50_000)
    y = (rng.random(ctr.size) < ctr).astype(np.float64)
    inc = _arm(rng, ctr, 2, 0.089, 0.045)  # mostly shared noise: high ρ
    cand = _arm(rng, ctr, 2, 0.063, 0.11)  # more total noise, mostly independent: low ρ
    small = compare(cand, inc, y, 2, bootstrap=200)
    large = compare(cand, inc, y, 50, bootstrap=200)
    assert small.gain_accuracy < 0 < small.gain_diversity
    assert large.candidate.correlation < large.incumbent.correlation
    assert not small.accepted
    assert small.reason.startswith("rejected: accuracy loss too large for the diversity gained")
    assert large.accepted and large.paper_condition
    assert large.reason.startswith("accepted: diversity gain")


def test_bootstrap_is_deterministic_and_matches_naive_recomputation() -> None:
    rng = np.random.default_rng(9)
    ctr = rng.beta(2.0, 5.0, 300)
    y = (rng.random(ctr.size) < ctr).astype(np.float64)
    inc = _arm(rng, ctr, 3, 0.1, 0.08)
    cand = _arm(rng, ctr, 2, 0.08, 0.1)
    b, m, level = 60, 12, 0.9
    first = compare(cand, inc, y, m, bootstrap=b, level=level, seed=123)
    again = compare(cand, inc, y, m, bootstrap=b, level=level, seed=123)
    other = compare(cand, inc, y, m, bootstrap=b, level=level, seed=124)
    assert first == again
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert other.improvement == first.improvement

    # the same resampled rows, with the statistics recomputed from scratch on every resample
    idx = np.random.default_rng(123).integers(0, y.size, size=(b, y.size), dtype=np.int32)
    naive = np.array(
        [predicted_improvement(member_stats(cand[:, i], y[i]), member_stats(inc[:, i], y[i]), m) for i in idx]
    )
    assert first.ci_low == pytest.approx(np.quantile(naive, 1 - level), abs=1e-12)
    assert first.ci_high == pytest.approx(np.quantile(naive, level), abs=1e-12)


def test_bootstrap_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from agenticrs.agents import ensnas

    rng = np.random.default_rng(10)
    ctr = rng.beta(2.0, 5.0, 1000)
    y = (rng.random(ctr.size) < ctr).astype(np.float64)
    inc, cand = _arm(rng, ctr, 2, 0.1, 0.05), _arm(rng, ctr, 2, 0.05, 0.1)
    whole = compare(cand, inc, y, 8, bootstrap=50)
    monkeypatch.setattr(ensnas, "_BOOTSTRAP_CHUNK_VALUES", 7 * 1000)  # 7 resamples per chunk
    chunked = compare(cand, inc, y, 8, bootstrap=50)
    assert (chunked.ci_low, chunked.ci_high) == pytest.approx((whole.ci_low, whole.ci_high), abs=1e-15)


def test_margin_and_significance() -> None:
    rng = np.random.default_rng(16)
    ctr = rng.beta(2.0, 5.0, 400)
    y = (rng.random(ctr.size) < ctr).astype(np.float64)
    inc = _arm(rng, ctr, 2, 0.1, 0.1)
    cand = _arm(rng, ctr, 2, 0.1, 0.095)  # a hair better, drowned in sampling noise on 400 rows
    c = compare(cand, inc, y, 8, bootstrap=400)
    assert c.improvement > 0 >= c.ci_low  # positive point estimate, but not significant
    assert not c.accepted and not c.exact_condition
    assert c.reason.startswith("rejected: gain not significant")
    # without a CI the point estimate alone decides, unless a practical margin is demanded
    assert compare(cand, inc, y, 8, bootstrap=0).accepted
    big = compare(cand, inc, y, 8, bootstrap=0, margin=c.improvement * 2)
    assert not big.accepted and big.margin == c.improvement * 2
    assert big.reason.startswith("rejected:")


def test_cached_incumbent_stats() -> None:
    rng = np.random.default_rng(12)
    ctr = rng.beta(2.0, 5.0, 4000)
    y = (rng.random(ctr.size) < ctr).astype(np.float64)
    inc, cand = _arm(rng, ctr, 2, 0.1, 0.08), _arm(rng, ctr, 2, 0.03, 0.03)
    cached = MemberStats.from_dict(json.loads(json.dumps(member_stats(inc, y).to_dict())))
    plain = compare(cand, inc, y, 8, bootstrap=100)
    with_cache = compare(cand, inc, y, 8, bootstrap=100, incumbent_stats=cached)
    assert with_cache.improvement == pytest.approx(plain.improvement, abs=1e-15)
    assert with_cache.ci_low == pytest.approx(plain.ci_low, abs=1e-15)

    no_ci = compare(cand, None, y, 8, incumbent_stats=cached)
    assert no_ci.ci_low == no_ci.ci_high == no_ci.improvement
    assert no_ci.resamples == 0 and "no CI" in no_ci.reason
    assert no_ci.accepted == (no_ci.improvement > 0)

    with pytest.raises(ValueError, match="incumbent_predictions or incumbent_stats"):
        compare(cand, None, y, 8)
    wrong_n = dataclasses.replace(cached, n=10)
    with pytest.raises(ValueError, match="same 4000 validation rows"):
        compare(cand, None, y, 8, incumbent_stats=wrong_n)


def test_to_dict_is_plain_and_json_ready() -> None:
    p, y = _learners(np.random.default_rng(13), 1000, 2, 0.1, 0.05)
    q, _ = _learners(np.random.default_rng(14), 1000, 2, 0.05, 0.1)
    c = compare(p, q, y, 8, bootstrap=20)
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert isinstance(d["accepted"], bool) and type(d["m"]) is int and type(d["ci_low"]) is float
    assert d["candidate"] == c.candidate.to_dict()
    assert set(d) >= {f.name for f in dataclasses.fields(Comparison)}
    s = member_stats(p, y).to_dict()
    assert all(type(v) in (int, float) for v in s.values())
    assert MemberStats.from_dict(s) == member_stats(p, y)


# ---------------------------------------------------------------------------------------------
# 7. bad input


def test_bad_inputs_raise_clear_errors() -> None:
    y = np.array([0.0, 1.0, 1.0])
    good = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
        residuals(good, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(L, N\)"):
        residuals(np.array([0.5, 0.5, 0.5]), y)
    with pytest.raises(ValueError, match="at least 2 learners"):
        member_stats(np.full((1, 3), 0.5), y)
    with pytest.raises(ValueError, match="N >= 1"):
        residuals(np.empty((2, 0)), np.empty(0))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        residuals(np.array([[0.5, 1.2, 0.5], [0.5, 0.5, 0.5]]), y)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*NaN"):
        residuals(np.array([[0.5, np.nan, 0.5], [0.5, 0.5, 0.5]]), y)
    with pytest.raises(ValueError, match="labels in"):
        residuals(good, np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="m must be an integer >= 2"):
        compare(good, good, y, 1)
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        member_stats(good, y).ensemble_error(0)
    with pytest.raises(ValueError, match=r"incumbent predictions of shape \(L, 3\)"):
        compare(good, np.full((2, 4), 0.5), y, 4)  # incumbent on different rows
    with pytest.raises(ValueError, match="level"):
        compare(good, good, y, 4, level=0.2)
    # a single learner is still a (trivial) ensemble for the measured error
    assert measured_ensemble_error(np.full((1, 3), 0.5), y) == pytest.approx(0.25)

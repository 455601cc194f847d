"""Tests for agenticrs.train.metrics: exactness against scikit-learn and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from agenticrs.train.metrics import (
    METRICS,
    Metric,
    auc,
    calibration,
    compute_metrics,
    gauc,
    is_better,
    logloss,
    mean_prediction,
    positive_rate,
)

SIZES = [2, 7, 50, 1_000, 20_000]
SEEDS = [0, 1, 2]


def _random_binary(rng: np.random.Generator, n: int, decimals: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels with both classes and tie-heavy probabilities (rounded)."""
    y = rng.integers(0, 2, size=n)
    y[0], y[-1] = 0, 1  # guarantee both classes
    # Correlate scores with labels so AUC is not trivially 0.5, then round -> many ties.
    p = np.clip(rng.beta(2, 5, size=n) + 0.2 * y, 0.0, 1.0)
    return y, np.round(p, decimals)


def _reference_gauc(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> float:
    num = 0.0
    den = 0.0
    for gid in np.unique(g):
        mask = g == gid
        yg = y[mask]
        if yg.min() == yg.max():
            continue
        num += mask.sum() * roc_auc_score(yg, s[mask])
        den += mask.sum()
    return num / den if den else float("nan")


# --------------------------------------------------------------------------- #
# auc
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_auc_matches_sklearn_with_ties(n: int, seed: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    y, s = _random_binary(rng, n, decimals)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_auc_hand_examples() -> None:
    # pos 0.35 beats 0.1 but not 0.4; pos 0.8 beats both -> 3/4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # pos 0.5 ties neg 0.5 (counts 1/2) and beats 0.2; pos 0.9 beats both -> 3.5/4.
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    # All scores tied -> 0.5; perfectly reversed -> 0.0; perfect -> 1.0.
    assert auc([0, 1, 0, 1, 1], [0.3] * 5) == 0.5
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    # 3 pos x 2 neg = 6 pairs; ties: pos 0.5 vs neg 0.5 (twice, as two pos at 0.5) -> 1/2 each.
    # pos scores 0.5, 0.5, 0.7; neg scores 0.5, 0.1
    # pairs: (0.5,0.5)=.5,(0.5,0.1)=1, x2 -> 3; (0.7,*)=2 -> total 5/6
    assert auc([1, 0, 1, 1, 0], [0.5, 0.5, 0.5, 0.7, 0.1]) == pytest.approx(5 / 6, abs=1e-15)


def test_auc_is_rank_based_and_accepts_float32_and_bool() -> None:
    rng = np.random.default_rng(5)
    y, s = _random_binary(rng, 500)
    ref = roc_auc_score(y, s)
    # Monotone transform of the scores does not change AUC.
    assert auc(y, np.exp(3 * s) - 7) == pytest.approx(ref, abs=1e-12)
    assert auc(y.astype(bool), s.astype(np.float32)) == pytest.approx(
        roc_auc_score(y, s.astype(np.float32)), abs=1e-9
    )
    # (n, 1) column of model outputs is accepted.
    assert auc(y, s[:, None]) == pytest.approx(ref, abs=1e-12)


def test_auc_one_class_is_nan() -> None:
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], "different lengths"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 or 1"),
        ([0, 0.5, 1], [0.1, 0.2, 0.3], "0 or 1"),
        ([-1, 1], [0.1, 0.2], "0 or 1"),
        ([], [], "empty"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "1-D"),
    ],
)
def test_auc_errors(labels, scores, match) -> None:
    with pytest.raises(ValueError, match=match):
        auc(labels, scores)


# --------------------------------------------------------------------------- #
# logloss
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_logloss_matches_sklearn(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, p = _random_binary(rng, n)
    p = np.clip(p, 1e-3, 1 - 1e-3)  # inside [eps, 1-eps] so no clipping differences
    assert logloss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), abs=1e-9)
    # float32 probabilities are computed in float64 from their float32 values.
    p32 = p.astype(np.float32)
    assert logloss(y, p32) == pytest.approx(sk_log_loss(y, p32.astype(np.float64), labels=[0, 1]), abs=1e-9)


def test_logloss_hand_example_and_clipping() -> None:
    assert logloss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, abs=1e-15)
    # Confidently wrong predictions are clipped to eps, so the loss stays finite.
    eps = 1e-7
    assert logloss([1, 0], [0.0, 1.0], eps=eps) == pytest.approx(-math.log(eps), rel=1e-9)
    # Confidently right predictions are clipped to 1 - eps.
    assert logloss([1, 0], [1.0, 0.0], eps=eps) == pytest.approx(-math.log1p(-eps), rel=1e-9)
    # One-class labels are fine for logloss.
    assert logloss([1, 1], [0.5, 0.5]) == pytest.approx(math.log(2), abs=1e-15)


def test_logloss_errors() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        logloss([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        logloss([0, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logloss([0, 1], [-2.0, 3.0])  # logits, not probabilities
    with pytest.raises(ValueError, match="eps"):
        logloss([0, 1], [0.5, 0.5], eps=0.0)


# --------------------------------------------------------------------------- #
# gauc
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", [200, 3_000, 20_000])
@pytest.mark.parametrize("seed", SEEDS)
def test_gauc_matches_reference_loop(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, s = _random_binary(rng, n)
    g = rng.integers(0, 50, size=n).astype(np.int64) * 1_000_003 + 10**12  # sparse large int64 ids
    # Force some one-class groups: all-negative, all-positive, and a singleton.
    y[g == g[0]] = 0
    y[g == g[1]] = 1
    g[2] = 7  # singleton group
    ref = _reference_gauc(y, s, g)
    n_one_class = sum(np.unique(y[g == k]).size == 1 for k in np.unique(g))
    assert n_one_class >= 2
    assert gauc(y, s, g) == pytest.approx(ref, abs=1e-9)
    # Plain AUC differs: gauc is not just auc.
    assert not math.isclose(gauc(y, s, g), auc(y, s), abs_tol=1e-12)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64])
def test_gauc_group_dtypes(dtype) -> None:
    rng = np.random.default_rng(11)
    y, s = _random_binary(rng, 2_000)
    g = rng.integers(0, 20, size=2_000).astype(dtype)
    assert gauc(y, s, g) == pytest.approx(_reference_gauc(y, s, g), abs=1e-9)


def test_gauc_non_integer_groups() -> None:
    rng = np.random.default_rng(12)
    y, s = _random_binary(rng, 600)
    codes = rng.integers(0, 10, size=600)
    names = np.array([f"user{c}" for c in codes])
    assert gauc(y, s, names) == pytest.approx(gauc(y, s, codes), abs=1e-12)


def test_gauc_single_group_equals_auc() -> None:
    rng = np.random.default_rng(3)
    y, s = _random_binary(rng, 5_000)
    assert gauc(y, s, np.full(5_000, 42, dtype=np.int64)) == pytest.approx(auc(y, s), abs=1e-12)


def test_gauc_permutation_invariant() -> None:
    rng = np.random.default_rng(4)
    y, s = _random_binary(rng, 4_000)
    g = rng.integers(0, 50, size=4_000)
    perm = rng.permutation(4_000)
    assert gauc(y[perm], s[perm], g[perm]) == pytest.approx(gauc(y, s, g), abs=1e-12)


def test_gauc_hand_example() -> None:
    # group 1: auc 0.75 over 4 rows; group 2: auc 0.0 over 2 rows; group 3 one-class (skipped).
    y = [0, 0, 1, 1, 1, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.6]
    g = [1, 1, 1, 1, 2, 2, 3, 3]
    assert gauc(y, s, g) == pytest.approx((4 * 0.75 + 2 * 0.0) / 6, abs=1e-15)
    # Ties across groups do not interact: identical scores in two groups.
    assert gauc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], [1, 1, 2, 2]) == 0.5


def test_gauc_no_qualifying_group_is_nan() -> None:
    assert math.isnan(gauc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [1, 1, 2, 2]))


def test_gauc_errors() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        gauc([0, 1], [0.1, 0.2], [1, 1, 1])
    with pytest.raises(ValueError, match="different lengths"):
        gauc([0, 1], [0.1], [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        gauc([0, 2], [0.1, 0.2], [1, 1])


# --------------------------------------------------------------------------- #
# calibration and helpers
# --------------------------------------------------------------------------- #


def test_calibration_hand_example() -> None:
    # mean prediction 0.3, positive rate 0.25 -> 1.2
    y = [1, 0, 0, 0]
    p = [0.6, 0.2, 0.2, 0.2]
    assert mean_prediction(p) == pytest.approx(0.3, abs=1e-15)
    assert positive_rate(y) == 0.25
    assert calibration(y, p) == pytest.approx(1.2, abs=1e-12)
    assert calibration(y, np.asarray(p, dtype=np.float32)) == pytest.approx(1.2, abs=1e-7)
    assert calibration([1, 0], [0.5, 0.5]) == 1.0


def test_calibration_no_positives_is_nan() -> None:
    assert math.isnan(calibration([0, 0, 0], [0.1, 0.2, 0.3]))


def test_calibration_errors() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        calibration([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        calibration([0, 5], [0.1, 0.2])


# --------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------- #


def test_registry_contents() -> None:
    assert set(METRICS) >= {"auc", "logloss", "gauc", "calibration"}
    for name, m in METRICS.items():
        assert isinstance(m, Metric) and m.name == name
        assert set(m.needs) <= {"labels", "probs", "groups", "ranks", "funnel", "hits"}
    assert "groups" in METRICS["gauc"].needs
    assert "groups" not in METRICS["auc"].needs
    assert METRICS["auc"].higher_is_better and not METRICS["logloss"].higher_is_better
    with pytest.raises(Exception):
        METRICS["auc"].name = "x"  # frozen


def test_metric_rejects_unknown_needs() -> None:
    with pytest.raises(ValueError, match="needs"):
        Metric("bad", auc, ("labels", "weights"), True)


def test_compute_metrics_values() -> None:
    rng = np.random.default_rng(8)
    y, p = _random_binary(rng, 3_000)
    p = np.clip(p, 1e-3, 1 - 1e-3).astype(np.float32)
    g = rng.integers(0, 30, size=3_000)
    out = compute_metrics(["auc", "logloss", "gauc", "calibration"], y, p, groups=g)
    assert list(out) == ["auc", "logloss", "gauc", "calibration"]
    assert all(isinstance(v, float) for v in out.values())
    assert out["auc"] == auc(y, p)
    assert out["logloss"] == logloss(y, p)
    assert out["gauc"] == gauc(y, p, g)
    assert out["calibration"] == calibration(y, p)
    # Without groups, metrics that do not need them still work.
    assert compute_metrics(["auc"], y, p) == {"auc": auc(y, p)}
    assert compute_metrics("logloss", y, p) == {"logloss": logloss(y, p)}


def test_compute_metrics_errors() -> None:
    y, p = [0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4]
    with pytest.raises(ValueError, match="needs groups"):
        compute_metrics(["auc", "gauc"], y, p)
    with pytest.raises(ValueError, match="written ndcg@k"):
        compute_metrics(["auc", "ndcg"], y, p)
    with pytest.raises(ValueError, match="ranking metric"):
        compute_metrics(["ndcg@10"], y, p)
    with pytest.raises(ValueError, match="unknown metric 'mrr'") as exc:
        compute_metrics(["auc", "mrr"], y, p)
    for known in ("auc", "logloss", "gauc", "calibration"):
        assert known in str(exc.value)


def test_is_better() -> None:
    assert is_better("auc", 0.8, 0.7)
    assert not is_better("auc", 0.7, 0.8)
    assert not is_better("auc", 0.7, 0.7)  # ties are not improvements
    assert is_better("logloss", 0.40, 0.45)
    assert not is_better("logloss", 0.45, 0.40)
    assert is_better("gauc", 0.6, float("nan"))
    assert is_better("auc", 0.6, None)
    assert not is_better("auc", float("nan"), 0.6)
    # Calibration improves towards 1.0 from either side.
    assert is_better("calibration", 1.05, 0.8)
    assert is_better("calibration", 0.98, 1.1)
    assert not is_better("calibration", 1.3, 0.9)
    with pytest.raises(ValueError, match="unknown metric"):
        is_better("mrr", 0.5, 0.4)

"""EnsNAS: decide whether a candidate architecture lowers the error of a deployed M-ensemble.

Training M copies of every candidate is O(M); EnsNAS predicts the M-ensemble Brier score from
two (or more) independently seeded learners, O(1) per candidate (spec ``agenticrs_ensnas.md`` §2-3):

    Ê_ens(π; M) = Ê − ((M−1)/M) (σ̂² − ĉ)                                               (*)

**Estimators (pooled about the pooled mean).** With residuals e_k = p_k − y of learners k = 1..L
on the same validation rows, μ̂ is the mean residual over all learners and rows, and

    σ̂² = mean_k mean_n (e_kn − μ̂)²         ĉ = mean_{i<j} mean_n (e_in − μ̂)(e_jn − μ̂)

Both are centred on the *pooled* mean μ̂, not on each learner's own mean. That is what makes
Ê = μ̂² + σ̂² hold exactly on the sample, and with it (*) at M = L reproduces the measured Brier
of the L-ensemble to round-off for every L (the spec's M = 2 check, and its 3+-learner variant).
Centring each learner on its own mean instead over-predicts the L-ensemble error by exactly
the population variance of the learners' mean residuals, i.e. it would miss the part of the
seed-to-seed disagreement that shows up as a shift in mean bias (which averaging does remove).
Equivalently (*) equals mean_n q_n with the per-row contribution

    q_n = (1/M) mean_k e_kn² + ((M−1)/M) mean_{i<j} e_in e_jn,

which is linear in the rows: a paired bootstrap of the improvement is just a resampled mean of
q_inc − q_cand, so it costs one gather per resample and no per-resample statistics.

**Decision.** The exact plug-in comparison Ê_ens(cand; M) < Ê_ens(inc; M) (with a paired
bootstrap lower bound above a margin) is the decision; the paper's inequality
ρ_cand < ρ_inc − (M/(M−1)) ΔÊ / σ̂²_cand is logged beside it. The two agree when σ̂²_cand = σ̂²_inc;
the paper's is sufficient when σ̂²_cand ≥ σ̂²_inc and can accept a loser when σ̂²_cand < σ̂²_inc.
The decomposition is exact only for squared error, hence Brier on probabilities throughout.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Comparison",
    "MemberStats",
    "compare",
    "measured_ensemble_error",
    "member_stats",
    "paper_condition",
    "predicted_improvement",
    "residual_stats",
    "residuals",
]

# resamples per bootstrap chunk are chosen so chunk * N stays below this many gathered values
# (int32 indices + float64 gathers: ~100 MB peak), bounding memory whatever N and B are
_BOOTSTRAP_CHUNK_VALUES = 1 << 23


def _shrink(m: int) -> float:
    """The (M−1)/M factor of (*), validating that M is a usable ensemble size."""
    try:
        m = operator.index(m)
    except TypeError:
        raise ValueError(f"ensemble size m must be an integer >= 1, got {m!r}") from None
    if m < 1:
        raise ValueError(f"ensemble size m must be an integer >= 1, got {m}")
    return (m - 1) / m


@dataclass(frozen=True)
class MemberStats:
    """Residual statistics of one architecture from L >= 2 independently seeded learners.

    All moments are pooled over learners and centred on the pooled mean residual ``bias``
    (see the module docstring for why), so ``error == bias**2 + variance`` up to round-off.
    Stored as plain Python numbers so a cached copy round-trips through JSON / the database.
    """

    n: int  # validation rows
    learners: int  # learners the statistics were pooled over (>= 2)
    error: float  # Ê: mean over learners of the Brier score mean(e_k²)
    bias: float  # μ̂: mean residual over learners and rows
    variance: float  # σ̂²: mean over learners of mean((e_k − μ̂)²)
    covariance: float  # ĉ: mean over pairs i<j of mean((e_i − μ̂)(e_j − μ̂))
    correlation: float  # ρ̂ = ĉ / σ̂² (1.0 when σ̂² == 0: identical constant residuals)

    def ensemble_error(self, m: int) -> float:
        """Predicted Brier of an M-ensemble, spec eq. (*); exact on the sample when M == learners."""
        return float(self.error - _shrink(m) * (self.variance - self.covariance))

    def to_dict(self) -> dict[str, float]:
        """Plain-typed mapping (keys = field names) for JSON and the knowledge store."""
        return {
            "n": int(self.n),
            "learners": int(self.learners),
            "error": float(self.error),
            "bias": float(self.bias),
            "variance": float(self.variance),
            "covariance": float(self.covariance),
            "correlation": float(self.correlation),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberStats:
        """Rebuild cached statistics (extra keys such as ids or hashes are ignored)."""
        return cls(
            n=int(data["n"]),
            learners=int(data["learners"]),
            error=float(data["error"]),
            bias=float(data["bias"]),
            variance=float(data["variance"]),
            covariance=float(data["covariance"]),
            correlation=float(data["correlation"]),
        )


def _validated(
    predictions: np.ndarray, labels: np.ndarray, min_learners: int
) -> tuple[np.ndarray, np.ndarray]:
    """float64 (L, N) predictions and (N,) labels, or a ValueError that says what was expected."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected predictions of shape (L, N) (one row per learner), got shape {p.shape}")
    if y.ndim != 1:
        raise ValueError(f"expected labels of shape (N,), got shape {y.shape}")
    n_learners, n = p.shape
    if n_learners < min_learners:
        raise ValueError(
            f"expected at least {min_learners} learners (rows of predictions), got {n_learners}: "
            "member statistics need two independently seeded learners"
        )
    if n == 0:
        raise ValueError("expected at least one validation row (N >= 1), got N = 0")
    if y.shape[0] != n:
        raise ValueError(
            f"expected labels of shape ({n},) to match predictions of shape {p.shape}, got {y.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError("expected probabilities in [0, 1], got NaN or inf in predictions")
    if (p < 0.0).any() or (p > 1.0).any():
        raise ValueError(
            f"expected probabilities in [0, 1], got predictions in [{p.min():.6g}, {p.max():.6g}]"
        )
    if not np.isfinite(y).all() or (y < 0.0).any() or (y > 1.0).any():
        raise ValueError("expected labels in {0, 1} (or soft labels in [0, 1]), got values outside")
    return p, y


def residuals(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(L, N) float64 residuals p − y of L >= 2 learners' probabilities against the labels.

    Labels are normally {0, 1}; soft labels in [0, 1] are accepted since the decomposition holds
    for any target.
    """
    p, y = _validated(predictions, labels, min_learners=2)
    return p - y[None, :]


def _pair_mean(e: np.ndarray) -> np.ndarray:
    """Per-row mean over learner pairs i<j of e_i e_j, in O(L N) via ((Σe)² − Σe²) / (L(L−1))."""
    n_learners = e.shape[0]
    total = e.sum(axis=0)
    return (total * total - np.einsum("kn,kn->n", e, e)) / (n_learners * (n_learners - 1))


def residual_stats(e: np.ndarray) -> MemberStats:
    """Statistics from precomputed (L, N) residuals, L >= 2 (for residuals not built by `residuals`).

    Use `member_stats` for probabilities; this entry point exists for callers that already hold
    residuals (e.g. a cache) and for tests that manipulate residuals directly.
    """
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2 or e.shape[1] == 0:
        raise ValueError(f"expected residuals of shape (L, N) with L >= 2 and N >= 1, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("expected finite residuals, got NaN or inf")
    n_learners, n = e.shape
    bias = float(e.mean())
    d = e - bias  # centred on the pooled mean so that Ê = μ̂² + σ̂² exactly
    variance = float(np.einsum("kn,kn->", d, d) / (n_learners * n))
    covariance = float(_pair_mean(d).mean())
    error = float(np.einsum("kn,kn->", e, e) / (n_learners * n))
    correlation = covariance / variance if variance > 0.0 else 1.0
    return MemberStats(
        n=int(n),
        learners=int(n_learners),
        error=error,
        bias=bias,
        variance=variance,
        covariance=covariance,
        correlation=float(correlation),
    )


def member_stats(predictions: np.ndarray, labels: np.ndarray) -> MemberStats:
    """Pooled residual statistics (§2) of L >= 2 learners' (L, N) probabilities on one validation set."""
    return residual_stats(residuals(predictions, labels))


def measured_ensemble_error(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Brier score of the averaged (L, N) probabilities: the real L-ensemble error (*) must match."""
    p, y = _validated(predictions, labels, min_learners=1)
    return float(np.mean((p.mean(axis=0) - y) ** 2))


def predicted_improvement(candidate: MemberStats, incumbent: MemberStats, m: int) -> float:
    """Ê_ens(inc; M) − Ê_ens(cand; M): positive when the candidate's M-ensemble is predicted better."""
    return incumbent.ensemble_error(m) - candidate.ensemble_error(m)


def _gains(candidate: MemberStats, incumbent: MemberStats, m: int) -> tuple[float, float, float]:
    """(G_acc, G_div, variance shift); their sum is `predicted_improvement` (§3)."""
    k = _shrink(m)
    g_acc = -(candidate.error - incumbent.error)
    g_div = k * candidate.variance * (incumbent.correlation - candidate.correlation)
    shift = k * (candidate.variance - incumbent.variance) * (1.0 - incumbent.correlation)
    return float(g_acc), float(g_div), float(shift)


def paper_condition(candidate: MemberStats, incumbent: MemberStats, m: int) -> bool:
    """The paper's rule ρ_cand < ρ_inc − (M/(M−1)) ΔÊ / σ̂²_cand, i.e. G_acc + G_div > 0.

    Evaluated in the multiplied-out form ((M−1)/M) σ̂²_cand (ρ_inc − ρ_cand) > ΔÊ, which is the
    same for σ̂²_cand > 0 and stays defined (ΔÊ < 0) when σ̂²_cand == 0.
    """
    if _shrink(m) == 0.0:
        raise ValueError(f"ensemble size m must be >= 2 for the paper's condition, got {m}")
    g_acc, g_div, _ = _gains(candidate, incumbent, m)
    return bool(g_acc + g_div > 0.0)


@dataclass(frozen=True)
class Comparison:
    """One candidate-vs-incumbent EnsNAS decision with everything the knowledge layer logs (§7)."""

    m: int
    candidate: MemberStats
    incumbent: MemberStats
    delta_error: float  # ΔÊ = Ê(cand) − Ê(inc); negative = candidate single learner more accurate
    gain_accuracy: float  # G_acc = −ΔÊ
    gain_diversity: float  # G_div = ((M−1)/M) σ̂²(cand) (ρ_inc − ρ_cand)
    gain_variance_shift: float  # ((M−1)/M) (σ̂²(cand) − σ̂²(inc)) (1 − ρ_inc)
    predicted_candidate: float  # Ê_ens(cand; M)
    predicted_incumbent: float  # Ê_ens(inc; M)
    improvement: float  # predicted_incumbent − predicted_candidate == G_acc + G_div + shift
    ci_low: float  # bootstrap quantile (1 − level): one-sided lower confidence bound
    ci_high: float  # bootstrap quantile level (upper bound, for reporting)
    exact_condition: bool  # improvement > margin and ci_low > margin: THE decision
    paper_condition: bool  # the paper's inequality, logged beside
    accepted: bool  # == exact_condition
    reason: str  # human-readable diagnosis, fed back to proposers
    level: float = 0.90  # confidence level of the one-sided lower bound
    margin: float = 0.0  # practical margin the improvement must exceed
    resamples: int = 0  # bootstrap resamples behind the CI (0: no CI, ci_low == ci_high == improvement)

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed mapping; `candidate` / `incumbent` become nested `MemberStats.to_dict()`s."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in ("candidate", "incumbent"):
                out[key] = getattr(self, key).to_dict()
            elif isinstance(value, bool):
                out[key] = bool(value)
            elif isinstance(value, int):
                out[key] = int(value)
            elif isinstance(value, float):
                out[key] = float(value)
            else:
                out[key] = value
        return out


def _row_ensemble_error(e: np.ndarray, m: int) -> np.ndarray:
    """Per-row q_n whose mean over rows is `residual_stats(e).ensemble_error(m)` (module docstring)."""
    k = _shrink(m)
    return (1.0 - k) * np.einsum("kn,kn->n", e, e) / e.shape[0] + k * _pair_mean(e)


def _bootstrap_means(d: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `d` over `resamples` index vectors drawn with replacement (same rows for both arms).

    Indices are drawn chunk by chunk from one generator so memory stays bounded for large N; the
    loop runs over chunks of resamples, never over rows.
    """
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _BOOTSTRAP_CHUNK_VALUES // n))
    index_dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(size, n), dtype=index_dtype)
        out[start : start + size] = d[idx].mean(axis=1)
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _reason(
    g_acc: float,
    g_div: float,
    shift: float,
    improvement: float,
    ci_low: float,
    ci_high: float,
    margin: float,
    level: float,
    resamples: int,
) -> str:
    """Diagnosis in the proposer's terms: which lever helped, which hurt, and whether it was noise."""
    ci = f"{level:.0%} CI [{_fmt(ci_low)}, {_fmt(ci_high)}]" if resamples else "no CI: bootstrap skipped"
    tail = f"(improvement {_fmt(improvement)}, {ci}, margin {_fmt(margin)})"
    if improvement > margin and ci_low > margin:
        if g_acc >= 0.0 and g_div >= 0.0:
            head = f"accepted: accuracy gain {_fmt(g_acc)} and diversity gain {_fmt(g_div)}"
        elif g_acc >= 0.0:
            head = f"accepted: accuracy gain {_fmt(g_acc)} outweighs diversity loss {_fmt(-g_div)}"
        else:
            head = f"accepted: diversity gain {_fmt(g_div)} outweighs accuracy loss {_fmt(-g_acc)}"
        return f"{head} {tail}"
    if improvement > margin:
        return f"rejected: gain not significant (CI low {_fmt(ci_low)} <= margin {_fmt(margin)}) {tail}"
    if g_acc <= 0.0 and g_div <= 0.0:
        head = "rejected: no diversity gain and no accuracy gain"
    elif g_acc < 0.0:
        head = f"rejected: accuracy loss too large for the diversity gained ({_fmt(-g_acc)} vs {_fmt(g_div)})"
    elif g_div < 0.0:
        head = f"rejected: diversity loss too large for the accuracy gained ({_fmt(-g_div)} vs {_fmt(g_acc)})"
    elif improvement > 0.0:
        head = "rejected: improvement does not exceed the margin"
    else:
        head = (
            f"rejected: lower member variance (shift {_fmt(shift)}) cancels the accuracy gain "
            f"{_fmt(g_acc)} and diversity gain {_fmt(g_div)}"
        )
    return f"{head} {tail}"


def compare(
    candidate_predictions: np.ndarray,
    incumbent_predictions: np.ndarray | None,
    labels: np.ndarray,
    m: int,
    *,
    bootstrap: int = 500,
    level: float = 0.90,
    margin: float = 0.0,
    seed: int = 0,
    incumbent_stats: MemberStats | None = None,
) -> Comparison:
    """Accept a candidate iff its predicted M-ensemble Brier beats the incumbent's, significantly.

    Both prediction arrays are (L, N) probabilities on the SAME validation rows (L may differ).
    The point estimate comes from `member_stats` (or `incumbent_stats` when cached). The CI is a
    paired bootstrap: the same resampled rows for both arms, `bootstrap` resamples from
    ``np.random.default_rng(seed)``. ``ci_low`` is the (1 − level) quantile, a ONE-sided lower
    confidence bound (level 0.90 -> 10th percentile), and ``ci_high`` the level quantile. When
    cached incumbent stats are used the bootstrap distribution is shifted to centre on that point
    estimate (a no-op when the cache was computed on the same rows).

    Acceptance (`exact_condition`): improvement > margin and ci_low > margin. With
    ``bootstrap=0``, or ``incumbent_predictions=None`` with `incumbent_stats` given, there is no
    CI: ci_low = ci_high = improvement and the decision rests on the point estimate alone.
    """
    k = _shrink(m)
    if k == 0.0:
        raise ValueError(f"ensemble size m must be an integer >= 2, got {m}")
    m = operator.index(m)
    bootstrap = operator.index(bootstrap)
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    if not 0.5 <= level < 1.0:
        raise ValueError(f"level must be in [0.5, 1) for a one-sided lower bound, got {level}")
    if not np.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin}")

    e_cand = residuals(candidate_predictions, labels)
    cand = residual_stats(e_cand)
    e_inc: np.ndarray | None = None
    if incumbent_predictions is not None:
        inc_shape = np.shape(incumbent_predictions)
        if len(inc_shape) == 2 and inc_shape[1] != e_cand.shape[1]:
            raise ValueError(
                f"expected incumbent predictions of shape (L, {e_cand.shape[1]}) on the candidate's "
                f"validation rows, got shape {inc_shape}"
            )
        e_inc = residuals(incumbent_predictions, labels)
    if incumbent_stats is not None:
        if incumbent_stats.n != cand.n:
            raise ValueError(
                f"expected incumbent_stats computed on the same {cand.n} validation rows, "
                f"got n = {incumbent_stats.n}"
            )
        inc = incumbent_stats
    elif e_inc is not None:
        inc = residual_stats(e_inc)
    else:
        raise ValueError("expected incumbent_predictions or incumbent_stats, got neither")

    g_acc, g_div, shift = _gains(cand, inc, m)
    predicted_candidate = cand.ensemble_error(m)
    predicted_incumbent = inc.ensemble_error(m)
    improvement = predicted_incumbent - predicted_candidate

    resamples = bootstrap if e_inc is not None else 0
    if resamples:
        d = _row_ensemble_error(e_inc, m) - _row_ensemble_error(e_cand, m)
        boot = _bootstrap_means(d, resamples, seed) + (improvement - float(d.mean()))
        ci_low = float(np.quantile(boot, 1.0 - level))
        ci_high = float(np.quantile(boot, level))
    else:
        ci_low = ci_high = float(improvement)

    exact = bool(improvement > margin and ci_low > margin)
    return Comparison(
        m=int(m),
        candidate=cand,
        incumbent=inc,
        delta_error=float(cand.error - inc.error),
        gain_accuracy=g_acc,
        gain_diversity=g_div,
        gain_variance_shift=shift,
        predicted_candidate=float(predicted_candidate),
        predicted_incumbent=float(predicted_incumbent),
        improvement=float(improvement),
        ci_low=ci_low,
        ci_high=ci_high,
        exact_condition=exact,
        paper_condition=bool(g_acc + g_div > 0.0),
        accepted=exact,
        reason=_reason(g_acc, g_div, shift, improvement, ci_low, ci_high, margin, level, resamples),
        level=float(level),
        margin=float(margin),
        resamples=int(resamples),
    )

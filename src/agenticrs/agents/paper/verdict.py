"""Does a claim hold? The paired difference over seeds with a Student-t confidence interval.

Why paired: the method and the baseline train with the same seeds on the same split, so the
seed-to-seed noise they share (the split's hard rows, the data order of seed s) cancels in the
per-seed difference d_s = metric(method, s) − metric(baseline, s); the interval is on the mean of
d_s, with n − 1 degrees of freedom. The effect is signed so that positive is better whatever the
metric's direction (logloss: baseline − method).

Verdict, at `level` (default 95 %, two-sided) and the claim's margin m ≥ 0:
- **holds**: the lower bound exceeds m (the method is better by more than the margin);
- **contradicted**: the upper bound is below 0 (the method is worse than the baseline);
- **not shown**: anything else, including a single seed (no interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Verdict = Literal["holds", "not shown", "contradicted"]


@dataclass(frozen=True)
class Effect:
    """The paired comparison of a method with a baseline on one data set."""

    n: int
    mean: float  # mean signed effect (positive: the method is better)
    std: float  # sample standard deviation of the per-seed effects (nan with one seed)
    low: float  # confidence interval of the mean effect
    high: float
    level: float
    verdict: Verdict
    method_mean: float
    baseline_mean: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def interval(self, digits: int = 4) -> str:
        if not math.isfinite(self.low):
            return f"{self.mean:+.{digits}f} (one seed: no interval)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_effect(
    method: list[float] | np.ndarray,
    baseline: list[float] | np.ndarray,
    direction: Literal["higher", "lower"] = "higher",
    margin: float = 0.0,
    level: float = 0.95,
) -> Effect:
    """The paired effect of `method` over `baseline` (same seeds, same order) and its verdict."""
    a = np.asarray(method, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired values need the same non-zero number of seeds, got {a.shape} and {b.shape}")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = a - b if direction == "higher" else b - a
    n, mean = len(d), float(d.mean())
    if n < 2:
        std = low = high = math.nan
        verdict: Verdict = "not shown"
    else:
        std = float(d.std(ddof=1))
        from scipy import stats  # 0.5 s to import: only when a verdict is computed

        half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
        verdict = "holds" if low > margin else "contradicted" if high < 0.0 else "not shown"
    return Effect(n, mean, std, low, high, level, verdict, float(a.mean()), float(b.mean()))

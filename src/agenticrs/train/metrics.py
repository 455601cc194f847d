"""Evaluation metrics for CTR models: AUC, log loss, group AUC and calibration.

Why hand-written instead of calling scikit-learn everywhere:

* **Exactness.** ``auc`` is the Mann-Whitney statistic computed from ranks, with
  tied scores given their average rank, so it matches
  ``sklearn.metrics.roc_auc_score`` to floating-point round-off (tested to
  1e-9), including the heavily tied scores that low-precision models produce.
  ``logloss`` matches ``sklearn.metrics.log_loss`` on probabilities inside
  ``[eps, 1 - eps]``. Everything is computed in float64 whatever the input
  dtype (float32 model outputs are fine).
* **Speed.** Everything is vectorised NumPy. ``gauc`` in particular has no
  Python loop over groups: one ``np.lexsort`` by (group, score), average ranks
  over tie runs inside each group, then per-group rank sums with
  ``np.bincount``. That makes it O(n log n) however many users there are,
  where a per-user ``roc_auc_score`` loop is dominated by Python overhead.

A small registry (:data:`METRICS`, :func:`compute_metrics`, :func:`is_better`)
lets callers ask for metrics by name; each :class:`Metric` declares which
arrays it needs, so evaluation only gathers group ids when a metric uses them.

Conversion (click -> purchase funnel) metrics need two labels and three scores
per row, a :class:`Funnel`: ``ctr_auc`` (click on every impression),
``cvr_auc`` (conversion on clicked rows only, the rows where it is observed),
``ctcvr_auc`` (click AND conversion on every impression). A row whose label of
a task is missing (NaN) leaves that task's metric; :func:`conversion_metrics`
computes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from agenticrs.runtime.registry import Registry

__all__ = [
    "Metric",
    "METRICS",
    "NonFiniteError",
    "Funnel",
    "Hits",
    "auc",
    "calibration",
    "compute_metrics",
    "conversion_metrics",
    "is_conversion_metric",
    "gauc",
    "is_better",
    "logloss",
    "mean_prediction",
    "metric_improves",
    "metric_spec",
    "ndcg_at_k",
    "ranking_metrics",
    "recall_at_k",
    "set_metrics",
    "set_ndcg_at_k",
    "set_recall_at_k",
    "positive_rate",
]


class NonFiniteError(FloatingPointError, ValueError):
    """Training diverged: a loss or a prediction is NaN or infinite.

    A `FloatingPointError`, and a `ValueError` too: it is a fault of the settings (a learning rate
    too large, no gradient clipping) that the user can fix, so the CLI reports it in one line."""


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D array (a trailing unit axis, e.g. (n, 1), is dropped)."""
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_labels(labels: ArrayLike) -> np.ndarray:
    """Validate binary labels and return them as float64."""
    y = _as_1d(labels, "labels")
    if y.size == 0:
        raise ValueError("labels is empty; metrics need at least one example")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise ValueError(f"labels must be numeric 0/1, got dtype {y.dtype}")
    y = y.astype(np.float64, copy=False)
    ok = (y == 0.0) | (y == 1.0)
    if not ok.all():
        bad = np.unique(y[~ok])[:5]
        raise ValueError(f"labels must all be 0 or 1; found other values, e.g. {bad.tolist()}")
    return y


def _check_scores(scores: ArrayLike, n: int, name: str) -> np.ndarray:
    """Validate a score/probability vector of length ``n`` and return it as float64."""
    s = _as_1d(scores, name)
    if s.shape[0] != n:
        raise ValueError(f"labels and {name} have different lengths: {n} != {s.shape[0]}")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if np.isnan(s).any():
        raise ValueError(f"{name} contains NaN")
    return s


def _check_probs(probs: ArrayLike, n: int) -> np.ndarray:
    """Like :func:`_check_scores` but also require values in [0, 1]."""
    p = _check_scores(probs, n, "probs")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(
            f"probs must lie in [0, 1], got range [{p.min():.6g}, {p.max():.6g}] "
            "(were logits passed instead of probabilities?)"
        )
    return p


def _group_codes(groups: ArrayLike, n: int) -> np.ndarray:
    """Return groups as an integer array usable as a sort key."""
    g = _as_1d(groups, "groups")
    if g.shape[0] != n:
        raise ValueError(f"labels and groups have different lengths: {n} != {g.shape[0]}")
    if np.issubdtype(g.dtype, np.integer) or g.dtype == np.bool_:
        return g
    # Any other dtype (strings, floats holding ids, ...): map to dense codes.
    _, codes = np.unique(g, return_inverse=True)
    return codes.reshape(-1)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


def _average_ranks_sorted(sorted_values: np.ndarray, new_block: np.ndarray | None = None) -> np.ndarray:
    """1-based average ranks for already-sorted values.

    ``new_block`` optionally marks positions where a new independent block
    (group) starts; ranks then restart at 1 in every block and tie runs never
    cross a block boundary.
    """
    n = sorted_values.shape[0]
    run_start = np.empty(n, dtype=bool)
    run_start[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=run_start[1:])
    if new_block is not None:
        run_start |= new_block
    starts = np.flatnonzero(run_start)
    ends = np.append(starts[1:], n)  # exclusive
    # Average of 0-based positions start..end-1, as float64 (exact: halves of ints).
    run_avg = (starts + ends - 1) * 0.5
    run_len = ends - starts
    pos = np.repeat(run_avg, run_len)
    if new_block is not None:
        block_starts = np.flatnonzero(new_block)
        block_len = np.diff(np.append(block_starts, n))
        pos = pos - np.repeat(block_starts, block_len)
    return pos + 1.0


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC from ranks, ties given the average rank (== ``roc_auc_score``).

    Raises ``ValueError`` on empty input, mismatched lengths, non-0/1 labels or
    NaN scores. Returns ``nan`` when only one class is present (AUC is
    undefined there; we do not raise so that tiny eval slices do not crash).
    """
    y = _check_labels(labels)
    s = _check_scores(scores, y.shape[0], "scores")
    n_pos = float(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = _average_ranks_sorted(s[order])
    rank_sum_pos = float(ranks[y[order] == 1.0].sum())
    return (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)


def logloss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``.

    Equals ``sklearn.metrics.log_loss`` for probabilities inside that range.
    Raises ``ValueError`` on bad labels, mismatched lengths, NaN or out-of-[0, 1]
    probabilities, or ``eps`` outside (0, 0.5).
    """
    if not (0.0 < eps < 0.5):
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    y = _check_labels(labels)
    p = np.clip(_check_probs(probs, y.shape[0]), eps, 1.0 - eps)
    ll = y * np.log(p) + (1.0 - y) * np.log1p(-p)
    return float(-ll.mean())


def gauc(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike) -> float:
    """Group AUC: ``sum_g n_g * AUC_g / sum_g n_g`` over groups with both classes.

    Groups (e.g. user ids, any integer dtype) that contain a single class are
    skipped; returns ``nan`` when no group qualifies. Fully vectorised: one
    lexsort by (group, score), average ranks over tie runs within each group,
    per-group positive rank sums via ``np.bincount``.
    """
    y = _check_labels(labels)
    n = y.shape[0]
    s = _check_scores(scores, n, "scores")
    g = _group_codes(groups, n)

    order = np.lexsort((s, g))  # primary key: group, secondary: score
    g_sorted = g[order]
    s_sorted = s[order]
    y_sorted = y[order]

    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(g_sorted[1:], g_sorted[:-1], out=new_group[1:])
    ranks = _average_ranks_sorted(s_sorted, new_block=new_group)

    gid = np.cumsum(new_group) - 1  # dense group index in sorted order
    n_groups = int(gid[-1]) + 1
    size = np.bincount(gid, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(gid, weights=y_sorted, minlength=n_groups)
    rank_sum_pos = np.bincount(gid, weights=ranks * y_sorted, minlength=n_groups)
    n_neg = size - n_pos

    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    p, q, r, w = n_pos[valid], n_neg[valid], rank_sum_pos[valid], size[valid]
    group_auc = (r - p * (p + 1.0) / 2.0) / (p * q)
    return float((w * group_auc).sum() / w.sum())


def brier(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean squared error of probabilities: the error whose ensemble decomposition is exact (EnsNAS)."""
    y = _check_labels(labels)
    p = _check_probs(probs, len(y))
    return float(np.mean((p - y) ** 2))


def mean_prediction(probs: ArrayLike) -> float:
    """Mean predicted probability (float64)."""
    p = _as_1d(probs, "probs").astype(np.float64, copy=False)
    if p.size == 0:
        raise ValueError("probs is empty")
    return float(p.mean())


def positive_rate(labels: ArrayLike) -> float:
    """Fraction of positive labels."""
    return float(_check_labels(labels).mean())


def calibration(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean prediction / positive rate; 1.0 is perfectly calibrated on average.

    Returns ``nan`` when there are no positives.
    """
    y = _check_labels(labels)
    p = _check_probs(probs, y.shape[0])
    rate = float(y.mean())
    if rate == 0.0:
        return float("nan")
    return float(p.mean()) / rate


def ece(labels: ArrayLike, probs: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error: sum over 10 equal-width probability bins of (rows in the bin /
    rows) x |mean prediction - positive rate| (Guo et al., "On Calibration of Modern Neural
    Networks", ICML 2017). 0 is perfect; `calibration` is the global predicted / observed ratio."""
    y = _check_labels(labels)
    p = _check_probs(probs, y.shape[0])
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = np.bincount(which, minlength=bins).astype(np.float64)
    gap = np.abs(np.bincount(which, weights=p, minlength=bins) - np.bincount(which, weights=y, minlength=bins))
    return float(gap.sum() / rows.sum())


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

_VALID_NEEDS = frozenset({"labels", "probs", "groups", "ranks", "funnel", "hits"})


@dataclass(frozen=True)
class Metric:
    """A named metric, the arrays it needs and its direction.

    ``fn`` is called with the arrays named in ``needs``, in that order (ranking metrics get the
    0-based rank of each target and the cut-off ``k``; conversion metrics get a :class:`Funnel`).
    ``higher_is_better`` gives the direction
    of improvement. When ``target`` is set (calibration: 1.0), improvement is judged on
    ``|value - target|`` and ``higher_is_better`` refers to that distance (so it is ``False``).
    ``at_k``: the metric takes a cut-off, named ``name@k`` (``recall@10``).
    """

    name: str
    fn: Callable[..., float]
    needs: tuple[str, ...]
    higher_is_better: bool
    target: float | None = None
    at_k: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.needs) - _VALID_NEEDS
        if unknown:
            raise ValueError(f"Metric {self.name!r}: unknown needs {sorted(unknown)}; valid: {sorted(_VALID_NEEDS)}")
        if not {"labels", "ranks", "funnel", "hits"} & set(self.needs):
            raise ValueError(
                f"Metric {self.name!r}: needs must include 'labels' (or 'ranks' for ranking metrics, "
                "'funnel' for conversion metrics, 'hits' for retrieval against a set of relevant items)"
            )


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of targets ranked in the top k (ranks are 0-based; a miss has a rank >= k)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if ranks.size else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item per query: 1 / log2(rank + 2) inside the top k, else 0."""
    ranks = np.asarray(ranks)
    if not ranks.size:
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
    return float(gains.mean())


@dataclass(frozen=True)
class Hits:
    """Ranked lists scored against a *set* of relevant items per query (retrieval against a
    ground truth of several items, e.g. every item the simulated user would click).

    ``hits`` (U, K) is True where the item at that rank is relevant; ``relevant`` (U,) is the size
    of each query's relevant set (queries with none should be dropped before: their recall is
    undefined)."""

    hits: np.ndarray
    relevant: np.ndarray

    def __post_init__(self) -> None:
        hits, relevant = np.asarray(self.hits), np.asarray(self.relevant)
        if hits.ndim != 2 or relevant.shape != (hits.shape[0],):
            raise ValueError(f"hits must be (U, K) and relevant (U,); got {hits.shape} and {relevant.shape}")
        if relevant.size and relevant.min() < 1:
            raise ValueError("every query needs at least one relevant item (drop the others first)")
        if (hits.sum(1) > relevant).any():
            raise ValueError("a ranked list has more hits than its query has relevant items (duplicates in a list?)")


def set_recall_at_k(hits: Hits, k: int) -> float:
    """Mean over queries of |top k ∩ relevant| / |relevant| (a list shorter than k counts as is)."""
    h = np.asarray(hits.hits)[:, :k]
    return float((h.sum(1) / np.asarray(hits.relevant, np.float64)).mean()) if h.shape[0] else 0.0


def set_ndcg_at_k(hits: Hits, k: int) -> float:
    """Mean over queries of DCG@k / ideal DCG@k with binary gains: a hit at 0-based rank r adds
    1 / log2(r + 2); the ideal list puts min(|relevant|, k) hits first."""
    h = np.asarray(hits.hits)[:, :k].astype(np.float64)
    if not h.shape[0]:
        return 0.0
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = h @ discount[: h.shape[1]]
    ideal = np.cumsum(discount)[np.minimum(np.asarray(hits.relevant), k) - 1]
    return float((dcg / ideal).mean())


@dataclass(frozen=True)
class Funnel:
    """Labels and scores of a click -> conversion funnel, one entry per impression.

    ``click`` and ``conversion`` are 0/1 with NaN for a missing label (a conversion label may
    exist on clicked rows only); ``p_ctr`` = P(click), ``p_cvr`` = P(conversion | click) and
    ``p_ctcvr`` = P(click and conversion) are the model's scores (any real scores rank the same).
    """

    click: np.ndarray
    conversion: np.ndarray
    p_ctr: np.ndarray
    p_cvr: np.ndarray
    p_ctcvr: np.ndarray

    def __post_init__(self) -> None:
        n = len(_as_1d(self.click, "click"))
        for name in ("conversion", "p_ctr", "p_cvr", "p_ctcvr"):
            if len(_as_1d(getattr(self, name), name)) != n:
                raise ValueError(f"funnel: click and {name} have different lengths")

    def ctcvr_labels(self) -> np.ndarray:
        """click AND conversion: 0 on an unclicked impression (whatever its conversion label),
        the conversion label on a clicked one, NaN where that is missing (or the click is)."""
        click = np.asarray(self.click, np.float64)
        conversion = np.asarray(self.conversion, np.float64)
        return np.where(click == 0.0, 0.0, click * conversion)


def _present_auc(labels: np.ndarray, scores: np.ndarray, rows: np.ndarray | None = None) -> float:
    """AUC over the rows (of `rows`, default all) whose label is present; NaN when none is or
    when they hold one class only."""
    labels = np.asarray(labels, np.float64)
    keep = ~np.isnan(labels) if rows is None else rows & ~np.isnan(labels)
    if not keep.any():
        return float("nan")
    return auc(labels[keep], np.asarray(scores, np.float64)[keep])


def ctr_auc(funnel: Funnel) -> float:
    """AUC of P(click) against the click label, over the impressions that have one."""
    return _present_auc(funnel.click, funnel.p_ctr)


def cvr_auc(funnel: Funnel) -> float:
    """AUC of P(conversion | click) against the conversion label, over clicked rows only (the
    rows where a conversion can be observed) that have a conversion label."""
    return _present_auc(funnel.conversion, funnel.p_cvr, rows=np.asarray(funnel.click, np.float64) == 1.0)


def ctcvr_auc(funnel: Funnel) -> float:
    """AUC of P(click and conversion) against click x conversion, over every impression that has
    that label (`Funnel.ctcvr_labels`)."""
    return _present_auc(funnel.ctcvr_labels(), funnel.p_ctcvr)


def conversion_metrics(names: Iterable[str] | str, funnel: Funnel) -> dict[str, float]:
    """The named conversion metrics (``ctr_auc``, ``cvr_auc``, ``ctcvr_auc``) of a funnel."""
    if isinstance(names, str):
        names = [names]
    out: dict[str, float] = {}
    for name in names:
        metric = _get_metric(name)
        if "funnel" not in metric.needs:
            raise ValueError(f"metric {name!r} is not a conversion metric")
        out[name] = float(metric.fn(funnel))
    return out


def is_conversion_metric(name: str) -> bool:
    """Whether a metric name is a conversion (funnel) metric."""
    return "funnel" in _get_metric(name).needs


def _train_loss(labels: ArrayLike, probs: ArrayLike) -> float:  # pragma: no cover - monitored, never computed
    raise ValueError("train_loss is the engine's running training loss; it is not computed from predictions")


METRICS: Registry[Metric] = Registry("metric")
for _metric in (
    Metric("auc", auc, ("labels", "probs"), higher_is_better=True),
    Metric("logloss", logloss, ("labels", "probs"), higher_is_better=False),
    Metric("brier", brier, ("labels", "probs"), higher_is_better=False),
    Metric("gauc", gauc, ("labels", "probs", "groups"), higher_is_better=True),
    Metric("calibration", calibration, ("labels", "probs"), higher_is_better=False, target=1.0),
    Metric("ece", ece, ("labels", "probs"), higher_is_better=False),
    Metric("recall", recall_at_k, ("ranks",), higher_is_better=True, at_k=True),
    Metric("ndcg", ndcg_at_k, ("ranks",), higher_is_better=True, at_k=True),
    # retrieval against a set of relevant items per query (the simulator's ground truth)
    Metric("set_recall", set_recall_at_k, ("hits",), higher_is_better=True, at_k=True),
    Metric("set_ndcg", set_ndcg_at_k, ("hits",), higher_is_better=True, at_k=True),
    # conversion funnel (multi-task conversion runs): per task, over the rows that have its label
    Metric("ctr_auc", ctr_auc, ("funnel",), higher_is_better=True),
    Metric("cvr_auc", cvr_auc, ("funnel",), higher_is_better=True),
    Metric("ctcvr_auc", ctcvr_auc, ("funnel",), higher_is_better=True),
    # the engine monitors the running training loss when a task has no validation split
    Metric("train_loss", _train_loss, ("labels", "probs"), higher_is_better=False),
):
    METRICS.register(_metric.name, _metric)


def metric_spec(name: str) -> tuple[Metric, int | None]:
    """The registered metric behind a name and its cut-off: "auc" -> (auc, None), "ndcg@10" ->
    (ndcg, 10), and "click/auc" (a multi-task head's metric) -> (auc, None)."""
    base = name.rsplit("/", 1)[-1]
    head, _, k = base.partition("@")
    if head not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known metrics: {sorted(METRICS)}")
    metric = METRICS[head]
    if metric.at_k != bool(k):
        form = f"{head}@k (e.g. {head}@10)" if metric.at_k else head
        raise ValueError(f"metric {name!r} is written {form}")
    if k and (not k.isdigit() or int(k) < 1):
        raise ValueError(f"metric {name!r}: the cut-off must be a positive integer")
    return metric, int(k) if k else None


def _get_metric(name: str) -> Metric:
    return metric_spec(name)[0]


def ranking_metrics(names: Iterable[str], ranks: np.ndarray) -> dict[str, float]:
    """Ranking metrics (``recall@k``, ``ndcg@k``) from 0-based target ranks."""
    out: dict[str, float] = {}
    for name in names:
        metric, k = metric_spec(name)
        if "ranks" not in metric.needs:
            raise ValueError(f"metric {name!r} is not a ranking metric")
        out[name] = float(metric.fn(ranks, k))
    return out


def set_metrics(names: Iterable[str], hits: Hits) -> dict[str, float]:
    """Retrieval metrics against relevant sets (``set_recall@k``, ``set_ndcg@k``)."""
    out: dict[str, float] = {}
    for name in names:
        metric, k = metric_spec(name)
        if "hits" not in metric.needs:
            raise ValueError(f"metric {name!r} is not a set-retrieval metric")
        out[name] = float(metric.fn(hits, k))
    return out


def needs_groups(names: Iterable[str] | str) -> bool:
    """Whether any of the named metrics needs group ids."""
    if isinstance(names, str):
        names = [names]
    return any("groups" in _get_metric(n).needs for n in names)


def compute_metrics(
    names: Iterable[str] | str,
    labels: ArrayLike,
    probs: ArrayLike,
    groups: ArrayLike | None = None,
) -> dict[str, float]:
    """Compute the named metrics; returns ``{name: value}`` in request order.

    Raises ``ValueError`` for an unknown name (listing the known ones) or when
    a metric needs ``groups`` and none were given. All names are checked
    before anything is computed.
    """
    if isinstance(names, str):
        names = [names]
    metrics = [_get_metric(n) for n in names]
    arrays: Mapping[str, ArrayLike | None] = {"labels": labels, "probs": probs, "groups": groups}
    for m in metrics:
        if "groups" in m.needs and groups is None:
            raise ValueError(f"metric {m.name!r} needs groups (e.g. user ids) but groups=None")
        if "ranks" in m.needs:
            raise ValueError(f"metric {m.name!r} is a ranking metric; use ranking_metrics")
        if "funnel" in m.needs:
            raise ValueError(f"metric {m.name!r} is a conversion metric; use conversion_metrics")
        if "hits" in m.needs:
            raise ValueError(f"metric {m.name!r} is a set-retrieval metric; use set_metrics")
    out: dict[str, float] = {}
    for m in metrics:
        out[m.name] = float(m.fn(*(arrays[k] for k in m.needs)))
    return out


def is_better(metric_name: str, new: float, old: float | None) -> bool:
    """Whether ``new`` improves on ``old`` for early stopping.

    A NaN ``new`` is never better; any finite ``new`` beats a missing/NaN ``old``.
    Ties are not improvements.
    """
    return metric_improves(metric_name, new, old)


def metric_improves(metric_name: str, new: float | None, old: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``new`` improves on ``old`` by more than ``min_delta``, in the metric's direction
    (read from the registry: a rising loss is never an improvement)."""
    m = _get_metric(metric_name)
    if new is None or math.isnan(new):
        return False
    if old is None or math.isnan(old):
        return True
    if m.target is not None:
        new, old = abs(new - m.target), abs(old - m.target)
    gain = new - old if m.higher_is_better else old - new
    return gain > min_delta

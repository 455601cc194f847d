"""Streaming delayed-feedback methods: each is a sampler (which samples enter the stream, when,
with which labels) plus a loss, on any backbone of the model zoo. One registry (`METHODS`).

- `vanilla`: every click, in its window, labelled as observed at the window's end; BCE.
- `oracle`: every click, in its window, with its eventual label (not causal: the upper bound); BCE.
- `fnw`: every click as a negative at click time, a positive duplicate at conversion time; BCE
  weighted by the model's own stop-gradient p: positives (1 + p), negatives (1 - p)(1 + p).
- `fnc`: the same samples; plain BCE on the biased labels, p / (1 - p) served at inference.
- `dfm`: every click at its window's end with its elapsed time e (or its delay d if converted);
  the exponential delay model: -[log p + log λ - λ d], unconverted -log(1 - p + p e^{-λ e}). Later
  evidence replaces earlier evidence: a still unconverted click comes back at fixed ages with the
  larger e, a late conversion comes back as a positive, each retracting the click's previous
  term, so the stream counts every click once, in its latest observed state (Chapelle's
  likelihood; `dfm_late="retract"`). `"drop"`: each click once at its window's end, nothing later
  (ES-DFM's code).
- `es_dfm`: every click at click + c, positive iff converted within c; a positive duplicate of
  every delayed positive at conversion time; importance weights w_pos = 1 + f_dp,
  w_neg = (1 + f_dp) f_tn (stop-gradient, from a frozen, pre-trained weight model).

Papers: Ktena et al., "Addressing Delayed Feedback for Continuous Training with Neural Networks in
CTR prediction", RecSys 2019 (FNW, FNC); Chapelle, "Modeling Delayed Feedback in Display
Advertising", KDD 2014 (DFM); Yang et al., "Capturing Delayed Feedback in Conversion Rate
Prediction via Elapsed-Time Sampling", AAAI 2021, and its code ThyrixYang/es_dfm (ES-DFM; the
spec in shared/specs/es_dfm.md is followed). Our choices are marked "ours" below.

A sample refers to its click (`row`), carries the time it enters the stream (`ts`: the window it
is trained in) and a float32 label matrix whose columns the method names (`columns`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from agenticrs.runtime import Registry
from agenticrs.train.streaming.labels import ObservedView, WindowGrid, observed_view

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DfmLate = Literal["retract", "drop"]
EPS = 1e-7


@dataclass(frozen=True)
class Samples:
    """Training samples: the click each comes from, when it enters the stream, its label columns."""

    row: np.ndarray  # (n,) int64 click index
    ts: np.ndarray  # (n,) float64 time the sample enters the stream
    labels: np.ndarray  # (n, K) float32

    def __len__(self) -> int:
        return len(self.row)

    @staticmethod
    def join(*parts: Samples) -> Samples:
        """Several sample sets as one stream in time order (stable: ties keep the order given)."""
        row = np.concatenate([p.row for p in parts])
        ts = np.concatenate([p.ts for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        order = np.argsort(ts, kind="stable")
        return Samples(row=row[order], ts=ts[order], labels=labels[order])


@dataclass(frozen=True)
class MethodSettings:
    elapsed_cut_s: float = 900.0  # ES-DFM's c (code default 0.25 h)
    weight_cap: float | None = None  # ES-DFM: cap on w_pos and w_neg (off in the paper's code)
    delay_unit_s: float = 3600.0  # DFM: delays and elapsed times in hours (λ per hour)
    dfm_late: DfmLate = "retract"  # DFM: later evidence retracts the earlier term (refresh + late positive), or drop
    dfm_refresh_s: tuple[float, ...] = (21_600.0, 86_400.0, 259_200.0, 604_800.0)  # DFM: ages of the refreshes


@dataclass(frozen=True)
class ClickTimes:
    """What a sampler sees of the log: times only, and ES-DFM's per-click weights once known."""

    click_ts: np.ndarray
    conversion_ts: np.ndarray
    grid: WindowGrid
    settings: MethodSettings
    f_dp: np.ndarray | None = None  # ES-DFM weight model, per click
    f_tn: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        return np.arange(len(self.click_ts), dtype=np.int64)


def _samples(row: np.ndarray, ts: np.ndarray, *columns: np.ndarray) -> Samples:
    labels = np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=1) if columns else np.zeros((len(row), 0))
    return Samples(row=row.astype(np.int64), ts=np.asarray(ts, dtype=np.float64), labels=labels.astype(np.float32))


def _converted(conversion_ts: np.ndarray) -> np.ndarray:
    return ~np.isnan(conversion_ts)


# ------------------------------------------------------------------------------------ losses
def bce_loss(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on label column 0."""
    return F.binary_cross_entropy_with_logits(_first(logit), labels[:, 0])


def fnw_loss(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fake-negative weighted loss (Ktena et al. 2019, eq. 8-9): -[z (1 + p) log p + (1 - z)
    (1 - p)(1 + p) log(1 - p)] with p the model's own probability, stop-gradient."""
    s = _first(logit)
    z = labels[:, 0]
    p = torch.sigmoid(s).detach()
    pos = F.softplus(-s)  # -log σ(s)
    neg = s + F.softplus(-s)  # -log(1 - σ(s))
    return (z * (1 + p) * pos + (1 - z) * (1 - p) * (1 + p) * neg).mean()


def dfm_loss(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Chapelle's delayed feedback model, exponential delay with hazard λ(x) (logit column 1).

    Labels [z, d, e, r]. Converted (z = 1, delay d): -[log p + log λ - λ d]; not (yet) converted
    (elapsed e): -log(1 - p + p e^{-λ e}) = -log1p(-p (1 - e^{-λ e})). r > 0: the click was counted
    before as unconverted with elapsed r, and this sample replaces that evidence: it also
    subtracts the unconverted term at r (the retraction), so over the stream every click
    contributes once, in its latest state (r = 0 or NaN: nothing to retract, the term is 0).
    Ours: λ = softplus(logit) + 1e-6 (the paper: exp(w·x); softplus keeps the gradient bounded);
    times in `delay_unit_s` units."""
    s, hazard_logit = logit[:, 0], logit[:, 1]
    z, d, e, r = labels[:, 0], labels[:, 1], labels[:, 2], labels[:, 3]
    lam = F.softplus(hazard_logit) + 1e-6
    p = torch.sigmoid(s)

    def unconverted(t: torch.Tensor) -> torch.Tensor:
        q = p * -torch.expm1(-lam * torch.nan_to_num(t))
        return -torch.log1p(-q.clamp(max=1 - EPS))

    pos = -(-F.softplus(-s) + torch.log(lam) - lam * torch.nan_to_num(d))
    return (torch.where(z > 0.5, pos, unconverted(e)) - unconverted(r)).mean()


def es_dfm_loss(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ES-DFM's importance-weighted loss (spec section 5, code `delay_tn_importance_weight_loss`):
    mean[z w_pos softplus(-s) + (1 - z) w_neg (s + softplus(-s))]; the weights (label columns 1
    and 2, w_pos = 1 + f_dp, w_neg = (1 + f_dp) f_tn) carry no gradient."""
    s = _first(logit)
    z, w_pos, w_neg = labels[:, 0], labels[:, 1], labels[:, 2]
    return (z * w_pos * F.softplus(-s) + (1 - z) * w_neg * (s + F.softplus(-s))).mean()


def tn_dp_loss(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ES-DFM's weight model (code `delay_tn_dp_loss`): logits [tn, dp], labels [y_tn, y_dp, y].
    L_dp = mean BCE(dp, y_dp); L_tn = Σ m BCE(tn, y_tn) / Σ m with m = (1 - y) + y_dp (the samples
    observed as negative at c); L = L_tn + L_dp."""
    tn, dp = logit[:, 0], logit[:, 1]
    y_tn, y_dp, y = labels[:, 0], labels[:, 1], labels[:, 2]
    l_dp = F.binary_cross_entropy_with_logits(dp, y_dp)
    mask = (1 - y) + y_dp
    l_tn = (F.binary_cross_entropy_with_logits(tn, y_tn, reduction="none") * mask).sum() / mask.sum().clamp_min(1)
    return l_tn + l_dp


def weight_model_metrics(logit: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The weight model on held-out clicks: `logloss` is its training objective (L_tn + L_dp, lower
    is better: what early stopping follows), with each head's log loss and AUC beside it."""
    from agenticrs.train.metrics import auc

    logit_t, labels_t = torch.as_tensor(logit, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.float32)
    with torch.no_grad():
        dp = float(F.binary_cross_entropy_with_logits(logit_t[:, 1], labels_t[:, 1]))
        total = float(tn_dp_loss(logit_t, labels_t))
    observed_negative = (labels[:, 2] == 0) | (labels[:, 1] == 1)
    return {"logloss": total, "dp/logloss": dp, "tn/logloss": total - dp,
            "dp/auc": auc(labels[:, 1], logit[:, 1]),
            "tn/auc": auc(labels[observed_negative, 0], logit[observed_negative, 0])}  # fmt: skip


def _first(logit: torch.Tensor) -> torch.Tensor:
    return logit[:, 0] if logit.dim() == 2 else logit


# ------------------------------------------------------------------------------------ methods
class StreamMethod:
    """A sampler plus a loss. Pre-training (ES-DFM's protocol, step 2) is plain BCE on the
    pre-training clicks' labels unless a method overrides it (DFM trains its own loss)."""

    name: ClassVar[str] = ""
    heads: ClassVar[tuple[str, ...]] = ("cvr",)  # one backbone per head
    columns: ClassVar[tuple[str, ...]] = ("label",)
    loss: ClassVar[LossFn] = staticmethod(bce_loss)

    def samples(self, log: ClickTimes) -> Samples:
        raise NotImplementedError

    def pretrain(self, log: ClickTimes, clicks: np.ndarray, labels: np.ndarray, cut: float) -> tuple[Samples, LossFn]:
        """Samples and loss of the pre-training period: its clicks (`clicks`) with `labels`
        (eventual, or as observed at `cut`, the pre-training end, per the stream's settings)."""
        return _samples(clicks, log.click_ts[clicks], labels), bce_loss

    def probability(self, logit: torch.Tensor) -> torch.Tensor:
        """The conversion probability served at inference."""
        return torch.sigmoid(_first(logit))


METHODS: Registry[type[StreamMethod]] = Registry("streaming method")


@METHODS.register("vanilla")
class Vanilla(StreamMethod):
    """Every click trained in its own window, labelled as observed at the window's end: a
    conversion that comes later is a negative for good (no correction)."""

    name = "vanilla"

    def samples(self, log: ClickTimes) -> Samples:
        view = observed_view(log.click_ts, log.conversion_ts, log.grid.window_end(log.click_ts))
        return _samples(view.rows, log.click_ts[view.rows], view.label)


@METHODS.register("oracle")
class Oracle(StreamMethod):
    """Every click trained in its own window with its eventual label (knows the future)."""

    name = "oracle"

    def samples(self, log: ClickTimes) -> Samples:
        return _samples(log.rows, log.click_ts, _converted(log.conversion_ts))


def _fake_negative_stream(log: ClickTimes) -> Samples:
    """Ktena et al.: each click enters as a negative at click time; each conversion adds a
    positive duplicate of its click at conversion time."""
    converted = np.flatnonzero(_converted(log.conversion_ts))
    negatives = _samples(log.rows, log.click_ts, np.zeros(len(log.rows)))
    positives = _samples(converted, log.conversion_ts[converted], np.ones(len(converted)))
    return Samples.join(negatives, positives)


@METHODS.register("fnw")
class FNW(StreamMethod):
    name = "fnw"
    loss = staticmethod(fnw_loss)

    def samples(self, log: ClickTimes) -> Samples:
        return _fake_negative_stream(log)


@METHODS.register("fnc")
class FNC(StreamMethod):
    """Trains on the biased labels (whose rate is p / (1 + p)); serves p / (1 - p), which inverts
    it. Ours: the served value is clipped to [0, 1 - 1e-7] (it exceeds 1 where p > 0.5)."""

    name = "fnc"

    def samples(self, log: ClickTimes) -> Samples:
        return _fake_negative_stream(log)

    def probability(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.exp(_first(logit)).clamp(max=1 - EPS)  # p / (1 - p) = e^s


@METHODS.register("dfm")
class DFM(StreamMethod):
    """Chapelle 2014 on a stream, every click counted once in its latest observed state.

    A click is trained in its own window in its state at the window's end: converted with its
    delay d, or unconverted with its elapsed time e (a pre-training click: as observed at the
    pre-training end, where pre-training counted it). Later evidence replaces it, each time with a
    sample that retracts the click's previous unconverted term (`dfm_loss`, column r):
    - a refresh at each age A of `dfm_refresh_s` (6 h, 1 d, 3 d, 7 d) beyond its first e at which
      it is still unconverted: unconverted with e = A (a one-pass stream cannot revisit every
      click at every step; the ages make its e a step function of its age, up to the attribution
      window, so a true negative ends up with strong evidence);
    - its conversion, if it comes later: a positive with its delay d, at conversion time.
    The stream's cumulative loss is Chapelle's likelihood of the clicks seen so far (tested).
    `dfm_late="drop"`: the first sample only (ES-DFM's code, `to_dfm_tune`: a conversion after the
    click's window is never seen). Pre-training uses the DFM loss on the pre-training clicks as
    observed at the pre-training end."""

    name = "dfm"
    heads = ("cvr", "hazard")
    columns = ("label", "delay", "elapsed", "retract")
    loss = staticmethod(dfm_loss)

    def samples(self, log: ClickTimes) -> Samples:
        unit = log.settings.delay_unit_s
        view = observed_view(log.click_ts, log.conversion_ts, log.grid.window_end(log.click_ts))
        parts = [_samples(view.rows, log.click_ts[view.rows], *_dfm_columns(view, unit))]
        if log.settings.dfm_late == "drop":
            return parts[0]
        waiting = view.label == 0
        rows, counted = view.rows[waiting], view.elapsed[waiting]  # e each click is counted with so far
        click, conversion = log.click_ts[rows], log.conversion_ts[rows]
        for age in sorted(log.settings.dfm_refresh_s):
            due = (age > counted) & ~(conversion <= click + age)  # still unconverted at this age (NaN: never)
            n = int(due.sum())
            parts.append(_samples(rows[due], click[due] + age, np.zeros(n), np.full(n, np.nan), np.full(n, age / unit),
                                  counted[due] / unit))  # fmt: skip
            counted = np.where(due, age, counted)
        late = _converted(conversion)
        n = int(late.sum())
        parts.append(_samples(rows[late], conversion[late], np.ones(n), (conversion[late] - click[late]) / unit,
                              np.zeros(n), counted[late] / unit))  # fmt: skip
        return Samples.join(*parts)

    def pretrain(self, log: ClickTimes, clicks: np.ndarray, labels: np.ndarray, cut: float) -> tuple[Samples, LossFn]:
        unit = log.settings.delay_unit_s
        view = observed_view(log.click_ts[clicks], log.conversion_ts[clicks], cut)
        rows = clicks[view.rows]
        return _samples(rows, log.click_ts[rows], *_dfm_columns(view, unit)), dfm_loss


def _dfm_columns(view: ObservedView, unit: float) -> tuple[np.ndarray, ...]:
    """[z, d, e, r] of clicks as first observed: e = 0 for a converted click, nothing to retract."""
    return view.label, view.delay / unit, np.where(view.label > 0, 0.0, view.elapsed / unit), np.zeros(len(view.label))


@METHODS.register("es_dfm")
class ESDFM(StreamMethod):
    """Elapsed-time sampling (spec section 2, code `add_esdfm_cut_fake_neg`) with the importance
    weights of the frozen weight model (f_dp, f_tn per click, computed before streaming)."""

    name = "es_dfm"
    columns = ("label", "w_pos", "w_neg")
    loss = staticmethod(es_dfm_loss)

    def samples(self, log: ClickTimes) -> Samples:
        if log.f_dp is None or log.f_tn is None:
            raise ValueError("es_dfm needs the weight model's f_dp and f_tn for every click (pre-train it first)")
        c = log.settings.elapsed_cut_s
        delay = log.conversion_ts - log.click_ts
        in_time = delay <= c  # NaN: False
        w_pos, w_neg = importance_weights(log.f_dp, log.f_tn, log.settings.weight_cap)
        first = _samples(log.rows, log.click_ts + c, in_time, w_pos, w_neg)
        late = np.flatnonzero(delay > c)
        again = _samples(late, log.conversion_ts[late], np.ones(len(late)), w_pos[late], w_neg[late])
        return Samples.join(first, again)


def importance_weights(f_dp: np.ndarray, f_tn: np.ndarray, cap: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ES-DFM's weights (spec section 4): w_pos = 1 + f_dp, w_neg = (1 + f_dp) f_tn, optionally
    capped at `cap` (ours: off by default, as in the paper's code)."""
    w_pos = 1.0 + np.asarray(f_dp, dtype=np.float64)
    w_neg = w_pos * np.asarray(f_tn, dtype=np.float64)
    if cap is not None:
        w_pos, w_neg = np.minimum(w_pos, cap), np.minimum(w_neg, cap)
    return w_pos, w_neg


def weight_model_labels(click_ts: np.ndarray, conversion_ts: np.ndarray, c: float) -> np.ndarray:
    """[y_tn, y_dp, y] per click (spec section 2): y = converts, y_dp = converts later than c,
    y_tn = never converts."""
    y = _converted(conversion_ts)
    y_dp = y & ((conversion_ts - click_ts) > c)
    return np.stack([~y, y_dp, y], axis=1).astype(np.float32)


def method(name: str) -> StreamMethod:
    if name not in METHODS:
        raise ValueError(f"unknown streaming method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]()

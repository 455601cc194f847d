"""Labels as a stream sees them, and the time grid of a stream: pure, vectorised functions.

A click log is two float64 arrays: `click_ts` (seconds) and `conversion_ts` (seconds, NaN = the
click never converts within the data's attribution window). Nothing here knows about features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Unconverted = Literal["negative", "unknown"]


@dataclass(frozen=True)
class ObservedView:
    """The clicks known at a cut time and their labels as observed then.

    `rows`: indices of the clicks with click_ts <= cut (in log order); `label`: 1.0 where the
    conversion happened at or before the cut, else 0.0 (or NaN with `unconverted="unknown"`);
    `elapsed`: cut - click_ts (seconds the click has been observed); `delay`: conversion_ts -
    click_ts where observed as converted, else NaN."""

    rows: np.ndarray
    label: np.ndarray
    elapsed: np.ndarray
    delay: np.ndarray


def observed_view(
    click_ts: np.ndarray, conversion_ts: np.ndarray, cut: float | np.ndarray, unconverted: Unconverted = "negative"
) -> ObservedView:
    """The observed-label view of a click log at `cut` (a time, or one cut per click).

    A click with click_ts <= cut is in the view; its label is 1 if conversion_ts <= cut, otherwise
    0 (`unconverted="negative"`: a conversion that has not happened yet is a fake negative) or NaN
    (`"unknown"`). With one cut per click (e.g. the end of each click's window) every click is
    judged at its own cut."""
    click_ts = np.asarray(click_ts, dtype=np.float64)
    conversion_ts = np.asarray(conversion_ts, dtype=np.float64)
    cuts = np.broadcast_to(np.asarray(cut, dtype=np.float64), click_ts.shape)
    rows = np.flatnonzero(click_ts <= cuts)
    click, conv, at = click_ts[rows], conversion_ts[rows], cuts[rows]
    converted = conv <= at  # NaN compares False: never converts
    label = converted.astype(np.float64)
    if unconverted == "unknown":
        label[~converted] = np.nan
    delay = np.where(converted, conv - click, np.nan)
    return ObservedView(rows=rows, label=label, elapsed=at - click, delay=delay)


@dataclass(frozen=True)
class WindowGrid:
    """Windows of `span` seconds from `start` (the end of the pre-training period) to `end`.

    Window k is [start + k span, start + (k+1) span); `count` windows cover [start, end)."""

    start: float
    span: float
    end: float

    @property
    def count(self) -> int:
        return max(int(np.ceil((self.end - self.start) / self.span)), 0)

    def index(self, ts: np.ndarray) -> np.ndarray:
        """The window of each time (int64); -1 before `start`, `count` or more at or after `end`."""
        ts = np.asarray(ts, dtype=np.float64)
        k = np.floor((ts - self.start) / self.span)
        k = np.where(ts < self.start, -1, k)
        k = np.where(ts >= self.end, np.maximum(k, self.count), k)
        return np.nan_to_num(k, nan=np.iinfo(np.int32).max).astype(np.int64)

    def window_end(self, ts: np.ndarray) -> np.ndarray:
        """The end of the window holding each time (the pre-training end for times before it)."""
        k = self.index(ts)
        return self.start + (np.maximum(k, -1) + 1) * self.span


@dataclass(frozen=True)
class Steps:
    """The stream's steps: step j trains on the samples of windows [first[j], first[j+1]) and is
    evaluated on the clicks of window `evaluate[j]` = first[j+1].

    Windows without clicks are never evaluated: their training samples join the next step, so
    every evaluation has rows. With every window holding clicks, step t trains on window t and
    evaluates window t+1 (ES-DFM's protocol)."""

    train_from: np.ndarray  # (S,) first training window of each step
    evaluate: np.ndarray  # (S,) the window each step is evaluated on (= the next step's first window)

    def __len__(self) -> int:
        return len(self.evaluate)


def stream_steps(click_windows: np.ndarray, count: int, limit: int | None = None) -> Steps:
    """Steps over `count` windows given each click's window (clicks outside [0, count) ignored)."""
    seen = np.unique(click_windows[(click_windows >= 1) & (click_windows < count)])
    evaluate = seen.astype(np.int64)
    train_from = np.r_[0, evaluate[:-1]].astype(np.int64)
    if limit is not None:
        evaluate, train_from = evaluate[:limit], train_from[:limit]
    return Steps(train_from=train_from, evaluate=evaluate)

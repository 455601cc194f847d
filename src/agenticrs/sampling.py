"""Vectorised weighted sampling shared by the synthetic generator and the simulator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cumulative_shares(weights: np.ndarray) -> np.ndarray:
    """Right edges of each item's share of the total weight (for inverse-CDF draws)."""
    cum = np.cumsum(weights, dtype=np.float64)
    return cum / cum[-1]


def draw_global(cum: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Indices drawn with probability proportional to the weights behind `cum` (r ~ U[0, 1))."""
    return np.minimum(np.searchsorted(cum, r, side="right"), cum.size - 1)


@dataclass(frozen=True)
class CategorySampler:
    """Draw an item within a given category with probability proportional to its weight.

    One sorted array of `category + within-category cumulative share` edges answers any number of
    (category, uniform) pairs with a single `searchsorted`. A category whose items all weigh 0
    cannot be drawn from (the caller guarantees categories it asks for have weight).
    """

    order: np.ndarray  # item indices sorted by category
    edges: np.ndarray  # category + within-category cumulative share, right edges

    @classmethod
    def build(cls, item_category: np.ndarray, weights: np.ndarray, n_categories: int) -> CategorySampler:
        order = np.argsort(item_category, kind="stable")
        category_sorted = item_category[order]
        w = np.asarray(weights, dtype=np.float64)[order]
        totals = np.bincount(category_sorted, weights=w, minlength=n_categories)
        cum = np.cumsum(w)
        start_cum = np.concatenate([[0.0], np.cumsum(totals)])[category_sorted]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(totals[category_sorted] > 0, (cum - start_cum) / totals[category_sorted], 0.0)
        last = np.r_[category_sorted[1:] != category_sorted[:-1], True]
        share[last & (totals[category_sorted] > 0)] = 1.0
        return cls(order, category_sorted + share)

    def draw(self, category: np.ndarray, r: np.ndarray) -> np.ndarray:
        x = category + np.minimum(r, 1.0 - 1e-9)
        pos = np.minimum(np.searchsorted(self.edges, x, side="right"), self.edges.size - 1)
        return self.order[pos]

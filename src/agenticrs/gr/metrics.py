"""Top-k metrics of next-item prediction with one target per user (leave-one-out protocol).

With a single relevant item, Recall@k equals HR@k (hit within the top k) and NDCG@k is
1 / log2(rank + 2) for a hit at 0-based `rank` < k (the ideal DCG is 1), else 0. Means over users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agenticrs.train.metrics import ndcg_at_k, recall_at_k

MISS = np.iinfo(np.int64).max  # rank of a target not in the list


def _check_ks(ks: Sequence[int], width: int | None = None) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if width is not None and max(ks) > width:
        raise ValueError(f"the ranked lists have {width} items, fewer than the largest cut-off {max(ks)}")
    return ks


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """`recall@k` and `ndcg@k` from 0-based target ranks (MISS or anything >= k counts as a miss)."""
    ks = _check_ks(ks)
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or len(ranks) == 0:
        raise ValueError(f"expected a non-empty 1-D array of ranks, got shape {ranks.shape}")
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    return out


def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its ranked list (first occurrence), MISS when absent."""
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    if topk.ndim != 2 or targets.shape != (topk.shape[0],):
        raise ValueError(f"expected topk (U, K) and targets (U,), got {topk.shape} and {targets.shape}")
    hit = topk == targets[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), MISS).astype(np.int64)


def rank_metrics(topk: np.ndarray, targets: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """Recall@k (= HR@k) and NDCG@k of ranked lists (U, K), best first, against one target per user."""
    topk = np.asarray(topk)
    _check_ks(ks, topk.shape[1] if topk.ndim == 2 else None)
    return metrics_from_ranks(target_ranks(topk, targets), ks)


def ranks_from_scores(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> np.ndarray:
    """0-based rank of each target under full ranking of scores (U, num_items + 1) over items 1..I.

    Column 0 (padding) is never ranked. Ties are broken pessimistically: every other item scoring
    exactly the target's score ranks ahead of it, so a constant scorer earns nothing (an optimistic
    or index-order tie-break would reward degenerate models).
    """
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, device=scores.device).long()
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (U, I + 1) and targets (U,), got {tuple(scores.shape)}, {tuple(targets.shape)}")
    if bool(((targets < 1) | (targets >= scores.shape[1])).any()):
        raise ValueError(f"targets must be item ids 1..{scores.shape[1] - 1}")
    items = scores[:, 1:]
    mine = scores.gather(1, targets[:, None])
    ahead = (items > mine).sum(1) + (items == mine).sum(1) - 1  # ties minus the target itself
    ahead = torch.where(mine[:, 0].isnan(), torch.full_like(ahead, items.shape[1]), ahead)  # NaN: last
    return ahead.cpu().numpy().astype(np.int64)

"""Retrieval baselines and the vector view of a trained sequential model.

Every retriever here answers `recommend(batch, k)` on the batches of `agenticrs.gr` (`history`
(B, L) right-aligned item ids, `user` (B,)), the same contract as a sequential model, so the one
full-ranking evaluation (`agenticrs.gr.train.evaluate_sequential`) scores all of them alike.

- `PopularityRetriever`: the items most often clicked in training, the same list for everyone;
  the floor every personalised retriever must beat.
- `CoOccurrenceRetriever`: item-to-item co-occurrence ("people who clicked this clicked that"):
  counts of ordered pairs within `window` steps of each other in the training sequences,
  normalised per row, and a user's score for an item is the recency-weighted sum over the
  history's rows. A sparse matrix product, no per-user loop.
- `VectorRetriever`: a trained model's user and item vectors (SASRec's hidden state and item
  table, the two-tower's towers) as the input of an ANN index; `IndexRetriever` retrieves
  through that index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from agenticrs.gr.base import PAD, SeqBatch, SequenceData
from agenticrs.retrieval.index import VectorIndex


def _check_k(k: int, num_items: int) -> None:
    if not 1 <= k <= num_items:
        raise ValueError(f"k must lie in 1..{num_items} (the number of items), got {k}")


def item_counts(train: SequenceData) -> np.ndarray:
    """(num_items + 1,) clicks per item in the training sequences (index 0, padding, stays 0)."""
    return np.bincount(np.asarray(train.items, np.int64), minlength=train.num_items + 1).astype(np.float64)


class PopularityRetriever(nn.Module):
    """The globally most clicked items (ties: lower id first)."""

    def __init__(self, train: SequenceData) -> None:
        super().__init__()
        self.num_items = train.num_items
        counts = torch.from_numpy(item_counts(train))
        counts[PAD] = float("-inf")
        self.register_buffer("counts", counts)

    @torch.no_grad()
    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        return self.counts[None, :].expand(len(batch["history"]), -1)

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int) -> torch.Tensor:
        _check_k(k, self.num_items)
        top = self.counts.topk(k).indices
        return top[None, :].expand(len(batch["history"]), -1)


class CoOccurrenceRetriever(nn.Module):
    """Item-to-item co-occurrence within `window` positions; scores from the last `recent` items
    of the history, weighted by `decay` ** age; popularity (x 1e-6) breaks ties and fills lists of
    users whose history co-occurs with nothing."""

    def __init__(self, train: SequenceData, window: int = 3, recent: int = 10, decay: float = 0.8) -> None:
        super().__init__()
        if window < 1 or recent < 1 or not 0 < decay <= 1:
            raise ValueError(f"window and recent must be >= 1 and decay in (0, 1]; got {window}, {recent}, {decay}")
        self.num_items, self.recent, self.decay = train.num_items, recent, decay
        offsets = np.asarray(train.offsets, np.int64)
        items = np.asarray(train.items, np.int64)
        user_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        rows, cols = [], []
        for lag in range(1, window + 1):  # a loop over lags (a handful), each vectorised over all pairs
            same_user = user_of[lag:] == user_of[:-lag]
            a, b = items[:-lag][same_user], items[lag:][same_user]
            rows += [a, b]
            cols += [b, a]
        n = self.num_items + 1
        row, col = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (rows, cols))
        matrix = sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(n, n))
        matrix.setdiag(0)
        matrix.eliminate_zeros()
        norm = np.asarray(matrix.sum(1)).ravel()
        self.matrix = sp.diags(1.0 / np.maximum(norm, 1.0)) @ matrix  # row-normalised: P(next | item)
        counts = item_counts(train)
        self.prior = 1e-6 * counts / max(counts.max(), 1.0)

    @torch.no_grad()
    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        history = batch["history"][:, -self.recent :].cpu().numpy()
        b, length = history.shape
        weights = self.decay ** np.arange(length - 1, -1, -1, dtype=np.float64)  # the most recent weighs 1
        keep = (history != PAD).ravel()
        rows = np.repeat(np.arange(b), length)[keep]
        values = np.broadcast_to(weights, history.shape).ravel()[keep]
        users = sp.csr_matrix((values, (rows, history.ravel()[keep])), shape=(b, self.num_items + 1))
        scores = np.asarray((users @ self.matrix).todense()) + self.prior[None, :]
        scores[:, PAD] = -np.inf
        return torch.from_numpy(scores)

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int) -> torch.Tensor:
        _check_k(k, self.num_items)
        return self.score_all(batch).topk(k, dim=1).indices


class VectorRetriever:
    """User and item vectors of a trained model whose score is their dot product: `two_tower`
    (its towers) or `sasrec` (the last hidden state and the item table). The item vectors go into
    an ANN index; the user vectors are its queries."""

    def __init__(self, model: nn.Module) -> None:
        if hasattr(model, "user_vectors") and hasattr(model, "item_vectors"):
            self._users, self._items = model.user_vectors, model.item_vectors
        elif hasattr(model, "hidden") and hasattr(model, "item"):  # SASRec: score = h_last . item table
            self._users = lambda batch: model.hidden(batch["history"][:, -model.config.max_len :])[:, -1]
            self._items = lambda: model.item.weight.detach()
        else:
            raise TypeError(f"{type(model).__name__} has no user/item vectors (expected a two-tower or SASRec model)")
        self.model = model.eval()

    @torch.no_grad()
    def user_vectors(self, batch: SeqBatch) -> np.ndarray:
        return self._users(batch).float().cpu().numpy()

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """(num_items, d): items 1..num_items in order (the padding row is left out)."""
        return self._items()[1:].float().cpu().numpy()


class IndexRetriever(nn.Module):
    """Retrieval through an ANN index over a model's item vectors: the user vector is the query.
    The index's ids are item ids (1..num_items)."""

    def __init__(self, vectors: VectorRetriever, index: VectorIndex) -> None:
        super().__init__()
        self.vectors, self.index = vectors, index

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int) -> torch.Tensor:
        _, ids = self.index.search(self.vectors.user_vectors(batch), k)
        return torch.from_numpy(np.maximum(ids, 0))

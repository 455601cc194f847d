"""Semantic IDs of items from their categorical content fields (category, brand, ...).

Shared by GateSID (which builds them inside the model) and the `semantic_id` feature action with
`content` (which gives them to any CTR model as fields), so both see the same codes for the same
settings. The recipe:

- each content field's values get fixed seeded random vectors (`content_dim` wide, N(0, 1/dim)):
  a random projection of their one-hot codes, so no table of item vectors has to be stored and a
  row's vector can be formed from its own values at any time (an item never seen in training still
  gets the SID of its content);
- an item's content is the most frequent value of each field among its training rows;
- residual k-means (`gr.tokenizers.kmeans`, seeded per level) over the distinct training items'
  vectors gives one codebook per level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agenticrs.features.schema import NUM_RESERVED, PAD_INDEX
from agenticrs.gr.tokenizers import kmeans, residual_encode


def value_tables(vocab_sizes: Sequence[int], dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum(vocab_sizes), dim) random value vectors of the fields, concatenated (padding rows zero),
    and each field's row offset into them. Drawn from `generator` in field order."""
    offsets, tables, start = [], [], 0
    for vocab in vocab_sizes:
        offsets.append(start)
        table = torch.randn(vocab, dim, generator=generator) / dim**0.5
        table[PAD_INDEX] = 0.0
        tables.append(table)
        start += vocab
    return torch.cat(tables), torch.tensor(offsets)


def content_vectors(
    values: torch.Tensor, table: torch.Tensor, offsets: torch.Tensor, used: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C) content value ids -> (N, C * dim) vectors; fields with used == 0 are zero."""
    vectors = table[values.long() + offsets]
    if used is not None:
        vectors = vectors * used[:, None]
    return vectors.flatten(1)


def item_content(items: np.ndarray, content: np.ndarray, item_vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item's most frequent value of every content field on these rows (vectorised).

    items: (N,) item ids; content: (N, C) value ids. Returns (rows (item_vocab, C), the share of
    the known rows whose value equals their item's (C,): 1.0 when the item determines the field,
    the distinct known item ids). Reserved ids (padding, OOV, missing) are not items."""
    known = items >= NUM_RESERVED
    items_k, content_k = items[known], content[known]
    rows = np.zeros((item_vocab, content.shape[1]), dtype=np.int64)
    agree = np.zeros(content.shape[1], dtype=np.float64)
    for c in range(content.shape[1]):
        pairs, counts = np.unique(np.stack([items_k, content_k[:, c]], 1), axis=0, return_counts=True)
        order = np.lexsort((-counts, pairs[:, 0]))
        pairs, counts = pairs[order], counts[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]] if len(pairs) else np.zeros(0, bool)
        rows[pairs[first, 0], c] = pairs[first, 1]
        agree[c] = counts[first].sum() / max(len(items_k), 1)
    return rows, agree, np.unique(items_k)


def fit_codebooks(x: torch.Tensor, levels: int, codebook_size: int, seed: int) -> list[torch.Tensor]:
    """Residual k-means codebooks (one per level, k-means seeded seed + level) of the rows of x."""
    books, residual = [], x
    for level in range(levels):
        centers, assign = kmeans(residual, codebook_size, seed=seed + level)
        books.append(centers)
        residual = residual - centers[assign]
    return books


def encode(x: torch.Tensor, codebooks: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, levels) codes of x under the codebooks (greedy residual quantisation)."""
    return residual_encode(x, list(codebooks))[0]

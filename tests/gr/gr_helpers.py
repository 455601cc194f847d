"""Helpers shared by the sequential-model tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

import itertools

import numpy as np

from agenticrs.gr.base import SemanticIds


def make_sids(num_items: int, vocab: tuple[int, ...] = (4, 4, 4), seed: int = 0) -> SemanticIds:
    """Unique random codes drawn without replacement from the code space; row 0 unused."""
    space = np.array(list(itertools.product(*[range(v) for v in vocab])), dtype=np.int64)
    pick = np.random.default_rng(seed).choice(len(space), size=num_items, replace=False)
    codes = np.zeros((num_items + 1, len(vocab)), dtype=np.int64)
    codes[1:] = space[pick]
    return SemanticIds(codes=codes, vocab_sizes=vocab)

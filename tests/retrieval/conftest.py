"""A small synthetic click-sequence data set with structure a retriever can learn: users click
within one of a few item clusters, so co-occurrence and the towers beat popularity."""

from __future__ import annotations

import numpy as np
import pytest

from agenticrs.gr.base import SequenceData


def clustered_sequences(n_users: int = 300, n_items: int = 120, clusters: int = 6, length: int = 8,
                        seed: int = 0) -> SequenceData:  # fmt: skip
    rng = np.random.default_rng(seed)
    per = n_items // clusters
    cluster = rng.integers(0, clusters, n_users)
    items = 1 + cluster[:, None] * per + rng.integers(0, per, (n_users, length))
    offsets = np.arange(0, n_users * length + 1, length, dtype=np.int64)
    item_cluster = (np.arange(n_items) // per).astype(np.int64)
    return SequenceData(
        name="clustered", num_items=n_items, users=np.arange(1, n_users + 1, dtype=np.int64), offsets=offsets,
        items=items.ravel().astype(np.int64), attribute_offsets=np.r_[0, 0, np.arange(1, n_items + 1)].astype(np.int64),
        attributes=item_cluster,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clustered() -> SequenceData:
    return clustered_sequences()

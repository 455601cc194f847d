"""Batches of a training split that stays on disk: block-shuffled reads of the memory map.

A split larger than memory cannot be gathered row by row at random (every batch would touch
pages all over the file, and the touched pages stay resident). Instead an epoch visits blocks of
`block_rows` contiguous rows in a seeded random order; each block is read sequentially (one copy
of `block_rows` rows), its pages are released from this process (`release_pages`), and its rows
are shuffled before they are cut into batches; the rows left over at a block's end open the
next block's first batch, so every batch but the epoch's last is full. Memory is one block plus
one batch, whatever the split's size; the order depends only on (seed, epoch), so a resumed run
skips to the same batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from agenticrs.data.shards import release_pages
from agenticrs.features.batching import LABEL, LABELS, model_input_keys


def iterate_block_batches(
    split,  # SplitArrays | SplitShard: arrays sliceable by rows
    batch_size: int,
    *,
    block_rows: int,
    seed: int = 0,
    epoch: int = 0,
    label_index: int | list[int] | None = 0,
    device: torch.device | str = "cpu",
    skip_batches: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """The epoch's batches (model inputs and `label` / `labels`, as `iterate_batches` yields)."""
    if block_rows < batch_size:
        raise ValueError(f"train.shuffle_block_rows ({block_rows}) must be at least train.batch_size ({batch_size})")
    keys = model_input_keys(split)
    arrays = {k: split[k] for k in keys}
    labels = split["labels"] if (label_index is not None and "labels" in split) else None
    rng = np.random.default_rng([seed, epoch, 7])
    starts = np.arange(0, split.rows, block_rows)
    carry: dict[str, np.ndarray] | None = None
    emitted = 0
    for start in rng.permutation(starts).tolist():
        stop = min(start + block_rows, split.rows)
        block: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            block[key] = np.array(value[start:stop])  # one sequential read
            release_pages(value, start, stop)
        if labels is not None:
            block[LABELS] = np.array(labels[start:stop])
            release_pages(labels, start, stop)
        order = rng.permutation(stop - start)
        block = {k: v[order] for k, v in block.items()}
        if carry is not None:
            block = {k: np.concatenate([carry[k], v]) for k, v in block.items()}
        full = len(next(iter(block.values()))) // batch_size * batch_size
        for offset in range(0, full, batch_size):
            if emitted >= skip_batches:
                yield _batch(block, slice(offset, offset + batch_size), label_index, device)
            emitted += 1
        carry = {k: v[full:] for k, v in block.items()}
    if carry is not None and len(next(iter(carry.values()))) and emitted >= skip_batches:
        yield _batch(carry, slice(None), label_index, device)


def _batch(block: dict[str, np.ndarray], rows: slice, label_index: int | list[int] | None,
           device: torch.device | str) -> dict[str, torch.Tensor]:  # fmt: skip
    batch = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in block.items() if k != LABELS}
    if LABELS in block and isinstance(label_index, list):
        batch[LABELS] = torch.from_numpy(np.ascontiguousarray(block[LABELS][rows][:, label_index]))
    elif LABELS in block and label_index is not None:
        batch[LABEL] = torch.from_numpy(np.ascontiguousarray(block[LABELS][rows, label_index]))
    if str(device) != "cpu":
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch

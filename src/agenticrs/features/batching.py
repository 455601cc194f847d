"""Vectorised, seeded batching from a processed split into tensors.

One permutation per epoch (seeded by `seed` and the epoch number) and one fancy-index gather per
array per batch: no per-row Python. The batch is a plain dict of named tensors (`Batch`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from agenticrs.data.cache import SplitArrays
from agenticrs.data.shards import release_pages

LABEL = "label"  # (B,) the one trained label
LABELS = "labels"  # (B, T) several trained labels (multi-task); NaN where a row has no such label
GROUP = "group"
REQUEST = "request"
_BATCH_KEYS_PREFIXES = ("seq/", "seqlen/")


def model_input_keys(split: SplitArrays) -> list[str]:
    """The arrays a model may read (never timestamps, text or anything derived from labels)."""
    keys = ["categorical", "numeric"]
    keys += [k for k in split.keys() if k.startswith(_BATCH_KEYS_PREFIXES)]
    keys.append(REQUEST)  # request ids: structure (which rows share a user context), not a label
    return [k for k in keys if k in split]


def epoch_order(rows: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(rows)
    return np.random.default_rng([seed, epoch]).permutation(rows)


def request_block_order(requests: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A row order that shuffles whole requests and keeps each request's rows contiguous.

    A request is a run of equal consecutive ids; request-centric models (SORT) need its candidates
    in one batch to share the user context. Vectorised: permute run starts, then expand runs.
    """
    n = len(requests)
    if n == 0:
        return np.arange(0)
    starts = np.flatnonzero(np.r_[True, requests[1:] != requests[:-1]])
    lengths = np.diff(np.r_[starts, n])
    perm = np.random.default_rng([seed, epoch]).permutation(len(starts))
    run_len = lengths[perm]
    run_first = np.cumsum(run_len) - run_len  # where each permuted run begins in the output
    within = np.arange(n) - np.repeat(run_first, run_len)
    return np.repeat(starts[perm], run_len) + within


def iterate_batches(
    split: SplitArrays,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    label_index: int | list[int] | None = 0,
    with_groups: bool = False,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
    keep_requests: bool = False,
    skip_batches: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches: model inputs, `label` (B,) float (one label index) or `labels` (B, T) (a
    list of label indices), and `group` (B,) int64.

    `keep_requests` shuffles whole requests (when the split has request ids), so that a request's
    candidates stay adjacent; a batch boundary may still cut one request in two. `skip_batches`
    starts at that batch of the same order (a resumed run continues mid-epoch without gathering
    the batches it already trained on).
    """
    if shuffle and keep_requests and REQUEST in split:
        order = request_block_order(np.asarray(split[REQUEST]), seed, epoch)
    else:  # an ordered pass reads slices: no index array as long as the split
        order = epoch_order(split.rows, seed, epoch, shuffle) if shuffle else None
    keys = model_input_keys(split)
    arrays = {k: split[k] for k in keys}
    labels = split["labels"] if (label_index is not None and "labels" in split) else None
    groups = split["group"] if (with_groups and "group" in split) else None
    stop = split.rows - (split.rows % batch_size if drop_last else 0)
    for start in range(skip_batches * batch_size, stop, batch_size):
        # a shuffled batch is a gather (a fresh copy); an ordered one is a slice, copied out of the map
        index = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        batch = {k: torch.from_numpy(np.array(v[index])) for k, v in arrays.items()}
        if labels is not None and isinstance(label_index, list):
            batch[LABELS] = torch.from_numpy(np.array(labels[index][:, label_index]))
        elif labels is not None:
            batch[LABEL] = torch.from_numpy(np.array(labels[index, label_index]))
        if groups is not None:
            batch[GROUP] = torch.from_numpy(np.array(groups[index]))
        if order is None:  # a memory-mapped split read in order keeps a flat RSS (no-op in memory)
            for value in (*arrays.values(), labels, groups):
                release_pages(value, start, start + batch_size)
        if str(device) != "cpu":
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        yield batch


def num_batches(rows: int, batch_size: int, drop_last: bool = False) -> int:
    return rows // batch_size if drop_last else -(-rows // batch_size)

"""Rank slices of a processed split: what each data-parallel process reads.

Rank r of W reads rows `[r·N // W, (r+1)·N // W)`: contiguous, disjoint, together exactly the
split, sizes within one row of each other. A slice of a memory-mapped array is itself a map of
that byte range, so a rank pages in only its own part of the cache (sequential reads, no copy of
the whole split in any process); `load_in_memory` copies just the slice.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from agenticrs.data.cache import SplitArrays


def rank_bounds(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank `rank`'s rows among `world_size` ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    return rows * rank // world_size, rows * (rank + 1) // world_size


class SplitShard:
    """Rows `[start, stop)` of a split, with the interface the batcher and the trainer read."""

    def __init__(self, split: SplitArrays | Any, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= split.rows:
            raise ValueError(f"rows [{start}, {stop}) are not inside a split of {split.rows} rows")
        self.split = split
        self.start, self.stop = start, stop
        self.rows = stop - start
        self._cache: dict[str, Any] = {}

    @classmethod
    def of_rank(cls, split: SplitArrays | Any, rank: int, world_size: int) -> SplitShard:
        return cls(split, *rank_bounds(split.rows, rank, world_size))

    def keys(self) -> list[str]:
        return list(self.split.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.split

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            value = self.split[key]
            # a NumPy (memory-map) slice is a view of the byte range; an Arrow slice is zero-copy too
            self._cache[key] = value[self.start : self.stop] if isinstance(value, np.ndarray) else value.slice(
                self.start, self.rows)
        return self._cache[key]

    # copy this slice (only) into RAM: the split's own method, over the shard's keys, items and cache
    load_in_memory = SplitArrays.load_in_memory


def split_nbytes(split: Any) -> int:
    """Bytes of a split's arrays (memory-mapped or not), text columns included."""
    return int(sum(getattr(split[key], "nbytes", 0) for key in split.keys()))


def split_in_memory(split: Any) -> bool:
    """Whether none of a split's arrays is a memory map (they were loaded, or never mapped)."""
    return not any(isinstance(split[key], np.memmap) for key in split.keys())


def release_pages(array: Any, start: int, stop: int) -> None:
    """Drop the pages of rows `[start, stop)` of a memory-mapped array from this process's
    resident memory (they stay in the kernel's page cache, shared and reclaimable). Reading a
    split larger than memory this way keeps the process's RSS flat; a no-op for in-memory arrays."""
    if not isinstance(array, np.memmap) or stop <= start:
        return
    region = array[start:stop]
    owner: Any = array
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = getattr(owner, "base", None)
    if owner is None or owner.closed:
        return
    base_address = np.frombuffer(owner, dtype=np.uint8).ctypes.data
    offset = region.ctypes.data - base_address
    first = offset - offset % mmap.PAGESIZE
    end = min(offset + region.nbytes, len(owner))
    # whole pages only: a page shared with the neighbouring rows is simply read again when needed
    owner.madvise(mmap.MADV_DONTNEED, first, end - first)

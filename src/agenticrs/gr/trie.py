"""Prefix trie over semantic IDs, vectorised for constrained beam search (our design).

TIGER (Rajput et al., NeurIPS 2023) decodes an item's semantic ID token by token and maps the
complete code to an item with a lookup table, dropping codes that name no item; constraining the
decoding with a prefix trie (recommended in our protocol spec, §2.4) makes every complete beam a
valid item.

How it is stored (ours): a prefix (c_0, ..., c_{l-1}) has the mixed-radix integer key
``k_l = ((c_0 * V_1 + c_1) * V_2 + ...) + c_{l-1}``, so ``k_{l+1} = k_l * V_l + c_l``. For every
length l = 0..levels we keep the sorted unique keys of the items' prefixes; a batch of prefixes is
looked up with one ``torch.searchsorted``. The allowed next tokens of a length-l prefix come from
a dense (num_prefixes_l, V_l) boolean table when it is small (``max_dense_entries``), otherwise by
looking up the V_l candidate child keys among the length-(l+1) keys (no table, O(B V log N)).
The trie's tensors are non-persistent buffers: ``.to(device)`` moves them, state dicts skip them
(they are rebuilt from the semantic IDs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from agenticrs.gr.base import SemanticIds

_MAX_KEY = 2**62  # mixed-radix keys must fit int64 with room for the child-key arithmetic


class PrefixTrie(nn.Module):
    """Exactly the code tuples of items 1..num_items, queryable by batches of prefixes."""

    def __init__(
        self,
        codes: np.ndarray | torch.Tensor,
        vocab_sizes: Sequence[int],
        max_dense_entries: int = 1 << 24,
    ) -> None:
        """`codes`: (num_items + 1, levels) with row 0 (padding) ignored, as in `SemanticIds`."""
        super().__init__()
        codes_t = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        codes_t = codes_t.to(torch.long)
        if codes_t.dim() != 2 or codes_t.shape[0] < 2:
            raise ValueError(f"codes must be (num_items + 1, levels) with num_items >= 1, got {tuple(codes_t.shape)}")
        self.vocab_sizes: tuple[int, ...] = tuple(int(v) for v in vocab_sizes)
        self.levels = codes_t.shape[1]
        if len(self.vocab_sizes) != self.levels:
            raise ValueError(f"{len(self.vocab_sizes)} vocab sizes for {self.levels} levels")
        if math.prod(self.vocab_sizes) >= _MAX_KEY:
            raise ValueError(f"the code space {self.vocab_sizes} is too large for int64 prefix keys")
        item_codes = codes_t[1:]
        self.num_items = item_codes.shape[0]
        vocab = torch.tensor(self.vocab_sizes, dtype=torch.long, device=codes_t.device)
        if (item_codes < 0).any() or (item_codes >= vocab).any():
            raise ValueError("codes out of range of their level's vocabulary")

        self.register_buffer("vocab", vocab, persistent=False)
        self.dense: list[bool] = []
        key = torch.zeros(self.num_items, dtype=torch.long, device=codes_t.device)
        prefix_keys = [torch.zeros(1, dtype=torch.long, device=codes_t.device)]  # root: the empty prefix
        for level in range(self.levels):
            key = key * self.vocab_sizes[level] + item_codes[:, level]
            prefix_keys.append(torch.unique(key))  # sorted
        full_keys, order = torch.sort(key)
        if full_keys.numel() > 1 and bool((full_keys[1:] == full_keys[:-1]).any()):
            raise ValueError("semantic IDs are not unique: two items share a code tuple")
        for level, keys in enumerate(prefix_keys):
            self.register_buffer(f"keys_{level}", keys, persistent=False)
        self.register_buffer("items_by_key", order + 1, persistent=False)  # item id of each sorted full key
        self.register_buffer("codes", item_codes.clone(), persistent=False)

        # dense next-token tables where they are small: row = parent prefix's rank among keys_l
        for level in range(self.levels):
            parents = prefix_keys[level]
            size = self.vocab_sizes[level]
            dense = parents.numel() * size <= max_dense_entries
            self.dense.append(dense)
            if dense:
                children = prefix_keys[level + 1]
                table = torch.zeros(parents.numel(), size, dtype=torch.bool, device=codes_t.device)
                parent_rank = torch.searchsorted(parents, children // size)
                table[parent_rank, children % size] = True
                self.register_buffer(f"table_{level}", table, persistent=False)

    @classmethod
    def from_semantic_ids(cls, semantic_ids: SemanticIds, max_dense_entries: int = 1 << 24) -> PrefixTrie:
        return cls(semantic_ids.codes, semantic_ids.vocab_sizes, max_dense_entries=max_dense_entries)

    def _keys(self, level: int) -> torch.Tensor:
        return getattr(self, f"keys_{level}")

    def num_prefixes(self, length: int) -> int:
        """How many distinct valid prefixes of this length exist (1 for the empty prefix)."""
        return self._keys(length).numel()

    def prefix_key(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., l) codes -> ((...,) mixed-radix keys, (...,) bool in range at every level)."""
        length = prefix.shape[-1]
        key = torch.zeros(prefix.shape[:-1], dtype=torch.long, device=prefix.device)
        in_range = torch.ones(prefix.shape[:-1], dtype=torch.bool, device=prefix.device)
        for level in range(length):  # l <= levels, a handful of steps
            code = prefix[..., level].to(torch.long)
            in_range &= (code >= 0) & (code < self.vocab_sizes[level])
            key = key * self.vocab_sizes[level] + code.clamp(0, self.vocab_sizes[level] - 1)
        return key, in_range

    def _find(self, keys: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank of each query among sorted `keys` (clamped) and whether it is there."""
        flat = query.reshape(-1).contiguous()
        rank = torch.searchsorted(keys, flat).clamp(max=keys.numel() - 1)
        found = keys[rank] == flat
        return rank.view(query.shape), found.view(query.shape)

    def _lookup(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., l) -> (key, rank among length-l keys, whether it is a valid prefix)."""
        if prefix.shape[-1] > self.levels:
            raise ValueError(f"prefix of length {prefix.shape[-1]} for a trie of {self.levels} levels")
        key, in_range = self.prefix_key(prefix)
        rank, found = self._find(self._keys(prefix.shape[-1]), key)
        return key, rank, found & in_range

    def allowed_next(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) prefixes, l < levels -> (..., V_l) bool: which next codes stay on a valid path.

        An invalid prefix allows nothing.
        """
        level = prefix.shape[-1]
        if level >= self.levels:
            raise ValueError(f"a complete code (length {level}) has no next token")
        key, rank, valid = self._lookup(prefix)
        if self.dense[level]:
            return getattr(self, f"table_{level}")[rank] & valid.unsqueeze(-1)
        size = self.vocab_sizes[level]
        children = key.unsqueeze(-1) * size + torch.arange(size, device=prefix.device)
        _, found = self._find(self._keys(level + 1), children)
        return found & valid.unsqueeze(-1)

    def contains_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """(..., l) -> (...,) bool: the prefix starts at least one item's code."""
        return self._lookup(prefix)[2]

    def item_of(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., levels) complete codes -> (...,) item ids, 0 where the code names no item."""
        if codes.shape[-1] != self.levels:
            raise ValueError(f"complete codes have {self.levels} levels, got {codes.shape[-1]}")
        _, rank, valid = self._lookup(codes)
        return torch.where(valid, self.items_by_key[rank], torch.zeros_like(rank))

    def contains(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., levels) -> (...,) bool: the code is some item's semantic ID."""
        return self.item_of(codes) > 0

    def valid_codes(self) -> torch.Tensor:
        """(num_items, levels): row i is the code of item i + 1."""
        return self.codes

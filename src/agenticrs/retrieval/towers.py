"""The towers of the multi-objective retrievers (CSMF and the multi-head two-tower baseline).

They read what `two_tower.TwoTower` reads (history items, a hashed user id; item id and attribute
bag) but the user tower has its own history table, so that its parameters are one module: CSMF
gives each objective its own share of exactly those parameters while the item tower, trained on
exposures, stays one shared item space (one ANN index for every objective and their fusion).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import PAD
from agenticrs.retrieval.two_tower import TwoTowerConfig


class TowerConfig(TwoTowerConfig):
    """The two-tower's sizes, names and defaults; the impressions' histories are at most 30 long."""

    max_len: int = Field(30, ge=1, description="history items the user tower reads")


def _init_table(table: nn.Embedding, dim: int, padding: int | None) -> None:
    nn.init.normal_(table.weight, std=dim**-0.5)
    if padding is not None:
        with torch.no_grad():
            table.weight[padding].zero_()


class UserTower(nn.Module):
    """History items (mean and most recent) and the hashed user id through an MLP to `hidden`
    features; the objective heads (or CSMF's one output layer) map them to vectors."""

    def __init__(self, num_items: int, config: TowerConfig, out: int) -> None:
        super().__init__()
        d = config.dim
        self.max_len, self.buckets = config.max_len, config.user_buckets
        self.history = nn.Embedding(num_items + 1, d, padding_idx=PAD)
        self.user = nn.Embedding(config.user_buckets, d)
        self.mlp = nn.Sequential(nn.Linear(3 * d, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.hidden, out))  # fmt: skip
        _init_table(self.history, d, PAD)
        _init_table(self.user, d, None)

    def forward(self, history: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        history = history[:, -self.max_len :]
        return self.combine(history, self.history(history), self.user(user.remainder(self.buckets)))

    def combine(self, history: torch.Tensor, history_emb: torch.Tensor, user_emb: torch.Tensor,
                mlp: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """The tower from looked-up embeddings: mean and most recent history item, the user's
        row, through `mlp` (default: the tower's own; CSMF passes its masked weights)."""
        keep = (history != PAD).unsqueeze(-1).to(history_emb.dtype)
        mean = (history_emb * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return (mlp or self.mlp)(torch.cat([mean, history_emb[:, -1], user_emb], dim=1))


class ItemTower(nn.Module):
    """Item id and the mean of its attribute bag through an MLP to unit vectors."""

    def __init__(self, num_items: int, config: TowerConfig) -> None:
        super().__init__()
        d = config.dim
        self.num_items = num_items
        self.item = nn.Embedding(num_items + 1, d, padding_idx=PAD)
        self.attribute = nn.Embedding(config.attribute_buckets + 1, d, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(2 * d, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.hidden, config.out_dim))  # fmt: skip
        _init_table(self.item, d, PAD)
        _init_table(self.attribute, d, 0)
        self.register_buffer("attributes", torch.zeros(num_items + 1, config.max_attributes, dtype=torch.long))

    def set_attributes(self, attributes: torch.Tensor) -> None:
        if attributes.shape != self.attributes.shape:
            raise ValueError(f"item attributes have shape {tuple(attributes.shape)}; the model expects "
                             f"{tuple(self.attributes.shape)}")  # fmt: skip
        self.attributes.copy_(attributes)

    def forward(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(N, out_dim) unit vectors of `items` (default: every id 0..num_items; row 0 is padding)."""
        if items is None:
            items = torch.arange(self.num_items + 1, device=self.item.weight.device)
        attrs = self.attributes[items]
        return self.combine(attrs, self.item(items), self.attribute(attrs))

    def combine(self, attrs: torch.Tensor, item_emb: torch.Tensor, attr_emb: torch.Tensor,
                mlp: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """The tower from looked-up embeddings (`mlp`: CSMF's masked weights, default the tower's)."""
        n_attr = (attrs != 0).sum(-1, keepdim=True).clamp_min(1).to(item_emb.dtype)
        x = torch.cat([item_emb, attr_emb.sum(1) / n_attr], dim=1)
        return F.normalize((mlp or self.mlp)(x), dim=-1)

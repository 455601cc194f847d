"""SASRec: self-attentive sequential recommendation over item ids.

Paper: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (arXiv 1808.09781).
The paper's: item embeddings (scaled by sqrt(d)) plus learned absolute positions, a stack of
causal self-attention blocks (point-wise two-layer FFN, residuals, LayerNorm, dropout), and the
prediction of the next item at every position as the dot product of the hidden state with the
shared item embedding; trained with binary cross-entropy on the true next item and one sampled
negative per position; d = 50, 2 blocks, 1 head, max length 50 (200 for MovieLens), dropout 0.2
(MovieLens-1M) or 0.5 (the sparse Amazon sets), Adam lr 1e-3, batch 128.

Ours:
- Pre-LN blocks (LayerNorm before attention and FFN, one final LayerNorm), the form of the
  authors' code and of most reimplementations; GELU FFN by default (ReLU as in the paper via
  `activation`). d = 64 (a power of two; 50 in the paper).
- `loss="ce"` (default): full softmax over all items at every non-padding position - the
  "SASRec with cross-entropy" of Klenitskiy & Vasilev (RecSys 2023), markedly stronger than BCE
  on the Amazon sets; `loss="bce"`: the paper's objective. The negative is drawn uniformly from
  the items other than the position's target with torch's global RNG (seeded by the trainer); the
  authors' code also avoids every item of the user's sequence, which costs a per-user loop.
  `loss="sampled"`: softmax over the target and `num_negatives` items drawn uniformly (with
  replacement) once per batch and shared by every position, a negative equal to the position's
  target masked, with the log-Q correction log(I / K) added to the negatives' logits so that the
  sampled partition function estimates the full one. For large catalogues, where the full softmax
  costs most of a step (24,200 items: about 4 minutes an epoch on one core against seconds);
  with K >= I it is the full softmax.
- Dropout 0.2 by default: with the CE loss the paper's 0.5 for sparse data under-fits in our
  runs; pass `dropout=0.5` for the paper's Amazon setting.
- Padding keys are masked in attention (each position still attends to itself, so padding rows
  stay finite), and padding positions are zeroed after every block, as the paper's timeline mask.
- `recommend` ranks all items 1..I from the last position; `exclude_history=True` also removes
  the items already in the history (off by default: the standard protocol ranks every item, and
  on Amazon the target can repeat an earlier item).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import PAD, SeqBatch, SequentialConfig, SequentialModel
from agenticrs.gr.zoo import register_sequential


class SASRecConfig(SequentialConfig):
    max_len: int = Field(50, ge=1)
    dim: int = Field(64, ge=1)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    activation: Literal["gelu", "relu"] = "gelu"
    loss: Literal["ce", "bce", "sampled"] = "ce"
    num_negatives: int = Field(1024, ge=1, description='loss="sampled": shared uniform negatives per batch')
    exclude_history: bool = False


class _Block(nn.Module):
    """Pre-LN causal self-attention + point-wise FFN, both with residuals."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.num_heads:
            raise ValueError(f"dim ({cfg.dim}) must be divisible by num_heads ({cfg.num_heads})")
        self.heads, self.dropout = cfg.num_heads, cfg.dropout
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.dim), nn.GELU() if cfg.activation == "gelu" else nn.ReLU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.dim, cfg.dim),
        )  # fmt: skip
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


@register_sequential("sasrec")
class SASRec(SequentialModel):
    paper = "Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018"
    Config = SASRecConfig
    Block: type[nn.Module] = _Block  # one transformer layer; a subclass swaps in its own (HSTU)

    def __init__(self, num_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.num_items, self.config = num_items, config
        self.item = nn.Embedding(num_items + 1, config.dim, padding_idx=PAD)
        self.position = nn.Embedding(config.max_len, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(self.Block(config) for _ in range(config.num_blocks))
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.item.weight, std=config.dim**-0.5)
        nn.init.normal_(self.position.weight, std=config.dim**-0.5)
        with torch.no_grad():
            self.item.weight[PAD].zero_()

    def item_vectors(self) -> torch.Tensor:
        """(num_items + 1, d) the vectors items enter the sequence and are scored with (row 0 =
        padding): the item table here; a subclass may compose them (SID-SASRec: from codes)."""
        return self.item.weight

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """`item_vectors()[ids]` without building the whole table when it is a lookup."""
        return self.item(ids)

    def hidden(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L, d) states; position t only sees items at positions <= t; padding rows are zero."""
        history = history[:, -self.config.max_len :]
        n = history.shape[1]
        keep = (history != PAD).unsqueeze(-1)
        pos = self.position.weight[self.config.max_len - n :]  # right-aligned: the last item gets the last position
        x = self.drop(self.embed_items(history) * math.sqrt(self.config.dim) + pos) * keep
        causal = torch.ones(n, n, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=history.device)
        mask = (causal & (history != PAD)[:, None, :]) | eye  # (B, L, L): past, non-padding keys, and self
        mask = mask[:, None]
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.norm(x) * keep

    def _trim(self, history: torch.Tensor) -> int:
        """Columns to keep: the last max_len, minus leading columns that are padding in every row
        (right-aligned histories; padding rows and keys are masked, so results do not change)."""
        history = history[:, -self.config.max_len :]
        used = (history != PAD).any(0).nonzero()
        return history.shape[1] - int(used[0]) if len(used) else 1

    def _states(self, batch: SeqBatch, n: int) -> torch.Tensor:
        """`hidden` over the batch's last n history columns (a subclass may read more of the batch)."""
        return self.hidden(batch["history"][:, -n:])

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        n = self._trim(batch["history"])
        history, targets = batch["history"][:, -n:], batch["targets"][:, -n:]
        valid = targets != PAD
        if not bool(valid.any()):
            return self.item_vectors().sum() * 0.0
        h = self._states({**batch, "history": history}, n)[valid]  # (N, d)
        y = targets[valid]
        if self.config.loss == "ce" or (self.config.loss == "sampled" and self.config.num_negatives >= self.num_items):
            logits = h @ self.item_vectors().T
            logits[:, PAD] = float("-inf")
            return F.cross_entropy(logits, y)
        if self.config.loss == "sampled":
            return self._sampled_softmax(h, y)
        neg = torch.randint(1, max(self.num_items, 2), y.shape, device=y.device)  # 1..I-1, then skip the target
        neg = neg + (neg >= y).long()
        if self.num_items == 1:
            neg = y  # no other item exists; the negative term then only regularises
        pos_logit = (h * self.embed_items(y)).sum(-1)
        neg_logit = (h * self.embed_items(neg)).sum(-1)
        bce = F.binary_cross_entropy_with_logits
        return bce(pos_logit, torch.ones_like(pos_logit)) + bce(neg_logit, torch.zeros_like(neg_logit))

    def _sampled_softmax(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target against K shared uniform negatives (log-Q corrected)."""
        k = self.config.num_negatives
        neg = torch.randint(1, self.num_items + 1, (k,), device=y.device)
        pos_logit = (h * self.embed_items(y)).sum(-1, keepdim=True)  # (N, 1)
        neg_logit = h @ self.embed_items(neg).T + math.log(self.num_items / k)  # q = 1 / I: -log(K q)
        neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], 1)
        return F.cross_entropy(logits, torch.zeros_like(y))

    @torch.no_grad()
    def score_all(self, batch: SeqBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_items + 1) scores of every item from the last position; padding column -inf,
        history items (with `exclude_history`) the lowest finite score. `items` scores against
        another (num_items + 1, d) table instead of the model's own (a diagnostic: e.g. the items'
        vectors as their semantic IDs reconstruct them, `bench/sid_fidelity.py`)."""
        h = self._states(batch, self._trim(batch["history"]))[:, -1]
        scores = h @ (self.item_vectors() if items is None else items).T
        if self.config.exclude_history:  # below every real score, above the padding column
            scores.scatter_(1, batch["history"], torch.finfo(scores.dtype).min)
        scores[:, PAD] = float("-inf")
        return scores

    def item_embeddings(self) -> torch.Tensor:
        """(num_items + 1, d) item embeddings (row 0 = padding): collaborative item vectors."""
        return self.item_vectors().detach().clone()

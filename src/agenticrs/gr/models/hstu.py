"""HSTU: hierarchical sequential transduction units (pointwise-normalised gated attention).

Paper: Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers
for Generative Recommendations", ICML 2024 (arXiv 2402.17152); our spec
`gr_baselines_and_protocol.md` §3. The paper's block, on X (n x d):

    U, V, Q, K = split(SiLU(X W1))
    A = SiLU(Q K^T + rab^{pos,time}) / n        (pointwise: no softmax; normalised by length n)
    Y = (LayerNorm(A V) * U) W2 + X             (gated by U, residual)

with a causal mask and `rab` a learned relative attention bias over position distances and
log-bucketed time gaps; trained as next-item prediction over item ids.

Ours:
- The block above exactly, with LayerNorm on the block input (as the authors' code), dropout
  on the gated output; `n` is the model's fixed `max_len` (the authors' padded length), not the
  batch's length, so a user's scores never depend on who shares the batch.
- Relative position bias: one learned scalar per head and distance i - j in 0..max_len-1.
- Time bias: one learned scalar per head and bucket floor(log(max(|t_i - t_j|, 1)) / 0.301)
  (the authors' bucketing) when the batch carries `timestamps` (B, L) in seconds, aligned with
  `history`: batches of a data set with event times (`SequenceData.timestamps`: the simulator's
  behaviour sequences `sim-<preset>-behaviours`, Taobao UserBehavior) carry them through the
  engine; the Amazon and Yelp sets are order-only, so there the position bias works alone.
- Ablation switch `attention_norm` (ours, not the paper's): `count` divides by the number of keys
  each query sees instead of `max_len` (on short histories the paper's 1/max_len shrinks the
  attention output towards zero), `softmax` uses SASRec's normalisation inside the HSTU block, so
  a gap to SASRec can be traced to the normalisation or to the rest of the block.
- Learned absolute positions added to the item embeddings (as the authors' sequential-
  recommendation preprocessor), right-aligned as in SASRec.
- Training and ranking are SASRec's (this class subclasses it): `loss="ce"` full softmax over all
  items at every position (default), `loss="sampled"` softmax against shared uniform negatives
  with the log-Q correction (the paper trains with a sampled softmax; its L2-normalised
  embeddings are not used), or `loss="bce"` with one sampled negative; full-ranking `score_all`
  from the last position.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import PAD, SeqBatch
from agenticrs.gr.models.sasrec import SASRec, SASRecConfig
from agenticrs.gr.zoo import register_sequential


class HSTUConfig(SASRecConfig):
    """SASRec's settings (size, dropout, losses: `sampled` is the paper's objective) and the time buckets."""

    num_time_buckets: int = Field(64, ge=1, description="log-bucketed time gaps (used when batches carry timestamps)")
    absolute_positions: bool = True
    attention_norm: Literal["max_len", "count", "softmax"] = Field(
        "max_len",
        description="how attention weights are normalised: the paper's SiLU / max_len, SiLU / number "
        "of keys the query sees (ablation), or SASRec's softmax (ablation)",
    )


def time_buckets(timestamps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """(B, L) seconds -> (B, L, L) bucket of |t_i - t_j|: floor(log(max(gap, 1)) / 0.301)."""
    gap = (timestamps[:, :, None] - timestamps[:, None, :]).abs().to(torch.float32).clamp(min=1.0)
    return (torch.log(gap) / 0.301).floor().long().clamp(0, num_buckets - 1)


class HSTUBlock(nn.Module):
    """One HSTU layer: SiLU projections to U, V, Q, K; pointwise SiLU attention with relative
    position (and time) bias, divided by max_len; LayerNorm(AV) gated by U; residual."""

    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.num_heads:
            raise ValueError(f"dim ({cfg.dim}) must be divisible by num_heads ({cfg.num_heads})")
        self.heads, self.max_len, self.attention_norm = cfg.num_heads, cfg.max_len, cfg.attention_norm
        self.norm_in = nn.LayerNorm(cfg.dim)
        self.uvqk = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.norm_av = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.position_bias = nn.Parameter(torch.zeros(cfg.num_heads, cfg.max_len))
        self.time_bias = nn.Parameter(torch.zeros(cfg.num_heads, cfg.num_time_buckets))

    def attention(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, buckets: torch.Tensor | None) -> torch.Tensor:
        """(B, H, L, L) weights SiLU(QK^T / sqrt(dk) + rab) / max_len, zero where masked (or the
        `attention_norm` ablation's count or softmax normalisation)."""
        n = q.shape[-2]
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        steps = torch.arange(n, device=q.device)
        distance = (steps[:, None] - steps[None, :]).clamp(0, self.max_len - 1)  # i - j; masked where < 0
        scores = scores + self.position_bias[:, distance]
        if buckets is not None:
            scores = scores + self.time_bias[:, buckets].transpose(0, 1)  # (H, B, L, L) -> (B, H, L, L)
        mask = mask[:, None]
        if self.attention_norm == "softmax":
            weights = torch.softmax(scores.masked_fill(mask == 0, float("-inf")), dim=-1)
            return torch.nan_to_num(weights) * mask  # a padding query sees no key: zero row, not NaN
        if self.attention_norm == "count":
            return F.silu(scores) * mask / mask.sum(-1, keepdim=True).clamp(min=1.0)
        return F.silu(scores) / self.max_len * mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor, buckets: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d), mask (B, L, L) 1 = query i may read key j, buckets (B, L, L) or None."""
        b, n, d = x.shape
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split(d, dim=-1)
        v, q, k = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (v, q, k))
        av = (self.attention(q, k, mask, buckets) @ v).transpose(1, 2).reshape(b, n, d)
        return x + self.out(self.drop(self.norm_av(av) * u))


@register_sequential("hstu")
class HSTU(SASRec):
    paper = "Zhai et al., Actions Speak Louder than Words (HSTU), ICML 2024"
    Config = HSTUConfig
    Block = HSTUBlock

    def __init__(self, num_items: int, config: HSTUConfig) -> None:
        super().__init__(num_items, config)
        if not config.absolute_positions:  # relative position bias only: the absolute table stays zero
            with torch.no_grad():
                self.position.weight.zero_()
        self.position.weight.requires_grad_(config.absolute_positions)

    def hidden(self, history: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) states; position t only sees items at positions <= t; padding rows are zero."""
        history = history[:, -self.config.max_len :]
        n = history.shape[1]
        keep = (history != PAD).unsqueeze(-1)
        pos = self.position.weight[self.config.max_len - n :]
        x = self.drop(self.embed_items(history) * math.sqrt(self.config.dim) + pos) * keep
        causal = torch.ones(n, n, dtype=torch.bool, device=history.device).tril()
        mask = (causal & (history != PAD)[:, None, :]).to(x.dtype)  # (B, L, L): past, non-padding keys
        buckets = None
        if timestamps is not None:
            if timestamps.shape[0] != history.shape[0] or timestamps.shape[1] < n:
                raise ValueError(f"timestamps {tuple(timestamps.shape)} do not match history {tuple(history.shape)}")
            buckets = time_buckets(timestamps[:, -n:], self.config.num_time_buckets)
        for block in self.blocks:
            x = block(x, mask, buckets) * keep
        return self.norm(x) * keep

    def _states(self, batch: SeqBatch, n: int) -> torch.Tensor:
        stamps = batch.get("timestamps")
        return self.hidden(batch["history"][:, -n:], None if stamps is None else stamps[:, -n:])

"""RCLRec: reverse-curriculum supervision for sparse conversions, on TIGER's semantic IDs and decoder.

Paper: Huang et al., "RCLRec: Reverse Curriculum Learning for Modeling Sparse Conversions in
Generative Recommendation", arXiv 2603.28124 (2026); our spec `rclrec.md` (abstract and summaries:
the selection rule, the quality loss and the hyper-parameters are ours). The paper's: for each
conversion target (a purchase), a short curriculum of conversion-related items is picked from the
user's history walking backwards from the conversion; their semantic IDs are fed to the decoder as
a prefix and generated jointly with the target's (extra, instance-specific supervision that mirrors
the decision path), and a curriculum-quality-aware loss makes sure the curricula help predict the
conversion.

Ours (spec §3-5):
- Backbone: TIGER (`tiger.py`: encoder over [user token, history SIDs], decoder over SID tokens,
  trie-constrained beam search) plus behaviour-type embeddings added to every token of a history
  item, and the target's behaviour type added to the decoder's BOS (the query "which item will
  be purchased next" differs from "clicked next"; a batch without `target_behaviour` asks for
  the conversion behaviour).
- Curriculum (`select_curriculum`): walking back over the last `curriculum_window` history
  events, keep an event whose behaviour is in `curriculum_behaviours` (click, cart, fav) and whose
  item shares the first `related_prefix` SID codes with the anchor (the target in training);
  stop at `curriculum_size` (K = 3) items; chronological order. The window is bounded by the
  history the batch carries (`max_len`). The spec's alternative relatedness (text cosine) is not
  implemented.
- Decoder sequence of a conversion target with k > 0 curriculum items:
  [BOS, SID(c_1) ... SID(c_k), SEP, SID(v)], teacher forcing, left-padded within the batch (keys
  masked) so positions count from BOS. Targets without curriculum (every non-conversion target, and
  conversions with k = 0) keep TIGER's plain [BOS, SID(v)].
- Loss (normalised as TIGER's: divided by the number of target tokens): Σ CE(target tokens) +
  α_eff Σ CE(curriculum tokens) (α = `curriculum_weight` 0.5), with the curriculum quality
  q = log p(v | C, hist) - sg(log p(v | hist)) (a second, plain decoder pass) weighting the
  curriculum, α_eff = α sg(σ(q / τ)), and L_q = mean over curriculum rows of max(0, m - q)
  (m = 0.1) added with weight λ_q = 0.1. The plain pass's log-likelihood is detached, so L_q
  never lowers p(v | hist) (what the no-prefix decoding relies on).
- Inference (`inference_prefix`): "anchor" (spec default) decodes the target after the prefix
  [BOS, SID(curriculum), SEP] chosen by the same selector around the anchor = the most recent cart
  in the window (else the most recent click); "none" decodes the target directly (curriculum only
  as a training signal). Beam search is TIGER's (trie-constrained, ranked by the target's
  log-probability), recomputing the decoder over [prefix, generated codes] each step.
- Ablations: `curriculum_size=0` (TIGER + behaviour embeddings: no curriculum at all),
  `quality_weighting=False` (α fixed, no L_q), `inference_prefix="none"`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import BEHAVIOURS, NUM_BEHAVIOURS, PAD, SemanticIds, SeqBatch, SequentialConfig
from agenticrs.gr.models.tiger import _NUM_FIXED_SPECIALS, BOS, Tiger, TigerConfig
from agenticrs.gr.zoo import register_sequential

Behaviour = Literal["click", "cart", "fav", "purchase"]


class RCLRecConfig(TigerConfig):
    """TIGER's settings plus the curriculum's (spec §3-5; ours where the paper is silent)."""

    conversion: Behaviour = "purchase"
    curriculum_size: int = Field(3, ge=0, le=16)  # K; 0 = no curriculum (ablation)
    curriculum_window: int = Field(50, ge=1)  # W events walked back (at most the batch's history)
    curriculum_behaviours: list[Behaviour] = Field(default_factory=lambda: ["click", "cart", "fav"], min_length=1)
    related_prefix: int = Field(1, ge=1)  # SID codes a curriculum item shares with the anchor
    curriculum_weight: float = Field(0.5, ge=0.0, le=10.0)  # alpha
    quality_weighting: bool = True
    quality_margin: float = Field(0.1, ge=0.0)
    quality_loss_weight: float = Field(0.1, ge=0.0)
    quality_temperature: float = Field(1.0, gt=0.0)
    inference_prefix: Literal["anchor", "none"] = "anchor"
    anchor_behaviours: list[Behaviour] = Field(default_factory=lambda: ["cart", "click"], min_length=1)


def select_curriculum(
    history: torch.Tensor,
    behaviours: torch.Tensor,
    history_codes: torch.Tensor,
    anchor_codes: torch.Tensor,
    allowed: torch.Tensor,
    size: int,
    window: int,
    prefix: int,
) -> torch.Tensor:
    """(B, size) curriculum items, chronological and right-aligned (PAD on the left).

    history / behaviours (B, L) right-aligned (most recent last); history_codes (B, L, levels)
    their SIDs; anchor_codes (B, levels); allowed (NUM_BEHAVIOURS,) bool. Walking back from the
    most recent event over the last `window`, an event is kept when its behaviour is allowed and
    its item shares the first `prefix` codes with the anchor, until `size` are kept."""
    b, length = history.shape
    if size == 0:
        return history.new_zeros(b, 0)
    p = min(prefix, anchor_codes.shape[1])
    related = (history_codes[..., :p] == anchor_codes[:, None, :p]).all(-1)
    in_window = torch.arange(length, device=history.device) >= length - window
    keep = related & allowed[behaviours] & (history != PAD) & in_window
    kept_after = keep.flip(1).long().cumsum(1).flip(1)  # kept events at or after each position
    keep &= kept_after <= size
    # right-align the kept items in chronological order
    slot = size - kept_after  # 0..size-1 for kept positions
    out = history.new_zeros(b, size + 1)
    out.scatter_(1, torch.where(keep, slot, size), torch.where(keep, history, 0))
    return out[:, :size]


@register_sequential("rclrec")
class RCLRec(Tiger):
    """TIGER with behaviour embeddings and reverse-curriculum prefixes for conversion targets."""

    name: ClassVar[str] = "rclrec"
    paper: ClassVar[str] = (
        "Huang et al., RCLRec: Reverse Curriculum Learning for Modeling Sparse Conversions in Generative "
        "Recommendation, arXiv 2603.28124"
    )
    Config: ClassVar[type[SequentialConfig]] = RCLRecConfig
    config: RCLRecConfig

    def __init__(self, num_items: int, config: RCLRecConfig, semantic_ids: SemanticIds) -> None:
        super().__init__(num_items, config, semantic_ids)
        d = config.d_model
        self.sep_token = self.token_embedding.num_embeddings  # one token past TIGER's vocabulary
        old = self.token_embedding
        self.token_embedding = nn.Embedding(old.num_embeddings + 1, d, padding_idx=PAD)
        with torch.no_grad():
            self.token_embedding.weight[:-1].copy_(old.weight)
            nn.init.normal_(self.token_embedding.weight[-1:], std=0.02)
        self.behaviour_embedding = nn.Embedding(NUM_BEHAVIOURS, d)
        nn.init.normal_(self.behaviour_embedding.weight, std=0.02)
        # positions: BOS, K curriculum items, SEP, the target's levels
        self.decoder_positions = nn.Embedding(2 + (config.curriculum_size + 1) * self.levels, d)
        nn.init.normal_(self.decoder_positions.weight, std=0.02)
        allowed = torch.zeros(NUM_BEHAVIOURS, dtype=torch.bool)
        allowed[[BEHAVIOURS[b] for b in config.curriculum_behaviours]] = True
        self.register_buffer("curriculum_allowed", allowed, persistent=False)
        self.conversion = BEHAVIOURS[config.conversion]

    # ----------------------------------------------------------------------------------- encoder
    def encode(self, batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """TIGER's encoder input plus each history item's behaviour embedding on its tokens."""
        cfg = self.config
        history = batch["history"][:, -cfg.max_len :]
        kinds = batch.get("history_behaviour")
        kinds = torch.zeros_like(history) if kinds is None else kinds[:, -cfg.max_len :]
        used = (history != PAD).any(0)
        start = int(used.to(torch.int8).argmax()) if bool(used.any()) else history.shape[1]
        history, kinds = history[:, start:], kinds[:, start:]
        length = history.shape[1]
        item_tokens = self.sid_codes[history] + self.code_offsets + self.code_token_start
        item_tokens = item_tokens.masked_fill((history == PAD).unsqueeze(-1), PAD).flatten(1)
        user_tokens = _NUM_FIXED_SPECIALS + batch["user"].to(torch.long) % cfg.num_user_buckets
        tokens = torch.cat([user_tokens.unsqueeze(1), item_tokens], dim=1)
        behaviour = torch.cat([torch.zeros_like(kinds[:, :1]), kinds.repeat_interleave(self.levels, 1)], dim=1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        positions[1:] += (cfg.max_len - length) * self.levels
        x = self.token_embedding(tokens) + self.encoder_positions(positions) + self.behaviour_embedding(behaviour)
        x = self.drop(x)
        mask = (tokens != PAD)[:, None, None, :]
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return self.encoder_norm(x), mask

    # -------------------------------------------------------------------------------- curriculum
    def curriculum(self, batch: SeqBatch, anchor: torch.Tensor) -> torch.Tensor:
        """(B, K) curriculum items around anchor items (B,) (0 = no anchor: empty curriculum)."""
        cfg = self.config
        history = batch["history"][:, -cfg.max_len :]
        kinds = batch.get("history_behaviour")
        kinds = torch.zeros_like(history) if kinds is None else kinds[:, -cfg.max_len :]
        items = select_curriculum(history, kinds, self.sid_codes[history], self.sid_codes[anchor],
                                  self.curriculum_allowed, cfg.curriculum_size, cfg.curriculum_window,
                                  cfg.related_prefix)  # fmt: skip
        return items.masked_fill((anchor == PAD).unsqueeze(1), PAD)

    def anchors(self, batch: SeqBatch) -> torch.Tensor:
        """(B,) the inference anchor: the most recent event of the first behaviour in
        `anchor_behaviours` found in the window (0: none)."""
        cfg = self.config
        history = batch["history"][:, -cfg.max_len :][:, -cfg.curriculum_window :]
        kinds = batch.get("history_behaviour")
        anchor = torch.zeros_like(history[:, 0])
        if kinds is None:
            return anchor
        kinds = kinds[:, -cfg.max_len :][:, -cfg.curriculum_window :]
        positions = torch.arange(history.shape[1], device=history.device)
        for name in reversed(cfg.anchor_behaviours):  # the first listed behaviour wins: written last
            hit = (kinds == BEHAVIOURS[name]) & (history != PAD)
            last = torch.where(hit, positions, -1).max(1).values
            found = last >= 0
            anchor = torch.where(found, history.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1), anchor)
        return anchor

    def prefix_tokens(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Curriculum items (B, K) right-aligned -> decoder prefix tokens (B, T) =
        [PAD..., BOS, SID tokens of the items, SEP] (just [PAD..., BOS] without items), left-padded,
        and their positions counted from BOS."""
        b, k = items.shape
        codes = self.sid_codes[items] + self.code_offsets + self.code_token_start  # (B, K, levels)
        present = items != PAD
        codes = codes.masked_fill(~present.unsqueeze(-1), PAD).flatten(1)  # PAD tokens on the left
        has = present.any(1, keepdim=True)
        sep = torch.where(has, self.sep_token, PAD)
        body = torch.cat([codes, sep], dim=1)  # (B, K*levels + 1), real tokens right-aligned
        n_real = (body != PAD).sum(1, keepdim=True)
        bos = torch.full((b, 1), BOS, dtype=torch.long, device=items.device)
        # move BOS right before the first real token: left-pad [BOS, real] to the common width
        width = body.shape[1] + 1
        idx = torch.arange(width, device=items.device).expand(b, width)
        start = width - 1 - n_real  # where BOS goes
        tokens = torch.where(idx < start, PAD, torch.where(idx == start, bos, torch.cat([bos, body], 1)))
        positions = (idx - start).clamp_min(0)
        keep = int((tokens != PAD).sum(1).max())
        return tokens[:, -keep:], positions[:, -keep:]

    # ----------------------------------------------------------------------------------- decoder
    def decode_tokens(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        target_behaviour: torch.Tensor,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Decoder states (B, N, T, d) over left-padded token rows (B, N, T): causal self-attention
        over the real tokens, the target behaviour added at BOS."""
        b, n, t = tokens.shape
        x = self.token_embedding(tokens) + self.decoder_positions(positions)
        x = x + (tokens == BOS).unsqueeze(-1) * self.behaviour_embedding(target_behaviour)[:, None, None, :]
        x = self.drop(x)
        real = (tokens != PAD).reshape(b * n, 1, 1, t)
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        self_mask = causal & real  # (B*N, 1, T, T); a padded query attends to itself only
        self_mask = self_mask | torch.eye(t, dtype=torch.bool, device=tokens.device)
        for layer, kv in zip(self.decoder_layers, memory_kv, strict=True):
            h = layer.norm_self(x).reshape(b * n, t, -1)
            key, value = layer.self_attn.project_kv(h)
            x = x + layer.drop(layer.self_attn(h, key, value, mask=self_mask).view(b, n, t, -1))
            h = layer.norm_cross(x).reshape(b, n * t, -1)
            x = x + layer.drop(layer.cross_attn(h, *kv, mask=memory_mask).view(b, n, t, -1))
            x = x + layer.drop(layer.ffn(layer.norm_ffn(x)))
        return self.decoder_norm(x)

    def code_logits(self, states: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """States (..., d) and the level of the code each predicts (...) -> (..., max V) logits."""
        full = states @ self.head.weight.T + self.head.bias  # (..., num_codes)
        logits = full.gather(-1, self.head_index[levels])
        return logits.masked_fill(~self.head_valid[levels], float("-inf"))

    def _target_behaviour(self, batch: SeqBatch, b: int, device: torch.device) -> torch.Tensor:
        kinds = batch.get("target_behaviour")
        return torch.full((b,), self.conversion, dtype=torch.long, device=device) if kinds is None else kinds.long()

    # -------------------------------------------------------------------------------------- loss
    def target_log_probs(
        self, prefix: torch.Tensor, positions: torch.Tensor, target: torch.Tensor, behaviour: torch.Tensor,
        kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Teacher-forced log-probabilities of every position's next token after a prefix
        (B, Tp): (per-position log-prob of the label (B, T), label codes (B, T)), where the
        labels are the prefix's code tokens (shifted) followed by the target's codes; positions
        predicting a non-code token (SEP) or padding have label -100."""
        codes = self.sid_codes[target]  # (B, levels)
        target_tokens = codes + self.code_offsets + self.code_token_start
        tokens = torch.cat([prefix, target_tokens[:, :-1]], 1)
        last = positions[:, -1:]
        pos = torch.cat([positions, last + 1 + torch.arange(self.levels - 1, device=prefix.device)], 1)
        states = self.decode_tokens(tokens[:, None], pos[:, None], behaviour, kv, mask).squeeze(1)  # (B, T, d)
        nxt = torch.cat([tokens[:, 1:], target_tokens[:, -1:]], 1)  # the token each position predicts
        is_code = nxt >= self.code_token_start
        is_code &= nxt != self.sep_token
        flat = (nxt - self.code_token_start).clamp(0, int(self.code_offsets[-1]) + max(self.vocab_sizes) - 1)
        level = (torch.searchsorted(self.code_offsets, flat, right=True) - 1).clamp(0, self.levels - 1)
        labels = torch.where(is_code, flat - self.code_offsets[level], -100)
        logits = self.code_logits(states, level)
        logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return logp.masked_fill(labels < 0, 0.0), labels

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        """Σ CE(target) + α_eff Σ CE(curriculum) + λ_q max(0, m - q), over the target tokens."""
        cfg = self.config
        target = batch["target"]
        b, device = target.shape[0], target.device
        behaviour = self._target_behaviour(batch, b, device)
        memory, mask = self.encode(batch)
        kv = self.memory_kv(memory)
        valid = target != PAD
        plain = torch.full((b, 1), BOS, dtype=torch.long, device=device)
        plain_logp, _ = self.target_log_probs(plain, torch.zeros_like(plain), target, behaviour, kv, mask)
        plain_ll = plain_logp.sum(1)  # (B,) log p(v | hist)
        items = self.curriculum(batch, torch.where(behaviour == self.conversion, target, PAD))
        with_cur = (items != PAD).any(1) & valid
        n_tokens = valid.sum().clamp_min(1) * self.levels
        nll = -(plain_ll * (valid & ~with_cur)).sum()
        quality_loss = plain_ll.new_zeros(())
        if bool(with_cur.any()):
            rows = torch.nonzero(with_cur).squeeze(1)
            prefix, positions = self.prefix_tokens(items[rows])
            row_kv = [(k[rows], v[rows]) for k, v in kv]
            logp, _ = self.target_log_probs(prefix, positions, target[rows], behaviour[rows], row_kv, mask[rows])
            target_ll = logp[:, -self.levels :].sum(1)  # log p(v | C, hist)
            curriculum_ll = logp[:, : -self.levels].sum(1)
            quality = target_ll - plain_ll[rows].detach()
            if cfg.quality_weighting:
                alpha = cfg.curriculum_weight * torch.sigmoid(quality / cfg.quality_temperature).detach()
                quality_loss = cfg.quality_loss_weight * F.relu(cfg.quality_margin - quality).mean()
            else:
                alpha = torch.full_like(quality, cfg.curriculum_weight)
            nll = nll - (target_ll + alpha * curriculum_ll).sum()
        return nll / n_tokens + quality_loss

    # ------------------------------------------------------------------------------- beam search
    @torch.no_grad()
    def beam_search(
        self, batch: SeqBatch, beam_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TIGER's trie-constrained beam search after the inference prefix (anchor curriculum or
        none): (codes (B, N, levels), items (B, N), log-probs (B, N)), best first."""
        cfg = self.config
        beam = beam_size or cfg.beam_size
        memory, mask = self.encode(batch)
        kv = self.memory_kv(memory)
        b, device = memory.shape[0], memory.device
        behaviour = self._target_behaviour(batch, b, device)
        if cfg.inference_prefix == "anchor" and cfg.curriculum_size > 0:
            prefix, positions = self.prefix_tokens(self.curriculum(batch, self.anchors(batch)))
        else:
            prefix = torch.full((b, 1), BOS, dtype=torch.long, device=device)
            positions = torch.zeros_like(prefix)
        codes = torch.zeros(b, 1, 0, dtype=torch.long, device=device)
        scores = torch.zeros(b, 1, device=device)
        rows = torch.arange(b, device=device).unsqueeze(1)
        for level in range(self.levels):
            n = codes.shape[1]
            generated = codes + self.code_offsets[:level] + self.code_token_start
            tokens = torch.cat([prefix[:, None].expand(b, n, -1), generated], -1)
            last = positions[:, -1:]
            pos = torch.cat([positions, last + 1 + torch.arange(level, device=device)], 1)[:, None].expand(b, n, -1)
            states = self.decode_tokens(tokens, pos, behaviour, kv, mask)[:, :, -1]  # (B, N, d)
            size = self.vocab_sizes[level]
            logits = self.code_logits(states, torch.full(states.shape[:-1], level, device=device))[..., :size]
            log_probs = torch.log_softmax(logits, dim=-1)
            allowed = self.trie.allowed_next(codes)
            candidates = (scores.unsqueeze(-1) + log_probs).masked_fill(~allowed, float("-inf")).flatten(1)
            scores, index = candidates.topk(min(beam, candidates.shape[1]), dim=1)
            parent = torch.div(index, size, rounding_mode="floor")
            codes = torch.cat([codes[rows, parent], (index % size).unsqueeze(-1)], dim=-1)
        items = self.trie.item_of(codes).masked_fill(torch.isinf(scores), PAD)
        return codes, items, scores

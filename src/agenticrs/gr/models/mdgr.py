"""MDGR: masked (absorbing-state) diffusion over the next item's semantic-ID positions.

Paper: Mu, Deng et al., "MDGR: Masked Diffusion Generative Recommendation", arXiv 2601.19501
(2026); our spec `../shared/specs/mdgr.md` (the paper's internals were not available: the spec's
"(ours)" sections are our design and so is everything below). The paper's idea: instead of
TIGER's left-to-right decoding of the target's semantic ID, start from an all-[MASK] ID and
unmask positions in any order, several in parallel, with a bidirectional denoiser conditioned on
the user's history; a parallel (order-free) codebook, masking supervision adapted along the
temporal (training time) and sample dimensions, and warm-up two-stage parallel decoding.

Ours:
- History encoder, token embedding, output head and semantic IDs are TIGER's (this class
  subclasses `Tiger`: same encoder over [user token, history SIDs], same per-level head); the
  denoiser replaces TIGER's causal decoder with a *bidirectional* one over the L target slots
  (input: the slot's code token, or a learned per-slot [MASK] vector, + slot position; self-
  attention over the slots, cross-attention to the history).
- Codebook: any `SemanticIds`. The spec's parallel codebook is the `pq` tokenizer with
  `collision=reassign` (tokenizer settings of the job); on TIGER's residual IDs (RQ-KMeans +
  collision digit) the same model runs, which is what the TIGER-vs-MDGR comparison uses.
- Training (`loss`): per example and mask pattern (`mask_samples` patterns per example share one
  encoder pass) a noise level t; m ~ Binomial(L, t) slots (at least 1) are masked. `noise`:
  "uniform" t ~ U(0, 1); "curriculum" (the temporal dimension) t ~ Beta(a, 1) with a rising
  0.5 -> 1 over the first `curriculum_steps` training steps (easy, few-masked examples first),
  uniform after; `full_mask_prob` of the patterns are fully masked (the inference start). The
  sample dimension (`adaptive_masking` = alpha): which slots are masked is drawn with
  probabilities (1 - alpha) uniform + alpha softmax(tau * running loss of each slot), i.e. harder
  slots are masked more often. Loss: cross-entropy on the masked slots, averaged over them
  (`weighting="mean_masked"`) or MDLM's 1/t weight (`"inverse_t"`, sum / (t L)).
- Decoding (`beam_search`): `steps` denoiser passes; `schedule` says how many slots each pass
  unmasks: "warmup" (the spec's two-stage decoding: steps - 1 warm-up passes of one slot each,
  then every remaining slot at once), "linear" (evenly) or "cosine" (MaskGIT). In each pass every
  beam unmasks *its own* most confident masked slots (`confidence`: the best allowed token's log-
  probability, or the negative entropy over the allowed tokens; `order="left_to_right"` is the
  fixed-order ablation). Beam states are partial IDs (which slots are known, their codes);
  children of a beam are the distinct projections of the items consistent with it, scored by
  the beam's score + the chosen slots' log-probabilities; states reached by two paths keep the
  best score; the `beam` best states survive.
- Constraint at every step (the order-free trie): a beam only ever holds a partial ID that is the
  projection of some item's code, so every decoded ID is a valid item (the children are computed
  from the item code table, a generalised trie that answers "which codes may slot l take given
  these known slots" for any subset of known slots). A row whose surviving beams hold fewer than
  k items is filled with the best remaining items of the one-pass factorised score.
- Cost: steps denoiser passes instead of L autoregressive ones, plus the constraint: the first
  pass scores every item once (dense, B x I), each later pass one operation per (beam, consistent
  item) pair; on a CPU this, not the Transformer, dominates when beams stay consistent with many
  items (e.g. after unmasking a collision digit first). The last pass, whose children are whole
  items, merges them densely (B x I max and top-k) instead of sorting every pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import PAD, SemanticIds, SeqBatch, SequentialConfig
from agenticrs.gr.models.tiger import Tiger, TigerConfig, _DecoderLayer
from agenticrs.gr.zoo import register_sequential

_MAX_LEVELS = 6  # beam states are indexed by (subset of known slots, item): 2^L x items


class MDGRConfig(TigerConfig):
    """TIGER's encoder settings plus the diffusion's training and decoding choices (spec §5-6)."""

    steps: int = Field(2, ge=1, description="denoiser passes at decoding (<= the ID length)")
    schedule: Literal["warmup", "linear", "cosine"] = "warmup"
    confidence: Literal["max_prob", "entropy"] = "max_prob"
    order: Literal["confidence", "left_to_right"] = "confidence"
    noise: Literal["uniform", "curriculum"] = "curriculum"
    curriculum_steps: int = Field(2000, ge=1, description="steps over which the mask ratio ramps up (curriculum)")
    full_mask_prob: float = Field(0.2, ge=0.0, le=1.0)
    adaptive_masking: float = Field(0.5, ge=0.0, le=1.0, description="weight of loss-driven slot choice")
    adaptive_temperature: float = Field(1.0, ge=0.0)
    mask_samples: int = Field(2, ge=1, description="mask patterns per training example")
    weighting: Literal["mean_masked", "inverse_t"] = "mean_masked"
    digit_last: bool = Field(
        False,
        description="ours: unmask the last slot (the collision digit of `collision: digit` IDs) only after every "
        "other slot; by confidence it is unmasked first and the warm-up pass learns nothing about the item",
    )


def unmask_counts(levels: int, steps: int, schedule: str) -> list[int]:
    """Slots unmasked by each of `steps` passes (each >= 1, summing to `levels`)."""
    if not 1 <= steps <= levels:
        raise ValueError(f"steps must lie in 1..{levels} (the semantic-ID length), got {steps}")
    if schedule == "warmup":
        return [1] * (steps - 1) + [levels - steps + 1]
    if schedule == "linear":
        return [levels // steps + (1 if s < levels % steps else 0) for s in range(steps)]
    if schedule == "cosine":  # masked after pass s: floor(L cos(pi/2 s/T)), at least one slot a pass
        masked = [math.floor(levels * math.cos(math.pi / 2 * s / steps)) for s in range(steps + 1)]
        counts, left = [], levels
        for s in range(steps):
            take = max(1, min(left - (steps - s - 1), masked[s] - masked[s + 1]))
            counts.append(take)
            left -= take
        counts[-1] += left
        return counts
    raise ValueError(f"unknown schedule '{schedule}' (warmup, linear or cosine)")


class _DenoiserLayer(_DecoderLayer):
    """TIGER's decoder block (the same sub-layers) with bidirectional self-attention across the L
    slots of each (row, beam), cross-attention to the row's history memory, FFN."""

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor
                ) -> torch.Tensor:  # fmt: skip
        b, n, t, d = x.shape
        h = self.norm_self(x).reshape(b * n, t, d)
        x = x + self.drop(self.self_attn(h, *self.self_attn.project_kv(h)).view(b, n, t, d))
        h = self.norm_cross(x).reshape(b, n * t, d)
        x = x + self.drop(self.cross_attn(h, *memory_kv, mask=memory_mask).view(b, n, t, d))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


@dataclass
class SubsetIndex:
    """The order-free trie: for every subset P of slots (bit l = slot l known), the items grouped
    by their code on P. `order[P]` lists item indices (0-based) group by group, `starts[P, g]` is
    where group g begins (padded with I), `group[P, i]` is item i's group and `reps[P, i]` the
    smallest item index of that group: a partial ID on P is (P, representative)."""

    order: torch.Tensor  # (2^L, I)
    starts: torch.Tensor  # (2^L, I + 1)
    group: torch.Tensor  # (2^L, I)
    reps: torch.Tensor  # (2^L, I)

    @classmethod
    def build(cls, codes: torch.Tensor) -> SubsetIndex:
        codes = codes.cpu()
        num, levels = codes.shape
        order, group, reps = (torch.empty(1 << levels, num, dtype=torch.long) for _ in range(3))
        starts = torch.full((1 << levels, num + 1), num, dtype=torch.long)
        for subset in range(1 << levels):
            slots = [lvl for lvl in range(levels) if subset >> lvl & 1]
            if slots:
                inverse = torch.unique(codes[:, slots], dim=0, return_inverse=True)[1]
            else:
                inverse = torch.zeros(num, dtype=torch.long)
            group[subset] = inverse
            order[subset] = torch.argsort(inverse, stable=True)  # ascending item index within a group
            counts = torch.bincount(inverse)
            starts[subset, 0] = 0
            starts[subset, 1 : len(counts) + 1] = torch.cumsum(counts, 0)
            reps[subset] = order[subset][starts[subset][inverse]]
        return cls(order, starts, group, reps)

    def to(self, device: torch.device) -> SubsetIndex:
        return SubsetIndex(*(t.to(device) for t in (self.order, self.starts, self.group, self.reps)))


def _rebuild_index(module: nn.Module, incompatible_keys: Any) -> None:
    """After load_state_dict the SID buffer may hold other codes: rebuild the subset index too."""
    module.index = SubsetIndex.build(module.sid_codes[1:]).to(module.sid_codes.device)


@register_sequential("mdgr")
class MDGR(Tiger):
    """TIGER's history encoder -> bidirectional denoiser unmasking the next item's SID in parallel."""

    paper: ClassVar[str] = "Mu, Deng et al., MDGR: Masked Diffusion Generative Recommendation, arXiv 2601.19501"
    Config: ClassVar[type[SequentialConfig]] = MDGRConfig

    def __init__(self, num_items: int, config: MDGRConfig, semantic_ids: SemanticIds) -> None:
        if semantic_ids.levels > _MAX_LEVELS:
            raise ValueError(f"MDGR supports semantic IDs of at most {_MAX_LEVELS} positions, got {semantic_ids.levels}")
        if config.steps > semantic_ids.levels:
            raise ValueError(f"steps ({config.steps}) exceeds the semantic-ID length ({semantic_ids.levels})")
        super().__init__(num_items, config, semantic_ids)
        self.config: MDGRConfig = config
        self.decoder_layers = nn.ModuleList(_DenoiserLayer(config) for _ in range(config.num_decoder_layers))
        self.mask_embedding = nn.Parameter(torch.randn(self.levels, config.d_model) * 0.02)
        self.register_buffer("slot_loss", torch.ones(self.levels))  # running per-slot loss (adaptive masking)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.index = SubsetIndex.build(self.sid_codes[1:])
        self.register_load_state_dict_post_hook(_rebuild_index)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> MDGR:
        """`.to(device)` moves the subset index with the buffers."""
        out = super()._apply(fn, *args, **kwargs)
        self.index = self.index.to(self.sid_codes.device)
        return out

    # --------------------------------------------------------------------------------- denoiser
    def denoise(self, codes: torch.Tensor, memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
                memory_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Partial IDs (B, N, L), -1 = [MASK] -> per-slot logits (B, N, L, max V) (-inf beyond V_l)."""
        known = codes >= 0
        tokens = (codes.clamp(min=0) + self.code_offsets + self.code_token_start) * known
        x = torch.where(known.unsqueeze(-1), self.token_embedding(tokens), self.mask_embedding)
        x = self.drop(x + self.decoder_positions.weight)
        for layer, kv in zip(self.decoder_layers, memory_kv, strict=True):
            x = layer(x, kv, memory_mask)
        return self.level_logits(self.decoder_norm(x))

    def decode(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("MDGR has no left-to-right decoder: see denoise and beam_search")

    decode_step = decode

    def token_logits(self, batch: SeqBatch) -> torch.Tensor:
        """Logits (B, L, max V) of every slot of the target's ID from the all-[MASK] state."""
        memory, mask = self.encode(batch)
        codes = torch.full((memory.shape[0], 1, self.levels), -1, dtype=torch.long, device=memory.device)
        return self.denoise(codes, self.memory_kv(memory), mask).squeeze(1)

    @torch.no_grad()
    def prefix_logits(self, batch: SeqBatch) -> torch.Tensor:
        """Logits (B, L, max V) of slot l given the target's true slots < l, the rest [MASK]: the
        denoiser read left to right, comparable with TIGER's teacher-forced `token_logits` (their
        sums of log-likelihoods are both exact joint likelihoods of the target's ID), so the two
        models' fit can be compared apart from how each decodes."""
        target = self.sid_codes[batch["target"]]  # (B, L)
        memory, mask = self.encode(batch)
        slot = torch.arange(self.levels, device=target.device)
        known = slot.unsqueeze(1) > slot.unsqueeze(0)  # pattern l (row) knows slots < l
        codes = target.unsqueeze(1).expand(-1, self.levels, -1).masked_fill(~known, -1)  # (B, L patterns, L)
        logits = self.denoise(codes, self.memory_kv(memory), mask)  # (B, L, L, V)
        return logits[:, slot, slot]

    # --------------------------------------------------------------------------------- training
    def _noise_levels(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        cfg = self.config
        u = torch.rand(shape, device=device).clamp(min=1e-6)
        step = int(self.train_steps)
        if cfg.noise == "curriculum" and step < cfg.curriculum_steps:
            a = 0.5 + 0.5 * step / cfg.curriculum_steps
            t = u ** (1.0 / a)  # Beta(a, 1): mass near 0 (few masked slots) while a < 1
        else:
            t = u
        full = torch.rand(shape, device=device) < cfg.full_mask_prob
        return torch.where(full, torch.ones_like(t), t)

    def sample_masks(self, shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask (*shape, L) bool, noise level t (*shape)) for training: m ~ Binomial(L, t) >= 1
        slots, chosen by Gumbel-top-m over the mixed uniform / loss-driven slot probabilities."""
        cfg, levels = self.config, self.levels
        t = self._noise_levels(shape, device)
        m = (torch.rand(*shape, levels, device=device) < t.unsqueeze(-1)).sum(-1).clamp(min=1)
        probs = (1 - cfg.adaptive_masking) / levels + cfg.adaptive_masking * torch.softmax(
            cfg.adaptive_temperature * self.slot_loss, 0)  # fmt: skip
        gumbel = -torch.log(-torch.log(torch.rand(*shape, levels, device=device).clamp(1e-9, 1 - 1e-9)))
        keys = probs.log() + gumbel
        rank = keys.argsort(-1, descending=True).argsort(-1)  # 0 = the slot drawn first
        return rank < m.unsqueeze(-1), t

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        """Cross-entropy on the masked slots of `mask_samples` noised copies of each target ID."""
        cfg = self.config
        rows = batch["target"] != PAD
        if not bool(rows.any()):
            return self.head.weight.sum() * 0.0
        batch = {name: value[rows] for name, value in batch.items() if value.shape[:1] == rows.shape}
        target = self.sid_codes[batch["target"]]  # (B, L)
        b = target.shape[0]
        masked, t = self.sample_masks((b, cfg.mask_samples), target.device)
        codes = target.unsqueeze(1).expand(b, cfg.mask_samples, self.levels).masked_fill(masked, -1)
        memory, mask = self.encode(batch)
        logits = self.denoise(codes, self.memory_kv(memory), mask)  # (B, S, L, V)
        labels = target.unsqueeze(1).expand_as(codes)
        token_loss = F.cross_entropy(logits.flatten(0, 2), labels.flatten(), reduction="none").view_as(codes.float())
        token_loss = token_loss * masked
        if cfg.weighting == "mean_masked":
            per_pattern = token_loss.sum(-1) / masked.sum(-1)
        else:
            per_pattern = token_loss.sum(-1) / (t * self.levels)
        if self.training:
            with torch.no_grad():
                count = masked.sum((0, 1)).clamp(min=1)
                seen = masked.any(0).any(0)
                mean = token_loss.sum((0, 1)) / count
                self.slot_loss.copy_(torch.where(seen, 0.9 * self.slot_loss + 0.1 * mean, self.slot_loss))
                self.train_steps += 1
        return per_pattern.mean()

    # --------------------------------------------------------------------------------- decoding
    def _confidence(self, log_probs: torch.Tensor, allowed: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, N, L) how sure the model is of each masked slot (known slots -inf)."""
        if self.config.order == "left_to_right":
            conf = -torch.arange(self.levels, device=log_probs.device, dtype=log_probs.dtype).expand_as(known)
        elif self.config.confidence == "max_prob":
            conf = log_probs.masked_fill(~allowed, float("-inf")).amax(-1)
        else:
            restricted = torch.log_softmax(log_probs.masked_fill(~allowed, float("-inf")), -1)
            conf = (restricted.exp() * restricted.nan_to_num(neginf=0.0)).sum(-1)  # -entropy
        if self.config.digit_last:  # below every masked code slot, above the known ones (-inf)
            conf = torch.cat([conf[..., :-1], conf[..., -1:] - 1e9], -1)
        return conf.masked_fill(known, float("-inf"))

    def _expand_root(self, log_probs: torch.Tensor, take: int, beam: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The first pass, densely: from the all-[MASK] state every item is consistent, so the
        children are scored as a (B, I) matrix (the pair enumeration's result, without its sort)."""
        item_codes, index = self.sid_codes[1:], self.index
        b, levels = log_probs.shape[0], self.levels
        slot = torch.arange(levels, device=log_probs.device)
        allowed = torch.zeros(levels, log_probs.shape[-1], dtype=torch.bool, device=log_probs.device)
        allowed[slot, item_codes] = True  # codes some item has at each slot
        known = torch.zeros(b, levels, dtype=torch.bool, device=log_probs.device)
        conf = self._confidence(log_probs, allowed.expand_as(log_probs), known)
        chosen = torch.zeros_like(known).scatter_(1, conf.topk(take, dim=1).indices, True)
        gain = sum(log_probs[:, level, item_codes[:, level]] * chosen[:, level : level + 1] for level in range(levels))
        subset = (chosen.long() * (1 << slot)).sum(1)  # (B,)
        keep = index.reps[subset] == torch.arange(item_codes.shape[0], device=log_probs.device)
        scores, rep = gain.masked_fill(~keep, float("-inf")).topk(min(beam, item_codes.shape[0]), dim=1)
        return scores, subset.unsqueeze(1).expand_as(rep).clone(), rep

    def _merge_states(self, row: torch.Tensor, pair_subset: torch.Tensor, item: torch.Tensor, child: torch.Tensor,
                      rows: int, beam: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """A pass's children as states (row, known slots, representative item): a state reached by two
        beams keeps its best path, then each row's `beam` best states, best first (ties: lower state
        key first) -> (scores, subset, rep), each (rows, width <= beam)."""
        device, num, subsets = child.device, self.sid_codes.shape[0] - 1, 1 << self.levels
        states, inverse = torch.unique((row * subsets + pair_subset) * num + item, return_inverse=True)
        best = torch.full((len(states),), float("-inf"), device=device)
        best = best.scatter_reduce(0, inverse, child, "amax")  # a state reached twice keeps its best path
        by_score = torch.argsort(best, descending=True, stable=True)
        state_row = torch.div(states, subsets * num, rounding_mode="floor")
        ranked = by_score[torch.argsort(state_row[by_score], stable=True)]  # by row, best first
        ranked_row = state_row[ranked]
        rank = torch.arange(len(ranked), device=device) - torch.searchsorted(ranked_row, ranked_row)
        top = rank < beam
        ranked, ranked_row, rank = ranked[top], ranked_row[top], rank[top]
        width = int(rank.max()) + 1
        scores = torch.full((rows, width), float("-inf"), device=device)
        scores[ranked_row, rank] = best[ranked]
        subset = torch.zeros(rows, width, dtype=torch.long, device=device)
        subset[ranked_row, rank] = torch.div(states[ranked], num, rounding_mode="floor") % subsets
        rep = torch.zeros(rows, width, dtype=torch.long, device=device)
        rep[ranked_row, rank] = states[ranked] % num
        return scores, subset, rep

    def _merge_final(self, row: torch.Tensor, item: torch.Tensor, child: torch.Tensor, rows: int, beam: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """`_merge_states` for the last pass, whose children are whole items (a state is (row, item)):
        a dense (rows, I) max and top-k instead of the unique and sorts over every pair, which cost
        half of a warm-up decode when a beam is consistent with thousands of items (width = beam)."""
        num = self.sid_codes.shape[0] - 1
        dense = torch.full((rows * num,), float("-inf"), device=child.device)
        dense = dense.scatter_reduce(0, row * num + item, child, "amax").view(rows, num)
        scores, rep = dense.topk(min(beam, num), dim=1)
        subset = torch.full_like(rep, (1 << self.levels) - 1)
        return scores, subset, rep

    def _beam_codes(self, rep: torch.Tensor, subset: torch.Tensor, scores: torch.Tensor, bits: torch.Tensor
                    ) -> torch.Tensor:  # fmt: skip
        """Partial IDs (B, N, L) of the beams (-1 = masked or an empty beam)."""
        live = torch.isfinite(scores)
        if not bool(live[:, 0].all()):
            raise RuntimeError("a row lost every beam (no consistent item): the subset index is broken")
        return self.sid_codes[1:][rep].masked_fill(((subset.unsqueeze(-1) & bits) == 0) | ~live.unsqueeze(-1), -1)

    @torch.no_grad()
    def beam_search(
        self, batch: SeqBatch, beam_size: int | None = None, steps: int | None = None,
        trace: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Order-free, trie-constrained parallel decoding: (codes (B, N, L), items (B, N), scores
        (B, N)), best first; item 0 / -inf marks an empty beam. `trace` (a list) receives the
        partial IDs (B, N, L) (-1 = masked) held after every pass.

        A beam is (known slots P, representative item r); the items consistent with it are one
        group of the subset index, so each pass enumerates exactly the (beam, consistent item) pairs."""
        beam = beam_size or self.config.beam_size
        counts = unmask_counts(self.levels, steps or self.config.steps, self.config.schedule)
        memory, mask = self.encode(batch)
        kv = self.memory_kv(memory)
        b, device, levels = memory.shape[0], memory.device, self.levels
        item_codes, index = self.sid_codes[1:], self.index
        num = item_codes.shape[0]
        bits = 1 << torch.arange(levels, device=device)
        slot = torch.arange(levels, device=device)
        subset = torch.zeros(b, 1, dtype=torch.long, device=device)  # nothing known yet
        rep = torch.zeros(b, 1, dtype=torch.long, device=device)
        scores = torch.zeros(b, 1, device=device)
        codes = torch.full((b, 1, levels), -1, dtype=torch.long, device=device)
        for take in counts:
            n = codes.shape[1]
            known = (codes >= 0).flatten(0, 1)  # (BN, L)
            log_probs = torch.log_softmax(self.denoise(codes, kv, mask), -1).flatten(0, 1)  # (BN, L, V)
            if n == 1 and not bool(known.any()):  # the root: every item is a child, no merging needed
                scores, subset, rep = self._expand_root(log_probs, take, beam)
            else:  # enumerate the (beam, consistent item) pairs
                flat_subset, flat_rep = subset.flatten(), rep.flatten()
                group = index.group[flat_subset, flat_rep]
                start = index.starts[flat_subset, group]
                count = (index.starts[flat_subset, group + 1] - start) * torch.isfinite(scores).flatten()
                owner = torch.repeat_interleave(torch.arange(b * n, device=device), count)  # pair -> beam
                within = torch.arange(len(owner), device=device) - torch.repeat_interleave(count.cumsum(0) - count, count)
                # flat gathers (one index tensor) are several times faster than 2-D advanced indexing here
                item = index.order.view(-1)[(flat_subset * num + start)[owner] + within]  # the beams' consistent items
                pair_codes = item_codes[item]  # (pairs, L)
                # every beam knows the same number of slots, so either all finish in this pass or none
                final = take == levels - int(known[0].sum())
                if final:  # every masked slot is unmasked: no choice to make
                    chosen = ~known
                else:
                    allowed = torch.zeros_like(log_probs, dtype=torch.bool)
                    allowed[owner.unsqueeze(1), slot, pair_codes] = True  # the codes each slot may still take
                    conf = self._confidence(log_probs, allowed, known)
                    chosen = torch.zeros_like(known).scatter_(1, conf.topk(take, dim=1).indices, True)  # each beam's own
                vocab = log_probs.shape[-1]
                flat = (owner.unsqueeze(1) * levels + slot) * vocab + pair_codes
                gain = (log_probs.reshape(-1)[flat] * chosen[owner]).sum(1)
                if final:  # every child is a whole item, all distinct
                    child = scores.flatten()[owner] + gain
                    scores, subset, rep = self._merge_final(torch.div(owner, n, rounding_mode="floor"), item, child, b, beam)
                else:
                    pair_subset = ((known | chosen).long() * bits).sum(1)[owner]  # known slots after this pass
                    keep = index.reps.view(-1)[pair_subset * num + item] == item  # one child per partial ID of each beam
                    owner, item, pair_subset = owner[keep], item[keep], pair_subset[keep]
                    child = scores.flatten()[owner] + gain[keep]
                    row = torch.div(owner, n, rounding_mode="floor")
                    scores, subset, rep = self._merge_states(row, pair_subset, item, child, b, beam)
            codes = self._beam_codes(rep, subset, scores, bits)
            if trace is not None:
                trace.append(codes.clone())
        items = torch.where(torch.isfinite(scores), rep + 1, torch.zeros_like(rep))
        return codes, items, scores

    @torch.no_grad()
    def item_scores(self, batch: SeqBatch) -> torch.Tensor:
        """(B, num_items + 1) one-pass factorised scores: sum over slots of the all-[MASK] pass's
        log-probabilities of the item's codes (padding -inf); the fill-in for short beams."""
        log_probs = torch.log_softmax(self.token_logits(batch), -1)  # (B, L, V)
        codes = self.sid_codes[1:]
        scores = sum(log_probs[:, level, codes[:, level]] for level in range(self.levels))
        return F.pad(scores, (1, 0), value=float("-inf"))

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int, beam_size: int | None = None, steps: int | None = None
                  ) -> torch.Tensor:  # fmt: skip
        """(B, k) distinct items by diffusion-decoding score; beam = max(k, beam_size or config)."""
        if k > self.num_items:
            raise ValueError(f"cannot rank {k} distinct items out of {self.num_items}")
        _, items, _ = self.beam_search(batch, max(k, beam_size or self.config.beam_size), steps)
        items = items[:, :k]
        if items.shape[1] < k or bool((items == PAD).any()):
            fill = self.item_scores(batch).scatter(1, items, float("-inf"))
            fill[:, PAD] = float("-inf")
            extra = fill.topk(k, dim=1).indices
            items = torch.stack([row[row != PAD][:k] for row in torch.cat([items, extra], 1)])
        return items

"""GRC: generation -> reflection -> correction decoding of semantic IDs, on top of TIGER.

Paper: Xing et al., "Learning to Reflect and Correct: Generation-Reflection-Correction for
Generative Recommendation", arXiv 2602.23639 (2026); our spec `grc.md`. The paper's (from its
abstract and summaries): single-pass SID decoding lets an early wrong token propagate, so the
decoder goes on after a draft ID to emit a reflection (which tokens of the draft are wrong) and a
corrected ID; a supervised reflection-correction template, then GRPO over the whole trajectory
with token- and trajectory-level rewards, and entropy-guided reflection scheduling (EGRS) that
spends the correction budget only on uncertain beams.

Ours (the template, rewards and weights are the spec's choices, marked "ours" there):
- Decoder sequence, after TIGER's encoder over [user token, history SIDs] (3L + 3 inputs):
  ``BOS d_1..d_L <REFLECT> f_1..f_L f_item <CORRECT> y_1..y_L``; f_l in {OK, ERR} says whether
  draft token l differs from the target's, f_item in {HIT, MISS} whether the draft is the target;
  y is the corrected ID. The draft part is exactly TIGER's decoder (same embeddings, positions,
  per-level head), so TIGER's trie-constrained beam search makes the drafts. Six new token
  embeddings (REFLECT, CORRECT, OK, ERR, HIT, MISS), 2L + 3 new positions, one 4-way reflection
  head (OK/ERR for token flags, HIT/MISS for the item flag); corrected tokens use the code head.
- Phase `sft` (the model trains from scratch through the one engine): TIGER's teacher-forced
  token CE on the target (stage A folded in, weight `draft_weight`) + CE of the reflection
  (`reflection_weight`) and the correction (`correction_weight`) given a draft that is sampled
  from the current model (trie-constrained, temperature `sample_temperature`, no gradient) or,
  with probability `correct_draft_share`, the target itself (so both HIT and MISS are seen).
- Phase `grpo` (a short fine-tuning run of a trained `sft` model, again through the engine):
  per history, `group_size` trajectories sampled from the policy (eval mode, no gradient; every
  code token trie-constrained so every draft and every correction is a valid item); reward
  `trajectory_rewards` (token-level prefix match of the final ID, hit, improvement over the draft,
  reflection accuracy, invalid-ID penalty); group-relative advantages `group_advantages`;
  PPO-clip objective over every trajectory token (`clip_eps`) minus `kl_coef` x the k3 estimate
  of KL(pi_theta || pi_ref), pi_ref = a frozen copy of the weights at the first GRPO step. One
  optimiser step per sampled group (the engine's step), so the ratio differs from 1 only
  through dropout. `group: beam` (ours) makes the group's drafts the top beams of the beam search
  instead of samples (reflection and correction still sampled).
- Inference with EGRS: TIGER's beam search makes B drafts; each beam's uncertainty is the mean
  over levels of the entropy of the level's (unconstrained) token distribution along the beam;
  the ceil(`reflect_share` x B) most uncertain beams (or those above `entropy_threshold`) get a
  greedy reflection and a greedy trie-constrained correction. A reflected beam yields its draft
  with score s_d + log P(HIT) and its correction with s_d + log P(MISS) + log P(correction)
  (the trajectory's log-probability; a correction equal to the draft keeps the better of the
  two); other beams keep s_d. Candidates are merged, deduplicated by item and ranked by score.
  `merge: keep_drafts` leaves every draft at s_d instead (no draft loses score; a correction
  enters where it outscores a draft).
  `reflect_share = 0` is TIGER's decoding, 1 reflects every beam (the no-EGRS ablation).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import PAD, SemanticIds, SeqBatch, SequentialConfig
from agenticrs.gr.models.tiger import BOS, Tiger, TigerConfig
from agenticrs.gr.zoo import register_sequential

# GRC's own tokens (rows of `grc_embedding`)
REFLECT, CORRECT, OK, ERR, HIT, MISS = range(6)
KV = list[tuple[torch.Tensor, torch.Tensor]]
SEGMENTS = ("draft", "reflection", "correction")  # a trajectory's token segments, in order


class GrcConfig(TigerConfig):
    """TIGER's settings plus the template, GRPO and EGRS settings (spec §3-4; values ours)."""

    phase: Literal["sft", "grpo"] = "sft"
    # supervised template
    draft_weight: float = Field(1.0, ge=0.0)
    reflection_weight: float = Field(1.0, ge=0.0)
    correction_weight: float = Field(1.0, ge=0.0)
    correct_draft_share: float = Field(0.5, ge=0.0, le=1.0)
    sample_temperature: float = Field(1.0, gt=0.0)
    # GRPO
    group_size: int = Field(8, ge=2)
    clip_eps: float = Field(0.2, gt=0.0)
    kl_coef: float = Field(0.02, ge=0.0)
    reward_token: float = 1.0  # weight of Σ_l (1/L)·1[final prefix of length l correct]
    reward_hit: float = 1.0  # α
    reward_improve: float = 0.5  # β: 1[final hit] - 1[draft hit]
    reward_reflection: float = 0.2  # γ: accuracy of the reflection tokens
    invalid_penalty: float = 0.5
    # How GRPO assigns credit (ours; measured on sim-small, docs/gr_methods.md "Why GRPO lowered
    # GRC"): the spec read literally (`credit: trajectory`, every segment in `policy_segments`,
    # dropout on) lowered validation NDCG@10 within 20 steps at any lr, and the policy gradient of
    # the reflection tokens alone did most of it. Defaults: each segment credited with its own
    # reward (`segment_rewards`), the reflection left to its supervised training (or `sft_anchor`),
    # dropout off so the sampled policy is the one scored.
    credit: Literal["trajectory", "segment"] = "segment"
    policy_segments: list[Literal["draft", "reflection", "correction"]] = Field(
        default_factory=lambda: ["draft", "correction"], min_length=1,
        description="segments whose tokens the policy gradient trains (the rest only through sft_anchor)",
    )
    sft_anchor: float = Field(0.0, ge=0.0, description="weight of the supervised template loss kept during GRPO")
    rl_dropout: bool = Field(False, description="dropout on in GRPO's log-probs (off: the ratio is exactly 1 per step)")
    # Where a group's drafts come from (ours): "sample" draws `group_size` drafts from the policy
    # (the spec); "beam" takes the top `group_size` beams of the trie-constrained beam search, the
    # list the recommendation is made of, and samples each one's reflection and correction. The
    # draft tokens' gradient is then Σ_i A_i ∇log π(beam_i): the beams matching the target more
    # than the group's mean rise, the others fall, so the reward acts on the ranking the metric
    # reads rather than on one random sample. Not an unbiased policy gradient (beams are not
    # samples), and the k3 KL term is then a penalty on the beams, not a KL estimate. On Beauty it
    # removes most of what sampled groups cost but does not beat continuing the supervised
    # template (docs/gr_methods.md, "Beam groups, and the control GRPO has to beat").
    group: Literal["sample", "beam"] = "sample"
    # EGRS
    reflect_share: float = Field(0.5, ge=0.0, le=1.0)
    entropy_threshold: float | None = Field(None, ge=0.0, description="reflect beams above this entropy instead")
    # "trajectory": a reflected draft scores s_d + log P(HIT), its correction s_d + log P(MISS) + log P(y);
    # "keep_drafts": drafts keep s_d (no draft loses score), a correction enters where it outscores a draft
    merge: Literal["trajectory", "keep_drafts"] = "trajectory"


# --------------------------------------------------------------------------------- rewards


def true_flags(draft: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., L) draft and target codes -> (..., L + 1) flags: ERR (1) where a token differs, then
    MISS (1) when any does; OK/HIT = 0."""
    wrong = (draft != target).long()
    return torch.cat([wrong, wrong.amax(-1, keepdim=True)], dim=-1)


def trajectory_rewards(
    draft: torch.Tensor,
    reflection: torch.Tensor,
    final: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    config: GrcConfig,
) -> torch.Tensor:
    """Reward of each trajectory (spec §3):
    r = w·Σ_l (1/L)·1[final_{<=l} = target_{<=l}] + α·hit + β·(hit − draft hit)
        + γ·mean(reflection = true flags) − penalty·1[final not a valid ID].

    draft, final, target: (..., L) codes; reflection: (..., L + 1) flags as `true_flags`;
    valid: (...,) bool."""
    prefix_ok = (final == target).long().cumprod(-1).float()  # 1 while the prefix matches
    token = prefix_ok.mean(-1)
    hit = prefix_ok[..., -1]
    draft_hit = (draft == target).all(-1).float()
    accuracy = (reflection == true_flags(draft, target)).float().mean(-1)
    return (
        config.reward_token * token
        + config.reward_hit * hit
        + config.reward_improve * (hit - draft_hit)
        + config.reward_reflection * accuracy
        - config.invalid_penalty * (~valid).float()
    )


def segment_rewards(
    draft: torch.Tensor,
    reflection: torch.Tensor,
    final: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    config: GrcConfig,
) -> torch.Tensor:
    """(..., 3) rewards of a trajectory's three segments, for `credit: segment` (ours):
    draft   w·Σ_l (1/L)·1[draft_{<=l} = target_{<=l}] + α·draft hit,
    reflection  mean(reflection = true flags),
    correction  w·Σ_l (1/L)·1[final_{<=l} = target_{<=l}] + α·hit + β·(hit − draft hit) − penalty·1[invalid].

    Why: under the trajectory reward a draft token's credit is dominated by what the correction and
    the reflection did after it: the improvement term pays a missed draft that was corrected, and
    where nothing hits, group-normalised reflection-accuracy differences (a wrong-everywhere draft
    is easier to flag correctly than a half-right one) hand the draft tokens advantages of ±1 that
    say nothing about the draft. The beam search ranks by the draft alone."""
    draft_prefix = (draft == target).long().cumprod(-1).float()
    final_prefix = (final == target).long().cumprod(-1).float()
    draft_hit, hit = draft_prefix[..., -1], final_prefix[..., -1]
    accuracy = (reflection == true_flags(draft, target)).float().mean(-1)
    return torch.stack([
        config.reward_token * draft_prefix.mean(-1) + config.reward_hit * draft_hit,
        accuracy,
        config.reward_token * final_prefix.mean(-1) + config.reward_hit * hit
        + config.reward_improve * (hit - draft_hit) - config.invalid_penalty * (~valid).float(),
    ], dim=-1)  # fmt: skip


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's group-relative advantage over the last axis (the group): (r − mean) / (std + eps),
    population std; a group whose rewards are all equal gets 0."""
    mean = rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


def clipped_objective(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """Per-token PPO-clip surrogate min(ρA, clip(ρ, 1 ± ε)A), ρ = exp(logp − old_logp)."""
    ratio = torch.exp(logp - old_logp)
    return torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ || π_ref) on samples of π_θ: exp(d) − d − 1, d = ref − logp (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


@register_sequential("grc")
class Grc(Tiger):
    """TIGER's encoder-decoder extended with the reflection/correction template, GRPO and EGRS."""

    name: ClassVar[str] = "grc"
    paper: ClassVar[str] = (
        "Xing et al., Learning to Reflect and Correct: Generation-Reflection-Correction for Generative "
        "Recommendation, arXiv 2602.23639"
    )
    Config: ClassVar[type[SequentialConfig]] = GrcConfig
    config: GrcConfig

    def __init__(self, num_items: int, config: GrcConfig, semantic_ids: SemanticIds) -> None:
        super().__init__(num_items, config, semantic_ids)
        d, L = config.d_model, self.levels
        self.grc_embedding = nn.Embedding(6, d)
        self.template_positions = nn.Embedding(2 * L + 3, d)  # positions L .. 3L + 2 (TIGER's cover 0 .. L-1)
        self.reflect_head = nn.Linear(d, 4)  # [OK, ERR] for token flags, [HIT, MISS] for the item flag
        for emb in (self.grc_embedding, self.template_positions):
            nn.init.normal_(emb.weight, std=0.02)
        self.__dict__["_reference"] = None  # π_ref of GRPO: outside the module tree (never saved)
        if config.group == "beam" and config.group_size > num_items:
            raise ValueError(f"group: beam needs group_size ({config.group_size}) <= the number of items ({num_items})")

    # -------------------------------------------------------------------------------- template
    @property
    def template_length(self) -> int:
        return 3 * self.levels + 3

    def _position(self, p: int) -> torch.Tensor:
        L = self.levels
        return self.decoder_positions.weight[p] if p < L else self.template_positions.weight[p - L]

    def _code_embedding(self, level: int, codes: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(codes + self.code_offsets[level] + self.code_token_start)

    def embed_at(self, p: int, value: torch.Tensor) -> torch.Tensor:
        """Input embedding (..., d) of template position p holding `value` (a code, a flag 0/1,
        ignored at BOS/REFLECT/CORRECT), position included."""
        L = self.levels
        if p == 0:
            x = self.token_embedding(torch.full_like(value, BOS))
        elif p <= L:  # draft token d_p
            x = self._code_embedding(p - 1, value)
        elif p == L + 1:
            x = self.grc_embedding(torch.full_like(value, REFLECT))
        elif p <= 2 * L + 1:  # token flag
            x = self.grc_embedding(value + OK)
        elif p == 2 * L + 2:  # item flag
            x = self.grc_embedding(value + HIT)
        elif p == 2 * L + 3:
            x = self.grc_embedding(torch.full_like(value, CORRECT))
        else:  # corrected token y_{p - 2L - 3}
            x = self._code_embedding(p - 2 * L - 4, value)
        return x + self._position(p)

    def template_values(self, draft: torch.Tensor, flags: torch.Tensor, correction: torch.Tensor) -> list[torch.Tensor]:
        """The value at each input position (3L + 3 tensors (B, N)) of a full trajectory."""
        zero = torch.zeros_like(draft[..., 0])
        L = self.levels
        return [zero, *draft.unbind(-1), zero, *flags.unbind(-1), zero, *correction[..., : L - 1].unbind(-1)]

    def template_forward(
        self, kv: KV, mask: torch.Tensor, draft: torch.Tensor, flags: torch.Tensor, correction: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over whole trajectories (B, N, ·) -> logits of the draft codes
        (B, N, L, maxV), token flags (B, N, L, 2), item flag (B, N, 2), corrected codes (B, N, L, maxV)."""
        L = self.levels
        values = self.template_values(draft, flags, correction)
        x = self.drop(torch.stack([self.embed_at(p, v) for p, v in enumerate(values)], dim=2))
        for layer, layer_kv in zip(self.decoder_layers, kv, strict=True):
            x, _ = layer(x, layer_kv, mask)
        states = self.decoder_norm(x)
        draft_logits = self.level_logits(states[:, :, :L])
        reflect = self.reflect_head(states[:, :, L + 1 : 2 * L + 2])  # predicts f_1 .. f_L, f_item
        corr_logits = self.level_logits(states[:, :, 2 * L + 3 :])
        return draft_logits, reflect[:, :, :L, :2], reflect[:, :, L, 2:], corr_logits

    def _constrained_logp(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (..., L) of `codes` under each level's distribution renormalised over
        the trie's allowed continuations of the code's own prefix (what the sampler draws from)."""
        out = []
        for level in range(self.levels):
            size = self.vocab_sizes[level]
            allowed = self.trie.allowed_next(codes[..., :level])
            masked = logits[..., level, :size].masked_fill(~allowed, float("-inf"))
            out.append(torch.log_softmax(masked, -1).gather(-1, codes[..., level : level + 1]).squeeze(-1))
        return torch.stack(out, dim=-1)

    # -------------------------------------------------------------------------------- decoding
    def _step(self, x: torch.Tensor, kv: KV, mask: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, KV]:
        """One new input (B, N, d) -> its state (B, N, d) and the grown self-attention cache."""
        x = x.unsqueeze(2)
        cache = []
        for i, (layer, layer_kv) in enumerate(zip(self.decoder_layers, kv, strict=True)):
            x, layer_cache = layer(x, layer_kv, mask, None if past is None else past[i])
            cache.append(layer_cache)
        return self.decoder_norm(x).squeeze(2), cache

    def _choose(self, logits: torch.Tensor, greedy: bool, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick a token from (B, N, V) logits (-inf = forbidden): (choice, its log-prob at temperature 1)."""
        logp = torch.log_softmax(logits, -1)
        if greedy:
            choice = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1)
            choice = torch.multinomial(probs.flatten(0, -2), 1).view(probs.shape[:-1])
        return choice, logp.gather(-1, choice.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def rollout(
        self, kv: KV, mask: torch.Tensor, n: int, greedy: bool = False, draft: torch.Tensor | None = None,
        temperature: float = 1.0, draft_only: bool = False,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """n trajectories per row (B, n, ·): draft (given or decoded), reflection flags, correction,
        and per-token log-probs (code tokens under trie-renormalised distributions). Every code
        token is trie-constrained, so every draft and correction is a valid item's ID."""
        b = mask.shape[0]
        L = self.levels
        device = mask.device
        given = draft is not None
        draft = draft.clone() if given else torch.zeros(b, n, L, dtype=torch.long, device=device)
        zero = torch.zeros(b, n, dtype=torch.long, device=device)
        state, past = self._step(self.embed_at(0, zero), kv, mask, None)
        logps = []
        for level in range(L):
            size = self.vocab_sizes[level]
            logits = self.level_logits(state.unsqueeze(2), level).squeeze(2)[..., :size]
            logits = logits.masked_fill(~self.trie.allowed_next(draft[..., :level]), float("-inf"))
            if given:
                logps.append(torch.log_softmax(logits, -1).gather(-1, draft[..., level : level + 1]).squeeze(-1))
            else:
                draft[..., level], logp = self._choose(logits, greedy, temperature)
                logps.append(logp)
            if draft_only and level == L - 1:
                return {"draft": draft, "logp": torch.stack(logps, -1)}
            state, past = self._step(self.embed_at(level + 1, draft[..., level]), kv, mask, past)
        state, past = self._step(self.embed_at(L + 1, zero), kv, mask, past)  # <REFLECT>
        flags = torch.zeros(b, n, L + 1, dtype=torch.long, device=device)
        for i in range(L + 1):
            head = self.reflect_head(state)
            if i == L:
                item_logp = torch.log_softmax(head[..., 2:], -1)  # [log P(HIT), log P(MISS)]
            flags[..., i], logp = self._choose(head[..., :2] if i < L else head[..., 2:], greedy, 1.0)
            logps.append(logp)
            state, past = self._step(self.embed_at(L + 2 + i, flags[..., i]), kv, mask, past)
        state, past = self._step(self.embed_at(2 * L + 3, zero), kv, mask, past)  # <CORRECT>
        correction = torch.zeros_like(draft)
        for level in range(L):
            size = self.vocab_sizes[level]
            logits = self.level_logits(state.unsqueeze(2), level).squeeze(2)[..., :size]
            logits = logits.masked_fill(~self.trie.allowed_next(correction[..., :level]), float("-inf"))
            correction[..., level], logp = self._choose(logits, greedy, temperature)
            logps.append(logp)
            if level + 1 < L:
                state, past = self._step(self.embed_at(2 * L + 4 + level, correction[..., level]), kv, mask, past)
        return {"draft": draft, "flags": flags, "correction": correction, "logp": torch.stack(logps, -1),
                "item_logp": item_logp}

    # -------------------------------------------------------------------------------- training
    def loss(self, batch: SeqBatch) -> torch.Tensor:
        return self.grpo_loss(batch) if self.config.phase == "grpo" else self.sft_loss(batch)

    @contextlib.contextmanager
    def _behaviour_policy(self) -> Iterator[None]:
        """Dropout off while the behaviour policy decodes, training mode restored after."""
        was = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)

    def _eval_rollout(self, kv: KV, mask: torch.Tensor, **kwargs: object) -> dict[str, torch.Tensor]:
        """`rollout` of the behaviour policy (dropout off)."""
        with self._behaviour_policy():
            return self.rollout(kv, mask, **kwargs)  # type: ignore[arg-type]

    def sft_loss(self, batch: SeqBatch) -> torch.Tensor:
        """Stage A's token CE on the target + CE of the reflection and the correction given a
        sampled (or, with probability `correct_draft_share`, correct) draft."""
        cfg = self.config
        target = batch["target"]
        keep = target != PAD
        target_codes = self.sid_codes[target]  # (B, L)
        memory, mask = self.encode(batch)
        kv = self.memory_kv(memory)
        states = self.decode(target_codes[:, None, :-1], kv, mask)
        draft_ce = F.cross_entropy(self.level_logits(states).squeeze(1)[keep].flatten(0, 1),
                                   target_codes[keep].flatten())  # fmt: skip
        sampled = self._eval_rollout(
            [(k.detach(), v.detach()) for k, v in kv], mask, n=1, draft_only=True, temperature=cfg.sample_temperature
        )["draft"].squeeze(1)
        use_target = torch.rand(len(target), device=target.device) < cfg.correct_draft_share
        draft = torch.where(use_target.unsqueeze(-1), target_codes, sampled)
        flags = true_flags(draft, target_codes)
        _, flag_logits, item_logits, corr_logits = self.template_forward(
            kv, mask, draft[:, None], flags[:, None], target_codes[:, None]
        )
        reflect_logits = torch.cat([flag_logits.squeeze(1), item_logits], dim=1)  # (B, L + 1, 2)
        reflect_ce = F.cross_entropy(reflect_logits[keep].flatten(0, 1), flags[keep].flatten())
        corr_ce = F.cross_entropy(corr_logits.squeeze(1)[keep].flatten(0, 1), target_codes[keep].flatten())
        return cfg.draft_weight * draft_ce + cfg.reflection_weight * reflect_ce + cfg.correction_weight * corr_ce

    def _trajectory_logp(self, model: Grc, kv: KV, mask: torch.Tensor, traj: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, G, 3L + 1) log-probs of a trajectory's sampled tokens under `model` (teacher-forced)."""
        draft_logits, flag_logits, item_logits, corr_logits = model.template_forward(
            kv, mask, traj["draft"], traj["flags"], traj["correction"]
        )
        flags = traj["flags"]
        L = self.levels
        flag_lp = torch.log_softmax(flag_logits, -1).gather(-1, flags[..., :L, None]).squeeze(-1)
        item_lp = torch.log_softmax(item_logits, -1).gather(-1, flags[..., L:]).squeeze(-1)
        return torch.cat([
            self._constrained_logp(draft_logits, traj["draft"]), flag_lp, item_lp.unsqueeze(-1),
            self._constrained_logp(corr_logits, traj["correction"]),
        ], dim=-1)  # fmt: skip

    def start_fine_tuning(self) -> None:
        """A GRPO run started from an SFT run freezes π_ref from the loaded weights now (a resumed
        run then compares with them, not with its checkpoint's)."""
        if self.config.phase == "grpo":
            self.reference()

    def reference(self) -> Grc:
        """π_ref: a frozen copy of the weights at the first GRPO step (made then)."""
        if self.__dict__["_reference"] is None:
            ref = copy.deepcopy(self).eval()
            ref.__dict__["_reference"] = None
            for p in ref.parameters():
                p.requires_grad_(False)
            self.__dict__["_reference"] = ref
        return self.__dict__["_reference"]

    def grpo_loss(self, batch: SeqBatch) -> torch.Tensor:
        """−mean over trajectory tokens of [PPO-clip(ρ, A) − kl_coef·KL_k3(π_θ || π_ref)],
        A = group-relative advantage of each of `group_size` sampled trajectories per history
        (`credit: segment`: of each segment, see `segment_rewards`)."""
        cfg = self.config
        was = self.training
        if not cfg.rl_dropout:  # the behaviour policy (rollout, eval mode) is then exactly π_θ
            self.eval()
        try:
            loss = self._grpo_objective(batch)
        finally:
            self.train(was)
        if cfg.sft_anchor > 0:  # the supervised template on the target keeps the shared layers anchored
            loss = loss + cfg.sft_anchor * self.sft_loss(batch)
        return loss

    def _per_token(self, per_segment: torch.Tensor) -> torch.Tensor:
        """(..., 3) values of the draft, reflection and correction -> (..., 3L + 1), one per token."""
        L = self.levels
        return per_segment.repeat_interleave(torch.tensor([L, L + 1, L], device=per_segment.device), dim=-1)

    def sample_groups(self, batch: SeqBatch, kv: KV, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """`group_size` trajectories per history from the behaviour policy (`group: beam`: the top
        beams as drafts, their reflections and corrections sampled), with their
        target codes (B, 1, L), trajectory rewards (B, G) and the rewards advantages are normalised
        from (`credited`: (B, G, 3) per segment under `credit: segment`, else (B, G, 1))."""
        cfg = self.config
        target_codes = self.sid_codes[batch["target"]].unsqueeze(1)  # (B, 1, L)
        kv = [(k.detach(), v.detach()) for k, v in kv]
        with self._behaviour_policy():  # `group: beam`: the top beams, as the recommendation would rank them
            drafts = self.beam_search_from(kv, mask, cfg.group_size)[0] if cfg.group == "beam" else None
            traj = self.rollout(kv, mask, n=cfg.group_size, draft=drafts)
        valid = self.trie.contains(traj["correction"])
        parts = (traj["draft"], traj["flags"], traj["correction"], target_codes, valid, cfg)
        rewards = trajectory_rewards(*parts)
        credited = segment_rewards(*parts) if cfg.credit == "segment" else rewards.unsqueeze(-1)
        return {**traj, "target_codes": target_codes, "rewards": rewards, "credited": credited}

    @torch.no_grad()
    def probe_rollouts(self, batch: SeqBatch) -> None:
        """Sample groups on `batch` (e.g. held-out histories) as a GRPO step would and add them to
        `training_stats`, without a gradient: is a rise of the trained reward seen off the training set?"""
        batch = {name: value[batch["target"] != PAD] for name, value in batch.items()}
        memory, mask = self.encode(batch)
        groups = self.sample_groups(batch, self.memory_kv(memory), mask)
        self._note_rollouts(groups)

    def _grpo_objective(self, batch: SeqBatch) -> torch.Tensor:
        cfg = self.config
        ref = self.reference()
        keep = batch["target"] != PAD
        batch = {name: value[keep] for name, value in batch.items()}
        memory, mask = self.encode(batch)
        kv = self.memory_kv(memory)
        traj = self.sample_groups(batch, kv, mask)
        rewards, credited = traj["rewards"], traj["credited"]
        if cfg.credit == "segment":
            per_segment = group_advantages(credited.transpose(1, 2)).transpose(1, 2)  # (B, G, 3), over G
            advantages = self._per_token(per_segment)
        else:
            advantages = group_advantages(rewards).unsqueeze(-1)  # (B, G, 1)
        logp = self._trajectory_logp(self, kv, mask, traj)
        with torch.no_grad():
            ref_memory, ref_mask = ref.encode(batch)
            ref_logp = self._trajectory_logp(ref, ref.memory_kv(ref_memory), ref_mask, traj)
        objective = clipped_objective(logp, traj["logp"], advantages, cfg.clip_eps) - cfg.kl_coef * kl_k3(logp, ref_logp)
        self.last_rewards = rewards.detach()  # for logging / tests
        self._note_rollouts(traj)
        if set(cfg.policy_segments) == set(SEGMENTS):
            return -objective.mean()
        trained = torch.tensor([segment in cfg.policy_segments for segment in SEGMENTS], device=logp.device)
        tokens = self._per_token(trained)  # (3L + 1,)
        return -(objective * tokens).sum(-1).mean() / tokens.sum()

    def _note_rollouts(self, groups: dict[str, torch.Tensor]) -> None:
        """Accumulate what the sampled groups (`sample_groups`) looked like, for `training_stats`.
        Their `credited` (B, G, S): the rewards the advantages were normalised from (S = 3 segments
        or 1 trajectory)."""
        target, rewards, credited = groups["target_codes"], groups["rewards"], groups["credited"]
        with torch.no_grad():
            flat = credited.transpose(1, 2)  # (B, S, G)
            spread = flat.amax(-1) - flat.amin(-1)  # a group with no spread gets advantage 0
            names = SEGMENTS if credited.shape[-1] == len(SEGMENTS) else ("trajectory",)
            hit = (groups["correction"] == target).all(-1).float()
            values = {
                "reward": rewards.mean(), "hit": hit.mean(),
                "draft_hit": (groups["draft"] == target).all(-1).float().mean(),
                "groups_with_a_hit": hit.amax(-1).mean(),
                **{f"{name}_no_spread": (spread[:, i] <= 1e-6).float().mean() for i, name in enumerate(names)},
            }
        sums = self.__dict__.setdefault("_rollout_sums", {})
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        self.__dict__["_rollout_steps"] = self.__dict__.get("_rollout_steps", 0) + 1

    def training_stats(self) -> dict[str, float]:
        """Means over the GRPO steps since the last call (the engine records them at each
        evaluation as `train_grpo_*`): the mean reward, the share of sampled trajectories and drafts
        that hit, the share of groups with at least one hit, and per credited segment the share of
        groups whose rewards are all equal (their advantages, hence their policy gradient, are 0)."""
        steps = self.__dict__.pop("_rollout_steps", 0)
        sums = self.__dict__.pop("_rollout_sums", {})
        return {f"grpo_{key}": value / steps for key, value in sums.items()} if steps else {}

    # -------------------------------------------------------------------------------- inference
    def beam_entropy(self, codes: torch.Tensor, kv: KV, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) mean over levels of the entropy of each level's full token distribution along the beam."""
        states = self.decode(codes[..., :-1], kv, mask)
        logits = self.level_logits(states)
        probs = torch.softmax(logits, -1)
        return torch.special.entr(probs).sum(-1).mean(-1)

    @torch.no_grad()
    def reflect_and_correct(
        self, batch: SeqBatch, beam_size: int | None = None
    ) -> dict[str, torch.Tensor]:
        """EGRS decoding: beam drafts, the most uncertain ones reflected and corrected (greedy).
        Returns the merged candidates: items (B, M) and scores (B, M), best first, deduplicated
        (-inf / item 0 = no candidate), plus the drafts, which beams were reflected and their
        corrections, for inspection."""
        cfg = self.config
        codes, items, scores = self.beam_search(batch, beam_size)
        b, n, _ = codes.shape
        out = {"draft_codes": codes, "draft_items": items, "draft_scores": scores}
        memory, mask = self.encode(batch)
        kv = self.memory_kv(memory)
        entropy = self.beam_entropy(codes, kv, mask).masked_fill(items == PAD, float("-inf"))
        if cfg.entropy_threshold is not None:
            chosen = (entropy > cfg.entropy_threshold) & (items != PAD)
            index = torch.arange(n, device=codes.device).expand(b, n)  # reflect every beam, keep the chosen
        else:
            r = math.ceil(cfg.reflect_share * n)
            index = entropy.topk(r, dim=1).indices  # (B, r) the most uncertain beams
            chosen = torch.zeros(b, n, dtype=torch.bool, device=codes.device)
            chosen.scatter_(1, index, True)
            chosen &= items != PAD
        out["entropy"], out["reflected"] = entropy, chosen
        if index.shape[1] == 0 or not bool(chosen.any()):
            out.update(items=items, scores=scores)
            return out
        L = self.levels
        picked = codes.gather(1, index.unsqueeze(-1).expand(-1, -1, L))
        traj = self.rollout(kv, mask, n=index.shape[1], greedy=True, draft=picked)
        corrections = torch.zeros_like(codes).scatter_(1, index.unsqueeze(-1).expand(-1, -1, L), traj["correction"])
        hit_logp = torch.zeros_like(scores).scatter_(1, index, traj["item_logp"][..., 0])
        miss_logp = torch.zeros_like(scores).scatter_(1, index, traj["item_logp"][..., 1])
        corr_logp = torch.zeros_like(scores).scatter_(1, index, traj["logp"][..., 2 * L + 1 :].sum(-1))
        draft_score = torch.where(chosen, scores + hit_logp, scores) if cfg.merge == "trajectory" else scores
        corr_items = self.trie.item_of(corrections).masked_fill(~chosen, PAD)
        corr_score = (scores + miss_logp + corr_logp).masked_fill(corr_items == PAD, float("-inf"))
        out["corrections"] = corrections
        cand_items = torch.cat([items, corr_items], dim=1)
        cand_scores = torch.cat([draft_score, corr_score], dim=1).masked_fill(cand_items == PAD, float("-inf"))
        order = cand_scores.argsort(dim=1, descending=True, stable=True)
        cand_items, cand_scores = cand_items.gather(1, order), cand_scores.gather(1, order)
        same = cand_items.unsqueeze(2) == cand_items.unsqueeze(1)  # (B, M, M)
        earlier = torch.ones_like(same[0]).triu(1).T  # [i, j]: j comes before i
        dup = (same & earlier).any(-1)  # a later copy of an item (the earlier one scores at least as high)
        cand_scores = cand_scores.masked_fill(dup, float("-inf"))
        order = cand_scores.argsort(dim=1, descending=True, stable=True)
        cand_scores = cand_scores.gather(1, order)
        out["items"] = cand_items.gather(1, order).masked_fill(torch.isinf(cand_scores), PAD)
        out["scores"] = cand_scores
        return out

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int, beam_size: int | None = None) -> torch.Tensor:
        """(B, k) items: drafts and corrections merged by trajectory log-probability (EGRS)."""
        if k > self.num_items:
            raise ValueError(f"cannot rank {k} distinct items out of {self.num_items}")
        beam = max(k, beam_size or self.config.beam_size)
        return self.reflect_and_correct(batch, beam)["items"][:, :k]

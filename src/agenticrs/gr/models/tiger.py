"""TIGER: generative retrieval of the next item's semantic ID with an encoder-decoder Transformer.

Paper: Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023
(arXiv 2305.05065); our protocol spec `gr_baselines_and_protocol.md` §2. The paper's: items are
named by semantic IDs (RQ-VAE codes, 3 levels of 256 + a collision digit); a T5-style
encoder-decoder reads a user token (user ids hashed into 2,000 buckets) followed by the flattened
semantic IDs of the history (last 20 items), and the decoder generates the next item's semantic ID
token by token, trained with token cross-entropy under teacher forcing; 4 + 4 layers, d_model 128,
6 heads x 64 (attention width 384 != d_model, as T5's d_kv), FFN 1024 (ReLU), dropout 0.1;
recommendations come from beam search over the SID tokens, complete codes mapped to items.

Ours:
- Token vocabulary: 0 = pad, 1 = BOS, 2..2+U-1 = user buckets (bucket = user % U), then one
  range per level (level l's code c is token ``2 + U + sum(V_<l) + c``), so the same code at two
  levels is two tokens. One embedding table shared by encoder and decoder (as T5).
- Blocks are our own pre-LN Transformer blocks (LayerNorm, scaled dot-product attention with a
  separate head width, so the paper's 6 x 64 heads on d_model 128 need no compromise) and learned
  absolute positions (T5 uses relative position biases). History positions are right-aligned:
  the most recent item's tokens always get the same positions.
- Output head: one linear layer over the code space (sum of the level vocabularies); decoder
  position t only scores the codes of level t (the other rows are never used), i.e. per-level
  heads sharing one weight matrix. Loss = mean token cross-entropy over the target's levels.
- Beam search is constrained by a `PrefixTrie` (the spec's recommendation; the paper decodes
  freely and drops invalid codes): continuations that leave the trie get -inf, so every complete
  beam is a distinct valid item. Beams are ranked by the model's sequence log-probability (token
  log-softmax over the level's full vocabulary, not renormalised over the allowed tokens). The
  encoder runs once and the cross-attention keys/values of its output are cached across steps;
  the decoder's self-attention is recomputed over the (at most `levels`-token) prefix each step.
  Beams are folded into the query axis of cross-attention, so the memory is never copied per beam.
  With beam >= k and num_items >= k the search always returns k items (a beam is only cut when
  at least `beam` valid continuations exist); asking for k > num_items is an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import (
    PAD,
    SemanticIds,
    SeqBatch,
    SequentialConfig,
    SequentialModel,
)
from agenticrs.gr.trie import PrefixTrie
from agenticrs.gr.zoo import register_sequential

BOS = 1
_NUM_FIXED_SPECIALS = 2  # pad, bos


class TigerConfig(SequentialConfig):
    """The paper's defaults (spec §2.3)."""

    max_len: int = Field(20, gt=0)  # history items read by the encoder
    d_model: int = Field(128, gt=0)
    num_encoder_layers: int = Field(4, ge=1)
    num_decoder_layers: int = Field(4, ge=1)
    num_heads: int = Field(6, ge=1)
    head_dim: int = Field(64, ge=1)  # T5's d_kv: attention width = num_heads * head_dim
    ffn_dim: int = Field(1024, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # dropout on the attention weights (T5 has it); None = `dropout`. 0 lets PyTorch use its fused
    # (flash) attention kernel, which on CPU is what makes training affordable.
    attention_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    num_user_buckets: int = Field(2000, ge=1)  # hashing trick for user ids
    beam_size: int = Field(20, ge=1)  # default beam; recommend uses max(k, beam_size)


class _Attention(nn.Module):
    """Multi-head attention whose inner width (heads x head_dim) is independent of d_model."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.query = nn.Linear(d_model, inner, bias=False)
        self.key = nn.Linear(d_model, inner, bias=False)
        self.value = nn.Linear(d_model, inner, bias=False)
        self.out = nn.Linear(inner, d_model, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, H * dk) -> (N, H, T, dk)."""
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(-3, -2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (N, H, S, dk) of a key sequence (N, S, d); cacheable (the encoder memory)."""
        return self._split(self.key(x)), self._split(self.value(x))

    def forward(
        self,
        x: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Queries from x (N, T, d) against cached keys/values; mask (N, 1, 1, S) True = attend."""
        q = self._split(self.query(x))
        out = F.scaled_dot_product_attention(
            q, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        return self.out(out.transpose(-3, -2).flatten(-2))


def _attention_dropout(config: TigerConfig) -> float:
    return config.dropout if config.attention_dropout is None else config.attention_dropout


class _FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))


class _EncoderLayer(nn.Module):
    def __init__(self, config: TigerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm_attn, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _Attention(d, config.num_heads, config.head_dim, _attention_dropout(config))
        self.ffn = _FeedForward(d, config.ffn_dim, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm_attn(x)
        x = x + self.drop(self.attn(h, *self.attn.project_kv(h), mask=mask))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class _DecoderLayer(nn.Module):
    """Pre-LN decoder block over (B, N beams, T, d); beams share the batch row's memory."""

    def __init__(self, config: TigerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm_self, self.norm_cross, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = _Attention(d, config.num_heads, config.head_dim, _attention_dropout(config))
        self.cross_attn = _Attention(d, config.num_heads, config.head_dim, _attention_dropout(config))
        self.ffn = _FeedForward(d, config.ffn_dim, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, N, T, d) -> (states, self-attention keys/values (B*N, H, T_past + T, dk)).

        Without `past`, x is the whole prefix (causal self-attention, teacher forcing); with it,
        x is the one next position and attends to the cached keys/values of the earlier ones.
        """
        b, n, t, d = x.shape
        h = self.norm_self(x).reshape(b * n, t, d)
        key, value = self.self_attn.project_kv(h)
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        attended = self.self_attn(h, key, value, causal=past is None and t > 1)
        x = x + self.drop(attended.view(b, n, t, d))
        # beams folded into the query axis: (B, N*T) queries against the row's cached memory
        h = self.norm_cross(x).reshape(b, n * t, d)
        x = x + self.drop(self.cross_attn(h, *memory_kv, mask=memory_mask).view(b, n, t, d))
        return x + self.drop(self.ffn(self.norm_ffn(x))), (key, value)


def _rebuild_trie(module: nn.Module, incompatible_keys: Any) -> None:
    """After load_state_dict the SID buffer may hold other codes: rebuild the trie from it."""
    module.trie = PrefixTrie(module.sid_codes, module.vocab_sizes)


@register_sequential("tiger")
class Tiger(SequentialModel):
    """Encoder over [user token, history SIDs] -> decoder generating the next item's SID."""

    name: ClassVar[str] = "tiger"
    train_examples: ClassVar[str] = "prefixes"  # one (history -> next item) example per position
    paper: ClassVar[str] = "Rajput et al., Recommender Systems with Generative Retrieval, NeurIPS 2023"
    Config: ClassVar[type[SequentialConfig]] = TigerConfig

    def __init__(self, num_items: int, config: TigerConfig, semantic_ids: SemanticIds) -> None:
        super().__init__()
        if semantic_ids.num_items != num_items:
            raise ValueError(f"semantic IDs cover {semantic_ids.num_items} items, the data set has {num_items}")
        self.config = config
        self.num_items = num_items
        self.levels = semantic_ids.levels
        self.vocab_sizes: tuple[int, ...] = tuple(int(v) for v in semantic_ids.vocab_sizes)
        vocab = torch.tensor(self.vocab_sizes, dtype=torch.long)
        code_offsets = torch.cumsum(vocab, 0) - vocab  # start of each level in the code space
        self.register_buffer("sid_codes", torch.as_tensor(semantic_ids.codes, dtype=torch.long).clone())
        self.register_buffer("code_offsets", code_offsets, persistent=False)
        self.code_token_start = _NUM_FIXED_SPECIALS + config.num_user_buckets
        num_codes = int(vocab.sum())
        max_vocab = max(self.vocab_sizes)
        columns = torch.arange(max_vocab)
        head_index = (code_offsets[:, None] + columns).clamp(max=num_codes - 1)  # (levels, maxV) rows of the head
        self.register_buffer("head_index", head_index, persistent=False)
        self.register_buffer("head_valid", columns[None, :] < vocab[:, None], persistent=False)

        d = config.d_model
        self.token_embedding = nn.Embedding(self.code_token_start + num_codes, d, padding_idx=PAD)
        self.encoder_positions = nn.Embedding(1 + config.max_len * self.levels, d)
        self.decoder_positions = nn.Embedding(self.levels, d)
        for emb in (self.token_embedding, self.encoder_positions, self.decoder_positions):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[PAD].zero_()
        self.drop = nn.Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.num_encoder_layers))
        self.encoder_norm = nn.LayerNorm(d)
        self.decoder_layers = nn.ModuleList(_DecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_codes)
        self.trie = PrefixTrie(self.sid_codes, self.vocab_sizes)
        self.register_load_state_dict_post_hook(_rebuild_trie)

    # ----------------------------------------------------------------------------------- encoder
    def encode(self, batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, S, d) over [user token, history SID tokens] and its mask (B, 1, 1, S)."""
        cfg = self.config
        history = batch["history"][:, -cfg.max_len :]
        used = (history != PAD).any(0)
        start = int(used.to(torch.int8).argmax()) if bool(used.any()) else history.shape[1]
        history = history[:, start:]  # drop columns that are padding in every row
        length = history.shape[1]
        item_tokens = self.sid_codes[history] + self.code_offsets + self.code_token_start  # (B, L, levels)
        item_tokens = item_tokens.masked_fill((history == PAD).unsqueeze(-1), PAD).flatten(1)
        user_tokens = _NUM_FIXED_SPECIALS + batch["user"].to(torch.long) % cfg.num_user_buckets
        tokens = torch.cat([user_tokens.unsqueeze(1), item_tokens], dim=1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        positions[1:] += (cfg.max_len - length) * self.levels  # right-aligned: the last item's positions are fixed
        x = self.drop(self.token_embedding(tokens) + self.encoder_positions(positions))
        mask = (tokens != PAD)[:, None, None, :]
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return self.encoder_norm(x), mask

    def memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys/values of the memory (computed once per batch)."""
        return [layer.cross_attn.project_kv(memory) for layer in self.decoder_layers]

    # ----------------------------------------------------------------------------------- decoder
    def decode(
        self, codes: torch.Tensor, memory_kv: list[tuple[torch.Tensor, torch.Tensor]], memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Prefix codes (B, N, t), t < levels -> decoder states (B, N, t + 1, d) over [BOS, prefix]."""
        b, n, t = codes.shape
        code_tokens = codes + self.code_offsets[:t] + self.code_token_start
        bos = torch.full((b, n, 1), BOS, dtype=torch.long, device=codes.device)
        tokens = torch.cat([bos, code_tokens], dim=-1)
        x = self.drop(self.token_embedding(tokens) + self.decoder_positions.weight[: t + 1])
        for layer, kv in zip(self.decoder_layers, memory_kv, strict=True):
            x, _ = layer(x, kv, memory_mask)
        return self.decoder_norm(x)

    def decode_step(
        self,
        codes: torch.Tensor,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        memory_mask: torch.Tensor,
        past: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Incremental `decode`: the state (B, N, d) after prefix codes (B, N, t), feeding only the
        newest token (BOS when t = 0) and the layers' cached self-attention keys/values of the
        earlier positions (rows aligned with the beams of `codes`)."""
        b, n, t = codes.shape
        if t == 0:
            token = torch.full((b, n, 1), BOS, dtype=torch.long, device=codes.device)
        else:
            token = codes[..., -1:] + self.code_offsets[t - 1] + self.code_token_start
        x = self.drop(self.token_embedding(token) + self.decoder_positions.weight[t])
        cache = []
        for i, (layer, kv) in enumerate(zip(self.decoder_layers, memory_kv, strict=True)):
            x, layer_cache = layer(x, kv, memory_mask, None if past is None else past[i])
            cache.append(layer_cache)
        return self.decoder_norm(x).squeeze(2), cache

    def level_logits(self, states: torch.Tensor, first_level: int = 0) -> torch.Tensor:
        """States (..., T, d) at levels first_level.. -> (..., T, max V) logits, -inf beyond V_level."""
        levels = slice(first_level, first_level + states.shape[-2])
        index = self.head_index[levels]  # (T, maxV)
        logits = torch.einsum("...td,tvd->...tv", states, self.head.weight[index]) + self.head.bias[index]
        return logits.masked_fill(~self.head_valid[levels], float("-inf"))

    def token_logits(self, batch: SeqBatch) -> torch.Tensor:
        """Teacher-forced logits (B, levels, max V) of the target item's SID tokens."""
        target_codes = self.sid_codes[batch["target"]]  # (B, levels)
        memory, mask = self.encode(batch)
        states = self.decode(target_codes[:, None, :-1], self.memory_kv(memory), mask)
        return self.level_logits(states).squeeze(1)

    def loss(self, batch: SeqBatch) -> torch.Tensor:
        """Mean token cross-entropy over the target's levels (rows with target 0 are ignored)."""
        logits = self.token_logits(batch)
        labels = self.sid_codes[batch["target"]].masked_fill((batch["target"] == PAD).unsqueeze(-1), -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    # ------------------------------------------------------------------------------- beam search
    @torch.no_grad()
    def beam_search(
        self, batch: SeqBatch, beam_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search: (codes (B, N, levels), items (B, N), log-probs (B, N)),
        best first, N = min(beam, #valid items); item 0 / -inf marks a beam with no valid path."""
        memory, mask = self.encode(batch)
        return self.beam_search_from(self.memory_kv(memory), mask, beam_size or self.config.beam_size)

    @torch.no_grad()
    def beam_search_from(
        self, kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, beam: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`beam_search` over an encoded batch (its decoder keys/values and padding mask), for
        callers that already hold them (GRC's beam groups)."""
        b = mask.shape[0]
        device = mask.device
        codes = torch.zeros(b, 1, 0, dtype=torch.long, device=device)
        scores = torch.zeros(b, 1, device=device)
        rows = torch.arange(b, device=device).unsqueeze(1)
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        for level in range(self.levels):
            states, cache = self.decode_step(codes, kv, mask, cache)  # (B, N, d)
            size = self.vocab_sizes[level]
            logits = self.level_logits(states.unsqueeze(2), level).squeeze(2)[..., :size]
            log_probs = torch.log_softmax(logits, dim=-1)
            allowed = self.trie.allowed_next(codes)  # (B, N, V_level)
            candidates = (scores.unsqueeze(-1) + log_probs).masked_fill(~allowed, float("-inf")).flatten(1)
            scores, index = candidates.topk(min(beam, candidates.shape[1]), dim=1)  # sorted, best first
            parent = torch.div(index, size, rounding_mode="floor")
            codes = torch.cat([codes[rows, parent], (index % size).unsqueeze(-1)], dim=-1)
            if level + 1 < self.levels:
                cache = [(self._reorder(k, parent, rows), self._reorder(v, parent, rows)) for k, v in cache]
        items = self.trie.item_of(codes).masked_fill(torch.isinf(scores), PAD)
        return codes, items, scores

    @staticmethod
    def _reorder(cached: torch.Tensor, parent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B*N, H, t, dk) cache -> the rows of the surviving beams' parents, (B*N', H, t, dk)."""
        by_beam = cached.view(parent.shape[0], -1, *cached.shape[1:])
        return by_beam[rows, parent].flatten(0, 1)

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int, beam_size: int | None = None) -> torch.Tensor:
        """(B, k) item ids ranked by sequence log-probability; beam = max(k, beam_size or config)."""
        if k > self.num_items:
            raise ValueError(f"cannot rank {k} distinct items out of {self.num_items}")
        beam = max(k, beam_size or self.config.beam_size)
        _, items, _ = self.beam_search(batch, beam)
        return items[:, :k]

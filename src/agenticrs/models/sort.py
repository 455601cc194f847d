"""SORT: a ranking Transformer over feature tokens, organised around the request.

Paper: Wang, Wu, Pang, Wang, Yang, Liu, Zhang, Zhu, Shen, Wang, Wang and Zeng, "SORT: A
Systematically Optimized Ranking Transformer for Industrial-scale Recommenders", arXiv:2603.03988,
2026 (Alibaba International Digital Commerce). What we had of it is the abstract and a
third-party list of its components, so the module internals are ours.

The paper's (abstract + component list): a Transformer ranking model over feature tokens made
to work on sparse features and scarce labels by (1) **request-centric sample organisation**: the
candidates of one request are processed together and share the user context; (2) **local
attention**; (3) **query pruning**; (4) **generative pre-training** for supervision beyond the
click labels; (5) a refined **tokeniser** with special tokens; (6) **MHA** refinements: QKNorm and
attention (output) gates; (7) an **MoE** feed-forward network. It reports better offline AUCs
than strong baselines, scaling with data, size and sequence length, and fewer FLOPs.

Ours (the method note's recommended choices, all configurable):
- Tokens. A request's context is [CTX] + one token per request field (`schema.request_fields`,
  categorical or numeric) + one token per behaviour position (the embeddings of a sequence and
  the sequences `parallel_to` it concatenated, e.g. item and category, then projected), plus
  learned per-position embeddings for behaviour tokens (no timestamps reach a model). A
  candidate is [CLS] + one token per other field (a per-candidate id sequence is mean-pooled
  into one token). Every scalar token = shared projection of its field embedding + a per-field
  embedding + a segment embedding (profile / behaviour / candidate). Without request info in the
  schema, every field is a candidate field and every sequence is context.
- Request-centric attention. The context of a request is encoded ONCE (taken from the first row
  of each run of equal `request` ids in the batch; without `request` each row is its own
  request). Context tokens never see candidates; a candidate's tokens attend to its request's
  context tokens and to its own tokens, never to another candidate's, so a request's scores
  equal those of its candidates scored one by one (exact, not an approximation).
- Local attention inside the context: profile tokens ([CTX] and request fields) attend to the
  profile tokens; a behaviour token at position t attends to the profile tokens and to the
  behaviour tokens of its own sequence at positions t-w < s <= t (`local_window` w, causal by
  default so that next-behaviour prediction leaks nothing; `causal_behaviour=False` gives
  |t - s| < w). Candidate tokens see all context tokens.
- Query pruning. In the last `num_pruned_layers` layers the context is no longer updated (its
  states from the last full layer are keys/values, projected by each layer's own K/V), only
  candidate tokens are queries, and in the very last layer only [CLS] (all the head reads).
- Blocks: pre-norm RMSNorm; attention with RMSNorm on each head's q and k (QKNorm) and an
  elementwise sigmoid output gate o = sigmoid(W_g x) * Attn(x) before the output projection;
  FFN = MoE of SwiGLU experts, softmax router, top-k routing (weights renormalised over the
  chosen k), no capacity limit (so a prediction never depends on other rows), an optional shared
  expert, and the Switch load-balancing loss E * sum_e f_e P_e over real tokens, averaged over
  layers, times `moe_aux_weight`, returned as `aux_loss`.
- Generative pre-training as an auxiliary loss (`generative_weight`, default 0 = off): each
  behaviour token's final context state predicts the next behaviour's item with a softmax over
  the distinct next items of the batch (in-batch negatives), scored against the shared
  embedding table. Trained jointly (not as a separate pre-training stage); off by default
  because it only adds a loss in training.
- Sizes (unknown in what we read): the note recommends, at industrial scale, d = 256-512,
  L = 4-8, 8-16 experts with top-2, balance weight 1e-2, window 64 and pruning in the last half.
  We keep L = 4 with the last 2 pruned, 8 experts, top-2, 1e-2, window 64, but a token width
  d = 64 (4 heads, expert hidden 128, head MLP [64]) fitted to this project's data sizes and
  CPU training (d = 256 costs ~8x the time per step); `model_dim=256, num_heads=8,
  expert_hidden=256` gives the note's setting. Embedding width 16 with N(0, 0.02) initial
  embeddings (visible enough for the router to spread tokens over experts from the first step);
  the special, segment, field and position vectors start at N(0, 0.002), so that a token starts
  dominated by its feature value (on synthetic-tiny this learned faster than 0.02 in the
  trainer's few-step regime: valid AUC 0.567 vs 0.541 after 12 steps).

Added by us beyond the note:
- `input_norm="layer"` (default) layer-normalises every looked-up feature embedding (one map per
  vocabulary; numeric columns: their vectors) before the projection, so the special, segment,
  field and position vectors added after it cannot drown the feature values whatever the scale
  of the table (e.g. under embedding L2); `input_norm="none"` gives the network as first written.
  Those structure vectors count as embedding-like (`Model.embedding_parameters`).
- Candidate attention runs per request (`RequestLayout`): the candidates of a request are one
  query set over [context; all their tokens] with a block-diagonal mask, so the context keys are
  never copied per row; the MoE gathers its routed tokens once. Same outputs, faster on CPU.
- `readout="flatten"`: the head reads every candidate token's final state, concatenated in
  field order (the last layer then keeps all candidate tokens as queries), instead of [CLS]
  alone; `head_batch_norm` adds batch norm to the head MLP. Defaults keep the [CLS] readout.
- `train_defaults`: 200 warm-up steps, cosine decay, patience 4, gradient clipping at 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from agenticrs.features.schema import FeatureSchema, SequenceInput
from agenticrs.models.base import (
    MAX_HEADS,
    MAX_LAYERS,
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    InitStd,
    Layers,
    LossWeight,
    Model,
    ModelConfig,
    ModelInputs,
    Units,
    register,
)
from agenticrs.models.layers import MLP, FastDropout, FeatureEmbedding, batch_key_seq, batch_key_seqlen, sequence_mask

REQUEST = "request"
PROFILE, BEHAVIOUR, CANDIDATE = 0, 1, 2  # segments (the special tokens carry their own vectors)


# ------------------------------------------------------------------------------------ structure
def request_runs(request: torch.Tensor | None, rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(run index of every row (B,), first row of every run (R,)); a run = consecutive equal ids.

    Without request ids every row is a run of its own.
    """
    if request is None:
        index = torch.arange(rows, device=device)
        return index, index
    starts = torch.ones(rows, dtype=torch.bool, device=request.device)
    starts[1:] = request[1:] != request[:-1]
    return torch.cumsum(starts, 0) - 1, torch.nonzero(starts).squeeze(1)


def context_attention_mask(
    segment: torch.Tensor, position: torch.Tensor, window: int, causal: bool = True
) -> torch.Tensor:
    """(C, C) bool, True where context query i may attend to context key j.

    segment[i] = 0 for profile tokens ([CTX], request fields), g + 1 for a token of behaviour
    sequence g; position[i] = its position in that sequence. Profile keys are open to every
    query; a behaviour query also sees its own sequence within the window (window <= 0: no limit).
    """
    same_sequence = (segment[:, None] == segment[None, :]) & (segment[:, None] > 0)
    delta = position[:, None] - position[None, :]  # query position - key position
    if causal:
        in_window = (delta >= 0) & ((delta < window) if window > 0 else True)
    else:
        in_window = (delta.abs() < window) if window > 0 else torch.ones_like(same_sequence)
    return (segment[None, :] == 0) | (same_sequence & in_window)


@dataclass
class RequestLayout:
    """Candidates laid out by request for attention: slot (r, j) holds the j-th row of request r.

    Requests are padded to the largest one (n rows); a padding slot repeats its request's first
    row, and nothing reads it (its keys are masked, its outputs dropped). Candidate attention then
    runs once per request: its queries are the n * M_q candidate tokens, its keys the request's
    context followed by the n * M candidate tokens, and the mask lets a candidate token see the
    real context keys and the tokens of its own candidate only (a block diagonal), so a row's
    output is exactly what attending over [its context; its own tokens] gives, without copying
    the context keys once per row.
    """

    row_slot: torch.Tensor  # (B,) flat slot r * n + j of every row
    slot_row: torch.Tensor  # (R * n,) the row in every slot (padding: the request's first row)
    requests: int
    width: int  # n
    context_valid: torch.Tensor  # (R, C)
    _masks: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, run_index: torch.Tensor, first_rows: torch.Tensor, context_valid: torch.Tensor) -> RequestLayout:
        requests, rows = len(first_rows), len(run_index)
        position = torch.arange(rows, device=run_index.device) - first_rows.index_select(0, run_index)
        width = int(position.max()) + 1 if rows else 1
        row_slot = run_index * width + position
        slot_row = first_rows.repeat_interleave(width).index_copy(0, row_slot, torch.arange(rows, device=run_index.device))
        return cls(row_slot, slot_row, requests, width, context_valid)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) rows -> (R, n, ...) slots."""
        return x.index_select(0, self.slot_row).view(self.requests, self.width, *x.shape[1:])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(R, n, ...) slots -> (B, ...) rows."""
        return x.reshape(self.requests * self.width, *x.shape[2:]).index_select(0, self.row_slot)

    def mask(self, num_queries: int, num_tokens: int) -> torch.Tensor:
        """(R, 1, n * M_q, C + n * M) bool: real context keys, then the own candidate's tokens."""
        if (num_queries, num_tokens) in self._masks:
            return self._masks[num_queries, num_tokens]
        n = self.width
        device = self.context_valid.device
        query_slot = torch.arange(n * num_queries, device=device) // num_queries
        key_slot = torch.arange(n * num_tokens, device=device) // num_tokens
        own = (query_slot[:, None] == key_slot[None, :]).expand(self.requests, 1, -1, -1)
        context = self.context_valid[:, None, None, :].expand(-1, 1, n * num_queries, -1)
        mask = self._masks[num_queries, num_tokens] = torch.cat([context, own], dim=-1)
        return mask


# ------------------------------------------------------------------------------------- modules
class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedAttention(nn.Module):
    """Multi-head attention with QKNorm and an elementwise sigmoid output gate.

    out = W_o( sigmoid(W_g x + b_g) * SDPA(norm_q(W_q x), norm_k(W_k kv), W_v kv) ), per head.
    Keys/values are computed separately (`keys_values`) so that a request's context keys are
    computed once and gathered for its candidates.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, gate: bool = True) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        self.query_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.key_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.gate = nn.Linear(dim, dim) if gate else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(-3, -2)  # (N, H, T, dh)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self._heads(self.key(x))
        if self.key_norm is not None:
            k = self.key_norm(k)
        return k, self._heads(self.value(x))

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (N, T, d) queries; keys/values (N, H, S, dh); mask broadcastable to (N, H, T, S), True = attend."""
        q = self._heads(self.query(x))
        if self.query_norm is not None:
            q = self.query_norm(q)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        out = out.transpose(-3, -2).reshape(x.shape)
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(x))
        return self.output(out)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MoEFeedForward(nn.Module):
    """Top-k routed SwiGLU experts (+ an optional shared expert) with a load-balancing loss.

    probs = softmax(W_r x); the k largest are renormalised to weights w; y = sum_k w_k E_k(x)
    (+ S(x)). Balance loss (Switch Transformer): E * sum_e f_e * P_e, f_e = share of the N*k
    assignments that go to expert e, P_e = mean router probability of e (1 when uniform). Every
    token is routed (no capacity limit), so a token's output depends on that token alone.
    Expert weights are stacked (E, ., .) tensors.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, shared_expert: bool = True) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(dim, num_experts, bias=False)
        bound_in, bound_hidden = dim**-0.5, hidden**-0.5
        self.w_gate = nn.Parameter(torch.empty(num_experts, dim, hidden).uniform_(-bound_in, bound_in))
        self.w_up = nn.Parameter(torch.empty(num_experts, dim, hidden).uniform_(-bound_in, bound_in))
        self.w_down = nn.Parameter(torch.empty(num_experts, hidden, dim).uniform_(-bound_hidden, bound_hidden))
        self.shared = SwiGLU(dim, hidden) if shared_expert else None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router probabilities (N, E), the chosen experts (N, k) and their weights (N, k)."""
        probs = torch.softmax(self.router(x), dim=-1)
        top_probs, experts = probs.topk(self.top_k, dim=-1)
        return probs, experts, top_probs / top_probs.sum(-1, keepdim=True)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = (x @ torch.cat([self.w_gate[e], self.w_up[e]], dim=1)).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.w_down[e]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) -> (y (N, d), balance loss scalar).

        The N * k assignments are sorted by expert and gathered once; each expert transforms its
        contiguous slice (a loop over experts, not rows) and one `index_add` sums them per token.
        """
        probs, experts, weights = self.route(x)
        flat_expert = experts.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token = torch.div(order, self.top_k, rounding_mode="floor")
        counts = torch.bincount(flat_expert, minlength=self.num_experts)
        routed = x.index_select(0, token).split(counts.tolist())
        y = torch.cat([self.expert(e, chunk) for e, chunk in enumerate(routed) if len(chunk)])
        y = y * weights.reshape(-1)[order, None]
        out = (self.shared(x) if self.shared is not None else torch.zeros_like(x)).index_add(0, token, y)
        share = counts.to(x.dtype) / max(flat_expert.numel(), 1)
        balance = self.num_experts * (share * probs.mean(0)).sum()
        return out, balance


class SORTBlock(nn.Module):
    """Pre-norm block: request-centric attention then (MoE) FFN, over context and candidate tokens."""

    def __init__(self, config: SORTConfig) -> None:
        super().__init__()
        dim = config.model_dim
        self.attention_norm = RMSNorm(dim)
        self.attention = GatedAttention(dim, config.num_heads, qk_norm=config.qk_norm, gate=config.attention_gate)
        self.ffn_norm = RMSNorm(dim)
        if config.num_experts > 0:
            self.ffn: nn.Module = MoEFeedForward(
                dim, config.expert_hidden, config.num_experts, config.top_k, config.shared_expert
            )
        else:
            self.ffn = SwiGLU(dim, config.expert_hidden)
        self.dropout = FastDropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(
        self,
        context: torch.Tensor,  # (R, C, d) one row per request
        context_mask: torch.Tensor,  # (R, 1, C, C) local-attention mask & real keys
        context_valid: torch.Tensor,  # (R, C) real tokens
        candidates: torch.Tensor,  # (B, M, d)
        layout: RequestLayout,  # the rows of every request, for candidate attention
        update_context: bool,
        num_queries: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        context_in = self.attention_norm(context)
        context_keys, context_values = self.attention.keys_values(context_in)
        if update_context:
            context = context + self.dropout(self.attention(context_in, context_keys, context_values, context_mask))
        candidate_in = layout.pad(self.attention_norm(candidates))  # (R, n, M, d)
        requests, width, tokens, dim = candidate_in.shape
        own_keys, own_values = self.attention.keys_values(candidate_in.view(requests, width * tokens, dim))
        keys = torch.cat([context_keys, own_keys], dim=2)  # (R, H, C + n M, dh)
        values = torch.cat([context_values, own_values], dim=2)
        queries = candidate_in[:, :, :num_queries].reshape(requests, width * num_queries, dim)
        attended = self.attention(queries, keys, values, layout.mask(num_queries, tokens))
        attended = layout.unpad(attended.view(requests, width, num_queries, dim))
        candidates = candidates[:, :num_queries] + self.dropout(attended)

        rows, width = candidates.shape[0], candidates.shape[-1]
        candidate_flat = candidates.reshape(-1, width)
        if update_context:
            context_flat = context.reshape(-1, width)
            real = torch.nonzero(context_valid.reshape(-1)).squeeze(1)
            tokens = torch.cat([context_flat.index_select(0, real), candidate_flat])
        else:
            tokens = candidate_flat
        out = self.ffn(self.ffn_norm(tokens))
        out, balance = out if isinstance(out, tuple) else (out, None)
        out = self.dropout(out)
        if update_context:
            context = context_flat.index_add(0, real, out[: len(real)]).view_as(context)
            out = out[len(real) :]
        candidates = (candidate_flat + out).view(rows, num_queries, width)
        return context, candidates, balance


# -------------------------------------------------------------------------------------- config
class SORTConfig(ModelConfig):
    embedding_dim: EmbeddingDim = Field(default=16, description="width of the shared feature table")
    embedding_init_std: InitStd = Field(default=0.02, description="init std of the feature table")
    structure_init_std: InitStd = Field(
        default=0.002, description="init std of the special, segment, field and position vectors"
    )
    model_dim: Units = Field(default=64, description="token width d")
    num_layers: Layers = 4
    num_heads: Heads = 4
    num_pruned_layers: int = Field(
        default=2, ge=0, le=MAX_LAYERS, description="last layers where only candidate tokens are queries (context frozen)"
    )
    local_window: int = Field(
        default=64, ge=0, le=1 << 20, description="behaviour tokens attend this far back; 0: no limit"
    )
    causal_behaviour: bool = Field(default=True, description="behaviour tokens see only earlier positions")
    qk_norm: bool = True
    attention_gate: bool = True
    num_experts: int = Field(default=8, ge=0, le=MAX_HEADS, description="routed experts per FFN; 0: a dense SwiGLU FFN")
    top_k: Heads = 2
    expert_hidden: Units = Field(default=128, description="SwiGLU hidden width of one expert")
    shared_expert: bool = True
    moe_aux_weight: LossWeight = Field(default=1e-2, description="weight of the MoE load-balancing loss")
    generative_weight: LossWeight = Field(default=0.0, description="next-behaviour prediction loss; 0: off")
    head_hidden_units: HiddenUnits = [64]
    head_batch_norm: bool = Field(default=False, description="batch norm in the head MLP (ours)")
    readout: Literal["cls", "flatten"] = Field(
        default="cls", description="head input: the [CLS] state, or every candidate token concatenated (ours)"
    )
    dropout: Dropout = 0.0
    input_norm: Literal["none", "batch", "layer"] = Field(
        default="layer", description="normalise the feature embeddings before the projection (ours)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SORTConfig:
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}")
        if self.num_pruned_layers > self.num_layers:
            raise ValueError("num_pruned_layers cannot exceed num_layers")
        if self.num_experts and self.top_k > self.num_experts:
            raise ValueError("top_k cannot exceed num_experts")
        if self.generative_weight > 0 and self.num_pruned_layers == self.num_layers:
            raise ValueError("generative pre-training needs at least one full (unpruned) layer")
        if self.generative_weight > 0 and not self.causal_behaviour:
            raise ValueError("generative pre-training needs causal_behaviour=True (else the next item leaks)")
        return self


# ------------------------------------------------------------------------------------ tokens
@dataclass(frozen=True)
class _Plan:
    """Which inputs are request context and which are per candidate."""

    context_categorical: tuple[int, ...]
    context_numeric: tuple[int, ...]
    behaviour_groups: tuple[tuple[SequenceInput, ...], ...]  # context sequences, parallel ones together
    candidate_categorical: tuple[int, ...]
    candidate_numeric: tuple[int, ...]
    candidate_sequences: tuple[SequenceInput, ...]  # per-candidate id sequences, mean-pooled


def _numeric_field(column: str) -> str:
    return column.removesuffix("__missing")


def _groups(sequences: list[SequenceInput]) -> list[tuple[SequenceInput, ...]]:
    names = {s.name for s in sequences}
    mains = [s for s in sequences if s.parallel_to is None or s.parallel_to not in names]
    groups, placed = [], set()
    for main in mains:
        members = (main, *[s for s in sequences if s.parallel_to == main.name])
        for side in members[1:]:
            if side.max_len != main.max_len:
                raise ValueError(
                    f"sequence '{side.name}' runs parallel to '{main.name}' but has max_len {side.max_len} "
                    f"(vs {main.max_len}); parallel sequences must have the same length"
                )
        groups.append(members)
        placed.update(s.name for s in members)
    groups += [(s,) for s in sequences if s.name not in placed]  # parallel to a parallel sequence
    return groups


def plan_tokens(schema: FeatureSchema) -> _Plan:
    """Request fields (when the schema has request info) and all sequences without it are context."""
    sequences = list(schema.id_sequences)
    if schema.has_request:
        context = set(schema.request_fields)
    else:
        context = {s.name for s in sequences}
    categorical = schema.categorical_names
    return _Plan(
        context_categorical=tuple(i for i, n in enumerate(categorical) if n in context),
        context_numeric=tuple(i for i, n in enumerate(schema.numeric) if _numeric_field(n) in context),
        behaviour_groups=tuple(_groups([s for s in sequences if s.name in context])),
        candidate_categorical=tuple(i for i, n in enumerate(categorical) if n not in context),
        candidate_numeric=tuple(i for i, n in enumerate(schema.numeric) if _numeric_field(n) not in context),
        candidate_sequences=tuple(s for s in sequences if s.name not in context),
    )


# -------------------------------------------------------------------------------------- model
@register("sort")
class SORT(Model):
    paper = (
        "Wang et al., SORT: A Systematically Optimized Ranking Transformer for Industrial-scale "
        "Recommenders, arXiv:2603.03988, 2026"
    )
    Config = SORTConfig
    inputs = ModelInputs(min_categorical=1, request_centric=True)
    # a Transformer wants warm-up, a decaying rate and more patience than an MLP
    train_defaults: ClassVar[dict[str, Any]] = {
        "warmup_steps": 200,
        "lr_schedule": "cosine",
        "patience": 4,
        "grad_clip": 1.0,
    }
    # embedding-like: the special tokens, segment, field and position vectors added to the features
    embedding_like: ClassVar[tuple[str, ...]] = ("special", "segment", "field_embedding", "behaviour_position")
    smoke_overrides = {
        "embedding_dim": 4,
        "model_dim": 16,
        "num_layers": 3,
        "num_heads": 2,
        "num_pruned_layers": 2,
        "local_window": 3,
        "num_experts": 4,
        "expert_hidden": 16,
        "head_hidden_units": [16],
    }

    def __init__(self, schema: FeatureSchema, config: SORTConfig) -> None:
        super().__init__(schema, config)
        self.plan = plan = plan_tokens(schema)
        self.use_requests = schema.has_request
        emb, dim = config.embedding_dim, config.model_dim
        self.embedding = FeatureEmbedding(
            schema, dim=emb, pool_sequences=False, init_std=config.embedding_init_std, input_norm=config.input_norm
        )
        std = config.structure_init_std
        for name, index in [
            ("_context_categorical", plan.context_categorical),
            ("_context_numeric", plan.context_numeric),
            ("_candidate_categorical", plan.candidate_categorical),
            ("_candidate_numeric", plan.candidate_numeric),
        ]:
            self.register_buffer(name, torch.tensor(index, dtype=torch.long), persistent=False)

        num_profile = len(plan.context_categorical) + len(plan.context_numeric)
        self.num_candidate_tokens = 1 + len(plan.candidate_categorical) + len(plan.candidate_numeric) + len(
            plan.candidate_sequences
        )
        num_scalar = num_profile + self.num_candidate_tokens - 1
        self.special = nn.Parameter(torch.randn(2, dim) * std)  # [CTX], [CLS]
        self.segment = nn.Parameter(torch.randn(3, dim) * std)  # profile, behaviour, candidate
        self.field_embedding = nn.Parameter(torch.randn(max(num_scalar, 1), dim) * std)
        self.scalar_projection = nn.Linear(emb, dim, bias=False)
        self.behaviour_projection = nn.ModuleList(
            nn.Linear(emb * len(group), dim, bias=False) for group in plan.behaviour_groups
        )
        self.behaviour_position = nn.ParameterList(
            nn.Parameter(torch.randn(group[0].max_len, dim) * std) for group in plan.behaviour_groups
        )

        # static structure of the context: [CTX], profile tokens, then each behaviour sequence
        segment = [0] * (1 + num_profile)
        position = [0] * (1 + num_profile)
        for g, group in enumerate(plan.behaviour_groups):
            segment += [g + 1] * group[0].max_len
            position += list(range(group[0].max_len))
        self.register_buffer(
            "context_mask",
            context_attention_mask(
                torch.tensor(segment), torch.tensor(position), config.local_window, config.causal_behaviour
            ),
            persistent=False,
        )
        self.num_profile_tokens = 1 + num_profile

        self.blocks = nn.ModuleList(SORTBlock(config) for _ in range(config.num_layers))
        self.final_norm = RMSNorm(dim)
        self.readout_width = dim * (self.num_candidate_tokens if config.readout == "flatten" else 1)
        self.head = MLP(
            self.readout_width,
            config.head_hidden_units,
            dropout=config.dropout,
            batch_norm=config.head_batch_norm,
            output_dim=1,
        )

        self.generative_head: nn.Module | None = None
        if config.generative_weight > 0:
            if not plan.behaviour_groups:
                raise ValueError("generative pre-training needs a behaviour sequence in the request context")
            self.generative_head = nn.Sequential(RMSNorm(dim), nn.Linear(dim, emb, bias=False))

    # ---------------------------------------------------------------------------- tokenisation
    def _scalar_tokens(self, embedded: torch.Tensor, slots: slice, segment: int) -> torch.Tensor:
        """(N, k, emb) field embeddings -> (N, k, d) tokens."""
        return self.scalar_projection(embedded) + self.field_embedding[slots] + self.segment[segment]

    def _categorical(self, ids: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        offsets = self.embedding.field_offsets.index_select(0, columns)
        return self.embedding.embedding(ids.index_select(1, columns).long() + offsets)

    def _numeric(self, values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return values.index_select(1, columns).unsqueeze(-1) * self.embedding.numeric_vectors().index_select(0, columns)

    def _sequence(self, batch: Batch, seq: SequenceInput, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ids, lengths = batch[batch_key_seq(seq.name)], batch[batch_key_seqlen(seq.name)]
        if rows is not None:
            ids, lengths = ids.index_select(0, rows), lengths.index_select(0, rows)
        mask = sequence_mask(lengths, ids.shape[1])
        embedded = self.embedding.embedding(ids.long() + self.embedding.sequence_offset(seq))
        return embedded * mask.unsqueeze(-1).to(embedded.dtype), mask

    def lookups(self, batch: Batch, rows: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Every embedding SORT reads, normalised by `input_norm` in one call (so that batch
        statistics pool all lookups of a vocabulary: a candidate's item and the history's items).

        Keys: "context" (request fields of the given rows, one per request: categorical (R, k, e)
        then numeric), "behaviour" (the context sequences, (R, L, e) each, in group order),
        "behaviour_mask", "candidate" (categorical (B, k, e) then numeric), "candidate_sequences"
        and "candidate_mask" (the per-candidate sequences, (B, L, e) each).
        """
        emb = self.embedding
        parts: list[torch.Tensor] = []
        slots: list[torch.Tensor] = []
        masks: list[torch.Tensor | None] = []
        keys: list[str] = []

        def add(key: str, x: torch.Tensor, slot: torch.Tensor, mask: torch.Tensor | None = None) -> None:
            keys.append(key)
            parts.append(x)
            slots.append(slot)
            masks.append(mask)

        for key, selected, categorical, numeric in (
            ("context", rows, self._context_categorical, self._context_numeric),
            ("candidate", None, self._candidate_categorical, self._candidate_numeric),
        ):
            if len(categorical):  # a categorical column's slot is its index
                ids = batch["categorical"] if selected is None else batch["categorical"].index_select(0, selected)
                add(key, self._categorical(ids, categorical), categorical)
            if len(numeric):
                values = batch["numeric"] if selected is None else batch["numeric"].index_select(0, selected)
                add(key, self._numeric(values, numeric), emb.numeric_slots.index_select(0, numeric))
        out: dict[str, list[torch.Tensor]] = {"behaviour_mask": [], "candidate_mask": []}
        for group in self.plan.behaviour_groups:
            for seq in group:
                embedded, mask = self._sequence(batch, seq, rows)
                add("behaviour", embedded, rows.new_full((mask.shape[1],), emb.sequence_slot(seq)), mask)
                if seq is group[0]:
                    out["behaviour_mask"].append(mask)
        for seq in self.plan.candidate_sequences:
            embedded, mask = self._sequence(batch, seq, None)
            add("candidate_sequences", embedded, rows.new_full((mask.shape[1],), emb.sequence_slot(seq)), mask)
            out["candidate_mask"].append(mask)
        for key, x in zip(keys, emb.normalize(parts, slots, masks)):
            out.setdefault(key, []).append(x)
        return out

    def context_tokens(self, found: dict[str, list[torch.Tensor]], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The context tokens (R, C, d), one row per request, and their real-token mask."""
        parts = [self.special[0].expand(count, 1, -1)]
        if "context" in found:
            profile = torch.cat(found["context"], dim=1)
            parts.append(self._scalar_tokens(profile, slice(0, profile.shape[1]), PROFILE))
        valid = [torch.ones(count, self.num_profile_tokens, dtype=torch.bool, device=self.special.device)]
        elements = iter(found.get("behaviour", []))
        for group, projection, position, mask in zip(
            self.plan.behaviour_groups, self.behaviour_projection, self.behaviour_position, found["behaviour_mask"]
        ):
            embedded = torch.cat([next(elements) for _ in group], dim=-1)
            parts.append(projection(embedded) + position + self.segment[BEHAVIOUR])
            valid.append(mask)
        return torch.cat(parts, dim=1), torch.cat(valid, dim=1)

    def candidate_tokens(self, found: dict[str, list[torch.Tensor]], count: int) -> torch.Tensor:
        """[CLS] + one token per candidate field: (B, M, d)."""
        fields = list(found.get("candidate", []))
        for embedded, mask in zip(found.get("candidate_sequences", []), found["candidate_mask"]):
            fields.append((embedded.sum(1) / mask.sum(1, keepdim=True).clamp_min(1).to(embedded.dtype)).unsqueeze(1))
        parts = [self.special[1].expand(count, 1, -1)]
        if fields:
            embedded = torch.cat(fields, dim=1)
            slot = self.num_profile_tokens - 1
            parts.append(self._scalar_tokens(embedded, slice(slot, slot + embedded.shape[1]), CANDIDATE))
        return torch.cat(parts, dim=1)

    # -------------------------------------------------------------------------------- forward
    def runs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batch["categorical"].shape[0]
        request = batch.get(REQUEST) if self.use_requests else None
        return request_runs(request, rows, batch["categorical"].device)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        config: SORTConfig = self.config
        run_index, first_rows = self.runs(batch)
        found = self.lookups(batch, first_rows)
        context, context_valid = self.context_tokens(found, len(first_rows))
        candidates = self.candidate_tokens(found, len(run_index))
        context_mask = self.context_mask[None, None] & context_valid[:, None, None, :]
        layout = RequestLayout.build(run_index, first_rows, context_valid)
        full_layers = config.num_layers - config.num_pruned_layers
        balances = []
        for i, block in enumerate(self.blocks):
            last = i == config.num_layers - 1
            context, candidates, balance = block(
                context,
                context_mask,
                context_valid,
                candidates,
                layout,
                update_context=i < full_layers,
                num_queries=1 if last and config.readout == "cls" else candidates.shape[1],
            )
            if balance is not None:
                balances.append(balance)
        # flatten keeps every candidate token apart (the head knows which field a state came from)
        if config.readout == "flatten":
            readout = self.final_norm(candidates).flatten(1)
        else:
            readout = self.final_norm(candidates[:, 0])
        logit = self.head(readout).squeeze(-1)
        out = {"logit": logit}
        aux = []
        if balances and config.moe_aux_weight > 0:
            aux.append(config.moe_aux_weight * torch.stack(balances).mean())
        if self.generative_head is not None and self.training:
            aux.append(config.generative_weight * self.generative_loss(batch, first_rows, context, context_valid))
        if aux:
            out["aux_loss"] = torch.stack(aux).sum()
        return out

    def generative_loss(
        self, batch: Batch, rows: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor
    ) -> torch.Tensor:
        """Next-behaviour prediction on the first behaviour sequence: the final state at position t
        scores the item at t + 1 against the distinct next items of the batch (softmax)."""
        main = self.plan.behaviour_groups[0][0]
        start, length = self.num_profile_tokens, main.max_len
        states = context[:, start : start + length - 1]  # positions 0 .. L-2 predict 1 .. L-1
        has_next = context_valid[:, start + 1 : start + length]
        ids = batch[batch_key_seq(main.name)].index_select(0, rows)[:, 1:].long()
        if not bool(has_next.any()):
            return context.sum() * 0.0
        predicted = self.generative_head(states[has_next])  # (P, emb)
        items, target = torch.unique(ids[has_next], return_inverse=True)
        table = self.embedding.embedding(items + self.embedding.sequence_offset(main))
        return F.cross_entropy(predicted @ table.T, target)

"""CDNet: fine-grained core behaviours plus a coarse interest distribution, both interacting with context.

Paper: Xu et al. (Alibaba), "Bridging Sequential and Contextual Features with a Dual-View of
Fine-grained Core-Behaviors and Global Interest-Distribution", arXiv:2603.12578, 2026. Only the
abstract was available, so most of the architecture is ours (see ../shared/specs/cdnet.md).

The paper's (abstract): do not compress the behaviour sequence into one vector before it meets the
contextual features; instead (1) a fine-grained view selects the *core behaviours* most relevant to
the candidate and lets them interact in detail with the contextual features, and (2) a coarse view
summarises the user's *global interest distribution* over the whole sequence and lets that interact
with the contextual features, compensating for what top-K selection drops.

Ours (all of the following):
- relevance a_i = (W_q e_cand)^T (W_k b_i) / sqrt(w), where b_i = [item; side fields] of history
  element i and e_cand = the candidate's matching fields (both width w = k * d; W_q, W_k: w x w);
- top-K by a_i (default K = 16, clipped to the history length); padding is never selected (a row
  with fewer real elements than K keeps all of them, the other slots get weight 0 and are masked);
  soft weights s_j = n_sel * softmax_{j in TopK}(a_j) (mean 1, renormalised over the selected set
  only, so behaviours outside the top-K do not touch the fine view) scale the core tokens, which is
  how gradients reach the scorer;
- core token = s_j * W_b b_j + a learned type vector; context tokens = every categorical field,
  numeric column and mean-pooled untargeted sequence embedding + a learned per-field type vector;
  2 pre-norm Transformer layers (2 heads, FFN 64) over [context; core], padding masked as keys;
  v_fine = [mean of the context outputs; masked mean of the core outputs (per sequence group)];
- `distribution="prototypes"` (default): P = 16 learnable prototypes mu_p in the space of W_b b_i,
  pi_ip = softmax_p(<W_b b_i, mu_p> / tau) (plain dot product, tau = 1), theta_p = mean of pi_ip
  over real positions (uniform for an empty history); prototype tokens t_p = mu_p + m_p with
  m_p = sum_i pi_ip W_b b_i / sum_i pi_ip (the user's own behaviours in that interest);
  `distribution="categories"`: theta = the history's histogram over the first side sequence's values
  (e.g. hist_cate_id; the main sequence when there is none), tokens = those values' embeddings.
  Implemented as attention over the positions, which equals attention over the distinct values with
  a log-count bias; an empty history gives zeros;
- a single-head cross-attention, contextual tokens as queries over the distribution tokens with
  log theta as an additive bias; v_dist = [mean over queries of the outputs; z = sum_p theta_p t_p];
- fusion `concat`: [v_fine; v_dist; concatenated context embeddings] -> MLP(512, 256, 128) -> logit
  (the context enters concatenated, as in DIN's MLP, not mean-pooled: pooling hides which field is
  which); `gate`: a scalar g = sigmoid(w^T [v_fine; v_dist]) per row scales the views,
  [g v_fine; (1 - g) v_dist; context];
- auxiliary loss (prototypes only, weight 1e-3; 0 switches it off): log P - H(mean_b theta_b), the
  entropy of the batch's mean interest distribution, so prototypes do not collapse into one;
- several behaviour sequences with candidates (as grouped by DIN's `plan_target_groups`) each get their own
  scorer, projection, prototypes and cross-attention; their core tokens share the Transformer.
Embedding width 16, embeddings N(0, 1e-4), no dropout.

Added by us beyond the note: `input_norm="layer"` (default) layer-normalises every looked-up
embedding (candidate fields, numeric vectors and history elements, one map per vocabulary)
before anything reads it. Without it the feature embeddings (std 1e-4, then shrunk by embedding
L2) are drowned by the type vectors (std 0.02) added to them; `input_norm="none"` gives the
network as first written. The type vectors and prototypes count as embedding-like parameters
(`Model.embedding_parameters`), so embedding L2 reaches them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    MAX_UNITS,
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    Layers,
    LossWeight,
    Model,
    ModelConfig,
    ModelInputs,
    Units,
    register,
)
from agenticrs.models.layers import MLP, FeatureEmbedding, TargetGroup, masked_mean, plan_target_groups


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where `mask` is True; exactly 0 elsewhere, all-zero for an empty row."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask.to(scores.dtype)


@dataclass
class CoreSelection:
    """The top-K behaviours of each row: positions (B, K), which are real (B, K), soft weights (B, K)."""

    indices: torch.Tensor
    valid: torch.Tensor
    weights: torch.Tensor  # softmax of the scores over the selected real positions; 0 elsewhere


def select_core_behaviours(scores: torch.Tensor, mask: torch.Tensor, k: int) -> CoreSelection:
    """Top-k of (B, L) scores among the real positions (`mask`), K clipped to L, padding never chosen."""
    k = min(k, scores.shape[1])
    ranked = scores.detach().masked_fill(~mask, float("-inf"))
    indices = torch.topk(ranked, k, dim=1).indices
    valid = mask.gather(1, indices)
    weights = masked_softmax(scores.gather(1, indices), valid)  # differentiable in the scores
    return CoreSelection(indices=indices, valid=valid, weights=weights)


class RelevanceScorer(nn.Module):
    """a_i = (W_q e_cand)^T (W_k b_i) / sqrt(width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=False)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, candidate: torch.Tensor, behaviours: torch.Tensor) -> torch.Tensor:
        """(B, w), (B, L, w) -> (B, L)."""
        query = self.query(candidate).unsqueeze(-1)
        return torch.bmm(self.key(behaviours), query).squeeze(-1) * self.scale


class InteractionLayer(nn.Module):
    """A pre-norm Transformer layer; `key_mask` (B, N) True where a token may be attended to."""

    def __init__(self, width: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_attention = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)  # a key bias would get no gradient
        self.out = nn.Linear(width, width)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).view(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        x = x + self.out(attended.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.ffn(self.norm_ffn(x))


class InterestPrototypes(nn.Module):
    """Soft assignment of behaviours to P learnable prototypes and the user's interest distribution."""

    embedding_like: ClassVar[tuple[str, ...]] = ("prototypes",)  # vectors in the behaviours' space

    def __init__(self, width: int, num_prototypes: int, temperature: float) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, width) / math.sqrt(width))
        self.temperature = temperature

    def assignment(self, behaviours: torch.Tensor) -> torch.Tensor:
        """pi (B, L, P) = softmax_p(<b_i, mu_p> / tau)."""
        return torch.softmax(behaviours @ self.prototypes.T / self.temperature, dim=-1)

    def forward(self, behaviours: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta (B, P), a distribution over prototypes (uniform for an empty history), and the
        prototype tokens (B, P, w): mu_p + the pi-weighted mean of the user's behaviours."""
        num = self.prototypes.shape[0]
        pi = self.assignment(behaviours) * mask.unsqueeze(-1).to(behaviours.dtype)
        mass = pi.sum(1)  # (B, P)
        lengths = mask.sum(1, keepdim=True)
        theta = torch.where(lengths > 0, mass / lengths.clamp_min(1), torch.full_like(mass, 1.0 / num))
        means = torch.bmm(pi.transpose(1, 2), behaviours) / (mass.unsqueeze(-1) + 1e-6)
        return theta, self.prototypes + means


class DistributionAttention(nn.Module):
    """Single-head cross-attention: context tokens query distribution tokens, log-weights as a bias."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
        """(B, C, w), (B, N, w), (B, N) -> (B, C, w)."""
        scores = torch.bmm(self.query(queries), self.key(tokens).transpose(1, 2)) * self.scale
        attention = torch.softmax(scores + log_weights.unsqueeze(1), dim=-1)
        return torch.bmm(attention, self.value(tokens))


class _GroupViews(nn.Module):
    """The per-sequence-group parts: scorer, behaviour projection, distribution and its attention."""

    def __init__(self, group: TargetGroup, dim: int, config: CDNetConfig, target_index: torch.Tensor) -> None:
        super().__init__()
        width = dim * len(group.sequences)
        self.scorer = RelevanceScorer(width)
        self.project = nn.Linear(width, dim, bias=False)  # padding (zeros) stays zero
        self.prototypes = (
            InterestPrototypes(dim, config.num_prototypes, config.temperature)
            if config.distribution == "prototypes"
            else None
        )
        self.attention = DistributionAttention(dim)
        self.register_buffer("targets", target_index, persistent=False)


@dataclass
class CDNetViews:
    """What the forward pass computes before fusion (exposed for tests and inspection)."""

    fine: torch.Tensor  # v_fine (B, d * (1 + groups))
    dist: torch.Tensor  # v_dist (B, 2 d * groups)
    context: torch.Tensor  # concatenated context embeddings (B, tokens * d)
    scores: list[torch.Tensor]  # relevance a (B, L) per group
    selections: list[CoreSelection]
    theta: list[torch.Tensor]  # interest distribution (B, P) per group (prototypes only)
    aux_loss: torch.Tensor | None


class CDNetConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 16
    top_k: int = Field(default=16, ge=1, le=MAX_UNITS, description="core behaviours kept per candidate")
    num_layers: Layers = Field(default=2, description="Transformer layers over [context; core]")
    num_heads: Heads = 2
    ffn_dim: Units = 64
    distribution: Literal["prototypes", "categories"] = "prototypes"
    num_prototypes: Heads = 16
    temperature: float = Field(default=1.0, gt=0, le=1e3)
    diversity_weight: LossWeight = Field(default=1e-3, description="prototype-diversity auxiliary loss")
    fusion: Literal["concat", "gate"] = "concat"
    hidden_units: HiddenUnits = [512, 256, 128]
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    batch_norm: bool = False
    input_norm: Literal["none", "batch", "layer"] = Field(
        default="layer", description="normalise the embeddings before the type vectors are added (ours)"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> CDNetConfig:
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} must be divisible by num_heads {self.num_heads}")
        return self


@register("cdnet")
class CDNet(Model):
    paper = (
        "Xu et al., Bridging Sequential and Contextual Features with a Dual-View of Fine-grained "
        "Core-Behaviors and Global Interest-Distribution, arXiv:2603.12578, 2026"
    )
    Config = CDNetConfig
    inputs = ModelInputs(min_categorical=1, needs_target_sequence=True)
    # embedding-like: the type vectors added to the context and core tokens
    embedding_like: ClassVar[tuple[str, ...]] = ("context_type", "core_type")
    smoke_overrides = {
        "embedding_dim": 4,
        "top_k": 4,
        "num_heads": 2,
        "ffn_dim": 8,
        "num_prototypes": 4,
        "hidden_units": [16, 8],
    }

    def __init__(self, schema: FeatureSchema, config: CDNetConfig) -> None:
        super().__init__(schema, config)
        self.groups, self.pooled_sequences = plan_target_groups(schema)
        if not self.groups:
            raise ValueError("CDNet needs a behaviour sequence whose `target` is a categorical field")
        dim = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, dim=dim, pool_sequences=False, input_norm=config.input_norm)
        self.num_context = self.embedding.num_fields + len(self.pooled_sequences)
        self.blocks = nn.ModuleList(
            _GroupViews(group, dim, config, torch.tensor(group.target_index, dtype=torch.long))
            for group in self.groups
        )
        # the sequence whose value histogram is the "categories" distribution: the first side sequence
        self.distribution_sequences = [g.sequences[1] if len(g.sequences) > 1 else g.sequences[0] for g in self.groups]
        self.context_type = nn.Parameter(torch.randn(self.num_context, dim) * 0.02)
        self.core_type = nn.Parameter(torch.randn(len(self.groups), dim) * 0.02)
        self.layers = nn.ModuleList(
            InteractionLayer(dim, config.num_heads, config.ffn_dim) for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        fine_width = dim * (1 + len(self.groups))
        dist_width = 2 * dim * len(self.groups)
        self.gate = nn.Linear(fine_width + dist_width, 1) if config.fusion == "gate" else None
        self.mlp_input = fine_width + dist_width + dim * self.num_context
        self.mlp = MLP.from_config(self.mlp_input, config, output_dim=1)

    def views(self, batch: Batch) -> CDNetViews:
        config, dim = self.config, self.config.embedding_dim
        embedded = self.embedding(batch)
        pooled = [masked_mean(embedded.sequences[n], embedded.masks[n]).unsqueeze(1) for n in self.pooled_sequences]
        context = torch.cat([embedded.fields, *pooled], dim=1) if pooled else embedded.fields  # (B, C, d)
        context_tokens = context + self.context_type
        tokens, key_masks, scores, selections, thetas, dists = [context_tokens], [], [], [], [], []
        aux_terms = []
        for g, (group, block) in enumerate(zip(self.groups, self.blocks)):
            candidate = embedded.categorical.index_select(1, block.targets).flatten(1)  # (B, w)
            raw = torch.cat([embedded.sequences[name] for name in group.sequences], dim=-1)  # (B, L, w)
            mask = embedded.masks[group.sequences[0]]
            # fine-grained view: the top-K behaviours by relevance, scaled by their soft weights
            relevance = block.scorer(candidate, raw)
            selection = select_core_behaviours(relevance, mask, config.top_k)
            behaviours = block.project(raw)  # (B, L, d)
            core = behaviours.gather(1, selection.indices.unsqueeze(-1).expand(-1, -1, dim))
            scale = selection.weights * selection.valid.sum(1, keepdim=True).to(core.dtype)
            tokens.append(core * scale.unsqueeze(-1) + self.core_type[g])
            key_masks.append(selection.valid)
            scores.append(relevance)
            selections.append(selection)
            # coarse view: the interest distribution over the whole history
            if block.prototypes is not None:
                theta, dist_tokens = block.prototypes(behaviours, mask)
                attended = block.attention(context_tokens, dist_tokens, torch.log(theta.clamp_min(1e-12)))
                summary = (theta.unsqueeze(-1) * dist_tokens).sum(1)
                thetas.append(theta)
                if config.diversity_weight > 0:
                    aux_terms.append(_diversity_penalty(theta, mask.any(1)))
            else:
                values = embedded.sequences[self.distribution_sequences[g]]  # (B, L, d), zeros at padding
                bias = torch.zeros_like(relevance).masked_fill(~mask, torch.finfo(relevance.dtype).min)
                has_history = mask.any(1).to(values.dtype)[:, None, None]
                attended = block.attention(context_tokens, values, bias) * has_history
                summary = masked_mean(values, mask)
            dists.append(torch.cat([attended.mean(1), summary], dim=-1))
        x = torch.cat(tokens, dim=1)
        key_mask = torch.cat([torch.ones_like(key_masks[0][:, :1]).expand(-1, self.num_context), *key_masks], dim=1)
        for layer in self.layers:
            x = layer(x, key_mask)
        x = self.final_norm(x)
        fine, start = [x[:, : self.num_context].mean(1)], self.num_context
        for valid in key_masks:
            fine.append(masked_mean(x[:, start : start + valid.shape[1]], valid))
            start += valid.shape[1]
        aux = config.diversity_weight * torch.stack(aux_terms).sum() if aux_terms else None
        return CDNetViews(
            fine=torch.cat(fine, dim=1),
            dist=torch.cat(dists, dim=1),
            context=context.flatten(1),
            scores=scores,
            selections=selections,
            theta=thetas,
            aux_loss=aux,
        )

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        views = self.views(batch)
        fine, dist = views.fine, views.dist
        if self.gate is not None:
            g = torch.sigmoid(self.gate(torch.cat([fine, dist], dim=1)))
            fine, dist = g * fine, (1 - g) * dist
        out = {"logit": self.mlp(torch.cat([fine, dist, views.context], dim=1)).squeeze(-1)}
        if views.aux_loss is not None:
            out["aux_loss"] = views.aux_loss
        return out

    def mlp_ceiling_spec(self) -> tuple[int, list[int]]:
        return self.mlp_input, list(self.config.hidden_units)


def _diversity_penalty(theta: torch.Tensor, has_history: torch.Tensor) -> torch.Tensor:
    """log P - H(mean theta over the rows with a history): 0 when the batch uses every prototype
    equally, log P when it uses one only."""
    weights = has_history.to(theta.dtype).unsqueeze(-1)
    mean = (theta * weights).sum(0) / weights.sum().clamp_min(1.0)
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    # a select, not a Python branch on a tensor value: the model traces for ONNX export
    return torch.where(has_history.any(), math.log(theta.shape[1]) - entropy, theta.sum() * 0.0)

"""MGDIN: fields grouped by information density at several granularities, sparse groups deferred.

Paper: Xu, Zhang, Fan, Hu, Zhang, Zeng, "Deferred is Better: A Framework for Multi-Granularity
Deferred Interaction of Heterogeneous Features", arXiv:2603.12586 (2026). Only the abstract was
available, so most of the architecture is ours (method note: shared/specs/mgdin.md).

The paper's (abstract): features differ in sparsity and information content, and exposing every
feature to the interaction layers at once lets low-information, sparse features inject noise and
mask the informative ones; so (1) the raw features are partitioned into groups of homogeneous
information density at several granularities, and (2) in the stacked interaction layers the
low-information groups are masked in early layers and progressively unmasked in deeper ones
(hierarchical masking), so that robust representations form on the dense groups first.

Ours:
- density rho_f per field, computed once on the training split in `prepare()` and kept in the
  buffers `field_density` / `field_order` (so a saved run reproduces its predictions without
  calling `prepare` again; before `prepare` the order is the identity). The measure is pluggable
  (`density`): "mutual_info" (default) is the label mutual information I(f; y) in nats, estimated
  by cross-fitting (label rates per value fitted on one random half of the rows, smoothed towards
  the base rate, the log-likelihood gain over the base rate measured on the other half, both
  directions averaged; `mutual_info_estimator="plug_in"` gives the plain plug-in estimate, which
  rates a field with one value per row at H(y) and so puts high-cardinality noise first);
  "sparsity" is the normalised mean log-frequency of the values, mean_i log count(v_i) / log n
  (1 = a constant field, 0 = every value unique). Numeric columns are cut into `numeric_bins`
  quantile bins first. A pooled id sequence is measured through the id of an element drawn
  uniformly from the row's history (each element weighs 1/len; an empty history is a value of
  its own), which is what its mean-pooled embedding summarises.
- granularities G in {2, 4, 8} (clipped to the number of fields F, duplicates dropped); each cuts
  the density-sorted field list into G contiguous, equal-size groups (sizes floor((j+1)F/G) -
  floor(jF/G)), so parameter shapes depend only on F and the config: the sort is a buffer
  permutation applied by gather. Token t_{s,j} = W_{s,j} [e_f]_{f in group} + b_{s,j} in R^D;
  T = sum_s G_s tokens; rank r_{s,j} = j (1 = densest).
- interaction stack: L pre-norm Transformer layers (multi-head self-attention + feed-forward,
  residuals, dropout). Hard deferral (default): token t is active at layer l iff
  r/G <= l/L, i.e. from its activation layer a_t = ceil(L r / G); inactive tokens are removed as
  keys/values (-inf attention bias) and are not updated (their raw token is carried unchanged, so
  it is injected as-is when it unmasks). If no token would be active at layer 1 (all G_s < L),
  the schedule is shifted earlier so that the densest tokens start at layer 1. Soft deferral
  (`deferral="soft"`): a gate g_t^l = sigmoid(alpha (l - l*_t)) with a learnable threshold l*_t
  initialised to a_t - 1/2 (so the gate rounds to the hard mask at initialisation) weighs token
  t as a key (attention bias log g) and its update, h <- h + g (layer(h) - h); alpha =
  `deferral_sharpness` is fixed.
- head: final LayerNorm, mean-pool over all tokens, MLP(256, 128) with ReLU, one logit
  (`readout="flatten"`, ours: the T final tokens concatenated in token order instead, so the
  head knows which group a state came from; mean pooling mixes them). Defaults
  d = 16, D = 64, L = 4, 2 heads, feed-forward width 2D, dropout 0.1 (the note's settings where
  it has them).

Added by us beyond the note:
- `input_norm="layer"` (default) layer-normalises every field embedding (numeric columns: their
  vectors; pooled sequences: the mean of their normalised elements) before grouping. With
  embeddings initialised N(0, 1e-4) the tokens' variance started far below the pre-norm
  LayerNorm's eps (1e-5), so the Transformer saw nearly nothing until the embeddings had grown;
  `input_norm="none"` gives the network as first written.
- Hard deferral computes layer l on its active tokens only (the tokens are sorted by activation
  layer once, so they are a prefix): exactly the masked computation, at about 60% of its cost.
- The group bias b_t (a token's own vector) counts as embedding-like (`Model.embedding_parameters`).
- `train_defaults`: 200 warm-up steps, cosine decay, patience 4, gradient clipping at 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    MAX_LAYERS,
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    Layers,
    Model,
    ModelConfig,
    ModelInputs,
    Units,
    register,
)
from agenticrs.models.layers import MLP, FastDropout, FeatureEmbedding

# ------------------------------------------------------------------------------ density measures
# A field is measured through "observations": a value id, the row's binary label, a weight (1 per
# row, 1/len per history element) and the row's cross-fitting fold.


def label_mutual_information(values: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Plug-in I(value; label) in nats from the weighted joint counts."""
    n_values = int(values.max()) + 1 if len(values) else 1
    joint = np.bincount(values * 2 + labels, weights=weights, minlength=2 * n_values).reshape(n_values, 2)
    total = joint.sum()
    if total <= 0:
        return 0.0
    p = joint / total
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def cross_fitted_label_information(
    values: np.ndarray, labels: np.ndarray, weights: np.ndarray, fold: np.ndarray, prior_strength: float = 1.0
) -> float:
    """Held-out estimate of I(value; label) in nats: mean log p(y | v) - log p(y) on one half with the
    rates fitted on the other (smoothed towards the base rate by `prior_strength` pseudo-rows)."""
    n_values = int(values.max()) + 1 if len(values) else 1
    gain, mass = 0.0, 0.0
    for k in (False, True):
        fit, held = fold == k, fold != k
        joint = np.bincount(
            values[fit] * 2 + labels[fit], weights=weights[fit], minlength=2 * n_values
        ).reshape(n_values, 2)
        base = (joint[:, 1].sum() + 1.0) / (joint.sum() + 2.0)
        rate = (joint[:, 1] + prior_strength * base) / (joint.sum(1) + prior_strength)
        y = labels[held] == 1
        p = np.where(y, rate[values[held]], 1.0 - rate[values[held]])
        p0 = np.where(y, base, 1.0 - base)
        gain += float((weights[held] * (np.log(p) - np.log(p0))).sum())
        mass += float(weights[held].sum())
    return gain / mass if mass > 0 else 0.0


def mean_log_frequency(values: np.ndarray, weights: np.ndarray, n_rows: int) -> float:
    """mean_i log count(v_i) / log n: 1 for a constant field, 0 when every value is unique."""
    counts = np.bincount(values, weights=weights)
    total = float(weights.sum())
    if total <= 0 or n_rows < 2:
        return 0.0
    return float((weights * np.log(np.maximum(counts[values], 1e-12))).sum() / total / math.log(n_rows))


def quantile_bins(column: np.ndarray, bins: int) -> np.ndarray:
    """Bin ids 0..k-1 of a numeric column by its quantiles (ties collapse bins; a 0/1 flag gives 2)."""
    column = np.nan_to_num(np.asarray(column, dtype=np.float64))
    edges = np.unique(np.quantile(column, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    ids = np.searchsorted(edges, column, side="left")
    return np.unique(ids, return_inverse=True)[1].astype(np.int64).reshape(-1)


Observations = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # values, labels, weights, fold


def _row_observations(values: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> Observations:
    return values.astype(np.int64), labels, np.ones(len(values)), fold


def _sequence_observations(ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> Observations:
    """Each history element weighs 1/len; an empty history is one observation of its own value."""
    ids = np.asarray(ids).astype(np.int64)
    lengths = np.minimum(np.asarray(lengths).astype(np.int64), ids.shape[1])
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    rows = np.nonzero(mask)[0]
    empty = np.nonzero(lengths == 0)[0]
    empty_value = int(ids.max()) + 1 if ids.size else 0
    values = np.concatenate([ids[mask], np.full(len(empty), empty_value, dtype=np.int64)])
    weights = np.concatenate([1.0 / lengths[rows], np.ones(len(empty))])
    all_rows = np.concatenate([rows, empty])
    return values, labels[all_rows], weights, fold[all_rows]


# --------------------------------------------------------------------------------------- config
class MGDINConfig(ModelConfig):
    embedding_dim: EmbeddingDim = Field(default=16, description="field embedding width d")
    token_dim: Units = Field(default=64, description="group token width D")
    granularities: list[Units] = Field(
        default=[2, 4, 8], min_length=1, max_length=MAX_LAYERS, description="groups per granularity"
    )
    num_layers: Layers = Field(default=4, description="interaction layers L")
    num_heads: Heads = 2
    feedforward_dim: Units = 128
    deferral: Literal["hard", "soft"] = "hard"
    deferral_sharpness: float = Field(default=8.0, gt=0, le=1e3, description="alpha of the soft gate")
    density: Literal["mutual_info", "sparsity"] = "mutual_info"
    mutual_info_estimator: Literal["cross_fitted", "plug_in"] = "cross_fitted"
    numeric_bins: int = Field(default=16, ge=2, le=4096)
    density_max_rows: int | None = Field(
        default=2_000_000, ge=1, le=10**12, description="evenly strided sample for prepare"
    )
    hidden_units: HiddenUnits = [256, 128]
    activation: Activation = "relu"
    dropout: Dropout = 0.1
    batch_norm: bool = False
    input_norm: Literal["none", "batch", "layer"] = Field(
        default="layer", description="normalise the field embeddings before grouping (ours; see the docstring)"
    )
    readout: Literal["mean", "flatten"] = Field(
        default="mean", description="head input: the mean of the final tokens, or all of them concatenated (ours)"
    )

    @model_validator(mode="after")
    def _check(self) -> MGDINConfig:
        if self.token_dim % self.num_heads:
            raise ValueError(f"token_dim {self.token_dim} is not divisible by num_heads {self.num_heads}")
        if any(g < 1 for g in self.granularities):
            raise ValueError("every granularity needs at least one group")
        return self


# ---------------------------------------------------------------------------------------- layers
def granularity_plan(num_fields: int, granularities: list[int]) -> list[int]:
    """Groups per granularity, clipped to the number of fields, duplicates dropped, ascending."""
    return sorted({min(g, num_fields) for g in granularities})


def activation_layers(ranks: torch.Tensor, groups: torch.Tensor, num_layers: int) -> torch.Tensor:
    """First layer (1-based) where r/G <= l/L, i.e. ceil(L r / G), shifted so that the earliest is 1."""
    first = (num_layers * ranks + groups - 1) // groups
    return first - (first.min() - 1)


class DeferredAttentionLayer(nn.Module):
    """Pre-norm Transformer layer whose keys carry an additive bias (0 / -inf, or log of a gate)."""

    def __init__(self, width: int, num_heads: int, feedforward_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.feedforward_norm = nn.LayerNorm(width)
        self.feedforward = nn.Sequential(
            nn.Linear(width, feedforward_dim), nn.GELU(), nn.Linear(feedforward_dim, width)
        )
        self.dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D), (T,) additive bias on the keys (None: every token is a key) -> (B, T, D)."""
        batch, tokens, width = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(batch, tokens, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        bias = None if key_bias is None else key_bias.to(x.dtype).unsqueeze(0).expand(tokens, tokens)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, tokens, width)))
        return x + self.dropout(self.feedforward(self.feedforward_norm(x)))


@register("mgdin")
class MGDIN(Model):
    paper = (
        "Xu et al., Deferred is Better: A Framework for Multi-Granularity Deferred Interaction of "
        "Heterogeneous Features, arXiv:2603.12586, 2026"
    )
    Config = MGDINConfig
    inputs = ModelInputs(min_categorical=1, min_fields_for_interaction=2)
    # a Transformer wants warm-up, a decaying rate and more patience than an MLP
    train_defaults: ClassVar[dict[str, Any]] = {
        "warmup_steps": 200,
        "lr_schedule": "cosine",
        "patience": 4,
        "grad_clip": 1.0,
    }
    # embedding-like: b_t, the learned vector of every group token (its type vector)
    embedding_like: ClassVar[tuple[str, ...]] = ("group_bias",)
    smoke_overrides = {
        "embedding_dim": 4,
        "token_dim": 8,
        "granularities": [2, 4],
        "num_layers": 2,
        "num_heads": 2,
        "feedforward_dim": 16,
        "hidden_units": [16],
        "dropout": 0.0,
    }

    def __init__(self, schema: FeatureSchema, config: MGDINConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        num_fields = self.embedding.num_fields
        self.field_names = (
            schema.categorical_names + list(schema.numeric) + [s.name for s in self.embedding.id_sequences]
        )
        self.register_buffer("field_order", torch.arange(num_fields, dtype=torch.long))  # densest first
        self.register_buffer("field_density", torch.zeros(num_fields))

        # token t: the sorted positions of its members (padded), its rank and its granularity
        members, ranks, groups = [], [], []
        self.granularities = granularity_plan(num_fields, config.granularities)
        for g in self.granularities:
            for j in range(g):
                members.append(list(range(j * num_fields // g, (j + 1) * num_fields // g)))
                ranks.append(j + 1)
                groups.append(g)
        width = max(len(m) for m in members)
        position = torch.tensor([m + [0] * (width - len(m)) for m in members], dtype=torch.long)
        present = torch.tensor([[True] * len(m) + [False] * (width - len(m)) for m in members])
        self.register_buffer("token_member_position", position, persistent=False)
        self.register_buffer("token_member_mask", present, persistent=False)
        self.register_buffer("token_rank", torch.tensor(ranks), persistent=False)
        self.register_buffer("token_groups", torch.tensor(groups), persistent=False)
        first = activation_layers(self.token_rank, self.token_groups, config.num_layers)
        self.register_buffer("token_activation_layer", first, persistent=False)
        layer_index = torch.arange(1, config.num_layers + 1).unsqueeze(1)
        self.register_buffer("deferred_group_mask", layer_index < first.unsqueeze(0), persistent=False)  # (L, T)
        # hard deferral runs layer l on its active tokens only: tokens sorted by activation layer,
        # so that the active ones are a prefix of `active_count[l]` tokens
        schedule = torch.argsort(first, stable=True)
        self.register_buffer("schedule_order", schedule, persistent=False)
        self.register_buffer("schedule_inverse", torch.argsort(schedule), persistent=False)
        self.active_count = [int((first <= layer).sum()) for layer in range(1, config.num_layers + 1)]

        d, dim = config.embedding_dim, config.token_dim
        weight = torch.zeros(len(members), width, d, dim)
        for t, m in enumerate(members):  # nn.Linear's init on the token's real inputs; padding stays 0
            bound = 1.0 / math.sqrt(len(m) * d)
            nn.init.uniform_(weight[t, : len(m)], -bound, bound)
        self.group_weight = nn.Parameter(weight)
        self.group_bias = nn.Parameter(torch.zeros(len(members), dim))
        self.deferral_threshold = (
            nn.Parameter(first.to(torch.float32) - 0.5) if config.deferral == "soft" else None
        )
        self.layers = nn.ModuleList(
            DeferredAttentionLayer(dim, config.num_heads, config.feedforward_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.mlp = MLP.from_config(self.readout_width, config, output_dim=1)

    @property
    def readout_width(self) -> int:
        """Width of the head's input: D for mean pooling, T * D for the concatenated tokens."""
        tokens = len(self.token_rank)
        return self.config.token_dim * (tokens if self.config.readout == "flatten" else 1)

    # ------------------------------------------------------------------------------- density
    def prepare(self, train: SplitArrays, label_index: int = 0) -> None:
        """Measure every field's information density on the training split and sort the fields."""
        density = torch.as_tensor(self.measure_density(train, label_index), dtype=torch.float32)
        order = torch.as_tensor(np.argsort(-density.numpy(), kind="stable"), dtype=torch.long)
        self.field_density.copy_(density)
        self.field_order.copy_(order)

    def measure_density(self, train: SplitArrays, label_index: int = 0) -> np.ndarray:
        """(F,) density per field in the embedding's field order (categorical, numeric, sequences)."""
        cfg = self.config
        labels_all = train["labels"]
        n = labels_all.shape[0]
        if n == 0:
            return np.zeros(self.embedding.num_fields)
        step = max(1, -(-n // cfg.density_max_rows)) if cfg.density_max_rows else 1
        labels = (np.asarray(labels_all[::step, label_index]) > 0.5).astype(np.int64)
        rows = len(labels)
        fold = np.random.default_rng(0).random(rows) < 0.5
        measure = self._measure()
        scores = []
        categorical = np.asarray(train["categorical"][::step])
        for f in range(categorical.shape[1]):
            scores.append(measure(_row_observations(categorical[:, f], labels, fold), rows))
        if self.schema.numeric:
            numeric = np.asarray(train["numeric"][::step])
            for f in range(numeric.shape[1]):
                binned = quantile_bins(numeric[:, f], cfg.numeric_bins)
                scores.append(measure(_row_observations(binned, labels, fold), rows))
        if self.embedding.pool_sequences:
            for seq in self.embedding.id_sequences:
                ids, lengths = train[f"seq/{seq.name}"][::step], train[f"seqlen/{seq.name}"][::step]
                scores.append(measure(_sequence_observations(ids, lengths, labels, fold), rows))
        return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)

    def _measure(self) -> Callable[[Observations, int], float]:
        cfg = self.config
        if cfg.density == "sparsity":
            return lambda obs, rows: mean_log_frequency(obs[0], obs[2], rows)
        if cfg.mutual_info_estimator == "plug_in":
            return lambda obs, rows: label_mutual_information(obs[0], obs[1], obs[2])
        return lambda obs, rows: cross_fitted_label_information(*obs)

    def field_groups(self) -> list[list[str]]:
        """Names of the member fields of every token, in token order (for reports and tests)."""
        order = self.field_order.tolist()
        return [
            [self.field_names[order[p]] for p, on in zip(pos, mask) if on]
            for pos, mask in zip(self.token_member_position.tolist(), self.token_member_mask.tolist())
        ]

    # ------------------------------------------------------------------------------- forward
    def group_tokens(self, fields: torch.Tensor) -> torch.Tensor:
        """(B, F, d) -> (B, T, D): t = W_t [e_f]_{f in group t} + b_t over the density-sorted fields."""
        members = self.field_order[self.token_member_position]  # (T, m) field indices
        gathered = fields.index_select(1, members.flatten()).view(fields.shape[0], *members.shape, fields.shape[-1])
        # padding members are removed through the (small) weight, not the (large) gathered inputs
        weight = self.group_weight * self.token_member_mask[..., None, None].to(fields.dtype)  # (T, m, d, D)
        return torch.einsum("btmd,tmde->bte", gathered, weight) + self.group_bias

    def deferral_gates(self) -> torch.Tensor:
        """(L, T) gate of every token at every layer: 0/1 for hard deferral, sigmoid for soft."""
        if self.deferral_threshold is None:
            return (~self.deferred_group_mask).to(self.group_bias.dtype)
        layer = torch.arange(1, len(self.layers) + 1, device=self.deferral_threshold.device, dtype=torch.float32)
        return torch.sigmoid(self.config.deferral_sharpness * (layer.unsqueeze(1) - self.deferral_threshold))

    def interact(self, tokens: torch.Tensor, token_order: bool = True) -> list[torch.Tensor]:
        """The token states after each interaction layer (L tensors of shape (B, T, D)).

        Hard deferral: an inactive token is neither a key nor updated, so layer l runs on the
        active tokens alone (exactly what masking them gives, at a fraction of the cost); the
        states are in token order, or in activation order with `token_order=False` (cheaper,
        for the order-free mean pooling of `forward`).
        """
        states = []
        h = tokens
        if self.deferral_threshold is None:
            h = h.index_select(1, self.schedule_order)
            for layer, active in zip(self.layers, self.active_count):
                h = layer(h) if active == h.shape[1] else torch.cat([layer(h[:, :active]), h[:, active:]], dim=1)
                states.append(h.index_select(1, self.schedule_inverse) if token_order else h)
        else:
            layer_index = torch.arange(1, len(self.layers) + 1, device=h.device, dtype=h.dtype)
            logits = self.config.deferral_sharpness * (layer_index.unsqueeze(1) - self.deferral_threshold.to(h.dtype))
            for layer, logit in zip(self.layers, logits):
                gate = torch.sigmoid(logit).view(1, -1, 1)
                h = h + gate * (layer(h, F.logsigmoid(logit)) - h)
                states.append(h)
        return states

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens = self.group_tokens(self.embedding(batch).fields)
        if self.config.readout == "flatten":  # which token says what matters: keep them apart, in token order
            pooled = self.final_norm(self.interact(tokens)[-1]).flatten(1)
        else:
            pooled = self.final_norm(self.interact(tokens, token_order=False)[-1]).mean(dim=1)
        return {"logit": self.mlp(pooled).squeeze(-1)}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]] | None:
        return self.readout_width, list(self.config.hidden_units)

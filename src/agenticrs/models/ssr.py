"""SSR: explicit sparsity for scalable recommendation (multi-view filter-then-fuse blocks).

Paper: Yu, Qiao, Shen, Wang, Zeng, "Beyond Dense Connectivity: Explicit Sparsity for Scalable
Recommendation", arXiv:2604.08011, 2026 (Alibaba International Digital Commerce). Only the abstract
was available to us, so most of this file is our design (see `shared/specs/ssr.md`).

The paper's (abstract): trained dense CTR MLPs are implicitly sparse (most weights drift to ~0), so
SSR builds the sparsity into the architecture. A block decomposes its input vector into parallel
*views*; each view filters the input at the dimension level, keeping a subset of dimensions, and
the views are combined by *dense fusion* ("filter-then-fuse"). Two filters: a Static Random Filter
(a fixed random subset of dimensions per view) and Iterative Competitive Sparse (ICS, a
differentiable, bio-inspired competition that keeps each instance's high-response dimensions).
SSR blocks replace the dense MLP tower over the concatenated field embeddings.

Ours (every equation below):
- One block maps x in R^D (D = D_in) to y in R^{D_out}. View v (of V, default 8) keeps
  k = ceil(rho * D) dimensions (rho = 0.25), then h_v = Act(W_v x_v + b_v) in R^m (`view_units`,
  SiLU); the views are fused densely with a residual projection:
  y = LayerNorm(W_fuse Dropout([h_1; ...; h_V]) + b + W_res x) (W_res = identity when D = D_out).
- Static filter: index sets S_v (|S_v| = k, sorted) drawn once from a generator seeded by
  `filter_seed` and the block's position, stored as a buffer (saved with the weights, no gradient).
  A random permutation of the D dimensions is split into V near-equal chunks (so the union covers
  every dimension whenever V * k >= D), and each view is topped up to k with random dimensions it
  does not hold yet. If V * k < D, full coverage is impossible and the views are disjoint chunks.
  All views are one gather x[:, S] -> (B, V, k) and one batched matmul (einsum).
- ICS filter: view v scores every dimension with a learned gain, z_v = g_v * x (g_v in R^D,
  initialised U(0.5, 1.5) so that the views start with different preferences). Competition on the
  responses a^0 = |z_v| for T iterations (default 3):
      theta_t = sg(k-th largest of a^t),  mu_t = sg(mean of a^t)      (sg: stop-gradient)
      a^{t+1} = ReLU(a^t - beta * mu_t - gamma * ReLU(theta_t - a^t))
  (global inhibition beta = 0.1; the dimensions below the k-th strongest are inhibited gamma = 3
  times their deficit, so the losers die within a few iterations). x_v = sign(z_v) * a^T. The
  thresholds are detached (straight-through): a surviving dimension passes its gradient
  (d x_v / d z_v = 1, or (1 + gamma)^j for a late survivor), a suppressed one gets exactly zero.
  After T = 3 iterations about k dimensions survive (k to k + 10% on Gaussian responses; more
  iterations -> closer to k). The per-view transform then reads the whole (sparse) D-vector,
  W_v in R^{m x D}, as one dense batched matmul (gathering the survivors' weight rows costs more
  memory than it saves at these widths). Cost: every view holds a (B, D) tensor through T
  iterations, so ICS trains about 10x slower than the static filter on CPU (Frappe, default
  widths: ~800 vs ~7,000 samples/s) and the static filter is the default.
- N blocks (`num_blocks`, default 2) of width `block_units` (default 400) stacked in place of the
  MLP tower; head Linear(D_out -> 1). Dropout 0.1 on the views' outputs before fusion. No
  sparsity loss (the sparsity is structural). Not done: annealing T or k during training.
- `input_norm` (default "none"; "batch" gave 0.9459 test AUC on Frappe against ~0.93 without)
  normalises the field embeddings before the first block.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Batch, Dropout, EmbeddingDim, Heads, Layers, Model, ModelConfig, ModelInputs, Units, register
from agenticrs.models.layers import FastDropout, FeatureEmbedding


class SSRConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    filter: Literal["static", "ics"] = "static"
    num_blocks: Layers = 2
    block_units: Units = Field(default=400, description="output width D_out of every block")
    num_views: Heads = Field(default=8, description="V parallel views per block")
    keep_ratio: float = Field(default=0.25, gt=0, le=1, description="rho: each view keeps k = ceil(rho * D_in) dims")
    view_units: Units = Field(default=64, description="m: width of each view's dense transform")
    ics_iterations: int = Field(default=3, ge=1, le=100, description="T competition iterations (filter='ics')")
    ics_inhibition: float = Field(default=3.0, ge=0, le=1e3, description="gamma: inhibition of dims below the k-th")
    ics_global_inhibition: float = Field(
        default=0.1, ge=0, le=1e3, description="beta: inhibition by the mean response"
    )
    activation: Literal["silu", "relu"] = "silu"
    dropout: Dropout = 0.1
    filter_seed: int = Field(default=0, ge=0, le=2**63 - 1)


def kept_dims(input_dim: int, keep_ratio: float) -> int:
    """k = ceil(rho * D_in), at least 1 and at most D_in."""
    return min(input_dim, max(1, math.ceil(keep_ratio * input_dim - 1e-9)))


def static_view_indices(input_dim: int, num_views: int, k: int, seed: int) -> torch.Tensor:
    """(V, k) sorted index sets: chunks of one random permutation, each topped up to k at random."""
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(input_dim, generator=generator)
    chunks = torch.tensor_split(permutation, num_views)
    views = []
    for chunk in chunks:
        chunk = chunk[:k]
        if len(chunk) < k:
            free = torch.ones(input_dim, dtype=torch.bool)
            free[chunk] = False
            candidates = free.nonzero().squeeze(1)
            extra = candidates[torch.randperm(len(candidates), generator=generator)[: k - len(chunk)]]
            chunk = torch.cat([chunk, extra])
        views.append(chunk.sort().values)
    return torch.stack(views)


def competitive_sparse(z: torch.Tensor, k: int, iterations: int, gamma: float, beta: float) -> torch.Tensor:
    """Iterative competition along the last dimension; about k entries of each row stay non-zero."""
    response = z.abs()
    k = min(k, z.shape[-1])
    for _ in range(iterations):
        theta = response.topk(k, dim=-1).values[..., -1:].detach()
        mean = response.mean(dim=-1, keepdim=True).detach()
        response = torch.relu(response - beta * mean - gamma * torch.relu(theta - response))
    return torch.sign(z) * response


class SSRBlock(nn.Module):
    """One filter-then-fuse block, (B, D_in) -> (B, D_out)."""

    def __init__(self, input_dim: int, output_dim: int, config: SSRConfig, seed: int) -> None:
        super().__init__()
        self.filter = config.filter
        self.k = kept_dims(input_dim, config.keep_ratio)
        views, units = config.num_views, config.view_units
        self.iterations = config.ics_iterations
        self.gamma, self.beta = config.ics_inhibition, config.ics_global_inhibition
        if config.filter == "static":
            self.register_buffer("view_indices", static_view_indices(input_dim, views, self.k, seed))
            view_input = self.k
        else:
            self.gain = nn.Parameter(torch.empty(views, input_dim).uniform_(0.5, 1.5))
            view_input = input_dim
        self.view_weight = nn.Parameter(torch.empty(views, view_input, units))
        self.view_bias = nn.Parameter(torch.zeros(views, units))
        for v in range(views):  # Xavier per view, as nn.Linear(view_input, units)
            nn.init.xavier_normal_(self.view_weight.data[v].T)
        self.activation = nn.SiLU() if config.activation == "silu" else nn.ReLU()
        self.dropout = FastDropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.fuse = nn.Linear(views * units, output_dim)
        nn.init.xavier_normal_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)
        self.residual = nn.Identity() if input_dim == output_dim else nn.Linear(input_dim, output_dim, bias=False)
        self.norm = nn.LayerNorm(output_dim)

    def filtered(self, x: torch.Tensor) -> torch.Tensor:
        """The views' filtered inputs: (B, V, k) for the static filter, (B, V, D_in) sparse for ICS."""
        if self.filter == "static":
            return x.index_select(1, self.view_indices.flatten()).view(x.shape[0], *self.view_indices.shape)
        z = x.unsqueeze(1) * self.gain
        return competitive_sparse(z, self.k, self.iterations, self.gamma, self.beta)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V, m): every view's dense transform of its filtered input."""
        return self.activation(torch.einsum("bvk,vkm->bvm", self.filtered(x), self.view_weight) + self.view_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.views(x).flatten(1))
        return self.norm(self.fuse(h) + self.residual(x))


def ssr_dense_parameters(input_dim: int, config: SSRConfig) -> int:
    """Parameters of the SSR tower and head (everything but the embeddings), from the config alone."""
    total, width = 0, input_dim
    views, units = config.num_views, config.view_units
    for _ in range(config.num_blocks):
        out = config.block_units
        view_input = kept_dims(width, config.keep_ratio) if config.filter == "static" else width
        total += (views * width if config.filter == "ics" else 0)  # ICS gains
        total += views * view_input * units + views * units  # per-view transforms
        total += views * units * out + out  # fusion
        total += 0 if width == out else width * out  # residual projection
        total += 2 * out  # LayerNorm
        width = out
    return total + width + 1  # head


def embedding_and_dense_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters of the model's FeatureEmbedding modules, all other parameters)."""
    embedded = {id(p) for m in model.modules() if isinstance(m, FeatureEmbedding) for p in m.parameters()}
    params = list(model.parameters())
    embedding = sum(p.numel() for p in params if id(p) in embedded)
    return embedding, sum(p.numel() for p in params) - embedding


@register("ssr")
class SSR(Model):
    paper = (
        "Yu et al., Beyond Dense Connectivity: Explicit Sparsity for Scalable Recommendation, "
        "arXiv:2604.08011, 2026"
    )
    Config = SSRConfig
    inputs = ModelInputs(min_categorical=1)
    smoke_overrides = {"embedding_dim": 4, "block_units": 16, "view_units": 8, "num_views": 4, "dropout": 0.0}

    def __init__(self, schema: FeatureSchema, config: SSRConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        blocks, width = [], self.embedding.output_dim
        for position in range(config.num_blocks):
            blocks.append(SSRBlock(width, config.block_units, config, seed=config.filter_seed * 1009 + position))
            width = config.block_units
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, 1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.embedding(batch).fields.flatten(1)
        return {"logit": self.head(self.blocks(x)).squeeze(-1)}

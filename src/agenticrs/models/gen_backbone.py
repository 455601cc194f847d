"""The discrete-diffusion backbone of the generative CTR family (DGenCTR, SGCTR, HeteGenCTR).

A sample is an unordered set of feature tokens plus its label token, X = {f_1, ..., f_N, y}
(DGenCTR, arXiv:2508.14500). The forward process absorbs tokens into [MASK]: at a timestep
t ~ U{1..T} each feature token is masked independently with probability lambda(t) (`mask_rate`),
the label with probability max(lambda(t), `label_mask_floor`). A bidirectional transformer
(no causal mask) restores them: per-field generator heads G_k(h) are scored by cosine against the
clean values of the same field in other rows of the batch (sampled softmax, SGCTR's
arXiv:2511.14403 equation with a temperature), the label head reads the label token.

Paper's (as far as the abstracts and summaries go): the token set with the label as a token,
absorbing corruption with a growing mask rate, a bidirectional denoiser, the cosine / in-batch
sampled-softmax reconstruction, the label head, full-parameter transfer.
Ours (the specs' [our design] parts): the linear (or cosine) schedule kept in
[`min_mask_rate`, 1], T = 100, a learned timestep embedding added to every token (t = 0: clean
input), the 1/lambda ELBO weight (`loss_weighting="elbo"`) or a plain mean over masked tokens,
numeric columns bucketised into `numeric_bins` quantile buckets of the training split (computed in
`prepare`, saved as buffers) so that they are tokens with a vocabulary, behaviour sequences either
mean-pooled into one token (`sequences="pooled"`) or tokenised (`"tokenised"`: the
`sequence_tokens` most recent elements, one token each, sharing their field's head), negatives
capped at the first `num_negatives` rows of the batch with values equal to the positive left out,
tau = 0.2 (the spec's range is 0.1-0.2; 0.1 slowed the label's learning on a planted-signal set),
the pre-LN transformer block that takes a key-side attention bias and a per-query output scale
(HeteGenCTR's difficulty-guided attention uses both).

`GenerativeCTR` is the model base the three registered models share: phases (generative
pre-training for `pretrain_steps` optimiser steps, then CTR fine-tuning; the engine tells the model
its step through `Model.begin_step`), what is transferred at the switch, and the losses. The
registered models live in `dgenctr.py`, `sgctr.py` and `hetegenctr.py`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    Layers,
    LossWeight,
    Model,
    ModelConfig,
    ModelInputs,
    Units,
)
from agenticrs.models.layers import batch_key_seq, batch_key_seqlen, masked_mean, sequence_mask

LABEL_MASKED = 2  # the label token's state: 0 / 1 = the label is visible, 2 = [MASK]
Schedule = Literal["linear", "cosine"]


def mask_rate(t: torch.Tensor, timesteps: int, schedule: Schedule = "linear", minimum: float = 0.1) -> torch.Tensor:
    """lambda(t): the share of tokens absorbed into [MASK] at step t in 0..T, increasing in t and kept in
    [minimum, 1] for t >= 1 (t = 0 is the clean sample: rate 0). Linear: t / T; cosine: 1 - cos(pi/2 t/T)."""
    frac = t.float() / timesteps
    rate = frac if schedule == "linear" else 1.0 - torch.cos(frac * math.pi / 2)
    return torch.where(t > 0, rate.clamp(minimum, 1.0), torch.zeros_like(rate))


def _value_keys(values: torch.Tensor) -> torch.Tensor:
    """A scalar per vector, equal for equal vectors (pooled values have no id to compare)."""
    weights = torch.linspace(1.0, 2.0, values.shape[-1], device=values.device, dtype=values.dtype)
    return (values.detach() * weights).sum(-1)


def sampled_softmax_loss(
    predicted: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor, candidate_valid: torch.Tensor,
    temperature: float, num_negatives: int, negatives: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Per-token cross-entropy -log p(true value) against in-batch values of the same token position.

    predicted (B, N, d): G_k(h); targets (B, N, d): the clean values; ids (B, N) value ids (equal ids
    are the same value; -1: a pooled value, compared by vector); candidate_valid (B, N): rows whose
    value may be a negative. The score of candidate v is cos(v, G_k(h)) / temperature; the candidates
    of row b are its own value and the values of rows 0..num_negatives-1 that differ from it (ids -2
    mark padding, never valid). `negatives` = (values (M, N, d), ids, valid) offers another set
    instead of the batch (SGCTR's inference bank). Returns (B, N).
    """
    p = F.normalize(predicted, dim=-1)
    v = F.normalize(targets, dim=-1)
    positive = (p * v).sum(-1, keepdim=True) / temperature  # (B, N, 1)
    if negatives is None:
        m = min(num_negatives, targets.shape[0])
        neg_values, neg_ids, neg_valid = targets[:m], ids[:m], candidate_valid[:m]
    else:
        neg_values, neg_ids, neg_valid = negatives
    scores = torch.einsum("bnd,mnd->bnm", p, F.normalize(neg_values, dim=-1)) / temperature  # (B, N, M)
    same = ids.unsqueeze(2) == neg_ids.T.unsqueeze(0)  # (B, N, M)
    by_vector = (ids == -1).unsqueeze(2)
    if bool(by_vector.any()):
        same = torch.where(by_vector, _value_keys(targets).unsqueeze(2) == _value_keys(neg_values).T.unsqueeze(0), same)
    scores = scores.masked_fill(same | ~neg_valid.T.unsqueeze(0), float("-inf"))
    logits = torch.cat([positive, scores], dim=2)
    return torch.logsumexp(logits, dim=2) - positive.squeeze(2)


class GenBackboneConfig(ModelConfig):
    """Settings of the backbone shared by the whole family; defaults are small (CPU)."""

    embedding_dim: EmbeddingDim = 16
    num_layers: Layers = 2
    num_heads: Heads = 2
    ff_dim: Units = Field(default=64, description="width of the transformer's feed-forward layer")
    dropout: Dropout = 0.1
    head_hidden: Units = Field(default=32, description="hidden width of each per-field generator head G_k")
    timesteps: int = Field(default=100, ge=1, le=100_000, description="T of the discrete forward process")
    schedule: Schedule = "linear"
    min_mask_rate: float = Field(default=0.1, ge=0.0, le=1.0, description="lambda(t) is kept in [this, 1]")
    label_mask_floor: float = Field(default=0.5, ge=0.0, le=1.0, description="P(label masked) >= this in pre-training")
    temperature: float = Field(default=0.2, gt=0.0, le=10.0, description="tau of the cosine sampled softmax")
    num_negatives: int = Field(default=256, ge=1, le=65_536, description="in-batch rows offered as negatives")
    loss_weighting: Literal["elbo", "mean"] = "elbo"
    sequences: Literal["pooled", "tokenised"] = "pooled"
    sequence_tokens: int = Field(default=8, ge=1, le=1024, description="most recent elements tokenised per sequence")
    numeric_bins: int = Field(default=16, ge=2, le=4096, description="quantile buckets of each numeric column")
    init_std: float = Field(default=0.05, gt=0.0, le=10.0)


class GenBlock(nn.Module):
    """Pre-LN transformer block; `key_bias` (T,) is added to every attention logit of key j and
    `query_scale` (T,) scales the attention output flowing into query token i."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding_dim {dim} must be a multiple of num_heads {heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, query_scale: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # bias (B, 1, 1, n)
        attended = self.out(attended.transpose(1, 2).reshape(b, n, d))
        if query_scale is not None:
            attended = attended * query_scale.view(1, n, 1)
        x = x + self.dropout(attended)
        return x + self.dropout(self.ff(self.norm2(x)))


class GenBackbone(nn.Module):
    """Field tokens + label token -> transformer -> generator heads and label head."""

    embedding_like: ClassVar[tuple[str, ...]] = ("mask_embedding", "position", "label_embedding")

    def __init__(self, schema: FeatureSchema, config: GenBackboneConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embedding_dim
        self.categorical = [c.name for c in schema.categorical]
        self.numeric = list(schema.numeric)
        self.id_sequences = list(schema.id_sequences)
        offsets, total = {}, 0
        for c in schema.categorical:
            offsets[c.name], total = total, total + c.vocab_size
        for s in self.id_sequences:
            if s.table is None:
                offsets[s.name], total = total, total + s.vocab_size
        numeric_offset = total
        total += len(self.numeric) * config.numeric_bins
        self.values = nn.Embedding(max(total, 1), d)
        nn.init.normal_(self.values.weight, std=config.init_std)
        first = torch.tensor([offsets[c] for c in self.categorical], dtype=torch.long)
        self.register_buffer("categorical_offsets", first, persistent=False)
        self.sequence_offsets = [offsets[s.table if s.table is not None else s.name] for s in self.id_sequences]
        self.register_buffer(
            "numeric_offsets", numeric_offset + config.numeric_bins * torch.arange(len(self.numeric), dtype=torch.long),
            persistent=False,
        )  # fmt: skip
        # numeric bucket edges (quantiles of the training split, `fit_numeric_edges`); a standard-normal
        # grid until then
        grid = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0, 1, config.numeric_bins + 1)[1:-1])
        self.register_buffer("numeric_edges", grid.repeat(len(self.numeric), 1).contiguous())
        # token layout: categorical fields, numeric columns, sequences (1 token each, or sequence_tokens)
        per_sequence = 1 if config.sequences == "pooled" else config.sequence_tokens
        self.field_names = [*self.categorical, *self.numeric, *(s.name for s in self.id_sequences)]
        token_field = list(range(len(self.categorical) + len(self.numeric)))
        for i in range(len(self.id_sequences)):
            token_field += [len(self.categorical) + len(self.numeric) + i] * per_sequence
        self.register_buffer("token_field", torch.tensor(token_field, dtype=torch.long), persistent=False)
        self.num_fields, self.num_tokens = len(self.field_names), len(token_field)
        self.mask_embedding = nn.Parameter(torch.randn(self.num_fields, d) * config.init_std)
        self.position = nn.Parameter(torch.randn(self.num_tokens + 1, d) * config.init_std)
        self.label_embedding = nn.Parameter(torch.randn(3, d) * config.init_std)  # 0, 1, [MASK]
        self.time = nn.Embedding(config.timesteps + 1, d)
        nn.init.zeros_(self.time.weight)
        self.blocks = nn.ModuleList(
            GenBlock(d, config.num_heads, config.ff_dim, config.dropout) for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        k, hidden = self.num_fields, config.head_hidden
        # per-field generator heads G_k: d -> hidden -> d, as batched weights indexed by field
        self.head_w1 = nn.Parameter(torch.randn(k, d, hidden) / math.sqrt(d))
        self.head_b1 = nn.Parameter(torch.zeros(k, hidden))
        self.head_w2 = nn.Parameter(torch.randn(k, hidden, d) / math.sqrt(hidden))
        self.head_b2 = nn.Parameter(torch.zeros(k, d))
        self.label_head = nn.Linear(d, 1)

    # -- tokens ---------------------------------------------------------------------------------
    def fit_numeric_edges(self, train: SplitArrays, max_rows: int = 200_000) -> None:
        """Quantile bucket edges of every numeric column on (a prefix of) the training split."""
        if not self.numeric:
            return
        rows = min(train.rows, max_rows)
        values = np.asarray(train["numeric"][:rows], dtype=np.float64)
        qs = np.linspace(0, 1, self.config.numeric_bins + 1)[1:-1]
        edges = np.quantile(values, qs, axis=0).T  # (F_num, bins - 1)
        self.numeric_edges.copy_(torch.as_tensor(edges, dtype=self.numeric_edges.dtype))

    def tokens(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values (B, N, d), value ids (B, N) with -1 for pooled sequences, valid (B, N) bool: tokens
        that exist, i.e. not padding of a tokenised sequence nor an empty pooled sequence)."""
        cat = batch["categorical"].long() + self.categorical_offsets
        ids, valid = [cat], [torch.ones_like(cat, dtype=torch.bool)]
        vectors = [self.values(cat)]
        if self.numeric:
            numeric = batch["numeric"].float()
            buckets = torch.stack(
                [torch.bucketize(numeric[:, j].contiguous(), self.numeric_edges[j]) for j in range(len(self.numeric))], 1
            )  # fmt: skip
            num_ids = buckets + self.numeric_offsets
            ids.append(num_ids)
            valid.append(torch.ones_like(num_ids, dtype=torch.bool))
            vectors.append(self.values(num_ids))
        for seq, offset in zip(self.id_sequences, self.sequence_offsets, strict=True):
            raw = batch[batch_key_seq(seq.name)].long()
            lengths = batch[batch_key_seqlen(seq.name)].long()
            if self.config.sequences == "pooled":
                mask = sequence_mask(lengths, raw.shape[1])
                vectors.append(masked_mean(self.values(raw + offset), mask).unsqueeze(1))
                ids.append(torch.full_like(lengths, -1).unsqueeze(1))
                valid.append((lengths > 0).unsqueeze(1))
            else:  # the most recent `sequence_tokens` elements (sequences are left-aligned)
                count = self.config.sequence_tokens
                positions = lengths.unsqueeze(1) - count + torch.arange(count, device=raw.device)
                present = positions >= 0
                picked = torch.gather(raw, 1, positions.clamp_min(0).clamp_max(raw.shape[1] - 1)) * present
                token_ids = torch.where(present, picked + offset, torch.zeros_like(picked))
                vectors.append(self.values(token_ids) * present.unsqueeze(-1))
                ids.append(torch.where(present, token_ids, torch.full_like(token_ids, -2)))
                valid.append(present)
        return torch.cat(vectors, 1), torch.cat(ids, 1), torch.cat(valid, 1)

    # -- denoiser -------------------------------------------------------------------------------
    def encode(
        self, values: torch.Tensor, valid: torch.Tensor, feature_masked: torch.Tensor, label_state: torch.Tensor,
        t: torch.Tensor, key_bias: torch.Tensor | None = None, query_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """H (B, N + 1, d): masked feature tokens read their field's [MASK] vector, the label token reads
        its state (0, 1 or [MASK]); every token gets its position and the timestep's embedding. Padding
        tokens are never attended to; `key_bias` (N + 1,) is added to the logits of each key."""
        masks = self.mask_embedding[self.token_field].unsqueeze(0).expand_as(values)
        features = torch.where(feature_masked.unsqueeze(-1), masks, values)
        x = torch.cat([features, self.label_embedding[label_state].unsqueeze(1)], 1)
        x = x + self.position.unsqueeze(0) + self.time(t).unsqueeze(1)
        keep = torch.cat([valid | feature_masked, torch.ones_like(valid[:, :1])], 1)
        bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, float("-inf"))
        if key_bias is not None:
            bias = bias + key_bias.unsqueeze(0)
        bias = bias[:, None, None, :]
        for block in self.blocks:
            x = block(x, bias, query_scale)
        return self.final_norm(x)

    def generate(self, hidden: torch.Tensor) -> torch.Tensor:
        """G_k(h) for every feature token (B, N, d), each token through its field's head."""
        h = hidden[:, : self.num_tokens]
        f = self.token_field
        inner = F.gelu(torch.einsum("bnd,ndh->bnh", h, self.head_w1[f]) + self.head_b1[f])
        return torch.einsum("bnh,nhd->bnd", inner, self.head_w2[f]) + self.head_b2[f]

    def label_logit(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.label_head(hidden[:, -1]).squeeze(-1)

    def reconstruction(self, hidden: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-token sampled-softmax cross-entropy (B, N) of every token (the caller keeps the masked ones)."""
        cfg = self.config
        return sampled_softmax_loss(self.generate(hidden), values, ids, valid, cfg.temperature, cfg.num_negatives)

    def corrupt(
        self, valid: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The forward process: (t (B,), lambda(t) (B,), feature_masked (B, N)) with t ~ U{1..T}."""
        b = valid.shape[0]
        cfg = self.config
        t = torch.randint(1, cfg.timesteps + 1, (b,), device=valid.device, generator=generator)
        rate = mask_rate(t, cfg.timesteps, cfg.schedule, cfg.min_mask_rate)
        masked = (torch.rand(valid.shape, device=valid.device, generator=generator) < rate.unsqueeze(1)) & valid
        return t, rate, masked

    def field_losses(self, per_token: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_k (K,): mean loss of field k over its masked tokens, count_k (K,): how many there were)."""
        k = self.num_fields
        weights = masked.float()
        sums = torch.zeros(k, device=per_token.device).index_add(0, self.token_field, (per_token * weights).sum(0))
        counts = torch.zeros(k, device=per_token.device).index_add(0, self.token_field, weights.sum(0))
        return sums / counts.clamp_min(1.0), counts


class GenerativeCTRConfig(GenBackboneConfig):
    """Phases and transfer, shared by the family's models."""

    pretrain_steps: int = Field(
        default=0, ge=0, le=10_000_000,
        description="optimiser steps of generative pre-training before CTR fine-tuning (part of train.max_steps)",
    )  # fmt: skip
    transfer: Literal["all", "embeddings"] = Field(
        default="all", description="what fine-tuning keeps from pre-training (embeddings: the rest is re-initialised)"
    )
    generative_weight: LossWeight = Field(default=0.0, description="weight of the reconstruction loss in fine-tuning")


class GenerativeCTR(Model):
    """A model of the family: the backbone, phases, losses. Subclasses change the generative loss
    (`generative_loss`), the attention bias (`attention_terms`) or inference (`score`)."""

    Config: ClassVar[type[ModelConfig]] = GenerativeCTRConfig
    inputs = ModelInputs(min_categorical=1)
    smoke_overrides: ClassVar[dict[str, Any]] = {
        "embedding_dim": 8, "num_layers": 1, "num_heads": 2, "ff_dim": 16, "head_hidden": 8, "num_negatives": 32,
        "dropout": 0.0,
    }  # fmt: skip
    train_defaults: ClassVar[dict[str, Any]] = {"warmup_steps": 50}
    training_only: ClassVar[tuple[str, ...]] = ("backbone.mask_embedding", "backbone.head_")
    # the tokens enter a pre-LN transformer, which layer-normalises them before every attention
    inert_config: ClassVar[frozenset[str]] = frozenset({"input_norm"})

    def __init__(self, schema: FeatureSchema, config: GenerativeCTRConfig) -> None:
        super().__init__(schema, config)
        self.config: GenerativeCTRConfig = config
        self.backbone = GenBackbone(schema, config)
        # the phase the engine's step puts the model in (`begin_step`); saved so that a resumed run
        # neither re-initialises twice nor forgets that it did
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("transferred", torch.zeros((), dtype=torch.bool))
        self.last_stats: dict[str, float] = {}

    # -- the engine's hooks ---------------------------------------------------------------------
    def prepare(self, train: SplitArrays, label_index: int = 0) -> None:
        self.backbone.fit_numeric_edges(train)

    def begin_step(self, step: int) -> None:
        """Before optimiser step `step` (1-based): the phase switch, and the embeddings-only transfer."""
        self.step.fill_(step)
        if step > self.config.pretrain_steps and self.config.pretrain_steps > 0 and not bool(self.transferred):
            if self.config.transfer == "embeddings":
                self.reinitialise_all_but_embeddings()
            self.transferred.fill_(True)

    def evaluation_counts(self, step: int) -> bool:
        """Evaluations during pre-training neither stop the run nor become its best checkpoint."""
        return step > self.config.pretrain_steps

    @property
    def pretraining(self) -> bool:
        return self.training and 0 < int(self.step) <= self.config.pretrain_steps

    def reinitialise_all_but_embeddings(self) -> None:
        """The embeddings-only control: keep the value tables, fresh everything else."""
        fresh = type(self)(self.schema, self.config).to(self.step.device)
        keep = {"backbone.values.weight"}
        own = self.state_dict()
        for name, value in fresh.state_dict().items():
            if name not in keep and name not in ("step", "transferred"):
                own[name].copy_(value)

    # -- forward --------------------------------------------------------------------------------
    def attention_terms(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(key bias (N + 1,), query scale (N + 1,)) added inside attention; none by default."""
        return None, None

    def encode(self, values, valid, feature_masked, label_state, t) -> torch.Tensor:  # noqa: ANN001
        bias, scale = self.attention_terms()
        return self.backbone.encode(values, valid, feature_masked, label_state, t, bias, scale)

    def generative_loss(self, per_token: torch.Tensor, masked: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss over the masked feature tokens: ELBO-weighted (1 / lambda per row,
        over all tokens) or the plain mean over masked tokens."""
        if self.config.loss_weighting == "elbo":
            per_row = (per_token * masked).sum(1) / rate.clamp_min(1e-6)
            return per_row.sum() / (per_token.shape[0] * per_token.shape[1])
        return (per_token * masked).sum() / masked.sum().clamp_min(1)

    def clean(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fine-tuning and inference view: every feature visible, the label token masked, t = 0."""
        values, ids, valid = self.backbone.tokens(batch)
        b = values.shape[0]
        no_mask = torch.zeros_like(valid)
        label = torch.full((b,), LABEL_MASKED, dtype=torch.long, device=values.device)
        hidden = self.encode(values, valid, no_mask, label, torch.zeros_like(label))
        return hidden, values, ids, valid

    def score(self, batch: Batch) -> torch.Tensor:
        """The CTR logit at inference: one pass with the label masked (SGCTR refines first)."""
        return self.backbone.label_logit(self.clean(batch)[0])

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not self.training:
            return {"logit": self.score(batch)}
        if self.pretraining:
            return self.pretrain_forward(batch)
        hidden, values, ids, valid = self.clean(batch)
        out = {"logit": self.backbone.label_logit(hidden)}
        if self.config.generative_weight > 0:
            out["aux_loss"] = self.config.generative_weight * self.corrupted_loss(values, ids, valid, label=None)
        return out

    def pretrain_forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Generative pre-training: features and the label are corrupted and restored. The label's
        loss is the task's BCE over the rows whose label token was masked (`label_mask`)."""
        values, ids, valid = self.backbone.tokens(batch)
        t, rate, masked = self.backbone.corrupt(valid)
        label_rate = rate.clamp_min(self.config.label_mask_floor)
        label_masked = torch.rand_like(label_rate) < label_rate
        labels = batch["label"].nan_to_num(0.0).long()
        label_state = torch.where(label_masked, torch.full_like(labels, LABEL_MASKED), labels)
        hidden = self.encode(values, valid, masked, label_state, t)
        per_token = self.backbone.reconstruction(hidden, values, ids, valid)
        return {
            "logit": self.backbone.label_logit(hidden),
            "label_mask": label_masked,
            "aux_loss": self.generative_loss(per_token, masked, rate),
        }

    def corrupted_loss(self, values, ids, valid, label: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
        """The generative loss of one corrupted pass with the label token masked (fine-tuning's term)."""
        t, rate, masked = self.backbone.corrupt(valid)
        label_state = torch.full_like(t, LABEL_MASKED)
        hidden = self.encode(values, valid, masked, label_state, t)
        per_token = self.backbone.reconstruction(hidden, values, ids, valid)
        return self.generative_loss(per_token, masked, rate)

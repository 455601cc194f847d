"""Layers shared by the zoo: the feature-embedding layer, an MLP and the interaction layers.

`FeatureEmbedding` turns a batch into per-field embeddings with one lookup in one concatenated
table (fast on CPU), plus history sequences with masks; a model file then holds only its own idea.
The interaction layers several models use (FM's pairwise term, DCN-V2's cross network, AutoInt's
interacting layer, DIN's attention unit) live here too, so that a model and the building blocks
of a composition (`agenticrs.models.blocks`) run one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from agenticrs.features.schema import FeatureSchema, SequenceInput


def batch_key_seq(name: str) -> str:
    return f"seq/{name}"


def batch_key_seqlen(name: str) -> str:
    return f"seqlen/{name}"


def sequence_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, L) bool, True at real (non-padding) positions; sequences are left-aligned."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real positions of (..., L, d); an empty sequence gives zeros. One batched
    (1, L) x (L, d) product per row: a multiply by the broadcast mask and a sum would be two
    passes over the values (and a slow broadcast in ONNX Runtime, a third of a served DeepFM)."""
    weights = mask.to(values.dtype).unsqueeze(-2)
    return (weights @ values).squeeze(-2) / weights.sum(-1).clamp_min(1.0)


@dataclass
class EmbeddedBatch:
    """The embedded view of a batch.

    fields: (B, F, d) — one embedding per categorical field, per numeric column, and (when
    pooling is on) one mean-pooled embedding per id sequence.
    sequences / masks: name -> (B, L, d) / (B, L) for id sequences.
    """

    fields: torch.Tensor
    sequences: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    categorical: torch.Tensor  # (B, F_cat, d), the candidate-side lookups (targets of attention)

    def field(self, schema: FeatureSchema, name: str) -> torch.Tensor:
        return self.categorical[:, schema.categorical_index(name)]


InputNorm = Literal["none", "batch", "layer"]


class SlotNorm(nn.Module):
    """Normalisation of embedding vectors by *slot* (one slot per vocabulary or numeric column).

    Every looked-up vector of width d belongs to a slot s (a categorical field's vocabulary, which
    the id sequences sharing it also use; the own vocabulary of an id sequence; a numeric column),
    and is normalised with that slot's map, then scaled by the slot's gain g_s and shifted by b_s
    (both (d,), initialised 1 and 0):

    - "layer": y = LayerNorm(x) * g_s + b_s over the d components of each vector (no statistics);
    - "batch": y = (x - mu_s) / sqrt(var_s + eps) * g_s + b_s per component, mu_s / var_s being
      the mean / biased variance over every real vector of slot s in the call (a candidate's
      item and the items of the histories together), kept as running averages (momentum 0.1,
      unbiased variance, as `nn.BatchNorm1d`) for evaluation, where a prediction then depends on
      its own row only. For a (B, F, d) field matrix this is batch norm over the F * d features.

    `forward` takes several parts at once (e.g. the candidate's fields and the histories, with
    different shapes) so that a slot's statistics are estimated on all of its lookups together.
    Padding positions (mask False) neither count in the statistics nor change: they are zeroed.
    `eps` is 1e-12, not the usual 1e-5: embeddings start at std ~1e-4 (variance 1e-8), and an eps
    above their variance would shrink them instead of normalising them.
    """

    def __init__(
        self,
        kind: InputNorm,
        num_slots: int,
        dim: int,
        eps: float = 1e-12,
        momentum: float = 0.1,
        layer_passthrough: list[int] | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"unknown input normalisation '{kind}'; known: none, batch, layer")
        self.kind, self.eps, self.momentum = kind, eps, momentum
        self.weight = nn.Parameter(torch.ones(max(num_slots, 1), dim))
        self.bias = nn.Parameter(torch.zeros(max(num_slots, 1), dim))
        # "layer" mode: slots whose parts come already normalised (numeric value * normalised w_j)
        passthrough = torch.zeros(max(num_slots, 1), dtype=torch.bool)
        passthrough[layer_passthrough or []] = True
        self.register_buffer("layer_passthrough", passthrough, persistent=False)
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(max(num_slots, 1), dim))
            self.register_buffer("running_var", torch.ones(max(num_slots, 1), dim))

    def forward(
        self, parts: list[torch.Tensor], slots: list[torch.Tensor], masks: list[torch.Tensor | None] | None = None
    ) -> list[torch.Tensor]:
        """parts[i] (N_i, T_i, d) with slots[i] (T_i,) the slot of each position and masks[i]
        (N_i, T_i) bool (None: all real) -> the normalised parts, same shapes."""
        masks = masks if masks is not None else [None] * len(parts)
        if self.kind == "layer":
            out = []
            for x, s, mask in zip(parts, slots, masks):
                y = self.layer(x, s)
                y = y if mask is None else y * mask.unsqueeze(-1).to(y.dtype)
                out.append(torch.where(self.layer_passthrough[s].unsqueeze(-1), x, y))
            return out
        mean, var = self._statistics(parts, slots, masks)
        out = []
        for x, s, mask in zip(parts, slots, masks):
            y = (x - mean[s]) * torch.rsqrt(var[s] + self.eps) * self.weight[s] + self.bias[s]
            out.append(y if mask is None else y * mask.unsqueeze(-1).to(y.dtype))
        return out

    def layer(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Layer norm of each vector of x (..., T, d) with the gains and biases of its slot."""
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight[slots] + self.bias[slots]

    def _statistics(
        self, parts: list[torch.Tensor], slots: list[torch.Tensor], masks: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        total = torch.zeros_like(self.running_mean, dtype=parts[0].dtype)
        square, count = torch.zeros_like(total), total.new_zeros(total.shape[0], 1)
        for x, s, mask in zip(parts, slots, masks):
            w = x.new_ones(x.shape[:2]) if mask is None else mask.to(x.dtype)
            wx = x * w.unsqueeze(-1)
            total = total.index_add(0, s, wx.sum(0))
            square = square.index_add(0, s, (wx * x).sum(0))
            count = count.index_add(0, s, w.sum(0).unsqueeze(-1))
        n = count.clamp_min(1.0)
        mean = total / n
        var = (square / n - mean.square()).clamp_min(0.0)
        with torch.no_grad():
            seen = (count > 0).to(mean.dtype) * self.momentum
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            self.running_mean.mul_(1 - seen).add_(seen * mean.detach())
            self.running_var.mul_(1 - seen).add_(seen * unbiased.detach())
        return mean, var

    def extra_repr(self) -> str:
        return f"kind={self.kind}, slots={self.weight.shape[0]}, dim={self.weight.shape[1]}"


class FeatureEmbedding(nn.Module):
    """Categorical ids, numeric values and id sequences -> embeddings of width `dim`.

    All categorical vocabularies (and sequences with a vocab of their own) live in one table with
    per-field offsets; a sequence that shares a field's vocab looks up that field's rows, so
    `hist_item_id` and `item_id` share their embeddings. A numeric column j is embedded as
    value_j * w_j (one learned vector per column).

    `input_norm` ("none" | "batch" | "layer", the `ModelConfig` field of that name) normalises
    every looked-up vector by its slot (`SlotNorm`): slots are the categorical fields (their
    histories share the slot), the id sequences with their own vocabulary, then the numeric
    columns. "layer" normalises the numeric *vector* w_j before the value scales it (a layer norm
    of value_j * w_j would keep only the value's sign); "batch" normalises value_j * w_j over the
    batch. Pooled sequences are the means of their normalised elements. `normalize` exposes the
    same maps to models that do their own lookups (SORT).
    """

    # embedding-like parameters besides the table (see `Model.embedding_parameters`)
    embedding_like: ClassVar[tuple[str, ...]] = ("numeric_weight",)

    def __init__(
        self,
        schema: FeatureSchema,
        dim: int,
        pool_sequences: bool = True,
        init_std: float = 1e-4,
        input_norm: InputNorm = "none",
    ) -> None:
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.pool_sequences = pool_sequences
        offsets, total = {}, 0
        for field in schema.categorical:
            offsets[field.name] = total
            total += field.vocab_size
        self.id_sequences: list[SequenceInput] = list(schema.id_sequences)
        for seq in self.id_sequences:
            if seq.table is None:
                offsets[seq.name] = total
                total += seq.vocab_size
        self._offsets = offsets
        self.embedding = nn.Embedding(max(total, 1), dim)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.register_buffer(
            "field_offsets",
            torch.tensor([offsets[f.name] for f in schema.categorical], dtype=torch.long),
            persistent=False,
        )
        self.numeric_weight = nn.Parameter(torch.empty(len(schema.numeric), dim)) if schema.numeric else None
        if self.numeric_weight is not None:
            nn.init.normal_(self.numeric_weight, std=init_std if init_std > 1e-3 else 1e-2)
        # slots: categorical fields, sequences with their own vocabulary, numeric columns
        categorical = schema.categorical_names
        own = [s.name for s in self.id_sequences if s.table is None]
        self._slot = {name: i for i, name in enumerate([*categorical, *own])}
        self._slot.update({s.name: self._slot[s.table] for s in self.id_sequences if s.table is not None})
        num_slots = len(categorical) + len(own) + len(schema.numeric)
        self.input_norm = input_norm
        first_numeric = len(categorical) + len(own)
        numeric_slots = list(range(first_numeric, first_numeric + len(schema.numeric)))
        self.register_buffer("categorical_slots", torch.arange(len(categorical)), persistent=False)
        self.register_buffer("numeric_slots", torch.tensor(numeric_slots, dtype=torch.long), persistent=False)
        self.input_norm = input_norm
        self.norm = (
            SlotNorm(input_norm, num_slots, dim, layer_passthrough=numeric_slots) if input_norm != "none" else None
        )

    def sequence_slot(self, seq: SequenceInput) -> int:
        """The normalisation slot of a sequence's elements (its vocabulary's)."""
        return self._slot[seq.name]

    def numeric_vectors(self) -> torch.Tensor:
        """(F_num, d): the numeric columns' vectors w_j, layer-normalised in "layer" mode."""
        assert self.numeric_weight is not None
        if self.norm is not None and self.norm.kind == "layer":
            return self.norm.layer(self.numeric_weight, self.numeric_slots)
        return self.numeric_weight

    def normalize(
        self, parts: list[torch.Tensor], slots: list[torch.Tensor], masks: list[torch.Tensor | None] | None = None
    ) -> list[torch.Tensor]:
        """The input normalisation of looked-up parts (N, T, d) whose positions have the given slots
        (identity when `input_norm` is "none"); numeric parts must be built from `numeric_vectors()`."""
        return parts if self.norm is None else self.norm(parts, slots, masks)

    @property
    def num_fields(self) -> int:
        pooled = len(self.id_sequences) if self.pool_sequences else 0
        return len(self.schema.categorical) + len(self.schema.numeric) + pooled

    @property
    def output_dim(self) -> int:
        return self.num_fields * self.dim

    def sequence_offset(self, seq: SequenceInput) -> int:
        return self._offsets[seq.table if seq.table is not None else seq.name]

    def forward(self, batch: dict[str, torch.Tensor]) -> EmbeddedBatch:
        categorical = self.embedding(batch["categorical"].long() + self.field_offsets)
        lookups, slots, lookup_masks = [categorical], [self.categorical_slots], [None]
        if self.numeric_weight is not None:
            lookups.append(batch["numeric"].unsqueeze(-1) * self.numeric_vectors())
            slots.append(self.numeric_slots)
            lookup_masks.append(None)
        masks = {}
        for seq in self.id_sequences:
            ids = batch[batch_key_seq(seq.name)].long()
            mask = sequence_mask(batch[batch_key_seqlen(seq.name)], ids.shape[1])
            embedded = self.embedding(ids + self.sequence_offset(seq)) * mask.unsqueeze(-1).to(categorical.dtype)
            masks[seq.name] = mask
            lookups.append(embedded)
            slots.append(self.field_offsets.new_full((ids.shape[1],), self.sequence_slot(seq)))
            lookup_masks.append(mask)
        lookups = self.normalize(lookups, slots, lookup_masks)
        categorical = lookups[0]
        parts = lookups[: 2 if self.numeric_weight is not None else 1]
        sequences = dict(zip((s.name for s in self.id_sequences), lookups[len(parts) :]))
        if self.pool_sequences:
            parts += [masked_mean(sequences[s.name], masks[s.name]).unsqueeze(1) for s in self.id_sequences]
        fields = torch.cat(parts, dim=1) if len(parts) > 1 else categorical
        return EmbeddedBatch(fields=fields, sequences=sequences, masks=masks, categorical=categorical)


# -- interaction layers of the zoo, shared by the models and the building blocks (`blocks.py`) --


def fm_interaction(fields: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <v_i, v_j> over the fields of (B, F, d), as (B,), in O(F d)."""
    square_of_sum = fields.sum(dim=1).square()
    sum_of_squares = fields.square().sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


class CrossNetV2(nn.Module):
    """`num_layers` cross layers x_{l+1} = x_0 * (W_l x_l + b_l) + x_l on (B, D) inputs.

    With `low_rank=r`, W_l = U_l V_l^T with U_l, V_l of shape (D, r).
    """

    def __init__(self, width: int, num_layers: int, low_rank: int | None = None) -> None:
        super().__init__()
        self.low_rank = low_rank
        if low_rank is None:
            self.weights = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))
            for layer in self.weights:
                nn.init.zeros_(layer.bias)
        else:
            # V^T (D -> r) without bias, then U (r -> D) with the layer's bias b_l
            self.weights = nn.ModuleList(
                nn.Sequential(nn.Linear(width, low_rank, bias=False), nn.Linear(low_rank, width))
                for _ in range(num_layers)
            )
            for layer in self.weights:
                nn.init.zeros_(layer[1].bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.weights:
            x = x0 * layer(x) + x
        return x


class InteractingLayer(nn.Module):
    """One multi-head self-attention layer over (B, F, d_in) -> (B, F, heads * attention_dim)."""

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_dim = attention_dim
        self.use_scale = use_scale
        width = attention_dim * num_heads
        self.query = nn.Linear(input_dim, width, bias=False)
        self.key = nn.Linear(input_dim, width, bias=False)
        self.value = nn.Linear(input_dim, width, bias=False)
        self.residual = nn.Linear(input_dim, width, bias=False) if use_residual else None
        self.norm = nn.LayerNorm(width) if layer_norm else None
        self.output_dim = width

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, fields, _ = x.shape
        return x.view(batch, fields, self.num_heads, self.attention_dim).transpose(1, 2)  # (B, H, F, a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        out = F.scaled_dot_product_attention(q, k, v, scale=None if self.use_scale else 1.0)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.output_dim)
        if self.residual is not None:
            out = out + self.residual(x)
        out = torch.relu(out)
        return self.norm(out) if self.norm is not None else out


def interacting_stack(
    width: int, num_layers: int, attention_dim: int, heads: int, use_residual: bool = True, use_scale: bool = False,
    layer_norm: bool = False,
) -> tuple[nn.Sequential, int]:
    """`num_layers` `InteractingLayer`s in sequence over (B, F, width) and their output width per
    field (AutoInt's stack and the `self_attention` building block)."""
    layers, out = [], width
    for _ in range(num_layers):
        layer = InteractingLayer(out, attention_dim, heads, use_residual=use_residual, use_scale=use_scale,
                                 layer_norm=layer_norm)  # fmt: skip
        layers.append(layer)
        out = layer.output_dim
    return nn.Sequential(*layers), out


class AttentionUnit(nn.Module):
    """Local activation unit: weights a(q, k_l) from an MLP over [q, k, q-k, q*k], masked."""

    def __init__(
        self, width: int, hidden_units: list[int], activation: str = "dice", use_softmax: bool = False
    ) -> None:
        super().__init__()
        self.mlp = MLP(4 * width, hidden_units, activation=activation, output_dim=1)
        self.use_softmax = use_softmax

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, L, D), (B, L) bool -> (B, L) weights, exactly 0 at padded positions."""
        q = query.unsqueeze(1).expand_as(keys)
        scores = self.mlp(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)
        if self.use_softmax:
            scores = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            return torch.nan_to_num(scores, nan=0.0)  # an empty history gives all-zero weights
        return scores * mask.to(scores.dtype)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled interest vector (B, D)."""
        weights = self.weights(query, keys, mask)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)


@dataclass(frozen=True)
class TargetGroup:
    """A main sequence, the parallel sequences concatenated to it, and their target fields."""

    sequences: tuple[str, ...]
    target_index: tuple[int, ...]  # positions of the target fields in the categorical matrix


def attend_target_groups(
    module: nn.Module, groups: list[TargetGroup], dim: int, hidden_units: list[int], activation: str, use_softmax: bool,
) -> nn.ModuleList:
    """DIN's attention unit per target group, and each group's target indices as the module's
    buffers `_targets{i}` (DIN and the `target_attention` block)."""
    for i, group in enumerate(groups):
        module.register_buffer(f"_targets{i}", torch.tensor(group.target_index, dtype=torch.long), persistent=False)
    return nn.ModuleList(
        AttentionUnit(dim * len(g.sequences), hidden_units, activation=activation, use_softmax=use_softmax) for g in groups
    )


def plan_target_groups(schema: FeatureSchema) -> tuple[list[TargetGroup], list[str]]:
    """Attention groups, and the id sequences that are mean-pooled instead."""
    categorical = schema.categorical_names
    id_sequences = schema.id_sequences
    targeted = {s.name for s in id_sequences if s.target in categorical}
    by_name: dict[str, SequenceInput] = {s.name: s for s in id_sequences}
    groups, grouped = [], set()
    for main in id_sequences:
        if main.name not in targeted or (main.parallel_to is not None and main.parallel_to in targeted):
            continue
        members = [main] + [s for s in id_sequences if s.parallel_to == main.name and s.name in targeted]
        for side in members[1:]:
            if side.max_len != main.max_len:
                raise ValueError(
                    f"sequence '{side.name}' runs parallel to '{main.name}' but has max_len {side.max_len} "
                    f"(vs {main.max_len}); parallel sequences must have the same length"
                )
        groups.append(
            TargetGroup(
                sequences=tuple(s.name for s in members),
                target_index=tuple(categorical.index(s.target) for s in members),
            )
        )
        grouped.update(s.name for s in members)
    pooled = [name for name in by_name if name not in grouped]
    return groups, pooled


class FastDropout(nn.Module):
    """Inverted dropout whose mask costs a quarter of the random draws of `nn.Dropout`.

    On CPU, drawing one random number per activation dominates a CTR training step (a third of
    DeepFM's time). Here each 64-bit draw gives four 16-bit uniforms, so the keep probability is
    exact to 1/65536; otherwise it is standard dropout (seeded by torch's generator, identity in
    eval mode, kept activations scaled by 1/(1-p)).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = int(round(p * 65536)) - 32768  # int16 values >= threshold are kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        bits = torch.randint(
            torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max, ((n + 3) // 4,), dtype=torch.int64,
            device=x.device,
        )
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLPSettings(Protocol):
    """The MLP hyper-parameters of a model config (the fields of that name)."""

    hidden_units: list[int]
    dropout: float
    batch_norm: bool
    activation: str


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout] blocks, optionally a final output unit."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: list[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(_activation(activation, units))
            if dropout > 0:
                layers.append(FastDropout(dropout))
            width = units
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.net = nn.Sequential(*layers)
        self.output_width = width
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    @classmethod
    def from_config(cls, input_dim: int, config: MLPSettings, output_dim: int | None = None) -> MLP:
        """The MLP a model config describes by `hidden_units`, `dropout`, `batch_norm` and `activation`."""
        return cls(
            input_dim,
            config.hidden_units,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            activation=config.activation,
            output_dim=output_dim,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _activation(name: str, width: int) -> nn.Module:
    table = {"relu": nn.ReLU, "prelu": nn.PReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}
    if name == "dice":
        return Dice(width)
    if name not in table:
        raise ValueError(f"unknown activation '{name}'; known: {sorted([*table, 'dice'])}")
    return table[name]()


class Dice(nn.Module):
    """Data-adaptive activation of DIN (Zhou et al., KDD 2018): a PReLU gated by normalised input.

    Normalisation uses running statistics in eval mode, so a prediction never depends on the
    other rows of its batch.
    """

    def __init__(self, width: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape))
        return gate * x + (1 - gate) * self.alpha * x


def product_logit(*logits: torch.Tensor) -> torch.Tensor:
    """The logit of prod_k sigmoid(z_k): the chain of a funnel (ESMM's pCTR x pCVR, CM-DCM's
    p_atc x p_del|atc), finite for any finite logits and exportable to ONNX.

    log p is the sum of log-sigmoids; 1 - p is the probability that some step fails, the first
    failing at step k: log(1 - p) = logsumexp_k [log(1 - p_k) + sum_{j<k} log p_j]."""
    logits = torch.broadcast_tensors(*logits)
    failures, reached = [], torch.zeros_like(logits[0])
    for z in logits:
        failures.append(reached + F.logsigmoid(-z))
        reached = reached + F.logsigmoid(z)
    return reached - torch.logsumexp(torch.stack(failures), dim=0)

"""Layers shared by the zoo: the feature-embedding layer and an MLP.

`FeatureEmbedding` turns a batch into per-field embeddings with one lookup in one concatenated
table (fast on CPU), plus history sequences with masks; a model file then holds only its own idea.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
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
    """Mean over real positions of (B, L, d); an empty sequence gives zeros."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


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


class FeatureEmbedding(nn.Module):
    """Categorical ids, numeric values and id sequences -> embeddings of width `dim`.

    All categorical vocabularies (and sequences with a vocab of their own) live in one table with
    per-field offsets; a sequence that shares a field's vocab looks up that field's rows, so
    `hist_item_id` and `item_id` share their embeddings. A numeric column j is embedded as
    value_j * w_j (one learned vector per column).
    """

    def __init__(self, schema: FeatureSchema, dim: int, pool_sequences: bool = True, init_std: float = 1e-4) -> None:
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
        parts = []
        categorical_ids = batch["categorical"]
        categorical = self.embedding(categorical_ids.long() + self.field_offsets)
        parts.append(categorical)
        if self.numeric_weight is not None:
            parts.append(batch["numeric"].unsqueeze(-1) * self.numeric_weight)
        sequences, masks = {}, {}
        for seq in self.id_sequences:
            ids = batch[batch_key_seq(seq.name)].long()
            mask = sequence_mask(batch[batch_key_seqlen(seq.name)], ids.shape[1])
            embedded = self.embedding(ids + self.sequence_offset(seq)) * mask.unsqueeze(-1).to(categorical.dtype)
            sequences[seq.name], masks[seq.name] = embedded, mask
            if self.pool_sequences:
                parts.append(masked_mean(embedded, mask).unsqueeze(1))
        fields = torch.cat(parts, dim=1) if len(parts) > 1 else categorical
        return EmbeddedBatch(fields=fields, sequences=sequences, masks=masks, categorical=categorical)


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

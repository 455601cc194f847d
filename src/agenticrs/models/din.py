"""DIN: the user's interest is pooled from the behaviour history with weights set by the candidate.

Paper: Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018. The
paper's: a local activation unit scores each history element k against the candidate q with an
MLP over [q, k, q - k, q * k] (the authors' code; the paper's figure shows the out product), the
interest vector is sum_k a(q, k) k with weights NOT softmax-normalised (to keep the intensity of
the interest), padding gets no weight, a good's id and category embeddings are concatenated
(history element = [item, category], candidate = [item, category]), and the pooled interest is
concatenated with the other features' embeddings and fed to an MLP 200 -> 80 with Dice.

How a data set maps onto it: a *main* sequence is an id sequence whose `target` is a categorical
field (hist_item_id -> item_id); a sequence `parallel_to` it whose target is also a categorical
field (hist_cate_id -> cate_id) is concatenated to it element by element, and the query is the
concatenation of the targets' embeddings in the same order. Every other id sequence (no target)
enters the MLP mean-pooled over its real elements. All categorical fields (the candidate's
included) and numeric columns enter the MLP as their embeddings.

Ours: attention unit hidden [64, 32] with Dice (FuxiCTR-style widths; the paper's figure has one
hidden layer of 36), the MLP [200, 80] with Dice as in the paper, embedding width 10, no dropout;
the attention unit is run on every position (padding included, weight then zeroed), so in training
Dice's batch statistics see the padded positions, as in FuxiCTR; `use_softmax=True` gives the
normalised variant the paper compares against. Added: `input_norm` (default "none") normalises
the candidate's and the histories' embeddings with the same per-vocabulary map (so the query and
the keys of the attention unit stay comparable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema, SequenceInput
from agenticrs.models.base import Activation, Batch, Dropout, EmbeddingDim, HiddenUnits, Model, ModelConfig, ModelInputs, register
from agenticrs.models.layers import MLP, FeatureEmbedding, masked_mean


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


class DINConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    attention_hidden_units: HiddenUnits = [64, 32]
    attention_activation: Activation = "dice"
    use_softmax: bool = False
    hidden_units: HiddenUnits = [200, 80]
    activation: Activation = "dice"
    dropout: Dropout = 0.0
    batch_norm: bool = False


@register("din")
class DIN(Model):
    paper = "Zhou et al., Deep Interest Network for Click-Through Rate Prediction, KDD 2018"
    Config = DINConfig
    inputs = ModelInputs(min_categorical=1, needs_target_sequence=True)
    smoke_overrides = {"embedding_dim": 4, "attention_hidden_units": [8], "hidden_units": [16, 8]}

    def __init__(self, schema: FeatureSchema, config: DINConfig) -> None:
        super().__init__(schema, config)
        self.groups, self.pooled_sequences = plan_target_groups(schema)
        if not self.groups:
            raise ValueError("DIN needs a behaviour sequence whose `target` is a categorical field")
        dim = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, dim=dim, pool_sequences=False, input_norm=config.input_norm)
        self.attention = nn.ModuleList(
            AttentionUnit(
                dim * len(g.sequences),
                config.attention_hidden_units,
                activation=config.attention_activation,
                use_softmax=config.use_softmax,
            )
            for g in self.groups
        )
        for i, group in enumerate(self.groups):
            self.register_buffer(f"_targets{i}", torch.tensor(group.target_index, dtype=torch.long), persistent=False)
        self.mlp_input = (
            self.embedding.output_dim
            + sum(dim * len(g.sequences) for g in self.groups)
            + dim * len(self.pooled_sequences)
        )
        self.mlp = MLP.from_config(self.mlp_input, config, output_dim=1)

    def interests(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The field embeddings (B, F, d) and one pooled interest vector per attention group."""
        embedded = self.embedding(batch)
        pooled = []
        for i, (group, unit) in enumerate(zip(self.groups, self.attention)):
            targets = getattr(self, f"_targets{i}")
            query = embedded.categorical.index_select(1, targets).flatten(1)  # (B, k*d)
            keys = torch.cat([embedded.sequences[name] for name in group.sequences], dim=-1)  # (B, L, k*d)
            pooled.append(unit(query, keys, embedded.masks[group.sequences[0]]))
        for name in self.pooled_sequences:
            pooled.append(masked_mean(embedded.sequences[name], embedded.masks[name]))
        return embedded.fields, pooled

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        fields, pooled = self.interests(batch)
        x = torch.cat([fields.flatten(1), *pooled], dim=1)
        return {"logit": self.mlp(x).squeeze(-1)}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]]:
        return self.mlp_input, list(self.config.hidden_units)

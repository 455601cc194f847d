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

import torch

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Activation, Batch, Dropout, EmbeddingDim, HiddenUnits, Model, ModelConfig, ModelInputs, register
from agenticrs.models.layers import (  # noqa: F401 (AttentionUnit: its old import path)
    MLP,
    AttentionUnit,
    FeatureEmbedding,
    attend_target_groups,
    masked_mean,
    plan_target_groups,
)


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
        self.attention = attend_target_groups(self, self.groups, dim, config.attention_hidden_units,
                                              config.attention_activation, config.use_softmax)  # fmt: skip
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

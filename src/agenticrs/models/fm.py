"""Factorization Machine: every pair of fields interacts through the inner product of their vectors.

Paper: Rendle, "Factorization Machines", ICDM 2010. The paper's: the model
y = w0 + sum_i w_i + sum_{i<j} <v_i, v_j> on one-hot inputs, with the pairwise term computed in
O(F d) as 0.5 * sum_k ((sum_i v_ik)^2 - sum_i v_ik^2) (the paper's Lemma 3.1). Ours: one field
is one one-hot group (x_i = 1), so w_i and v_i are the rows of the field's value; a numeric
column enters with x_i = its value (w_i x_i and v_i x_i); an id sequence enters as one more field
whose w and v are the means over its real elements (the usual multi-hot treatment); embeddings
are initialised N(0, 1e-4) (FuxiCTR) and the width is 10 (FuxiCTR's default). Added:
`input_norm` (default "none", the paper's FM) normalises the vectors v_i before the pairwise term;
the first-order weights w_i (width 1) are never normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Batch, EmbeddingDim, Model, ModelConfig, ModelInputs, register
from agenticrs.models.layers import FeatureEmbedding, fm_interaction


class FMConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10


@register("fm")
class FM(Model):
    paper = "Rendle, Factorization Machines, ICDM 2010"
    Config = FMConfig
    inputs = ModelInputs(min_categorical=1, min_fields_for_interaction=2)
    smoke_overrides = {"embedding_dim": 4}

    def __init__(self, schema: FeatureSchema, config: FMConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        self.first_order = FeatureEmbedding(schema, dim=1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        linear = self.first_order(batch).fields.sum(dim=(1, 2))
        pairwise = fm_interaction(self.embedding(batch).fields)
        return {"logit": self.bias + linear + pairwise}

"""Logistic regression: the first-order baseline of CTR prediction.

Paper: McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013 (LR as the
production CTR model). Ours: a bias plus one learned weight per categorical value (and per
numeric column, times its value, and per pooled sequence) — exactly LR on one-hot inputs.
`input_norm` is inert here: a weight of width 1 has nothing to normalise over (layer norm would
zero it) and a batch-normalised one-hot weight is no longer LR.
"""

from __future__ import annotations

import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Batch, EmbeddingDim, Model, ModelConfig, ModelInputs, register
from agenticrs.models.layers import FeatureEmbedding


class LRConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 1


@register("lr")
class LR(Model):
    paper = "McMahan et al., Ad Click Prediction: a View from the Trenches, KDD 2013"
    Config = LRConfig
    inputs = ModelInputs(min_categorical=1)
    inert_config = frozenset({"embedding_dim", "input_norm"})  # one weight per value; nothing to normalise

    def __init__(self, schema: FeatureSchema, config: LRConfig) -> None:
        super().__init__(schema, config)
        self.weights = FeatureEmbedding(schema, dim=1, init_std=1e-4)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        first_order = self.weights(batch).fields.sum(dim=(1, 2))
        return {"logit": first_order + self.bias}

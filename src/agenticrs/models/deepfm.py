"""DeepFM: an FM and an MLP side by side over one shared set of field embeddings.

Paper: Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction",
IJCAI 2017. The paper's: logit = FM (bias + first order + pairwise <v_i, v_j>) + MLP over the
concatenated field embeddings, the FM and the MLP sharing the embeddings (no pre-training, no
hand-made crosses). Ours (FuxiCTR's / BARS's usual Criteo settings): embedding width 10, MLP
[400, 400, 400] with ReLU, batch norm and dropout 0.2; numeric columns and pooled id sequences
enter as fields exactly as in `fm`. Added: `input_norm` (default "none") normalises the shared
field embeddings that the FM and the MLP read; the first-order weights are never normalised.

This is the model our throughput benchmarks measure, so the forward is kept lean: one lookup in
the embedding table for the fields, one in the first-order table, one fused FM reduction and the
MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Activation, Batch, Dropout, EmbeddingDim, HiddenUnits, Model, ModelConfig, ModelInputs, register
from agenticrs.models.fm import fm_interaction
from agenticrs.models.layers import MLP, FeatureEmbedding


class DeepFMConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    hidden_units: HiddenUnits = [400, 400, 400]
    activation: Activation = "relu"
    dropout: Dropout = 0.2
    batch_norm: bool = True


@register("deepfm")
class DeepFM(Model):
    paper = "Guo et al., DeepFM: A Factorization-Machine based Neural Network for CTR Prediction, IJCAI 2017"
    Config = DeepFMConfig
    inputs = ModelInputs(min_categorical=1, min_fields_for_interaction=2)
    smoke_overrides = {"embedding_dim": 4, "hidden_units": [16, 16], "dropout": 0.0}

    def __init__(self, schema: FeatureSchema, config: DeepFMConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        self.first_order = FeatureEmbedding(schema, dim=1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp = MLP.from_config(self.embedding.output_dim, config, output_dim=1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        fields = self.embedding(batch).fields
        linear = self.first_order(batch).fields.sum(dim=(1, 2))
        deep = self.mlp(fields.flatten(1)).squeeze(-1)
        return {"logit": self.bias + linear + fm_interaction(fields) + deep}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]]:
        return self.embedding.output_dim, list(self.config.hidden_units)

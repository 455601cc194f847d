"""DNN: the plain "embedding + MLP" CTR baseline (the dense peer of SSR's scaling claim).

Paper: Covington, Adams, Sargin, "Deep Neural Networks for YouTube Recommendations", RecSys 2016
(the embedding-then-MLP ranking tower every later CTR model compares against; FuxiCTR calls it
DNN). The paper's: categorical features embedded, concatenated and fed to a tower of fully
connected ReLU layers, one logistic output. Ours (FuxiCTR's usual settings, those of DeepFM's MLP
here): embedding width 10, MLP [400, 400, 400] with ReLU, batch norm and dropout 0.2; numeric
columns and pooled id sequences enter as fields; no hand-made or explicit crosses. Added:
`input_norm` (default "none") normalises the field embeddings before the MLP.
"""

from __future__ import annotations

import torch

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Activation, Batch, Dropout, EmbeddingDim, HiddenUnits, Model, ModelConfig, ModelInputs, register
from agenticrs.models.layers import MLP, FeatureEmbedding


class DNNConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    hidden_units: HiddenUnits = [400, 400, 400]
    activation: Activation = "relu"
    dropout: Dropout = 0.2
    batch_norm: bool = True


def dnn_dense_parameters(input_dim: int, config: DNNConfig) -> int:
    """Parameters of the MLP and its output unit (everything but the embeddings), from the config alone."""
    total, width = 0, input_dim
    for units in config.hidden_units:
        total += width * units + units + (2 * units if config.batch_norm else 0)
        total += {"prelu": 1, "dice": units}.get(config.activation, 0)  # their own parameters
        width = units
    return total + width + 1


@register("dnn")
class DNN(Model):
    paper = "Covington et al., Deep Neural Networks for YouTube Recommendations, RecSys 2016"
    Config = DNNConfig
    inputs = ModelInputs(min_categorical=1)
    smoke_overrides = {"embedding_dim": 4, "hidden_units": [16, 16], "dropout": 0.0}

    def __init__(self, schema: FeatureSchema, config: DNNConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        self.mlp = MLP.from_config(self.embedding.output_dim, config, output_dim=1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"logit": self.mlp(self.embedding(batch).fields.flatten(1)).squeeze(-1)}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]]:
        return self.embedding.output_dim, list(self.config.hidden_units)

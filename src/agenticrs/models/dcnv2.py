"""DCN-V2: explicit bounded-degree feature crosses with a full (or low-rank) matrix per layer.

Paper: Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale
Learning to Rank Systems", WWW 2021. The paper's: the cross layer
x_{l+1} = x_0 * (W_l x_l + b_l) + x_l over the concatenated field embeddings x_0 (W_l full
rank, or the paper's low-rank W_l = U_l V_l^T), combined with an MLP either *stacked*
(cross network, then MLP) or in *parallel* (both read x_0; their outputs are concatenated), and a
final linear unit. Ours: the default structure is parallel (FuxiCTR's default, the layout of the
original DCN), 3 cross layers, MLP [400, 400, 400] with ReLU and dropout 0.2 and no batch norm,
embedding width 10 (FuxiCTR's usual settings); the low-rank option is the paper's plain U V^T
(not the mixture of low-rank experts, DCN-Mix); cross weights use PyTorch's default Linear
initialisation and zero biases. Added (defaults keep the paper's network): `batch_norm=True`
puts batch norm after every MLP layer (FuxiCTR's `batch_norm`; without any normalisation the
embeddings enter at their initial scale of 1e-4, which left DCNv2 well behind the batch-normalised
models on Frappe), `low_rank=r` gives the low-rank cross layer
x_{l+1} = x_0 * (U_l (V_l^T x_l) + b_l) + x_l (FuxiCTR's `low_rank`; 2 D r + D parameters per
layer instead of D^2 + D), and `input_norm` normalises the field embeddings x_0 reads.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    HiddenUnits,
    Layers,
    Model,
    ModelConfig,
    ModelInputs,
    Units,
    register,
)
from agenticrs.models.layers import MLP, CrossNetV2, FeatureEmbedding


class DCNv2Config(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    structure: Literal["stacked", "parallel"] = "parallel"
    num_cross_layers: Layers = 3
    low_rank: Units | None = Field(default=None, description="rank r of W = U V^T; None: full rank")
    hidden_units: HiddenUnits = [400, 400, 400]
    activation: Activation = "relu"
    dropout: Dropout = 0.2
    batch_norm: bool = False


@register("dcnv2")
class DCNv2(Model):
    paper = (
        "Wang et al., DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale "
        "Learning to Rank Systems, WWW 2021"
    )
    Config = DCNv2Config
    inputs = ModelInputs(min_categorical=1)
    smoke_overrides = {"embedding_dim": 4, "num_cross_layers": 2, "hidden_units": [16, 16], "dropout": 0.0}

    def __init__(self, schema: FeatureSchema, config: DCNv2Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        width = self.embedding.output_dim
        self.cross = CrossNetV2(width, config.num_cross_layers, config.low_rank)
        mlp_input = width  # stacked: the MLP reads the cross network's output, also of width D
        self.mlp = MLP.from_config(mlp_input, config) if config.hidden_units else None
        mlp_width = self.mlp.output_width if self.mlp is not None else 0
        if config.structure == "stacked":
            head_input = mlp_width if self.mlp is not None else width
        else:
            head_input = width + mlp_width
        self.head = nn.Linear(head_input, 1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x0 = self.embedding(batch).fields.flatten(1)
        crossed = self.cross(x0)
        if self.mlp is None:
            out = crossed
        elif self.config.structure == "stacked":
            out = self.mlp(crossed)
        else:
            out = torch.cat([crossed, self.mlp(x0)], dim=1)
        return {"logit": self.head(out).squeeze(-1)}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]] | None:
        if self.mlp is None:
            return None
        return self.embedding.output_dim, list(self.config.hidden_units)

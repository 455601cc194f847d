"""AutoInt(+): multi-head self-attention over the field embeddings learns high-order crosses.

Paper: Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
Networks", CIKM 2019. The paper's: each interacting layer computes, per head h,
alpha_mk = softmax_k(<W_Q e_m, W_K e_k>) and e~_m = sum_k alpha_mk W_V e_k, concatenates the
heads and adds a residual, e_m <- ReLU(e~_m + W_Res e_m); after the last layer a linear unit
reads all fields' outputs. AutoInt+ (the default here, `use_mlp=True`) adds a feed-forward
network over the concatenated embeddings whose logit is summed with AutoInt's. Defaults are the
paper's: embedding width 16, 3 interacting layers, 2 heads of attention width 32, residual on,
no sqrt(d) scaling and no layer norm (the paper's formula; `use_scale` and `layer_norm` switch on
what the authors' code and FuxiCTR also offer), and the MLP of the authors' AutoInt+ Criteo
script, [400, 400] with ReLU. Ours: numeric columns and pooled id sequences enter as fields,
dropout 0 (the paper found dropout unnecessary except on MovieLens), embeddings N(0, 1e-4).
Added (defaults keep the paper's network): `batch_norm=True` puts batch norm after every layer
of AutoInt+'s MLP, and `input_norm` normalises the field embeddings that both parts read.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    Layers,
    Model,
    ModelConfig,
    ModelInputs,
    Units,
    register,
)
from agenticrs.models.layers import MLP, FeatureEmbedding, InteractingLayer, interacting_stack  # noqa: F401 (InteractingLayer: its old import path)


class AutoIntConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 16
    num_attention_layers: Layers = 3
    num_heads: Heads = 2
    attention_dim: Units = Field(default=32, description="width of one head")
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False
    use_mlp: bool = Field(default=True, description="AutoInt+ (True) or plain AutoInt (False)")
    hidden_units: HiddenUnits = [400, 400]
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    batch_norm: bool = False


@register("autoint")
class AutoInt(Model):
    paper = "Song et al., AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks, CIKM 2019"
    Config = AutoIntConfig
    inputs = ModelInputs(min_categorical=1, min_fields_for_interaction=2)
    smoke_overrides = {
        "embedding_dim": 4,
        "num_attention_layers": 2,
        "num_heads": 2,
        "attention_dim": 4,
        "hidden_units": [16],
    }

    def __init__(self, schema: FeatureSchema, config: AutoIntConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        self.interacting, width = interacting_stack(
            config.embedding_dim, config.num_attention_layers, config.attention_dim, config.num_heads,
            use_residual=config.use_residual, use_scale=config.use_scale, layer_norm=config.layer_norm,
        )  # fmt: skip
        self.head = nn.Linear(self.embedding.num_fields * width, 1)
        self.mlp = MLP.from_config(self.embedding.output_dim, config, output_dim=1) if config.use_mlp else None

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        fields = self.embedding(batch).fields
        logit = self.head(self.interacting(fields).flatten(1)).squeeze(-1)
        if self.mlp is not None:
            logit = logit + self.mlp(fields.flatten(1)).squeeze(-1)
        return {"logit": logit}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]] | None:
        if self.mlp is None:
            return None
        return self.embedding.output_dim, list(self.config.hidden_units)

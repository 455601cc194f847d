"""Composed: a model made of registered building blocks, listed as data in its config.

Why: issue 16's method cards may describe a method as a composition of known parts rather than a
zoo model, and issue 15's compositional evolution mutates the same compositions; one model that
builds any composition lets both train through the one engine (`agenticrs train --model composed`,
`--set blocks=...`) with every contract of the zoo (inputs checked, smoke config, ONNX export).

The network: one shared `FeatureEmbedding` (width `embedding_dim`, `input_norm` as in every model)
feeds every block (`models/blocks.py`). Logit blocks (`linear`, `fm`) are summed into the output;
representation blocks (`mlp`, `cross`, `self_attention`, `target_attention`) read the shared
embeddings in parallel and are concatenated into the head, an MLP (`head_hidden_units`; empty: one
linear unit) ending in one unit, added to the output with a global bias:

    logit = b + sum(logit blocks) + head([representation blocks])

So [linear, fm, mlp] is DeepFM's network, [linear, fm] is FM's, [cross, mlp] is DCN-V2's
parallel structure, [self_attention, mlp] is close to AutoInt+ (one head over both parts instead
of two logits). What a composition needs from a data set is what its blocks need
(`Composed.inputs_for`): a target-attention block on a data set without histories is refused by
`build_model` before anything trains. Defaults: DeepFM's parts ([linear, fm, mlp]) with plain
block settings (see each block) and a linear head.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, SerializeAsAny, field_validator
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    MAX_LAYERS,
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    HiddenUnits,
    Model,
    ModelConfig,
    ModelInputs,
    register,
)
from agenticrs.models.blocks import (
    BlockContext,
    BlockInput,
    BlockSettings,
    MLPBlock,
    blocks_inputs,
    build_block,
    parse_blocks,
)
from agenticrs.models.layers import MLP, FeatureEmbedding

DEFAULT_BLOCKS: list[dict[str, Any]] = [{"block": "linear"}, {"block": "fm"}, {"block": "mlp"}]


class ComposedConfig(ModelConfig):
    """The blocks of the composition (typed by `blocks.parse_blocks`) and the shared settings."""

    embedding_dim: EmbeddingDim = 10
    blocks: list[SerializeAsAny[BlockSettings]] = Field(
        default_factory=lambda: parse_blocks(DEFAULT_BLOCKS),
        min_length=1,
        max_length=MAX_LAYERS,
        description="the building blocks, each {block: <name>, <its settings>}",
    )
    head_hidden_units: HiddenUnits = Field(default=[], description="hidden layers of the head; []: one linear unit")
    head_activation: Activation = "relu"
    head_dropout: Dropout = 0.0
    head_batch_norm: bool = False

    @field_validator("blocks", mode="before")
    @classmethod
    def _typed(cls, value: Any) -> list[BlockSettings]:
        # a ValidationError raised here keeps its locations under the field: `blocks.1.block`
        return parse_blocks(value)


@register("composed")
class Composed(Model):
    paper = "a composition of the zoo's building blocks (models/blocks.py); no paper of its own"
    Config = ComposedConfig
    inputs = blocks_inputs(ComposedConfig().blocks)
    smoke_overrides = {
        "embedding_dim": 4,
        "blocks": [
            {"block": "linear"},
            {"block": "fm"},
            {"block": "cross", "num_layers": 2},
            {"block": "self_attention", "num_layers": 1, "heads": 2, "attention_dim": 4},
            {"block": "mlp", "hidden_units": [16]},
        ],
        "head_hidden_units": [8],
    }

    @classmethod
    def inputs_for(cls, config: ModelConfig) -> ModelInputs:
        assert isinstance(config, ComposedConfig)
        return blocks_inputs(config.blocks)

    def __init__(self, schema: FeatureSchema, config: ComposedConfig) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        context = BlockContext(schema, self.embedding)
        self.parts = nn.ModuleList(build_block(settings, context) for settings in config.blocks)
        width = sum(p.output_dim for p in self.parts if p.produces == "representation")
        self.head = (
            MLP(
                width,
                config.head_hidden_units,
                dropout=config.head_dropout,
                batch_norm=config.head_batch_norm,
                activation=config.head_activation,
                output_dim=1,
            )
            if width
            else None
        )
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = BlockInput(batch, self.embedding(batch))
        logit = self.bias.expand(x.embedded.fields.shape[0])
        representations = []
        for part in self.parts:
            if part.produces == "logit":
                logit = logit + part(x)
            else:
                representations.append(part(x))
        if self.head is not None:
            logit = logit + self.head(torch.cat(representations, dim=1)).squeeze(-1)
        return {"logit": logit}

    def mlp_ceiling_spec(self) -> tuple[int, list[int]] | None:
        deep = next((p for p in self.parts if isinstance(p, MLPBlock)), None)
        if deep is None:
            return None
        return self.embedding.output_dim, list(deep.settings.hidden_units)

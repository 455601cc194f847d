"""Building blocks: the typed, registered parts a composed model (`models/composed.py`) is made of.

Why blocks: a method is often a combination of known parts (DeepFM is FM + an MLP, DCN-V2 is a
cross network + an MLP, AutoInt+ is self-attention + an MLP). A composition names such parts as
data (`[{block: cross, num_layers: 2}, {block: mlp, hidden_units: [200, 200]}]`), so a method card
can describe a new combination without code, and an evolutionary search can mutate it as data.

A block is registered in `BLOCKS` (one `runtime.registry.Registry`) under its name and states:
- its settings: a pydantic class (`BlockSettings`), bounded as every model config and validated
  with the field named (`parse_blocks`: `blocks.1.num_layers: ...`);
- what it needs from the data set (`inputs`, a `ModelInputs`, e.g. target attention needs a
  behaviour sequence paired with a candidate field);
- what it produces (`produces`): a logit term (B,), summed into the model's output, or a
  representation (B, `output_dim`) of a width known when it is built, concatenated with the other
  representations into the model's head.

Every block reads the one shared embedding of the composed model (`BlockInput.embedded`: the
field embeddings (B, F, d), the histories and the candidate's lookups); the layers are the zoo's
own (`models/layers.py`), so a block computes exactly what the model it comes from computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    Heads,
    HiddenUnits,
    Layers,
    ModelInputs,
    Units,
)
from agenticrs.models.layers import (
    MLP,
    CrossNetV2,
    EmbeddedBatch,
    FeatureEmbedding,
    attend_target_groups,
    fm_interaction,
    interacting_stack,
    plan_target_groups,
)
from agenticrs.runtime.registry import Registry

Produces = Literal["logit", "representation"]


class BlockSettings(BaseModel):
    """Base of every block's typed settings; `block` is the registered name of the block."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    block: str


@dataclass(frozen=True)
class BlockContext:
    """What a block is built against: the data set's schema and the shared embedding layer."""

    schema: FeatureSchema
    embedding: FeatureEmbedding


@dataclass
class BlockInput:
    """What a block reads in `forward`: the raw batch and its shared embedding."""

    batch: Batch
    embedded: EmbeddedBatch


class Block(nn.Module):
    """A part of a composed model: (B,) logit term or (B, output_dim) representation."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[BlockSettings]] = BlockSettings
    produces: ClassVar[Produces] = "representation"
    inputs: ClassVar[ModelInputs] = ModelInputs()

    def __init__(self, settings: BlockSettings, context: BlockContext) -> None:
        super().__init__()
        self.settings = settings
        self.output_dim = 1  # a representation block sets its width

    def forward(self, x: BlockInput) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


BLOCKS: Registry[type[Block]] = Registry("building block")
_B = TypeVar("_B", bound=type[Block])


def register_block(name: str) -> Callable[[_B], _B]:
    """Class decorator: `@register_block("cross")` makes a block available to compositions by name.

    The block's settings class must say the same name in its `block` field's default."""

    def wrap(cls: _B) -> _B:
        declared = cls.Settings.model_fields["block"].default
        if declared != name:
            raise ValueError(f"block '{name}': its settings class {cls.Settings.__name__} declares block={declared!r}")
        BLOCKS.register(name, cls)
        cls.name = name
        return cls

    return wrap


# -- typed settings from data, with the field named -----------------------------------------------


def _error(loc: tuple[str | int, ...], value: Any, message: str) -> InitErrorDetails:
    # the message goes in through the context so that braces in it are never read as a template
    return {"type": PydanticCustomError("block", "{message}", {"message": message}), "loc": loc, "input": value}


def parse_blocks(raw: Any) -> list[BlockSettings]:
    """Typed settings of each block of a composition, or a `ValidationError` whose locations name
    the block and its setting (`1.block`, `0.num_layers`; a config's validator puts its field in
    front: `blocks.1.block`): an unknown block and a bad setting are refused before anything is built."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise ValidationError.from_exception_data(
            "composition", [_error((), raw, "a list of blocks ({block: <name>, <settings>...})")]
        )
    errors: list[InitErrorDetails] = []
    typed: list[BlockSettings] = []
    for i, item in enumerate(raw):
        if isinstance(item, BlockSettings) and item.block in BLOCKS and isinstance(item, BLOCKS[item.block].Settings):
            typed.append(item)
            continue
        if not isinstance(item, dict):
            errors.append(_error((i,), item, "a block is a mapping with its name under 'block'"))
            continue
        name = item.get("block")
        if name not in BLOCKS:
            known = ", ".join(BLOCKS.names())
            what = "a block needs its name under 'block'" if name is None else f"unknown block {name!r}"
            errors.append(_error((i, "block"), name, f"{what}; known: {known}"))
            continue
        try:
            typed.append(BLOCKS[name].Settings.model_validate(item))
        except ValidationError as exc:
            for e in exc.errors():
                errors.append(_error((i, *e["loc"]), e.get("input"), e["msg"].removeprefix("Value error, ")))
    if errors:
        raise ValidationError.from_exception_data("composition", errors)
    return typed


def blocks_inputs(blocks: Sequence[BlockSettings]) -> ModelInputs:
    """What a composition of these blocks needs from a data set: every block's needs at once."""
    return ModelInputs().union(*(BLOCKS[b.block].inputs for b in blocks))


def build_block(settings: BlockSettings, context: BlockContext) -> Block:
    return BLOCKS[settings.block](settings, context)


# -- the blocks ----------------------------------------------------------------------------------


class LinearSettings(BlockSettings):
    block: Literal["linear"] = "linear"


@register_block("linear")
class LinearBlock(Block):
    """First-order logit sum_i w_i: one learned weight per value (LR's, FM's first order); it has
    its own width-1 table, never normalised (as in `fm` and `deepfm`)."""

    Settings = LinearSettings
    produces = "logit"

    def __init__(self, settings: LinearSettings, context: BlockContext) -> None:
        super().__init__(settings, context)
        self.weights = FeatureEmbedding(context.schema, dim=1)

    def forward(self, x: BlockInput) -> torch.Tensor:
        return self.weights(x.batch).fields.sum(dim=(1, 2))


class FMSettings(BlockSettings):
    block: Literal["fm"] = "fm"


@register_block("fm")
class FMBlock(Block):
    """Pairwise logit sum_{i<j} <v_i, v_j> over the shared field embeddings (FM, DeepFM)."""

    Settings = FMSettings
    produces = "logit"
    inputs = ModelInputs(min_fields_for_interaction=2)

    def forward(self, x: BlockInput) -> torch.Tensor:
        return fm_interaction(x.embedded.fields)


class MLPBlockSettings(BlockSettings):
    block: Literal["mlp"] = "mlp"
    hidden_units: HiddenUnits = Field(default=[400, 400, 400], min_length=1)
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    batch_norm: bool = False


@register_block("mlp")
class MLPBlock(Block):
    """Deep representation of the flattened field embeddings (DeepFM's, DCN-V2's, AutoInt+'s MLP);
    its width is the last hidden layer's."""

    Settings = MLPBlockSettings

    def __init__(self, settings: MLPBlockSettings, context: BlockContext) -> None:
        super().__init__(settings, context)
        self.mlp = MLP.from_config(context.embedding.output_dim, settings)
        self.output_dim = self.mlp.output_width

    def forward(self, x: BlockInput) -> torch.Tensor:
        return self.mlp(x.embedded.fields.flatten(1))


class CrossSettings(BlockSettings):
    block: Literal["cross"] = "cross"
    num_layers: Layers = 3
    low_rank: Units | None = Field(default=None, description="rank r of W = U V^T; None: full rank")


@register_block("cross")
class CrossBlock(Block):
    """DCN-V2's cross network x_{l+1} = x_0 * (W_l x_l + b_l) + x_l over the flattened field
    embeddings x_0; the representation is the last x_l (width F * d)."""

    Settings = CrossSettings

    def __init__(self, settings: CrossSettings, context: BlockContext) -> None:
        super().__init__(settings, context)
        self.output_dim = context.embedding.output_dim
        self.cross = CrossNetV2(self.output_dim, settings.num_layers, settings.low_rank)

    def forward(self, x: BlockInput) -> torch.Tensor:
        return self.cross(x.embedded.fields.flatten(1))


class SelfAttentionSettings(BlockSettings):
    block: Literal["self_attention"] = "self_attention"
    num_layers: Layers = 3
    heads: Heads = 2
    attention_dim: Units = Field(default=32, description="width of one head")
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False


@register_block("self_attention")
class SelfAttentionBlock(Block):
    """AutoInt's interacting layers (multi-head self-attention over the fields, residual, ReLU);
    the representation is every field's output, flattened (width F * heads * attention_dim)."""

    Settings = SelfAttentionSettings
    inputs = ModelInputs(min_fields_for_interaction=2)

    def __init__(self, settings: SelfAttentionSettings, context: BlockContext) -> None:
        super().__init__(settings, context)
        self.layers, width = interacting_stack(
            context.embedding.dim, settings.num_layers, settings.attention_dim, settings.heads,
            use_residual=settings.use_residual, use_scale=settings.use_scale, layer_norm=settings.layer_norm,
        )  # fmt: skip
        self.output_dim = context.embedding.num_fields * width

    def forward(self, x: BlockInput) -> torch.Tensor:
        return self.layers(x.embedded.fields).flatten(1)


class TargetAttentionSettings(BlockSettings):
    block: Literal["target_attention"] = "target_attention"
    attention_hidden_units: HiddenUnits = [64, 32]
    activation: Activation = "dice"
    use_softmax: bool = False


@register_block("target_attention")
class TargetAttentionBlock(Block):
    """DIN's interest pooling: each behaviour sequence paired with a candidate field (with its
    parallel sequences, e.g. items and their categories) is pooled with weights from the attention
    unit over [q, k, q - k, q * k]; the representation is the pooled vectors, concatenated."""

    Settings = TargetAttentionSettings
    inputs = ModelInputs(needs_target_sequence=True)

    def __init__(self, settings: TargetAttentionSettings, context: BlockContext) -> None:
        super().__init__(settings, context)
        self.groups, _ = plan_target_groups(context.schema)
        if not self.groups:
            raise ValueError("target_attention needs a behaviour sequence whose `target` is a categorical field")
        dim = context.embedding.dim
        self.attention = attend_target_groups(self, self.groups, dim, settings.attention_hidden_units,
                                              settings.activation, settings.use_softmax)  # fmt: skip
        self.output_dim = sum(dim * len(g.sequences) for g in self.groups)

    def forward(self, x: BlockInput) -> torch.Tensor:
        embedded, pooled = x.embedded, []
        for i, (group, unit) in enumerate(zip(self.groups, self.attention)):
            query = embedded.categorical.index_select(1, getattr(self, f"_targets{i}")).flatten(1)
            keys = torch.cat([embedded.sequences[name] for name in group.sequences], dim=-1)
            pooled.append(unit(query, keys, embedded.masks[group.sequences[0]]))
        return torch.cat(pooled, dim=1)

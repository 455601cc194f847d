"""Helpers shared by the model tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from agenticrs.models.base import Model, build_model, make_config
from agenticrs.models.layers import FeatureEmbedding


def visible_smoke_model(name: str, schema, seed: int = 0, smoke: bool = True, **overrides) -> Model:
    """A model in eval mode with its smoke config and embeddings large enough (std 0.3) that
    differences in the inputs show in the outputs: for mechanism tests."""
    torch.manual_seed(seed)
    model = build_model(name, schema, config=make_config(name, overrides, smoke=smoke))
    for module in model.modules():
        if isinstance(module, FeatureEmbedding):
            nn.init.normal_(module.embedding.weight, std=0.3)
    return model.eval()

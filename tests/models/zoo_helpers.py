"""Helpers shared by the model tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import Model, build_model, make_config, model_class
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


def smoke_model(name: str, schema, seed: int = 0, **overrides) -> Model:
    """A model with its smoke config (and overrides), seeded."""
    torch.manual_seed(seed)
    return build_model(name, schema, config=make_config(name, overrides, smoke=True))


def skip_unless_compatible(name: str, dataset) -> None:
    problems = model_class(name).inputs.problems(dataset.schema)
    if problems:
        pytest.skip(f"{name} does not take this data set: {problems}")


def training_loss(out: dict[str, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """What the CTR task minimises for a single-label model: BCE plus the model's aux loss."""
    loss = F.binary_cross_entropy_with_logits(out["logit"], label)
    return loss + out["aux_loss"] if "aux_loss" in out else loss


def funnel_data(root: Path, click: str = "click", conversion: str = "purchase", rows: int = 600) -> ProcessedDataset:
    """A processed data set of two labels, a click and a conversion (0 on unclicked rows), and two
    categorical fields; `rows` rows, all in the training split."""
    rng = np.random.default_rng(3)
    clicks = rng.random(rows) < 0.3
    bought = clicks & (rng.random(rows) < 0.4)
    table = pa.table({
        click: clicks.astype(np.int8), conversion: bought.astype(np.int8),
        "user": [f"u{u}" for u in rng.integers(0, 20, rows)], "item": [f"i{i}" for i in rng.integers(0, 30, rows)],
    })  # fmt: skip
    pq.write_table(table, root / "funnel.parquet")
    spec = DatasetSpec.from_dict({
        "name": "funnel", "files": {"train": str(root / "funnel.parquet")}, "reader": {"format": "parquet"},
        "fields": [{"name": click, "kind": "label"}, {"name": conversion, "kind": "label"},
                   {"name": "user", "kind": "categorical"}, {"name": "item", "kind": "categorical"}],
    })  # fmt: skip
    return process_dataset(spec, root / "cache")

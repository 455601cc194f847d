"""MMoE: multi-gate mixture of experts, the standard multi-task ranking baseline.

Paper: Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018. The paper's: E expert networks shared by all tasks; each
task t has its own softmax gate g_t(x) over the experts and its own tower on
sum_e g_t(x)_e * expert_e(x). With one expert it is the shared-bottom model (Caruana 1997).
Ours: experts and towers are MLPs on the concatenated field embeddings (the zoo's shared layer,
`input_norm` honoured); one logit per trained label, in `output_labels` order (default: every
label of the data set; a single head returns (B,) like every single-task model). Rows whose
label is missing are left out of that label's loss by the CTR task, so a conversion head can
learn on clicked rows only.
"""

from __future__ import annotations

import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    Model,
    ModelConfig,
    ModelInputs,
    register,
)
from agenticrs.models.layers import MLP, FeatureEmbedding


class MMoEConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    tasks: list[str] | None = None  # the labels to predict, one head each; default: every label
    num_experts: Heads = 4
    expert_units: HiddenUnits = [256, 128]
    tower_units: HiddenUnits = [64]
    activation: Activation = "relu"
    dropout: Dropout = 0.1
    batch_norm: bool = False


@register("mmoe")
class MMoE(Model):
    paper = "Ma et al., Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts, KDD 2018"
    Config = MMoEConfig
    inputs = ModelInputs(min_categorical=1, multi_task=True)
    smoke_overrides = {"embedding_dim": 4, "num_experts": 2, "expert_units": [16], "tower_units": [8], "dropout": 0.0}

    def __init__(self, schema: FeatureSchema, config: MMoEConfig) -> None:
        super().__init__(schema, config)
        labels = list(schema.labels)
        tasks = list(config.tasks) if config.tasks is not None else labels
        unknown = [t for t in tasks if t not in labels]
        if unknown or not tasks:
            raise ValueError(f"mmoe: tasks {unknown or tasks} are not labels of the data set (labels: {labels})")
        if config.num_experts < 1:
            raise ValueError("mmoe: num_experts must be at least 1")
        self.output_labels = tasks
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        width = self.embedding.output_dim
        expert = lambda: MLP(width, config.expert_units, config.dropout, config.batch_norm, config.activation)  # noqa: E731
        self.experts = nn.ModuleList(expert() for _ in range(config.num_experts))
        self.gates = nn.Linear(width, config.num_experts * len(tasks))
        expert_width = config.expert_units[-1] if config.expert_units else width
        self.towers = nn.ModuleList(
            MLP(expert_width, config.tower_units, config.dropout, config.batch_norm, config.activation, output_dim=1)
            for _ in tasks
        )

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.embedding(batch).fields.flatten(1)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, h)
        gates = self.gates(x).view(x.shape[0], len(self.towers), -1).softmax(-1)  # (B, T, E)
        mixed = torch.bmm(gates, experts)  # (B, T, h)
        logits = torch.stack([tower(mixed[:, t]).squeeze(-1) for t, tower in enumerate(self.towers)], dim=1)
        return {"logit": logits if logits.shape[1] > 1 else logits[:, 0]}  # one head: (B,) like every model

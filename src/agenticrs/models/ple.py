"""PLE: progressive layered extraction, multi-task ranking with task-specific and shared experts.

Paper: Tang, Liu, Zhao, Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020. The paper's: every extraction level
(a CGC, customized gate control) has, per task t, m_t task-specific experts and m_s experts shared
by all tasks. Task t's gate is a softmax over its own and the shared experts, computed from task
t's input to the level; the level's output for task t is the gate-weighted sum of those experts.
Every level but the last also has a shared gate, a softmax over all experts of the level, whose
mixture is the shared experts' input at the next level. The first level reads the shared input;
per-task towers read the last level's task outputs. One level is CGC; the paper stacks two.

Ours: the input is the concatenated field embeddings of the zoo's shared layer (`input_norm`
honoured). Experts are MLPs (`expert_units`, the same at every level) whose weights are stacked
per level and applied in one batched product (no loop over experts or rows); 2 task-specific and
2 shared experts per level by default (the paper tunes them per data set). One logit per trained
label in `output_labels` order (default: every label of the data set; a single head returns
(B,) like every single-task model), as MMoE; rows whose label is missing leave that label's loss.
`gates(batch)` returns every gate's weights (for inspection and tests).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    Layers,
    Model,
    ModelConfig,
    ModelInputs,
    register,
)
from agenticrs.models.layers import MLP, FastDropout, FeatureEmbedding, _activation


class PLEConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    tasks: list[str] | None = None  # the labels to predict, one head each; default: every label
    num_levels: Layers = 2
    specific_experts: Heads = 2  # per task and level
    shared_experts: Heads = 2  # per level
    expert_units: HiddenUnits = [256, 128]
    tower_units: HiddenUnits = [64]
    # element-wise activations only (the experts of a level are one stacked tensor)
    activation: Literal["relu", "prelu", "sigmoid", "tanh", "gelu"] = "relu"
    dropout: Dropout = 0.1


class StackedExperts(nn.Module):
    """E expert MLPs of the same shape applied at once: (B, E, d_in) -> (B, E, d_out), expert e
    reading row e of the input. Each layer is one batched product with per-expert weights."""

    def __init__(self, experts: int, input_dim: int, hidden_units: list[int], activation: str, dropout: float) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        width = input_dim
        for units in hidden_units:
            weight = torch.empty(experts, width, units)
            for e in range(experts):  # Xavier per expert, as the zoo's MLP
                nn.init.xavier_normal_(weight[e])
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(experts, units)))
            width = units
        self.activations = nn.ModuleList(_activation(activation, units) for units in hidden_units)
        self.dropout = FastDropout(dropout) if dropout > 0 else nn.Identity()
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for weight, bias, activation in zip(self.weights, self.biases, self.activations, strict=True):
            x = self.dropout(activation(torch.einsum("bei,eio->beo", x, weight) + bias))
        return x


class ExtractionLevel(nn.Module):
    """One CGC level: task-specific and shared experts, per-task gates (and a shared gate)."""

    def __init__(self, tasks: int, specific: int, shared: int, input_dim: int, config: PLEConfig,
                 shared_gate: bool) -> None:  # fmt: skip
        super().__init__()
        self.tasks, self.specific, self.shared = tasks, specific, shared
        total = tasks * specific + shared
        self.experts = StackedExperts(total, input_dim, config.expert_units, config.activation, config.dropout)
        # expert e reads input row `source[e]`: its task's input, or the shared input (row `tasks`)
        source = torch.cat([torch.arange(tasks).repeat_interleave(specific), torch.full((shared,), tasks)])
        self.register_buffer("source", source, persistent=False)
        own = [list(range(t * specific, (t + 1) * specific)) + list(range(tasks * specific, total)) for t in range(tasks)]
        self.register_buffer("own", torch.tensor(own), persistent=False)  # (T, m_t + m_s) experts of each task's gate
        self.task_gates = nn.ModuleList(nn.Linear(input_dim, specific + shared) for _ in range(tasks))
        self.shared_gate = nn.Linear(input_dim, total) if shared_gate else None
        self.output_dim = self.experts.output_dim

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """inputs (B, T + 1, d): each task's input and the shared one -> outputs of the same layout
        (the shared row only when the level has a shared gate) and the gates' weights."""
        experts = self.experts(inputs[:, self.source])  # (B, E, h)
        gates = [gate(inputs[:, t]).softmax(-1) for t, gate in enumerate(self.task_gates)]  # (B, m_t + m_s) each
        weights = torch.stack(gates, dim=1)  # (B, T, m_t + m_s)
        mine = experts[:, self.own]  # (B, T, m_t + m_s, h)
        out = torch.einsum("btk,btkh->bth", weights, mine)
        if self.shared_gate is not None:
            shared = self.shared_gate(inputs[:, self.tasks]).softmax(-1)  # (B, E)
            gates.append(shared)
            out = torch.cat([out, torch.bmm(shared.unsqueeze(1), experts)], dim=1)
        return out, gates


@register("ple")
class PLE(Model):
    paper = (
        "Tang et al., Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for "
        "Personalized Recommendations, RecSys 2020"
    )
    Config = PLEConfig
    inputs = ModelInputs(min_categorical=1, multi_task=True)
    smoke_overrides = {"embedding_dim": 4, "specific_experts": 1, "shared_experts": 1, "expert_units": [16],
                       "tower_units": [8], "dropout": 0.0}  # fmt: skip

    def __init__(self, schema: FeatureSchema, config: PLEConfig) -> None:
        super().__init__(schema, config)
        labels = list(schema.labels)
        tasks = list(config.tasks) if config.tasks is not None else labels
        unknown = [t for t in tasks if t not in labels]
        if unknown or not tasks:
            raise ValueError(f"ple: model_params.tasks {unknown or tasks} are not labels of the data set (labels: {labels})")
        self.output_labels = tasks
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        width = self.embedding.output_dim
        levels = []
        for level in range(config.num_levels):
            last = level == config.num_levels - 1
            levels.append(ExtractionLevel(len(tasks), config.specific_experts, config.shared_experts, width, config,
                                          shared_gate=not last))  # fmt: skip
            width = levels[-1].output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleList(
            MLP(width, config.tower_units, config.dropout, False, config.activation, output_dim=1) for _ in tasks
        )

    def _extract(self, batch: Batch) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        x = self.embedding(batch).fields.flatten(1)
        h = x.unsqueeze(1).expand(-1, len(self.towers) + 1, -1)  # every task and the shared part read x
        gates = []
        for level in self.levels:
            h, weights = level(h)
            gates.append(weights)
        return h, gates

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        h, _ = self._extract(batch)
        logits = torch.stack([tower(h[:, t]).squeeze(-1) for t, tower in enumerate(self.towers)], dim=1)
        return {"logit": logits if logits.shape[1] > 1 else logits[:, 0]}  # one head: (B,) like every model

    def gates(self, batch: Batch) -> list[list[torch.Tensor]]:
        """Per level, every task's gate weights (B, m_t + m_s), then the shared gate's (B, E) on
        every level but the last; each row sums to 1."""
        return self._extract(batch)[1]

"""PLE: shapes, gates (softmax over own + shared experts), stacked experts and multi-task training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_helpers import funnel_data

from agenticrs.features.batching import iterate_batches
from agenticrs.models.base import build_model
from agenticrs.models.layers import MLP
from agenticrs.models.ple import StackedExperts

CONFIG = {"embedding_dim": 4, "specific_experts": 2, "shared_experts": 3, "expert_units": [16, 8], "tower_units": [8],
          "dropout": 0.0}  # fmt: skip


def test_stacked_experts_equal_separate_mlps():
    torch.manual_seed(0)
    stacked = StackedExperts(3, 5, [7, 4], "relu", 0.0)
    x = torch.randn(11, 3, 5)
    out = stacked(x)
    assert out.shape == (11, 3, 4)
    for e in range(3):
        mlp = MLP(5, [7, 4])
        linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for linear, weight, bias in zip(linears, stacked.weights, stacked.biases, strict=True):
                linear.weight.copy_(weight[e].T)
                linear.bias.copy_(bias[e])
        assert torch.allclose(mlp(x[:, e]), out[:, e], atol=1e-6)


def test_shapes_gates_and_levels(seq_data, seq_batch):
    torch.manual_seed(0)
    # the zoo's data set has one label: one task (B,), like every single-task model
    model = build_model("ple", seq_data.schema, CONFIG).eval()
    assert model(seq_batch)["logit"].shape == (128,)
    assert len(model.levels) == 2  # the paper's two extraction levels by default
    gates = model.gates(seq_batch)
    assert len(gates) == 2
    # level 1: the task's gate over its 2 + 3 shared experts, and the shared gate over all 5
    assert [g.shape for g in gates[0]] == [(128, 5), (128, 5)]
    assert [g.shape for g in gates[1]] == [(128, 5)]  # the last level has no shared gate
    for level in gates:
        for g in level:
            assert (g >= 0).all() and torch.allclose(g.sum(-1), torch.ones(128), atol=1e-6)


def test_two_tasks_get_their_own_experts_and_heads(tmp_path):
    data = funnel_data(tmp_path, click="click", conversion="buy")
    torch.manual_seed(0)
    model = build_model("ple", data.schema, {**CONFIG, "num_levels": 3}).eval()
    assert model.output_labels == ["click", "buy"]
    batch = next(iterate_batches(data.split("train"), 32, label_index=[0, 1]))
    assert model(batch)["logit"].shape == (32, 2)
    gates = model.gates(batch)
    assert len(gates) == 3
    # two task gates over 2 own + 3 shared experts; the shared gate over 2 * 2 + 3 experts
    assert [g.shape for g in gates[0]] == [(32, 5), (32, 5), (32, 7)]
    assert [g.shape for g in gates[2]] == [(32, 5), (32, 5)]
    for level in gates:
        for g in level:
            assert torch.allclose(g.sum(-1), torch.ones(32), atol=1e-6)
    # task 0's output does not read task 1's specific experts: zeroing them leaves it unchanged
    level = model.levels[-1]
    with torch.no_grad():
        before = model(batch)["logit"]
        last = level.experts.weights[-1]
        last[2:4].zero_()  # task 1's experts at the last level (experts 2, 3)
        level.experts.biases[-1][2:4].zero_()
        after = model(batch)["logit"]
    assert torch.equal(before[:, 0], after[:, 0]) and not torch.equal(before[:, 1], after[:, 1])


def test_unknown_tasks_are_refused(seq_data):
    with pytest.raises(ValueError, match="ple: model_params.tasks"):
        build_model("ple", seq_data.schema, {**CONFIG, "tasks": ["purchase"]})

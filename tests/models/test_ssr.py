"""SSR's filters (static random views, iterative competitive sparsity) and the parameter helpers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from agenticrs.models.base import build_model, make_config
from agenticrs.models.dnn import dnn_dense_parameters
from agenticrs.models.ssr import (
    SSRBlock,
    SSRConfig,
    competitive_sparse,
    embedding_and_dense_parameters,
    kept_dims,
    ssr_dense_parameters,
    static_view_indices,
)


def _ssr(schema, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model("ssr", schema, config=make_config("ssr", overrides))


# ------------------------------------------------------------------------------------ static filter
@pytest.mark.parametrize("input_dim, views, ratio", [(70, 8, 0.25), (400, 8, 0.25), (33, 3, 0.5), (10, 4, 1.0)])
def test_static_views_have_k_distinct_dims_and_cover_the_input(input_dim, views, ratio):
    k = kept_dims(input_dim, ratio)
    assert k == math.ceil(ratio * input_dim)
    indices = static_view_indices(input_dim, views, k, seed=3)
    assert indices.shape == (views, k)
    for row in indices:
        assert len(row.unique()) == k and row.min() >= 0 and row.max() < input_dim
    assert set(indices.flatten().tolist()) == set(range(input_dim))
    assert torch.equal(indices, static_view_indices(input_dim, views, k, seed=3))  # seeded
    if k < input_dim:
        assert not torch.equal(indices, static_view_indices(input_dim, views, k, seed=4))


def test_static_views_are_disjoint_when_they_cannot_cover_the_input():
    indices = static_view_indices(100, 2, 25, seed=0)  # V * k = 50 < 100
    assert indices.shape == (2, 25) and len(indices.flatten().unique()) == 50


def test_static_index_sets_are_buffers_fixed_by_training_and_restored_by_loading(seq_data, seq_batch, tmp_path):
    model = _ssr(seq_data.schema, seed=0)
    blocks = list(model.blocks)
    before = [b.view_indices.clone() for b in blocks]
    assert blocks[0].view_indices.shape == (8, kept_dims(model.embedding.output_dim, 0.25))
    assert {"blocks.0.view_indices", "blocks.1.view_indices"} <= dict(model.named_buffers()).keys()
    assert not any("view_indices" in name for name, _ in model.named_parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(seq_batch)["logit"], seq_batch["label"]).backward()
        optimizer.step()
    assert all(torch.equal(b.view_indices, i) for b, i in zip(blocks, before, strict=True))
    # the sets are in the state dict; a model with other sets takes them over on loading
    torch.save(model.state_dict(), tmp_path / "ssr.pt")
    other = _ssr(seq_data.schema, seed=5, filter_seed=7)
    assert not torch.equal(other.blocks[0].view_indices, before[0])
    other.load_state_dict(torch.load(tmp_path / "ssr.pt", weights_only=True))
    assert all(torch.equal(b.view_indices, i) for b, i in zip(other.blocks, before, strict=True))


def test_a_static_view_reads_only_its_own_dims():
    torch.manual_seed(0)
    config = SSRConfig(num_views=4, keep_ratio=0.25, view_units=6, dropout=0.0)
    block = SSRBlock(40, 16, config, seed=1).eval()
    x = torch.randn(5, 40)
    base = block.views(x)  # (B, V, m)
    for v in range(4):
        inside = block.view_indices[v]
        outside = torch.ones(40, dtype=torch.bool)
        outside[inside] = False
        changed_out = x.clone()
        changed_out[:, outside] += torch.randn(5, int(outside.sum()))
        assert torch.equal(block.views(changed_out)[:, v], base[:, v])
        changed_in = x.clone()
        changed_in[:, inside[0]] += 1.0
        assert not torch.allclose(block.views(changed_in)[:, v], base[:, v])


# ------------------------------------------------------------------------------------------- ICS
def test_ics_keeps_about_k_dims_and_more_iterations_get_closer_to_k():
    torch.manual_seed(0)
    z = torch.randn(256, 8, 100)
    k = 25
    counts = {t: (competitive_sparse(z, k, t, gamma=3.0, beta=0.1) != 0).sum(-1) for t in (1, 3, 6)}
    assert (counts[3] >= k).all() and (counts[3] <= math.ceil(1.3 * k)).all()
    assert counts[3].float().mean() <= 1.05 * k
    assert counts[1].float().mean() > counts[3].float().mean() >= counts[6].float().mean()
    # the survivors are the strongest responses, with their signs
    out = competitive_sparse(z, k, 3, gamma=3.0, beta=0.1)
    top = z.abs().topk(k, dim=-1).indices
    assert (out.gather(-1, top) != 0).all()
    kept = out != 0
    assert (torch.sign(out[kept]) == torch.sign(z[kept])).all()


def test_ics_gradient_reaches_survivors_only():
    torch.manual_seed(1)
    z = torch.randn(16, 4, 60, requires_grad=True)
    out = competitive_sparse(z, 15, 3, gamma=3.0, beta=0.1)
    (out * torch.randn_like(out).abs().add(0.1)).sum().backward()
    survivors = out.detach() != 0
    assert (z.grad[~survivors] == 0).all()
    assert (z.grad[survivors] != 0).all()


def test_ics_block_keeps_about_k_per_view_and_instance_and_its_gains_learn_only_survivors():
    torch.manual_seed(2)
    config = SSRConfig(filter="ics", num_views=8, keep_ratio=0.25, view_units=6, dropout=0.0)
    block = SSRBlock(80, 16, config, seed=0)
    x = torch.randn(32, 80)
    filtered = block.filtered(x)
    assert filtered.shape == (32, 8, 80)
    counts = (filtered != 0).sum(-1)
    k = kept_dims(80, 0.25)
    assert (counts >= k).all() and counts.float().mean() <= 1.1 * k
    # one instance: the gain of a view's dim gets gradient iff that dim survived in that view
    single = torch.randn(1, 80)
    block.zero_grad()
    (block(single) * torch.randn(16)).sum().backward()  # (a plain sum is flat after LayerNorm)
    survivors = block.filtered(single)[0].detach() != 0  # (V, D)
    assert (block.gain.grad[~survivors] == 0).all()
    assert (block.gain.grad[survivors] != 0).float().mean() > 0.9


def test_ics_model_trains_and_saves(seq_data, seq_batch):
    model = _ssr(seq_data.schema, filter="ics", dropout=0.0)
    F.binary_cross_entropy_with_logits(model(seq_batch)["logit"], seq_batch["label"]).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert "blocks.0.gain" in model.state_dict() and not any("view_indices" in k for k in model.state_dict())


# -------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"filter": "ics"},
        {"num_blocks": 3, "block_units": 70, "num_views": 5, "keep_ratio": 0.4, "view_units": 7},
        {"num_blocks": 1, "block_units": 32, "filter": "ics", "embedding_dim": 4},
    ],
)
def test_ssr_parameter_helper_matches_the_built_model(seq_data, overrides):
    model = _ssr(seq_data.schema, **overrides)
    embedding, dense = embedding_and_dense_parameters(model)
    assert embedding + dense == sum(p.numel() for p in model.parameters())
    assert embedding == sum(p.numel() for p in model.embedding.parameters())
    assert dense == ssr_dense_parameters(model.embedding.output_dim, model.config)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"hidden_units": [64, 32], "batch_norm": False}, {"hidden_units": [12], "activation": "prelu"}],
)
def test_dnn_parameter_helper_matches_the_built_model(seq_data, overrides):
    torch.manual_seed(0)
    model = build_model("dnn", seq_data.schema, config=make_config("dnn", overrides))
    embedding, dense = embedding_and_dense_parameters(model)
    assert embedding + dense == sum(p.numel() for p in model.parameters())
    assert dense == dnn_dense_parameters(model.embedding.output_dim, model.config)


def test_dnn_is_an_mlp_over_the_concatenated_field_embeddings(seq_data, seq_batch):
    torch.manual_seed(0)
    model = build_model("dnn", seq_data.schema).eval()
    with torch.no_grad():
        fields = model.embedding(seq_batch).fields
        assert torch.equal(model(seq_batch)["logit"], model.mlp(fields.flatten(1)).squeeze(-1))
    assert model.mlp_ceiling_spec() == (fields.shape[1] * 10, [400, 400, 400])

"""Each model's own idea checked against its formula on hand-made or brute-force examples."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from zoo_helpers import visible_smoke_model

from agenticrs.models.autoint import InteractingLayer
from agenticrs.models.base import build_model
from agenticrs.models.dcnv2 import CrossNetV2
from agenticrs.models.finalmlp import BilinearFusion
from agenticrs.models.fm import fm_interaction


def _smoke(name, schema, seed=0, **overrides):
    return visible_smoke_model(name, schema, seed, **overrides)


# --------------------------------------------------------------------------------------------- FM
def test_fm_interaction_equals_brute_force_pairwise_sum():
    v = torch.randn(7, 5, 3, dtype=torch.float64)
    brute = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(5), 2))
    assert torch.allclose(fm_interaction(v), brute)


def test_fm_logit_is_bias_plus_first_order_plus_pairwise(seq_data, seq_batch):
    model = _smoke("fm", seq_data.schema)
    with torch.no_grad():
        nn.init.normal_(model.bias)
        v = model.embedding(seq_batch).fields
        assert v.shape[1] == 4 + 1 + 2  # categorical, numeric, pooled sequences
        brute = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(v.shape[1]), 2))
        expected = model.bias + model.first_order(seq_batch).fields.sum(dim=(1, 2)) + brute
        assert torch.allclose(model(seq_batch)["logit"], expected, atol=1e-5)


def test_deepfm_is_fm_plus_mlp(seq_data, seq_batch):
    model = _smoke("deepfm", seq_data.schema)
    with torch.no_grad():
        fields = model.embedding(seq_batch).fields
        fm = model.bias + model.first_order(seq_batch).fields.sum(dim=(1, 2)) + fm_interaction(fields)
        deep = model.mlp(fields.flatten(1)).squeeze(-1)
        assert torch.allclose(model(seq_batch)["logit"], fm + deep, atol=1e-6)
    assert model.mlp_ceiling_spec() == (7 * 4, [16, 16])
    default = build_model("deepfm", seq_data.schema)
    assert default.mlp_ceiling_spec() == (7 * 10, [400, 400, 400])
    first_linear = next(m for m in default.mlp.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 70
    assert any(isinstance(m, nn.BatchNorm1d) for m in default.mlp.modules())


# ------------------------------------------------------------------------------------------ DCNv2
def _hand_cross(num_layers: int) -> CrossNetV2:
    cross = CrossNetV2(3, num_layers)
    with torch.no_grad():
        for layer in cross.weights:
            layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]))
            layer.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    return cross


def test_dcnv2_cross_layer_matches_the_formula_by_hand():
    x0 = torch.tensor([[1.0, 2.0, 3.0]])
    # W x0 + b = [1.5, 3, 6]; x1 = x0 * that + x0 = [2.5, 8, 21]
    assert torch.equal(_hand_cross(1)(x0), torch.tensor([[2.5, 8.0, 21.0]]))
    # W x1 + b = [3, 15, 31.5]; x2 = x0 * that + x1 = [5.5, 38, 115.5]
    assert torch.equal(_hand_cross(2)(x0), torch.tensor([[5.5, 38.0, 115.5]]))


def test_dcnv2_low_rank_cross_layer_is_u_v_transpose():
    cross = CrossNetV2(3, 1, low_rank=1)
    with torch.no_grad():
        cross.weights[0][0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0]]))  # V^T
        cross.weights[0][1].weight.copy_(torch.tensor([[1.0], [0.0], [2.0]]))  # U
        cross.weights[0][1].bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    x0 = torch.tensor([[1.0, 2.0, 3.0]])
    # U V^T x0 + b = [6, 1, 12]; x1 = x0 * that + x0 = [7, 4, 39]
    assert torch.equal(cross(x0), torch.tensor([[7.0, 4.0, 39.0]]))


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
@pytest.mark.parametrize("low_rank", [None, 4])
def test_dcnv2_structures(structure, low_rank, seq_data, seq_batch):
    model = _smoke("dcnv2", seq_data.schema, structure=structure, low_rank=low_rank)
    with torch.no_grad():
        x0 = model.embedding(seq_batch).fields.flatten(1)
        crossed = model.cross(x0)
        if structure == "stacked":
            expected = model.head(model.mlp(crossed))
        else:
            expected = model.head(torch.cat([crossed, model.mlp(x0)], dim=1))
        assert torch.allclose(model(seq_batch)["logit"], expected.squeeze(-1), atol=1e-6)


def test_dcnv2_without_mlp_is_the_cross_network_alone(seq_data, seq_batch):
    model = _smoke("dcnv2", seq_data.schema, hidden_units=[])
    assert model.mlp is None and model.mlp_ceiling_spec() is None
    assert model(seq_batch)["logit"].shape == (128,)


# ---------------------------------------------------------------------------------------- AutoInt
@pytest.mark.parametrize("use_scale", [False, True])
def test_autoint_interacting_layer_matches_the_paper_formula(use_scale):
    torch.manual_seed(0)
    layer = InteractingLayer(input_dim=3, attention_dim=2, num_heads=2, use_scale=use_scale)
    e = torch.randn(4, 5, 3)
    out = layer(e)
    heads = []
    for h in range(2):
        cols = slice(2 * h, 2 * h + 2)
        q, k, v = (e @ lin.weight[cols].T for lin in (layer.query, layer.key, layer.value))
        scores = q @ k.transpose(1, 2) / (2**0.5 if use_scale else 1.0)
        heads.append(torch.softmax(scores, dim=-1) @ v)
    expected = torch.relu(torch.cat(heads, dim=-1) + e @ layer.residual.weight.T)
    assert torch.allclose(out, expected, atol=1e-6)


def test_autoint_plus_and_plain(seq_data, seq_batch):
    plus = _smoke("autoint", seq_data.schema)
    plain = _smoke("autoint", seq_data.schema, use_mlp=False)
    assert plus.mlp is not None and plus.mlp_ceiling_spec() == (7 * 4, [16])
    assert plain.mlp is None and plain.mlp_ceiling_spec() is None
    with torch.no_grad():
        fields = plus.embedding(seq_batch).fields
        attention = plus.head(plus.interacting(fields).flatten(1)).squeeze(-1)
        deep = plus.mlp(fields.flatten(1)).squeeze(-1)
        assert torch.allclose(plus(seq_batch)["logit"], attention + deep, atol=1e-6)
    default = build_model("autoint", seq_data.schema)
    assert len(default.interacting) == 3
    assert default.interacting[0].num_heads == 2 and default.interacting[0].attention_dim == 32


# -------------------------------------------------------------------------------------------- DIN
def test_din_groups_the_parallel_sequence_with_its_main(seq_data):
    model = _smoke("din", seq_data.schema)
    assert len(model.groups) == 1
    group = model.groups[0]
    assert group.sequences == ("hist_item_id", "hist_cate_id")
    names = seq_data.schema.categorical_names
    assert [names[i] for i in group.target_index] == ["item_id", "cate_id"]
    first = next(m for m in model.attention[0].mlp.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 4 * 2 * 4  # [q, k, q-k, q*k] with q = [item, cate] of width 4 each
    assert model.pooled_sequences == []


def test_din_attention_gives_padding_zero_weight_and_is_not_normalised():
    from agenticrs.models.din import AttentionUnit

    torch.manual_seed(0)
    unit = AttentionUnit(6, [8, 4]).eval()
    query, keys = torch.randn(5, 6), torch.randn(5, 7, 6)  # padded keys deliberately non-zero
    lengths = torch.tensor([0, 1, 3, 7, 5])
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    with torch.no_grad():
        weights = unit.weights(query, keys, mask)
        assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
        assert not torch.allclose(weights[1:].sum(dim=1), torch.ones(4))  # no softmax
        pooled = unit(query, keys, mask)
        assert torch.allclose(pooled, (weights.unsqueeze(-1) * keys).sum(dim=1), atol=1e-6)
        assert torch.equal(pooled[0], torch.zeros(6))  # empty history -> zero interest
        changed = keys.clone()
        changed[~mask] = torch.randn(int((~mask).sum()), 6)
        assert torch.equal(unit(query, changed, mask), pooled)


def test_din_padding_ids_do_not_change_the_output(seq_data, seq_batch):
    model = _smoke("din", seq_data.schema)
    lengths = seq_batch["seqlen/hist_item_id"].long()
    padded = torch.arange(8).unsqueeze(0) >= lengths.unsqueeze(1)
    assert padded.any() and (~padded).any()
    altered = dict(seq_batch)
    generator = torch.Generator().manual_seed(0)
    for name, vocab in (("hist_item_id", 63), ("hist_cate_id", 9)):
        noise = torch.randint(3, vocab, padded.shape, generator=generator, dtype=torch.int32)
        altered[f"seq/{name}"] = torch.where(padded, noise, seq_batch[f"seq/{name}"])
    assert not torch.equal(altered["seq/hist_item_id"], seq_batch["seq/hist_item_id"])
    with torch.no_grad():
        assert torch.equal(model(altered)["logit"], model(seq_batch)["logit"])


def test_din_pooled_interest_follows_the_history(seq_data, seq_batch):
    model = _smoke("din", seq_data.schema)
    row = int(torch.nonzero(seq_batch["seqlen/hist_item_id"] >= 2)[0])
    altered = {k: v.clone() for k, v in seq_batch.items()}
    item = altered["seq/hist_item_id"][row, 0]
    altered["seq/hist_item_id"][row, 0] = 3 if item != 3 else 4
    with torch.no_grad():
        _, before = model.interests(seq_batch)
        _, after = model.interests(altered)
        assert not torch.allclose(after[0][row], before[0][row])
        others = torch.arange(len(seq_batch["label"])) != row
        assert torch.equal(after[0][others], before[0][others])
        logit_before, logit_after = model(seq_batch)["logit"], model(altered)["logit"]
        assert logit_after[row] != logit_before[row]
        assert torch.equal(logit_after[others], logit_before[others])


def test_din_query_is_the_candidate(seq_data, seq_batch):
    """Changing the candidate item changes the attention weights over an unchanged history."""
    model = _smoke("din", seq_data.schema)
    altered = {k: v.clone() for k, v in seq_batch.items()}
    item_col = seq_data.schema.categorical_index("item_id")
    altered["categorical"][:, item_col] = 3 + (altered["categorical"][:, item_col] - 3 + 1) % 60
    with torch.no_grad():
        _, before = model.interests(seq_batch)
        _, after = model.interests(altered)
    has_history = seq_batch["seqlen/hist_item_id"] > 0
    assert not torch.allclose(after[0][has_history], before[0][has_history])


# --------------------------------------------------------------------------------------- FinalMLP
def test_finalmlp_bilinear_fusion_matches_per_head_formula():
    torch.manual_seed(0)
    fusion = BilinearFusion(6, 4, num_heads=2)
    x, y = torch.randn(3, 6), torch.randn(3, 4)
    with torch.no_grad():
        expected = fusion.w_x(x).squeeze(-1) + fusion.w_y(y).squeeze(-1)
        for h in range(2):
            xh, yh = x[:, 3 * h : 3 * h + 3], y[:, 2 * h : 2 * h + 2]
            expected = expected + ((xh @ fusion.w_xy[h]) * yh).sum(-1)
        assert torch.allclose(fusion(x, y), expected, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        BilinearFusion(6, 5, num_heads=2)


def test_finalmlp_gates_and_streams(seq_data, seq_batch):
    model = _smoke("finalmlp", seq_data.schema, fs1_context=["user_id"], fs2_context=["item_id", "cate_id"])
    with torch.no_grad():
        fields = model.embedding(seq_batch).fields
        flat = fields.flatten(1)
        g1, g2 = model.gates[0](fields), model.gates[1](fields)
        assert g1.shape == flat.shape and ((g1 > 0) & (g1 < 2)).all()
        expected = model.fusion(model.stream1(flat * g1), model.stream2(flat * g2))
        assert torch.allclose(model(seq_batch)["logit"], expected, atol=1e-6)
        # a context-aware gate depends on its context field only
        altered = {k: v.clone() for k, v in seq_batch.items()}
        altered["categorical"][:, seq_data.schema.categorical_index("city")] = 3
        altered_fields = model.embedding(altered).fields
        assert torch.equal(model.gates[0](altered_fields), g1)
    with pytest.raises(ValueError, match="not in the data set"):
        _smoke("finalmlp", seq_data.schema, fs1_context=["nope"])
    plain = _smoke("finalmlp", seq_data.schema, use_fs=False)
    assert plain.gates is None and plain(seq_batch)["logit"].shape == (128,)
    default = build_model("finalmlp", seq_data.schema)
    assert default.mlp_ceiling_spec() == (70, [400, 400, 400])
    assert default.fusion.num_heads == 10

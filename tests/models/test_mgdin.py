"""MGDIN: density ordering from the training split, multi-granularity group tokens, deferred masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from zoo_helpers import visible_smoke_model

from agenticrs.data.cache import SplitArrays, SplitWriter
from agenticrs.features.schema import CategoricalInput, FeatureSchema, SequenceInput
from agenticrs.models.base import build_model, make_config
from agenticrs.models.mgdin import (
    MGDIN,
    activation_layers,
    cross_fitted_label_information,
    granularity_plan,
    label_mutual_information,
    mean_log_frequency,
    quantile_bins,
)


def _model(schema, seed=0, smoke=True, **overrides) -> MGDIN:
    return visible_smoke_model("mgdin", schema, seed, smoke, **overrides)


# --------------------------------------------------------------------------------- a planted split
PLANTED_ROWS = 6000
NOISE_VOCAB = 3000


def _planted_schema() -> FeatureSchema:
    return FeatureSchema(
        categorical=(
            CategoricalInput("noise_id", NOISE_VOCAB + 3),  # pure noise, high cardinality
            CategoricalInput("weak", 8),  # label-related with noise
            CategoricalInput("signal", 5),  # determines the label
            CategoricalInput("dense_noise", 6),  # pure noise, low cardinality
        ),
        numeric=("price",),  # pure noise
        sequences=(SequenceInput("history", 4, table=None, target=None, vocab_size=40),),
        labels=("label",),
        has_group=False,
    )


def _planted_split(folder) -> SplitArrays:
    rng = np.random.default_rng(0)
    n = PLANTED_ROWS
    signal = rng.integers(3, 5, n)
    label = (signal == 4).astype(np.float32)
    weak = np.where(rng.random(n) < 0.6, signal + 2, rng.integers(3, 8, n))  # agrees with the label 60%+
    categorical = np.stack(
        [rng.integers(3, NOISE_VOCAB + 3, n), weak, signal, rng.integers(3, 6, n)], axis=1
    ).astype(np.int32)
    lengths = rng.integers(0, 5, n)
    history = rng.integers(3, 40, (n, 4)) * (np.arange(4)[None, :] < lengths[:, None])
    writer = SplitWriter(folder)
    writer.append(
        {
            "categorical": categorical,
            "numeric": rng.normal(size=(n, 1)).astype(np.float32),
            "labels": label[:, None],
            "seq/history": history.astype(np.int32),
            "seqlen/history": lengths.astype(np.int32),
        }
    )
    writer.close()
    return SplitArrays(folder)


def _planted_batch(n=32, seed=1) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 5, n)
    return {
        "categorical": torch.as_tensor(
            np.stack([rng.integers(3, 3003, n), rng.integers(3, 8, n), rng.integers(3, 5, n), rng.integers(3, 6, n)], 1)
        ),
        "numeric": torch.randn(n, 1),
        "seq/history": torch.as_tensor(rng.integers(3, 40, (n, 4)) * (np.arange(4)[None, :] < lengths[:, None])),
        "seqlen/history": torch.as_tensor(lengths),
        "label": torch.zeros(n),
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _planted_schema(), _planted_split(tmp_path_factory.mktemp("mgdin_planted"))


# ------------------------------------------------------------------------------ density measures
def test_plug_in_mutual_information_matches_the_definition():
    rng = np.random.default_rng(3)
    values, labels = rng.integers(0, 4, 500), rng.integers(0, 2, 500)
    brute = 0.0
    for v in range(4):
        for y in range(2):
            p_vy = np.mean((values == v) & (labels == y))
            if p_vy > 0:
                brute += p_vy * math.log(p_vy / (np.mean(values == v) * np.mean(labels == y)))
    assert label_mutual_information(values, labels) == pytest.approx(brute, rel=1e-9)


def test_cross_fitted_information_is_near_the_true_mi_and_not_fooled_by_cardinality():
    rng = np.random.default_rng(4)
    n = 40000
    x = rng.integers(0, 2, n)
    y = np.where(rng.random(n) < 0.9, x, 1 - x)  # binary symmetric channel, flip 0.1
    true_mi = math.log(2) + 0.9 * math.log(0.9) + 0.1 * math.log(0.1)
    fold = rng.random(n) < 0.5
    ones = np.ones(n)
    assert cross_fitted_label_information(x, y, ones, fold) == pytest.approx(true_mi, abs=0.01)
    unique = np.arange(n)  # one value per row: plug-in MI says H(y), the held-out estimate says ~0
    assert label_mutual_information(unique, y) == pytest.approx(math.log(2), abs=0.01)
    assert cross_fitted_label_information(unique, y, ones, fold) <= 0.0


def test_mean_log_frequency_is_one_for_a_constant_and_zero_for_unique_values():
    ones = np.ones(100)
    assert mean_log_frequency(np.zeros(100, dtype=np.int64), ones, 100) == pytest.approx(1.0)
    assert mean_log_frequency(np.arange(100), ones, 100) == pytest.approx(0.0)


def test_quantile_bins_split_a_flag_and_a_continuous_column():
    assert set(quantile_bins(np.array([0.0, 1.0, 0.0, 1.0]), 16).tolist()) == {0, 1}
    bins = quantile_bins(np.random.default_rng(0).normal(size=1600), 16)
    assert np.bincount(bins).tolist() == [100] * 16


# ------------------------------------------------------------------------------------- prepare
def test_prepare_orders_fields_by_planted_information(planted):
    schema, split = planted
    model = _model(schema, smoke=False)
    assert model.field_order.tolist() == list(range(6))  # identity before prepare
    model.prepare(split, 0)
    names = [model.field_names[i] for i in model.field_order.tolist()]
    assert names[0] == "signal" and names[1] == "weak"
    assert names[-1] == "noise_id"
    density = dict(zip(model.field_names, model.field_density.tolist()))
    assert density["signal"] == pytest.approx(math.log(2), abs=0.01)  # I(signal; y) = H(y) for a fair label
    # the noise field is in the last (sparsest) group of every granularity, deferred to the last layer
    noise_tokens = [t for t, members in enumerate(model.field_groups()) if "noise_id" in members]
    assert len(noise_tokens) == len(model.granularities)
    assert all(model.token_activation_layer[t] == model.config.num_layers for t in noise_tokens)
    signal_tokens = [t for t, members in enumerate(model.field_groups()) if "signal" in members]
    assert min(model.token_activation_layer[t].item() for t in signal_tokens) == 1


def test_sparsity_density_puts_the_high_cardinality_field_last(planted):
    schema, split = planted
    model = _model(schema, density="sparsity")
    model.prepare(split, 0)
    names = [model.field_names[i] for i in model.field_order.tolist()]
    assert names[-1] == "noise_id"
    density = dict(zip(model.field_names, model.field_density.tolist()))
    assert density["signal"] > density["dense_noise"] > density["weak"] > density["noise_id"]


def test_density_and_order_survive_save_and_load(planted, tmp_path):
    schema, split = planted
    model = _model(schema, seed=1)
    model.prepare(split, 0)
    assert model.field_order.tolist() != list(range(6))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    fresh = _model(schema, seed=2)
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert torch.equal(fresh.field_order, model.field_order)
    assert torch.equal(fresh.field_density, model.field_density)
    batch = _planted_batch()
    with torch.no_grad():
        assert torch.equal(fresh(batch)["logit"], model(batch)["logit"])
        unprepared = _model(schema, seed=1)  # same weights, identity order: different predictions
        assert not torch.allclose(unprepared(batch)["logit"], model(batch)["logit"])


# -------------------------------------------------------------------------------------- grouping
def test_granularities_are_clipped_to_the_number_of_fields():
    assert granularity_plan(7, [2, 4, 8]) == [2, 4, 7]
    assert granularity_plan(3, [2, 4, 8]) == [2, 3]
    assert granularity_plan(20, [8, 2, 4]) == [2, 4, 8]


def test_group_token_is_the_projection_of_its_members_in_density_order(seq_data, seq_batch):
    model = _model(seq_data.schema, smoke=False)  # 7 fields -> granularities 2, 4, 7: 13 tokens
    assert model.granularities == [2, 4, 7] and model.group_weight.shape[:2] == (13, 4)
    with torch.no_grad():
        model.field_order.copy_(torch.tensor([3, 0, 6, 1, 5, 2, 4]))
        fields = model.embedding(seq_batch).fields
        tokens = model.group_tokens(fields)
        # granularity 2 cuts 7 sorted fields into [0, 3) and [3, 7): token 1 = fields 1, 5, 2, 4
        members = [1, 5, 2, 4]
        concat = fields[:, members].flatten(1)
        weight = model.group_weight[1].flatten(0, 1)
        assert torch.allclose(tokens[:, 1], concat @ weight + model.group_bias[1], atol=1e-5)
        # granularity 7: one field per token, token 2 + 5 = field 6
        assert torch.allclose(tokens[:, 8], fields[:, 6] @ model.group_weight[8, 0] + model.group_bias[8], atol=1e-5)
    assert model.field_groups()[1] == [model.field_names[i] for i in members]


def test_parameter_shapes_do_not_depend_on_the_density_order(planted):
    schema, split = planted
    before = {k: v.shape for k, v in _model(schema).state_dict().items()}
    model = _model(schema)
    model.prepare(split, 0)
    assert {k: v.shape for k, v in model.state_dict().items()} == before


# ------------------------------------------------------------------------------------ deferral
def test_activation_layer_is_the_first_layer_with_rank_over_groups_at_most_l_over_L():
    ranks = torch.tensor([1, 2, 1, 2, 3, 4, *range(1, 9)])
    groups = torch.tensor([2, 2, 4, 4, 4, 4, *[8] * 8])
    first = activation_layers(ranks, groups, 4)
    assert first.tolist() == [2, 4, 1, 2, 3, 4, 1, 1, 2, 2, 3, 3, 4, 4]
    for layer in range(1, 5):  # active iff r/G <= l/L
        assert ((first <= layer) == (ranks * 4 <= layer * groups)).all()
    # with fewer groups than layers nothing would start at layer 1: the schedule is shifted
    assert activation_layers(torch.tensor([1, 2]), torch.tensor([2, 2]), 4).tolist() == [1, 3]


def _tokens(model, batch):
    with torch.no_grad():
        tokens = model.group_tokens(model.embedding(batch).fields)
    return tokens.clone().requires_grad_(True)


def test_layer_output_gets_no_gradient_from_tokens_masked_at_that_layer(seq_data, seq_batch):
    model = _model(seq_data.schema, smoke=False)  # L = 4 over 13 tokens
    active1 = ~model.deferred_group_mask[0]
    assert 0 < active1.sum() < len(active1)
    tokens = _tokens(model, seq_batch)
    states = model.interact(tokens)
    states[0][:, active1].pow(2).sum().backward()
    assert (tokens.grad[:, ~active1] == 0).all()
    assert (tokens.grad[:, active1] != 0).any()
    # inactive tokens are carried unchanged up to their activation layer
    for layer, state in enumerate(states):
        deferred = model.deferred_group_mask[layer]
        assert torch.equal(state[:, deferred], tokens[:, deferred])


def test_a_token_deferred_to_the_last_layer_acts_only_through_the_last_layer(seq_data, seq_batch):
    model = _model(seq_data.schema, smoke=False)
    L = model.config.num_layers
    last = int(torch.nonzero(model.token_activation_layer == L)[0])
    tokens = _tokens(model, seq_batch)
    states = model.interact(tokens)
    others = torch.ones(tokens.shape[1], dtype=torch.bool)
    others[last] = False
    states[L - 2][:, others].pow(2).sum().backward()  # everything before layer L, but its own carried copy
    assert (tokens.grad[:, last] == 0).all()
    tokens.grad = None
    logit = model.mlp(model.final_norm(model.interact(tokens)[-1]).mean(1)).sum()
    logit.backward()
    assert tokens.grad[:, last].abs().sum() > 0


def test_masked_tokens_are_not_keys(seq_data, seq_batch):
    """Changing a token that is masked at layer 1 changes no active token's output of layer 1."""
    model = _model(seq_data.schema, smoke=False)
    tokens = _tokens(model, seq_batch).detach()
    deferred = model.deferred_group_mask[0]
    changed = tokens.clone()
    changed[:, deferred] = torch.randn_like(changed[:, deferred]) * 5
    with torch.no_grad():
        a, b = model.interact(tokens)[0], model.interact(changed)[0]
    assert torch.equal(a[:, ~deferred], b[:, ~deferred])


def test_soft_deferral_starts_at_the_hard_schedule_and_learns_its_thresholds(seq_data, seq_batch):
    hard = _model(seq_data.schema, seed=3, smoke=False)
    soft = _model(seq_data.schema, seed=3, smoke=False, deferral="soft", deferral_sharpness=8.0)
    gates = soft.deferral_gates().detach()
    hard_gates = hard.deferral_gates()
    assert torch.equal(gates > 0.5, hard_gates > 0.5)
    assert (gates - hard_gates).abs().max() <= torch.sigmoid(torch.tensor(-4.0)) + 1e-6
    # a very sharp soft gate reproduces the hard model (same weights otherwise)
    sharp = _model(seq_data.schema, seed=3, smoke=False, deferral="soft", deferral_sharpness=200.0)
    missing, unexpected = sharp.load_state_dict(hard.state_dict(), strict=False)
    assert missing == ["deferral_threshold"] and not unexpected
    with torch.no_grad():
        assert torch.allclose(sharp(seq_batch)["logit"], hard(seq_batch)["logit"], atol=1e-5)
    soft.train()
    loss = nn.functional.binary_cross_entropy_with_logits(soft(seq_batch)["logit"], seq_batch["label"])
    loss.backward()
    grad = soft.deferral_threshold.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).sum() > grad.numel() // 2
    assert "deferral_threshold" not in dict(hard.named_parameters())


def test_default_config_is_the_notes_settings(seq_data):
    cfg = make_config("mgdin")
    assert (cfg.embedding_dim, cfg.token_dim, cfg.num_layers, cfg.dropout) == (16, 64, 4, 0.1)
    assert cfg.granularities == [2, 4, 8] and cfg.hidden_units == [256, 128]
    assert cfg.deferral == "hard" and cfg.density == "mutual_info"
    model = build_model("mgdin", seq_data.schema)
    assert len(model.layers) == 4 and model.mlp_ceiling_spec() == (64, [256, 128])
    with pytest.raises(ValueError, match="num_heads"):
        make_config("mgdin", {"token_dim": 10, "num_heads": 3})


def test_prepare_works_on_the_zoo_data_and_after_moving_the_model(seq_data):
    model = _model(seq_data.schema)
    model.prepare(seq_data.split("train"), 0)
    names = [model.field_names[i] for i in model.field_order.tolist()]
    # the label is a function of user and item: they are the most informative fields
    assert set(names[:2]) == {"user_id", "item_id"}
    assert sorted(model.field_order.tolist()) == list(range(7))


def test_soft_deferral_reaches_every_parameter(seq_data, seq_batch):
    model = _model(seq_data.schema, deferral="soft")
    loss = nn.functional.binary_cross_entropy_with_logits(model(seq_batch)["logit"], seq_batch["label"])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_flatten_readout_reads_each_token_in_its_own_head_slot(seq_data, seq_batch):
    model = _model(seq_data.schema, readout="flatten")
    tokens = len(model.token_rank)
    first = model.mlp.net[0]
    assert first.in_features == tokens * model.config.token_dim
    assert model.mlp_ceiling_spec()[0] == tokens * model.config.token_dim
    # the head sees the final tokens in token order: feeding them ourselves gives the same logit
    model.eval()
    with torch.no_grad():
        states = model.final_norm(model.interact(model.group_tokens(model.embedding(seq_batch).fields))[-1])
        assert torch.allclose(model(seq_batch)["logit"], model.mlp(states.flatten(1)).squeeze(-1), atol=1e-6)
        # unlike the mean, the concatenation is not invariant to swapping two tokens
        swapped = states.clone()
        swapped[:, [0, 1]] = states[:, [1, 0]]
        assert not torch.allclose(model.mlp(swapped.flatten(1)), model.mlp(states.flatten(1)))
    model.train()
    loss = nn.functional.binary_cross_entropy_with_logits(model(seq_batch)["logit"], seq_batch["label"])
    loss.backward()
    assert model.group_weight.grad.abs().sum(dim=(1, 2, 3)).gt(0).all()  # every token reaches the loss

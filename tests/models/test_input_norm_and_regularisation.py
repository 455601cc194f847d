"""Input normalisation of the embeddings, the embedding-like parameters every model declares, the
DCNv2 / AutoInt+ options and the training defaults the models ask for."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_helpers import skip_unless_compatible, smoke_model, training_loss

from agenticrs.models.base import list_models, make_config, model_class
from agenticrs.models.dcnv2 import CrossNetV2
from agenticrs.models.layers import FeatureEmbedding, SlotNorm

MODELS = list_models()
NORMS = ["batch", "layer"]


_build = smoke_model
_compatible = skip_unless_compatible
_loss = training_loss


def _honours_input_norm(name: str) -> bool:
    return "input_norm" not in model_class(name).inert_config


# ------------------------------------------------------------------------------- SlotNorm
def test_batch_slot_norm_is_batch_norm_over_the_flattened_fields():
    torch.manual_seed(0)
    x = torch.randn(32, 3, 4) * 5 + 2
    norm = SlotNorm("batch", 3, 4)
    reference = nn.BatchNorm1d(12)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        reference.weight.copy_(norm.weight.flatten())
        reference.bias.copy_(norm.bias.flatten())
    for training in (True, False):
        norm.train(training)
        reference.train(training)
        (ours,) = norm([x], [torch.arange(3)])
        assert torch.allclose(ours.flatten(1), reference(x.flatten(1)), atol=1e-5)
    assert torch.allclose(norm.running_mean.flatten(), reference.running_mean, atol=1e-6)
    assert torch.allclose(norm.running_var.flatten(), reference.running_var, atol=1e-5)


def test_batch_slot_norm_pools_a_vocabulary_over_its_parts_and_ignores_padding():
    torch.manual_seed(0)
    field, history = torch.randn(6, 1, 2), torch.randn(6, 5, 2)
    mask = torch.arange(5)[None, :] < torch.tensor([0, 1, 2, 5, 3, 4])[:, None]
    history = history * mask.unsqueeze(-1)
    norm = SlotNorm("batch", 1, 2).train()
    out_field, out_history = norm([field, history], [torch.zeros(1, dtype=torch.long), torch.zeros(5, dtype=torch.long)], [None, mask])
    pooled = torch.cat([field[:, 0], history[mask]])  # every real lookup of the vocabulary
    expected = (pooled - pooled.mean(0)) / torch.sqrt(pooled.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(torch.cat([out_field[:, 0], out_history[mask]]), expected, atol=1e-5)
    assert torch.equal(out_history[~mask], torch.zeros_like(out_history[~mask]))


def test_layer_slot_norm_normalises_each_vector_with_its_slots_gain():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5) * 1e-4  # embeddings at their initial scale: variance far below 1e-5
    norm = SlotNorm("layer", 3, 5)
    with torch.no_grad():
        norm.weight.normal_()
    (out,) = norm([x], [torch.tensor([2, 0, 1])])
    plain = (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True)
    assert torch.allclose(out, plain * norm.weight[[2, 0, 1]], atol=1e-3)
    assert out.abs().amax() > 0.5  # unit scale, not shrunk by eps


def test_feature_embedding_normalises_histories_with_their_fields_map(seq_data, seq_batch):
    for kind in NORMS:
        torch.manual_seed(0)
        emb = FeatureEmbedding(seq_data.schema, dim=4, pool_sequences=False, init_std=0.1, input_norm=kind).eval()
        with torch.no_grad():
            emb.norm.weight.normal_()
            emb.norm.bias.normal_()
            if kind == "batch":
                emb.norm.running_mean.normal_()
                emb.norm.running_var.uniform_(0.5, 2.0)
            out = emb(seq_batch)
        seq = seq_data.schema.sequence("hist_item_id")
        item = seq_data.schema.categorical_index("item_id")
        assert emb.sequence_slot(seq) == item
        row = int(torch.nonzero(seq_batch["seqlen/hist_item_id"] > 0)[0])
        raw = emb.embedding.weight[seq_batch["seq/hist_item_id"][row, 0].long() + emb.sequence_offset(seq)]
        with torch.no_grad():
            (expected,) = emb.normalize([raw.view(1, 1, -1)], [torch.tensor([item])])
        assert torch.allclose(out.sequences["hist_item_id"][row, 0], expected.view(-1), atol=1e-5)
        padded = ~out.masks["hist_item_id"]
        assert torch.equal(out.sequences["hist_item_id"][padded], torch.zeros_like(out.sequences["hist_item_id"][padded]))


def test_layer_norm_keeps_a_numeric_columns_magnitude(seq_data, seq_batch):
    emb = FeatureEmbedding(seq_data.schema, dim=4, input_norm="layer")
    with torch.no_grad():
        fields = emb(seq_batch).fields
    numeric = fields[:, len(seq_data.schema.categorical)]  # value * LayerNorm(w): scales with the value
    values = seq_batch["numeric"][:, 0]
    assert torch.allclose(numeric, values[:, None] * emb.numeric_vectors()[0], atol=1e-6)


# ---------------------------------------------------------------------- every model honours it
def test_input_norm_is_a_config_field_of_every_model():
    for name in MODELS:
        config = make_config(name)
        assert config.input_norm in ("none", "batch", "layer")
    assert "input_norm" in model_class("lr").inert_config  # width-1 weights: nothing to normalise
    for name in ("sort", "mgdin", "cdnet"):
        assert make_config(name).input_norm == "layer"
    for name in ("deepfm", "dnn", "dcnv2", "autoint", "finalmlp", "ssr", "din", "fm"):
        assert make_config(name).input_norm == "none"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", NORMS)
def test_input_norm_runs_trains_every_parameter_and_changes_the_output(name, kind, seq_data, seq_batch):
    _compatible(name, seq_data)
    if not _honours_input_norm(name):
        pytest.skip(f"{name} declares input_norm inert")
    model = _build(name, seq_data.schema, input_norm=kind).train()
    norms = [m.norm for m in model.modules() if isinstance(m, FeatureEmbedding) and m.norm is not None]
    assert norms and all(n.kind == kind for n in norms)
    out = model(seq_batch)
    assert out["logit"].shape == (len(seq_batch["label"]),) and torch.isfinite(out["logit"]).all()
    _loss(out, seq_batch["label"]).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}/{kind}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}/{kind}: non-finite gradient on {pname}"
    other = "none" if make_config(name).input_norm != "none" else ("layer" if kind == "batch" else "batch")
    plain = _build(name, seq_data.schema, input_norm=other).eval()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(seq_batch)["logit"], plain(seq_batch)["logit"], atol=1e-6)


@pytest.mark.parametrize("name", ["deepfm", "din", "sort", "cdnet"])
def test_batch_input_norm_in_eval_does_not_depend_on_other_rows(name, seq_data, batch_of):
    model = _build(name, seq_data.schema, input_norm="batch").train()
    with torch.no_grad():
        model(batch_of(seq_data, 256))  # running statistics away from their initial values
    model.eval()
    first, other = batch_of(seq_data, 64), batch_of(seq_data, 64, start=64)
    with torch.no_grad():
        base = model(first)["logit"]
        alone = model({k: v[:4] for k, v in first.items()})["logit"]
        mixed = model({k: torch.cat([v[:4], other[k][4:]]) for k, v in first.items()})["logit"]
    assert torch.allclose(alone, base[:4], atol=1e-6) and torch.allclose(mixed[:4], base[:4], atol=1e-6)


# --------------------------------------------------------------------- embedding-like params
EMBEDDING_LIKE_WORDS = ("embedding", "numeric_weight", "type", "segment", "position", "prototype", "special")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("data", ["seq_data", "flat_data"])
def test_embedding_parameters_cover_every_embedding_like_tensor(name, data, request):
    dataset = request.getfixturevalue(data)
    _compatible(name, dataset)
    model = _build(name, dataset.schema)
    listed = {id(p) for p in model.embedding_parameters()}
    assert len(listed) == len(model.embedding_parameters())  # no duplicates
    params = dict(model.named_parameters())
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            assert id(module.weight) in listed, f"{name}: embedding table left out"
        if isinstance(module, FeatureEmbedding) and module.numeric_weight is not None:
            assert id(module.numeric_weight) in listed, f"{name}: numeric vectors left out"
    for pname, p in params.items():
        last = pname.split(".")[-2] if pname.split(".")[-1].isdigit() else pname.split(".")[-1]
        looks_like = any(word in last for word in EMBEDDING_LIKE_WORDS) and "norm" not in pname
        if looks_like:
            assert id(p) in listed, f"{name}: embedding-like parameter {pname} is not in embedding_parameters()"
    for pname, p in params.items():  # normalisation gains and biases never are
        if ".norm." in pname or pname.endswith("_norm.weight"):
            assert id(p) not in listed, f"{name}: {pname} is a normalisation parameter"


def test_structure_vectors_of_sort_mgdin_and_cdnet_are_embedding_like(seq_data):
    expected = {
        "sort": ["special", "segment", "field_embedding", "behaviour_position.0", "embedding.numeric_weight"],
        "mgdin": ["group_bias", "embedding.numeric_weight"],
        "cdnet": ["context_type", "core_type", "blocks.0.prototypes.prototypes", "embedding.numeric_weight"],
    }
    for name, names in expected.items():
        model = _build(name, seq_data.schema)
        listed = {id(p) for p in model.embedding_parameters()}
        params = dict(model.named_parameters())
        for pname in names:
            assert id(params[pname]) in listed, f"{name}: {pname}"
        assert id(model.embedding.embedding.weight) in listed


# ---------------------------------------------------------------------------------- DCNv2
@pytest.mark.parametrize("rank", [1, 3, 7])
def test_dcnv2_low_rank_cross_network_has_2_d_r_plus_d_parameters_per_layer(rank):
    width, layers = 12, 3
    low = CrossNetV2(width, layers, low_rank=rank)
    full = CrossNetV2(width, layers)
    assert sum(p.numel() for p in low.parameters()) == layers * (2 * width * rank + width)
    assert sum(p.numel() for p in full.parameters()) == layers * (width * width + width)


def test_dcnv2_low_rank_layer_is_x0_times_u_v_x_plus_b_plus_x_and_trains():
    torch.manual_seed(0)
    cross = CrossNetV2(6, 2, low_rank=2)
    x0 = torch.randn(5, 6, requires_grad=True)
    x = x0
    for layer in cross.weights:
        v_t, u = layer[0].weight, layer[1].weight  # (r, D), (D, r)
        x = x0 * ((x @ v_t.T) @ u.T + layer[1].bias) + x
    out = cross(x0)
    assert out.shape == (5, 6) and torch.allclose(out, x, atol=1e-6)
    out.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cross.parameters())


@pytest.mark.parametrize("overrides", [{"batch_norm": True}, {"low_rank": 2}, {"batch_norm": True, "low_rank": 2, "structure": "stacked"}])
def test_dcnv2_options_build_train_and_change_the_output(overrides, seq_data, seq_batch):
    model = _build("dcnv2", seq_data.schema, **overrides).train()
    if overrides.get("batch_norm"):
        assert sum(isinstance(m, nn.BatchNorm1d) for m in model.mlp.modules()) == 2  # one per hidden layer
    if overrides.get("low_rank"):
        width = model.embedding.output_dim
        cross = sum(p.numel() for p in model.cross.parameters())
        assert cross == 2 * (2 * width * 2 + width)  # smoke: 2 cross layers
    out = model(seq_batch)
    assert out["logit"].shape == (len(seq_batch["label"]),)
    _loss(out, seq_batch["label"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    base = _build("dcnv2", seq_data.schema).train()
    with torch.no_grad():
        assert not torch.allclose(model(seq_batch)["logit"], base(seq_batch)["logit"])
    assert make_config("dcnv2").batch_norm is False and make_config("dcnv2").low_rank is None  # paper defaults


# -------------------------------------------------------------------------------- AutoInt+
def test_autoint_plus_batch_norm_in_the_deep_part(seq_data, seq_batch):
    model = _build("autoint", seq_data.schema, batch_norm=True).train()
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.mlp.modules()) == 1  # smoke MLP [16]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.interacting.modules())
    _loss(model(seq_batch), seq_batch["label"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert make_config("autoint").batch_norm is False  # the paper's AutoInt+ has none


# ------------------------------------------------------------------------ training defaults
ALLOWED_TRAIN_DEFAULTS = {"warmup_steps": int, "lr_schedule": str, "patience": int, "grad_clip": float, "monitor": str}


@pytest.mark.parametrize("name", MODELS)
def test_train_defaults_use_known_keys_and_types(name):
    defaults = model_class(name).train_defaults
    for key, value in defaults.items():
        assert key in ALLOWED_TRAIN_DEFAULTS, f"{name}: unknown training key {key}"
        assert isinstance(value, ALLOWED_TRAIN_DEFAULTS[key]), f"{name}: {key}={value!r}"
    if "lr_schedule" in defaults:
        assert defaults["lr_schedule"] in ("plateau", "cosine", "constant")
    if "monitor" in defaults:
        from agenticrs.train.metrics import metric_spec

        metric_spec(defaults["monitor"])  # a registered metric


def test_transformers_ask_for_warm_up_and_patience():
    for name in ("sort", "mgdin"):
        defaults = model_class(name).train_defaults
        assert defaults["warmup_steps"] > 0 and defaults["patience"] >= 4 and defaults["lr_schedule"] == "cosine"

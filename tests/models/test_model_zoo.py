"""Contract tests run on every registered model of the zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo_helpers import skip_unless_compatible, smoke_model, training_loss

from agenticrs.features.batching import iterate_batches
from agenticrs.models.base import (
    IncompatibleDataError,
    build_model,
    list_models,
    make_config,
    model_class,
)
from agenticrs.models.layers import FeatureEmbedding, batch_key_seq, batch_key_seqlen, sequence_mask
from agenticrs.train.metrics import auc

MODELS = list_models()
BUILT_IN = ["lr", "fm", "deepfm", "dcnv2", "autoint", "din", "finalmlp"]


_build = smoke_model
_compatible = skip_unless_compatible
_loss = training_loss


def test_builtin_models_are_registered():
    assert set(BUILT_IN) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("data", ["seq_data", "flat_data"])
def test_output_shape_and_finite(name, data, request, batch_of):
    dataset = request.getfixturevalue(data)
    _compatible(name, dataset)
    batch = batch_of(dataset, 64)
    model = _build(name, dataset.schema)
    for train in (True, False):
        model.train(train)
        out = model(batch)
        assert out["logit"].shape == (64,)
        assert torch.isfinite(out["logit"]).all()
        if "aux_loss" in out:
            assert out["aux_loss"].dim() == 0 and torch.isfinite(out["aux_loss"])


def _used_rows(module: FeatureEmbedding, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    rows = [(batch["categorical"].long() + module.field_offsets).flatten()]
    for seq in module.id_sequences:
        ids = batch[batch_key_seq(seq.name)].long()
        mask = sequence_mask(batch[batch_key_seqlen(seq.name)], ids.shape[1])
        rows.append((ids + module.sequence_offset(seq))[mask])
    return torch.cat(rows).unique()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name, seq_data, seq_batch):
    _compatible(name, seq_data)
    model = _build(name, seq_data.schema)
    # training mode: every trainable parameter takes part in the graph, with finite gradients
    model.train()
    _loss(model(seq_batch), seq_batch["label"]).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient on {pname}"
    # eval mode (batch norm on running statistics, so a Linear bias before it is not cancelled by the
    # batch mean): every parameter gets a non-zero gradient, every embedding row the batch uses too
    model.zero_grad(set_to_none=True)
    model.eval()
    _loss(model(seq_batch), seq_batch["label"]).backward()
    tables = {}
    for module in model.modules():
        if isinstance(module, FeatureEmbedding):
            tables[id(module.embedding.weight)] = _used_rows(module, seq_batch)
    for pname, p in model.named_parameters():
        if not p.requires_grad or pname.startswith(model.training_only):
            continue
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        if id(p) in tables:
            rows = tables[id(p)]
            dead = rows[(p.grad[rows] == 0).all(dim=1)]
            assert len(dead) == 0, f"{name}: embedding rows {dead.tolist()} used by the batch get no gradient ({pname})"
        else:
            assert p.grad.abs().sum() > 0, f"{name}: zero gradient on {pname}"


@pytest.mark.parametrize("name", MODELS)
def test_save_load_gives_identical_predictions(name, seq_data, seq_batch, tmp_path):
    _compatible(name, seq_data)
    model = _build(name, seq_data.schema, seed=1)
    # one training step so that the weights and batch-norm statistics are not the initial ones
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    _loss(model(seq_batch), seq_batch["label"]).backward()
    optimizer.step()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    fresh = _build(name, seq_data.schema, seed=2)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(seq_batch)["logit"], fresh(seq_batch)["logit"])


@pytest.mark.parametrize("name", MODELS)
def test_eval_prediction_does_not_depend_on_other_rows(name, seq_data, batch_of):
    _compatible(name, seq_data)
    model = _build(name, seq_data.schema)
    model.train()
    with torch.no_grad():  # move batch-norm / Dice running statistics away from their initial values
        for batch in iterate_batches(seq_data.split("train"), 256):
            model(batch)
    model.eval()
    first, other = batch_of(seq_data, 64), batch_of(seq_data, 64, start=64)
    mixed = {k: torch.cat([v[:1], other[k][1:]]) for k, v in first.items()}
    with torch.no_grad():
        base = model(first)["logit"]
        assert torch.allclose(model(mixed)["logit"][0], base[0], rtol=0, atol=1e-6)
        alone = model({k: v[:5] for k, v in first.items()})["logit"]
        assert torch.allclose(alone, base[:5], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_default_and_smoke_configs_build_and_run(name, seq_data, seq_batch):
    _compatible(name, seq_data)
    for smoke in (False, True):
        model = build_model(name, seq_data.schema, smoke=smoke)
        model.eval()
        with torch.no_grad():
            assert model(seq_batch)["logit"].shape == (len(seq_batch["label"]),)
        spec = model.mlp_ceiling_spec()
        if spec is not None:
            width, hidden = spec
            assert isinstance(width, int) and width > 0 and all(isinstance(h, int) for h in hidden)
    assert model_class(name).default_config() == make_config(name)


def test_din_refuses_a_data_set_without_sequences(flat_data):
    with pytest.raises(IncompatibleDataError, match="din.*behaviour sequence"):
        build_model("din", flat_data.schema)


def test_unknown_config_key_is_refused(seq_data):
    with pytest.raises(ValueError, match="invalid config for model 'deepfm'"):
        build_model("deepfm", seq_data.schema, config={"hiden_units": [8]})


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_learns_a_planted_signal(name, seq_data):
    """300 Adam steps on the smoke config: training AUC clearly above chance."""
    _compatible(name, seq_data)
    split = seq_data.split("train")
    model = _build(name, seq_data.schema)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    step, epoch = 0, 0
    while step < 300:
        for batch in iterate_batches(split, 256, shuffle=True, seed=0, epoch=epoch, drop_last=True):
            optimizer.zero_grad()
            _loss(model(batch), batch["label"]).backward()
            optimizer.step()
            step += 1
            if step == 300:
                break
        epoch += 1
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for batch in iterate_batches(split, 1000):
            scores.append(model(batch)["logit"].numpy())
            labels.append(batch["label"].numpy())
    train_auc = auc(np.concatenate(labels), np.concatenate(scores))
    assert train_auc > 0.75, f"{name}: training AUC {train_auc:.3f}"

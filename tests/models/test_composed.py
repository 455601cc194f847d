"""Compositions of building blocks: the block registry, every block's shape and gradients, exact
equality with the zoo models a composition restates (FM, DeepFM), the inputs a composition needs,
and learning a planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo_helpers import training_loss

from agenticrs.config import apply_overrides
from agenticrs.features.batching import iterate_batches
from agenticrs.models.base import IncompatibleDataError, build_model, make_config, model_class
from agenticrs.models.blocks import (
    BLOCKS,
    Block,
    BlockInput,
    BlockSettings,
    blocks_inputs,
    parse_blocks,
    register_block,
)
from agenticrs.models.composed import Composed
from agenticrs.models.layers import FeatureEmbedding
from agenticrs.runtime.registry import Registry
from agenticrs.train.metrics import auc

# small settings of every block (a block registered later without an entry here fails the test below)
SMALL = {
    "linear": {},
    "fm": {},
    "mlp": {"hidden_units": [8]},
    "cross": {"num_layers": 2},
    "self_attention": {"num_layers": 2, "heads": 2, "attention_dim": 4},
    "target_attention": {"attention_hidden_units": [8]},
}


def composed(schema, blocks: list[dict], seed: int = 0, **settings) -> Composed:
    torch.manual_seed(seed)
    model = build_model("composed", schema, {"embedding_dim": 4, "blocks": blocks, **settings})
    assert isinstance(model, Composed)
    return model


def test_blocks_live_in_one_registry_with_typed_settings():
    assert isinstance(BLOCKS, Registry)
    assert set(SMALL) == set(BLOCKS.names())
    for name, cls in BLOCKS.items():
        assert cls.name == name and issubclass(cls.Settings, BlockSettings) and cls.produces in ("logit", "representation")
        assert cls.Settings().block == name  # every setting has a default; the name is the block's
    with pytest.raises(ValueError, match="building block name 'cross' is already registered"):
        BLOCKS.register("cross", Block)

    class Mislabelled(Block):
        Settings = BLOCKS["fm"].Settings

    with pytest.raises(ValueError, match="block 'other'.*declares block='fm'"):
        register_block("other")(Mislabelled)
    assert "other" not in BLOCKS


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([{"block": "cross"}, {"block": "foo"}], r"blocks\.1\.block: unknown block 'foo'; known: cross, fm, linear, mlp"),
        ([{"block": "cross", "num_layers": 0}], r"blocks\.0\.num_layers: Input should be greater than or equal to 1"),
        ([{"block": "mlp", "hidden_units": []}], r"blocks\.0\.hidden_units: List should have at least 1 item"),
        ([{"block": "self_attention", "head": 2}], r"blocks\.0\.head: Extra inputs are not permitted"),
        ([{"num_layers": 2}], r"blocks\.0\.block: a block needs its name under 'block'"),
        ([3], r"blocks\.0: a block is a mapping"),
        ([], r"blocks: List should have at least 1 item"),
        ("cross", r"blocks: a list of blocks"),
    ],
)
def test_a_bad_composition_is_refused_naming_the_block_and_setting(blocks, message):
    with pytest.raises(ValueError, match=rf"invalid config for model 'composed': {message}"):
        make_config("composed", {"blocks": blocks})


def test_a_composition_is_data_set_on_the_command_line_and_round_trips():
    raw = apply_overrides({}, ["model_params.blocks=[{block: cross, num_layers: 2}, {block: mlp, hidden_units: [16]}]"])
    config = make_config("composed", raw["model_params"])
    assert [type(b).__name__ for b in config.blocks] == ["CrossSettings", "MLPBlockSettings"]
    dumped = config.model_dump()
    assert dumped["blocks"][0] == {"block": "cross", "num_layers": 2, "low_rank": None}
    assert make_config("composed", dumped) == config
    assert parse_blocks(config.blocks) == config.blocks  # typed settings pass through


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_block_has_its_shape_and_trains_every_parameter(name, seq_data, seq_batch):
    model = composed(seq_data.schema, [{"block": name, **SMALL[name]}])
    (part,) = model.parts
    model.train()
    x = BlockInput(seq_batch, model.embedding(seq_batch))
    out = part(x)
    rows = len(seq_batch["label"])
    assert out.shape == ((rows,) if part.produces == "logit" else (rows, part.output_dim))
    assert (model.head is None) == (part.produces == "logit")
    logit = model(seq_batch)["logit"]
    assert logit.shape == (rows,) and torch.isfinite(logit).all()
    training_loss(model(seq_batch), seq_batch["label"]).backward()
    # the block's own parameters, the head's and the shared table (which a lone first-order block
    # does not read; target attention reads the candidate and the histories, not the numeric column)
    checked = {"bias": model.bias, **{f"parts.0.{n}": p for n, p in part.named_parameters()}}
    checked.update({f"head.{n}": p for n, p in (model.head.named_parameters() if model.head else [])})
    if name != "linear":
        checked["embedding.embedding.weight"] = model.embedding.embedding.weight
    assert len(checked) > 1
    for pname, p in checked.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: no gradient on {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient on {pname}"


def test_composition_of_linear_and_fm_is_fm_exactly(seq_data, seq_batch):
    torch.manual_seed(0)
    fm = build_model("fm", seq_data.schema, {"embedding_dim": 4}).eval()
    for module in fm.modules():
        if isinstance(module, FeatureEmbedding):
            torch.nn.init.normal_(module.embedding.weight, std=0.3)
    with torch.no_grad():
        fm.bias.fill_(0.25)
    model = composed(seq_data.schema, [{"block": "linear"}, {"block": "fm"}], seed=1).eval()
    model.load_state_dict({k.replace("first_order.", "parts.0.weights."): v for k, v in fm.state_dict().items()})
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in fm.parameters())
    with torch.no_grad():
        expected = fm(seq_batch)["logit"]
        assert expected.std() > 0.1  # the pairwise term shows
        torch.testing.assert_close(model(seq_batch)["logit"], expected, rtol=0, atol=1e-6)


def test_composition_of_linear_fm_and_mlp_is_deepfm_exactly(seq_data, seq_batch):
    torch.manual_seed(0)
    settings = {"embedding_dim": 4, "hidden_units": [16, 8], "dropout": 0.0, "batch_norm": True}
    deepfm = build_model("deepfm", seq_data.schema, settings)
    deepfm.train()
    with torch.no_grad():  # batch-norm statistics away from their initial values
        deepfm(seq_batch)
    deepfm.eval()
    mlp = {k: settings[k] for k in ("hidden_units", "dropout", "batch_norm")}
    model = composed(seq_data.schema, [{"block": "linear"}, {"block": "fm"}, {"block": "mlp", **mlp}], seed=1).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in deepfm.parameters())
    hidden = len(model.parts[2].mlp.net)
    state = {}
    for key, value in deepfm.state_dict().items():
        if key.startswith("mlp.net."):  # the hidden layers are the mlp block's, the output unit the head's
            index, rest = key.removeprefix("mlp.net.").split(".", 1)
            key = f"parts.2.mlp.net.{index}.{rest}" if int(index) < hidden else f"head.net.{int(index) - hidden}.{rest}"
        state[key.replace("first_order.", "parts.0.weights.")] = value
    model.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(seq_batch)["logit"], deepfm(seq_batch)["logit"], rtol=0, atol=1e-5)


def test_a_composition_needs_what_its_blocks_need(seq_data, flat_data):
    with pytest.raises(IncompatibleDataError, match="model 'composed' cannot train on this data set: needs a behaviour sequence"):
        build_model("composed", flat_data.schema, {"blocks": [{"block": "mlp"}, {"block": "target_attention"}]})
    assert blocks_inputs(parse_blocks([{"block": "fm"}, {"block": "target_attention"}])).needs_target_sequence
    assert not model_class("composed").inputs.needs_target_sequence  # the default composition takes flat data
    assert model_class("composed").inputs_for(make_config("composed", {"blocks": [{"block": "linear"}]})).min_fields_for_interaction == 1
    model = composed(seq_data.schema, [{"block": "target_attention"}, {"block": "mlp", "hidden_units": [8]}])
    assert model.mlp_ceiling_spec() == (model.embedding.output_dim, [8])
    assert composed(seq_data.schema, [{"block": "cross"}]).mlp_ceiling_spec() is None
    linear = composed(seq_data.schema, [{"block": "linear"}, {"block": "fm"}])
    assert {id(p) for p in linear.embedding_parameters()} >= {id(linear.parts[0].weights.embedding.weight)}


def test_a_composition_with_target_attention_learns_the_planted_signal(seq_data):
    """150 Adam steps: training AUC far above chance (label = user score + item score > 0)."""
    torch.set_num_threads(1)
    blocks = [{"block": "target_attention", "attention_hidden_units": [8]}, {"block": "cross", "num_layers": 1},
              {"block": "mlp", "hidden_units": [16]}]  # fmt: skip
    model = composed(seq_data.schema, blocks)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    split = seq_data.split("train")
    model.train()
    step, epoch = 0, 0
    while step < 150:
        for batch in iterate_batches(split, 256, shuffle=True, seed=0, epoch=epoch, drop_last=True):
            optimizer.zero_grad()
            training_loss(model(batch), batch["label"]).backward()
            optimizer.step()
            step += 1
            if step == 150:
                break
        epoch += 1
    model.eval()
    with torch.no_grad():
        scored = [(b["label"].numpy(), model(b)["logit"].numpy()) for b in iterate_batches(split, 1000)]
    train_auc = auc(np.concatenate([y for y, _ in scored]), np.concatenate([s for _, s in scored]))
    assert train_auc > 0.8, f"training AUC {train_auc:.3f}"


def test_a_search_candidate_composition_is_checked_against_its_blocks(seq_data, flat_data):
    """The evolution's cheap static check reads the candidate's config, not the default composition."""
    from agenticrs.agents.candidate import Candidate
    from agenticrs.agents.proposers.builtin import input_problems

    attention = Candidate(model="composed", model_params={"blocks": [{"block": "target_attention"}, {"block": "mlp"}]})
    (problem,) = input_problems(attention, flat_data.schema)
    assert problem.startswith("model 'composed' cannot train on this data set: needs a behaviour sequence")
    assert input_problems(attention, seq_data.schema) == []
    assert input_problems(Candidate(model="composed"), flat_data.schema) == []

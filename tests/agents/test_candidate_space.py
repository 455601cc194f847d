"""Candidates (effective config, hash, learners' fields and run configs) and the search space's checks."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from agenticrs.agents.candidate import Candidate, active_knobs
from agenticrs.agents.space import DEFAULT_MODELS, SearchSpace, check, synthetic_batch
from agenticrs.features.schema import (
    MISSING_INDEX,
    CategoricalInput,
    FeatureSchema,
    SequenceInput,
)
from agenticrs.features.subset import bag_fields, field_names, protected_fields
from agenticrs.models.base import build_model
from agenticrs.train.config import TrainConfig

ALL = ["user_id", "age", "item_id", "cate_id", "brand", "hour", "price", "hist_item_id", "hist_cate_id"]
PROTECTED = {"item_id", "cate_id"}


# --------------------------------------------------------------------------- hash


def test_hash_ignores_knobs_the_model_does_not_have():
    plain = Candidate(model="lr")
    spelled = Candidate(model="lr", hidden_units=[64, 32], dropout=0.45, embedding_dim=32)
    assert active_knobs("lr") == set()
    assert plain.model_knobs() == {} == spelled.model_knobs()
    assert plain.config_hash() == spelled.config_hash()
    assert plain.effective() == spelled.effective()
    # canonical resets what the model ignores
    assert spelled.canonical() == plain
    # but a training knob is real for every model
    assert Candidate(model="lr", learning_rate=2e-3).config_hash() != plain.config_hash()
    assert Candidate(model="lr", batch_size=1024).config_hash() != plain.config_hash()


def test_hash_fills_defaults_and_changes_with_real_knobs():
    base = Candidate(model="dnn")
    assert base.config_hash() == Candidate(model="dnn", model_params={"activation": "relu"}).config_hash()
    assert base.config_hash() == Candidate(model="dnn").config_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", base.config_hash())
    others = [
        Candidate(model="dnn", hidden_units=[400, 400]),
        Candidate(model="dnn", dropout=0.1),
        Candidate(model="dnn", embedding_dim=16),
        Candidate(model="dnn", model_params={"batch_norm": False}),
        Candidate(model="dnn", input_fields=ALL[:4]),
        Candidate(model="dnn", feature_bagging=0.5),
        Candidate(model="dnn", epochs=3),
        Candidate(model="dnn", optimizer="adagrad"),
        Candidate(model="deepfm"),
    ]
    hashes = {c.config_hash() for c in others}
    assert len(hashes) == len(others)
    assert base.config_hash() not in hashes
    knobs = base.model_knobs()
    assert knobs == {
        "embedding_dim": 10, "hidden_units": [400, 400, 400], "activation": "relu", "dropout": 0.2, "batch_norm": True,
        "input_norm": "none",
    }


def test_model_params_are_validated_by_the_model_config():
    with pytest.raises(ValueError, match="invalid config for model 'dnn': bogus"):
        Candidate(model="dnn", model_params={"bogus": 1}).model_knobs()
    with pytest.raises(ValueError, match="invalid config for model 'dnn': batch_norm"):
        Candidate(model="dnn", model_params={"batch_norm": "maybe"}).config_hash()
    # an LR has no hidden layers: setting them through model_params is an error, not ignored
    with pytest.raises(ValueError, match="invalid config for model 'lr'"):
        Candidate(model="lr", model_params={"activation": "relu"}).model_knobs()


def test_unknown_model_and_clashing_model_params_are_errors():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        Candidate(model="nope")
    for key, value in [("dropout", 0.1), ("embedding_dim", 8), ("hidden_units", [8]), ("input_fields", ["age"])]:
        with pytest.raises(ValueError, match=f"model_params must not set \\['{key}'\\]"):
            Candidate(model="dnn", model_params={key: value})


# --------------------------------------------------------------------------- learners


def test_member_fields_without_subset_or_bagging_is_none():
    assert Candidate(model="dnn").member_fields(ALL, 3, PROTECTED) is None
    subset = ["user_id", "item_id", "cate_id", "price"]
    assert Candidate(model="dnn", input_fields=subset).member_fields(ALL, 3, PROTECTED) == subset


def test_member_fields_bags_per_seed_and_keeps_protected():
    cand = Candidate(model="dnn", feature_bagging=0.5)
    bags = {seed: cand.member_fields(ALL, seed, PROTECTED) for seed in range(8)}
    for seed, bag in bags.items():
        assert bag == bag_fields(ALL, 0.5, seed, PROTECTED)
        assert PROTECTED <= set(bag)
        assert len(bag) == 2 + 4  # ceil(0.5 * 7 droppable) + 2 protected
        assert bag == [f for f in ALL if f in bag]
        assert cand.member_fields(ALL, seed, PROTECTED) == bag  # deterministic
    assert len({tuple(b) for b in bags.values()}) > 1

    subset = ["user_id", "age", "item_id", "cate_id", "brand", "price"]
    within = Candidate(model="dnn", input_fields=subset, feature_bagging=0.5)
    for seed in range(5):
        bag = within.member_fields(ALL, seed, PROTECTED)
        assert bag == bag_fields(subset, 0.5, seed, PROTECTED)
        assert set(bag) <= set(subset) and PROTECTED <= set(bag)
        assert len(bag) == 2 + 2


def test_run_config_carries_the_learner_settings():
    base = TrainConfig(max_steps_per_epoch=5, patience=4, seed=1)
    cand = Candidate(
        model="dnn", hidden_units=[64, 32], learning_rate=3e-3, batch_size=256, epochs=3, optimizer="adagrad",
        embedding_l2=1e-4,
    )
    config = cand.run_config("synthetic-tiny", seed=7, base=base, all_fields=ALL, protected=PROTECTED, name="m0")
    assert (config.dataset, config.model, config.name, config.smoke) == ("synthetic-tiny", "dnn", "m0", False)
    assert config.train.seed == 7
    assert config.train.learning_rate == 3e-3
    assert config.train.batch_size == 256
    assert config.train.epochs == 3
    assert config.train.optimizer == "adagrad"
    assert config.train.embedding_l2 == 1e-4
    assert (config.train.max_steps_per_epoch, config.train.patience) == (5, 4)  # from the base
    assert base.seed == 1 and base.epochs == 100  # the base is not modified
    assert config.model_params == cand.model_knobs()
    assert "input_fields" not in config.model_params

    bagged = cand.model_copy(update={"feature_bagging": 0.5})
    for seed in (0, 1):
        config = bagged.run_config("d", seed=seed, base=base, all_fields=ALL, protected=PROTECTED)
        assert config.model_params["input_fields"] == bag_fields(ALL, 0.5, seed, PROTECTED)
        assert config.train.seed == seed

    subset = ["user_id", "item_id", "cate_id"]
    config = cand.model_copy(update={"input_fields": subset}).run_config("d", 0, base, ALL, PROTECTED)
    assert config.model_params["input_fields"] == subset


# --------------------------------------------------------------------------- check


def test_a_valid_candidate_passes_with_its_parameter_count_and_latency(tiny_synthetic):
    schema = tiny_synthetic.schema
    cand = Candidate(model="dnn", embedding_dim=8, hidden_units=[64, 32], dropout=0.1)
    report = check(cand, SearchSpace(), schema)
    assert report.ok, report.reason
    assert report.problems == [] and report.reason == "valid"
    expected = sum(p.numel() for p in build_model("dnn", schema, cand.model_knobs()).parameters())
    assert report.parameters == expected > 0
    assert report.latency_ms_per_1000 > 0

    subset = [f for f in field_names(schema) if f not in ("brand_id", "device")]
    narrowed = check(cand.model_copy(update={"input_fields": subset}), SearchSpace(), schema)
    assert narrowed.ok, narrowed.reason
    assert 0 < narrowed.parameters < report.parameters


def test_knobs_a_model_ignores_are_not_bounds_checked(tiny_synthetic):
    cand = Candidate(model="lr", embedding_dim=7, hidden_units=[1000] * 6, dropout=0.8)
    assert check(cand, SearchSpace(), tiny_synthetic.schema).ok


@pytest.mark.parametrize(
    ("update", "pattern"),
    [
        ({"embedding_dim": 7}, r"embedding_dim 7 not in \[4, 8, 10, 16, 24, 32\]"),
        ({"hidden_units": [64] * 5}, r"depth 5 outside \[1, 4\]"),
        ({"hidden_units": [64, 100, 7]}, r"widths \[100, 7\] not in"),
        ({"dropout": 0.6}, r"dropout 0.6 outside \[0.0, 0.5\]"),
        ({"learning_rate": 0.05}, r"learning_rate 0.05 outside \[0.0001, 0.01\]"),
        ({"learning_rate": 5e-5}, r"learning_rate 5e-05 outside"),
        ({"feature_bagging": 0.3}, r"feature_bagging 0.3 below 0.5"),
        ({"input_fields": ["user_id", "item_id", "cate_id", "zzz"]}, r"input_fields \['zzz'\] are not fields"),
    ],
)
def test_out_of_bounds_knobs_are_named(tiny_synthetic, update, pattern):
    cand = Candidate(model="dnn", hidden_units=[64], embedding_dim=8).model_copy(update=update)
    report = check(cand, SearchSpace(), tiny_synthetic.schema)
    assert not report.ok
    assert len(report.problems) == 1
    assert re.search(pattern, report.problems[0]), report.problems
    assert report.parameters is None and report.latency_ms_per_1000 is None


def test_several_problems_are_all_reported(tiny_synthetic):
    cand = Candidate(model="dnn", embedding_dim=7, dropout=0.7, learning_rate=0.05)
    report = check(cand, SearchSpace(models=["lr"]), tiny_synthetic.schema)
    assert not report.ok
    assert len(report.problems) == 4
    assert "model 'dnn' is not in the search space (['lr'])" in report.problems[0]
    assert report.reason == "; ".join(report.problems)


def test_parameter_budget(tiny_synthetic):
    cand = Candidate(model="dnn", embedding_dim=8, hidden_units=[64])
    count = sum(p.numel() for p in build_model("dnn", tiny_synthetic.schema, cand.model_knobs()).parameters())
    report = check(cand, SearchSpace(max_parameters=1000), tiny_synthetic.schema)
    assert not report.ok
    assert report.problems == [f"{count:,} parameters exceed the budget of 1,000"]
    assert report.parameters == count
    assert report.latency_ms_per_1000 is None
    assert check(cand, SearchSpace(max_parameters=count), tiny_synthetic.schema).ok


def test_latency_budget(tiny_synthetic):
    cand = Candidate(model="dnn", embedding_dim=8, hidden_units=[64])
    report = check(cand, SearchSpace(max_latency_ms_per_1000=1e-6), tiny_synthetic.schema)
    assert not report.ok
    assert re.fullmatch(r"latency \d+\.\d ms/1k rows exceeds 0\.0", report.problems[0]), report.problems
    assert report.latency_ms_per_1000 > 1e-6
    assert report.parameters > 0


def test_subsets_that_drop_protected_or_too_many_fields_are_rejected(tiny_synthetic):
    schema = tiny_synthetic.schema
    no_item = [f for f in field_names(schema) if f != "item_id"]
    report = check(Candidate(model="dnn", hidden_units=[64], input_fields=no_item), SearchSpace(), schema)
    assert not report.ok
    assert report.problems == ["input_fields drops ['item_id']: sequence tables and targets are always kept"]

    tiny = ["item_id", "cate_id"]
    report = check(Candidate(model="dnn", hidden_units=[64], input_fields=tiny), SearchSpace(min_fields=3), schema)
    assert report.problems == ["input_fields keeps 2 fields; at least 3"]
    assert check(Candidate(model="dnn", hidden_units=[64], input_fields=tiny), SearchSpace(min_fields=2), schema).ok


def test_a_model_that_cannot_use_the_data_is_rejected_with_its_reason(tiny_synthetic):
    schema = tiny_synthetic.schema
    din = Candidate(model="din", hidden_units=[64, 32])
    assert check(din, SearchSpace(), schema).ok

    no_sequences = [f for f in field_names(schema) if not f.startswith("hist_")]
    report = check(din.model_copy(update={"input_fields": no_sequences}), SearchSpace(), schema)
    assert not report.ok
    assert report.problems[0].startswith("model 'din' cannot train on the selected input fields: needs a behaviour sequence")

    flat = replace(schema, sequences=())
    report = check(din, SearchSpace(), flat)
    assert not report.ok
    assert report.problems[0].startswith("model 'din' cannot train on this data set: needs a behaviour sequence")


def test_describe_lists_only_compatible_models(tiny_synthetic):
    schema = tiny_synthetic.schema
    space = SearchSpace()
    described = space.describe(schema)
    assert described["models"] == DEFAULT_MODELS
    assert described["input_fields"] == {"all": field_names(schema), "always_kept": ["cate_id", "item_id"]}
    assert described["hidden_units"] == {"widths": space.widths, "depth": [1, 4]}
    assert described["feature_bagging"] == [0.5, 1.0]

    flat = replace(schema, sequences=())
    assert space.describe(flat)["models"] == [m for m in DEFAULT_MODELS if m != "din"]
    assert space.describe(flat)["input_fields"]["always_kept"] == []
    one_field = FeatureSchema(
        categorical=(CategoricalInput("x", 5),), numeric=(), sequences=(), labels=("y",), has_group=False
    )
    # FM-style interactions need two fields
    assert "deepfm" not in space.describe(one_field)["models"]
    assert "lr" in space.describe(one_field)["models"]


# --------------------------------------------------------------------------- synthetic batch


def test_synthetic_batch_matches_the_schema(tiny_synthetic):
    schema = tiny_synthetic.schema
    batch = synthetic_batch(schema, 40)
    assert sorted(batch) == sorted(
        ["categorical", "numeric", "request", "seq/hist_item_id", "seqlen/hist_item_id", "seq/hist_cate_id",
         "seqlen/hist_cate_id"]
    )
    assert batch["categorical"].shape == (40, 9) and batch["categorical"].dtype == torch.int32
    assert (batch["categorical"] == MISSING_INDEX).all()
    assert batch["numeric"].shape == (40, 1) and batch["numeric"].dtype == torch.float32
    assert torch.equal(batch["request"], torch.arange(40) // 4)
    assert batch["seq/hist_item_id"].shape == (40, 10) and batch["seq/hist_item_id"].dtype == torch.int32
    assert torch.equal(batch["seqlen/hist_cate_id"], torch.full((40,), 10, dtype=torch.int32))

    hand = FeatureSchema(
        categorical=(CategoricalInput("a", 5),),
        numeric=("p", "p__missing"),
        sequences=(SequenceInput("ts", 6, table=None, target=None, vocab_size=0, element="numeric"),),
        labels=("y",),
        has_group=False,
    )
    batch = synthetic_batch(hand, 3)
    assert batch["seq/ts"].dtype == torch.float32 and batch["seq/ts"].shape == (3, 6)
    assert (batch["seq/ts"] == 0).all()
    assert batch["numeric"].shape == (3, 2)
    assert protected_fields(hand) == set()

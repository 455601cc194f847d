"""Input-field subsets: the narrowed schema, batch slicing, `input_fields` in build_model, bagging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from agenticrs.features.batching import iterate_batches
from agenticrs.features.schema import CategoricalInput, FeatureSchema, SequenceInput
from agenticrs.features.subset import (
    FieldSubset,
    SubsetSplitView,
    bag_fields,
    field_names,
    protected_fields,
)
from agenticrs.models.base import IncompatibleDataError, build_model, make_config
from agenticrs.models.layers import FeatureEmbedding
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.ctr import predict_probs
from agenticrs.train.run import Run
from agenticrs.train.workflow import train_run


def hand_schema() -> FeatureSchema:
    """Three categorical fields, numeric columns with `__missing` flags, four kinds of sequences."""
    return FeatureSchema(
        categorical=(CategoricalInput("a", 5), CategoricalInput("b", 7), CategoricalInput("c", 9)),
        numeric=("price", "price__missing", "age", "score", "score__missing"),
        sequences=(
            SequenceInput("hist_b", 4, table="b", target="b", vocab_size=7),
            SequenceInput("hist_c", 4, table="c", target="c", vocab_size=9, parallel_to="hist_b"),
            SequenceInput("tags", 3, table=None, target="a", vocab_size=11),
            SequenceInput("hist_ts", 4, table=None, target=None, vocab_size=0, element="numeric", parallel_to="hist_b"),
        ),
        labels=("click",),
        has_group=True,
        has_request=True,
        request_fields=("a", "c"),
    )


def hand_batch(schema: FeatureSchema, rows: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "categorical": torch.randint(0, 5, (rows, len(schema.categorical)), generator=gen, dtype=torch.int32),
        "numeric": torch.randn(rows, len(schema.numeric), generator=gen),
        "request": torch.arange(rows) // 2,
        "label": torch.rand(rows, generator=gen),
    }
    for seq in schema.sequences:
        dtype = torch.float32 if seq.element == "numeric" else torch.int32
        batch[f"seq/{seq.name}"] = torch.randint(0, 5, (rows, seq.max_len), generator=gen).to(dtype)
        batch[f"seqlen/{seq.name}"] = torch.randint(0, seq.max_len + 1, (rows,), generator=gen, dtype=torch.int32)
    return batch


# --------------------------------------------------------------------------- field names


def test_field_names_and_protected_fields_of_a_hand_built_schema():
    schema = hand_schema()
    assert field_names(schema) == ["a", "b", "c", "price", "age", "score", "hist_b", "hist_c", "tags", "hist_ts"]
    assert protected_fields(schema) == {"a", "b", "c"}


def test_field_names_and_protected_fields_of_the_tiny_synthetic_data(tiny_synthetic):
    schema = tiny_synthetic.schema
    assert field_names(schema) == [
        "user_id", "item_id", "cate_id", "brand_id", "user_age_bucket", "user_gender", "hour", "device",
        "position", "price", "hist_item_id", "hist_cate_id",
    ]
    assert protected_fields(schema) == {"item_id", "cate_id"}


def test_a_schema_without_sequences_protects_nothing():
    schema = FeatureSchema(
        categorical=(CategoricalInput("x", 4),), numeric=("n__missing", "n"), sequences=(), labels=("y",),
        has_group=False,
    )
    assert field_names(schema) == ["x", "n"]
    assert protected_fields(schema) == set()


# --------------------------------------------------------------------------- select


def test_select_keeps_chosen_fields_in_original_order_with_missing_flags():
    schema = hand_schema()
    subset = FieldSubset.select(schema, ["tags", "score", "c", "price", "a"])
    narrowed = subset.schema
    assert narrowed.categorical_names == ["a", "c"]
    assert [c.vocab_size for c in narrowed.categorical] == [5, 9]
    assert narrowed.numeric == ("price", "price__missing", "score", "score__missing")
    assert subset.categorical_index == (0, 2)
    assert subset.numeric_index == (0, 1, 3, 4)
    assert [s.name for s in narrowed.sequences] == ["tags"]
    assert narrowed.sequence("tags") == schema.sequence("tags")  # target 'a' kept: unchanged
    assert subset.dropped_sequences == ("hist_b", "hist_c", "hist_ts")
    assert narrowed.request_fields == ("a", "c")
    # what is not a field is untouched
    assert (narrowed.labels, narrowed.has_group, narrowed.has_request) == (("click",), True, True)


def test_select_keeps_parallel_sequences_with_their_main_sequence():
    schema = hand_schema()
    subset = FieldSubset.select(schema, ["b", "c", "hist_b"])
    assert [s.name for s in subset.schema.sequences] == ["hist_b", "hist_c", "hist_ts"]
    assert subset.dropped_sequences == ("tags",)
    assert subset.schema.numeric == ()
    assert subset.numeric_index == ()
    assert subset.schema.request_fields == ("c",)


def test_select_clears_the_target_of_a_kept_sequence_whose_target_is_dropped():
    schema = hand_schema()
    subset = FieldSubset.select(schema, ["b", "tags"])
    (tags,) = subset.schema.sequences
    assert tags.name == "tags"
    assert tags.target is None
    assert (tags.table, tags.vocab_size, tags.max_len) == (None, 11, 3)
    assert schema.sequence("tags").target == "a"  # the original schema is not modified


def test_select_of_every_field_is_the_identity():
    schema = hand_schema()
    subset = FieldSubset.select(schema, field_names(schema))
    assert subset.schema == schema
    assert subset.categorical_index == (0, 1, 2)
    assert subset.numeric_index == (0, 1, 2, 3, 4)
    assert subset.dropped_sequences == ()


def test_select_errors():
    schema = hand_schema()
    with pytest.raises(ValueError, match=r"input_fields \['nope'\] are not fields of the data set"):
        FieldSubset.select(schema, ["a", "nope"])
    with pytest.raises(ValueError, match="price__missing"):  # a derived column is not a field
        FieldSubset.select(schema, ["a", "price__missing"])
    with pytest.raises(ValueError, match="input_fields is empty"):
        FieldSubset.select(schema, [])
    with pytest.raises(ValueError, match="keeps sequence 'hist_c' but drops 'c'"):
        FieldSubset.select(schema, ["a", "hist_c"])
    with pytest.raises(ValueError, match="keeps sequence 'hist_b' but drops 'b'"):
        FieldSubset.select(schema, ["a", "c", "hist_b"])
    # the parallel hist_c comes with hist_b, so dropping its table is an error too
    with pytest.raises(ValueError, match="keeps sequence 'hist_c' but drops 'c'"):
        FieldSubset.select(schema, ["b", "hist_b"])


# --------------------------------------------------------------------------- batch slicing


def test_subset_slices_a_batch_by_column_gather():
    schema = hand_schema()
    batch = hand_batch(schema)
    original = {k: v.clone() for k, v in batch.items()}
    subset = FieldSubset.select(schema, ["a", "c", "score", "tags"])
    out = subset(batch)
    assert torch.equal(out["categorical"], batch["categorical"][:, [0, 2]])
    assert torch.equal(out["numeric"], batch["numeric"][:, [3, 4]])
    assert sorted(out) == ["categorical", "label", "numeric", "request", "seq/tags", "seqlen/tags"]
    assert out["seq/tags"] is batch["seq/tags"]
    assert out["request"] is batch["request"] and out["label"] is batch["label"]
    # the input batch is not modified
    assert sorted(batch) == sorted(original)
    for key, value in original.items():
        assert torch.equal(batch[key], value), key


def test_subset_slicing_on_real_batches_matches_manual_indexing(tiny_synthetic):
    schema = tiny_synthetic.schema
    subset = FieldSubset.select(schema, ["position", "user_id", "price", "brand_id"])
    names = schema.categorical_names
    batch = next(iterate_batches(tiny_synthetic.split("valid"), 300))
    out = subset(batch)
    expected_cols = [names.index("user_id"), names.index("brand_id"), names.index("position")]
    assert torch.equal(out["categorical"], batch["categorical"][:, expected_cols])
    assert torch.equal(out["numeric"], batch["numeric"])  # price is the only numeric column
    assert not any(k.startswith(("seq/", "seqlen/")) for k in out)
    assert out["categorical"].shape == (300, 3)


def test_subset_split_view_narrows_what_prepare_reads(tiny_synthetic):
    train = tiny_synthetic.split("train")
    schema = tiny_synthetic.schema
    subset = FieldSubset.select(schema, ["hour", "user_id", "price"])
    view = SubsetSplitView(train, subset)
    assert view.rows == train.rows
    assert set(view.keys()) == {"categorical", "group", "labels", "numeric"}
    assert "seq/hist_item_id" not in view and "labels" in view
    idx = [schema.categorical_index("user_id"), schema.categorical_index("hour")]
    np.testing.assert_array_equal(view["categorical"], np.asarray(train["categorical"])[:, idx])
    np.testing.assert_array_equal(view["labels"], np.asarray(train["labels"]))
    with pytest.raises(KeyError):
        view["seq/hist_item_id"]


# --------------------------------------------------------------------------- build_model


KEEP_NO_SEQ = ["user_id", "item_id", "hour", "price"]
KEEP_WITH_SEQ = ["user_id", "item_id", "cate_id", "position", "hist_item_id"]


def visible(model: nn.Module) -> nn.Module:
    """Eval mode and embeddings large enough that input changes show in the outputs."""
    for module in model.modules():
        if isinstance(module, FeatureEmbedding):
            nn.init.normal_(module.embedding.weight, std=0.3)
    return model.eval()


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(batch)["logit"]


def perturbed(batch: dict[str, torch.Tensor], schema: FeatureSchema, column: str, seed: int = 1) -> dict:
    out = dict(batch)
    cat = batch["categorical"].clone()
    j = schema.categorical_index(column)
    vocab = schema.categorical[j].vocab_size
    gen = torch.Generator().manual_seed(seed)
    cat[:, j] = (cat[:, j] + torch.randint(1, vocab, (len(cat),), generator=gen, dtype=cat.dtype)) % vocab
    out["categorical"] = cat
    return out


def test_build_model_with_input_fields_builds_on_the_narrowed_schema(tiny_synthetic):
    schema = tiny_synthetic.schema
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"input_fields": KEEP_WITH_SEQ}, smoke=True)
    assert model.schema.categorical_names == ["user_id", "item_id", "cate_id", "position"]
    assert model.schema.numeric == ()
    assert [s.name for s in model.schema.sequences] == ["hist_item_id", "hist_cate_id"]
    assert model.config.input_fields == KEEP_WITH_SEQ
    batch = next(iterate_batches(tiny_synthetic.split("valid"), 512))
    out = logits(model.eval(), batch)
    assert out.shape == (512,)
    assert torch.isfinite(out).all()


def test_build_model_input_fields_errors(tiny_synthetic):
    schema = tiny_synthetic.schema
    with pytest.raises(IncompatibleDataError, match="model 'deepfm' cannot train on the selected input fields"):
        build_model("deepfm", schema, {"input_fields": ["user_id"]}, smoke=True)
    with pytest.raises(ValueError, match=r"input_fields \['zip'\]"):
        build_model("deepfm", schema, {"input_fields": ["user_id", "zip"]}, smoke=True)
    with pytest.raises(IncompatibleDataError, match="model 'din' cannot train on the selected input fields"):
        build_model("din", schema, {"input_fields": ["user_id", "item_id", "cate_id"]}, smoke=True)


@pytest.mark.parametrize("keep", [KEEP_NO_SEQ, KEEP_WITH_SEQ])
def test_predictions_ignore_dropped_columns_and_follow_kept_ones(tiny_synthetic, keep):
    schema = tiny_synthetic.schema
    torch.manual_seed(0)
    model = visible(build_model("deepfm", schema, {"input_fields": keep}, smoke=True))
    batch = next(iterate_batches(tiny_synthetic.split("valid"), 512))
    base = logits(model, batch)

    changed = perturbed(perturbed(batch, schema, "brand_id"), schema, "device", seed=2)
    if "price" not in keep:
        changed["numeric"] = batch["numeric"] + 3.0
    if "hist_item_id" not in keep:
        for name in ("hist_item_id", "hist_cate_id"):
            changed[f"seq/{name}"] = torch.randint_like(batch[f"seq/{name}"], 3, 20)
            changed[f"seqlen/{name}"] = torch.full_like(batch[f"seqlen/{name}"], 7)
    assert torch.equal(logits(model, changed), base)

    moved = logits(model, perturbed(batch, schema, "user_id"))
    assert (moved != base).float().mean() > 0.9

    # the same change to a dropped column does move a model that sees every field
    torch.manual_seed(0)
    full = visible(build_model("deepfm", schema, {}, smoke=True))
    assert not torch.equal(logits(full, perturbed(batch, schema, "brand_id")), logits(full, batch))


def test_dropped_sequences_may_be_absent_from_the_batch(tiny_synthetic):
    schema = tiny_synthetic.schema
    torch.manual_seed(0)
    model = visible(build_model("deepfm", schema, {"input_fields": KEEP_NO_SEQ}, smoke=True))
    batch = next(iterate_batches(tiny_synthetic.split("valid"), 256))
    without = {k: v for k, v in batch.items() if not k.startswith(("seq/", "seqlen/"))}
    assert torch.equal(logits(model, without), logits(model, batch))


class _SlicedSplit:
    """A split narrowed by hand (the reference for what `prepare` must see)."""

    def __init__(self, split, cat_cols: list[int], num_cols: list[int], seqs: list[str]) -> None:
        self.rows = split.rows
        self._arrays = {
            "labels": np.asarray(split["labels"]),
            "categorical": np.asarray(split["categorical"])[:, cat_cols],
            "numeric": np.asarray(split["numeric"])[:, num_cols],
        }
        for name in seqs:
            for prefix in ("seq/", "seqlen/"):
                self._arrays[prefix + name] = np.asarray(split[prefix + name])

    def keys(self) -> list[str]:
        return list(self._arrays)

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]


def test_mgdin_prepare_sees_the_narrowed_split_and_trains(tiny_synthetic):
    schema = tiny_synthetic.schema
    train = tiny_synthetic.split("train")
    keep = ["item_id", "cate_id", "hour", "user_id", "price", "hist_item_id"]
    torch.manual_seed(0)
    model = build_model("mgdin", schema, {"input_fields": keep}, smoke=True)
    model.prepare(train)
    # fields: user_id, item_id, cate_id, hour, price, hist_item_id, hist_cate_id
    assert model.field_density.shape == (7,)
    assert model.field_names == ["user_id", "item_id", "cate_id", "hour", "price", "hist_item_id", "hist_cate_id"]

    # reference: the same model class built directly on the narrowed schema, prepared on hand-sliced arrays
    narrowed = FieldSubset.select(schema, keep).schema
    names = schema.categorical_names
    reference = build_model("mgdin", narrowed, make_config("mgdin", smoke=True))
    reference.prepare(
        _SlicedSplit(train, [names.index(n) for n in narrowed.categorical_names], [0],
                     ["hist_item_id", "hist_cate_id"])
    )
    assert torch.equal(model.field_density, reference.field_density)
    assert torch.equal(model.field_order, reference.field_order)

    # a few training steps on full batches: no shape errors, finite loss, weights move
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    for batch in iterate_batches(train, 256, shuffle=True, seed=0, drop_last=True):
        out = model(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(out["logit"], batch["label"])
        assert torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        break
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    assert logits(model, next(iterate_batches(tiny_synthetic.split("valid"), 128))).shape == (128,)


def test_saved_run_with_input_fields_reloads_with_identical_predictions(tiny_synthetic, tiny_cache, tmp_path):
    keep = ["user_id", "item_id", "cate_id", "hour", "price", "hist_item_id"]
    config = RunConfig(
        dataset="synthetic-tiny",
        model="deepfm",
        smoke=True,
        model_params={"input_fields": keep},
        train=TrainConfig(batch_size=512, epochs=1, max_steps_per_epoch=2, eval_batch_size=4000),
    )
    trained = train_run(config, tmp_path / "runs", tiny_cache, data=tiny_synthetic)
    run = Run(trained.run.folder)
    assert run.config.model_params == {"input_fields": keep}
    loaded = run.load_model()
    assert loaded.schema.categorical_names == ["user_id", "item_id", "cate_id", "hour"]
    split = tiny_synthetic.split("valid")
    expected = predict_probs(trained.model, split)
    np.testing.assert_array_equal(predict_probs(loaded, split), expected)
    # and the loaded model still ignores the dropped columns
    batch = next(iterate_batches(split, 500))
    assert torch.equal(
        logits(loaded, perturbed(batch, tiny_synthetic.schema, "brand_id")), logits(loaded, batch)
    )


# --------------------------------------------------------------------------- bagging


FIELDS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


def test_bag_fields_is_deterministic_per_seed_and_varies_across_seeds():
    bags = [bag_fields(FIELDS, 0.5, seed) for seed in range(12)]
    assert bags == [bag_fields(FIELDS, 0.5, seed) for seed in range(12)]
    assert len({tuple(b) for b in bags}) > 3


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.61, 0.9, 0.99])
def test_bag_fields_keeps_ceil_of_the_droppable_share_plus_protected(rate):
    protected = {"b", "h", "zz"}  # 'zz' is not among the fields: not added
    droppable = [f for f in FIELDS if f not in protected]
    for seed in range(5):
        bag = bag_fields(FIELDS, rate, seed, protected)
        kept_droppable = [f for f in bag if f not in protected]
        assert len(kept_droppable) == math.ceil(rate * len(droppable))
        assert {"b", "h"} <= set(bag)
        assert "zz" not in bag
        assert bag == [f for f in FIELDS if f in bag]  # original order
        assert len(set(bag)) == len(bag)


def test_bag_fields_edge_cases():
    assert bag_fields(FIELDS, 1.0, 3) == FIELDS
    assert bag_fields(FIELDS, 1.0, 3) is not FIELDS
    assert bag_fields(["a", "b"], 0.3, 0, {"a", "b"}) == ["a", "b"]  # nothing droppable
    assert len(bag_fields(FIELDS, 0.01, 0)) == 1  # at least one droppable field
    for rate in (0.0, -0.1, 1.01, 2):
        with pytest.raises(ValueError, match="must be in \\(0, 1\\]"):
            bag_fields(FIELDS, rate, 0)

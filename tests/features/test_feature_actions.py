"""Feature actions: validation naming the field, exact transforms on hand-checked inputs, schema
changes, and the same transform at training and scoring time (a saved run scores through
evaluate, predict and the in-memory `Scorer` exactly as it did in training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from agenticrs.agents.autotrain import MemberTrainer
from agenticrs.agents.candidate import Candidate
from agenticrs.agents.space import SearchSpace, check
from agenticrs.agents.splits import make_evolution_data
from agenticrs.features.actions import (
    Bucketize,
    Cross,
    DropField,
    FittedFeatures,
    SemanticId,
    SequenceAggregate,
    SequenceLength,
    TextEmbedding,
    featured,
    fit_features,
    parse_actions,
    validate_actions,
)
from agenticrs.features.hashing import fnv1a_64
from agenticrs.features.schema import MISSING_INDEX, NUM_RESERVED, OOV_INDEX, CategoricalInput, FeatureSchema, SequenceInput
from agenticrs.serve.models import ServedModel
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.ctr import predict_probs
from agenticrs.train.run import Run
from agenticrs.train.scoring import Scorer
from agenticrs.train.workflow import evaluate_run, load_data, predict_files, train_run

SCHEMA = FeatureSchema(
    categorical=(CategoricalInput("a", 10), CategoricalInput("b", 10), CategoricalInput("item", 20)),
    numeric=("price", "price__missing", "age"),
    sequences=(
        SequenceInput("hist", 4, table="item", target="item", vocab_size=20),
        SequenceInput("hist_kind", 4, table=None, target=None, vocab_size=5, parallel_to="hist"),
    ),
    labels=("click",),
    has_group=False,
    text=("title",),
    request_fields=("a", "hist"),
)


class Split:
    """A split in memory: the interface `fit_features` and the batcher read."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.rows = len(arrays["categorical"])

    def keys(self) -> list[str]:
        return list(self.arrays)

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]


class Data:
    def __init__(self, train: Split) -> None:
        self.schema, self.train = SCHEMA, train

    def split(self, name: str) -> Split:
        assert name == "train", "actions are fitted on the train split only"
        return self.train


def hand_split() -> Split:
    return Split({
        "categorical": np.array([[5, 7, 5], [7, 5, 5], [2, 2, 1]], np.int32),
        "numeric": np.array([[1.0, 0.0, 0.0], [7.0, 0.0, 1.0], [0.0, 1.0, 3.0]], np.float32),
        "seq/hist": np.array([[5, 9, 5, 0], [6, 7, 8, 9], [1, 1, 0, 0]], np.int32),
        "seqlen/hist": np.array([3, 4, 2], np.int32),
        "seq/hist_kind": np.array([[1, 2, 3, 0], [1, 2, 3, 4], [4, 4, 0, 0]], np.int32),
        "seqlen/hist_kind": np.array([3, 4, 2], np.int32),
        "labels": np.array([[1.0], [0.0], [1.0]], np.float32),
    })  # fmt: skip


def fitted(actions: list, split: Split | None = None) -> FittedFeatures:
    return fit_features(actions, Data(split or hand_split()))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("action", "names"),
    [
        (Cross(fields=("a", "nope")), "cross.fields: 'nope'"),
        (Cross(fields=("a", "price")), "cross.fields: 'price'"),
        (Bucketize(field="a"), "bucketize.field: 'a'"),
        (Bucketize(field="price__missing"), "bucketize.field: 'price__missing'"),
        (SequenceAggregate(sequence="item", stat="recency"), "sequence_aggregate.sequence 'item'"),
        (SequenceAggregate(sequence="hist", stat="recency", category="a"), "sequence_aggregate.category 'a'"),
        (SequenceAggregate(sequence="hist_kind", stat="recency"), "sequence_aggregate.sequence 'hist_kind'"),
        (DropField(field="nope"), "drop.field: 'nope'"),
        (DropField(field="item"), "drop.field: 'item'"),
        (SequenceLength(sequence="hist", max_len=9), "sequence_length.max_len 9"),
        (SequenceLength(sequence="hist_kind", max_len=2), "sequence_length.sequence 'hist_kind'"),
        (TextEmbedding(field="a"), "text_embedding.field: 'a'"),
        (SemanticId(field="price"), "semantic_id.field: 'price'"),
        (SemanticId(field="title", text="title"), "semantic_id.text: 'title'"),
        (SemanticId(field="item", text="nope"), "semantic_id.text: 'nope'"),
        (SemanticId(field="item", content=["nope"]), "semantic_id.content: 'nope'"),
        (SemanticId(field="item", content=["item"]), "semantic_id.content: 'item'"),
        (SemanticId(field="item", content=["a"], text="title"), "semantic_id.content"),
        (SemanticId(field="a", sequences=True), "semantic_id.sequences: no sequence shares the ids of 'a'"),
    ],
)
def test_each_action_names_its_field_when_it_does_not_apply(action, names):
    problems = validate_actions([action], SCHEMA)
    assert len(problems) == 1 and problems[0].startswith(names), problems
    with pytest.raises(ValueError, match="invalid feature actions"):
        fitted([action])


def test_typed_fields_are_checked_by_pydantic_and_actions_apply_in_order():
    with pytest.raises(ValidationError, match="bins"):
        parse_actions([{"kind": "bucketize", "field": "price", "bins": 1}])
    with pytest.raises(ValidationError, match="fields"):
        Cross(fields=("a", "a"))
    with pytest.raises(ValidationError, match="kind"):
        parse_actions([{"kind": "explode", "field": "a"}])
    # a cross of a dropped field is refused; a cross of a bucketised field is allowed
    assert validate_actions([DropField(field="a"), Cross(fields=("a", "b"))], SCHEMA) == [
        "cross.fields: 'a' is not a categorical field (categorical: ['b', 'item'])"
    ]
    assert validate_actions([Bucketize(field="age", bins=4), Cross(fields=("a", "age__q4"))], SCHEMA) == []


# ------------------------------------------------------------------------------ transforms


def test_cross_is_the_fnv_hash_of_the_id_pair_and_adds_a_field():
    f = fitted([Cross(fields=("a", "b"), buckets=97)])
    out = f.transform(hand_split())
    expected = NUM_RESERVED + fnv1a_64(pa.array(["5_7", "7_5", "2_2"])) % np.uint64(97)
    assert out["categorical"].shape == (3, 4)
    assert np.array_equal(out["categorical"][:, 3], expected.astype(np.int32))
    assert np.array_equal(out["categorical"][:, :3], hand_split()["categorical"])
    schema = f.schema(SCHEMA)
    assert schema.categorical[-1] == CategoricalInput("a__x__b", NUM_RESERVED + 97)


def test_quantile_edges_are_fitted_on_train_and_missing_rows_get_the_missing_id():
    train = hand_split()
    train.arrays["numeric"] = np.array([[v, 0.0, 0.0] for v in range(1, 9)], np.float32)
    train.arrays = {k: (v if k == "numeric" else np.resize(v, (8, *v.shape[1:]))) for k, v in train.arrays.items()}
    train.rows = 8
    f = fitted([Bucketize(field="price", bins=4)], train)
    assert f.state[0]["edges"] == [2.75, 4.5, 6.25]  # np.quantile of 1..8 at 1/4, 2/4, 3/4
    out = f.transform(hand_split())["categorical"][:, 3]
    assert out.tolist() == [NUM_RESERVED + 0, NUM_RESERVED + 3, MISSING_INDEX]  # 1 -> first, 7 -> last, missing
    assert f.schema().categorical[-1] == CategoricalInput("price__q4", NUM_RESERVED + 4)


def test_log_buckets_are_evenly_spaced_in_log1p_from_the_training_minimum():
    train = hand_split()
    train.arrays["numeric"] = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]], np.float32)
    train.arrays = {k: (v if k == "numeric" else np.resize(v, (4, *v.shape[1:]))) for k, v in train.arrays.items()}
    train.rows = 4
    f = fitted([Bucketize(field="price", method="log", bins=3)], train)
    assert f.state[0]["offset"] == 0.0
    assert np.allclose(f.state[0]["edges"], [1.0, 3.0])  # expm1 of log(8)/3 and 2 log(8)/3
    rows = Split({**hand_split().arrays, "numeric": np.array([[0, 0, 0], [2, 0, 0], [7, 0, 0]], np.float32)})
    assert f.transform(rows)["categorical"][:, 3].tolist() == [3, 4, 5]
    assert f.schema().categorical_names[-1] == "price__log3"


def test_sequence_aggregates_count_matches_recency_and_decayed_counts():
    actions = [
        SequenceAggregate(sequence="hist", stat="count_per_category"),
        SequenceAggregate(sequence="hist", stat="recency"),
        SequenceAggregate(sequence="hist", stat="decayed_count", half_life=1.0),
    ]
    f = fitted(actions)
    out = f.transform(hand_split())["numeric"]
    # row 0: history [5, 9, 5] and item 5 -> matches 2 and 0 steps back; row 1: item 5 never seen;
    # row 2: item OOV (1) never matches, though the history holds OOV ids
    assert np.allclose(out[:, 3], np.log1p([2, 0, 0]))
    assert np.allclose(out[:, 4], [0.0, 1.0, 1.0])  # steps back / width; never: 1
    assert np.allclose(out[:, 5], np.log1p([0.5**2 + 0.5**0, 0.0, 0.0]))
    assert f.schema().numeric[3:] == ("hist__count_item", "hist__recency_item", "hist__decay1_item")


def test_sequence_length_keeps_the_last_elements_of_the_sequence_and_its_parallels():
    f = fitted([SequenceLength(sequence="hist", max_len=2)])
    out = f.transform(hand_split())
    assert out["seq/hist"].tolist() == [[9, 5], [8, 9], [1, 1]]
    assert out["seqlen/hist"].tolist() == [2, 2, 2]
    assert out["seq/hist_kind"].tolist() == [[2, 3], [3, 4], [4, 4]]
    assert [s.max_len for s in f.schema().sequences] == [2, 2]


def test_drop_removes_columns_flags_and_sequences_and_clears_targets():
    f = fitted([DropField(field="price"), DropField(field="hist")])
    out = f.transform(hand_split())
    assert out["numeric"].tolist() == [[0.0], [1.0], [3.0]]
    assert "seq/hist" not in out and "seq/hist_kind" not in out and "seqlen/hist" not in out
    schema = f.schema()
    assert schema.numeric == ("age",) and schema.sequences == () and schema.request_fields == ("a",)
    g = fitted([DropField(field="a")]).schema()
    assert g.categorical_names == ["b", "item"] and g.request_fields == ("hist",)


def item_split() -> Split:
    """Items 3-5 are seen with a=3, b=3 and items 6-8 with a=9, b=9 (two co-occurrence groups)."""
    items = np.array([3, 4, 5, 6, 7, 8, 3, 6])
    group = np.where(items < 6, 3, 9)
    titles = ["red shoe", "red shoe", "red shoe", "tin can", "tin can", "tin can", "red shoe", "tin can"]
    return Split({
        "categorical": np.stack([group, group, items], axis=1).astype(np.int32),
        "numeric": np.zeros((8, 3), np.float32),
        "seq/hist": np.zeros((8, 4), np.int32), "seqlen/hist": np.zeros(8, np.int32),
        "seq/hist_kind": np.zeros((8, 4), np.int32), "seqlen/hist_kind": np.zeros(8, np.int32),
        "text/title": pa.array(titles),
    })  # fmt: skip


def test_semantic_ids_of_co_occurrence_group_values_that_share_their_context():
    f = fitted([SemanticId(field="item", levels=1, codebook=2)], item_split())
    assert f.state[0]["source"] == "co-occurrence"
    rows = Split({**hand_split().arrays, "categorical": np.array([[0, 0, i] for i in (3, 4, 5, 6, 7, 8, 9, 1)],
                                                                  np.int32)})  # fmt: skip
    codes = f.transform(rows)["categorical"][:, 3].tolist()
    assert codes[0] == codes[1] == codes[2] != codes[3] == codes[4] == codes[5]
    assert {codes[0], codes[3]} == {NUM_RESERVED, NUM_RESERVED + 1}
    assert codes[6:] == [OOV_INDEX, OOV_INDEX]  # a value never seen in train, and the OOV id itself
    assert [c.name for c in f.schema().categorical[3:]] == ["item__sid0"]
    assert f.schema().categorical[3].vocab_size == NUM_RESERVED + 2


def test_content_semantic_ids_come_from_the_rows_content_and_map_the_history():
    # content: a (category) and b (brand); items 3-5 share (3, 3), items 6-8 share (9, 9)
    f = fitted([SemanticId(field="item", levels=1, codebook=2, content=["a", "b"], sequences=True)], item_split())
    assert f.state[0]["source"] == "content"
    table = np.asarray(f.state[0]["codes"]).reshape(-1)
    assert table[3] == table[4] == table[5] != table[6] == table[7] == table[8]
    assert table[9] == OOV_INDEX  # never in train
    # a candidate's codes come from its own content: item 19 (unseen) and OOV with group 9's content
    rows = Split({**hand_split().arrays,
                  "categorical": np.array([[3, 3, 4], [9, 9, 19], [9, 9, 1], [3, 3, 2]], np.int32),
                  "seq/hist": np.array([[3, 6, 19, 0], [6, 6, 0, 0], [0, 0, 0, 0], [4, 1, 0, 0]], np.int32),
                  "seqlen/hist": np.array([3, 2, 0, 2], np.int32), "labels": np.zeros((4, 1), np.float32),
                  "seq/hist_kind": np.zeros((4, 4), np.int32), "seqlen/hist_kind": np.zeros(4, np.int32)})  # fmt: skip
    out = f.transform(rows)
    codes = out["categorical"][:, 3].tolist()
    assert codes == [table[3], table[6], table[6], table[3]]
    # the history through the table: padding stays padding, an item never trained on is OOV
    assert out["seq/hist__sid0"].tolist() == [[table[3], table[6], OOV_INDEX, 0], [table[6], table[6], 0, 0],
                                              [0, 0, 0, 0], [table[3], OOV_INDEX, 0, 0]]  # fmt: skip
    assert out["seqlen/hist__sid0"].tolist() == [3, 2, 0, 2] and "seq/hist__sid0" in out.keys()
    made = f.schema().sequence("hist__sid0")
    assert (made.table, made.target, made.parallel_to, made.vocab_size) == ("item__sid0", "item__sid0", None, 5)


def test_content_semantic_ids_are_gatesids_codes_and_later_levels_run_parallel():
    from agenticrs.models.base import build_model

    split = item_split()
    f = fitted([SemanticId(field="item", levels=2, codebook=2, content=["a", "b"], sequences=True)], split)
    model = build_model("gatesid", SCHEMA, {"content_fields": ["a", "b"], "sid_levels": 2, "sid_codebook_size": 2,
                                            "history_field": "hist"})  # fmt: skip
    model.prepare(split.arrays)
    table = np.asarray(f.state[0]["codes"]).reshape(-1, 2)
    seen = [3, 4, 5, 6, 7, 8]
    assert np.array_equal(table[seen] - NUM_RESERVED, model.item_codes[seen].numpy())
    level1 = f.schema().sequence("hist__sid1")
    assert (level1.table, level1.target, level1.parallel_to) == ("item__sid1", "item__sid1", "hist__sid0")


@pytest.mark.slow  # loads MiniLM (about 20 s on a busy CPU)
def test_text_embeddings_and_text_semantic_ids_use_minilm_fitted_on_train():
    from agenticrs.gr.embeddings import encode_texts

    f = fitted([TextEmbedding(field="title", dim=2), SemanticId(field="item", levels=1, codebook=2, text="title"),
                SemanticId(field="title", levels=1, codebook=2)], item_split())  # fmt: skip
    state = f.state[0]
    assert sorted(state["texts"]) == ["red shoe", "tin can"]
    rows = item_split()
    rows.arrays["text/title"] = pa.array(["tin can", "blue boat", None, " ", "red shoe", "x", "y", "z"])
    out = f.transform(rows)
    mean, components = np.asarray(state["mean"]), np.asarray(state["components"])
    fresh = (encode_texts(["blue boat"]).astype(np.float64) - mean) @ components.T
    assert np.allclose(out["numeric"][1, 3:], fresh[0], atol=1e-5)  # unseen in train: embedded now
    stored = np.asarray(state["vectors"], np.float32)[state["texts"].index("tin can")]
    assert np.array_equal(out["numeric"][0, 3:], stored)  # seen in train: exactly the stored vector
    assert not out["numeric"][2:4, 3:].any()  # null and blank text: zeros
    assert f.schema().numeric[3:] == ("title__emb0", "title__emb1")
    codes = out["categorical"][:, 3]
    assert codes[0] == codes[1] == codes[2] != codes[3]  # items 3-5 share a title, so a code
    # semantic IDs of the text field itself: train texts' stored codes, a fresh code, missing for blank
    title_codes = out["categorical"][:, 4]
    assert f.state[2]["source"] == "text field" and sorted(f.state[2]["texts"]) == ["red shoe", "tin can"]
    assert {int(title_codes[0]), int(title_codes[4])} == {NUM_RESERVED, NUM_RESERVED + 1}
    assert title_codes[1] in (NUM_RESERVED, NUM_RESERVED + 1)
    assert title_codes[2] == title_codes[3] == MISSING_INDEX
    assert [c.name for c in f.schema().categorical[3:]] == ["item__sid0", "title__sid0"]


def test_fitted_state_round_trips_through_features_json(tmp_path: Path):
    actions = [Cross(fields=("a", "item"), buckets=11), Bucketize(field="age", bins=2),
               SequenceAggregate(sequence="hist", stat="recency"), SequenceLength(sequence="hist", max_len=3)]
    f = fitted(actions)
    f.save(tmp_path)
    loaded = FittedFeatures.load(tmp_path)
    assert loaded is not None and loaded.to_dict() == f.to_dict()
    a, b = f.transform(hand_split()), loaded.transform(hand_split())
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a.keys())
    assert FittedFeatures.load(tmp_path / "elsewhere") is None


# ------------------------------------------------------------------------------ integration

SIM_ACTIONS = [
    {"kind": "cross", "fields": ["user_id", "cate_l2"], "buckets": 101},
    {"kind": "bucketize", "field": "price", "bins": 8},
    {"kind": "sequence_aggregate", "sequence": "hist_cate_l2", "stat": "decayed_count"},
    {"kind": "sequence_length", "sequence": "hist_item_id", "max_len": 6},
    {"kind": "drop", "field": "hist_type"},
    {"kind": "semantic_id", "field": "item_id", "levels": 2, "codebook": 8},
]


@pytest.fixture(scope="module")
def sim(tiny_cache):
    return load_data("sim-tiny", tiny_cache)


# the item known by the semantic IDs of its content only: no item id, history or content fields
SID_ONLY_ACTIONS = [{"kind": "semantic_id", "field": "item_id", "levels": 2, "codebook": 8,
                     "content": ["cate_l1", "cate_l2", "brand"], "sequences": True}]  # fmt: skip
SID_ONLY_INPUTS = ["user_id", "age", "gender", "city_tier", "scenario", "hour", "query_cate_l2", "position", "price",
                   "item_id__sid0", "item_id__sid1", "hist_item_id__sid0", "hist_item_id__sid1"]  # fmt: skip


def train_with(actions: list, sim, tiny_cache, folder, input_fields=None):
    config = RunConfig(
        dataset="sim-tiny", model="din", smoke=True, features=parse_actions(actions),
        model_params={"input_fields": input_fields} if input_fields else {},
        train=TrainConfig(batch_size=512, max_steps=6, eval_batch_size=4096, num_threads=1, metrics=["auc"]),
    )  # fmt: skip
    return train_run(config, folder, tiny_cache, data=sim)


def assert_scores_identically(trained, tiny_cache, tmp_path) -> Run:
    """Training-time scores = evaluate_run = predict_files = the in-memory Scorer = the server's model."""
    run = Run(trained.run.folder)
    assert (run.folder / "features.json").is_file() and run.features is not None
    assert run.schema == trained.data.schema  # the model was built on the transformed schema
    in_training = predict_probs(trained.model, trained.data.split("test"), 4096)
    _, evaluated = evaluate_run(run.folder, "test", cache_dir=tiny_cache)
    assert np.array_equal(evaluated, in_training)
    raw = pq.read_table(trained.data.spec.files["test"][0])
    unlabelled = tmp_path / "rows.parquet"
    pq.write_table(raw.drop_columns([c for c in raw.column_names if c in ("click", "purchase")]), unlabelled)
    assert np.array_equal(predict_files(run.folder, [str(unlabelled)], cache_dir=tiny_cache), in_training)
    # the in-memory scorer behind RunPolicy, and the server's model
    assert np.allclose(Scorer(run.folder).score(raw.slice(0, 300)), in_training[:300], atol=1e-6)
    served = ServedModel.load([run.folder]).score(raw.slice(0, 300))
    assert np.allclose(served, in_training[:300], atol=1e-6)
    return run


def test_a_run_with_actions_scores_identically_through_every_saved_run_path(sim, tiny_cache, tmp_path):
    run = assert_scores_identically(train_with(SIM_ACTIONS, sim, tiny_cache, tmp_path / "runs"), tiny_cache, tmp_path)
    assert "user_id__x__cate_l2" in run.schema.categorical_names
    assert "hist_type" not in [s.name for s in run.schema.sequences]
    assert run.schema.categorical_names[-2:] == ["item_id__sid0", "item_id__sid1"]
    assert run.config.features == parse_actions(SIM_ACTIONS)


def test_a_model_that_knows_items_by_content_semantic_ids_only_trains_and_scores_identically(sim, tiny_cache, tmp_path):
    trained = train_with(SID_ONLY_ACTIONS, sim, tiny_cache, tmp_path / "runs", input_fields=SID_ONLY_INPUTS)
    run = assert_scores_identically(trained, tiny_cache, tmp_path)
    history = run.schema.sequence("hist_item_id__sid0")
    assert history.target == "item_id__sid0" and run.schema.sequence("hist_item_id__sid1").parallel_to == history.name
    # DIN attends over the SID history (the item id and its history are not among its inputs)
    test = trained.data.split("test")
    probs = predict_probs(trained.model, test, 4096)
    emptied = {k: test[k] for k in test.keys()}
    for name in ("hist_item_id__sid0", "hist_item_id__sid1"):
        emptied[f"seq/{name}"] = np.zeros_like(np.asarray(test[f"seq/{name}"]))
        emptied[f"seqlen/{name}"] = np.zeros_like(np.asarray(test[f"seqlen/{name}"]))
    assert not np.array_equal(predict_probs(trained.model, Split(emptied), 4096), probs)
    other_items = np.asarray(test["categorical"]).copy()
    other_items[:, run.schema.categorical_index("item_id")] = OOV_INDEX
    assert np.array_equal(predict_probs(trained.model, Split({**emptied, "categorical": other_items}), 4096),
                          predict_probs(trained.model, Split(emptied), 4096))  # fmt: skip


def test_the_cache_is_untouched_and_fitting_reads_train_only(sim):
    f = fit_features(parse_actions(SIM_ACTIONS[:2]), sim)
    view = featured(sim, f)
    assert sim.schema.categorical_names[-1] == "brand" and view.schema.categorical_names[-2:] == [
        "user_id__x__cate_l2", "price__q8"]
    assert sim.split("train")["categorical"].shape[1] == len(sim.schema.categorical)
    train_prices = np.asarray(sim.split("train")["numeric"])[:, sim.schema.numeric.index("price")]
    assert f.state[1]["edges"] == sorted(set(np.quantile(train_prices.astype(np.float64), np.arange(1, 8) / 8)))


def test_candidate_features_hash_check_and_train_in_member_trainer(sim, tmp_path):
    # hashes of candidates without actions are those of before actions existed
    assert Candidate(model="dnn").config_hash() == "0b4710f7a9a4fbea"
    assert Candidate(model="lr", learning_rate=0.01, input_fields=["a", "b"]).config_hash() == "c86b0773b4bc762d"
    actions = parse_actions(SIM_ACTIONS[:3])
    candidate = Candidate(model="lr", learning_rate=0.01, epochs=1, features=actions)
    assert candidate.config_hash() != Candidate(model="lr", learning_rate=0.01, epochs=1).config_hash()
    assert "features=3" in candidate.describe()
    space = SearchSpace(models=["lr", "dnn"])
    report = check(candidate, space, sim.schema)
    assert report.ok, report.reason
    bad = check(candidate.model_copy(update={"features": parse_actions([{"kind": "drop", "field": "x"}])}),
                space, sim.schema)  # fmt: skip
    assert not bad.ok and bad.problems[0].startswith("drop.field: 'x'")
    evo = make_evolution_data(sim)
    trainer = MemberTrainer(evo, TrainConfig(max_steps=4, batch_size=1024, num_threads=1, metrics=["auc"]))
    result = trainer.train(candidate, seed=0, folder=tmp_path / "member")
    run = Run(result.run_dir)
    assert run.features is not None and run.config.features == actions
    assert set(result.predictions) >= {"valid", "gate"} and np.isfinite(result.predictions["valid"]).all()
    # the member's saved run scores the gate rows as the trainer did
    gate = run.features.transform(evo.gate)
    assert np.allclose(predict_probs(run.load_model(), gate, 4096), result.predictions["gate"], atol=1e-6)

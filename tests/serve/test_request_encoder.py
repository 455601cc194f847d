"""The serving fast path (`RequestEncoder`) gives the Arrow path's arrays bit for bit, and hands
every request it does not cover back to the Arrow path (which names the bad value)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agenticrs.data.readers import Chunk, iter_split
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.batching import model_input_keys
from agenticrs.features.encoder import FeatureEncoder
from agenticrs.serve.payload import FieldKinds, PayloadError, ScoreRequest, request_table
from agenticrs.serve.request_encoder import RequestEncoder

FIELDS = [
    {"name": "user", "kind": "categorical", "min_count": 2},
    {"name": "item", "kind": "categorical"},
    {"name": "cat", "kind": "categorical", "hash_buckets": 16},
    {"name": "price", "kind": "numeric", "transform": "standardize"},
    {"name": "clicks", "kind": "numeric", "transform": "log1p"},
    {"name": "q", "kind": "numeric", "transform": "quantile", "quantile_buckets": 5},
    {"name": "hist", "kind": "sequence", "share_vocab_with": "item", "max_len": 4},
    {"name": "dwell", "kind": "sequence", "element": "numeric", "max_len": 3},
    {"name": "label", "kind": "label"},
]
CONTEXT = ("user", "hist", "dwell")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> FeatureEncoder:
    rng = np.random.default_rng(0)
    lines = ["user,item,cat,price,clicks,q,hist,dwell,request,label"]
    for i in range(600):
        hist = "|".join(str(x) for x in rng.integers(0, 60, rng.integers(0, 7)))
        dwell = "|".join(f"{x:.1f}" for x in rng.uniform(0, 9, rng.integers(0, 5)))
        price = "" if i % 17 == 0 else f"{rng.normal(50, 20):.2f}"
        lines.append(f"u{rng.integers(0, 40)},{rng.integers(0, 60)},c{rng.integers(0, 30)},{price},"
                     f"{rng.integers(0, 500)},{rng.uniform(0, 1):.3f},{hist},{dwell},{i // 8},{i % 2}")  # fmt: skip
    path = tmp_path_factory.mktemp("request-encoder") / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = DatasetSpec.from_dict({"name": "toy", "files": {"train": [str(path)]}, "fields": FIELDS,
                                  "request_key": "request", "group_key": "user", "reader": {"list_delimiter": "|"}})  # fmt: skip
    return FeatureEncoder(spec).fit(iter_split(spec.files["train"], spec.reader, spec.source_columns))


def _model_inputs(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(arrays[k]) for k in model_input_keys(arrays)}


def arrow_path(encoder: FeatureEncoder, request: ScoreRequest, request_id: int) -> dict[str, np.ndarray]:
    """What `Scorer.encode` does with the request's table (without a trained model)."""
    table = request_table(request, FieldKinds.of(encoder), 10_000, request_id)
    chunk = encoder.parse_chunk(Chunk(file="<request>", first_row=1, table=table))
    return _model_inputs(encoder.transform(chunk, shared=frozenset(request.context)))


def random_request(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Seen and unseen values, ids as ints and as strings (also "042"), missing values, empty,
    missing and over-long histories, numbers of every size a float32 input takes."""

    def an_id(prefix: str, seen: int) -> Any:
        kind = rng.integers(0, 8)
        if kind == 0:
            return None
        if kind == 1:
            return f"{prefix}{rng.integers(seen, seen + 50)}"  # unseen
        if kind == 2 and prefix == "":
            return f"0{rng.integers(0, seen)}"  # "042" is not the token 42
        if kind == 3 and prefix == "":
            return str(int(rng.integers(0, seen)))  # "42" is the token 42
        return f"{prefix}{rng.integers(0, seen)}" if prefix else int(rng.integers(-3, seen + 5))

    def a_number() -> Any:
        kind = rng.integers(0, 6)
        return None if kind == 0 else int(rng.integers(-1000, 1000)) if kind == 1 else float(rng.normal(0, 10.0 ** rng.integers(0, 12)))

    def a_history() -> Any:
        kind = rng.integers(0, 5)
        if kind == 0:
            return None
        return [an_id("", 60) for _ in range(int(rng.integers(0, 9)))]

    context = {"user": an_id("u", 40), "hist": a_history(),
               "dwell": None if rng.random() < 0.2 else [a_number() for _ in range(int(rng.integers(0, 6)))]}  # fmt: skip
    candidates = [{"item": an_id("", 60), "cat": an_id("c", 30), "price": a_number(), "clicks": a_number(),
                   "q": a_number() if rng.random() < 0.9 else None} for _ in range(n)]  # fmt: skip
    if rng.random() < 0.3:  # a field of the candidates given once, in the context
        for candidate in candidates:
            candidate.pop("cat")
        context["cat"] = an_id("c", 30)
    return {"context": context, "candidates": candidates}


def assert_same(fast: dict[str, np.ndarray] | None, slow: dict[str, np.ndarray]) -> None:
    assert fast is not None
    assert sorted(fast) == sorted(slow)
    for key in slow:
        assert fast[key].dtype == slow[key].dtype and fast[key].shape == slow[key].shape, key
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def test_the_fast_path_gives_the_arrow_paths_arrays_bit_for_bit(encoder: FeatureEncoder) -> None:
    rng = np.random.default_rng(1)
    fast = RequestEncoder(encoder, _model_inputs)
    for i in range(150):
        request = ScoreRequest.model_validate(random_request(rng, int(rng.integers(1, 40))))
        assert_same(fast.encode(request, request_id=i), arrow_path(encoder, request, i))
    assert len(fast.memo["item"]) > 60  # items and history elements share one vocabulary's memo


def test_a_full_memo_starts_over_and_the_ids_stay_the_same(encoder: FeatureEncoder) -> None:
    rng = np.random.default_rng(2)
    small = RequestEncoder(encoder, _model_inputs, memo_limit=8)
    for i in range(40):
        request = ScoreRequest.model_validate(random_request(rng, 12))
        assert_same(small.encode(request, request_id=i), arrow_path(encoder, request, i))
        assert all(len(memo) <= 8 + 12 * 9 for memo in small.memo.values())


@pytest.mark.parametrize(("where", "field", "value"), [
    ("candidate", "item", True),  # a boolean
    ("candidate", "item", 3.0),  # a float as an id: the Arrow path's text rules
    ("candidate", "price", "cheap"),  # a string where a number belongs
    ("candidate", "price", float("nan")),
    ("candidate", "price", 2**60),  # beyond float64's exact integers (the Arrow path rounds it)
    ("candidate", "price", 10**400),  # beyond float64 (the Arrow path names it)
    ("candidate", "clicks", 1e300),  # log1p brings it within a float32: both paths take it
    ("candidate", "price", 1e300),  # standardised, beyond a float32 input (the Arrow path names it)
    ("context", "hist", "1|2"),  # a sequence as text
    ("context", "hist", [[1]]),
    ("context", "dwell", [1.0, float("inf")]),
    ("candidate", "colour", 3),  # unknown
    ("context", "request", 5),  # the request key given by the client
])  # fmt: skip
def test_requests_the_fast_path_does_not_cover_go_to_the_arrow_path(encoder: FeatureEncoder, where: str,
                                                                    field: str, value: Any) -> None:  # fmt: skip
    request = random_request(np.random.default_rng(3), 5)
    holder = request["context"] if where == "context" else request["candidates"][2]
    holder[field] = value
    parsed = ScoreRequest.model_construct(**copy.deepcopy(request))  # (pydantic would refuse some values first)
    fast = RequestEncoder(encoder, _model_inputs).encode(parsed, request_id=1)
    try:
        slow = arrow_path(encoder, parsed, 1)
    except (PayloadError, ValueError) as exc:  # the Arrow path names the field
        assert fast is None and field in str(exc)
        return
    if fast is not None:  # a value both paths take (1e300 after log1p fits a float32)
        assert_same(fast, slow)


def test_a_field_missing_from_one_candidate_goes_to_the_arrow_path(encoder: FeatureEncoder, tmp_path: Path) -> None:
    request = random_request(np.random.default_rng(4), 4)
    request["candidates"][1].pop("price")
    parsed = ScoreRequest.model_validate(request)
    assert RequestEncoder(encoder, _model_inputs).encode(parsed, request_id=1) is None
    with pytest.raises(PayloadError, match=r"candidates\[1\]\.price: missing field"):
        arrow_path(encoder, parsed, 1)

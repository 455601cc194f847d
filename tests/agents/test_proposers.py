"""Proposers: the built-in mutator (neighbourhoods, novelty, bounds, UCB1), Optuna TPE (determinism,
bounds, replay) and the LLM proposer against a fake OpenAI-compatible server (every failure a lesson)."""

from __future__ import annotations

import json
import math
import socket
import time

import numpy as np
import pytest
from fake_openai import FakeOpenAI, incumbent_of, user_message

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.proposers import (
    BuiltinProposer,
    HistoryEntry,
    LLMProposer,
    LLMSettings,
    OptunaProposer,
    ProposalContext,
    make_proposer,
)
from agenticrs.agents.proposers.builtin import (
    KINDS,
    MUTATIONS,
    applicable_kinds,
    field_units,
    snap_to_space,
)
from agenticrs.agents.proposers.llm import extract_json_object
from agenticrs.agents.space import SearchSpace, bounds_problems
from agenticrs.features.schema import CategoricalInput, FeatureSchema, SequenceInput
from agenticrs.features.subset import field_names, protected_fields

API_KEY = "test-key"


def make_schema() -> FeatureSchema:
    return FeatureSchema(
        categorical=(
            CategoricalInput("user_id", 50),
            CategoricalInput("age", 8),
            CategoricalInput("gender", 4),
            CategoricalInput("item_id", 80),
            CategoricalInput("cate_id", 12),
            CategoricalInput("brand", 20),
        ),
        numeric=("price", "price__missing"),
        sequences=(
            SequenceInput("hist_item_id", 10, table="item_id", target="item_id", vocab_size=80),
            SequenceInput(
                "hist_cate_id", 10, table="cate_id", target="cate_id", vocab_size=12, parallel_to="hist_item_id"
            ),
        ),
        labels=("click",),
        has_group=False,
    )


SCHEMA = make_schema()
SPACE = SearchSpace()


def ctx(
    incumbent: Candidate,
    history: tuple[HistoryEntry, ...] = (),
    lessons: tuple[str, ...] = (),
    round: int = 0,
    seed: int = 0,
    space: SearchSpace = SPACE,
    schema: FeatureSchema = SCHEMA,
) -> ProposalContext:
    return ProposalContext(
        incumbent=incumbent,
        incumbent_hash=incumbent.config_hash(),
        space=space,
        schema=schema,
        history=tuple(history),
        lessons=tuple(lessons),
        round=round,
        seed=seed,
    )


def entry(
    candidate: Candidate,
    mutation: str | None = None,
    status: str = "rejected",
    improvement: float | None = None,
    proposer: str = "builtin",
    reason: str = "",
) -> HistoryEntry:
    return HistoryEntry(
        candidate=candidate,
        config_hash=candidate.config_hash(),
        proposer=proposer,
        mutation=mutation,
        status=status,
        improvement=improvement,
        gain_accuracy=None if improvement is None else improvement / 2,
        gain_diversity=None if improvement is None else improvement / 2,
        reason=reason,
    )


def exhaust(proposer: BuiltinProposer, context: ProposalContext, limit: int = 300) -> tuple[list, list[str]]:
    """Propose, record as rejected, repeat until the proposer has nothing new: (proposals, final lessons)."""
    proposals = []
    history = list(context.history)
    for step in range(limit):
        current = ctx(
            context.incumbent, tuple(history), round=context.round + step, seed=context.seed, space=context.space
        )
        outcome = proposer.propose(current)
        if outcome.proposal is None:
            return proposals, outcome.lessons
        proposal = outcome.proposal
        assert proposal.candidate.config_hash() not in current.seen_hashes
        proposals.append(proposal)
        history.append(entry(proposal.candidate, proposal.mutation, "rejected", -1e-4))
    raise AssertionError(f"no exhaustion after {limit} proposals")


# ---------------------------------------------------------------------------------------------
# built-in proposer


def test_builtin_is_deterministic_and_varies_with_seed_and_round() -> None:
    incumbent = Candidate(model="dnn")
    proposer = BuiltinProposer()
    a = proposer.propose(ctx(incumbent, seed=3, round=1)).proposal
    b = proposer.propose(ctx(incumbent, seed=3, round=1)).proposal
    assert a is not None and b is not None
    assert (a.candidate, a.mutation, a.rationale) == (b.candidate, b.mutation, b.rationale)
    by_seed = {proposer.propose(ctx(incumbent, seed=s, round=1)).proposal.candidate.config_hash() for s in range(8)}
    by_round = {proposer.propose(ctx(incumbent, seed=3, round=r)).proposal.candidate.config_hash() for r in range(8)}
    assert len(by_seed) > 1 and len(by_round) > 1


def test_builtin_rationale_names_kind_and_change() -> None:
    proposal = BuiltinProposer().propose(ctx(Candidate(model="dnn"), seed=1)).proposal
    assert proposal is not None and proposal.mutation in KINDS
    assert proposal.rationale.startswith(f"{proposal.mutation}: ")
    assert "->" in proposal.rationale and "untried kind" in proposal.rationale


def test_builtin_skips_seen_neighbours() -> None:
    """With every neighbour of all kinds but one in the history, the proposal is of that kind."""
    incumbent = Candidate(model="dnn", dropout=0.2)
    history = []
    for kind in KINDS:
        if kind == "dropout":
            continue
        for candidate, _ in MUTATIONS[kind](incumbent, SPACE, SCHEMA):
            history.append(entry(candidate, kind, "rejected", -1e-3))
    for seed in range(4):
        context = ctx(incumbent, tuple(history), seed=seed, round=5)
        proposal = BuiltinProposer().propose(context).proposal
        assert proposal is not None
        assert proposal.mutation == "dropout"
        assert proposal.candidate.dropout in (0.1, 0.3)
        assert proposal.candidate.config_hash() not in context.seen_hashes


def test_builtin_exhausts_neighbourhood_with_valid_new_candidates_then_lesson() -> None:
    incumbent = Candidate(model="dnn", hidden_units=[256, 256], embedding_dim=16)
    proposals, lessons = exhaust(BuiltinProposer(), ctx(incumbent, seed=7))
    hashes = [p.candidate.config_hash() for p in proposals]
    assert len(hashes) == len(set(hashes)) > 20
    assert {p.mutation for p in proposals} == set(KINDS)
    for p in proposals:
        assert bounds_problems(p.candidate, SPACE, SCHEMA) == []
    assert lessons and "already tried" in lessons[0]


@pytest.mark.parametrize("model", ["lr", "fm", "dnn", "deepfm", "dcnv2", "autoint", "finalmlp", "din"])
def test_builtin_proposals_within_bounds_for_every_model(model: str) -> None:
    incumbent = snap_to_space(Candidate(model=model), SPACE)
    for seed in range(6):
        proposal = BuiltinProposer().propose(ctx(incumbent, seed=seed, round=seed)).proposal
        assert proposal is not None
        assert bounds_problems(proposal.candidate, SPACE, SCHEMA) == []
        assert proposal.mutation in applicable_kinds(model)


def test_builtin_snaps_an_out_of_space_incumbent() -> None:
    space = SearchSpace(widths=[64, 128, 256], embedding_dims=[8, 16])
    incumbent = Candidate(model="dnn", hidden_units=[400, 400, 400], embedding_dim=10)
    proposal = BuiltinProposer().propose(ctx(incumbent, space=space)).proposal
    assert proposal is not None
    assert bounds_problems(proposal.candidate, space, SCHEMA) == []
    assert "snapped" in proposal.rationale


def test_skipped_kinds_for_lr_and_fm() -> None:
    assert applicable_kinds("lr") == ["model_family", "learning_rate", "feature_subset", "feature_bagging"]
    assert applicable_kinds("fm") == [
        "model_family",
        "embedding_dim",
        "learning_rate",
        "feature_subset",
        "feature_bagging",
    ]
    assert applicable_kinds("dnn") == list(KINDS)
    assert "dropout" not in applicable_kinds("finalmlp")  # its MLPs have their own knobs
    mutations = {
        BuiltinProposer().propose(ctx(Candidate(model="lr"), seed=s, round=r)).proposal.mutation
        for s in range(5)
        for r in range(5)
    }
    assert mutations <= set(applicable_kinds("lr"))
    assert len(mutations) >= 3


def test_feature_subset_keeps_protected_fields_and_min_fields() -> None:
    protected = protected_fields(SCHEMA)
    assert protected == {"item_id", "cate_id"}
    space = SearchSpace(min_fields=6)
    incumbent = Candidate(model="dnn")
    proposals, _ = exhaust(BuiltinProposer(), ctx(incumbent, seed=2, space=space))
    subsets = [p.candidate for p in proposals if p.mutation == "feature_subset"]
    assert subsets
    dropped = set()
    for candidate in subsets:
        assert candidate.input_fields is not None
        assert protected <= set(candidate.input_fields)
        assert len(candidate.input_fields) >= space.min_fields
        dropped |= set(field_names(SCHEMA)) - set(candidate.input_fields)
    # every droppable unit was dropped once; the parallel sequence moved with its main sequence
    assert dropped == {"user_id", "age", "gender", "brand", "price", "hist_item_id", "hist_cate_id"}
    assert ("hist_item_id", "hist_cate_id") in field_units(SCHEMA)
    # without the sequences nothing else would stop dropping item_id: the protection still holds
    no_seq = Candidate(model="dnn", input_fields=[f for f in field_names(SCHEMA) if not f.startswith("hist_")])
    proposals, _ = exhaust(BuiltinProposer(), ctx(no_seq, seed=4, space=space))
    subsets = [p.candidate for p in proposals if p.mutation == "feature_subset"]
    assert any(c.input_fields is None for c in subsets)  # re-adding the sequences gives back every field
    assert any(c.input_fields and len(c.input_fields) < len(no_seq.input_fields) for c in subsets)  # a drop
    assert all(protected <= set(c.input_fields or field_names(SCHEMA)) for c in subsets)


def test_feature_subset_at_min_fields_only_re_adds() -> None:
    keep = ["user_id", "item_id", "cate_id"]
    space = SearchSpace(min_fields=3)
    incumbent = Candidate(model="dnn", input_fields=keep)
    changes = MUTATIONS["feature_subset"](incumbent, space, SCHEMA)
    assert changes and all("re-add" in what for _, what in changes)
    assert all(len(c.input_fields) > 3 for c, _ in changes)


def _tried_history(incumbent: Candidate, rewards: dict[str, float], per_kind: int = 2) -> tuple[HistoryEntry, ...]:
    """Entries for every applicable kind (distinct configs, far from the incumbent's neighbours)."""
    history = []
    for i, kind in enumerate(applicable_kinds(incumbent.model)):
        for j in range(per_kind):
            other = incumbent.model_copy(update={"batch_size": 32 + 64 * (per_kind * i + j)})
            history.append(entry(other, kind, "rejected", rewards.get(kind, -1.0)))
    return tuple(history)


@pytest.mark.parametrize("best", ["dropout", "width", "feature_bagging"])
@pytest.mark.parametrize("scale", [1e-5, 1.0])
def test_ucb_prefers_the_kind_with_higher_rewards(best: str, scale: float) -> None:
    incumbent = Candidate(model="dnn", dropout=0.2)
    history = _tried_history(incumbent, {k: (3.0 if k == best else -1.0) * scale for k in KINDS})
    for seed in range(3):
        proposal = BuiltinProposer().propose(ctx(incumbent, history, seed=seed, round=9)).proposal
        assert proposal is not None and proposal.mutation == best
        assert "UCB" in proposal.rationale


def test_ucb_tries_untried_kinds_first_and_penalises_invalid() -> None:
    incumbent = Candidate(model="dnn")
    rewards = {k: 1e-4 for k in KINDS}
    history = [e for e in _tried_history(incumbent, rewards) if e.mutation != "depth"]
    proposal = BuiltinProposer().propose(ctx(incumbent, tuple(history), round=3)).proposal
    assert proposal is not None and proposal.mutation == "depth" and "untried" in proposal.rationale
    # invalid entries score below neutral ones: with improvements all None, the kind with invalid entries loses
    history = [
        HistoryEntry(e.candidate, e.config_hash, "builtin", e.mutation, "invalid" if e.mutation != "width" else "trained")
        for e in _tried_history(incumbent, rewards)
    ]
    proposal = BuiltinProposer().propose(ctx(incumbent, tuple(history), round=3)).proposal
    assert proposal is not None and proposal.mutation == "width"


def test_model_family_carries_shared_knobs() -> None:
    incumbent = Candidate(model="dnn", embedding_dim=16, hidden_units=[128, 64], dropout=0.3, learning_rate=2e-3)
    moved = {c.model: c for c, _ in MUTATIONS["model_family"](incumbent, SPACE, SCHEMA)}
    assert set(moved) == set(SPACE.models) - {"dnn"}
    assert moved["deepfm"].embedding_dim == 16
    assert moved["deepfm"].hidden_units == [128, 64]
    assert moved["deepfm"].dropout == 0.3 and moved["deepfm"].learning_rate == 2e-3


def test_model_family_respects_input_fields() -> None:
    """DIN needs its behaviour sequence: a subset without it cannot switch to DIN."""
    fields = [f for f in field_names(SCHEMA) if not f.startswith("hist_")]
    incumbent = Candidate(model="dnn", input_fields=fields)
    proposals, _ = exhaust(BuiltinProposer(), ctx(incumbent, seed=1))
    assert "din" not in {p.candidate.model for p in proposals if p.mutation == "model_family"}


def test_exhausting_a_tiny_space_yields_none_with_lesson() -> None:
    space = SearchSpace(
        models=["lr"],
        learning_rate_min=1e-3,
        learning_rate_max=1e-3,
        feature_bagging_min=1.0,
        min_fields=len(field_names(SCHEMA)),
    )
    outcome = BuiltinProposer().propose(ctx(Candidate(model="lr"), space=space))
    assert outcome.proposal is None
    assert outcome.lessons and "already tried or is outside the search space" in outcome.lessons[0]
    # one step larger: the two learning-rate neighbours, then nothing
    space = space.model_copy(update={"learning_rate_min": 5e-4, "learning_rate_max": 2e-3})
    proposals, lessons = exhaust(BuiltinProposer(), ctx(Candidate(model="lr"), space=space))
    assert sorted(p.candidate.learning_rate for p in proposals) == [5e-4, 2e-3]
    assert lessons


# ---------------------------------------------------------------------------------------------
# Optuna TPE


def _lr_history(incumbent: Candidate, best_lr: float, n: int = 14) -> tuple[HistoryEntry, ...]:
    lrs = np.geomspace(1e-4, 1e-2, n)
    return tuple(
        entry(
            incumbent.model_copy(update={"learning_rate": float(lr), "dropout": 0.05 * (i % 8)}),
            "optuna",
            "rejected",
            -abs(math.log(lr / best_lr)) * 1e-4,
            proposer="optuna",
        )
        for i, lr in enumerate(lrs)
    )


def test_optuna_is_deterministic_and_within_bounds() -> None:
    space = SearchSpace(dropout_min=0.1, dropout_max=0.4, learning_rate_min=2e-4, learning_rate_max=5e-3)
    incumbent = Candidate(model="dnn", hidden_units=[256, 128], embedding_dim=16, dropout=0.2)
    proposer = OptunaProposer()
    seen = set()
    for seed in range(5):
        context = ctx(incumbent, seed=seed, round=2, space=space)
        a, b = proposer.propose(context).proposal, proposer.propose(context).proposal
        assert a is not None and b is not None
        assert a.candidate == b.candidate and a.rationale == b.rationale
        c = a.candidate
        assert a.mutation == "optuna" and "optuna TPE" in a.rationale
        assert bounds_problems(c, space, SCHEMA) == []
        assert 2e-4 <= c.learning_rate <= 5e-3 and 0.1 <= c.dropout <= 0.4
        assert 1e-7 <= c.embedding_l2 <= 1e-1 and space.feature_bagging_min <= c.feature_bagging <= 1.0
        # the family and its architecture are fixed
        assert (c.model, c.hidden_units, c.embedding_dim, c.input_fields) == ("dnn", [256, 128], 16, None)
        seen.add(c.config_hash())
    assert len(seen) == 5


def test_optuna_replays_history() -> None:
    incumbent = Candidate(model="dnn")
    proposer = OptunaProposer()
    low, high = _lr_history(incumbent, 1.5e-4), _lr_history(incumbent, 8e-3)
    assert [e.config_hash for e in low] == [e.config_hash for e in high]  # same configs, other results
    assert len(proposer.replayable(ctx(incumbent, low))) == len(low)
    lr_low, lr_high = [], []
    for seed in range(4):
        a = proposer.propose(ctx(incumbent, low, seed=seed)).proposal
        b = proposer.propose(ctx(incumbent, high, seed=seed)).proposal
        assert a is not None and b is not None and a.candidate != b.candidate
        assert "14 replayed" in a.rationale
        lr_low.append(math.log(a.candidate.learning_rate))
        lr_high.append(math.log(b.candidate.learning_rate))
    assert all(lo < hi for lo, hi in zip(lr_low, lr_high, strict=True))  # TPE follows the better region


def test_optuna_replays_only_the_same_family_and_skips_dropout_for_lr() -> None:
    incumbent = Candidate(model="lr")
    mixed = (*_lr_history(Candidate(model="dnn"), 1e-3, n=4), entry(Candidate(model="lr", learning_rate=5e-4), None, "rejected", 1e-4))
    proposer = OptunaProposer()
    context = ctx(incumbent, mixed)
    assert [e.candidate.model for e in proposer.replayable(context)] == ["lr"]
    assert "dropout" not in proposer.distributions(context)
    proposal = proposer.propose(context).proposal
    assert proposal is not None and proposal.candidate.model == "lr"
    assert proposal.candidate.dropout == Candidate.model_fields["dropout"].default


# ---------------------------------------------------------------------------------------------
# LLM proposer against a fake OpenAI-compatible server


def llm(server: FakeOpenAI, **kwargs) -> LLMProposer:
    return LLMProposer(base_url=server.base_url, model="fake-model", api_key=API_KEY, timeout_s=5, **kwargs)


def answer(payload: dict | str) -> FakeOpenAI:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return FakeOpenAI(responder=lambda _request: text, api_key=API_KEY)


def llm_context() -> ProposalContext:
    incumbent = Candidate(model="dnn", dropout=0.2)
    tried = incumbent.model_copy(update={"embedding_dim": 32})
    history = (entry(tried, "embedding_dim", "rejected", -2e-4, reason="accuracy loss too large for the diversity gained"),)
    return ctx(incumbent, history, lessons=("bagging below 0.6 hurt accuracy",), round=4, seed=11)


def test_llm_valid_answer_and_request_contents() -> None:
    context = llm_context()
    with FakeOpenAI(api_key=API_KEY) as server:
        outcome = llm(server, temperature=0.3).propose(context)
    assert outcome.lessons == []
    proposal = outcome.proposal
    assert proposal is not None and proposal.mutation == "llm"
    assert proposal.rationale == "more regularisation"
    assert proposal.candidate == context.incumbent.model_copy(update={"dropout": 0.3})
    (request,) = server.requests
    assert request["model"] == "fake-model" and request["temperature"] == 0.3 and isinstance(request["seed"], int)
    assert server.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    system = next(m["content"] for m in request["messages"] if m["role"] == "system")
    assert json.dumps(Candidate.model_json_schema(), indent=1) in system
    assert '"always_kept"' in system and '"max_parameters"' in system
    user = user_message(request)
    assert incumbent_of(request) == json.loads(json.dumps(context.incumbent.canonical().model_dump(mode="json")))
    assert context.history[0].candidate.describe() in user
    assert "rejected" in user and "accuracy loss too large" in user
    assert "bagging below 0.6 hurt accuracy" in user


def test_llm_request_is_deterministic_and_keeps_recent_history() -> None:
    incumbent = Candidate(model="dnn")
    history = tuple(
        entry(incumbent.model_copy(update={"batch_size": 16 + i}), "width", "rejected", -1e-4, reason=f"reason-{i}")
        for i in range(40)
    )
    lessons = tuple(f"lesson-{i}" for i in range(25))
    context = ctx(incumbent, history, lessons)
    with FakeOpenAI(api_key=API_KEY) as server:
        proposer = llm(server)
        proposer.propose(context)
        proposer.propose(context)
    first, second = server.requests
    assert first == second
    user = user_message(first)
    assert "reason-39" in user and "reason-10" in user and "reason-9 " not in user and "reason-9\n" not in user
    assert "lesson-24" in user and "lesson-5" in user and "lesson-4\n" not in user


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "deepfm", "dropout": 0.1, "rationale": "bare"}',
        'Sure! I suggest {"model": "deepfm", "dropout": 0.1, "rationale": "bare"} because of diversity {x}.',
        '```\n{"model": "deepfm", "dropout": 0.1, "rationale": "bare"}\n```',
        '{"candidate": {"model": "deepfm", "dropout": 0.1}, "rationale": "bare"}',
    ],
)
def test_llm_accepts_answer_shapes(text: str) -> None:
    with answer(text) as server:
        outcome = llm(server).propose(llm_context())
    assert outcome.proposal is not None, outcome.lessons
    assert outcome.proposal.candidate.model == "deepfm" and outcome.proposal.candidate.dropout == 0.1
    assert outcome.proposal.rationale == "bare"


def test_llm_default_rationale() -> None:
    with answer({"model": "fm"}) as server:
        proposal = llm(server).propose(llm_context()).proposal
    assert proposal is not None and proposal.rationale == "llm proposal"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("I would increase the dropout a little.", "no JSON object"),
        ('```json\n{"model": "dnn", "dropout": \n```', "no JSON object"),
        ({"model": "dnn", "dropout": 0.45, "learning_rate": 0.05}, "learning_rate 0.05 outside [0.0001, 0.01]"),
        ({"model": "dnn", "dropout": 0.8}, "dropout 0.8 outside [0.0, 0.5]"),
        ({"model": "dnn", "hidden_units": [300, 300]}, "widths [300, 300] not in"),
        ({"model": "dnn", "input_fields": ["user_id", "nope"]}, "['nope'] are not fields"),
        ({"model": "dnn", "shiny": True}, "shiny: Extra inputs are not permitted"),
        ({"model": "dnn", "embedding_dim": "big"}, "embedding_dim: Input should be a valid integer"),
        ({"model": "dnn", "dropout": 1.5}, "dropout: Input should be less than or equal to 0.9"),
        ({"model": "gpt-net"}, "unknown model 'gpt-net'"),
        ({"model": "dnn", "model_params": {"depthwise": 3}}, "invalid config for model 'dnn'"),
        ({"dropout": 0.1}, "model: Field required"),
        ('["dnn", 0.2]', "no JSON object"),
    ],
)
def test_llm_discards_bad_answers_with_a_lesson(payload: dict | str, expected: str) -> None:
    with answer(payload) as server:
        outcome = llm(server).propose(llm_context())
    assert outcome.proposal is None
    assert len(outcome.lessons) == 1
    assert outcome.lessons[0].startswith("LLM answer discarded: ")
    assert expected in outcome.lessons[0]


def test_llm_discards_duplicates() -> None:
    context = llm_context()
    tried = context.history[0].candidate.model_dump(mode="json")
    with answer(tried) as server:
        outcome = llm(server).propose(context)
    assert outcome.proposal is None and "not new" in outcome.lessons[0] and "rejected" in outcome.lessons[0]
    with answer(context.incumbent.model_dump(mode="json")) as server:
        outcome = llm(server).propose(context)
    assert outcome.proposal is None and "incumbent" in outcome.lessons[0]
    # the same model spelt differently (a knob the model ignores) is still a duplicate
    fm_context = ctx(Candidate(model="fm"))
    with answer({"model": "fm", "dropout": 0.4, "hidden_units": [64]}) as server:
        outcome = llm(server).propose(fm_context)
    assert outcome.proposal is None and "not new" in outcome.lessons[0]


def test_llm_wrong_key_is_a_lesson() -> None:
    with FakeOpenAI(api_key=API_KEY) as server:
        proposer = LLMProposer(base_url=server.base_url, model="m", api_key="wrong", timeout_s=5)
        outcome = proposer.propose(llm_context())
    assert outcome.proposal is None and "HTTP 401" in outcome.lessons[0]
    assert "wrong" not in outcome.lessons[0]  # the key is never echoed
    assert server.requests == []


def test_llm_server_down_is_a_lesson_without_hanging() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proposer = LLMProposer(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key="k", timeout_s=2)
    start = time.perf_counter()
    outcome = proposer.propose(llm_context())
    assert time.perf_counter() - start < 5
    assert outcome.proposal is None and "failed" in outcome.lessons[0] and str(port) in outcome.lessons[0]


def test_llm_timeout_is_a_lesson() -> None:
    with FakeOpenAI(api_key=API_KEY, delay_s=1.0) as server:
        proposer = LLMProposer(base_url=server.base_url, model="m", api_key=API_KEY, timeout_s=0.2)
        start = time.perf_counter()
        outcome = proposer.propose(llm_context())
        assert time.perf_counter() - start < 1.0
    assert outcome.proposal is None and "timed out" in outcome.lessons[0]


def test_llm_bad_response_shape_is_a_lesson() -> None:
    with FakeOpenAI(api_key=API_KEY) as server:
        proposer = LLMProposer(base_url=server.base_url + "/nowhere", model="m", api_key=API_KEY, timeout_s=5)
        outcome = proposer.propose(llm_context())
    assert outcome.proposal is None and "HTTP 404" in outcome.lessons[0]


def test_extract_json_object_never_evaluates() -> None:
    assert extract_json_object("__import__('os').system('true')") is None
    assert extract_json_object('text {"a": {"b": 1}} more {"c": 2}') == {"a": {"b": 1}}
    assert extract_json_object('```json\n{"a": 1}\n```\n{"b": 2}') == {"a": 1}


def test_llm_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AGENTICRS_LLM_BASE_URL", "AGENTICRS_LLM_MODEL", "AGENTICRS_LLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="AGENTICRS_LLM_BASE_URL.*AGENTICRS_LLM_MODEL"):
        LLMProposer()
    with pytest.raises(ValueError, match="AGENTICRS_LLM_MODEL") as info:
        LLMProposer(base_url="http://x/v1")
    assert "AGENTICRS_LLM_BASE_URL" not in str(info.value)
    monkeypatch.setenv("AGENTICRS_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("AGENTICRS_LLM_MODEL", "local")
    monkeypatch.setenv("OPENAI_API_KEY", "fallback")
    settings = LLMProposer().settings
    assert (settings.base_url, settings.model) == ("http://127.0.0.1:1/v1", "local")
    assert settings.api_key.get_secret_value() == "fallback" and "fallback" not in repr(settings)
    monkeypatch.setenv("AGENTICRS_LLM_API_KEY", "primary")
    assert LLMSettings.resolve().api_key.get_secret_value() == "primary"
    assert LLMProposer(model="other").settings.model == "other"


# ---------------------------------------------------------------------------------------------
# make_proposer


def test_make_proposer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_proposer("builtin", exploration=2.0), BuiltinProposer)
    assert make_proposer("builtin").name == "builtin"
    assert isinstance(make_proposer("optuna"), OptunaProposer)
    proposer = make_proposer("llm", base_url="http://127.0.0.1:1/v1", model="m", api_key="k")
    assert isinstance(proposer, LLMProposer) and proposer.name == "llm"
    with pytest.raises(ValueError, match="builtin, optuna, llm"):
        make_proposer("gpt")
    with pytest.raises(ValueError, match="invalid settings for proposer 'builtin'"):
        make_proposer("builtin", temperature=0.1)
    with pytest.raises(ValueError, match="exploration"):
        make_proposer("builtin", exploration=-1)
    for var in ("AGENTICRS_LLM_BASE_URL", "AGENTICRS_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="AGENTICRS_LLM_BASE_URL"):
        make_proposer("llm")

"""Bad candidates never crash `evolve` (issue 14, defect 1).

`space.check` counts parameters on the meta device before anything is allocated, and turns every
problem (a config its model's typed Config refuses, a model that cannot be built, a budget) into
a failed report. In the loop such a candidate becomes an `invalid` row and a lesson and the next
round runs; a bad start is refused before an intent is opened; an exception that still ends the
loop marks the intent `failed` (never left `running`), and the intent resumes from there."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_openai import FakeOpenAI

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.coordinator import Coordinator
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import Intent
from agenticrs.agents.proposers import LLMProposer
from agenticrs.agents.proposers.base import Proposal, ProposalContext, ProposalOutcome
from agenticrs.agents.settings import EvolveSettings
from agenticrs.agents.space import SearchSpace, check, count_parameters
from agenticrs.features.schema import CategoricalInput, FeatureSchema, SequenceInput
from agenticrs.models.base import build_model, list_models, make_config, model_class

SCHEMA = FeatureSchema(
    categorical=(
        CategoricalInput("user_id", 50),
        CategoricalInput("age", 8),
        CategoricalInput("item_id", 80),
        CategoricalInput("cate_id", 12),
    ),
    numeric=("price", "price__missing"),
    sequences=(
        SequenceInput("hist_item_id", 10, table="item_id", target="item_id", vocab_size=80),
        SequenceInput("hist_cate_id", 10, table="cate_id", target="cate_id", vocab_size=12, parallel_to="hist_item_id"),
    ),
    labels=("click",),
    has_group=False,
)
SPACE = SearchSpace()
BILLION = Candidate(model="finalmlp", embedding_dim=8, model_params={"mlp2_hidden_units": [1e9]})  # the LLM answer of the issue
# within every config bound, but 16000 x 16000 x 2 weights: about 2 GB of float32 if it were allocated
HUGE = Candidate(model="finalmlp", embedding_dim=8, model_params={"mlp2_hidden_units": [16000, 16000, 16000]})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ the check


def test_a_billion_unit_layer_is_a_failed_check_not_an_exception() -> None:
    report = check(BILLION, SPACE, SCHEMA)
    assert not report.ok and report.parameters is None
    assert "mlp2_hidden_units.0" in report.reason and "less than or equal to" in report.reason
    # the candidate can still be recorded as invalid: described, hashed leniently, stored and read back
    with pytest.raises(ValueError, match="mlp2_hidden_units"):
        BILLION.config_hash()
    assert len(BILLION.config_hash(strict=False)) == 16 and BILLION.describe().startswith("finalmlp")
    again = Candidate.model_validate(BILLION.model_dump(mode="json"))
    assert again.config_hash(strict=False) == BILLION.config_hash(strict=False)
    valid = Candidate(model="dnn")
    assert valid.config_hash(strict=False) == valid.config_hash()


def test_an_over_budget_model_is_counted_without_allocating_it() -> None:
    before, started = peak_rss_mb(), time.perf_counter()
    report = check(HUGE, SPACE, SCHEMA)
    assert not report.ok and "exceed the budget of 20,000,000" in report.reason
    assert report.parameters is not None and report.parameters > 500_000_000
    assert peak_rss_mb() - before < 500, "the check allocated the model it was only meant to count"
    assert time.perf_counter() - started < 60


@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("smoke", [True, False])
def test_counting_on_the_meta_device_matches_the_built_model(model: str, smoke: bool) -> None:
    if model_class(model).inputs.problems(SCHEMA):
        pytest.skip(f"{model} does not take this schema")
    params = make_config(model, smoke=smoke).model_dump(exclude={"input_fields"})
    real = build_model(model, SCHEMA, params)
    parameters, buffers = count_parameters(model, SCHEMA, params)
    assert parameters == sum(p.numel() for p in real.parameters())
    assert buffers == sum(b.numel() for b in real.buffers())


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (Candidate(model="finalmlp", model_params={"no_such_knob": 1}), "no_such_knob"),
        (Candidate(model="finalmlp", model_params={"fs1_context": ["nowhere"]}), "nowhere"),
        (Candidate(model="finalmlp", model_params={"num_heads": 7}), "not divisible by num_heads 7"),
        (Candidate(model="dnn", hidden_units=[0]), "widths [0]"),
        (Candidate(model="dnn", input_fields=["user_id", "bogus"]), "bogus"),
    ],
)
def test_every_problem_is_a_failed_report(candidate: Candidate, expected: str) -> None:
    report = check(candidate, SPACE, SCHEMA)
    assert not report.ok and expected in report.reason, report.reason


def test_a_good_candidate_still_passes_with_its_count_and_latency() -> None:
    report = check(Candidate(model="dnn", hidden_units=[64, 32], embedding_dim=8), SPACE, SCHEMA)
    assert report.ok, report.reason
    real = build_model("dnn", SCHEMA, {"hidden_units": [64, 32], "embedding_dim": 8, "dropout": 0.2})
    assert report.parameters == sum(p.numel() for p in real.parameters())
    assert report.latency_ms_per_1000 is not None and report.latency_ms_per_1000 > 0
    assert torch.get_default_device().type == "cpu"  # the meta device does not leak out of the check


def llm_answer(candidate: Candidate) -> FakeOpenAI:
    text = "```json\n" + json.dumps({**candidate.model_dump(mode="json"), "rationale": "a wider stream"}) + "\n```"
    return FakeOpenAI(responder=lambda _request: text, api_key="k")


def test_the_llm_answer_of_the_issue_is_discarded_as_a_lesson() -> None:
    incumbent = Candidate(model="dnn")
    context = ProposalContext(incumbent, incumbent.config_hash(), SPACE, SCHEMA, (), (), 1, 0)
    with llm_answer(BILLION) as server:
        outcome = LLMProposer(base_url=server.base_url, model="fake", api_key="k", timeout_s=5).propose(context)
    assert outcome.proposal is None
    [lesson] = outcome.lessons
    assert lesson.startswith("LLM answer discarded") and "mlp2_hidden_units.0" in lesson, lesson


# ------------------------------------------------------------------------------------- the loop

FAST: dict[str, Any] = {
    "dataset": "sim-tiny",
    "agents": ["train"],  # a scripted AutoTrain proposer
    "outer_every": 0,
    "seed": 0,
    "bootstrap": 50,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 1},
    "train": {"patience": 1, "monitor": "logloss", "metrics": ["auc", "logloss"],
              "num_threads": 1},
    "space": {"models": ["lr", "dnn", "finalmlp"], "widths": [16, 32], "embedding_dims": [4, 8], "depth_max": 2},
}


class Scripted:
    """A proposer answering from a script: a candidate, or an exception to raise, per round."""

    name = "scripted"

    def __init__(self, script: list[Candidate | Exception]) -> None:
        self.script = script

    def propose(self, context: ProposalContext) -> ProposalOutcome:
        step = self.script[context.round - 1] if context.round <= len(self.script) else None
        if isinstance(step, Exception):
            raise step
        if step is None:
            return ProposalOutcome(None, ["script exhausted"])
        return ProposalOutcome(Proposal(step, "scripted", "from the script"))


def settings_for(tmp_path: Path, cache: Path, **changes: Any) -> EvolveSettings:
    raw = {**FAST, "artifacts": str(tmp_path / "artifacts"), "cache_dir": str(cache), **changes}
    return EvolveSettings.model_validate(raw)


@pytest.fixture(scope="module")
def evo(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Any:
    tmp = tmp_path_factory.mktemp("bad-candidates")
    store = KnowledgeStore(f"sqlite:///{tmp / 'k.db'}")
    return Coordinator(store, settings_for(tmp, tiny_cache)).evo


def intent_rows(store: KnowledgeStore) -> list[tuple[int, str, dict[str, Any]]]:
    with store.transaction() as tx:
        return [(i.id, i.status, dict(i.summary or {})) for i in tx.intents()]


def test_bad_proposals_become_lessons_and_the_loop_goes_on(tmp_path: Path, tiny_cache: Path, evo: Any) -> None:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    settings = settings_for(tmp_path, tiny_cache, candidates=4)
    proposer = Scripted([BILLION, HUGE, RuntimeError("the proposer broke")])
    summary = Coordinator(store, settings, proposer=proposer, evo=evo).run()
    with store.transaction() as tx:
        rows = {row.round: row for row in tx.candidates(summary.intent_id)}
        lessons = [(lesson.scope, lesson.text) for lesson in tx.lessons(summary.intent_id)]
    assert rows[1].status == "invalid" and rows[2].status == "invalid"
    assert rows[2].parameters is not None and rows[2].parameters > settings.space.max_parameters
    texts = " | ".join(text for _, text in lessons)
    assert "mlp2_hidden_units.0" in texts and "exceed the budget" in texts
    assert "proposer scripted failed in round 3: RuntimeError: the proposer broke" in texts
    assert summary.counts == {"invalid": 2}
    assert [row[:2] for row in intent_rows(store)] == [(summary.intent_id, "finished")]


def test_a_bad_start_is_refused_before_an_intent_is_opened(tmp_path: Path, tiny_cache: Path, evo: Any) -> None:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    settings = settings_for(tmp_path, tiny_cache).model_copy(update={"start": BILLION})
    with pytest.raises(ValueError, match=r"starting incumbent \(start\).*mlp2_hidden_units"):
        Coordinator(store, settings, evo=evo).run()
    assert intent_rows(store) == []


def test_an_exception_marks_the_intent_failed_and_resume_continues_it(
    tmp_path: Path, tiny_cache: Path, evo: Any
) -> None:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    settings = settings_for(tmp_path, tiny_cache, candidates=1)

    def observer(event: str, info: dict[str, Any]) -> None:
        if event == "round" and info["round"] == 1:
            raise OSError("the live view lost its terminal")

    coordinator = Coordinator(store, settings, observer=observer, proposer=Scripted([BILLION]), evo=evo)
    with pytest.raises(OSError, match="lost its terminal"):
        coordinator.run()
    [(intent_id, status, summary)] = intent_rows(store)
    assert status == "failed" and summary["error"] == "OSError: the live view lost its terminal"
    with store.transaction() as tx:
        assert tx.get(Intent, intent_id).finished_at is not None
        assert any(lesson.scope == "fault" for lesson in tx.lessons(intent_id))
    resumed = Coordinator(store, settings, proposer=Scripted([BILLION]), evo=evo).run(resume=intent_id)
    assert resumed.intent_id == intent_id and resumed.counts == {"invalid": 1}
    assert [row[:2] for row in intent_rows(store)] == [(intent_id, "finished")]


def test_the_llm_answer_of_the_issue_does_not_stop_evolve(tmp_path: Path, tiny_cache: Path, evo: Any) -> None:
    # issue 14, defect 1 end to end: the answer becomes a lesson, the built-in proposer stands in
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    with llm_answer(BILLION) as server:
        settings = settings_for(tmp_path, tiny_cache, candidates=1, proposer="llm",
                                llm={"base_url": server.base_url, "model": "fake", "api_key": "k"})
        summary = Coordinator(store, settings, evo=evo).run()
    with store.transaction() as tx:
        rows = tx.candidates(summary.intent_id)
        lessons = [lesson.text for lesson in tx.lessons(summary.intent_id)]
    assert any("LLM answer discarded" in text and "mlp2_hidden_units" in text for text in lessons), lessons
    assert rows[1].proposer == "builtin (fallback)"
    assert [row[:2] for row in intent_rows(store)] == [(summary.intent_id, "finished")]

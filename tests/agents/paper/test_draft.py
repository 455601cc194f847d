"""The LLM path against a fake OpenAI-compatible endpoint on 127.0.0.1: an abstract becomes a
validated card and a vetted module; an invalid card and a malicious module become lessons."""

from __future__ import annotations

import pytest
import yaml
from fake_openai import FakeOpenAI, user_message
from generated_modules import VALID, spawn_shell

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.paper.card import load_card
from agenticrs.agents.paper.draft import draft_method, scripted_answer
from agenticrs.agents.paper.sandbox import SandboxLimits
from agenticrs.agents.proposers.llm import LLMSettings

ABSTRACT = "TinyNet mean-pools field embeddings into a small MLP and beats logistic regression on CTR."
LIMITS = SandboxLimits(cpu_s=120, wall_s=180)


def card(**changes) -> dict:
    raw = {
        "name": "tinynet", "paper": "arXiv:0000.00000", "claim": {"statement": "beats LR", "baseline": "lr"},
        "model": {"name": "tinynet", "params": {"hidden": 8}}, "baselines": [{"name": "lr"}],
        "datasets": [{"dataset": "synthetic-tiny", "protocol": {"step_budget": 4}}], "seeds": [1, 2],
    }  # fmt: skip
    raw.update(changes)
    return raw


@pytest.fixture
def store(tmp_path):
    store = KnowledgeStore(str(tmp_path / "k.db"))
    yield store
    store.close()


def draft(answer: str, tmp_path, store, **kwargs):
    with FakeOpenAI(responder=lambda request: answer, api_key="k") as server:
        settings = LLMSettings(base_url=server.base_url, model="fake", api_key="k")
        result = draft_method(ABSTRACT, settings, tmp_path / "draft", store, cache_dir=tmp_path / "cache", limits=LIMITS,
                              **kwargs)  # fmt: skip
        return result, server.requests


def test_a_valid_answer_gives_a_card_and_a_module_that_passed_the_contract(tmp_path, store):
    result, requests = draft(scripted_answer(card(), VALID), tmp_path, store)
    assert result.status == "ready", result.reason
    assert ABSTRACT in user_message(requests[0])
    system = requests[0]["messages"][0]["content"]
    assert "deepfm" in system and "synthetic-tiny" in system and "MethodCard JSON schema" in system
    assert result.code_path.read_text() == VALID and result.sandbox.status == "passed"
    saved = yaml.safe_load(result.card_path.read_text())
    assert saved["model"]["code"] == "tinynet.py"  # relative: the draft folder can move
    assert load_card(result.card_path).model.code == str(result.code_path.resolve())
    with store.transaction() as tx:
        (artifact,) = tx.artifacts(kind="generated_code")
        assert artifact.sha256 == result.code_sha256 and artifact.details["status"] == "passed"
        assert tx.lessons() == []


def test_an_invalid_card_is_refused_with_the_field_named_and_becomes_a_lesson(tmp_path, store):
    answer = scripted_answer(card(model={"name": "deepfm"}, baselines=[{"name": "xgboost"}],
                                  claim={"statement": "x", "baseline": "xgboost"}))  # fmt: skip
    result, _ = draft(answer, tmp_path, store, with_code=False)
    assert result.status == "invalid" and result.card is None
    assert "baselines.0.name: unknown model 'xgboost'" in result.reason
    with store.transaction() as tx:
        (lesson,) = tx.lessons()
    assert lesson.scope == "draft" and "unknown model 'xgboost'" in lesson.text


def test_an_answer_without_a_card_is_a_lesson(tmp_path, store):
    result, _ = draft("I cannot help with that.", tmp_path, store)
    assert result.status == "invalid" and result.reason == "the answer holds no JSON method card"


def test_a_malicious_module_is_stopped_and_recorded_as_a_lesson(tmp_path, store):
    target = tmp_path / "shell-was-here"
    result, _ = draft(scripted_answer(card(), spawn_shell(target)), tmp_path, store)
    assert result.status == "blocked" and not target.exists()
    with store.transaction() as tx:
        (lesson,) = tx.lessons()
        (artifact,) = tx.artifacts(kind="generated_code")
    assert lesson.scope == "sandbox"
    assert "blocked by the sandbox" in lesson.text and "os.system" in lesson.text
    assert lesson.text.endswith(f"[module sha256 {result.code_sha256[:12]}]")
    assert artifact.details["status"] == "blocked"


def test_an_unreachable_endpoint_is_a_lesson_not_a_crash(tmp_path, store):
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", model="fake", timeout_s=2)
    result = draft_method(ABSTRACT, settings, tmp_path / "draft", store)
    assert result.status == "unreachable" and "no answer from http://127.0.0.1:9/v1" in result.reason

"""The coordinator with every agent: the leak excluded from the start, AutoFeature's planted cross,
AutoPerf's measurements and guardrails, composition of changes accepted against one incumbent, the
per-agent budget ledger, and a kill during the outer A/B test that resumes without redoing work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.coordinator import Coordinator
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import Intent
from agenticrs.agents.proposers.base import Proposal, ProposalContext, ProposalOutcome
from agenticrs.agents.report import write_report
from agenticrs.agents.settings import EvolveSettings

pytestmark = pytest.mark.slow

PLANTED = ("user_segment", "item_style")
SMALL: dict[str, Any] = {
    "dataset": "sim-tiny-planted",
    "seed": 0,
    "bootstrap": 50,
    "gate_level": 0.5,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 1},
    "train": {"patience": 1, "monitor": "logloss", "metrics": ["auc", "logloss"], "num_threads": 1,
              "batch_size": 1024},
    "outer": {"days": 1},
}


def settings(tmp: Path, cache: Path, **changes: Any) -> EvolveSettings:
    return EvolveSettings.model_validate({**SMALL, "artifacts": str(tmp / "artifacts"), "cache_dir": str(cache),
                                          **changes})


def is_planted_cross(action: dict[str, Any]) -> bool:
    return action.get("kind") == "cross" and set(action.get("fields", [])) == set(PLANTED)


class Scripted:
    """AutoTrain's proposer from a script (one candidate per call)."""

    name = "scripted"

    def __init__(self, *script: Candidate) -> None:
        self.script = list(script)

    def propose(self, context: ProposalContext) -> ProposalOutcome:
        if not self.script:
            return ProposalOutcome(None, ["script exhausted"])
        return ProposalOutcome(Proposal(self.script.pop(0), "scripted", "from the script"))


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> tuple[KnowledgeStore, Any, Path]:
    tmp = tmp_path_factory.mktemp("feature-run")
    store = KnowledgeStore(f"sqlite:///{tmp / 'k.db'}")
    summary = Coordinator(store, settings(tmp, tiny_cache, agents=["feature", "perf"], candidates=2)).run()
    return store, summary, tmp


def test_autofeature_drops_the_leak_and_finds_the_planted_cross(feature_run: tuple[KnowledgeStore, Any, Path]) -> None:
    store, summary, tmp = feature_run
    with store.transaction() as tx:
        rows = {r.round: r for r in tx.candidates(summary.intent_id)}
        profiles = tx.profiles()
        lineage = tx.lineage(summary.intent_id)
        decisions = {(d.candidate_id, d.gate): d for d in tx.decisions(intent_id=summary.intent_id)}
        actions = tx.agent_actions(summary.intent_id)
        perf = {p.candidate_id: p for p in tx.perf_profiles(intent_id=summary.intent_id)}
        outer = tx.outer_tests(intent_id=summary.intent_id)
    # the profile is stored and flags the post-outcome column; the start drops it
    assert [leak["field"] for leak in profiles[0].leaks] == ["dwell_bucket"]
    assert {"kind": "drop", "field": "dwell_bucket"} in rows[0].config["features"]
    # AutoFeature's first action is the planted cross (its interaction information ranks first)
    assert is_planted_cross(rows[1].config["features"][-1]) and rows[1].proposer == "feature"
    assert decisions[(rows[1].id, "ensnas")].accepted
    # promoted through the gate, the guardrails and an outer A/B test, all recorded
    assert lineage[-1].candidate_id == rows[1].id
    for gate in ("gate", "guardrails", "outer"):
        assert decisions[(rows[1].id, gate)].accepted, gate
    assert outer and outer[0].candidate_id == rows[1].id and outer[0].status == "passed"
    # the ledger: one row per round, the agent that acted, its cost and rewards; the outer lift credited
    assert [a.round for a in actions] == [1, 2] and actions[0].agent == "feature"
    assert actions[0].accepted and actions[0].inner_reward > 0 and actions[0].outer_reward is not None
    assert all(a.cost_s > 0 for a in actions)
    # every trained candidate was measured by AutoPerf; with no export budget nothing was exported
    assert {rows[0].id, rows[1].id} <= set(perf)
    assert all(p.export_bytes is None and p.latency_p99_ms > 0 for p in perf.values())
    assert summary.agents["feature"]["actions"] >= 1
    assert summary.final["champion"]["auc"] > summary.final["seed"]["auc"]
    page = write_report(store, summary.intent_id, tmp / "report.html").read_text()
    for text in ("Agents: proposals", "Feature lineage", "cross(", "Serving cost", "trainings"):
        assert text in page, text


def test_guardrails_block_a_promotion(tmp_path: Path, tiny_cache: Path) -> None:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    run = settings(tmp_path, tiny_cache, agents=["feature"], candidates=1, outer_every=0,
                   budgets={"max_parameters": 10, "max_export_mb": 100})
    summary = Coordinator(store, run).run()
    with store.transaction() as tx:
        row = next(r for r in tx.candidates(summary.intent_id) if r.round == 1)
        guard = next(d for d in tx.decisions(candidate_id=row.id) if d.gate == "guardrails")
        lineage = tx.lineage(summary.intent_id)
        perf = tx.perf_profiles(candidate_id=row.id)
    assert row.status == "held" and not guard.accepted
    assert "parameters" in guard.reason and "10" in guard.reason
    assert "export" not in guard.reason  # a budget on the export size makes the coordinator export: measured, within
    assert perf[0].export_bytes and perf[0].export_format == "onnx"
    assert len(lineage) == 1  # the seed stays the champion


def test_changes_of_two_agents_are_composed_and_the_budget_ledger_bounds_an_agent(tmp_path: Path,
                                                                                  tiny_cache: Path) -> None:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    # an FM learns the planted pair's interaction too: EnsNAS accepts it, and AutoFeature's cross;
    # both wait for the promotion at round 2
    fm = Candidate(model="fm", embedding_dim=8, learning_rate=0.01, epochs=1)
    run = settings(tmp_path, tiny_cache, agents=["train", "feature"], candidates=3, promote_every=2,
                   outer_every=0, measure_perf=False, agent_budget_s={"feature": 1e-3})
    coordinator = Coordinator(store, run, proposer=Scripted(fm, fm.model_copy(update={"embedding_dim": 4})))
    summary = coordinator.run()
    with store.transaction() as tx:
        rows = tx.candidates(summary.intent_id)
        actions = tx.agent_actions(summary.intent_id)
        decisions = tx.decisions(intent_id=summary.intent_id)
    by_round = {r.round: r for r in rows if r.proposer != "compose"}
    composed = [r for r in rows if r.proposer == "compose"]
    # the bandit: untried agents first in order; then AutoFeature's budget is spent, so AutoTrain acts
    assert [(a.round, a.agent) for a in actions] == [(1, "train"), (2, "feature"), (3, "train")]
    assert actions[1].cost_s > 1e-3  # the summary rounds seconds to 3 decimals
    assert summary.agents["feature"]["spent_s"] == pytest.approx(actions[1].cost_s, abs=1e-3)
    # the composition: AutoTrain's architecture with AutoFeature's new action, against the same champion
    assert len(composed) == 1
    merged = composed[0].config
    assert merged["model"] == "fm" and is_planted_cross(merged["features"][-1])
    assert composed[0].parent_id == by_round[1].parent_id == by_round[2].parent_id
    assert any(d.candidate_id == composed[0].id and d.gate == "ensnas" for d in decisions)
    # one promotion decision at most per champion: the others are superseded (or held by the gate)
    promoted = [r for r in rows if r.status == "promoted" and r.round > 0]
    assert len([r for r in promoted if r.parent_id == by_round[1].parent_id]) <= 1
    if promoted:
        losers = [r for r in (by_round[1], by_round[2], composed[0]) if r.id != promoted[0].id]
        assert all(r.status in ("superseded", "gate_failed") for r in losers)


def test_a_kill_during_the_outer_test_resumes_without_redoing_work(tmp_path: Path, tiny_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from agenticrs.sim.environment import Environment

    store_url = f"sqlite:///{tmp_path / 'k.db'}"
    run = settings(tmp_path, tiny_cache, agents=["feature"], candidates=1, outer={"days": 2})
    serve = Environment.serve
    calls: list[int] = []

    def dying_serve(self: Environment, policy: Any, day_offset: int = 0, *args: Any, **kwargs: Any) -> Any:
        calls.append(day_offset)
        if len(calls) == 3:  # day 1 of the first arm: day 0 of both arms is recorded
            raise KeyboardInterrupt("killed during the outer test")
        return serve(self, policy, day_offset, *args, **kwargs)

    monkeypatch.setattr(Environment, "serve", dying_serve)
    store = KnowledgeStore(store_url)
    with pytest.raises(KeyboardInterrupt):
        Coordinator(store, run).run()
    with store.transaction() as tx:
        intent = tx.latest_intent()
        trainings = len(tx.trainings(intent_id=intent.id))
        (test,) = tx.outer_tests(intent_id=intent.id)
        assert [d.day for d in tx.outer_days(test.id)] == [0] and test.status == "running"
    calls.clear()
    monkeypatch.setattr(Environment, "serve", lambda self, policy, day_offset=0, *a, **k: (
        calls.append(day_offset), serve(self, policy, day_offset, *a, **k))[1])
    summary = Coordinator(store, run).run(resume=intent.id)
    with store.transaction() as tx:
        assert tx.get(Intent, intent.id).status == "finished"
        assert len(tx.trainings(intent_id=intent.id)) == trainings  # nothing retrained
        (again,) = tx.outer_tests(intent_id=intent.id)  # the same test, resumed
        assert again.id == test.id and again.status in ("passed", "failed")
        assert [d.day for d in tx.outer_days(test.id)] == [0, 1]
    assert calls == [1, 1]  # only day 1, once per arm
    assert summary.intent_id == intent.id

"""The evolve loop end to end on the tiny simulator: records, resume after SIGKILL, two writers,
the LLM proposer against a fake endpoint, and the read-side commands."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from agenticrs.agents.coordinator import Coordinator
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import Intent
from agenticrs.agents.settings import EvolveSettings
from agenticrs.cli.main import app
from agenticrs.train.workflow import load_data

pytestmark = pytest.mark.slow

# a fast configuration: tiny data, small models, two epochs per learner, one thread
FAST: dict[str, Any] = {
    "dataset": "sim-tiny",
    "agents": ["train"],  # AutoTrain's offline loop; agents, perf and the outer test: test_agents_loop.py
    "outer_every": 0,
    "candidates": 3,
    "seed": 0,
    "bootstrap": 100,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 2, "embedding_dim": 8, "hidden_units": [32]},
    "train": {
        "patience": 1,
        "monitor": "logloss",
        "metrics": ["auc", "logloss"],
        "num_threads": 1,
    },
    "space": {"models": ["lr", "fm", "dnn"], "widths": [16, 32], "embedding_dims": [4, 8], "depth_max": 2},
}


def fast_settings(tmp_path: Path, cache: Path, **changes: Any) -> EvolveSettings:
    raw = {**FAST, "artifacts": str(tmp_path / "artifacts"), "cache_dir": str(cache), **changes}
    return EvolveSettings.model_validate(raw)


def write_config(tmp_path: Path, cache: Path, name: str = "evolve.yaml", **changes: Any) -> Path:
    path = tmp_path / name
    raw = {**FAST, "artifacts": str(tmp_path / "artifacts"), "cache_dir": str(cache), **changes}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> tuple[KnowledgeStore, Any, Coordinator]:
    tmp = tmp_path_factory.mktemp("evolve")
    store = KnowledgeStore(f"sqlite:///{tmp / 'k.db'}")
    events: list[str] = []
    # audit every promotion; a point-estimate gate, so that this short run promotes (and audits)
    settings = fast_settings(tmp, tiny_cache, audit_every=1, audit_size=3, gate_level=0.5)
    coordinator = Coordinator(store, settings, observer=lambda e, _i: events.append(e))
    summary = coordinator.run()
    coordinator.events = events  # type: ignore[attr-defined]
    return store, summary, coordinator


def test_evolve_records_every_step(evolved: tuple[KnowledgeStore, Any, Coordinator]) -> None:
    store, summary, coordinator = evolved
    with store.transaction() as tx:
        intent = tx.get(Intent, summary.intent_id)
        rows = tx.candidates(summary.intent_id)
        lineage = tx.lineage(summary.intent_id)
        decisions = tx.decisions(intent_id=summary.intent_id)
        comparisons = tx.comparisons(summary.intent_id)
        trainings = tx.trainings(intent_id=summary.intent_id)
        tasks = tx.tasks(summary.intent_id)
        audits = tx.audits(summary.intent_id)
    assert len(lineage) >= 2 and len(audits) == 4 * (len(lineage) - 1)  # 2 splits x 2 sides per promotion
    assert intent.status == "finished" and intent.summary["champion_id"] == summary.champion_id
    assert [r.round for r in rows] == [0, 1, 2, 3]
    assert lineage[0].candidate_id == rows[0].id and lineage[-1].candidate_id == summary.champion_id
    assert all(t.status == "done" for t in tasks)
    gates = {(d.candidate_id, d.gate): d for d in decisions}
    for row in rows[1:]:
        assert row.status in ("invalid", "rejected", "gate_failed", "promoted")
        assert row.parent_id is not None and row.rationale
        if row.status == "invalid":
            assert (row.id, "validation") in gates
            continue
        member = [t for t in trainings if t.candidate_id == row.id and t.role == "member"]
        assert sorted(t.seed for t in member) == [11, 12] and all(t.status == "done" for t in member)
        decision = gates[(row.id, "ensnas")]
        assert decision.accepted == (row.status in ("gate_failed", "promoted"))
        assert any(c.candidate_id == row.id and c.split == "valid" for c in comparisons)
        if decision.accepted:
            assert (row.id, "gate") in gates
    # the decision is re-checkable from the stored predictions
    for comp in [c for c in comparisons if c.split == "valid"]:
        cand = coordinator.predictions(comp.candidate_id)["valid"]
        inc = coordinator.predictions(comp.incumbent_id)["valid"]
        from agenticrs.agents import ensnas

        again = ensnas.compare(cand, inc, coordinator.labels["valid"], comp.ensemble_size, bootstrap=0)
        assert again.improvement == pytest.approx(comp.improvement, abs=1e-12)
    assert set(summary.final) == {"seed", "champion"} and 0.5 < summary.final["champion"]["auc"] <= 1.0
    assert "start" in coordinator.events and "finish" in coordinator.events  # type: ignore[attr-defined]


def test_a_finished_intent_resumes_to_the_same_state(evolved: tuple[KnowledgeStore, Any, Coordinator]) -> None:
    store, summary, coordinator = evolved
    with store.transaction() as tx:
        before = [(t.id, t.finished_at) for t in tx.trainings(intent_id=summary.intent_id)]
    again = Coordinator(store, coordinator.settings, evo=coordinator.evo).run(resume=summary.intent_id)
    with store.transaction() as tx:
        after = [(t.id, t.finished_at) for t in tx.trainings(intent_id=summary.intent_id)]
    assert again.champion_id == summary.champion_id and after == before  # nothing retrained


def test_read_side_commands(evolved: tuple[KnowledgeStore, Any, Coordinator], tmp_path: Path) -> None:
    store, summary, _ = evolved
    url = store.url
    runner = CliRunner()
    result = runner.invoke(app, ["history", "--db", url], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "seed" in result.output and "★" in result.output
    result = runner.invoke(app, ["show", str(summary.champion_id), "--db", url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "learners" in result.output and "rationale" in result.output
    result = runner.invoke(app, ["show", "9999", "--db", url])
    assert result.exit_code == 2 and "no candidates row with id 9999" in result.output
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "--db", url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and "<html" in out.read_text()[:2000].lower()


def test_audit_trains_real_ensembles_and_records_them(evolved: tuple[KnowledgeStore, Any, Coordinator]) -> None:
    from agenticrs.agents import ensnas

    store, summary, coordinator = evolved
    with store.transaction() as tx:
        rows = tx.candidates(summary.intent_id)
        before = len(tx.audits(summary.intent_id))
    trained = [r for r in rows if r.round > 0 and r.status != "invalid"]
    records = coordinator.run_audit(trained[-1].id, rows[0].id, m=3)
    with store.transaction() as tx:
        audits = tx.audits(summary.intent_id)
        roles = {t.role for t in tx.trainings(candidate_id=trained[-1].id)}
    assert len(audits) == before + 4 and roles == {"member", "audit"}
    valid = next(r for r in records if r["split"] == "valid")
    preds = coordinator.predictions(trained[-1].id, "member")["valid"]
    extra = coordinator.predictions(trained[-1].id, "audit", coordinator.settings.audit_seeds(3)[2:])["valid"]
    measured = ensnas.measured_ensemble_error(np.concatenate([preds, extra]), coordinator.labels["valid"])
    assert valid["candidate_measured"] == pytest.approx(measured, abs=1e-12)
    # the prediction from two learners is close to the measured 3-ensemble (same decomposition)
    assert abs(valid["candidate_predicted"] - valid["candidate_measured"]) < 0.1 * valid["candidate_measured"]


# -- processes: SIGKILL and resume, two writers ----------------------------------------------------
def _evolve(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200", "AGENTICRS_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "agenticrs.cli.main", "evolve", "-q", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _done_trainings(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("select count(*) from trainings where status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _outcome(url: str, intent_id: int | None = None) -> dict[str, Any]:
    store = KnowledgeStore(url)
    with store.transaction() as tx:
        intent = tx.get(Intent, intent_id) if intent_id else tx.latest_intent()
        rows = tx.candidates(intent.id)
        outcome = {
            "status": intent.status,
            "candidates": [(r.round, r.config_hash, r.status) for r in rows],
            "champion": tx.get(type(rows[0]), tx.champion(intent.id).candidate_id).config_hash,
            "trainings": [(t.candidate_id, t.role, t.seed, t.status, t.finished_at) for t in tx.trainings(intent_id=intent.id)],
            "decisions": sorted((d.candidate_id, d.gate) for d in tx.decisions(intent_id=intent.id)),
        }
    store.close()
    return outcome


def _kill_when(process: subprocess.Popen, db: Path, trainings: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _done_trainings(db) < trainings:
        if process.poll() is not None:
            pytest.fail(f"evolve ended before it could be killed:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("evolve made no progress")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_audit_command_shows_progress_over_its_learners(evolved: tuple[KnowledgeStore, Any, Coordinator]) -> None:
    # issue 23: `audit -M 3` printed nothing while it trained; now a bar counts its 2 x M learners
    store, summary, _ = evolved
    result = CliRunner().invoke(app, ["audit", "--db", store.url, "-M", "3"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "audit: 6 learners" in result.output and "6/6" in result.output
    assert "calibration audit" in result.output


def test_sigkill_and_resume_reach_the_uninterrupted_champion(tmp_path: Path, tiny_cache: Path) -> None:
    config = write_config(tmp_path, tiny_cache)
    reference_db = tmp_path / "reference.db"
    reference = _evolve(["--config", str(config), "--db", str(reference_db), "--set", f"artifacts={tmp_path / 'ref-art'}"], tmp_path)
    killed_db = tmp_path / "killed.db"
    args = ["--config", str(config), "--db", str(killed_db)]
    first = _evolve(args, tmp_path)
    _kill_when(first, killed_db, 3)  # mid-way through the first candidate's learners
    with sqlite3.connect(killed_db) as conn:
        finished_before = conn.execute("select id, finished_at from trainings where status='done'").fetchall()
    second = _evolve(["--db", str(killed_db), "--resume"], tmp_path)
    _kill_when(second, killed_db, 5)  # and again, later
    third = _evolve(["--db", str(killed_db), "--resume"], tmp_path)
    out, _ = third.communicate(timeout=600)
    assert third.returncode == 0, out
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out

    resumed, uninterrupted = _outcome(f"sqlite:///{killed_db}"), _outcome(f"sqlite:///{reference_db}")
    assert resumed["status"] == "finished"
    assert resumed["candidates"] == uninterrupted["candidates"]
    assert resumed["champion"] == uninterrupted["champion"]
    assert resumed["decisions"] == uninterrupted["decisions"]
    keys = [(t[0], t[1], t[2]) for t in resumed["trainings"]]
    assert len(keys) == len(set(keys)) == len(uninterrupted["trainings"])
    assert all(t[3] == "done" for t in resumed["trainings"])
    with sqlite3.connect(killed_db) as conn:
        after = dict(conn.execute("select id, finished_at from trainings").fetchall())
    assert all(after[i] == finished for i, finished in finished_before)  # finished trainings were not redone


def test_two_evolve_processes_share_one_database(tmp_path: Path, tiny_cache: Path, store_url: str) -> None:
    config = write_config(tmp_path, tiny_cache, candidates=2)
    load_data("sim-tiny", tiny_cache)  # generated once, before the race
    processes = [_evolve(["--config", str(config), "--db", store_url], tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    store = KnowledgeStore(store_url)
    with store.transaction() as tx:
        intents = tx.intents()
        snapshots = {i.snapshot_id for i in intents}
    store.close()
    assert len(intents) == 2 and len(snapshots) == 1
    first, second = (_outcome(store_url, i.id) for i in intents)
    # the same seed gives the same evolution, whichever process wrote first
    assert first["candidates"] == second["candidates"] and first["champion"] == second["champion"]
    for outcome in (first, second):
        assert outcome["status"] == "finished"
        keys = [(t[0], t[1], t[2]) for t in outcome["trainings"]]
        assert len(keys) == len(set(keys))


def test_llm_proposer_against_a_fake_endpoint(tmp_path: Path, tiny_cache: Path) -> None:
    from fake_openai import FakeOpenAI

    answers = iter(["this is not JSON", None])

    def responder(request: dict[str, Any]) -> str:
        answer = next(answers, None)
        if answer is not None:
            return answer
        content = request["messages"][-1]["content"]
        assert "incumbent" in content.lower()
        proposal = {"model": "fm", "embedding_dim": 8, "learning_rate": 0.01, "epochs": 2, "hidden_units": [32],
                    "rationale": "an FM captures pairwise crosses the LR misses"}
        return "```json\n" + json.dumps(proposal) + "\n```"

    with FakeOpenAI(responder=responder, api_key="secret") as server:
        settings = fast_settings(tmp_path, tiny_cache, candidates=2, proposer="llm",
                                 llm={"base_url": server.base_url, "model": "fake-model", "api_key": "secret"})
        store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
        summary = Coordinator(store, settings).run()
    with store.transaction() as tx:
        rows = tx.candidates(summary.intent_id)
        lessons = [lesson.text for lesson in tx.lessons(summary.intent_id)]
    assert rows[1].proposer == "builtin (fallback)"
    assert any("LLM answer discarded" in text or "no JSON" in text.lower() for text in lessons), lessons
    assert rows[2].proposer == "llm" and rows[2].config["model"] == "fm"
    assert rows[2].rationale.startswith("an FM captures")
    assert len(server.requests) == 2 and server.requests[0]["model"] == "fake-model"


def test_demo_evolves_with_the_live_view_and_writes_the_report(tmp_path: Path, tiny_cache: Path) -> None:
    runs = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "-d", "sim-tiny", "--budget", "1s", "--runs-dir", str(runs), "--cache-dir", str(tiny_cache)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert (runs / "evolve-report.html").exists() and "report:" in result.output
    assert "champion of intent 1" in result.output and "test split" in result.output
    store = KnowledgeStore(f"sqlite:///{runs / 'knowledge.db'}")
    with store.transaction() as tx:
        intent = tx.latest_intent()
    assert intent.status == "finished" and intent.settings["budget_s"] == 1.0
    assert intent.settings["train"]["time_budget_s"] == 30


def test_evolve_refuses_bad_settings_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--budget", "soon", "--db", str(tmp_path / "k.db")])
    assert result.exit_code == 2 and "not a duration" in result.output
    result = runner.invoke(app, ["evolve", "--resume", "--db", str(tmp_path / "k.db")])
    assert result.exit_code == 2 and "no knowledge database at" in result.output  # and none is created
    assert not (tmp_path / "k.db").exists()
    KnowledgeStore(str(tmp_path / "k.db")).close()
    result = runner.invoke(app, ["evolve", "--resume", "--db", str(tmp_path / "k.db")])
    assert result.exit_code == 2 and "no unfinished intent" in result.output


def test_nested_overrides_keep_the_section_defaults(tmp_path: Path) -> None:
    from agenticrs.agents.settings import build_evolve_settings as _settings
    from agenticrs.agents.settings import default_start, default_train

    config = tmp_path / "evolve.yaml"
    config.write_text(yaml.safe_dump({"dataset": "sim-tiny", "train": {"patience": 3}}))
    settings = _settings(config, ["train.time_budget_s=30", "start.model=fm"], candidates=None)
    assert settings.train.time_budget_s == 30 and settings.train.patience == 3
    assert settings.train.monitor == default_train().monitor == "auc"
    assert settings.train.batch_size == default_train().batch_size
    assert settings.start.model == "fm" and settings.start.learning_rate == default_start().learning_rate

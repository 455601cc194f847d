"""Canary rollouts against the simulator through the HTTP service: a planted bad candidate is
rolled back by evidence, a sound one is promoted (and becomes the champion), every step is in the
knowledge layer, and a killed rollout resumes to the uninterrupted result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agenticrs import api
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.serve.rollout import RolloutSettings, run_rollout

SETTINGS = {"share": 0.5, "days": 3, "rate_scale": 1.0, "concurrency": 8, "p99_ms": 5_000}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rollout")
    sim = api.simulate("tiny", seed=5, out=folder / "sim5")
    train = {"max_steps": 100, "learning_rate": 0.05, "batch_size": 512}
    champion = api.train(sim["ctr"], "lr", train=train, seed=1, runs_dir=folder / "runs", cache_dir=tiny_cache).run_dir
    sound = api.train(sim["ctr"], "lr", train=train, seed=2, runs_dir=folder / "runs", cache_dir=tiny_cache).run_dir
    bad = folder / "runs" / "inverted"  # a broken deploy: the champion with every weight's sign flipped
    shutil.copytree(champion, bad)
    weights = torch.load(bad / "weights.pt", weights_only=True)
    torch.save({k: -v if v.is_floating_point() else v for k, v in weights.items()}, bad / "weights.pt")
    return {"champion": champion, "sound": sound, "bad": bad}


def _store(runs: dict[str, Path], db: str) -> dict[str, int]:
    store = KnowledgeStore(db)
    ids = {}
    with store.transaction() as tx:
        snap = tx.snapshot("sim-tiny", "e" * 64, {"train": 1})
        intent = tx.create_intent(snapshot_id=snap.id, text="canary", objective="logloss", proposer="scripted", seed=1,
                                  ensemble_size=1)  # fmt: skip
        for name in ("champion", "sound", "bad"):
            row, _ = tx.add_candidate(intent.id, name * 8, round=len(ids), config={"run": name}, proposer="scripted")
            training = tx.start_training(row.id, "member", 1)
            tx.add_artifact("run", str(runs[name]), intent_id=intent.id, candidate_id=row.id, training_id=training.id)
            ids[name] = row.id
        tx.promote(intent.id, ids["champion"], 0, {})
        ids["intent"] = intent.id
    store.close()
    return ids


def test_a_planted_bad_candidate_is_rolled_back_by_evidence(runs: dict[str, Path], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    ids = _store(runs, db)
    result = run_rollout(db, ids["bad"], RolloutSettings(**SETTINGS), out=tmp_path / "out")
    assert result.status == "rolled_back" and "significantly worse" in result.reason
    assert result.steps[-1]["verdict"] == "rollback" and len(result.steps) < SETTINGS["days"]
    assert all(step["metrics"]["routing_consistent"] for step in result.steps)  # the service routed as the hash says
    store = KnowledgeStore(db, readonly=True)
    with store.transaction() as tx:
        assert tx.champion(ids["intent"]).candidate_id == ids["champion"]  # nothing promoted
        (decision,) = tx.decisions(candidate_id=ids["bad"])
        assert decision.gate == "guardrails" and not decision.accepted
        (rollout,) = tx.rollouts()
        assert rollout.status == "rolled_back" and rollout.finished_at is not None
        assert [d.status for d in tx.deployments()] == ["rolled_back"]
    store.close()


def test_a_sound_candidate_is_promoted_and_a_killed_rollout_resumes_to_the_same_result(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    settings = RolloutSettings(**{**SETTINGS, "days": 2, "max_drop": 0.5})
    whole_db = f"sqlite:///{tmp_path / 'whole.db'}"
    ids = _store(runs, whole_db)
    whole = run_rollout(whole_db, ids["sound"], settings, out=tmp_path / "whole")
    assert whole.status == "promoted", whole.reason
    store = KnowledgeStore(whole_db, readonly=True)
    with store.transaction() as tx:
        assert tx.champion(ids["intent"]).candidate_id == ids["sound"]
        assert tx.decisions(candidate_id=ids["sound"])[0].accepted
    store.close()

    killed_db = f"sqlite:///{tmp_path / 'killed.db'}"
    ids = _store(runs, killed_db)
    partial = run_rollout(killed_db, ids["sound"], settings, out=tmp_path / "killed", stop_after=1)
    assert partial.status == "running" and len(partial.steps) == 1
    with pytest.raises(ValueError, match="running with other settings"):
        run_rollout(killed_db, ids["sound"], RolloutSettings(**{**SETTINGS, "days": 3}), out=tmp_path / "killed")
    resumed = run_rollout(killed_db, ids["sound"], settings, out=tmp_path / "killed")
    assert resumed.rollout_id == partial.rollout_id and resumed.status == whole.status
    for a, b in zip(whole.steps, resumed.steps, strict=True):
        assert a["verdict"] == b["verdict"]
        for metric in ("clicks", "purchases", "gmv"):  # outcomes are the world's: equal; latency is the machine's
            assert a["metrics"][metric] == b["metrics"][metric]


def test_cli_rollout_refuses_a_champion_and_reports_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    from agenticrs.cli.main import app

    db = f"sqlite:///{tmp_path / 'k.db'}"
    ids = _store(runs, db)
    result = CliRunner().invoke(app, ["rollout", "--candidate", str(ids["champion"]), "--db", db])
    assert result.exit_code == 2 and "already the champion" in result.output
    result = CliRunner().invoke(app, ["rollout", "--candidate", str(ids["bad"]), "--db", db, "--share", "0.5",
                                      "--days", "3", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rolled_back" in result.output and "clicks" in result.output

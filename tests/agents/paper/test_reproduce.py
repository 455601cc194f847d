"""Reproducing a method card: the protocol through the one training path, paired verdicts, the
knowledge-layer record, lessons for failures, and resume without retraining finished seeds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.migrate import upgrade
from agenticrs.agents.paper import reproduce as reproduce_module
from agenticrs.agents.paper.card import parse_card
from agenticrs.agents.paper.reproduce import ArmResult, ReproduceOptions, reproduce, train_arm
from toy_cards import TOY_CARD as TOY  # tests/ helper


class Killed(BaseException):
    """Stands for SIGKILL in the middle of a training: nothing after it runs."""


@pytest.fixture
def store(tmp_path):
    store = KnowledgeStore(str(tmp_path / "k.db"))
    yield store
    store.close()


def test_a_reproduction_killed_midway_resumes_without_retraining_finished_seeds(tmp_path, store):
    card = parse_card(TOY)
    calls: list[tuple[str, int]] = []

    def dies_on_third(card, trial, arm, seed, runs_dir, cache_dir):
        calls.append((arm.name, seed))
        if len(calls) == 3:
            raise Killed()
        return train_arm(card, trial, arm, seed, runs_dir, cache_dir)

    with pytest.raises(Killed):
        reproduce(card, store, tmp_path / "runs", tmp_path / "cache", trainer=dies_on_third)
    assert calls == [("deepfm", 1), ("lr", 1), ("deepfm", 2)]
    with store.transaction() as tx:
        (repro,) = tx.reproductions()
        rows = {(r.arm, r.seed): (r.status, dict(r.metrics)) for r in tx.reproduction_runs(repro.id)}
    assert {k: v[0] for k, v in rows.items()} == {("deepfm", 1): "done", ("lr", 1): "done", ("deepfm", 2): "running"}

    calls.clear()

    def counting(card, trial, arm, seed, runs_dir, cache_dir):
        calls.append((arm.name, seed))
        return train_arm(card, trial, arm, seed, runs_dir, cache_dir)

    result = reproduce(card, store, tmp_path / "runs", tmp_path / "cache", trainer=counting)
    assert calls == [("deepfm", 2), ("lr", 2)]  # seed 1 was read back; the interrupted run is redone
    assert (result.trained, result.reused, result.failed) == (2, 2, 0)
    with store.transaction() as tx:
        (again,) = tx.reproductions()
        runs = tx.reproduction_runs(again.id)
        assert again.id == repro.id and again.status == "finished" and len(runs) == 4
        assert all(r.status == "done" and Path(r.run_path, "summary.json").exists() for r in runs)
        first = {(r.arm, r.seed): dict(r.metrics) for r in runs}
        assert first[("deepfm", 1)] == rows[("deepfm", 1)][1]  # untouched by the resume
        assert first[("lr", 1)]["stopped_by"] == "step budget" and first[("lr", 1)]["steps"] == 4
        assert again.verdicts == result.verdicts
        deepfm = next(r for r in runs if r.arm == "deepfm")
        assert deepfm.config["train"]["max_steps"] == 4 and deepfm.config["model_params"]["hidden_units"] == [16]
    (verdict,) = result.verdicts
    assert verdict["seeds"] == [1, 2] and verdict["n"] == 2 and verdict["verdict"] in ("holds", "not shown", "contradicted")
    assert verdict["method_mean"] == pytest.approx((first[("deepfm", 1)]["auc"] + first[("deepfm", 2)]["auc"]) / 2)

    calls.clear()  # a finished reproduction run again trains nothing and gives the same verdicts
    assert reproduce(card, store, tmp_path / "runs", tmp_path / "cache", trainer=counting).verdicts == result.verdicts
    assert calls == []


def planted(effects: dict[tuple[str, str], list[float]]):
    """A trainer that returns planted test AUCs per (data set, arm), by seed index."""

    def trainer(card, trial, arm, seed, runs_dir, cache_dir):
        return ArmResult(metrics={"auc": effects[(trial.dataset, arm.name)][card.seeds.index(seed)], "stopped_by": "planted"})

    return trainer


def test_verdicts_of_planted_effects_are_recorded_with_lessons_for_claims_that_fail(store, tmp_path):
    raw = {**TOY, "seeds": [1, 2, 3], "baselines": [{"name": "lr"}, {"name": "fm"}],
           "datasets": [{"dataset": "synthetic-tiny", "expected": "holds"}, {"dataset": "sim-tiny", "expected": "holds"}]}  # fmt: skip
    card = parse_card(raw)
    base = [0.80, 0.81, 0.79]
    effects = {
        ("synthetic-tiny", "deepfm"): [0.820, 0.831, 0.809], ("synthetic-tiny", "lr"): base,  # gain: holds
        ("synthetic-tiny", "fm"): [0.802, 0.808, 0.790],  # against FM: no gain (not the claim's baseline)
        ("sim-tiny", "deepfm"): [0.790, 0.798, 0.782], ("sim-tiny", "lr"): [0.80, 0.81, 0.79],  # loss
        ("sim-tiny", "fm"): base,
    }  # fmt: skip
    result = reproduce(card, store, tmp_path / "runs", trainer=planted(effects))
    table = {(v["dataset"], v["baseline"]): v for v in result.verdicts}
    assert table[("synthetic-tiny", "lr")]["verdict"] == "holds" and table[("synthetic-tiny", "lr")]["agrees"] is True
    assert table[("synthetic-tiny", "lr")]["low"] == pytest.approx(0.0175159, abs=1e-6)
    assert table[("synthetic-tiny", "fm")]["claim"] is False
    assert table[("sim-tiny", "lr")]["verdict"] == "contradicted" and table[("sim-tiny", "lr")]["agrees"] is False
    assert table[("sim-tiny", "lr")]["mean"] == pytest.approx(-0.01, abs=1e-12)
    with store.transaction() as tx:
        lessons = [lesson.text for lesson in tx.reproduction_lessons(result.reproduction_id)]
    assert lessons == [
        "card toy: the claim 'DeepFM beats LR' is contradicted on sim-tiny against lr (effect -0.0100, 3 seeds)"
    ]


def test_a_failing_training_and_an_absent_data_set_are_lessons_not_crashes(store, tmp_path, monkeypatch):
    card = parse_card({**TOY, "datasets": [{"dataset": "synthetic-tiny"}, {"dataset": "sim-tiny"}]})
    monkeypatch.setattr(reproduce_module, "_available",
                        lambda name, task="ctr": "data set 'sim-tiny' is absent here (needs /nowhere)" if name == "sim-tiny" else None)

    def broken_lr(card, trial, arm, seed, runs_dir, cache_dir):
        if arm.name == "lr" and seed == 2:
            raise RuntimeError("loss is NaN at step 3")
        return ArmResult(metrics={"auc": 0.7 + 0.01 * seed + (0.05 if arm.name == "deepfm" else 0.0)})

    result = reproduce(card, store, tmp_path / "runs", trainer=broken_lr)
    assert result.failed == 1
    table = {v["dataset"]: v for v in result.verdicts}
    assert table["sim-tiny"]["verdict"] == "skipped" and "absent" in table["sim-tiny"]["reason"]
    assert table["synthetic-tiny"]["seeds"] == [1] and table["synthetic-tiny"]["verdict"] == "not shown"
    with store.transaction() as tx:
        (repro,) = tx.reproductions()
        assert repro.status == "failed"
        texts = [lesson.text for lesson in tx.reproduction_lessons(repro.id)]
    assert texts == [
        "card toy: lr on synthetic-tiny (seed 2) failed: RuntimeError: loss is NaN at step 3",
        "card toy: data set 'sim-tiny' is absent here (needs /nowhere); its trial was skipped",
        "card toy: the claim 'DeepFM beats LR' is not shown on synthetic-tiny against lr (effect +0.0500, 1 seed)",
    ]


def test_options_change_the_plan_and_make_another_reproduction(store, tmp_path):
    card = parse_card(TOY)
    seen: list[tuple[str, int, int]] = []

    def record(card, trial, arm, seed, runs_dir, cache_dir):
        seen.append((trial.dataset, seed, trial.protocol.step_budget))
        return ArmResult(metrics={"auc": 0.7})

    options = ReproduceOptions(seeds=1, step_budget=2, datasets=["sim-tiny"])  # a data set the card lacks
    reproduce(card, store, tmp_path / "runs", options=options, trainer=record)
    assert seen == [("sim-tiny", 1, 2), ("sim-tiny", 1, 2)]
    reproduce(card, store, tmp_path / "runs", trainer=planted({("synthetic-tiny", "deepfm"): [0.7, 0.7],
                                                               ("synthetic-tiny", "lr"): [0.7, 0.7]}))  # fmt: skip
    with store.transaction() as tx:
        assert [r.options["datasets"] for r in tx.reproductions()] == [["sim-tiny"], None]


def test_cards_with_the_same_baseline_run_share_it_instead_of_retraining(store, tmp_path):
    calls: list[str] = []

    def trainer(card, trial, arm, seed, runs_dir, cache_dir):
        calls.append(f"{card.name}:{arm.name}:{seed}")
        return ArmResult(metrics={"auc": 0.7 + 0.01 * seed}, run_path=f"/runs/{card.name}-{arm.name}-{seed}")

    reproduce(parse_card(TOY), store, tmp_path / "runs", trainer=trainer)
    other = parse_card({**TOY, "name": "toy-fm", "model": {"name": "fm"}})
    result = reproduce(other, store, tmp_path / "runs", trainer=trainer)
    assert calls == ["toy:deepfm:1", "toy:lr:1", "toy:deepfm:2", "toy:lr:2", "toy-fm:fm:1", "toy-fm:fm:2"]
    assert (result.trained, result.reused) == (2, 2)
    with store.transaction() as tx:
        lr = [r for r in tx.reproduction_runs(result.reproduction_id) if r.arm == "lr"]
    assert [r.run_path for r in lr] == ["/runs/toy-lr-1", "/runs/toy-lr-2"]
    different = parse_card({**TOY, "name": "toy-l2", "model": {"name": "fm"},
                            "baselines": [{"name": "lr", "train": {"embedding_l2": 0.1}}]})  # fmt: skip
    reproduce(different, store, tmp_path / "runs", trainer=trainer)  # another LR setting: trained; FM is shared
    assert calls[6:] == ["toy-l2:lr:1", "toy-l2:lr:2"]


def test_a_database_at_revision_0002_migrates_and_keeps_its_lessons(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO lessons (scope, text, created_at) VALUES ('training', 'old', '2026-11-25 00:00:00')"))
    engine.dispose()
    store = KnowledgeStore(url)
    try:
        with store.transaction() as tx:
            (lesson,) = tx.lessons()
            assert lesson.text == "old" and lesson.reproduction_id is None
            assert tx.reproductions() == []
    finally:
        store.close()


def test_a_reproduction_killed_with_sigkill_resumes_without_retraining_finished_runs(tmp_path):
    """A real kill: the CLI in a child process, SIGKILLed once two runs are recorded as done."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from sqlalchemy import select

    from agenticrs.agents.knowledge.schema import ReproductionRun

    card = tmp_path / "toy.yaml"
    raw = {**copy.deepcopy(TOY), "seeds": [1, 2, 3]}  # a deep copy: TOY is shared by the other tests
    raw["datasets"][0]["protocol"]["step_budget"] = 40
    card.write_text(yaml.safe_dump(raw))
    db = tmp_path / "k.db"
    command = [sys.executable, "-m", "agenticrs.cli.main", "reproduce", str(card), "--db", str(db),
               "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def done_runs() -> set[tuple[str, int]]:
        if not db.exists():
            return set()
        try:
            store = KnowledgeStore(str(db), readonly=True)
        except Exception:  # noqa: BLE001 - the child may still be migrating the new database
            return set()
        try:
            with store.transaction() as tx:
                rows = tx.session.scalars(select(ReproductionRun).where(ReproductionRun.status == "done"))
                return {(r.arm, r.seed) for r in rows}
        finally:
            store.close()

    deadline = time.monotonic() + 240
    while len(done_runs()) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished_before = done_runs()
    assert 2 <= len(finished_before) < 6, finished_before
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    retrained = {(line.split()[1], int(line.split()[3].rstrip(":"))) for line in again.stderr.splitlines()
                 if line.strip().startswith("synthetic-tiny ") and ": auc " in line}  # fmt: skip
    assert retrained.isdisjoint(finished_before)
    assert retrained | finished_before == {(arm, seed) for arm in ("deepfm", "lr") for seed in (1, 2, 3)}
    assert "(resumed)" in again.stderr


def test_editing_the_claim_re_judges_the_same_runs_without_training(store, tmp_path):
    effects = {("synthetic-tiny", "deepfm"): [0.820, 0.831], ("synthetic-tiny", "lr"): [0.80, 0.81]}
    calls: list[str] = []

    def trainer(card, trial, arm, seed, runs_dir, cache_dir):
        calls.append(arm.name)
        return planted(effects)(card, trial, arm, seed, runs_dir, cache_dir)

    first = reproduce(parse_card(TOY), store, tmp_path / "runs", trainer=trainer)
    stricter = parse_card({**TOY, "claim": {"statement": "DeepFM beats LR by 0.05", "baseline": "lr", "margin": 0.05}})
    second = reproduce(stricter, store, tmp_path / "runs", trainer=trainer)
    assert len(calls) == 4 and second.reproduction_id == first.reproduction_id and second.trained == 0
    assert second.verdicts[0]["mean"] == first.verdicts[0]["mean"] == pytest.approx(0.0205, abs=1e-12)
    with store.transaction() as tx:
        (row,) = tx.reproductions()
        assert row.card["claim"]["margin"] == 0.05


def test_the_benchmark_record_carries_every_runs_figures_and_its_means_come_from_them(tmp_path):
    import json

    import yaml

    from bench_modules import load_bench

    card = tmp_path / "toy.yaml"
    card.write_text(yaml.safe_dump(TOY))
    out = tmp_path / "out.json"
    bench = load_bench("reproduce_benchmark")
    assert bench.main(["--cards", str(card), "--db", str(tmp_path / "k.db"), "--runs-dir", str(tmp_path / "runs"),
                       "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0  # fmt: skip
    (row,) = json.loads(out.read_text())["cards"]
    runs = {(r["arm"], r["seed"]): r for r in row["runs"]}
    assert set(runs) == {("deepfm", 1), ("deepfm", 2), ("lr", 1), ("lr", 2)}
    assert all(r["steps"] <= 4 and r["cost_s"] > 0 and 0.0 < r["auc"] < 1.0 for r in runs.values())
    assert row["method_mean"] == pytest.approx((runs[("deepfm", 1)]["auc"] + runs[("deepfm", 2)]["auc"]) / 2)
    assert row["baseline_mean"] == pytest.approx((runs[("lr", 1)]["auc"] + runs[("lr", 2)]["auc"]) / 2)

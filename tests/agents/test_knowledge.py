"""The knowledge layer on both backends (SQLite file, PostgreSQL): migrations, idempotent writes,
transactions, lifecycles, and two OS processes racing on the same database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.migrate import (
    MIGRATIONS,
    alembic_config,
    current_revision,
)
from agenticrs.agents.knowledge.pgserver import (
    PostgresUnavailable,
    TemporaryPostgres,
    find_bindir,
)
from agenticrs.agents.knowledge.schema import (
    Base,
    CandidateRow,
    Champion,
    DataSnapshot,
    Decision,
    Intent,
    Lesson,
    MemberStatsRow,
    Training,
)
from agenticrs.agents.knowledge.store import make_engine

STATS = {"n": 1000, "learners": 2, "error": 0.21, "bias": 0.2, "variance": 0.01, "covariance": 0.004, "correlation": 0.4}


@pytest.fixture
def store(store_url: str) -> Iterator[KnowledgeStore]:
    store = KnowledgeStore(store_url)
    try:
        yield store
    finally:
        store.close()


def head_revision() -> str:
    config = alembic_config(make_engine("sqlite://"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def new_intent(store: KnowledgeStore, fingerprint: str = "fp-base", **overrides: Any) -> int:
    with store.transaction() as tx:
        snapshot = tx.snapshot("synthetic", fingerprint, {"train": 100, "valid": 20})
        fields = {
            "snapshot_id": snapshot.id,
            "text": "maximise AUC",
            "objective": "auc",
            "proposer": "random",
            "seed": 1,
            "ensemble_size": 8,
            **overrides,
        }
        return tx.create_intent(**fields).id


def add_candidate(store: KnowledgeStore, intent_id: int, config_hash: str, round_: int = 0) -> int:
    with store.transaction() as tx:
        row, _ = tx.add_candidate(intent_id, config_hash, round=round_, config={"model": "lr"}, proposer="random")
        return row.id


def count(store: KnowledgeStore, model: type[Base], **filters: Any) -> int:
    with store.transaction() as tx:
        return tx.session.scalar(select(func.count()).select_from(model).filter_by(**filters)) or 0


# -- migrations -------------------------------------------------------------------------------------
def test_migrations_bring_an_empty_database_to_head_matching_the_orm(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        assert inspect(engine).get_table_names() == []
        assert current_revision(engine) is None
    finally:
        engine.dispose()

    store = KnowledgeStore(store_url)
    try:
        assert current_revision(store.engine) == head_revision()
        tables = set(inspect(store.engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"migrations and ORM differ: {differences}"
    finally:
        store.close()


def schema_signature(store: KnowledgeStore) -> dict[str, Any]:
    inspector = inspect(store.engine)
    return {
        table: (
            [(column["name"], str(column["type"]), column["nullable"]) for column in inspector.get_columns(table)],
            sorted(tuple(c["column_names"]) for c in inspector.get_unique_constraints(table)),
            sorted(tuple(fk["constrained_columns"]) for fk in inspector.get_foreign_keys(table)),
        )
        for table in sorted(inspector.get_table_names())
    }


def test_reopening_a_store_is_a_no_op(store_url: str) -> None:
    first = KnowledgeStore(store_url)
    try:
        intent_id = new_intent(first)
        signature = schema_signature(first)
        revision = current_revision(first.engine)
    finally:
        first.close()

    for _ in range(2):
        again = KnowledgeStore(store_url)
        try:
            assert current_revision(again.engine) == revision == head_revision()
            assert schema_signature(again) == signature
            with again.engine.connect() as connection:
                assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert count(again, Intent) == 1 and count(again, DataSnapshot) == 1
            with again.transaction() as tx:
                assert tx.get(Intent, intent_id).text == "maximise AUC"
        finally:
            again.close()


def test_bare_paths_and_postgres_urls_are_normalised(tmp_path: Path) -> None:
    from agenticrs.agents.knowledge.store import normalise_url

    assert normalise_url(str(tmp_path / "k.db")) == f"sqlite:///{tmp_path / 'k.db'}"
    assert normalise_url("postgresql://u@h:1/db") == "postgresql+psycopg://u@h:1/db"
    assert normalise_url("postgres://u@h:1/db") == "postgresql+psycopg://u@h:1/db"
    store = KnowledgeStore(str(tmp_path / "sub" / "k.db"))  # parent folder created on demand
    try:
        assert current_revision(store.engine) == head_revision()
    finally:
        store.close()


# -- idempotent writes ---------------------------------------------------------------------------
def test_snapshot_get_or_create_is_idempotent(store: KnowledgeStore) -> None:
    with store.transaction() as tx:
        first = tx.snapshot("synthetic", "fp-1", {"train": 10})
        again = tx.snapshot("other-name", "fp-1", {"train": 99})  # same fingerprint: the same row
        assert again.id == first.id
    with store.transaction() as tx:
        later = tx.snapshot("synthetic", "fp-1", {"train": 10})
        assert later.id == first.id
        assert (later.dataset, later.splits) == ("synthetic", {"train": 10})  # first writer wins
        assert tx.snapshot("synthetic", "fp-2", {}).id != first.id
    assert count(store, DataSnapshot) == 2


def test_candidate_hash_is_unique_per_intent_but_shared_across_intents(store: KnowledgeStore) -> None:
    one, two = new_intent(store), new_intent(store)
    with store.transaction() as tx:
        row, created = tx.add_candidate(one, "abc", round=0, config={"model": "lr"}, proposer="random")
        same, created_again = tx.add_candidate(one, "abc", round=3, config={"model": "fm"}, proposer="llm")
        assert created and not created_again
        assert same.id == row.id and same.round == 0 and same.config == {"model": "lr"}
    with store.transaction() as tx:
        later, created_later = tx.add_candidate(one, "abc", round=5, config={}, proposer="x")
        assert later.id == row.id and not created_later
        other, created_other = tx.add_candidate(two, "abc", round=0, config={"model": "lr"}, proposer="random")
        assert created_other and other.id != row.id
        assert [c.id for c in tx.candidates(one)] == [row.id]
        assert [c.id for c in tx.candidates(two)] == [other.id]
        assert {c.config_hash for c in tx.candidates()} == {"abc"}
    assert count(store, CandidateRow) == 2


def test_tasks_are_get_or_create_per_round_and_kind(store: KnowledgeStore) -> None:
    intent_id = new_intent(store)
    with store.transaction() as tx:
        task = tx.task(intent_id, 0, "proposer", "propose")
        assert tx.task(intent_id, 0, "someone-else", "propose").id == task.id
        assert tx.task(intent_id, 0, "trainer", "train").id != task.id
        assert tx.task(intent_id, 1, "proposer", "propose").id != task.id
        tx.close_task(task.id, "done")
    with store.transaction() as tx:
        tasks = tx.tasks(intent_id)
        assert [(t.round, t.kind, t.status) for t in tasks] == [
            (0, "propose", "done"), (0, "train", "open"), (1, "propose", "open")
        ]
        assert tasks[0].finished_at is not None


def test_a_transaction_that_raises_leaves_nothing_behind(store: KnowledgeStore) -> None:
    with pytest.raises(RuntimeError, match="agent crashed"), store.transaction() as tx:
        snapshot = tx.snapshot("synthetic", "fp-crash", {"train": 1})
        intent = tx.create_intent(
            snapshot_id=snapshot.id, text="t", objective="auc", proposer="random", seed=0, ensemble_size=2
        )
        candidate, _ = tx.add_candidate(intent.id, "h", round=0, config={}, proposer="random")
        tx.start_training(candidate.id, "member", 11)
        tx.cache_member_stats(snapshot.id, "h", "valid", "11,12", STATS)
        tx.promote(intent.id, candidate.id, 0, {"auc": 0.7})
        tx.add_lesson("training", "never persisted", intent_id=intent.id)
        raise RuntimeError("agent crashed")
    for model in (DataSnapshot, Intent, CandidateRow, Training, MemberStatsRow, Champion, Lesson):
        assert count(store, model) == 0, model.__tablename__
    # the store is still usable afterwards, and a unique violation also rolls everything back
    intent_id = new_intent(store)
    candidate_id = add_candidate(store, intent_id, "d")
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.add_lesson("proposal", "rolled back too", intent_id=intent_id)
        tx.session.add(Decision(candidate_id=candidate_id, gate="g", accepted=True, reason=""))
        tx.session.add(Decision(candidate_id=candidate_id, gate="g", accepted=False, reason=""))
        tx.session.flush()
    assert count(store, Lesson) == 0 and count(store, Decision) == 0


# -- lifecycles ------------------------------------------------------------------------------------
def test_training_lifecycle(store: KnowledgeStore) -> None:
    candidate_id = add_candidate(store, new_intent(store), "cfg")
    with store.transaction() as tx:
        training = tx.start_training(candidate_id, "member", 11)
        assert training.status == "running" and training.error is None
        tx.finish_training(training.id, {"valid": {"auc": 0.71}}, cost_s=1.5, epochs=3)
    with store.transaction() as tx:
        done = tx.training(candidate_id, "member", 11)
        assert done is not None and done.id == training.id
        assert (done.status, done.metrics, done.cost_s, done.epochs) == ("done", {"valid": {"auc": 0.71}}, 1.5, 3)
        assert done.finished_at is not None
        # a done training is not restarted
        restarted = tx.start_training(candidate_id, "member", 11)
        assert (restarted.id, restarted.status, restarted.metrics) == (training.id, "done", {"valid": {"auc": 0.71}})

    with store.transaction() as tx:
        second = tx.start_training(candidate_id, "member", 12)
        assert second.id != training.id
        tx.fail_training(second.id, "CUDA out of memory")
    with store.transaction() as tx:
        failed = tx.training(candidate_id, "member", 12)
        assert failed is not None and (failed.status, failed.error) == ("failed", "CUDA out of memory")
    with store.transaction() as tx:
        retried = tx.start_training(candidate_id, "member", 12)
        assert (retried.id, retried.status, retried.error) == (second.id, "running", None)
    with store.transaction() as tx:
        persisted = tx.training(candidate_id, "member", 12)
        assert persisted is not None and (persisted.status, persisted.error) == ("running", None)
        assert tx.training(candidate_id, "audit", 12) is None  # role is part of the key
        assert [t.seed for t in tx.trainings(candidate_id=candidate_id)] == [11, 12]
    assert count(store, Training) == 2


def test_promote_is_idempotent_per_candidate_and_sequences_from_zero(store: KnowledgeStore) -> None:
    intent_id, other_intent = new_intent(store), new_intent(store)
    ids = [add_candidate(store, intent_id, f"c{i}", round_=i) for i in range(3)]
    with store.transaction() as tx:
        assert tx.champion(intent_id) is None and tx.lineage(intent_id) == []
        seed = tx.promote(intent_id, ids[0], 0, {"auc": 0.70})
        assert seed.sequence == 0
        assert tx.promote(intent_id, ids[0], 0, {"auc": 0.99}).id == seed.id
    with store.transaction() as tx:
        assert tx.promote(intent_id, ids[1], 1, {"auc": 0.72}).sequence == 1
        assert tx.promote(intent_id, ids[0], 5, {}).sequence == 0  # promoting again changes nothing
    with store.transaction() as tx:
        assert tx.promote(intent_id, ids[2], 2, {"auc": 0.74}).sequence == 2
        assert tx.promote(intent_id, ids[1], 9, {}).sequence == 1
        lineage = tx.lineage(intent_id)
        assert [(c.sequence, c.candidate_id, c.round) for c in lineage] == [(0, ids[0], 0), (1, ids[1], 1), (2, ids[2], 2)]
        assert lineage[0].metrics == {"auc": 0.70}
        champion = tx.champion(intent_id)
        assert champion is not None and champion.candidate_id == ids[2]
        # sequences are per intent
        other_candidate, _ = tx.add_candidate(other_intent, "c0", round=0, config={}, proposer="random")
        assert tx.promote(other_intent, other_candidate.id, 0, {}).sequence == 0
        with pytest.raises(KeyError):
            tx.promote(10**6, ids[0], 0, {})
    assert count(store, Champion) == 4


def test_decisions_are_unique_per_candidate_and_gate(store: KnowledgeStore) -> None:
    intent_id = new_intent(store)
    first, second = add_candidate(store, intent_id, "a"), add_candidate(store, intent_id, "b")
    with store.transaction() as tx:
        decision = tx.record_decision(first, "validation", True, "valid config", {"checks": 3})
        again = tx.record_decision(first, "validation", False, "changed my mind")
        assert again.id == decision.id and again.accepted is True and again.reason == "valid config"
        ensnas = tx.record_decision(first, "ensnas", False, "no gain")
        assert ensnas.id != decision.id
        tx.record_decision(second, "validation", False, "bad")
    with store.transaction() as tx:
        assert [(d.gate, d.accepted, d.details) for d in tx.decisions(candidate_id=first)] == [
            ("validation", True, {"checks": 3}), ("ensnas", False, {})
        ]
        assert len(tx.decisions(intent_id=intent_id)) == 3
    with pytest.raises(IntegrityError), store.transaction() as tx:  # the database enforces it
        tx.session.add(Decision(candidate_id=first, gate="ensnas", accepted=True, reason="dup"))
        tx.session.flush()
    assert count(store, Decision) == 3


def test_member_stats_cache_round_trip(store: KnowledgeStore) -> None:
    new_intent(store)
    with store.transaction() as tx:
        snapshot_id = tx.snapshot("synthetic", "fp-base", {}).id
        assert tx.cached_member_stats(snapshot_id, "cfg", "valid", "11,12") is None
        row = tx.cache_member_stats(snapshot_id, "cfg", "valid", "11,12", {**STATS, "extra": "ignored"})
        assert row.id is not None
    with store.transaction() as tx:
        cached = tx.cached_member_stats(snapshot_id, "cfg", "valid", "11,12")
        assert cached is not None and cached.id == row.id
        assert {key: getattr(cached, key) for key in STATS} == pytest.approx(STATS)
        assert isinstance(cached.n, int) and isinstance(cached.error, float)
        # the first result stays: caching again returns it unchanged
        again = tx.cache_member_stats(snapshot_id, "cfg", "valid", "11,12", {**STATS, "error": 0.5})
        assert again.id == row.id and again.error == pytest.approx(0.21)
        # every part of the key matters
        assert tx.cached_member_stats(snapshot_id, "cfg", "valid", "11,13") is None
        assert tx.cached_member_stats(snapshot_id, "cfg", "test", "11,12") is None
        assert tx.cached_member_stats(snapshot_id, "cfg2", "valid", "11,12") is None
        other_snapshot = tx.snapshot("synthetic", "fp-other", {}).id
        assert tx.cached_member_stats(other_snapshot, "cfg", "valid", "11,12") is None
    assert count(store, MemberStatsRow) == 1


def test_lessons_are_returned_in_insertion_order(store: KnowledgeStore) -> None:
    one, two = new_intent(store), new_intent(store)
    for i in range(6):
        with store.transaction() as tx:
            tx.add_lesson("training", f"lesson {i}", intent_id=one if i % 2 == 0 else two)
    with store.transaction() as tx:
        tx.add_lesson("proposal", "global lesson")
    with store.transaction() as tx:
        assert [lesson.text for lesson in tx.lessons()] == [f"lesson {i}" for i in range(6)] + ["global lesson"]
        assert [lesson.text for lesson in tx.lessons(intent_id=one)] == ["lesson 0", "lesson 2", "lesson 4"]
        # a limit keeps the newest, still oldest first
        assert [lesson.text for lesson in tx.lessons(limit=3)] == ["lesson 4", "lesson 5", "global lesson"]
        assert [lesson.text for lesson in tx.lessons(intent_id=two, limit=2)] == ["lesson 3", "lesson 5"]


# -- two processes, one database -------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    url, worker, rounds, sync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])

    def wait_for(path):
        deadline = time.monotonic() + 120
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(path)
            time.sleep(0.005)

    from agenticrs.agents.knowledge import KnowledgeStore

    (sync / f"ready-{worker}").touch()
    wait_for(sync / "ready-0"); wait_for(sync / "ready-1")
    store = KnowledgeStore(url)  # both migrate the fresh database at the same moment
    (sync / f"migrated-{worker}").touch()
    wait_for(sync / "intent")
    intent_id = int((sync / "intent").read_text())
    stats = {"n": 10, "learners": 2, "error": 0.2, "bias": 0.1, "variance": 0.05, "covariance": 0.01,
             "correlation": 0.2 + worker}
    seen = {"snapshots": {}, "stats": {}, "candidates": {}, "promoted": {}, "decisions": {}}
    for i in range(rounds):  # separate transactions, so that each kind of write races on its own
        with store.transaction() as tx:
            shared = tx.snapshot("race", "fp-shared", {"worker": worker})
            per_round = tx.snapshot("race", f"fp-{i}", {"worker": worker})
            seen["snapshots"]["fp-shared"] = shared.id
            seen["snapshots"][f"fp-{i}"] = per_round.id
        with store.transaction() as tx:
            seen["stats"]["cfg"] = tx.cache_member_stats(shared.id, "cfg", "valid", "11,12", stats).id
            seen["stats"][f"cfg-{i}"] = tx.cache_member_stats(shared.id, f"cfg-{i}", "valid", "11,12", stats).id
        with store.transaction() as tx:
            own, _ = tx.add_candidate(intent_id, f"w{worker}-{i}", round=i, config={"i": i}, proposer=f"w{worker}")
            common, _ = tx.add_candidate(intent_id, f"h{i}", round=i, config={"i": i}, proposer=f"w{worker}")
            seen["candidates"][f"h{i}"] = common.id
            seen["candidates"][f"w{worker}-{i}"] = own.id
            # promote in the transaction that added candidates: the foreign-key checks of those
            # inserts key-share-lock the intent row that promote locks; with both processes holding
            # that share lock (own candidate first) a FOR UPDATE there would deadlock
            if i % 3 == 0:  # both race to promote the same candidate
                seen["promoted"][str(common.id)] = tx.promote(intent_id, common.id, i, {"w": worker}).sequence
            if i % 4 == worker:  # and each promotes some of its own
                seen["promoted"][str(own.id)] = tx.promote(intent_id, own.id, i, {"w": worker}).sequence
        with store.transaction() as tx:
            seen["decisions"][f"h{i}"] = tx.record_decision(common.id, "validation", bool(worker), f"w{worker}").id
    store.close()
    print(json.dumps(seen))
    """
)


def test_two_processes_racing_on_one_database(store_url: str, tmp_path: Path) -> None:
    rounds = 50
    sync = tmp_path / "sync"
    sync.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, store_url, str(worker), str(rounds), str(sync)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for worker in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((sync / f"migrated-{w}").exists() for w in (0, 1)):
            crashed = [w for w in workers if w.poll() is not None]
            assert not crashed, crashed[0].communicate()[1]
            assert time.monotonic() < deadline, "workers did not migrate in time"
            time.sleep(0.01)
        store = KnowledgeStore(store_url)
        try:
            intent_id = new_intent(store, fingerprint="fp-intent")
            (sync / "intent.tmp").write_text(str(intent_id))
            (sync / "intent.tmp").rename(sync / "intent")
            outputs = [w.communicate(timeout=240) for w in workers]
            for worker, (_stdout, stderr) in zip(workers, outputs, strict=True):
                assert worker.returncode == 0, stderr
                assert "Traceback" not in stderr, stderr
            seen = [json.loads(stdout) for stdout, _ in outputs]

            # every race resolved to one row, and both processes got that same row back
            for kind in ("snapshots", "stats", "decisions"):
                assert seen[0][kind] == seen[1][kind], kind
            shared_hashes = [f"h{i}" for i in range(rounds)]
            assert [seen[0]["candidates"][h] for h in shared_hashes] == [seen[1]["candidates"][h] for h in shared_hashes]

            with store.transaction() as tx:
                session = tx.session
                fingerprints = list(session.scalars(select(DataSnapshot.fingerprint)))
                assert fingerprints.count("fp-shared") == 1
                assert sorted(fingerprints) == sorted(["fp-shared", "fp-intent"] + [f"fp-{i}" for i in range(rounds)])
                keys = list(session.scalars(select(MemberStatsRow.config_hash)))
                assert keys.count("cfg") == 1 and len(keys) == len(set(keys)) == rounds + 1

                candidates = tx.candidates(intent_id)
                hashes = [c.config_hash for c in candidates]
                assert len(hashes) == len(set(hashes)) == 3 * rounds
                assert set(hashes) == set(shared_hashes) | {f"w{w}-{i}" for w in (0, 1) for i in range(rounds)}
                assert len(tx.decisions(intent_id=intent_id)) == rounds

                lineage = tx.lineage(intent_id)
                sequences = [c.sequence for c in lineage]
                assert sequences == list(range(len(lineage)))
                promoted = {int(cid) for s in seen for cid in s["promoted"]}
                assert sorted(c.candidate_id for c in lineage) == sorted(promoted)
                by_candidate = {c.candidate_id: c.sequence for c in lineage}
                for s in seen:  # each process was told the sequence the database kept
                    assert {int(cid): seq for cid, seq in s["promoted"].items()} == {
                        int(cid): by_candidate[int(cid)] for cid in s["promoted"]
                    }
        finally:
            store.close()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


# -- the PostgreSQL helper -------------------------------------------------------------------------
def test_temporary_postgres_listens_on_loopback(postgres_server: TemporaryPostgres) -> None:
    import psycopg

    assert re.fullmatch(r"postgresql://postgres@127\.0\.0\.1:\d+/postgres", postgres_server.url)
    assert postgres_server.root is not None and (postgres_server.root / f".s.PGSQL.{postgres_server.port}").exists()
    with psycopg.connect(postgres_server.url) as connection:
        assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert connection.execute("SHOW fsync").fetchone() == ("off",)
    assert postgres_server.database_url("x").endswith(f":{postgres_server.port}/x")


def test_missing_binaries_give_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agenticrs.agents.knowledge import pgserver

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgserver, "SEARCH_DIRS", str(tmp_path / "nowhere" / "*" / "bin"))
    with pytest.raises(PostgresUnavailable, match="initdb, postgres.*apt-get install"):
        find_bindir()
    with pytest.raises(PostgresUnavailable):
        TemporaryPostgres().start()
    assert MIGRATIONS.is_dir()


def test_the_latest_unfinished_intent_includes_failed_ones(store: KnowledgeStore) -> None:
    """`evolve --resume` picks up an intent that stopped on an exception (status `failed`)."""
    with store.transaction() as tx:
        snapshot = tx.snapshot("synthetic", "fp-resume", {"train": 1})
        fields = dict(snapshot_id=snapshot.id, text="t", objective="auc", proposer="random", seed=0, ensemble_size=2)
        running, failed, finished = (tx.create_intent(**fields) for _ in range(3))
        failed.status, finished.status = "failed", "finished"
        ids = running.id, failed.id, finished.id
    with store.transaction() as tx:
        assert tx.latest_intent().id == ids[2]
        assert tx.latest_intent(status="running").id == ids[0]
        assert tx.latest_intent(status=("running", "failed")).id == ids[1]


def test_a_database_at_revision_0001_migrates_to_serving_and_keeps_its_artifacts(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from agenticrs.agents.knowledge.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO artifacts (kind, path, sha256, created_at) "
                                "VALUES ('report', '/r.html', 'ab', '2026-11-25 00:00:00')"))  # fmt: skip
    engine.dispose()
    store = KnowledgeStore(url)  # opening a writable store migrates it to head
    with store.transaction() as tx:
        (artifact,) = tx.artifacts()
        assert artifact.path == "/r.html" and artifact.details == {} and artifact.size_bytes is None
        assert tx.deployments() == [] and tx.rollouts() == []
    store.close()

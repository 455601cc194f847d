"""KnowledgeStore: the agents' long-term memory in a real database (SQLite file or PostgreSQL).

Every agent action runs in one transaction (`with store.transaction() as tx: ...`), so a process
killed at any moment leaves either all of an action's rows or none. Writes that two processes
may race on (data snapshots, cached statistics, candidates, trainings, decisions) are
get-or-create under a unique constraint inside a savepoint: the loser reads the winner's row.
SQLite runs in WAL mode and takes its write lock at BEGIN (IMMEDIATE), so concurrent writers
queue instead of failing on a lock upgrade; PostgreSQL locks the intent row when it promotes
(`FOR NO KEY UPDATE`, see `lock_intent`), and migrations there hold an advisory lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agenticrs.agents.knowledge.schema import (
    Artifact,
    Audit,
    Base,
    CandidateRow,
    Champion,
    DataSnapshot,
    Decision,
    EnsNASComparison,
    Intent,
    Lesson,
    MemberStatsRow,
    Task,
    Training,
    utcnow,
)

T = TypeVar("T", bound=Base)

DEFAULT_DB = "sqlite:///runs/knowledge.db"


def normalise_url(url: str) -> str:
    """Accept a bare file path for SQLite and `postgresql://` for psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{Path(url)}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (savepoints work)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


class KnowledgeStore:
    """Opens (and migrates) the database; hands out transactions."""

    def __init__(self, url: str = DEFAULT_DB, migrate: bool = True) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        if migrate:
            from agenticrs.agents.knowledge.migrate import upgrade

            upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[KnowledgeTx]:
        with self._sessions() as session, session.begin():
            yield KnowledgeTx(session)

    def close(self) -> None:
        self.engine.dispose()


class KnowledgeTx:
    """The operations of one transaction. Reads return ORM rows detached-safe (no lazy loads)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- generic helpers ----------------------------------------------------------------------
    def _get_or_create(self, model: type[T], keys: dict[str, Any], values: dict[str, Any]) -> tuple[T, bool]:
        """Race-safe get-or-create on a unique key: (row, created)."""
        found = self.session.scalars(select(model).filter_by(**keys)).first()
        if found is not None:
            return found, False
        row = model(**keys, **values)
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            found = self.session.scalars(select(model).filter_by(**keys)).first()
            if found is None:
                raise
            return found, False
        return row, True

    def get(self, model: type[T], row_id: int) -> T:
        row = self.session.get(model, row_id)
        if row is None:
            raise KeyError(f"no {model.__tablename__} row with id {row_id}")
        return row

    # -- data and intents -----------------------------------------------------------------------
    def snapshot(self, dataset: str, fingerprint: str, splits: dict[str, int]) -> DataSnapshot:
        row, _ = self._get_or_create(DataSnapshot, {"fingerprint": fingerprint}, {"dataset": dataset, "splits": splits})
        return row

    def create_intent(self, **fields: Any) -> Intent:
        row = Intent(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def intents(self) -> list[Intent]:
        return list(self.session.scalars(select(Intent).order_by(Intent.id)))

    def latest_intent(self, status: str | None = None) -> Intent | None:
        query = select(Intent).order_by(Intent.id.desc())
        if status:
            query = query.where(Intent.status == status)
        return self.session.scalars(query).first()

    def lock_intent(self, intent_id: int) -> Intent:
        """Row lock on the intent (PostgreSQL `FOR NO KEY UPDATE`; SQLite holds the database lock).

        Not `FOR UPDATE`: every insert of a row referencing the intent (a candidate, a champion)
        takes `FOR KEY SHARE` on it for the foreign-key check, which `FOR UPDATE` waits for, so two
        writers that each added a candidate and then promote would deadlock. `FOR NO KEY UPDATE`
        still serialises promoters against each other.
        """
        query = select(Intent).where(Intent.id == intent_id).with_for_update(key_share=True)
        row = self.session.scalars(query).first()
        if row is None:
            raise KeyError(f"no intent with id {intent_id}")
        return row

    def finish_intent(self, intent_id: int, summary: dict[str, Any] | None = None) -> None:
        row = self.get(Intent, intent_id)
        row.status = "finished"
        row.summary = summary or {}
        row.finished_at = utcnow()

    def task(self, intent_id: int, round_: int, agent: str, kind: str) -> Task:
        row, _ = self._get_or_create(Task, {"intent_id": intent_id, "round": round_, "kind": kind}, {"agent": agent})
        return row

    def close_task(self, task_id: int, status: str = "done") -> None:
        row = self.get(Task, task_id)
        row.status = status
        row.finished_at = utcnow()

    def tasks(self, intent_id: int) -> list[Task]:
        return list(self.session.scalars(select(Task).where(Task.intent_id == intent_id).order_by(Task.id)))

    # -- candidates and trainings -------------------------------------------------------------
    def add_candidate(self, intent_id: int, config_hash: str, **fields: Any) -> tuple[CandidateRow, bool]:
        return self._get_or_create(CandidateRow, {"intent_id": intent_id, "config_hash": config_hash}, fields)

    def candidates(self, intent_id: int | None = None) -> list[CandidateRow]:
        query = select(CandidateRow).order_by(CandidateRow.id)
        if intent_id is not None:
            query = query.where(CandidateRow.intent_id == intent_id)
        return list(self.session.scalars(query))

    def candidate_in_round(self, intent_id: int, round_: int) -> CandidateRow | None:
        query = select(CandidateRow).where(CandidateRow.intent_id == intent_id, CandidateRow.round == round_)
        return self.session.scalars(query.order_by(CandidateRow.id)).first()

    def training(self, candidate_id: int, role: str, seed: int) -> Training | None:
        query = select(Training).filter_by(candidate_id=candidate_id, role=role, seed=seed)
        return self.session.scalars(query).first()

    def start_training(self, candidate_id: int, role: str, seed: int) -> Training:
        """The training row for (candidate, role, seed); a failed or stale one is restarted."""
        row, created = self._get_or_create(
            Training, {"candidate_id": candidate_id, "role": role, "seed": seed}, {"status": "running"}
        )
        if not created and row.status != "done":
            row.status, row.error, row.started_at = "running", None, utcnow()
        self.session.flush()
        return row

    def finish_training(
        self, training_id: int, metrics: dict[str, Any], cost_s: float, epochs: int | None = None
    ) -> None:
        row = self.get(Training, training_id)
        row.status, row.metrics, row.cost_s, row.epochs, row.finished_at = "done", metrics, cost_s, epochs, utcnow()

    def fail_training(self, training_id: int, error: str) -> None:
        row = self.get(Training, training_id)
        row.status, row.error, row.finished_at = "failed", error, utcnow()

    def trainings(self, candidate_id: int | None = None, intent_id: int | None = None) -> list[Training]:
        query = select(Training).order_by(Training.id)
        if candidate_id is not None:
            query = query.where(Training.candidate_id == candidate_id)
        if intent_id is not None:
            query = query.join(CandidateRow, CandidateRow.id == Training.candidate_id).where(
                CandidateRow.intent_id == intent_id
            )
        return list(self.session.scalars(query))

    # -- EnsNAS statistics ----------------------------------------------------------------------
    def cached_member_stats(self, snapshot_id: int, config_hash: str, split: str, seeds: str) -> MemberStatsRow | None:
        query = select(MemberStatsRow).filter_by(
            snapshot_id=snapshot_id, config_hash=config_hash, split=split, seeds=seeds
        )
        return self.session.scalars(query).first()

    def cache_member_stats(
        self, snapshot_id: int, config_hash: str, split: str, seeds: str, stats: dict[str, Any]
    ) -> MemberStatsRow:
        keys = {"snapshot_id": snapshot_id, "config_hash": config_hash, "split": split, "seeds": seeds}
        fields = {k: stats[k] for k in ("n", "learners", "error", "bias", "variance", "covariance", "correlation")}
        row, _ = self._get_or_create(MemberStatsRow, keys, fields)
        return row

    def record_comparison(self, candidate_id: int, split: str, **fields: Any) -> EnsNASComparison:
        row, _ = self._get_or_create(EnsNASComparison, {"candidate_id": candidate_id, "split": split}, fields)
        return row

    def comparisons(self, intent_id: int) -> list[EnsNASComparison]:
        query = (
            select(EnsNASComparison)
            .join(CandidateRow, CandidateRow.id == EnsNASComparison.candidate_id)
            .where(CandidateRow.intent_id == intent_id)
            .order_by(EnsNASComparison.id)
        )
        return list(self.session.scalars(query))

    # -- decisions, champions, lessons, artifacts, audits -------------------------------------
    def record_decision(
        self, candidate_id: int, gate: str, accepted: bool, reason: str, details: dict[str, Any] | None = None
    ) -> Decision:
        row, _ = self._get_or_create(
            Decision,
            {"candidate_id": candidate_id, "gate": gate},
            {"accepted": accepted, "reason": reason, "details": details or {}},
        )
        return row

    def decisions(self, candidate_id: int | None = None, intent_id: int | None = None) -> list[Decision]:
        query = select(Decision).order_by(Decision.id)
        if candidate_id is not None:
            query = query.where(Decision.candidate_id == candidate_id)
        if intent_id is not None:
            query = query.join(CandidateRow, CandidateRow.id == Decision.candidate_id).where(
                CandidateRow.intent_id == intent_id
            )
        return list(self.session.scalars(query))

    def promote(self, intent_id: int, candidate_id: int, round_: int, metrics: dict[str, Any]) -> Champion:
        """Append a champion under a row lock on the intent; idempotent per candidate."""
        self.lock_intent(intent_id)
        existing = self.session.scalars(
            select(Champion).filter_by(intent_id=intent_id, candidate_id=candidate_id)
        ).first()
        if existing is not None:
            return existing
        sequence = self.session.scalar(
            select(func.coalesce(func.max(Champion.sequence) + 1, 0)).where(Champion.intent_id == intent_id)
        )
        row = Champion(intent_id=intent_id, candidate_id=candidate_id, sequence=sequence, round=round_, metrics=metrics)
        self.session.add(row)
        self.session.flush()
        return row

    def champion(self, intent_id: int) -> Champion | None:
        query = select(Champion).where(Champion.intent_id == intent_id).order_by(Champion.sequence.desc())
        return self.session.scalars(query).first()

    def lineage(self, intent_id: int) -> list[Champion]:
        query = select(Champion).where(Champion.intent_id == intent_id).order_by(Champion.sequence)
        return list(self.session.scalars(query))

    def add_lesson(self, scope: str, text: str, intent_id: int | None = None, candidate_id: int | None = None) -> Lesson:
        row = Lesson(scope=scope, text=text, intent_id=intent_id, candidate_id=candidate_id)
        self.session.add(row)
        self.session.flush()
        return row

    def lessons(self, intent_id: int | None = None, limit: int | None = None) -> list[Lesson]:
        query = select(Lesson).order_by(Lesson.id.desc())
        if intent_id is not None:
            query = query.where(Lesson.intent_id == intent_id)
        if limit:
            query = query.limit(limit)
        return list(reversed(list(self.session.scalars(query))))

    def add_artifact(self, kind: str, path: str, **fields: Any) -> Artifact:
        row, _ = self._get_or_create(Artifact, {"path": path}, {"kind": kind, **fields})
        return row

    def artifacts(self, candidate_id: int | None = None, kind: str | None = None) -> list[Artifact]:
        query = select(Artifact).order_by(Artifact.id)
        if candidate_id is not None:
            query = query.where(Artifact.candidate_id == candidate_id)
        if kind is not None:
            query = query.where(Artifact.kind == kind)
        return list(self.session.scalars(query))

    def add_audit(self, **fields: Any) -> Audit:
        row = Audit(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def audits(self, intent_id: int | None = None) -> list[Audit]:
        query = select(Audit).order_by(Audit.id)
        if intent_id is not None:
            query = query.where(Audit.intent_id == intent_id)
        return list(self.session.scalars(query))

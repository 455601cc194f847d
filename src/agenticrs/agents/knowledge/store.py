"""KnowledgeStore: the agents' long-term memory in a real database (SQLite file or PostgreSQL).

Every agent action runs in one transaction (`with store.transaction() as tx: ...`), so a process
killed at any moment leaves either all of an action's rows or none. Writes that two processes
may race on (data snapshots, cached statistics, candidates, trainings, decisions) are
get-or-create under a unique constraint inside a savepoint: the loser reads the winner's row.
SQLite runs in WAL mode and takes its write lock at BEGIN (IMMEDIATE), so concurrent writers
queue instead of failing on a lock upgrade; PostgreSQL locks the intent row when it promotes
(`FOR NO KEY UPDATE`, see `lock_intent`), and migrations there hold an advisory lock.

A store opened `readonly=True` (the read-side commands: history, show, report) neither migrates
nor changes the journal mode nor takes a write lock, so it reads a database in a read-only folder
or file; it never creates a database either. Every fault of opening one (a malformed or
unsupported URL, an unreachable server, a read-only folder, a missing file, a file that is not a
knowledge database) is a `KnowledgeStoreError` with one line that says what is wrong. Secrets
(`api_key`, passwords, tokens) are dropped from an intent's settings before they are stored.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from agenticrs.agents.knowledge.schema import (
    AgentAction,
    Artifact,
    Audit,
    Base,
    CandidateRow,
    Champion,
    DataProfile,
    DataSnapshot,
    Decision,
    Deployment,
    EnsNASComparison,
    Intent,
    Lesson,
    MemberStatsRow,
    OuterTest,
    OuterTestDay,
    PerfProfile,
    Reproduction,
    ReproductionRun,
    Rollout,
    RolloutStep,
    Task,
    Training,
    utcnow,
)
from agenticrs.runtime.secrets import scrub_secrets

T = TypeVar("T", bound=Base)

DEFAULT_DB = "sqlite:///runs/knowledge.db"


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_USAGE = "use a SQLite file path (or sqlite:///PATH) or postgresql://USER@HOST:PORT/DATABASE"


class KnowledgeStoreError(RuntimeError):
    """The knowledge database cannot be opened or used; the message is one line that says why."""


def display_url(url: str) -> str:
    """A URL as it may be printed: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return " ".join(text.split()) or type(error).__name__


def normalise_url(url: str) -> str:
    """Accept a bare file path for SQLite and `postgresql://` for psycopg 3; refuse anything else.

    A text with a URL scheme but no `://` (`postgresql:/db`, a typo) is refused rather than taken as
    a file name, so that a mistyped URL never creates an empty SQLite database silently."""
    if not url or not url.strip():
        raise KnowledgeStoreError(f"no knowledge database given: {_USAGE}")
    if "://" not in url:
        match = _SCHEME.match(url)
        if match and len(match.group(1)) > 1:  # one letter: a Windows drive (C:\\...), a path
            raise KnowledgeStoreError(
                f"'{display_url(url)}' is not a database URL (a URL needs '://', e.g. postgresql://USER@HOST/DB "
                f"or sqlite:///PATH); for a SQLite file of that name write ./{url}"
            )
        return f"sqlite:///{Path(url)}"
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if scheme in _SQLITE_SCHEMES or scheme in _POSTGRES_SCHEMES:
        return url
    raise KnowledgeStoreError(f"unsupported database URL scheme '{scheme}' in {display_url(url)}: {_USAGE}")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for an in-memory database or another dialect)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def _check_writable_sqlite(path: Path) -> None:
    """Refuse, with the reason, a SQLite file that cannot be written (SQLite says only 'readonly')."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KnowledgeStoreError(
            f"cannot create the folder {path.parent} for the knowledge database: {exc.strerror or exc}"
        ) from None
    if path.is_dir():
        raise KnowledgeStoreError(f"the knowledge database {path} is a folder, not a file")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise KnowledgeStoreError(
            f"the folder {path.parent} is read-only, and the knowledge database {path.name} needs to write there "
            "(SQLite keeps its journal next to the file); read-only commands (history, show, report) still work"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise KnowledgeStoreError(
            f"the knowledge database {path} is read-only; read-only commands (history, show, report) still work"
        )


def _readonly_sqlite_creator(path: Path) -> Any:
    """Connections to a SQLite file this process may not write: `mode=ro`, and `immutable=1` where
    SQLite could not even create its shared-memory file (a WAL database in a read-only folder)."""
    target = path.resolve()
    wal_files = all(Path(f"{target}{suffix}").exists() for suffix in ("-wal", "-shm"))
    uri = f"file:{quote(str(target))}?mode=ro" + ("" if wal_files else "&immutable=1")
    return lambda: sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)


def make_engine(url: str, readonly: bool = False, create: bool = True) -> Engine:
    """The engine of a knowledge database; `readonly` never writes, `create=False` refuses a missing SQLite file."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and (readonly or not create) and not path.exists():
            raise KnowledgeStoreError(f"no knowledge database at {path} (`agenticrs evolve` creates one)")
        if path is not None and readonly:
            if path.is_dir():
                raise KnowledgeStoreError(f"the knowledge database {path} is a folder, not a file")
        elif path is not None:
            _check_writable_sqlite(path)
        writable = path is None or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK))
        if readonly and not writable:
            assert path is not None
            engine = create_engine("sqlite://", creator=_readonly_sqlite_creator(path))
        else:
            engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (savepoints work)
            cursor = dbapi_connection.cursor()
            if not readonly:  # a reader must not write (journal_mode=WAL writes the file header)
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # a server that does not answer is an error after 10 s, not a hang (unless the URL says otherwise)
    connect_args = {} if "connect_timeout" in url else {"connect_timeout": 10}
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except ImportError as exc:
        raise KnowledgeStoreError(
            f"the database driver for {display_url(url)} is not installed ({exc}); PostgreSQL needs `psycopg`"
        ) from None
    except ArgumentError as exc:
        raise KnowledgeStoreError(f"malformed database URL {display_url(url)}: {_one_line(exc)}") from None


class KnowledgeStore:
    """Opens (and migrates) the database; hands out transactions.

    `readonly=True`: no migration, no journal-mode change and no write lock, and a database that
    does not exist (or holds no knowledge tables) is an error instead of being created.
    `create=False`: a missing SQLite file is an error (resuming or auditing needs an existing one).
    `created` says whether this store created a new SQLite file."""

    def __init__(self, url: str = DEFAULT_DB, migrate: bool = True, readonly: bool = False, create: bool = True) -> None:
        self.url = normalise_url(url)
        self.readonly = readonly
        path = sqlite_path(self.url)
        self.display = str(path) if path is not None else display_url(url)  # as the user wrote it
        self.created = path is not None and not path.exists() and not readonly
        self.engine = make_engine(self.url, readonly=readonly, create=create)
        try:
            if readonly:
                self._check_schema()
            elif migrate:
                from agenticrs.agents.knowledge.migrate import upgrade

                upgrade(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise KnowledgeStoreError(f"cannot open the knowledge database {self.display}: {_one_line(exc)}") from None
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _check_schema(self) -> None:
        from alembic.script import ScriptDirectory

        from agenticrs.agents.knowledge.migrate import alembic_config, current_revision

        head = ScriptDirectory.from_config(alembic_config(self.engine)).get_current_head()
        current = current_revision(self.engine)
        if current is None:
            raise KnowledgeStoreError(
                f"{self.display} holds no knowledge tables (not an agenticrs knowledge database, or an empty one)"
            )
        if current != head:
            raise KnowledgeStoreError(
                f"the knowledge database {self.display} has schema revision {current}, this agenticrs reads {head}: "
                "run a writing command (agenticrs evolve) on it once to migrate it"
            )

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
    def _rows(self, model: type[T], order: Any = None, of_intent: int | None = None, **equal: Any) -> list[T]:
        """Rows of `model` whose columns equal the given values (a None value: any), in `order`
        (default: id); `of_intent` keeps the rows of that intent's candidates (by `candidate_id`)."""
        query = select(model).filter_by(**{column: value for column, value in equal.items() if value is not None})
        if of_intent is not None:
            query = query.join(CandidateRow, CandidateRow.id == model.candidate_id).where(  # type: ignore[attr-defined]
                CandidateRow.intent_id == of_intent)  # fmt: skip
        return list(self.session.scalars(query.order_by(model.id if order is None else order)))  # type: ignore[attr-defined]

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
        if "settings" in fields:  # secrets are never stored (an LLM API key comes from the environment)
            fields["settings"] = scrub_secrets(fields["settings"])
        row = Intent(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def intents(self) -> list[Intent]:
        return self._rows(Intent)

    def latest_intent(self, status: str | tuple[str, ...] | None = None) -> Intent | None:
        """The newest intent, optionally only among those with the given status(es)."""
        query = select(Intent).order_by(Intent.id.desc())
        if status:
            query = query.where(Intent.status.in_((status,) if isinstance(status, str) else status))
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
        return self._rows(Task, intent_id=intent_id)

    # -- candidates and trainings -------------------------------------------------------------
    def add_candidate(self, intent_id: int, config_hash: str, **fields: Any) -> tuple[CandidateRow, bool]:
        return self._get_or_create(CandidateRow, {"intent_id": intent_id, "config_hash": config_hash}, fields)

    def candidates(self, intent_id: int | None = None) -> list[CandidateRow]:
        return self._rows(CandidateRow, intent_id=intent_id)

    def candidate_in_round(self, intent_id: int, round_: int) -> CandidateRow | None:
        """The candidate an agent proposed in a round (a composition the coordinator made is not one)."""
        query = select(CandidateRow).where(CandidateRow.intent_id == intent_id, CandidateRow.round == round_,
                                           CandidateRow.proposer != "compose")  # fmt: skip
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
        return self._rows(Training, of_intent=intent_id, candidate_id=candidate_id)

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
        return self._rows(EnsNASComparison, of_intent=intent_id)

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
        return self._rows(Decision, of_intent=intent_id, candidate_id=candidate_id)

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

    def reinstate(self, intent_id: int, candidate_id: int, round_: int, metrics: dict[str, Any]) -> Champion:
        """Make an earlier champion the champion again (a rollback by evidence): a new lineage row,
        idempotent while it is the newest."""
        self.lock_intent(intent_id)
        current = self.champion(intent_id)
        if current is not None and current.candidate_id == candidate_id:
            return current
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
        return self._rows(Champion, order=Champion.sequence, intent_id=intent_id)

    def add_lesson(
        self,
        scope: str,
        text: str,
        intent_id: int | None = None,
        candidate_id: int | None = None,
        reproduction_id: int | None = None,
    ) -> Lesson:
        row = Lesson(scope=scope, text=text, intent_id=intent_id, candidate_id=candidate_id,
                     reproduction_id=reproduction_id)
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
        return self._rows(Artifact, candidate_id=candidate_id, kind=kind)

    def add_audit(self, **fields: Any) -> Audit:
        row = Audit(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def audits(self, intent_id: int | None = None) -> list[Audit]:
        return self._rows(Audit, intent_id=intent_id)

    # -- serving: deployments and rollouts ----------------------------------------------------------
    def add_deployment(self, run_path: str, backend: str, **fields: Any) -> Deployment:
        row = Deployment(run_path=run_path, backend=backend, **fields)
        self.session.add(row)
        self.session.flush()
        return row

    def end_deployment(self, deployment_id: int, status: str = "retired") -> None:
        row = self.get(Deployment, deployment_id)
        row.status, row.ended_at = status, utcnow()

    def deployments(self, status: str | None = None) -> list[Deployment]:
        return self._rows(Deployment, status=status)

    def start_rollout(self, candidate_id: int, share: float, **fields: Any) -> Rollout:
        row = Rollout(candidate_id=candidate_id, share=share, **fields)
        self.session.add(row)
        self.session.flush()
        return row

    def rollouts(self, candidate_id: int | None = None, status: str | None = None) -> list[Rollout]:
        return self._rows(Rollout, candidate_id=candidate_id, status=status)

    def record_rollout_step(self, rollout_id: int, step: int, **fields: Any) -> tuple[RolloutStep, bool]:
        """Idempotent per (rollout, step): a resumed rollout re-recording a step gets the first row."""
        return self._get_or_create(RolloutStep, {"rollout_id": rollout_id, "step": step}, fields)

    def rollout_steps(self, rollout_id: int) -> list[RolloutStep]:
        return self._rows(RolloutStep, order=RolloutStep.step, rollout_id=rollout_id)

    def finish_rollout(self, rollout_id: int, status: str, reason: str) -> None:
        row = self.get(Rollout, rollout_id)
        row.status, row.reason, row.finished_at = status, reason, utcnow()

    # -- paper autotrain: method-card reproductions -------------------------------------------------
    def reproduction(self, key: str, **fields: Any) -> tuple[Reproduction, bool]:
        """Get or create the reproduction of a (card, options) key: (row, created)."""
        return self._get_or_create(Reproduction, {"key": key}, fields)

    def reproductions(self, card_name: str | None = None) -> list[Reproduction]:
        return self._rows(Reproduction, card_name=card_name)

    def reproduction_run(self, reproduction_id: int, dataset: str, arm: str, seed: int) -> ReproductionRun | None:
        query = select(ReproductionRun).filter_by(reproduction_id=reproduction_id, dataset=dataset, arm=arm, seed=seed)
        return self.session.scalars(query).first()

    def start_reproduction_run(self, reproduction_id: int, dataset: str, arm: str, seed: int, **fields: Any) -> ReproductionRun:
        """The run's row, (re)started: a row left `running` or `failed` by an earlier attempt is reset."""
        row, created = self._get_or_create(
            ReproductionRun, {"reproduction_id": reproduction_id, "dataset": dataset, "arm": arm, "seed": seed}, fields
        )
        if not created:
            for key, value in fields.items():
                setattr(row, key, value)
            row.status, row.error, row.started_at, row.finished_at = "running", None, utcnow(), None
        self.session.flush()
        return row

    def finished_reproduction_run(self, dataset: str, arm: str, seed: int, config: dict[str, Any]) -> ReproductionRun | None:
        """A finished run of any reproduction with exactly this config (shared between cards)."""
        query = select(ReproductionRun).filter_by(dataset=dataset, arm=arm, seed=seed, status="done").order_by(ReproductionRun.id)
        return next((row for row in self.session.scalars(query) if row.config == config), None)

    def finish_reproduction_run(self, run_id: int, status: str = "done", **fields: Any) -> None:
        row = self.get(ReproductionRun, run_id)
        for key, value in fields.items():
            setattr(row, key, value)
        row.status, row.finished_at = status, utcnow()

    def reproduction_runs(self, reproduction_id: int) -> list[ReproductionRun]:
        return self._rows(ReproductionRun, reproduction_id=reproduction_id)

    def finish_reproduction(self, reproduction_id: int, status: str, verdicts: list[Any], wall_s: float) -> None:
        row = self.get(Reproduction, reproduction_id)
        row.status, row.verdicts, row.wall_s, row.finished_at = status, verdicts, wall_s, utcnow()

    def reproduction_lessons(self, reproduction_id: int) -> list[Lesson]:
        return self._rows(Lesson, reproduction_id=reproduction_id)

    # -- agentic system II: profiles, perf profiles, outer tests, the agent ledger --------------------
    def save_profile(self, dataset: str, fingerprint: str, label: str, **fields: Any) -> tuple[DataProfile, bool]:
        """Idempotent per (fingerprint, label): profiling the same data again returns the stored row."""
        return self._get_or_create(DataProfile, {"fingerprint": fingerprint, "label": label},
                                   {"dataset": dataset, **fields})  # fmt: skip

    def profiles(self, dataset: str | None = None) -> list[DataProfile]:
        return self._rows(DataProfile, dataset=dataset)

    def save_perf(self, candidate_id: int, device: str, **fields: Any) -> tuple[PerfProfile, bool]:
        """Idempotent per (candidate, device): a candidate is measured once per device."""
        return self._get_or_create(PerfProfile, {"candidate_id": candidate_id, "device": device}, fields)

    def perf_profiles(self, intent_id: int | None = None, candidate_id: int | None = None) -> list[PerfProfile]:
        return self._rows(PerfProfile, of_intent=intent_id, candidate_id=candidate_id)

    def start_outer_test(self, candidate_id: int, incumbent_id: int, **fields: Any) -> OuterTest:
        row = OuterTest(candidate_id=candidate_id, incumbent_id=incumbent_id, **fields)
        self.session.add(row)
        self.session.flush()
        return row

    def outer_tests(self, intent_id: int | None = None, candidate_id: int | None = None,
                    status: str | None = None) -> list[OuterTest]:  # fmt: skip
        return self._rows(OuterTest, intent_id=intent_id, candidate_id=candidate_id, status=status)

    def record_outer_day(self, outer_test_id: int, day: int, **fields: Any) -> tuple[OuterTestDay, bool]:
        """Idempotent per (test, day): a resumed test re-recording a day gets the first row."""
        return self._get_or_create(OuterTestDay, {"outer_test_id": outer_test_id, "day": day}, fields)

    def outer_days(self, outer_test_id: int) -> list[OuterTestDay]:
        return self._rows(OuterTestDay, order=OuterTestDay.day, outer_test_id=outer_test_id)

    def finish_outer_test(self, outer_test_id: int, status: str, reason: str, result: dict[str, Any]) -> None:
        row = self.get(OuterTest, outer_test_id)
        row.status, row.reason, row.result, row.finished_at = status, reason, result, utcnow()

    def agent_action(self, intent_id: int, round_: int, agent: str, **fields: Any) -> tuple[AgentAction, bool]:
        """The ledger row of a round (created on first call): which agent acted, at what cost."""
        return self._get_or_create(AgentAction, {"intent_id": intent_id, "round": round_}, {"agent": agent, **fields})

    def agent_actions(self, intent_id: int) -> list[AgentAction]:
        return self._rows(AgentAction, order=AgentAction.round, intent_id=intent_id)

"""The knowledge layer's tables: every decision, configuration and outcome of the agents.

One relational schema for SQLite (the default, a file) and PostgreSQL (by URL). Alembic
migrations in `migrations/` create and evolve it; the ORM classes here are the source of truth
that the migrations are checked against. Unique constraints carry the idempotence that resume
and concurrent writers rely on: a candidate hash is unique within an evolution, a training is
unique per (candidate, seed, role), a decision per (candidate, gate).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class DataSnapshot(Base):
    """A fixed, fingerprinted data set (files + processing) that results are valid for."""

    __tablename__ = "data_snapshots"
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    splits: Mapped[dict[str, Any]] = mapped_column(default=dict)  # split -> rows
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Intent(Base):
    """One `evolve` invocation: the objective, the budget and the settings it runs under."""

    __tablename__ = "intents"
    id: Mapped[int] = mapped_column(primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("data_snapshots.id"))
    text: Mapped[str] = mapped_column(Text)
    objective: Mapped[str] = mapped_column(String(40))
    proposer: Mapped[str] = mapped_column(String(40))
    seed: Mapped[int] = mapped_column(Integer)
    ensemble_size: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | finished | failed
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)  # written at the end: counts, test metrics
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Task(Base):
    """A unit of agent work within an intent (one round of one agent)."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("intent_id", "round", "kind", name="uq_task_round_kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int] = mapped_column(ForeignKey("intents.id"))
    round: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | done | failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CandidateRow(Base):
    """A proposed configuration (data, never code), with where it came from and why."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("intent_id", "config_hash", name="uq_candidate_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int] = mapped_column(ForeignKey("intents.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), nullable=True)
    round: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column()
    config_hash: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    proposer: Mapped[str] = mapped_column(String(40))
    mutation: Mapped[str | None] = mapped_column(String(60), nullable=True)
    rationale: Mapped[str] = mapped_column(Text, default="")
    # proposed | invalid | trained | accepted | rejected | promoted | failed
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    parameters: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # per 1000 rows
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Training(Base):
    """One trained learner of a candidate: a dual-learner member or an audit ensemble member."""

    __tablename__ = "trainings"
    __table_args__ = (UniqueConstraint("candidate_id", "role", "seed", name="uq_training_seed"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    role: Mapped[str] = mapped_column(String(20))  # member | audit
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | done | failed
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # split -> metric -> value
    cost_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    epochs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MemberStatsRow(Base):
    """Dual-learner statistics of one configuration on one split: cached across intents."""

    __tablename__ = "member_stats"
    __table_args__ = (
        UniqueConstraint("snapshot_id", "config_hash", "split", "seeds", name="uq_member_stats"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("data_snapshots.id"))
    config_hash: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(20))
    seeds: Mapped[str] = mapped_column(String(100))  # "11,12"
    n: Mapped[int] = mapped_column(Integer)
    learners: Mapped[int] = mapped_column(Integer)
    error: Mapped[float] = mapped_column(Float)
    bias: Mapped[float] = mapped_column(Float)
    variance: Mapped[float] = mapped_column(Float)
    covariance: Mapped[float] = mapped_column(Float)
    correlation: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EnsNASComparison(Base):
    """The EnsNAS acceptance computation for a candidate against the incumbent of its round."""

    __tablename__ = "ensnas_stats"
    __table_args__ = (UniqueConstraint("candidate_id", "split", name="uq_ensnas_candidate_split"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    incumbent_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    split: Mapped[str] = mapped_column(String(20))
    ensemble_size: Mapped[int] = mapped_column(Integer)
    error: Mapped[float] = mapped_column(Float)
    bias: Mapped[float] = mapped_column(Float)
    variance: Mapped[float] = mapped_column(Float)
    covariance: Mapped[float] = mapped_column(Float)
    correlation: Mapped[float] = mapped_column(Float)
    delta_error: Mapped[float] = mapped_column(Float)
    gain_accuracy: Mapped[float] = mapped_column(Float)
    gain_diversity: Mapped[float] = mapped_column(Float)
    gain_variance_shift: Mapped[float] = mapped_column(Float)
    predicted_candidate: Mapped[float] = mapped_column(Float)
    predicted_incumbent: Mapped[float] = mapped_column(Float)
    improvement: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float] = mapped_column(Float)
    ci_high: Mapped[float] = mapped_column(Float)
    paper_condition: Mapped[bool] = mapped_column(Boolean)
    exact_condition: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Decision(Base):
    """A gate's verdict on a candidate (written by the coordinator only)."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("candidate_id", "gate", name="uq_decision_gate"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    gate: Mapped[str] = mapped_column(String(30))  # validation | ensnas | gate | guardrails
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Champion(Base):
    """The incumbent lineage of an intent: one row per promotion (the newest is the champion)."""

    __tablename__ = "champions"
    __table_args__ = (UniqueConstraint("intent_id", "sequence", name="uq_champion_sequence"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int] = mapped_column(ForeignKey("intents.id"))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    sequence: Mapped[int] = mapped_column(Integer)  # 0 = the seed incumbent
    round: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lesson(Base):
    """A failure pattern or finding that later proposals must read."""

    __tablename__ = "lessons"
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int | None] = mapped_column(ForeignKey("intents.id"), nullable=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    # the method-card reproduction the lesson came from (`agents/paper`), if any
    reproduction_id: Mapped[int | None] = mapped_column(ForeignKey("reproductions.id"), nullable=True)
    # proposal | validation | training | acceptance | gate | reproduction | sandbox
    scope: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Artifact(Base):
    """A file an agent produced (predictions, weights, reports), with its checksum."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("path", name="uq_artifact_path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int | None] = mapped_column(ForeignKey("intents.id"), nullable=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    training_id: Mapped[int | None] = mapped_column(ForeignKey("trainings.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(30))  # predictions | run | report | export
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. an export's format, parity, latency profile
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Audit(Base):
    """A calibration audit: predicted vs measured M-ensemble error from a real ensemble."""

    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int | None] = mapped_column(ForeignKey("intents.id"), nullable=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    split: Mapped[str] = mapped_column(String(20))
    ensemble_size: Mapped[int] = mapped_column(Integer)
    predicted: Mapped[float] = mapped_column(Float)  # from the first two members (dual-learner stats)
    measured: Mapped[float] = mapped_column(Float)  # Brier of the real M-ensemble
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Deployment(Base):
    """A model put behind the scoring service: which run, which backend, from when to when."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"), nullable=True)
    run_path: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(20))  # torch | onnx | onnx-int8
    endpoint: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="serving")  # serving | retired | failed
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Rollout(Base):
    """A canary of a candidate against the serving champion; its steps are `RolloutStep` rows."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int | None] = mapped_column(ForeignKey("intents.id"), nullable=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    incumbent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    share: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | promoted | rolled_back | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RolloutStep(Base):
    """One observation window of a rollout: the guardrails measured and the verdict taken. Unique
    per (rollout, step), so a resumed rollout continues after its last recorded step."""

    __tablename__ = "rollout_steps"
    __table_args__ = (UniqueConstraint("rollout_id", "step", name="uq_rollout_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    step: Mapped[int] = mapped_column(Integer)
    share: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdict: Mapped[str] = mapped_column(String(20))  # continue | promote | rollback
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Reproduction(Base):
    """One reproduction of a method card (`agenticrs reproduce`): the card, the options it ran with
    and, when finished, one verdict per (data set, baseline). Unique per `key` (the hash of the card
    and the options), so running the same card again resumes it."""

    __tablename__ = "reproductions"
    __table_args__ = (UniqueConstraint("key", name="uq_reproduction_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    card_name: Mapped[str] = mapped_column(String(80))
    card_hash: Mapped[str] = mapped_column(String(64))
    card: Mapped[dict[str, Any]] = mapped_column()
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | finished | failed
    verdicts: Mapped[list[Any]] = mapped_column(default=list)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReproductionRun(Base):
    """One trained arm of a reproduction: (data set, arm, seed), unique, so a resumed reproduction
    skips whatever finished and redoes what was running when it was killed."""

    __tablename__ = "reproduction_runs"
    __table_args__ = (UniqueConstraint("reproduction_id", "dataset", "arm", "seed", name="uq_reproduction_run"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reproduction_id: Mapped[int] = mapped_column(ForeignKey("reproductions.id"))
    dataset: Mapped[str] = mapped_column(String(200))
    arm: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(20))  # method | baseline
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | done | failed
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    cost_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DataProfile(Base):
    """AutoFeature's profile of a data set (`agenticrs profile`): per-field statistics and the
    fields the leakage check flagged. One row per (data snapshot fingerprint, label); profiling the
    same data again replaces nothing and returns the stored row."""

    __tablename__ = "data_profiles"
    __table_args__ = (UniqueConstraint("fingerprint", "label", name="uq_profile_fingerprint_label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(80))
    rows: Mapped[int] = mapped_column(Integer)
    fields: Mapped[list[Any]] = mapped_column(default=list)  # one dict per field
    leaks: Mapped[list[Any]] = mapped_column(default=list)  # [{"field", "reason"}]
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PerfProfile(Base):
    """AutoPerf's measurement of a candidate: latency per 1,000 candidates (p50, p99), size, memory
    and export size, on one device. Unique per (candidate, device)."""

    __tablename__ = "perf_profiles"
    __table_args__ = (UniqueConstraint("candidate_id", "device", name="uq_perf_candidate_device"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    device: Mapped[str] = mapped_column(String(40))
    latency_p50_ms: Mapped[float] = mapped_column(Float)  # per 1,000 candidates
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    parameters: Mapped[int] = mapped_column(BigInteger)
    memory_mb: Mapped[float] = mapped_column(Float)
    export_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    export_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OuterTest(Base):
    """The outer reward: a simulated online A/B test of a champion against the previous one in the
    simulator's `Environment`. Its days are `OuterTestDay` rows, so a killed test resumes after
    its last recorded day."""

    __tablename__ = "outer_tests"

    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int | None] = mapped_column(ForeignKey("intents.id"), nullable=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    incumbent_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | passed | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # metric -> lift, ci, p
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OuterTestDay(Base):
    """One simulated day of an outer A/B test (per-arm totals; per-user outcomes on disk)."""

    __tablename__ = "outer_test_days"
    __table_args__ = (UniqueConstraint("outer_test_id", "day", name="uq_outer_test_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    outer_test_id: Mapped[int] = mapped_column(ForeignKey("outer_tests.id"))
    day: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AgentAction(Base):
    """The coordinator's ledger: one row per agent action (a round), with what it cost and the
    rewards it earned. The bandit over agents and the per-agent budgets are read from these rows,
    so a resumed evolution continues with the statistics it had."""

    __tablename__ = "agent_actions"
    __table_args__ = (UniqueConstraint("intent_id", "round", name="uq_agent_action_round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int] = mapped_column(ForeignKey("intents.id"))
    round: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(40))
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | done
    cost_s: Mapped[float] = mapped_column(Float, default=0.0)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    inner_reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    outer_reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

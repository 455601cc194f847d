"""The coordinator: rounds of propose → check → dual-learner training → EnsNAS → gate → promotion.

Every step reads its inputs from and writes its outcome to the knowledge layer, one transaction
per agent action, and every step first looks for its own earlier outcome there. That is the whole
resume mechanism: a process killed at any moment (SIGKILL included) restarts with `--resume`,
skips what is recorded, redoes only the interrupted step (trainings are deterministic for their
seed) and reaches the champion an uninterrupted run reaches. Decisions and champions are
written by the coordinator only (the agents' contract in docs/architecture.md).

Splits: proposals and the EnsNAS decision see `valid`; promotion needs the gate (held-out users,
never shown to a proposer); `test` is read only by the final report.

Faults: a proposal that fails any check (its model's typed config, the search space, the budgets,
a proposer that raises) is recorded as an invalid candidate or a lesson and the loop goes on. The
starting incumbent is checked before an intent is opened. An exception that still ends the loop
marks the intent `failed` with the error in its summary before it propagates (`--intent N
--resume` continues it); only a process killed outright (SIGKILL, Ctrl-C) leaves it `running`.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agenticrs.agents import ensnas
from agenticrs.agents.audit import audit_records
from agenticrs.agents.autotrain import MemberTrainer, file_sha256, load_predictions
from agenticrs.agents.bandit import LedgerEntry, choose_agent, ledger
from agenticrs.agents.candidate import Candidate
from agenticrs.agents.contract import AGENTS, Agent, Outcome, agent_names
from agenticrs.agents.executor import Executor, ExecutorFactory, LocalExecutor, TrainingJob
from agenticrs.agents.knowledge import KnowledgeStore, KnowledgeTx
from agenticrs.agents.knowledge.schema import CandidateRow, Intent, Task, utcnow
from agenticrs.agents.proposers import make_proposer
from agenticrs.agents.proposers.base import (
    HistoryEntry,
    ProposalContext,
    ProposalOutcome,
    Proposer,
)
from agenticrs.agents.settings import EvolveSettings
from agenticrs.agents.space import CheckReport, check
from agenticrs.agents.splits import EvolutionData, make_evolution_data
from agenticrs.progress import SILENT, Reporter
from agenticrs.train.metrics import METRICS, compute_metrics
from agenticrs.train.workflow import load_data

Observer = Callable[[str, dict[str, Any]], None]


def _quiet(_event: str, _info: dict[str, Any]) -> None:
    """Default observer: no live view."""


@dataclass
class EvolveSummary:
    intent_id: int
    rounds: int
    champion_id: int
    champion: str
    counts: dict[str, int] = field(default_factory=dict)
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # seed / champion -> test metrics
    agents: dict[str, dict[str, float]] = field(default_factory=dict)  # agent -> actions, accepted, spent_s


def ensemble_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, logloss and Brier of the averaged learners."""
    return compute_metrics(["auc", "logloss", "brier"], labels, predictions.mean(axis=0))


def paired_metric_bootstrap(
    metric: str, candidate: np.ndarray, incumbent: np.ndarray, labels: np.ndarray, resamples: int, seed: int
) -> tuple[float, np.ndarray]:
    """Gain of `metric` (positive = candidate better) and its paired bootstrap distribution."""
    spec = METRICS[metric]
    sign = 1.0 if spec.higher_is_better else -1.0

    def gain(index: np.ndarray | slice) -> float:
        y = labels[index]
        return sign * (spec.fn(y, candidate[index]) - spec.fn(y, incumbent[index]))

    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = np.empty(resamples)
    for b in range(resamples):  # one metric per resample (AUC sorts); B is small, N is vectorised
        index = rng.integers(0, n, n)
        y = labels[index]
        draws[b] = gain(index) if 0 < y.sum() < n else 0.0
    return gain(slice(None)), draws


class Coordinator:
    def __init__(
        self,
        store: KnowledgeStore,
        settings: EvolveSettings,
        observer: Observer = _quiet,
        reporter: Reporter = SILENT,
        proposer: Proposer | None = None,
        evo: EvolutionData | None = None,
        strict_proposer: bool = False,
        executor: ExecutorFactory | None = None,
    ) -> None:
        """`strict_proposer`: a proposer (llm, optuna) that gives no usable candidate stops the
        evolution with a ValueError naming why (an unreachable LLM server, say) instead of letting the
        built-in proposer stand in; either way the observer hears a `fallback` event first.

        `executor`: makes, from the coordinator's `MemberTrainer`, where learners train (default:
        `LocalExecutor`, one at a time in this process); whichever it is, only this coordinator
        writes the knowledge database."""
        self.store = store
        self.strict_proposer = strict_proposer
        self.settings = settings
        self.observer = observer
        self.reporter = reporter
        data = evo.data if evo is not None else load_data(settings.dataset, settings.cache_dir, reporter)
        self.evo = evo or make_evolution_data(data, settings.gate_share, settings.stop_share, salt=2026)
        label_index = 0 if settings.train.label is None else list(data.schema.labels).index(settings.train.label)
        self.label_index = label_index
        self.trainer = MemberTrainer(self.evo, settings.train, label_index, SILENT)
        self.executor: Executor = executor(self.trainer) if executor is not None else LocalExecutor(self.trainer)
        self.labels = {s: self.evo.labels(s, label_index) for s in ("valid", "gate")}
        if self.evo.test is not None:
            self.labels["test"] = self.evo.labels("test", label_index)
        self.proposer = proposer or make_proposer(settings.proposer, **self._proposer_settings())
        self.fallback = make_proposer("builtin") if settings.proposer != "builtin" else None
        self.intent_id: int | None = None
        self.artifacts: Path = Path(settings.artifacts)
        self._predictions: dict[tuple[int, str, tuple[int, ...]], dict[str, np.ndarray]] = {}
        self._training_error = ""  # the last failed training's message
        self.agent_order = self._agent_names()
        self.agents: dict[str, Agent] = {}
        self.start: Candidate = settings.start
        self.profile: Any = None
        self._exhausted: set[str] = set()
        self._perf_cache: dict[int, Any] = {}

    def _agent_names(self) -> list[str]:
        names = list(self.settings.agents) if self.settings.agents is not None else agent_names()
        unknown = [n for n in names if n not in AGENTS]
        if unknown:
            raise ValueError(f"unknown agents {unknown}; registered: {agent_names()}")
        if not names:
            raise ValueError("evolve needs at least one agent (train, feature, perf)")
        return list(dict.fromkeys(names))

    def _proposer_settings(self) -> dict[str, Any]:
        return dict(self.settings.llm) if self.settings.proposer == "llm" else {}

    # -- intent -----------------------------------------------------------------------------------
    def open_intent(self, resume: int | None = None) -> int:
        snapshot_key = json.dumps(
            {
                "dataset": self.evo.data.spec.name,
                "encoder": self.evo.data.encoder.to_dict(),  # content, not file times: equal data, equal key
                "rows": self.evo.rows,
                "gate_share": self.settings.gate_share,
                "stop_share": self.settings.stop_share,
            },
            sort_keys=True,
            default=str,
        )
        with self.store.transaction() as tx:
            snapshot = tx.snapshot(self.evo.data.spec.name, _digest(snapshot_key), self.evo.rows)
            if resume is not None:
                intent = tx.get(Intent, resume)
                if intent.snapshot_id != snapshot.id:
                    raise ValueError(f"intent {resume} was run on another data snapshot; cannot resume it here")
                if intent.status == "failed":  # continued after the fault that stopped it
                    intent.status, intent.finished_at = "running", None
            else:
                intent = tx.create_intent(
                    snapshot_id=snapshot.id,
                    text=f"improve {self.settings.objective} on {self.settings.dataset} "
                    f"(M={self.settings.ensemble_size} ensemble)",
                    objective=self.settings.objective,
                    proposer=self.settings.proposer,
                    seed=self.settings.seed,
                    ensemble_size=self.settings.ensemble_size,
                    settings=self.settings.model_dump(mode="json"),
                )
            self.intent_id, self.snapshot_id = intent.id, snapshot.id
        self.artifacts = Path(self.settings.artifacts) / f"intent-{self.intent_id}"
        return self.intent_id

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, resume: int | None = None) -> EvolveSummary:
        self.prepare_agents()
        start = self.check_start()  # before any intent is opened: a bad start leaves nothing behind
        intent_id = self.open_intent(resume)
        try:
            summary = self._run(intent_id, start)
        except Exception as exc:
            self._fail_intent(intent_id, exc)
            raise
        self.observer("finish", {"summary": summary})
        return summary

    def _run(self, intent_id: int, start: CheckReport) -> EvolveSummary:
        started = time.perf_counter()
        self.observer("start", {"intent": intent_id, "rows": self.evo.rows, "settings": self.settings})
        self._seed_round(start)
        round_ = 1
        while True:
            if self.settings.candidates is not None and round_ > self.settings.candidates:
                break
            if self.settings.budget_s is not None and time.perf_counter() - started > self.settings.budget_s:
                with self.store.transaction() as tx:
                    if tx.candidate_in_round(intent_id, round_) is None:
                        break
            if not self._round(round_):
                break
            round_ += 1
        self._promote_pending(round_, final=True)
        self._final_outer_check(round_)
        summary = self.summary()
        with self.store.transaction() as tx:
            tx.finish_intent(intent_id, asdict(summary))
        return summary

    def check_start(self) -> CheckReport:
        """The starting incumbent's check; a ValueError naming what is wrong when it fails."""
        report = check(self.start, self.settings.space, self.evo.data.schema)
        if not report.ok:
            raise ValueError(f"the starting incumbent (start) is not a valid candidate: {report.reason}")
        return report

    def _fail_intent(self, intent_id: int, exc: Exception) -> None:
        """Mark the intent failed, with the error, so that it is never left `running` by a fault."""
        error = f"{type(exc).__name__}: {exc}"
        try:
            with self.store.transaction() as tx:
                intent = tx.get(Intent, intent_id)
                intent.status, intent.finished_at = "failed", utcnow()
                intent.summary = {**(intent.summary or {}), "error": error}
                tx.add_lesson("fault", f"the evolution stopped: {error}", intent_id=intent_id)
        except Exception:  # noqa: BLE001, S110 - the store itself may be the fault; the original error wins
            pass

    def _seed_round(self, report: CheckReport) -> None:
        start = self.start
        with self.store.transaction() as tx:
            task = tx.task(self.intent_id, 0, "coordinator", "seed")
            row, _ = tx.add_candidate(
                self.intent_id,
                start.config_hash(),
                round=0,
                task_id=task.id,
                config=start.model_dump(mode="json"),
                proposer="seed",
                rationale="the starting incumbent",
                parameters=report.parameters,
                latency_ms=report.latency_ms_per_1000,
            )
            candidate_id = row.id
            if tx.champion(self.intent_id) is not None:
                return
        self.observer("round", {"round": 0, "candidate": start.describe(), "id": candidate_id})
        predictions = self.train_members(candidate_id, start)
        if predictions is None:
            raise ValueError(f"the starting incumbent (start) failed to train: {self._training_error}")
        stats = self._member_stats(candidate_id, start.config_hash(), predictions, "valid")
        self._measure(candidate_id)
        metrics = self._ensemble_summary(predictions)
        with self.store.transaction() as tx:
            tx.record_decision(candidate_id, "seed", True, "starting incumbent", {"stats": stats.to_dict()})
            tx.promote(self.intent_id, candidate_id, 0, metrics)
            tx.get(CandidateRow, candidate_id).status = "promoted"
            tx.close_task(task.id)
        self.observer("promoted", {"round": 0, "candidate": start.describe(), "metrics": metrics})

    def _round(self, round_: int) -> bool:
        """One round of one agent; False when no agent has anything left to offer (or budget)."""
        agent = self._agent_for(round_)
        if agent is None:
            return False
        started = time.perf_counter()
        with self.store.transaction() as tx:
            task = tx.task(self.intent_id, round_, agent.name, agent.kind)
            row = tx.candidate_in_round(self.intent_id, round_)
            task_id = task.id
        if row is None:
            row = self._propose(round_, task_id, agent)
            if row is None:
                with self.store.transaction() as tx:
                    tx.close_task(task_id, "exhausted")
                self._exhausted.add(agent.name)
                self._finish_action(round_, None, agent, started, Outcome("exhausted"))
                return any(name not in self._exhausted for name in self.agents)
        candidate = Candidate.model_validate(row.config)
        self.observer("round", {"round": round_, "candidate": candidate.describe(), "id": row.id,
                                "rationale": row.rationale, "agent": agent.name})  # fmt: skip
        if row.status in ("invalid", "failed", "rejected", "gate_failed", "promoted", "superseded", "held"):
            with self.store.transaction() as tx:
                tx.close_task(task_id)
            self._finish_action(round_, row.id, agent, started, self._outcome(row.id, row.status))
            self.observer("decided", {"candidate_id": row.id, "status": row.status})
            return True
        predictions = self.train_members(row.id, candidate)
        if predictions is None:
            self._close(task_id, row.id, "failed")
            self._finish_action(round_, row.id, agent, started, Outcome("failed"))
            return True
        self._measure(row.id)
        champion_row, incumbent, incumbent_predictions = self._incumbent()
        comparison = self._ensnas(row.id, candidate, champion_row.id, incumbent, predictions, incumbent_predictions,
                                  non_inferior=agent.acceptance == "non_inferior")  # fmt: skip
        with self.store.transaction() as tx:
            tx.close_task(task_id)
        status = "accepted" if comparison["accepted"] else "rejected"
        self._finish_action(round_, row.id, agent, started, self._outcome(row.id, status))
        if not comparison["accepted"]:
            self.observer("decided", {"candidate_id": row.id, "status": "rejected"})
            return True
        if round_ % self.settings.promote_every == 0:
            self._promote_pending(round_)
        return True

    # -- agents: choice, ledger, outcomes ---------------------------------------------------------
    def prepare_agents(self) -> None:
        """Build the enabled agents on this data: AutoFeature profiles the data first (stored in the
        knowledge layer) and, with `exclude_leaks`, the start drops the fields its leakage check
        flags. An agent with nothing to change around the start (AutoPerf with an LR incumbent)
        waits until the champion changes."""
        from agenticrs.agents.team import FeatureAgent, PerfAgent, TrainAgent, feature_options

        label = self.settings.train.label
        if "feature" in self.agent_order or self.settings.exclude_leaks:
            self.profile = self._profile(label)
        if self.settings.exclude_leaks and self.profile is not None and self.profile.leaks:
            from agenticrs.features.actions import DropField

            have = {a.field for a in self.start.features if getattr(a, "kind", "") == "drop"}
            drops = [DropField(field=f.name) for f in self.profile.leaks if f.name not in have]
            if drops:
                self.start = self.settings.start.model_copy(update={"features": [*self.settings.start.features, *drops]})
        context = self._context(self.start, self.start.config_hash(strict=False), 0, ())
        for name in self.agent_order:
            if name == "train":
                agent: Agent = TrainAgent(self.proposer)
            elif name == "feature":
                agent = FeatureAgent(feature_options(self.evo.fit, self.profile, label))
            elif name == "perf":
                agent = PerfAgent()
            else:
                agent = AGENTS[name]()
            self.agents[name] = agent
            if agent.decision_space(context).size == 0:  # e.g. AutoPerf has nothing cheaper than LR
                self._exhausted.add(name)  # until the champion changes
                self.observer("idle", {"agent": name, "reason": "empty decision space around the start"})

    def _profile(self, label: str | None) -> Any:
        from agenticrs.agents.autofeature.profile import profile_dataset, record_profile

        profile = profile_dataset(self.evo.data, label)
        fingerprint = _digest(json.dumps({"dataset": self.evo.data.spec.name,
                                          "encoder": self.evo.data.encoder.to_dict()}, sort_keys=True, default=str))  # fmt: skip
        record_profile(self.store, profile, fingerprint)
        for leak in profile.leaks:
            self.observer("leak", {"field": leak.name, "reason": leak.leak})
        return profile

    def _context(self, incumbent: Candidate, incumbent_hash: str, round_: int,
                 history: tuple[HistoryEntry, ...], lessons: tuple[str, ...] = ()) -> ProposalContext:  # fmt: skip
        return ProposalContext(incumbent=incumbent, incumbent_hash=incumbent_hash, space=self.settings.space,
                               schema=self.evo.data.schema, history=history, lessons=lessons, round=round_,
                               seed=self.settings.seed)  # fmt: skip

    def _ledger_entries(self, tx: KnowledgeTx) -> list[LedgerEntry]:
        return [LedgerEntry(a.agent, a.cost_s, a.accepted, a.inner_reward, a.outer_reward)
                for a in tx.agent_actions(self.intent_id) if a.status == "done"]  # fmt: skip

    def _agent_for(self, round_: int) -> Agent | None:
        """The agent of this round: the one the ledger recorded (a resumed round), else the bandit's."""
        with self.store.transaction() as tx:
            recorded = next((a for a in tx.agent_actions(self.intent_id) if a.round == round_), None)
            if recorded is not None and recorded.agent in self.agents:
                return self.agents[recorded.agent]
            name = choose_agent(list(self.agents), self._ledger_entries(tx), self.settings.agent_budget_s,
                                self.settings.agent_exploration, self.settings.beta, sorted(self._exhausted))  # fmt: skip
            if name is None:
                return None
            tx.agent_action(self.intent_id, round_, name)
        self.observer("agent", {"round": round_, "agent": name})
        return self.agents[name]

    def _finish_action(self, round_: int, candidate_id: int | None, agent: Agent, started: float,
                       outcome: Outcome) -> None:  # fmt: skip
        with self.store.transaction() as tx:
            row, _ = tx.agent_action(self.intent_id, round_, agent.name)
            if row.status == "done":
                return
            row.candidate_id = candidate_id
            row.cost_s = float(time.perf_counter() - started)
            row.accepted = outcome.status == "accepted"
            row.inner_reward = float(agent.evaluate(outcome)) if outcome.status != "exhausted" else None
            row.details = {"status": outcome.status, "improvement": outcome.improvement,
                           "latency_p99_ms": outcome.latency_p99_ms}  # fmt: skip
            row.status = "done"

    def _outcome(self, candidate_id: int, status: str) -> Outcome:
        with self.store.transaction() as tx:
            comp = next((c for c in tx.comparisons(self.intent_id)
                         if c.candidate_id == candidate_id and c.split == "valid"), None)  # fmt: skip
            row = tx.get(CandidateRow, candidate_id)
            parent = row.parent_id
        mine, theirs = self._perf_of(candidate_id), self._perf_of(parent) if parent else None
        return Outcome(status, comp.improvement if comp else None, comp.ci_low if comp else None,
                       mine.latency_p99_ms if mine else None, theirs.latency_p99_ms if theirs else None)  # fmt: skip

    def _close(self, task_id: int, candidate_id: int, status: str) -> None:
        with self.store.transaction() as tx:
            tx.close_task(task_id)
        self.observer("decided", {"candidate_id": candidate_id, "status": status})

    # -- proposing ----------------------------------------------------------------------------------
    def history(self, tx: KnowledgeTx, before_round: int, agent: str | None = None) -> tuple[HistoryEntry, ...]:
        """Earlier candidates of the intent; with `agent`, the kinds of change the other agents made
        are hidden from its bandit (`mutation` None) while their hashes stay seen."""
        agent_of = {t.round: t.agent for t in tx.tasks(self.intent_id) if t.kind != "compose"} if agent else {}
        comparisons = {c.candidate_id: c for c in tx.comparisons(self.intent_id) if c.split == "valid"}
        reasons: dict[int, str] = {}
        for decision in tx.decisions(intent_id=self.intent_id):
            reasons[decision.candidate_id] = decision.reason
        entries = []
        for row in tx.candidates(self.intent_id):
            if row.round == 0 or row.round >= before_round:
                continue
            comp = comparisons.get(row.id)
            entries.append(
                HistoryEntry(
                    candidate=Candidate.model_validate(row.config),
                    config_hash=row.config_hash,
                    proposer=row.proposer,
                    mutation=row.mutation if agent is None or agent_of.get(row.round, agent) == agent else None,
                    status=row.status,
                    improvement=comp.improvement if comp else None,
                    gain_accuracy=comp.gain_accuracy if comp else None,
                    gain_diversity=comp.gain_diversity if comp else None,
                    reason=reasons.get(row.id, ""),
                )
            )
        return tuple(entries)

    def _propose(self, round_: int, task_id: int, agent: Agent) -> CandidateRow | None:
        with self.store.transaction() as tx:
            champion = tx.champion(self.intent_id)
            incumbent_row = tx.get(CandidateRow, champion.candidate_id)
            context = self._context(
                Candidate.model_validate(incumbent_row.config), incumbent_row.config_hash, round_,
                self.history(tx, round_, agent.name), tuple(lesson.text for lesson in tx.lessons(self.intent_id, limit=50)),
            )
            parent_id = incumbent_row.id
        outcome = _safe_propose(getattr(agent, "proposer", agent), context)  # AutoTrain: its proposer, by name
        lessons = list(outcome.lessons)
        proposer_name = self.proposer.name if agent.name == "train" else agent.name
        if outcome.proposal is None and self.fallback is not None and agent.name == "train":
            why = "; ".join(outcome.lessons) or "no answer"
            self.observer("fallback", {"round": round_, "proposer": proposer_name, "reason": why,
                                       "strict": self.strict_proposer})
            if self.strict_proposer:
                raise ValueError(f"the {proposer_name} proposer gave no usable candidate in round {round_}: {why}")
            fallback = _safe_propose(self.fallback, context)
            lessons += fallback.lessons
            if fallback.proposal is not None:
                lessons.append(f"{proposer_name} gave no usable candidate in round {round_}; the built-in proposer stood in")
                outcome, proposer_name = fallback, f"{self.fallback.name} (fallback)"
        proposal = outcome.proposal
        report = self._check(proposal.candidate) if proposal else None
        with self.store.transaction() as tx:
            for text in lessons:
                tx.add_lesson("proposal", text, intent_id=self.intent_id)
            if proposal is None:
                return None
            row, created = tx.add_candidate(
                self.intent_id,
                proposal.candidate.config_hash(strict=False),  # an invalid one is recorded too
                round=round_,
                task_id=task_id,
                config=proposal.candidate.model_dump(mode="json"),
                parent_id=parent_id,
                proposer=proposer_name,
                mutation=proposal.mutation,
                rationale=proposal.rationale,
                parameters=report.parameters,
                latency_ms=report.latency_ms_per_1000,
                status="proposed" if report.ok else "invalid",
            )
            if not created:  # a proposer repeated a hash: record it, spend the round
                tx.add_lesson("proposal", f"round {round_}: proposal repeats candidate {row.id}", intent_id=self.intent_id)
                return row
            if not report.ok:
                tx.record_decision(row.id, "validation", False, report.reason)
                tx.add_lesson(
                    "validation", f"{proposal.candidate.describe()}: {report.reason}", self.intent_id, row.id
                )
            return row

    def _check(self, candidate: Candidate) -> CheckReport:
        """`space.check`, with any exception it still raises turned into a failed report."""
        try:
            return check(candidate, self.settings.space, self.evo.data.schema)
        except Exception as exc:  # noqa: BLE001 - a candidate that breaks the check is invalid, not fatal
            return CheckReport(False, [f"the check failed: {type(exc).__name__}: {exc}"])

    # -- training ---------------------------------------------------------------------------------
    def train_members(self, candidate_id: int, candidate: Candidate, seeds: list[int] | None = None,
                       role: str = "member") -> dict[str, np.ndarray] | None:
        """Predictions (learners, rows) per split of the candidate's learners, training what is missing.

        The missing learners go to the executor together (a concurrent one trains them side by
        side); their results are recorded here, in seed order, whatever order they finish in."""
        seeds = seeds or list(self.settings.member_seeds())
        per_seed: dict[int, dict[str, np.ndarray]] = {}
        jobs: list[tuple[int, int, TrainingJob]] = []  # (index, training id, job)
        for index, seed in enumerate(seeds):
            with self.store.transaction() as tx:
                training = tx.start_training(candidate_id, role, seed)
                training_id, done = training.id, training.status == "done"
            folder = self.trainer.run_dir(self.artifacts, candidate_id, role, seed)
            if done:
                per_seed[index] = load_predictions(folder)
                self.observer("trained", {"candidate_id": candidate_id, "seed": seed, "role": role, "cached": True})
                continue
            jobs.append((index, training_id, TrainingJob(candidate_id, candidate, role, seed, folder)))
        pending = []
        for index, training_id, job in jobs:
            pending.append((index, training_id, self.executor.submit(job)))
            if self.executor.concurrent:
                self.observer("training", {"candidate_id": candidate_id, "seed": job.seed, "index": index,
                                           "of": len(seeds), "role": role, "label": job.label})
        for position, (index, training_id, handle) in enumerate(pending):
            job = handle.job
            if not self.executor.concurrent:
                self.observer("training", {"candidate_id": candidate_id, "seed": job.seed, "index": index,
                                           "of": len(seeds), "role": role, "label": job.label})
            try:
                result = handle.result()
            except Exception as exc:  # noqa: BLE001 - a failed training is a recorded outcome, not a crash
                for _, _, rest in pending[position + 1:]:
                    rest.cancel()
                message = f"{type(exc).__name__}: {exc}"
                self._training_error = message
                with self.store.transaction() as tx:
                    tx.fail_training(training_id, message + "\n" + traceback.format_exc(limit=3))
                    tx.get(CandidateRow, candidate_id).status = "failed"
                    tx.record_decision(candidate_id, "training", False, message)
                    tx.add_lesson("training", f"{candidate.describe()} failed to train: {message}",
                                  self.intent_id, candidate_id)
                self.observer("trained", {"candidate_id": candidate_id, "seed": job.seed, "role": role,
                                          "cached": False, "failed": True, "label": job.label})
                return None
            with self.store.transaction() as tx:
                tx.finish_training(training_id, result.metrics, result.cost_s, result.epochs)
                path = result.run_dir / "predictions.npz"
                tx.add_artifact("predictions", str(path), intent_id=self.intent_id, candidate_id=candidate_id,
                                training_id=training_id, sha256=file_sha256(path))
                tx.add_artifact("run", str(result.run_dir), intent_id=self.intent_id, candidate_id=candidate_id,
                                training_id=training_id)
            per_seed[index] = result.predictions
            self.observer("trained", {"candidate_id": candidate_id, "seed": job.seed, "role": role, "cached": False,
                                      "label": job.label})
        ordered = [per_seed[i] for i in range(len(seeds))]
        return {split: np.stack([p[split] for p in ordered]) for split in ordered[0]}

    def predictions(self, candidate_id: int, role: str = "member", seeds: list[int] | None = None) -> dict[str, np.ndarray]:
        """Stored learner predictions (learners, rows) per split; read from disk once per candidate."""
        seeds = seeds or list(self.settings.member_seeds())
        key = (candidate_id, role, tuple(seeds))
        if key not in self._predictions:
            loaded = [load_predictions(self.trainer.run_dir(self.artifacts, candidate_id, role, s)) for s in seeds]
            self._predictions[key] = {split: np.stack([p[split] for p in loaded]) for split in loaded[0]}
        return self._predictions[key]

    # -- statistics and decisions -------------------------------------------------------------------
    def _member_stats(
        self, candidate_id: int, config_hash: str, predictions: dict[str, np.ndarray], split: str
    ) -> ensnas.MemberStats:
        """Dual-learner statistics, from the cache when this configuration was measured before."""
        seeds = ",".join(map(str, self.settings.member_seeds()))
        with self.store.transaction() as tx:
            cached = tx.cached_member_stats(self.snapshot_id, config_hash, split, seeds)
            if cached is not None:
                return ensnas.MemberStats.from_dict({k: getattr(cached, k) for k in (
                    "n", "learners", "error", "bias", "variance", "covariance", "correlation")})
        stats = ensnas.member_stats(predictions[split], self.labels[split])
        with self.store.transaction() as tx:
            tx.cache_member_stats(self.snapshot_id, config_hash, split, seeds, stats.to_dict())
        return stats

    def _ensemble_summary(self, predictions: dict[str, np.ndarray]) -> dict[str, Any]:
        """The 2-ensemble's valid and gate metrics (the test split is left to the report)."""
        return {split: ensemble_metrics(predictions[split], self.labels[split]) for split in ("valid", "gate")}

    def _incumbent(self) -> tuple[CandidateRow, Candidate, dict[str, np.ndarray]]:
        with self.store.transaction() as tx:
            champion = tx.champion(self.intent_id)
            row = tx.get(CandidateRow, champion.candidate_id)
        return row, Candidate.model_validate(row.config), self.predictions(row.id)

    def _ensnas(self, candidate_id: int, candidate: Candidate, incumbent_id: int, incumbent: Candidate,
                predictions: dict[str, np.ndarray], incumbent_predictions: dict[str, np.ndarray],
                non_inferior: bool = False) -> dict[str, Any]:  # fmt: skip
        """EnsNAS on valid. `non_inferior` (AutoPerf): accepted unless a significant loss beyond
        `perf_tolerance`, and only when it is measured to be faster than the incumbent."""
        with self.store.transaction() as tx:
            for decision in tx.decisions(candidate_id=candidate_id):
                if decision.gate == "ensnas":
                    return {"accepted": decision.accepted, "reason": decision.reason}
        s = self.settings
        incumbent_stats = self._member_stats(incumbent_id, incumbent.config_hash(), incumbent_predictions, "valid")
        self._member_stats(candidate_id, candidate.config_hash(), predictions, "valid")
        margin = -s.perf_tolerance if non_inferior else s.margin
        result = ensnas.compare(
            predictions["valid"], incumbent_predictions["valid"], self.labels["valid"], s.ensemble_size,
            bootstrap=s.bootstrap, level=s.level, margin=margin, seed=s.seed, incumbent_stats=incumbent_stats,
        )
        if non_inferior and result.accepted:
            mine, theirs = self._perf_of(candidate_id), self._perf_of(incumbent_id)
            if mine is not None and theirs is not None and not mine.latency_p99_ms < theirs.latency_p99_ms:
                result.accepted = False
                result.reason = (f"as good (non-inferior within {s.perf_tolerance:g}) but not faster: p99 "
                                 f"{mine.latency_p99_ms:.2f} ms vs {theirs.latency_p99_ms:.2f} ms per 1,000")  # fmt: skip
        with self.store.transaction() as tx:
            tx.record_comparison(candidate_id, "valid", **_comparison_fields(result, incumbent_id))
            tx.record_decision(candidate_id, "ensnas", result.accepted, result.reason, result.to_dict())
            tx.get(CandidateRow, candidate_id).status = "accepted" if result.accepted else "rejected"
            if not result.accepted:
                tx.add_lesson("acceptance", f"{candidate.describe()}: {result.reason}", self.intent_id, candidate_id)
        self.observer("ensnas", {"candidate_id": candidate_id, "accepted": result.accepted, "reason": result.reason})
        return {"accepted": result.accepted, "reason": result.reason}

    def _gate(self, round_: int, candidate_id: int, candidate: Candidate, incumbent_id: int,
              predictions: dict[str, np.ndarray], incumbent_predictions: dict[str, np.ndarray],
              non_inferior: bool = False) -> bool:  # fmt: skip
        """The held-out users' check (recorded once per candidate): a significant gain of the
        objective, or for AutoPerf's candidates no significant loss beyond `perf_tolerance`."""
        with self.store.transaction() as tx:
            for decision in tx.decisions(candidate_id=candidate_id):
                if decision.gate == "gate":
                    return decision.accepted
        s = self.settings
        labels = self.labels["gate"]
        gain, draws = paired_metric_bootstrap(
            s.objective, predictions["gate"].mean(axis=0), incumbent_predictions["gate"].mean(axis=0), labels,
            max(s.bootstrap // 2, 50), s.seed + round_,
        )
        low = float(np.quantile(draws, 1 - s.gate_level))
        on_gate = ensnas.compare(predictions["gate"], incumbent_predictions["gate"], labels, s.ensemble_size,
                                 bootstrap=0, seed=s.seed)
        if non_inferior:
            high = float(np.quantile(draws, s.gate_level))
            passed = high > -s.perf_tolerance
            test = f"no significant loss beyond {s.perf_tolerance:g} (one-sided {s.gate_level:.0%} upper bound {high:+.5f})"
        else:
            passed = gain > 0 and low > 0
            test = f"one-sided {s.gate_level:.0%} bound {low:+.5f}"
        reason = (
            f"{'passed' if passed else 'held back'}: gate {s.objective} gain of the 2-ensemble {gain:+.5f} "
            f"({test}); predicted M={s.ensemble_size} Brier gain on the gate {on_gate.improvement:+.2e}"
        )
        with self.store.transaction() as tx:
            tx.record_comparison(candidate_id, "gate", **_comparison_fields(on_gate, incumbent_id))
            tx.record_decision(candidate_id, "gate", passed, reason,
                               {"objective": s.objective, "gain": gain, "bound": low, "level": s.gate_level})
            if not passed:
                tx.get(CandidateRow, candidate_id).status = "gate_failed"
                tx.add_lesson("gate", f"{candidate.describe()}: {reason}", self.intent_id, candidate_id)
        if not passed:
            self.observer("held", {"round": round_, "candidate": candidate.describe(),
                                   "metrics": self._ensemble_summary(predictions), "reason": reason})  # fmt: skip
        return passed

    def _commit(self, round_: int, candidate_id: int, candidate: Candidate, predictions: dict[str, np.ndarray],
                reason: str) -> None:  # fmt: skip
        metrics = self._ensemble_summary(predictions)
        with self.store.transaction() as tx:
            tx.promote(self.intent_id, candidate_id, round_, metrics)
            tx.get(CandidateRow, candidate_id).status = "promoted"
        self._exhausted.clear()  # a new champion: every agent has a new neighbourhood
        self.observer("promoted", {"round": round_, "candidate": candidate.describe(), "metrics": metrics,
                                   "reason": reason})  # fmt: skip
        self._maybe_audit()

    # -- promotion: composition, gate, guardrails, outer reward ------------------------------------
    def _pending(self, champion_id: int) -> list[CandidateRow]:
        """Accepted candidates against the champion that no promotion has decided yet."""
        with self.store.transaction() as tx:
            return [r for r in tx.candidates(self.intent_id) if r.status == "accepted" and r.parent_id == champion_id]

    def _agent_of(self, row: CandidateRow) -> str:
        with self.store.transaction() as tx:
            task = tx.get(Task, row.task_id) if row.task_id is not None else None
        return task.agent if task is not None else "train"

    def _compose(self, round_: int, champion: CandidateRow, pending: list[CandidateRow]) -> CandidateRow | None:
        """Changes of different agents accepted against one incumbent, re-checked together: the best
        architecture change (AutoTrain or AutoPerf) with every accepted feature action."""
        by_agent: dict[str, list[CandidateRow]] = {}
        for row in pending:
            by_agent.setdefault(self._agent_of(row), []).append(row)
        features = by_agent.get("feature", [])
        arch = [r for name in ("train", "perf") for r in by_agent.get(name, [])]
        if not features or not arch:
            return None
        gain = {c.candidate_id: c.improvement for c in self._valid_comparisons()}
        best_arch = max(arch, key=lambda r: (gain.get(r.id) or -np.inf, -r.id))
        base = Candidate.model_validate(best_arch.config)
        incumbent = Candidate.model_validate(champion.config)
        start = len(incumbent.features)
        added = [a for row in features for a in Candidate.model_validate(row.config).features[start:]]
        merged = base.model_copy(update={"features": [*base.features, *[a for a in added if a not in base.features]]})
        merged = Candidate.model_validate(merged.model_dump())
        report = self._check(merged)
        parts = [best_arch.id, *(r.id for r in features)]
        with self.store.transaction() as tx:
            task = tx.task(self.intent_id, round_, "coordinator", "compose")
            row, _ = tx.add_candidate(
                self.intent_id, merged.config_hash(strict=False), round=round_, task_id=task.id,
                config=merged.model_dump(mode="json"), parent_id=champion.id, proposer="compose", mutation="compose",
                rationale=f"candidates {parts} were accepted against champion #{champion.id}: re-checked together",
                parameters=report.parameters, latency_ms=report.latency_ms_per_1000,
                status="proposed" if report.ok else "invalid",
            )
            if not report.ok:
                tx.record_decision(row.id, "validation", False, report.reason)
            tx.close_task(task.id)
        if row.status in ("proposed", "accepted"):
            predictions = self.train_members(row.id, merged)
            if predictions is None:
                return None
            self._measure(row.id)
            champion_predictions = self.predictions(champion.id)
            self._ensnas(row.id, merged, champion.id, incumbent, predictions, champion_predictions)
        with self.store.transaction() as tx:
            return tx.get(CandidateRow, row.id)

    def _valid_comparisons(self) -> list[Any]:
        with self.store.transaction() as tx:
            return [c for c in tx.comparisons(self.intent_id) if c.split == "valid"]

    def _promote_pending(self, round_: int, final: bool = False) -> None:
        """Decide the accepted candidates waiting against the champion: compose when agents differ,
        then in order of EnsNAS gain: the gate, the guardrails and the outer A/B test; the first that
        passes all three becomes the champion, the others are superseded."""
        with self.store.transaction() as tx:
            champion = tx.get(CandidateRow, tx.champion(self.intent_id).candidate_id)
        pending = self._pending(champion.id)
        if not pending:
            return
        composed = self._compose(round_, champion, pending) if len(pending) > 1 else None
        pending = self._pending(champion.id)  # the composition, if EnsNAS accepted it
        gain = {c.candidate_id: c.improvement for c in self._valid_comparisons()}
        order = sorted(pending, key=lambda r: (-(gain.get(r.id) or 0.0), r.id))
        incumbent_predictions = self.predictions(champion.id)
        winner = None
        for row in order:
            candidate = Candidate.model_validate(row.config)
            predictions = self.predictions(row.id)
            non_inferior = self._agent_of(row) == "perf"
            if not self._gate(row.round, row.id, candidate, champion.id, predictions, incumbent_predictions,
                              non_inferior=non_inferior):  # fmt: skip
                continue
            if not self._guardrails(row.id, candidate):
                continue
            credit = [r.id for r in order if r.proposer != "compose"] if row.proposer == "compose" else [row.id]
            if not self._outer_check(row, champion, due=self._outer_due(final), credit=credit):
                continue
            self._commit(row.round if row.proposer != "compose" else round_, row.id, candidate, predictions,
                         "gate, guardrails and outer test passed")  # fmt: skip
            winner = row
            break
        with self.store.transaction() as tx:
            for row in order:
                if winner is not None and row.id != winner.id and tx.get(CandidateRow, row.id).status == "accepted":
                    tx.get(CandidateRow, row.id).status = "superseded"
                    tx.record_decision(row.id, "promotion", False,
                                       f"candidate {winner.id} was promoted against the same champion #{champion.id}")
        if composed is not None:
            self.observer("composed", {"candidate_id": composed.id, "status": composed.status})

    # -- AutoPerf: measurement -------------------------------------------------------------------
    def member_runs(self, candidate_id: int) -> list[Path]:
        return [self.trainer.run_dir(self.artifacts, candidate_id, "member", s) for s in self.settings.member_seeds()]

    def _measure(self, candidate_id: int) -> None:
        """Latency, size and memory (and the export size where asked or budgeted) of the candidate's
        members, recorded once. Exporting costs seconds per member, so by default only a budget on
        the export size pays for it; the champion is exported when it is shipped anyway."""
        if not self.settings.measure_perf or self._perf_of(candidate_id) is not None:
            return
        from agenticrs.agents.autoperf import measure_candidate, record_perf

        export = self.settings.perf_export
        if export is None:
            export = self.settings.budgets.max_export_mb is not None
        try:
            report = measure_candidate(self.member_runs(candidate_id), export=export)
        except Exception as exc:  # noqa: BLE001 - a measurement that fails is a lesson, not a crash
            with self.store.transaction() as tx:
                tx.add_lesson("perf", f"candidate {candidate_id} could not be measured: {type(exc).__name__}: {exc}",
                              self.intent_id, candidate_id)  # fmt: skip
            return
        record_perf(self.store, candidate_id, report)
        self._perf_cache[candidate_id] = report
        self.observer("measured", {"candidate_id": candidate_id, "p99_ms": report.latency_p99_ms,
                                   "parameters": report.parameters})  # fmt: skip

    def _perf_of(self, candidate_id: int | None) -> Any:
        if candidate_id is None:
            return None
        if candidate_id not in self._perf_cache:
            with self.store.transaction() as tx:
                rows = tx.perf_profiles(candidate_id=candidate_id)
                if not rows:
                    return None
                self._perf_cache[candidate_id] = rows[-1]
        return self._perf_cache[candidate_id]

    # -- the outer reward ---------------------------------------------------------------------------
    def _outer_due(self, final: bool) -> bool:
        every = self.settings.outer_every
        if every == 0:
            return False
        if final or every == 1:
            return True
        with self.store.transaction() as tx:
            lineage = tx.lineage(self.intent_id)
            tested = {d.candidate_id for d in tx.decisions(intent_id=self.intent_id) if d.gate == "outer"}
        since = 0
        for champ in reversed(lineage[1:]):
            if champ.candidate_id in tested:
                break
            since += 1
        return since + 1 >= every

    def _outer_check(self, row: CandidateRow, champion: CandidateRow, due: bool, credit: list[int]) -> bool:
        """The outer reward: an A/B test of the candidate against the champion in the simulator;
        committed only without a significant loss. Recorded as the `outer` decision, and as the
        outer reward of the actions that produced it (the bandit learns from it)."""
        if not due:
            return True
        with self.store.transaction() as tx:
            for decision in tx.decisions(candidate_id=row.id):
                if decision.gate == "outer":
                    return decision.accepted
        from agenticrs.agents.outer import run_outer_test
        from agenticrs.train.policy import world_of_run

        if world_of_run(self.member_runs(champion.id)[0]) is None:
            with self.store.transaction() as tx:
                tx.record_decision(row.id, "outer", True, "not measured: the data is not from the simulator")
            return True
        self.observer("outer", {"candidate_id": row.id, "incumbent_id": champion.id})
        result = run_outer_test(self.store, row.id, champion.id, self.member_runs(row.id), self.member_runs(champion.id),
                                self.settings.outer, self.artifacts / "outer", intent_id=self.intent_id)  # fmt: skip
        primary = self.settings.outer.metrics[0]
        lift = result.lifts.get(primary, {}).get("lift")
        with self.store.transaction() as tx:
            tx.record_decision(row.id, "outer", result.passed, result.reason,
                               {"test": result.test_id, "lifts": result.lifts})  # fmt: skip
            if not result.passed:
                tx.get(CandidateRow, row.id).status = "held"
                tx.add_lesson("outer", f"{Candidate.model_validate(row.config).describe()}: {result.reason}",
                              self.intent_id, row.id)  # fmt: skip
            for action in tx.agent_actions(self.intent_id):
                if action.candidate_id in credit and lift is not None and np.isfinite(lift):
                    action.outer_reward = float(lift)
        self.observer("outer_done", {"candidate_id": row.id, "passed": result.passed, "reason": result.reason})
        return result.passed

    def _final_outer_check(self, round_: int) -> None:
        """Before the champion becomes final: its A/B test against the previous champion, if no
        promotion since the last one was tested; a significant loss reinstates the previous one."""
        if self.settings.outer_every <= 1:
            return
        with self.store.transaction() as tx:
            lineage = tx.lineage(self.intent_id)
            if len(lineage) < 2:
                return
            champion = tx.get(CandidateRow, lineage[-1].candidate_id)
            previous = tx.get(CandidateRow, lineage[-2].candidate_id)
        if self._outer_check(champion, previous, due=True, credit=[champion.id]):
            return
        with self.store.transaction() as tx:
            tx.reinstate(self.intent_id, previous.id, round_, dict(lineage[-2].metrics))
        self.observer("reinstated", {"candidate_id": previous.id})

    def _guardrails(self, candidate_id: int, candidate: Candidate) -> bool:
        """AutoPerf's budgets: a measured candidate over any of them is not promoted."""
        budgets = self.settings.budgets
        report = self._perf_of(candidate_id)
        if report is None:
            return True
        violations = budgets.violations(report)
        with self.store.transaction() as tx:
            reason = "; ".join(violations) if violations else "within every budget"
            tx.record_decision(candidate_id, "guardrails", not violations, reason,
                               {"budgets": budgets.model_dump(mode="json")})
            if violations:
                tx.get(CandidateRow, candidate_id).status = "held"
                tx.add_lesson("guardrails", f"{candidate.describe()}: {reason}", self.intent_id, candidate_id)
        if violations:
            self.observer("held", {"candidate": candidate.describe(), "reason": reason, "metrics": {}})
        return not violations

    def _maybe_audit(self) -> None:
        every = self.settings.audit_every
        if not every:
            return
        with self.store.transaction() as tx:
            lineage = tx.lineage(self.intent_id)
        promotions = len(lineage) - 1
        if promotions > 0 and promotions % every == 0:
            self.run_audit(lineage[-1].candidate_id, lineage[-2].candidate_id, self.settings.audit_size)

    def ensemble_predictions(self, candidate_id: int, m: int) -> dict[str, np.ndarray]:
        """(m, rows) predictions per split: the dual learners plus m − 2 audit learners."""
        with self.store.transaction() as tx:
            candidate = Candidate.model_validate(tx.get(CandidateRow, candidate_id).config)
        members = self.train_members(candidate_id, candidate)
        extra_seeds = self.settings.audit_seeds(m)[2:]
        audit = self.train_members(candidate_id, candidate, extra_seeds, role="audit") if extra_seeds else None
        if members is None or (extra_seeds and audit is None):
            raise RuntimeError(f"candidate {candidate_id} failed to train during the audit; see its lessons")
        if audit is None:
            return members
        return {split: np.concatenate([members[split], audit[split]]) for split in members}

    def run_audit(self, candidate_id: int, incumbent_id: int, m: int = 8) -> list[dict[str, Any]]:
        """Audit one candidate against one incumbent with real M-ensembles (M − 2 extra trainings
        per side); returns and records one record per split."""
        records = audit_records(
            self.ensemble_predictions(candidate_id, m), self.ensemble_predictions(incumbent_id, m), self.labels, m
        )
        with self.store.transaction() as tx:
            for record in records:
                for role, cid, predicted, measured in (
                    ("candidate", candidate_id, record["candidate_predicted"], record["candidate_measured"]),
                    ("incumbent", incumbent_id, record["incumbent_predicted"], record["incumbent_measured"]),
                ):
                    tx.add_audit(intent_id=self.intent_id, candidate_id=cid, split=record["split"], ensemble_size=m,
                                 predicted=predicted, measured=measured, details={**record, "role": role})
        return records

    # -- results ----------------------------------------------------------------------------------
    def summary(self) -> EvolveSummary:
        with self.store.transaction() as tx:
            rows = tx.candidates(self.intent_id)
            lineage = tx.lineage(self.intent_id)
        counts: dict[str, int] = {}
        for row in rows:
            if row.round > 0:
                counts[row.status] = counts.get(row.status, 0) + 1
        champion_row = next(r for r in rows if r.id == lineage[-1].candidate_id)
        final: dict[str, dict[str, float]] = {}
        if "test" in self.labels:
            for name, candidate_id in (("seed", lineage[0].candidate_id), ("champion", champion_row.id)):
                final[name] = ensemble_metrics(self.predictions(candidate_id)["test"], self.labels["test"])
        with self.store.transaction() as tx:
            books = ledger(list(self.agents) or self.agent_order, self._ledger_entries(tx),
                           self.settings.agent_budget_s, self.settings.beta)  # fmt: skip
        agents = {name: {"actions": b.actions, "accepted": b.accepted, "spent_s": round(b.spent_s, 3),
                         "budget_s": b.limit_s} for name, b in books.items()}  # fmt: skip
        return EvolveSummary(
            agents=agents,
            intent_id=self.intent_id,
            rounds=max((r.round for r in rows), default=0),
            champion_id=champion_row.id,
            champion=Candidate.model_validate(champion_row.config).describe(),
            counts=counts,
            final=final,
        )


def _safe_propose(proposer: Proposer, context: ProposalContext) -> ProposalOutcome:
    """A proposer's answer; one that raises gives no candidate and a lesson saying why."""
    try:
        return proposer.propose(context)
    except Exception as exc:  # noqa: BLE001 - a misbehaving proposer costs a round, not the search
        return ProposalOutcome(None, [f"proposer {proposer.name} failed in round {context.round}: {type(exc).__name__}: {exc}"])


def _comparison_fields(result: ensnas.Comparison, incumbent_id: int) -> dict[str, Any]:
    c = result.candidate
    return {
        "incumbent_id": incumbent_id,
        "ensemble_size": result.m,
        "error": c.error,
        "bias": c.bias,
        "variance": c.variance,
        "covariance": c.covariance,
        "correlation": c.correlation,
        "delta_error": result.delta_error,
        "gain_accuracy": result.gain_accuracy,
        "gain_diversity": result.gain_diversity,
        "gain_variance_shift": result.gain_variance_shift,
        "predicted_candidate": result.predicted_candidate,
        "predicted_incumbent": result.predicted_incumbent,
        "improvement": result.improvement,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "paper_condition": bool(result.paper_condition),
        "exact_condition": bool(result.exact_condition),
    }


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:32]

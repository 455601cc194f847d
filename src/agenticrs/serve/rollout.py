"""Canary rollout of a candidate against the serving champion, decided by evidence from the
simulator (`agenticrs rollout`).

The service serves the champion and routes `share` of the users (a stable hash of the user id)
to the candidate. Each step is one simulated day of the candidate's world, whose requests go
through the HTTP endpoint (`HttpPolicy`), so what is measured is the served system: its scores,
its routing, its latency and its errors. After each day the guardrails are read on the days so far
(per-user clicks, purchases and GMV: relative lift of the canary users over the champion users
with a delta-method confidence interval, as `ab_test`; client-side p99 latency; error rate):

- a guard metric significantly worse (the interval's upper end below -`max_drop`), p99 above
  `p99_ms` or errors above `max_error_rate` -> **rollback**;
- after `days` days with no breach, and every guard metric's lift at or above -`max_drop` ->
  **promote** (the candidate becomes the intent's champion); otherwise rollback as not shown safe.

Every step is a `RolloutStep` row (its per-user outcomes in `OUT/rollout-<id>/step-<k>.npz`,
written before the row), so a killed rollout resumes after its last recorded step and reaches
the decision an uninterrupted one would have reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import CandidateRow, Rollout
from agenticrs.runtime.files import atomic_save
from agenticrs.serve.app import Router, create_app, in_canary
from agenticrs.serve.client import HttpPolicy
from agenticrs.serve.models import ServedModel, candidate_runs
from agenticrs.serve.server import running
from agenticrs.sim.environment import METRICS, Environment, relative_lift
from agenticrs.train.policy import world_of_run


class RolloutSettings(BaseModel):
    """How a canary is run and judged (saved with the rollout; a resume must use the same)."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(0.1, gt=0, lt=1, description="share of users routed to the candidate")
    days: int = Field(4, ge=1, le=60, description="simulated days (steps) before promotion")
    guard_metrics: list[str] = Field(default_factory=lambda: ["clicks", "purchases", "gmv"])
    max_drop: float = Field(0.0, ge=0, lt=1, description="tolerated relative drop of a guard metric")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    p99_ms: float = Field(250.0, gt=0, description="latency guardrail (client-side p99 per request)")
    max_error_rate: float = Field(0.01, ge=0, le=1)
    seed: int = 0
    rate_scale: float = Field(1.0, gt=0, description="the simulator's traffic multiplier")
    backend: str = "torch"
    concurrency: int = Field(16, ge=1, le=256)


@dataclass
class RolloutResult:
    rollout_id: int
    status: str  # promoted | rolled_back
    reason: str
    steps: list[dict[str, Any]]


def _guardrails(settings: RolloutSettings, days: list[dict[str, np.ndarray]], canary_users: np.ndarray,
                latencies: list[float], errors: int, requests: int) -> dict[str, Any]:  # fmt: skip
    """The guardrail readings on the days so far (canary users vs champion users, unpaired)."""
    readings: dict[str, Any] = {"days": len(days)}
    for metric in METRICS:
        total = np.sum([d[metric] for d in days], axis=0)
        lift, low, high, p = relative_lift(total[~canary_users], total[canary_users], paired=False, alpha=settings.alpha)
        readings[metric] = {"champion": float(total[~canary_users].mean()), "canary": float(total[canary_users].mean()),
                            "lift": lift, "ci_low": low, "ci_high": high, "p_value": p}  # fmt: skip
    readings["p99_ms"] = float(np.percentile(latencies, 99)) if latencies else None
    readings["error_rate"] = errors / max(requests, 1)
    readings["requests"] = requests
    return readings


def _verdict(settings: RolloutSettings, readings: dict[str, Any], last: bool) -> tuple[str, str]:
    for metric in settings.guard_metrics:
        r = readings[metric]
        if np.isfinite(r["ci_high"]) and r["ci_high"] < -settings.max_drop:
            return "rollback", (f"{metric} per user significantly worse on the canary: lift {r['lift']:+.1%} "
                                f"[{r['ci_low']:+.1%}, {r['ci_high']:+.1%}]")  # fmt: skip
    if readings["p99_ms"] is not None and readings["p99_ms"] > settings.p99_ms:
        return "rollback", f"p99 latency {readings['p99_ms']:.1f} ms above {settings.p99_ms:.0f} ms"
    if readings["error_rate"] > settings.max_error_rate:
        return "rollback", f"error rate {readings['error_rate']:.2%} above {settings.max_error_rate:.2%}"
    if not last:
        return "continue", "no guardrail breached"
    below = [m for m in settings.guard_metrics if not readings[m]["lift"] >= -settings.max_drop]
    if below:
        return "rollback", f"after {readings['days']} days {', '.join(below)} below the champion (not shown safe)"
    return "promote", f"no guardrail breached over {readings['days']} days; guard lifts " + ", ".join(
        f"{m} {readings[m]['lift']:+.1%}" for m in settings.guard_metrics)


def _find_or_start(store: KnowledgeStore, candidate_id: int, settings: RolloutSettings) -> tuple[int, int, int]:
    """(rollout id, intent id, incumbent candidate id): a running rollout of the candidate is resumed."""
    with store.transaction() as tx:
        candidate = tx.get(CandidateRow, candidate_id)
        champion = tx.champion(candidate.intent_id)
        if champion is None:
            raise ValueError(f"intent {candidate.intent_id} has no champion to roll candidate {candidate_id} out against")
        if champion.candidate_id == candidate_id:
            raise ValueError(f"candidate {candidate_id} is already the champion of intent {candidate.intent_id}")
        for row in tx.rollouts(candidate_id=candidate_id, status="running"):
            if row.settings != settings.model_dump(mode="json"):
                raise ValueError(f"rollout {row.id} of candidate {candidate_id} is running with other settings "
                                 f"({row.settings}); resume it with those")  # fmt: skip
            return row.id, candidate.intent_id, row.incumbent_id or champion.candidate_id
        row = tx.start_rollout(candidate_id, settings.share, intent_id=candidate.intent_id,
                               incumbent_id=champion.candidate_id, settings=settings.model_dump(mode="json"))  # fmt: skip
        return row.id, candidate.intent_id, champion.candidate_id


def run_rollout(db: str, candidate_id: int, settings: RolloutSettings | None = None, out: str | Path = "runs/rollouts",
                stop_after: int | None = None, on_step: Any = None) -> RolloutResult:  # fmt: skip
    """Roll candidate `candidate_id` out against its intent's champion; resumes a running rollout.
    `stop_after` ends the process's work after that many new steps (the rollout stays running)."""
    settings = settings or RolloutSettings()
    store = KnowledgeStore(db)
    try:
        rollout_id, intent_id, incumbent_id = _find_or_start(store, candidate_id, settings)
        champion = ServedModel.load(candidate_runs(store, incumbent_id), settings.backend, candidate_id=incumbent_id)
        canary = ServedModel.load(candidate_runs(store, candidate_id), settings.backend, candidate_id=candidate_id)
        world = world_of_run(champion.runs[0])
        if world is None:
            raise ValueError(f"{champion.runs[0]} was not trained on simulator logs: a rollout needs the simulated world")
        folder = Path(out) / f"rollout-{rollout_id}"
        folder.mkdir(parents=True, exist_ok=True)
        with store.transaction() as tx:
            done = [s.step for s in tx.rollout_steps(rollout_id)]
            details = {"rollout": rollout_id, "share": settings.share}
            deployment = tx.add_deployment(str(canary.runs[0]), settings.backend, candidate_id=candidate_id,
                                           endpoint="canary", details=details)  # fmt: skip
        spec = champion.encoder.spec
        user_field = spec.group_key or "user_id"
        router = Router(champion=champion, canary=canary, share=settings.share, route_field=user_field)
        canary_users = in_canary(np.arange(world.n_users) + 1, settings.share)  # logs and requests number users from 1
        env = Environment(world, seed=settings.seed, rate_scale=settings.rate_scale)
        days: list[dict[str, np.ndarray]] = []
        latencies: list[float] = []
        errors = requests = 0
        for step in done:  # what was recorded before a kill
            saved = np.load(folder / f"step-{step}.npz")
            days.append({m: saved[m] for m in METRICS})
            latencies += saved["latency_ms"].tolist()
            errors, requests = errors + int(saved["errors"]), requests + int(saved["requests"])
        status, reason, new_steps = "running", "", 0
        with running(create_app(router)) as url:
            for step in range(len(done), settings.days):
                if stop_after is not None and new_steps >= stop_after:
                    break
                policy = HttpPolicy(url, champion.fields, list(spec.request_fields),
                                    request_column=spec.request_key, concurrency=settings.concurrency)  # fmt: skip
                day_batch = env.requests(step)
                arm, _ = env.serve(policy, day_offset=step, name=f"day-{step}", batch=day_batch)
                # the arm the service used for each row must be the one the users' hash gives
                expected = np.where(canary_users[day_batch.user], "canary", "champion")
                served = policy.row_arm
                routed_ok = served is not None and bool(np.all((served == expected) | (served == "error")))
                day = {m: arm.per_user[m] for m in METRICS}
                payload = {**day, "latency_ms": np.asarray(policy.latencies_ms), "errors": policy.errors,
                           "requests": len(policy.arms)}  # fmt: skip
                atomic_save(folder / f"step-{step}.npz", lambda handle, p=payload: np.savez(handle, **p))
                days.append(day)
                latencies += policy.latencies_ms
                errors, requests = errors + policy.errors, requests + len(policy.arms)
                readings = _guardrails(settings, days, canary_users, latencies, errors, requests)
                readings["routing_consistent"] = routed_ok
                verdict, why = _verdict(settings, readings, last=step == settings.days - 1)
                with store.transaction() as tx:
                    tx.record_rollout_step(rollout_id, step, share=settings.share, metrics=readings, verdict=verdict,
                                           reason=why)  # fmt: skip
                new_steps += 1
                if on_step is not None:
                    on_step(step, verdict, readings)
                if verdict != "continue":
                    status, reason = ("promoted" if verdict == "promote" else "rolled_back"), why
                    break
        with store.transaction() as tx:
            tx.end_deployment(deployment.id, "retired" if status != "rolled_back" else "rolled_back")
            if status != "running":
                tx.finish_rollout(rollout_id, status, reason)
                last = tx.rollout_steps(rollout_id)[-1]
                tx.record_decision(candidate_id, "guardrails", status == "promoted", reason,
                                   {"rollout": rollout_id, "readings": last.metrics})  # fmt: skip
                if status == "promoted":
                    candidate = tx.get(CandidateRow, candidate_id)
                    tx.promote(intent_id, candidate_id, candidate.round, {"rollout": rollout_id, **{
                        m: last.metrics[m]["lift"] for m in settings.guard_metrics}})  # fmt: skip
            steps = [{"step": s.step, "verdict": s.verdict, "reason": s.reason, "metrics": s.metrics}
                     for s in tx.rollout_steps(rollout_id)]  # fmt: skip
            final = tx.get(Rollout, rollout_id)
        return RolloutResult(rollout_id, final.status, final.reason, steps)
    finally:
        store.close()

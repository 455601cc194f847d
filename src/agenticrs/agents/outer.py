"""The outer reward: a champion plays a simulated online A/B test against the previous champion.

The inner reward of a change is its offline gain (EnsNAS on the valid split); the outer reward is
what it does to users. Before a change is committed, the candidate's members (served as the
average of their click probabilities, `ensemble_policy`) and the incumbent's are served the same
days of the simulator's `Environment` in the world their runs were trained on (`world_of_run`),
with common random numbers (`crn="full"`: the same requests, candidate pools and outcome draws,
paired by user). The verdict is read on per-user clicks, purchases and GMV (`relative_lift`, the
delta-method interval of `Environment.ab_test`): the test **passes** unless some metric of
`settings.metrics` is significantly worse, i.e. the upper end of its interval is below
`-max_loss`. It is a fixed-horizon test (all `days` are served; no peeking, no early stop).

The test is resumable: each simulated day is one step whose per-user outcomes of both arms are
saved to `OUT/outer-<id>/day-<d>.npz` (atomically) before its `OuterTestDay` row is written, so a
killed test resumes after its last recorded day without serving it again, and reaches exactly the
result of an uninterrupted one (the outcome draws depend on (seed, day, arm) only). Calling
`run_outer_test` again for the same (candidate, incumbent, settings) resumes a running test, or
returns a finished one, and never starts a duplicate. The coordinator records the decision; this
module writes only `OuterTest` and `OuterTestDay` rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import CandidateRow, OuterTest
from agenticrs.runtime.files import atomic_save
from agenticrs.sim.environment import METRICS, ArmResult, Environment, Policy, RequestBatch, compare_arms, sum_days
from agenticrs.train.policy import RunPolicy, sim_config_of_run, world_of_run

ARMS = ("incumbent", "candidate")  # arm A is the incumbent (the baseline), arm B the candidate: lift = B / A - 1
LIFT_KEYS = ("lift", "ci_low", "ci_high", "p_value", "a_mean", "b_mean")


class OuterSettings(BaseModel):
    """How an outer A/B test is served and judged (stored with the test: a resume needs the same)."""

    model_config = ConfigDict(extra="forbid")

    days: int = Field(2, ge=1, le=60, description="simulated days served to both arms")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="two-sided level of the confidence intervals")
    metrics: list[str] = Field(default_factory=lambda: ["clicks", "purchases", "gmv"], min_length=1,
                               description="per-user metrics that must not show a significant loss")  # fmt: skip
    crn: Literal["full", "requests", "none"] = "full"
    seed: int = Field(0, description="the environment's seed: requests, pools and outcome draws")
    rate_scale: float = Field(1.0, gt=0, description="the simulator's traffic multiplier")
    max_loss: float = Field(0.0, ge=0, lt=1, description="tolerated relative loss: fail when ci_high < -max_loss")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"metrics: unknown {unknown}; choose from {list(METRICS)}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics: {metrics} names a metric twice")
        return metrics


@dataclass
class OuterResult:
    """An outer test as recorded: `lifts` maps each metric of the settings to the candidate's lift
    over the incumbent (lift, ci_low, ci_high, p_value, a_mean = incumbent, b_mean = candidate;
    None where undefined, e.g. no purchase in the incumbent arm). `days` is the number of days
    served; `status` is running (stopped early by `stop_after`), passed or failed."""

    test_id: int
    passed: bool
    reason: str
    lifts: dict[str, dict[str, float | None]]
    days: int
    status: str = "running"


class EnsemblePolicy:
    """A candidate served as its members' average click probability (as `serve.models.ServedModel`)."""

    def __init__(self, run_dirs: Sequence[str | Path], device: str = "cpu") -> None:
        if not run_dirs:
            raise ValueError("run_dirs is empty: an ensemble policy needs at least one member run")
        self.members = [RunPolicy(run, device=device) for run in run_dirs]
        self.name = "+".join(m.name for m in self.members)

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        return np.mean([member(batch) for member in self.members], axis=0)


def ensemble_policy(run_dirs: Sequence[str | Path], device: str = "cpu") -> Policy:
    """A policy of the simulator that averages the members' `RunPolicy` scores."""
    return EnsemblePolicy(run_dirs, device=device)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _readings(arm_a: ArmResult, arm_b: ArmResult, settings: OuterSettings) -> dict[str, dict[str, float | None]]:
    """The candidate's lift over the incumbent of each settings metric on the days so far."""
    comparisons = compare_arms(arm_a, arm_b, paired=settings.crn != "none", alpha=settings.alpha,
                               metrics=tuple(settings.metrics))  # fmt: skip
    return {m: {"lift": _finite(c.lift), "ci_low": _finite(c.ci_low), "ci_high": _finite(c.ci_high),
                "p_value": _finite(c.p_value), "a_mean": c.mean_a, "b_mean": c.mean_b}
            for m, c in comparisons.items()}  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _describe(metric: str, r: dict[str, float | None]) -> str:
    if r["lift"] is None:
        return f"{metric} not measurable (incumbent mean {r['a_mean']:.4g})"
    p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
    return f"{metric} {_pct(r['lift'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] (p={p})"


def _verdict(lifts: dict[str, dict[str, float | None]], settings: OuterSettings, days: int) -> tuple[bool, str]:
    """Passed unless some metric's lift is significantly below -max_loss; the reason names them all."""
    losses = [m for m, r in lifts.items() if r["ci_high"] is not None and r["ci_high"] < -settings.max_loss]
    if losses:
        return False, (f"significant loss over {days} days: " + "; ".join(_describe(m, lifts[m]) for m in losses)
                       + ("; others: " + "; ".join(_describe(m, r) for m, r in lifts.items() if m not in losses)
                          if len(losses) < len(lifts) else ""))  # fmt: skip
    loss = f" beyond {settings.max_loss:.1%}" if settings.max_loss > 0 else ""
    return True, f"no significant loss{loss} over {days} days: " + "; ".join(_describe(m, r) for m, r in lifts.items())


def _arm_totals(arm: ArmResult) -> dict[str, float]:
    return {**arm.totals, "impressions": arm.impressions, "requests": arm.requests, "users": len(arm.users)}


def _save_day(path: Path, arm_a: ArmResult, arm_b: ArmResult) -> None:
    payload: dict[str, Any] = {}
    for prefix, arm in (("a", arm_a), ("b", arm_b)):
        payload[f"{prefix}_users"] = arm.users
        payload[f"{prefix}_counts"] = np.array([arm.impressions, arm.requests], np.int64)
        payload.update({f"{prefix}_{m}": arm.per_user[m] for m in METRICS})
    atomic_save(path, lambda handle: np.savez(handle, **payload))


def _load_day(path: Path, day: int) -> tuple[ArmResult, ArmResult]:
    if not path.is_file():
        raise FileNotFoundError(f"day {day} of the outer test is recorded but its outcomes {path} are missing: "
                                "resume with the same `out` folder")  # fmt: skip
    with np.load(path) as saved:
        arms = []
        for prefix, name in (("a", ARMS[0]), ("b", ARMS[1])):
            impressions, requests = (int(v) for v in saved[f"{prefix}_counts"])
            arms.append(ArmResult(name, saved[f"{prefix}_users"], {m: saved[f"{prefix}_{m}"] for m in METRICS},
                                  impressions, requests))  # fmt: skip
    return arms[0], arms[1]


def _check_runs(candidate_runs: Sequence[Path], incumbent_runs: Sequence[Path]) -> None:
    """Every run of both arms was trained on simulator logs of one world (else the test means nothing)."""
    configs = []
    for arm, runs in (("candidate_runs", candidate_runs), ("incumbent_runs", incumbent_runs)):
        if not runs:
            raise ValueError(f"{arm} is empty: each arm of an outer test needs at least one member run")
        for run in runs:
            config = sim_config_of_run(run)
            if config is None:
                raise ValueError(f"{arm}: {run} was not trained on simulator logs (no meta.json next to its training "
                                 "files): an outer A/B test needs the simulated world the runs were trained in")  # fmt: skip
            configs.append((run, config))
    first_run, first = configs[0]
    for run, config in configs[1:]:
        if config != first:
            raise ValueError(f"{run} was trained on another simulated world than {first_run}: both arms of an outer "
                             "test must be served the same world")  # fmt: skip


def _find_or_start(store: KnowledgeStore, candidate_id: int, incumbent_id: int, settings: OuterSettings,
                   intent_id: int | None, runs: dict[str, list[str]]) -> tuple[int, str]:  # fmt: skip
    """(test id, status): the test of the same (candidate, incumbent, settings) if there is one
    (the latest), else a new running one. A test is resumed (or returned) only for the member runs
    it started with (recorded in its result), so its days are all of the same two arms."""
    wanted = settings.model_dump(mode="json")
    with store.transaction() as tx:
        candidate = tx.get(CandidateRow, candidate_id)  # KeyError naming the table when it does not exist
        tx.get(CandidateRow, incumbent_id)
        if candidate_id == incumbent_id:
            raise ValueError(f"candidate_id and incumbent_id are both {candidate_id}: an outer test needs two candidates")
        same = [t for t in tx.outer_tests(candidate_id=candidate_id)
                if t.incumbent_id == incumbent_id and t.settings == wanted]  # fmt: skip
        if same:
            row = same[-1]
            started = (row.result or {}).get("runs")
            if started is not None and started != runs:
                raise ValueError(f"outer test {row.id} of the same candidate, incumbent and settings was started with the "
                                 f"member runs {started}; got {runs}: resume it with those")  # fmt: skip
            return row.id, row.status
        intent = intent_id if intent_id is not None else candidate.intent_id
        row = tx.start_outer_test(candidate_id, incumbent_id, intent_id=intent, settings=wanted, result={"runs": runs})
        return row.id, row.status


def _recorded(store: KnowledgeStore, test_id: int) -> OuterResult:
    with store.transaction() as tx:
        row = tx.get(OuterTest, test_id)
        result = dict(row.result)
        return OuterResult(row.id, row.status == "passed", row.reason, result.get("lifts", {}), int(result.get("days", 0)),
                           row.status)  # fmt: skip


def run_outer_test(store: KnowledgeStore, candidate_id: int, incumbent_id: int, candidate_runs: list[Path],
                   incumbent_runs: list[Path], settings: OuterSettings, out: Path, intent_id: int | None = None,
                   stop_after: int | None = None) -> OuterResult:  # fmt: skip
    """A/B-test the candidate (arm B) against the incumbent (arm A) for `settings.days` simulated
    days, one recorded day per step. `stop_after` ends this call's work after that many new days
    (the test stays running; a later call resumes it). Returns the recorded result."""
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0; got {stop_after}")
    candidate_runs, incumbent_runs = [Path(r) for r in candidate_runs], [Path(r) for r in incumbent_runs]
    _check_runs(candidate_runs, incumbent_runs)
    runs = {ARMS[0]: [str(r.resolve()) for r in incumbent_runs], ARMS[1]: [str(r.resolve()) for r in candidate_runs]}
    test_id, status = _find_or_start(store, candidate_id, incumbent_id, settings, intent_id, runs)
    if status != "running":
        return _recorded(store, test_id)
    folder = Path(out).resolve() / f"outer-{test_id}"  # the rows name absolute paths: a resume may run elsewhere
    with store.transaction() as tx:
        done = [(d.day, Path(d.path) if d.path else folder / f"day-{d.day}.npz") for d in tx.outer_days(test_id)]
    if [d for d, _ in done] != list(range(len(done))):
        raise ValueError(f"outer test {test_id} has recorded days {[d for d, _ in done]}; expected 0, 1, ... in order")
    per_day = [_load_day(path, day) for day, path in done]  # what was recorded before a kill
    served = 0
    if len(per_day) < settings.days and (stop_after is None or stop_after > 0):
        world = world_of_run(incumbent_runs[0])
        assert world is not None  # checked by _check_runs
        env = Environment(world, seed=settings.seed, rate_scale=settings.rate_scale)
        incumbent, candidate = ensemble_policy(incumbent_runs), ensemble_policy(candidate_runs)
        folder.mkdir(parents=True, exist_ok=True)
        for day in range(len(per_day), settings.days):
            if stop_after is not None and served >= stop_after:
                break
            arm_a, arm_b = env.ab_day(incumbent, candidate, day, crn=settings.crn, names=ARMS)
            path = folder / f"day-{day}.npz"
            _save_day(path, arm_a, arm_b)  # the outcomes first: a row always has its file
            per_day.append((arm_a, arm_b))
            so_far = _readings(sum_days([a for a, _ in per_day]), sum_days([b for _, b in per_day]), settings)
            totals = {ARMS[0]: _arm_totals(arm_a), ARMS[1]: _arm_totals(arm_b), "lifts": so_far}
            with store.transaction() as tx:
                tx.record_outer_day(test_id, day, path=str(path), metrics=totals)
            served += 1
    if not per_day:
        return OuterResult(test_id, False, f"running: 0 of {settings.days} days served", {}, 0, "running")
    lifts = _readings(sum_days([a for a, _ in per_day]), sum_days([b for _, b in per_day]), settings)
    if len(per_day) < settings.days:
        return OuterResult(test_id, False, f"running: {len(per_day)} of {settings.days} days served", lifts,
                           len(per_day), "running")  # fmt: skip
    passed, reason = _verdict(lifts, settings, len(per_day))
    result = {"lifts": lifts, "days": len(per_day), "metrics": list(settings.metrics), "runs": runs}
    with store.transaction() as tx:
        tx.finish_outer_test(test_id, "passed" if passed else "failed", reason, result)
    return _recorded(store, test_id)

"""Reproduce a method card: train its arms over its seeds and data sets, decide whether the claim holds.

Why this shape: a paper's claim is only as good as the comparison behind it, so a reproduction
trains the method and every baseline through the one training path (`train.workflow.train_run`,
the engine the README's benchmarks use) on the data set's canonical split (the incumbent's), with
the same seeds for every arm, the card's protocol (one step budget, cadence and patience for all)
and each arm's settings from the card. The verdict is the paired comparison on the test split
(`verdict.paired_effect`).

Everything goes to the knowledge layer as it happens: the reproduction (card, options), one
`reproduction_runs` row per (data set, arm, seed) with its config, metrics and run directory,
the verdicts, and lessons for what failed (a data set that is absent, a training that raised)
and for claims that did not hold. A reproduction is keyed by the card's hash and its options, so
running it again resumes: finished runs are read back, never retrained; a run that was in
progress when the process died is redone (a sequential run, hours on Amazon, continues from its
last checkpoint in its own folder, `RUNS/<card>-<arm>-<dataset>-seed<S>-<job digest>`).

Where the runs train is an executor's business (`agents/executor.py`, the one the coordinator
uses): `local` trains one run at a time in this process, `ray` trains them as Ray tasks side by
side up to the cluster's capacity. Either way this process alone writes the knowledge layer, and
it records each run's result in the order the local executor would (the plan's order), so a
reproduction stopped midway resumes the same way wherever it trained.

A composition of building blocks (`Arm.compose`) trains as the zoo model `composed` through the
same path; its records keep the arm's own name. A generated model (`Arm.code`, an LLM-drafted
module) never trains in this process: its arm
goes through the sandbox (`agents/paper/sandbox.py`), which runs the model contract first.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agenticrs.agents.knowledge.store import KnowledgeStore
from agenticrs.agents.paper.card import Arm, CardError, MethodCard, Trial
from agenticrs.agents.paper.verdict import paired_effect

if TYPE_CHECKING:
    from agenticrs.agents.executor import ExecutorFactory

TEST_METRICS = ["auc", "logloss"]  # what the README's tables report, on the test split


class ReproduceOptions(BaseModel):
    """What a reproduction runs beyond the card (part of its key, so a change is a new reproduction)."""

    model_config = ConfigDict(extra="forbid")

    seeds: int | None = Field(default=None, ge=1, description="the card's first N seeds (default: all)")
    step_budget: int | None = Field(default=None, ge=1, description="replace every protocol's step budget")
    datasets: list[str] | None = Field(
        default=None, description="run these data sets only; one the card lacks runs under `protocol_of`'s protocol"
    )
    protocol_of: str | None = Field(default=None, description="the card data set whose protocol a new data set uses")
    level: float = Field(default=0.95, gt=0.0, lt=1.0, description="confidence level of the paired interval")

    def key(self, card: MethodCard) -> str:
        text = json.dumps({"card": card.protocol_hash(), "options": self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ArmResult:
    """What one trained arm gives the comparison (test metrics) and the record (the rest)."""

    metrics: dict[str, Any]
    run_path: str | None = None  # the run directory (its config.yaml is the effective config)
    cost_s: float | None = None  # the training's seconds, measured where it ran (`run_arm_job`)

    @property
    def run_dir(self) -> Path | None:
        """The run folder (an executor carries its files back from another machine)."""
        return Path(self.run_path) if self.run_path else None


# (card, trial, arm, seed, runs_dir, cache_dir) -> ArmResult; raising means the run failed
TrainArm = Callable[[MethodCard, Trial, Arm, int, Path, Path | None], ArmResult]


@dataclass(frozen=True)
class ArmJob:
    """One run of a reproduction, as an executor's job (everything a worker needs)."""

    card: MethodCard
    trial: Trial
    arm: Arm
    seed: int
    runs_dir: Path
    cache_dir: Path | None

    @property
    def label(self) -> str:
        return f"{self.card.name} {self.arm.name} on {self.trial.dataset} seed {self.seed}"


@dataclass(frozen=True)
class ArmTraining:
    """What every run of a reproduction shares: the executor's context (put in Ray's object store
    once). `device`: the runs' device setting, which makes the Ray executor ask for a GPU."""

    train: TrainArm
    device: str = "cpu"


def run_arm_job(context: ArmTraining, job: ArmJob) -> ArmResult:
    """An executor's `train_fn` for reproductions: train the arm, timed where it trains."""
    started = time.perf_counter()
    outcome = context.train(job.card, job.trial, job.arm, job.seed, job.runs_dir, job.cache_dir)
    outcome.cost_s = time.perf_counter() - started
    return outcome


def runs_device(card: MethodCard, trials: list[Trial]) -> str:
    """`cuda` when any arm of the trials trains on (or may pick) a GPU, else `cpu`."""
    devices = {str(card.train_settings(t, card.arm(a.name, t)).get("device", "cpu"))
               for t in trials for a in card.trial_arms(t)}  # fmt: skip
    return "cuda" if devices & {"cuda", "auto"} else "cpu"


def run_config(card: MethodCard, trial: Trial, arm: Arm, seed: int) -> dict[str, Any]:
    """The run config (as data) of one arm and seed under the trial's protocol."""
    train = {**card.train_settings(trial, arm), "seed": seed}
    config = {"dataset": trial.dataset, "model": arm.model_name, "model_params": arm.model_params(), "train": train,
              "name": f"{card.name}-{arm.name}-{trial.dataset}-seed{seed}"}  # fmt: skip
    if arm.tokenizer:
        config["tokenizer"] = dict(arm.tokenizer)
    return config


def shared_config(card: MethodCard, trial: Trial, arm: Arm, seed: int) -> dict[str, Any]:
    """The run config without its name: what makes two cards' runs the same run (the incumbent
    DeepFM of every card on Frappe trains once; the others read its row back)."""
    config = run_config(card, trial, arm, seed)
    config.pop("name")
    if arm.code is not None:  # the module's content, not its path, makes it the same run
        config["code_sha256"] = hashlib.sha256(Path(arm.code).read_bytes()).hexdigest()
    return config


_DATA_CACHE: dict[tuple[str, str], Any] = {}


def _data(dataset: str, cache_dir: Path | None) -> Any:
    """The processed data set, loaded once per process (every arm and seed shares it)."""
    from agenticrs.train.workflow import load_data

    key = (dataset, str(cache_dir))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one data set in memory at a time
        _DATA_CACHE[key] = load_data(dataset, cache_dir)
    return _DATA_CACHE[key]


def train_arm(card: MethodCard, trial: Trial, arm: Arm, seed: int, runs_dir: Path, cache_dir: Path | None) -> ArmResult:
    """Train one arm with one seed through the one training path of the card's task; its test metrics."""
    return TASK_TRAINERS[card.task](card, trial, arm, seed, runs_dir, cache_dir)


def train_ctr_arm(card: MethodCard, trial: Trial, arm: Arm, seed: int, runs_dir: Path, cache_dir: Path | None) -> ArmResult:
    """A CTR (or multi-task) model through `train_run`: test AUC and logloss of its first label, and
    every test metric the engine computed (a multi-task model's per-task and funnel metrics)."""
    raw = run_config(card, trial, arm, seed)
    if arm.code is not None:
        from agenticrs.agents.paper.sandbox import train_generated

        return train_generated(arm, raw, runs_dir, cache_dir)
    from agenticrs.train.config import RunConfig
    from agenticrs.train.ctr import evaluate
    from agenticrs.train.workflow import train_run

    config = RunConfig.model_validate(raw)
    data = _data(trial.dataset, cache_dir)
    trained = train_run(config, runs_dir, cache_dir, data=data)
    result = trained.result
    metrics: dict[str, Any] = dict(result.test or {})
    if len(getattr(trained.model, "output_labels", None) or ()) <= 1:  # a multi-task model's are the engine's
        test = data.splits.get("test") or data.splits["valid"]  # means over its tasks (result.test)
        single, _ = evaluate(trained.model, test, TEST_METRICS, config.train.eval_batch_size)
        metrics.update(single)
    _require(metrics, card.claim.metric, arm)
    metrics.update({"valid_auc": result.valid.get("auc"), "stopped_by": result.stopped_by, "steps": result.steps,
                    "best_step": result.best_step})  # fmt: skip
    return ArmResult(metrics=metrics, run_path=str(trained.run.folder))


def _require(metrics: dict[str, Any], name: str, arm: Arm) -> None:
    if metrics.get(name) is None:
        raise ValueError(f"the run of {arm.name} reports no test '{name}' (it reports {', '.join(sorted(metrics))}); "
                         f"add it to the arm's train.metrics (a funnel metric also needs train.conversion_labels)")  # fmt: skip


def train_sequential_arm(card: MethodCard, trial: Trial, arm: Arm, seed: int, runs_dir: Path,
                         cache_dir: Path | None) -> ArmResult:  # fmt: skip
    """A next-item model through the sequential job (the one engine, leave-one-out, full ranking):
    its test Recall@K / NDCG@K at the best validation step. A model that decodes semantic IDs builds
    them as the arm's tokenizer says (`collaborative_run`: the item table of another arm's run)."""
    from agenticrs.data.cache import default_cache_root
    from agenticrs.gr.sequences import resolve_sequences
    from agenticrs.gr.workflow import SequentialJob, job_digest, run_or_resume_sequential_job

    raw = run_config(card, trial, arm, seed)
    job = SequentialJob.model_validate(raw)
    cache = cache_dir or default_cache_root()
    key = ("sequences", trial.dataset, str(cache))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = resolve_sequences(trial.dataset, cache)
    # one folder per job (its name and digest): a reproduction killed mid-run continues this run
    # from its checkpoint instead of starting it again
    folder = Path(runs_dir) / f"{job.name}-{job_digest(job)}"
    folder, result = run_or_resume_sequential_job(job, folder, cache, data=_DATA_CACHE[key])
    return ArmResult(metrics=_sequential_metrics(card, arm, job, result), run_path=str(folder))


def _sequential_metrics(card: MethodCard, arm: Arm, job: Any, result: Any) -> dict[str, Any]:
    """A sequential run's record: its test metrics, the validation monitor and what stopped it."""
    metrics: dict[str, Any] = {k: float(v) for k, v in (result.test or {}).items()}
    _require(metrics, card.claim.metric, arm)
    monitor = job.train.monitor
    metrics.update({f"valid_{monitor}": result.valid.get(monitor), "stopped_by": result.stopped_by,
                    "steps": result.steps, "best_step": result.best_step})  # fmt: skip
    return metrics


def adopt_finished_run(card: MethodCard, trial: Trial, arm: Arm, seed: int,
                       paths: dict[tuple[str, str, int], str | None], folders: list[Path]) -> ArmResult | None:  # fmt: skip
    """A run that already finished outside the reproduction with exactly this arm's job (e.g. one
    of `bench/gr_benchmark.py`'s run folders), read back instead of retrained; None when there is
    none. Sequential arms only (their job.yaml states the whole job); the run name does not count,
    and an arm whose IDs come from another arm's run matches only a run built on that arm's run."""
    if card.task != "sequential" or arm.code is not None or not folders:
        return None
    from agenticrs.gr.workflow import SequentialJob, find_finished_run, with_train_defaults

    try:
        resolved = _with_source_run(arm, trial, seed, paths)
    except ValueError:  # its source arm's run did not finish: nothing to match
        return None
    job = with_train_defaults(SequentialJob.model_validate(run_config(card, trial, resolved, seed)))
    found = find_finished_run(job, folders)
    if found is None:
        return None
    folder, result = found
    metrics = {**_sequential_metrics(card, arm, job, result), "adopted_run": str(folder)}
    return ArmResult(metrics=metrics, run_path=str(folder), cost_s=result.train_seconds)


def train_streaming_arm(card: MethodCard, trial: Trial, arm: Arm, seed: int, runs_dir: Path,
                        cache_dir: Path | None) -> ArmResult:  # fmt: skip
    """A delayed-feedback method over the simulator's click stream (`run_stream`): its metrics over
    the stream's windows, weighted by clicks. The seed is the world's and the training's, as
    `bench/cvr_benchmark.py` does; the click log is built once per (data set, seed)."""
    from agenticrs.train.run import Run
    from agenticrs.train.streaming import StreamConfig, load_clicks, run_stream
    from agenticrs.train.streaming.protocol import stream_train_defaults

    params = dict(arm.params)
    source = {"source": trial.dataset, "sim_seed": seed, **params.pop("input", {})}
    train = stream_train_defaults().model_dump(mode="json") | card.train_settings(trial, arm) | {"seed": seed}
    config = StreamConfig.model_validate({"input": source, "method": arm.model_name, **params, "train": train})
    key = ("clicks", json.dumps(config.input.model_dump(mode="json"), sort_keys=True), config.pretrain_days)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_clicks(config.input, config.pretrain_days)
    run = Run.create(runs_dir, f"{card.name}-{arm.name}-{trial.dataset}-seed{seed}")
    summary = run_stream(config, folder=run.folder, log=_DATA_CACHE[key])
    metrics: dict[str, Any] = dict(summary["overall"])
    metrics.update({"stopped_by": summary["stopped_by"], "windows": summary["windows"],
                    "extra_samples": summary["samples"]["extra_samples"]})  # fmt: skip
    return ArmResult(metrics=metrics, run_path=str(run.folder))


def train_multi_objective_arm(card: MethodCard, trial: Trial, arm: Arm, seed: int, runs_dir: Path,
                              cache_dir: Path | None) -> ArmResult:  # fmt: skip
    """A multi-objective retriever (`retrieval.cascade_train`: CSMF's stages or one engine run) on a
    simulator's impressions: its test set-recall / set-NDCG per objective and of the fusion."""
    from agenticrs.progress import SILENT
    from agenticrs.retrieval.cascade import resolve_cascade
    from agenticrs.retrieval.cascade_train import MultiObjectiveJob, train_by_name
    from agenticrs.train.run import Run

    job = MultiObjectiveJob.model_validate(run_config(card, trial, arm, seed))
    key = ("cascade", trial.dataset, str(cache_dir))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = resolve_cascade(trial.dataset, cache_dir)
    run = Run.create(runs_dir, job.name or arm.name)
    result = train_by_name(_DATA_CACHE[key], job.model, job.model_params, job.train, run.folder, SILENT, resume=False)
    metrics: dict[str, Any] = {k: float(v) for k, v in result.test.items()}
    _require(metrics, card.claim.metric, arm)
    metrics.update({f"valid_{card.claim.metric}": result.valid.get(card.claim.metric), "stopped_by": result.stopped_by,
                    "steps": result.steps})  # fmt: skip
    return ArmResult(metrics=metrics, run_path=str(run.folder))


# How each card task trains an arm (`MethodCard.task`).
TASK_TRAINERS: dict[str, TrainArm] = {
    "ctr": train_ctr_arm,
    "sequential": train_sequential_arm,
    "streaming": train_streaming_arm,
    "multi_objective_retrieval": train_multi_objective_arm,
}


def plan_trials(card: MethodCard, options: ReproduceOptions) -> list[Trial]:
    """The card's trials, restricted or extended by the options (budget replaced where asked)."""
    from agenticrs.agents.paper.card import TASKS

    known = TASKS[card.task].datasets()
    trials = list(card.datasets)
    if options.datasets:
        chosen = []
        template = card.trial(options.protocol_of) if options.protocol_of else card.datasets[0]
        for name in options.datasets:
            if any(t.dataset == name for t in card.datasets):
                chosen.append(card.trial(name))
            elif name in known:  # the card's claim checked on another data set, under a card protocol
                chosen.append(template.model_copy(update={"dataset": name, "expected": None}))
            else:
                raise CardError(f"unknown {card.task} data set '{name}'; known: {', '.join(known)}")
        trials = chosen
    if options.step_budget is not None:
        trials = [t.model_copy(update={"protocol": t.protocol.model_copy(update={"step_budget": options.step_budget})})
                  for t in trials]  # fmt: skip
    return trials


def _available(dataset: str, task: str = "ctr") -> str | None:
    """None when the data set can be read here, else why not."""
    from agenticrs.data.registry import DATASETS
    from agenticrs.gr.sequences import SEQUENCE_DATASETS

    entry = DATASETS[dataset] if task == "ctr" else SEQUENCE_DATASETS[dataset]
    if entry.available():
        return None
    return f"data set '{dataset}' is absent here (needs {entry.location() or entry.requires})"


@dataclass
class ReproductionResult:
    reproduction_id: int
    card: MethodCard
    verdicts: list[dict[str, Any]]
    trained: int  # runs trained by this call (0 when everything was already recorded)
    reused: int  # runs read back (from the knowledge layer, or adopted run folders)
    failed: int
    wall_s: float  # training seconds over every run of the reproduction (resumed ones included)
    lessons: list[str]


def _verdicts(card: MethodCard, trials: list[Trial], runs: dict[tuple[str, str, int], dict[str, Any]],
              seeds: list[int], level: float, skipped: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    claim = card.claim
    out = []
    for trial in trials:
        for baseline in card.trial_arms(trial)[1:]:
            row: dict[str, Any] = {
                "dataset": trial.dataset, "method": card.model.name, "baseline": baseline.name,
                "claim": baseline.name == claim.baseline, "metric": claim.metric, "expected": trial.expected,
                "reported_effect": claim.reported_effect, "reported_dataset": claim.reported_dataset,
            }  # fmt: skip
            if trial.dataset in skipped:
                out.append({**row, "verdict": "skipped", "reason": skipped[trial.dataset], "n": 0})
                continue
            arms = (card.model.name, baseline.name)
            paired = [s for s in seeds if all((trial.dataset, a, s) in runs for a in arms)]
            if not paired:
                out.append({**row, "verdict": "failed", "reason": "no seed finished for both arms", "n": 0})
                continue
            method = [runs[(trial.dataset, card.model.name, s)][claim.metric] for s in paired]
            base = [runs[(trial.dataset, baseline.name, s)][claim.metric] for s in paired]
            effect = paired_effect(method, base, claim.direction, claim.margin, level)
            row.update(effect.as_dict())
            row["seeds"] = paired
            row["agrees"] = None if trial.expected is None else effect.verdict == trial.expected
            out.append(row)
    return out


def _recorded_metrics(tx: Any, repro_id: int, dataset: str, arm: Arm, seed: int, role: str,
                      requested: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:  # fmt: skip
    """The metrics and run directory of this run if it finished before: in this reproduction
    (resume), or with the same config in another card's (the shared incumbent; recorded here as a
    copy). None: train it."""
    done = tx.reproduction_run(repro_id, dataset, arm.name, seed)
    if done is not None and done.status == "done":
        return dict(done.metrics), done.run_path
    same = None if arm.code else tx.finished_reproduction_run(dataset, arm.name, seed, requested)
    if same is None:
        return None
    metrics = {**same.metrics, "shared_from_reproduction": same.reproduction_id}
    row = tx.start_reproduction_run(repro_id, dataset, arm.name, seed, role=role, config=requested)
    tx.finish_reproduction_run(row.id, "done", metrics=metrics, run_path=same.run_path, cost_s=same.cost_s)
    return metrics, same.run_path


def arm_order(card: MethodCard, trial: Trial) -> list[tuple[str, Arm]]:
    """(role, arm with the trial's settings) in training order: the method, then the baselines
    that train on the trial's data set (`Trial.arms`), except that an arm whose semantic IDs come
    from another arm's run (`tokenizer.collaborative_arm`) trains after it."""
    order = [("method" if arm.name == card.model.name else "baseline", arm) for arm in card.trial_arms(trial)]
    for _role, arm in list(order):
        source = arm.tokenizer.get("collaborative_arm")
        if source is None:
            continue
        mine = next(i for i, (_, a) in enumerate(order) if a.name == arm.name)
        theirs = next(i for i, (_, a) in enumerate(order) if a.name == source)
        if theirs > mine:
            order.insert(theirs, order.pop(mine))
    return order


def _with_source_run(arm: Arm, trial: Trial, seed: int, paths: dict[tuple[str, str, int], str | None]) -> Arm:
    """The arm with `tokenizer.collaborative_arm` resolved to that arm's run directory (same seed)."""
    source = arm.tokenizer.get("collaborative_arm")
    if source is None:
        return arm
    path = paths.get((trial.dataset, source, seed))
    if path is None:
        raise ValueError(f"{arm.name} builds its semantic IDs on {source}'s item table, and {source}'s run of seed "
                         f"{seed} on {trial.dataset} did not finish")  # fmt: skip
    tokenizer = {k: v for k, v in arm.tokenizer.items() if k != "collaborative_arm"}
    return arm.model_copy(update={"tokenizer": {**tokenizer, "source": "collaborative", "collaborative_run": path}})


def reproduce(
    card: MethodCard,
    store: KnowledgeStore,
    runs_dir: str | Path = "runs",
    cache_dir: str | Path | None = None,
    options: ReproduceOptions | None = None,
    trainer: TrainArm = train_arm,
    on_event: Callable[[str], None] = lambda _text: None,
    executor: ExecutorFactory | None = None,
    adopt_runs: list[str | Path] | None = None,
) -> ReproductionResult:
    """Run (or resume) the card's protocol and record everything; returns the verdicts.

    `executor`: where the runs train, made from (`ArmTraining`, `run_arm_job`), e.g.
    `executor_factory("ray")`; default: one at a time in this process. A Ray executor keeps up to
    its capacity of runs in flight; their results are recorded here in the plan's order.
    `adopt_runs`: folders of finished runs (and folders of such folders) to read back instead of
    training when a run's job is exactly the one an arm asks for (`adopt_finished_run`); not part of
    the reproduction's key, since an adopted run is the same run."""
    from agenticrs.agents.executor import LocalExecutor

    options = options or ReproduceOptions()
    adopt = [Path(folder) for folder in adopt_runs or []]
    for folder in adopt:
        if not folder.is_dir():
            raise FileNotFoundError(f"adopt_runs: {folder} is not a folder of finished runs")
    trials = plan_trials(card, options)
    seeds = card.seeds[: options.seeds] if options.seeds else list(card.seeds)
    runs_dir = Path(runs_dir) / "reproduce" / card.name
    cache = Path(cache_dir) if cache_dir is not None else None
    with store.transaction() as tx:
        repro, created = tx.reproduction(
            options.key(card), card_name=card.name, card_hash=card.content_hash(), card=card.model_dump(mode="json"),
            options=options.model_dump(mode="json"),
        )  # fmt: skip
        repro_id, was_finished = repro.id, repro.status == "finished"
        if not created:  # the claim or the expectation may have been edited: the record shows the card as run now
            repro.status, repro.card, repro.card_hash = "running", card.model_dump(mode="json"), card.content_hash()
    on_event(f"reproduction {repro_id} of card '{card.name}' ({'new' if created else 'resumed'})")
    if adopt and card.task != "sequential":
        on_event(f"  adopt_runs: only sequential runs are adopted; card '{card.name}' is a {card.task} card, its runs train")
    lessons: list[str] = []

    def lesson(text: str, scope: str = "reproduction") -> None:
        lessons.append(text)
        with store.transaction() as tx:
            tx.add_lesson(scope, text, reproduction_id=repro_id)

    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    paths: dict[tuple[str, str, int], str | None] = {}
    skipped: dict[str, str] = {}
    counts = {"trained": 0, "reused": 0, "failed": 0}
    # (run id, trial, arm, seed, submitted at, handle): in flight, recorded first in, first out
    pending: deque[tuple[int, Trial, Arm, int, float, Any]] = deque()

    def record_failure(run_id: int, trial: Trial, arm: Arm, seed: int, exc: Exception, cost: float) -> None:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
        with store.transaction() as tx:
            tx.finish_reproduction_run(run_id, "failed", error=message, cost_s=cost)
        lesson(f"card {card.name}: {arm.name} on {trial.dataset} (seed {seed}) failed: {message}")
        on_event(f"  {trial.dataset} {arm.name} seed {seed}: failed, {message}")
        counts["failed"] += 1

    def settle_oldest() -> None:
        """Wait for the oldest run in flight and record it (a failure is a lesson, not the end)."""
        run_id, trial, arm, seed, submitted, handle = pending.popleft()
        try:
            outcome = handle.result()
        except Exception as exc:  # a failed run is a recorded lesson, not the end of the reproduction
            record_failure(run_id, trial, arm, seed, exc, time.perf_counter() - submitted)
            return
        cost = outcome.cost_s if outcome.cost_s is not None else time.perf_counter() - submitted
        with store.transaction() as tx:
            tx.finish_reproduction_run(run_id, "done", metrics=outcome.metrics, run_path=outcome.run_path, cost_s=cost)
        results[(trial.dataset, arm.name, seed)] = outcome.metrics
        paths[(trial.dataset, arm.name, seed)] = outcome.run_path
        counts["trained"] += 1
        shown = card.claim.metric
        on_event(f"  {trial.dataset} {arm.name} seed {seed}: {shown} {outcome.metrics.get(shown, float('nan')):.4f} "
                 f"({cost:.1f} s, stopped by {outcome.metrics.get('stopped_by', '?')})")  # fmt: skip

    make = executor or LocalExecutor
    runner = make(ArmTraining(trainer, runs_device(card, trials)), run_arm_job)
    try:
        capacity = max(1, runner.capacity())
        for trial in trials:
            reason = _available(trial.dataset, card.task)
            if reason is not None:
                while pending:  # lessons in the local order
                    settle_oldest()
                skipped[trial.dataset] = reason
                on_event(f"  {trial.dataset}: skipped, {reason}")
                if not was_finished:
                    lesson(f"card {card.name}: {reason}; its trial was skipped")
                continue
            for seed in seeds:  # seed by seed, every arm: a reproduction stopped midway has whole pairs
                for role, arm in arm_order(card, trial):
                    requested = shared_config(card, trial, arm, seed)
                    run_key = (trial.dataset, arm.name, seed)
                    with store.transaction() as tx:
                        recorded = _recorded_metrics(tx, repro_id, trial.dataset, arm, seed, role, requested)
                    if recorded is not None:
                        results[run_key], paths[run_key] = recorded
                        counts["reused"] += 1
                        continue
                    if arm.tokenizer.get("collaborative_arm"):
                        while pending:  # it reads another arm's finished run of this seed
                            settle_oldest()
                    adopted = adopt_finished_run(card, trial, arm, seed, paths, adopt)
                    with store.transaction() as tx:
                        run_id = tx.start_reproduction_run(repro_id, trial.dataset, arm.name, seed, role=role,
                                                           config=requested).id  # fmt: skip
                        if adopted is not None:
                            tx.finish_reproduction_run(run_id, "done", metrics=adopted.metrics,
                                                       run_path=adopted.run_path, cost_s=adopted.cost_s)  # fmt: skip
                    if adopted is not None:
                        results[run_key], paths[run_key] = adopted.metrics, adopted.run_path
                        counts["reused"] += 1
                        on_event(f"  {trial.dataset} {arm.name} seed {seed}: adopted the finished run {adopted.run_path}")
                        continue
                    started = time.perf_counter()
                    try:
                        job = ArmJob(card, trial, _with_source_run(arm, trial, seed, paths), seed, runs_dir, cache)
                    except Exception as exc:  # its source run failed: a recorded lesson, as a failed training
                        record_failure(run_id, trial, arm, seed, exc, time.perf_counter() - started)
                        continue
                    pending.append((run_id, trial, arm, seed, started, runner.submit(job)))
                    while len(pending) >= capacity:
                        settle_oldest()
        while pending:
            settle_oldest()
    finally:
        for *_, handle in pending:  # stopped by an exception: nothing more to wait for
            handle.cancel()
        runner.close()
    trained, reused, failed = counts["trained"], counts["reused"], counts["failed"]
    verdicts = _verdicts(card, trials, results, seeds, options.level, skipped)
    with store.transaction() as tx:
        wall = sum(r.cost_s or 0.0 for r in tx.reproduction_runs(repro_id) if r.status == "done")
        status = "finished" if failed == 0 else "failed"
        tx.finish_reproduction(repro_id, status, verdicts, wall)
    if not was_finished:
        for v in verdicts:
            if v["claim"] and v["verdict"] in ("not shown", "contradicted"):
                seeds_text = f"{v['n']} seed{'s' if v['n'] != 1 else ''}"
                lesson(f"card {card.name}: the claim '{card.claim.statement}' is {v['verdict']} on {v['dataset']} "
                       f"against {v['baseline']} (effect {v['mean']:+.4f}, {seeds_text})")
    return ReproductionResult(repro_id, card, verdicts, trained, reused, failed, wall, lessons)

"""The Python API: what the CLI does, as functions that take and return Python objects.

Every function here is a thin, typed entry point over the same layers the CLI uses (one data
pipeline, one training engine, one run-directory format, one knowledge store), so a run trained
from Python is evaluated, scored or served by the CLI and the other way round. Import it as
`from agenticrs import api` (it is not re-exported at the top level, where `agenticrs.train` and
`agenticrs.models` are the packages of those layers). The examples in the docstrings run in CI.

    >>> from agenticrs import api
    >>> run = api.train("sim-tiny", "deepfm", train={"max_steps": 20}, seed=1)
    >>> run.stopped_by, run.steps
    ('step budget', 20)
    >>> api.evaluate(run) == run.test
    True

`docs/quickstart.md` walks through all of them; its code runs in CI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agenticrs.agents.knowledge.store import DEFAULT_DB
from agenticrs.config import deep_merge
from agenticrs.progress import SILENT, Reporter

if TYPE_CHECKING:
    from agenticrs.agents.coordinator import EvolveSummary
    from agenticrs.agents.knowledge import KnowledgeStore
    from agenticrs.features.pipeline import ProcessedDataset
    from agenticrs.sim.environment import ABResult
    from agenticrs.sim.world import World

__all__ = [
    "TrainedModel",
    "Simulation",
    "models",
    "datasets",
    "load_dataset",
    "train",
    "evaluate",
    "score",
    "recommend",
    "simulate",
    "ab_test",
    "evolve",
    "history",
    "knowledge",
]



def _reporter(progress: bool) -> Reporter:
    if not progress:
        return SILENT
    from agenticrs.progress import RichReporter

    return RichReporter()


@dataclass
class TrainedModel:
    """What `train` returns: the run directory (the handle every other function takes), the
    metrics at the best validation checkpoint, what stopped training, and the trained module."""

    run_dir: Path
    task: str  # "ctr" or "sequential"
    valid: dict[str, float]
    test: dict[str, float] | None
    stopped_by: str
    best_step: int
    steps: int
    model: Any = field(repr=False)

    def __fspath__(self) -> str:  # a TrainedModel can be passed wherever a run directory is expected
        return str(self.run_dir)


@dataclass
class Simulation:
    """A simulated world's logs: the folder, one dataset-spec YAML per task (`ctr`,
    `cvr_delayed`, `sequential`, `multi_scenario`) and the generator's metadata (row counts,
    positive rates and the oracle's AUC per split)."""

    folder: Path
    specs: dict[str, Path]
    meta: dict[str, Any]

    def __getitem__(self, task: str) -> str:
        """The spec path of a task, ready for `train(sim["ctr"], ...)`."""
        if task not in self.specs:
            raise KeyError(f"no task '{task}' in this simulation (tasks: {', '.join(self.specs)})")
        return str(self.specs[task])


def models(task: str | None = None) -> list[str]:
    """Registered model names of one task (`"ctr"`, `"sequential"`, `"multitask"`) or of every task."""
    from agenticrs.models.base import list_models

    return list_models(task)


def datasets() -> dict[str, bool]:
    """Registered data set names and whether each is available here (public data sets need
    `$AGENTICRS_DATA_DIR` or a `shared/data` folder; simulated ones are generated on first use)."""
    from agenticrs.data.registry import DATASETS
    from agenticrs.gr.sequences import SEQUENCE_DATASETS

    found = {name: entry.available() for name, entry in DATASETS.items()}
    found.update({name: entry.available() for name, entry in SEQUENCE_DATASETS.items()})
    return found


def load_dataset(dataset: str | Path, cache_dir: str | Path | None = None, progress: bool = False) -> ProcessedDataset:
    """A CTR data set encoded and cached: `.splits["train"]` etc. hold memory-mapped arrays,
    `.schema` the feature schema models are built from, `.encoder` the fitted encoder."""
    from agenticrs.train.workflow import load_data

    return load_data(str(dataset), cache_dir, _reporter(progress))


def _is_sequential(model: str) -> bool:
    from agenticrs.models.base import list_models

    return model in list_models("sequential") or model in list_models("retrieval")  # retrieval: the sequential task


def train(
    dataset: str | Path,
    model: str,
    *,
    params: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    tokenizer: Mapping[str, Any] | None = None,
    features: Sequence[Mapping[str, Any]] | None = None,
    seed: int | None = None,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> TrainedModel:
    """Train `model` on `dataset` (a registered name or a dataset-spec YAML) and write a run
    directory. `params` are the model's hyper-parameters (`agenticrs models -v`), `train` the
    training settings (`TrainConfig`: `max_steps`, `epochs`, `learning_rate`, ...), `tokenizer`
    the semantic-ID settings of models that decode them (TIGER), `features` feature actions of a CTR
    run (`agenticrs.features.actions`: fitted on train, saved with the run, applied again wherever the
    run scores; see docs/feature_actions.md). An unknown key is a ValueError
    that names it. Sequential models (`models("sequential")`) train on the leave-one-out protocol.

    >>> run = train("sim-tiny", "lr", train={"max_steps": 10})
    >>> run.task, run.stopped_by, sorted(run.test)
    ('ctr', 'step budget', ['auc', 'calibration', 'gauc', 'logloss'])
    >>> try:  # a misspelt setting names itself
    ...     train("sim-tiny", "lr", train={"max_step": 10})
    ... except ValueError as error:
    ...     print("train.max_step" in str(error))
    True
    """
    if _is_sequential(model) and Path(dataset).exists():
        dataset = Path(dataset).resolve()  # the run records where its data is, wherever it is read from
    train_settings = dict(train or {})
    if seed is not None:
        train_settings["seed"] = seed
    raw: dict[str, Any] = {"dataset": str(dataset), "model": model, "model_params": dict(params or {}),
                           "train": train_settings, "name": name}
    reporter = _reporter(progress)
    if _is_sequential(model):
        if features:
            raise ValueError(f"features: feature actions apply to CTR models; '{model}' is a sequential model")
        from agenticrs.gr.workflow import SequentialJob, check_sequential_settings, run_sequential_job

        if tokenizer:
            raw["tokenizer"] = dict(tokenizer)
        job = SequentialJob.model_validate(raw)
        check_sequential_settings(raw, job)
        folder, result = run_sequential_job(job, runs_dir, cache_dir, reporter)
        from agenticrs.gr.train import load_sequential_run

        module, _ = load_sequential_run(folder)
        return TrainedModel(folder, "sequential", result.valid, result.test, result.stopped_by,
                            result.best_step, result.steps, module)
    if tokenizer:
        raise ValueError(f"tokenizer settings have no effect for '{model}': only sequential models that decode "
                         "semantic IDs (e.g. tiger) use a tokenizer")
    if features:
        raw["features"] = [dict(action) for action in features]
    from agenticrs.train.config import RunConfig
    from agenticrs.train.workflow import train_run

    trained = train_run(RunConfig.model_validate(raw), runs_dir, cache_dir, reporter)
    result = trained.result
    return TrainedModel(trained.run.folder, "ctr", result.valid, result.test, result.stopped_by,
                        result.best_step, result.steps, trained.model)


def _run_path(run: str | Path | TrainedModel) -> Path:
    return run.run_dir if isinstance(run, TrainedModel) else Path(run)


def evaluate(
    run: str | Path | TrainedModel,
    split: str = "test",
    files: Sequence[str | Path] | None = None,
    cache_dir: str | Path | None = None,
    test_time: str | None = None,
    test_time_settings: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Metrics of a saved CTR run on one of its splits (equal to its `summary.json`) or on other
    labelled files in the run's data layout. `test_time="matt"` or `"uttsi"` wraps the run in
    test-time inference (`docs/test_time.md`; settings as a nested dict, e.g. `{"matt": {"paths": 4}}`)."""
    from agenticrs.train.run import require_ctr_run
    from agenticrs.train.workflow import evaluate_run

    folder = _run_path(run)
    require_ctr_run(folder, "evaluate")
    if test_time is not None:
        from agenticrs.train.testtime.workflow import evaluate_test_time

        metrics, _, _ = evaluate_test_time(folder, test_time, split, [str(f) for f in files] if files else None,
                                           dict(test_time_settings or {}), cache_dir)
        return metrics
    if test_time_settings:
        raise ValueError("test_time_settings has no effect without test_time='matt' or 'uttsi'")
    metrics, _ = evaluate_run(folder, split, [str(f) for f in files] if files else None, cache_dir)
    return metrics


def score(run: str | Path | TrainedModel, rows: Any) -> np.ndarray:
    """Click probabilities of a CTR run for rows given as a pandas DataFrame, a pyarrow Table or a
    dict of columns: any column order, extra columns ignored, encoded with the run's own encoder
    (unseen values to the OOV id). For many calls keep one `agenticrs.train.scoring.Scorer`.

    >>> import pandas as pd
    >>> sim = simulate("tiny", seed=1, out="sim1")
    >>> run = train(sim["ctr"], "lr", train={"max_steps": 5})
    >>> rows = pd.read_parquet("sim1/impressions_test.parquet").head(4)
    >>> scores = score(run, rows)
    >>> scores.shape, bool(((scores > 0) & (scores < 1)).all())
    ((4,), True)
    >>> bool((score(run, rows[rows.columns[::-1]]) == scores).all())  # columns are found by name
    True
    """
    from agenticrs.train.scoring import Scorer

    return Scorer(_run_path(run)).score(rows)


def recommend(
    run: str | Path | TrainedModel, users: int | Sequence[int], k: int = 10, cache_dir: str | Path | None = None
) -> dict[int, list[int]]:
    """The top-k next items of a sequential run (SASRec, TIGER) for users of its data set, after
    each user's whole history: `{user: [item, ...]}`.

    >>> seq = train("sim-tiny", "sasrec", train={"epochs": 1})
    >>> top = recommend(seq, [1, 2], k=3)
    >>> sorted(top), [len(items) for items in top.values()]
    ([1, 2], [3, 3])
    """
    from agenticrs.gr.workflow import recommend_for_users
    from agenticrs.train.run import run_task

    folder = _run_path(run)
    if run_task(folder) == "ctr":
        raise ValueError(f"{folder} is a CTR run; `recommend` takes sequential runs (use `score` for a CTR run)")
    wanted = [int(users)] if isinstance(users, int | np.integer) else [int(u) for u in users]
    return recommend_for_users(folder, wanted, k, cache_dir)


def simulate(
    preset: str = "small",
    seed: int = 0,
    out: str | Path = "sim-out",
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: bool = False,
) -> Simulation:
    """Simulate an e-commerce world (`tiny`, `small`, `medium`, `large`; `overrides` are
    `SimConfig` fields) and write its logs and task specs to `out`. A folder that already holds
    this configuration's output is reused unless `force`."""
    from agenticrs.data.simulated import TASKS, write_simulation
    from agenticrs.sim.config import sim_preset

    config = sim_preset(preset, seed=seed, **dict(overrides or {}))
    folder = Path(out)
    reporter = _reporter(progress)
    with reporter.task(f"simulate {preset} (seed {seed})", total=config.n_days) as task:
        write_simulation(config, folder, name=f"sim-{preset}", progress=lambda done, total: task.advance(1), force=force)
    meta = json.loads((folder / "meta.json").read_text())
    return Simulation(folder, {t: folder / f"{t}.yaml" for t in TASKS}, meta)


def _policy(arm: Any) -> Callable[..., np.ndarray]:
    from agenticrs.sim.environment import OraclePolicy, PopularityPolicy, RandomPolicy
    from agenticrs.train.policy import RunPolicy

    named = {"popularity": PopularityPolicy, "random": RandomPolicy, "oracle": OraclePolicy}
    if isinstance(arm, str) and arm in named:
        return named[arm]()
    if isinstance(arm, str | Path | TrainedModel):
        return RunPolicy(_run_path(arm))
    if callable(arm):
        return arm
    raise TypeError(f"an A/B arm is a run directory, a policy callable or one of {', '.join(named)}; "
                    f"got {type(arm).__name__}")


def ab_test(
    control: Any,
    treatment: Any,
    *,
    days: int = 1,
    world: World | None = None,
    preset: str | None = None,
    seed: int = 0,
    alpha: float = 0.05,
) -> ABResult:
    """A/B-test two policies in the simulator's online environment with common random numbers.

    An arm is a run directory (or `TrainedModel`), `"popularity"`, `"random"`, `"oracle"`, or any
    callable that scores a `RequestBatch`. The world is `world`, else the `preset` world (with
    `seed`), else the simulated world a run arm was trained on. `result.comparisons["clicks"]` has
    the lift, its confidence interval and p-value (also carts, purchases, GMV)."""
    from agenticrs.sim.config import sim_preset
    from agenticrs.sim.environment import Environment
    from agenticrs.sim.world import build_world
    from agenticrs.train.policy import world_of_run

    if world is None and preset is not None:
        world = build_world(sim_preset(preset, seed=seed))
    if world is None:
        for arm in (control, treatment):
            if isinstance(arm, str | Path | TrainedModel) and Path(_run_path(arm)).is_dir():
                world = world_of_run(_run_path(arm))
                if world is not None:
                    break
    if world is None:
        raise ValueError("no world to test in: pass world= or preset=, or a run trained on simulated data")
    names = tuple(getattr(a, "name", None) or (Path(a).name if isinstance(a, str | Path) else type(a).__name__)
                  for a in (control, treatment))
    environment = Environment(world, seed=seed)
    return environment.ab_test(_policy(control), _policy(treatment), days=days, alpha=alpha,
                               names=(str(names[0]), str(names[1])))


def _flat_keys(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in settings.items():
        if isinstance(value, Mapping) and key in ("start", "train", "space", "llm"):
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}=")
    return keys


def evolve(
    dataset: str | Path,
    *,
    candidates: int | None = None,
    budget_s: float | None = None,
    proposer: str = "builtin",
    seed: int | None = None,
    db: str = DEFAULT_DB,
    settings: Mapping[str, Any] | None = None,
    strict: bool = False,
    agents: list[str] | None = None,
) -> EvolveSummary:
    """Run the agentic loop (propose, train dual learners, decide with EnsNAS, gate, promote) and
    record every step in the knowledge database `db`. `agents`: which act (train, feature, perf;
    default all registered). `settings` holds any other `EvolveSettings`
    field as nested dicts, e.g. `{"start": {"model": "deepfm", "epochs": 2}, "ensemble_size": 4}`;
    a key that would have no effect is a ValueError naming the one that works."""
    from agenticrs.agents.coordinator import Coordinator
    from agenticrs.agents.knowledge import KnowledgeStore
    from agenticrs.agents.settings import EvolveSettings, build_evolve_settings, check_effective_overrides

    base = build_evolve_settings(None, [], dataset=str(dataset), candidates=candidates, budget_s=budget_s,
                                 proposer=proposer, seed=seed, agents=agents)
    merged = EvolveSettings.model_validate(deep_merge(base.model_dump(mode="json"), dict(settings or {})))
    check_effective_overrides(_flat_keys(settings or {}), merged)
    store = KnowledgeStore(db)
    try:
        return Coordinator(store, merged, strict_proposer=strict).run()
    finally:
        store.close()


def history(db: str = DEFAULT_DB, intent: int | None = None) -> list[dict[str, Any]]:
    """Every candidate of an evolution (the newest intent by default) as plain rows: round, id,
    proposer, model, status, whether it became champion, its EnsNAS gains and the decision's reason
    (`pandas.DataFrame(history(db))` makes a table of it)."""
    from agenticrs.agents.candidate import Candidate
    from agenticrs.agents.knowledge.schema import Intent

    store = knowledge(db)
    try:
        with store.transaction() as tx:
            row = tx.get(Intent, intent) if intent is not None else tx.latest_intent()
            if row is None:
                raise ValueError(f"{store.display} holds no evolution yet (run `evolve` first)")
            comparisons = {c.candidate_id: c for c in tx.comparisons(row.id) if c.split == "valid"}
            reasons = {d.candidate_id: d.reason for d in tx.decisions(intent_id=row.id)}
            champions = {c.candidate_id for c in tx.lineage(row.id)}
            out = []
            for cand in tx.candidates(row.id):
                comp = comparisons.get(cand.id)
                out.append({
                    "intent": row.id, "round": cand.round, "id": cand.id, "proposer": cand.proposer,
                    "candidate": Candidate.model_validate(cand.config).describe(), "status": cand.status,
                    "champion": cand.id in champions,
                    "gain_accuracy": comp.gain_accuracy if comp else None,
                    "gain_diversity": comp.gain_diversity if comp else None,
                    "improvement": comp.improvement if comp else None,
                    "ci_low": comp.ci_low if comp else None,
                    "reason": reasons.get(cand.id, ""),
                })
            return out
    finally:
        store.close()


def knowledge(db: str = DEFAULT_DB, readonly: bool = True) -> KnowledgeStore:
    """The knowledge database (SQLite path or URL, or `postgresql://...`), read-only by default.
    `with store.transaction() as tx:` gives `tx.intents()`, `tx.candidates(intent_id)`,
    `tx.decisions(...)`, `tx.champion(intent_id)`, `tx.lessons()`, `tx.audits()`, ..."""
    from agenticrs.agents.knowledge import KnowledgeStore

    return KnowledgeStore(db, readonly=readonly)

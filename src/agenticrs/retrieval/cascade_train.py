"""Training multi-objective retrievers through the one engine: the cascade task, CSMF's stages.

`CascadeTask` is an engine task (`agenticrs.train.engine.Task`) over `CascadeData`: batches of one
objective's positives (CSMF's stages, optionally a seeded share of them: accuracy recovery) or,
for a model whose `streams` is "every objective" (the multi-head baseline), one batch of each
objective's positives per step. Evaluation retrieves from the whole catalogue for every query of
the split and reports, per objective, `set_recall@k` / `set_ndcg@k` of that objective's user
vector against that objective's relevant sets (`exposure/set_recall@50`, ...), their mean over
objectives (`all/...`), and the serving-time fusion (per-scenario weights) against the click and
conversion sets (`fused_click/...`, `fused_conversion/...`).

`train_csmf` runs the cascade as engine runs, one per phase, each in its own run directory under
`RUN/phases/` (train exposure; prune, recover; advance; train click; prune, recover; advance;
train conversion). A finished phase is never run again: a resumed CSMF run reloads it and
re-applies its (deterministic) pruning, and a phase killed midway resumes from its checkpoint.
`train_multi_objective` trains the baseline as one engine run. Both write `config.yaml`,
`weights.pt` and `summary.json` at the top of the run directory, and `load_multi_objective_run`
rebuilds the trained model from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from agenticrs.config import load_yaml
from agenticrs.models.base import MODELS
from agenticrs.progress import SILENT, Reporter
from agenticrs.retrieval.cascade import OBJECTIVES, CascadeData, CascadeQueries, cascade_queries
from agenticrs.retrieval.csmf import CSMF
from agenticrs.retrieval.multi_objective import MultiObjectiveRetriever, serving_cost
from agenticrs.runtime import resolve_device
from agenticrs.train.config import TrainConfig
from agenticrs.train.engine import Engine, TrainResult
from agenticrs.train.metrics import set_metrics
from agenticrs.train.run import CONFIG, SUMMARY, WEIGHTS, Run

TASK = "multi_objective_retrieval"
PHASES = "phases"


class CascadeTrainConfig(TrainConfig):
    """Training settings of a multi-objective retriever. `max_steps` is the optimiser-step budget of
    the whole run, every CSMF phase included, so that a comparison gives every arm the same one:
    CSMF's `stage_steps` (per objective) plus its recovery phases must fit in it, and without
    `stage_steps` the objectives share what the recovery phases leave equally."""

    batch_size: int = Field(default=512, ge=2)
    eval_batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    lr_schedule: Literal["plateau", "cosine", "constant"] = "constant"
    epochs: int = Field(default=1000, ge=1)
    eval_every_steps: int | None = Field(default=100, ge=1)
    patience: int = Field(default=3, ge=1)
    ks: list[int] = Field(default_factory=lambda: [50, 200])
    monitor: str = Field(default="set_recall@50", description="per objective: CSMF's stage o monitors "
                         "'<objective>/<monitor>', the baseline the mean over objectives 'all/<monitor>'")  # fmt: skip
    metrics: list[str] = Field(default_factory=list, description="default: set_recall@k and set_ndcg@k for every k")
    stage_steps: list[int] | None = Field(default=None, description="CSMF: step budget of each objective's stage")
    stage_learning_rates: list[float] | None = Field(default=None, description="CSMF: each objective's learning "
                                                     "rate (its recovery phase's too); default learning_rate")  # fmt: skip
    recovery_steps: int = Field(default=100, ge=1, description="CSMF: accuracy-recovery steps after pruning")
    recovery_share: float = Field(default=0.1, gt=0, le=1, description="CSMF: share of the objective's data AR uses")
    valid_users: int | None = Field(default=None, ge=1, description="validate on a seeded sample of this many "
                                    "users (a quicker early-stopping signal); the test split is always every user")
    prune: bool = Field(default=True, description="CSMF ablation: False = no CPP (the next objective gets nothing)")
    accuracy_recovery: bool = Field(default=True, description="CSMF ablation: False = freeze right after pruning")

    @model_validator(mode="after")
    def _check(self) -> CascadeTrainConfig:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        if not self.metrics:
            self.metrics = [f"{m}@{k}" for k in self.ks for m in ("set_recall", "set_ndcg")]
        if self.monitor not in self.metrics:
            raise ValueError(f"monitor '{self.monitor}' is not computed; choose one of {self.metrics}")
        if self.stage_steps is not None and (len(self.stage_steps) != len(OBJECTIVES) or min(self.stage_steps) < 1):
            raise ValueError(f"stage_steps must be {len(OBJECTIVES)} positive budgets ({', '.join(OBJECTIVES)})")
        rates = self.stage_learning_rates
        if rates is not None and (len(rates) != len(OBJECTIVES) or min(rates) <= 0):
            raise ValueError(f"stage_learning_rates must be {len(OBJECTIVES)} positive rates ({', '.join(OBJECTIVES)}), "
                             f"got {rates}")  # fmt: skip
        if self.stage_steps is not None and self.max_steps is not None and self.csmf_steps() > self.max_steps:
            raise ValueError(f"CSMF's phases take up to {self.csmf_steps()} steps (stage_steps {self.stage_steps} plus "
                             f"{self.recovery_phases()} x recovery_steps {self.recovery_steps}), beyond max_steps "
                             f"{self.max_steps}")  # fmt: skip
        return self

    def recovery_phases(self) -> int:
        return len(OBJECTIVES) - 1 if self.prune and self.accuracy_recovery else 0

    def stage_budgets(self) -> list[int]:
        """Each objective's step budget in CSMF (`stage_steps`, or an equal share of what is left)."""
        if self.stage_steps is not None:
            return list(self.stage_steps)
        if self.max_steps is None:
            return [1000] * len(OBJECTIVES)
        left = self.max_steps - self.recovery_phases() * self.recovery_steps
        if left < len(OBJECTIVES):
            raise ValueError(f"max_steps {self.max_steps} leaves {left} steps for {len(OBJECTIVES)} objectives after "
                             "the recovery phases")  # fmt: skip
        return [left // len(OBJECTIVES)] * len(OBJECTIVES)

    def stage_rates(self) -> list[float]:
        """Each objective's learning rate in CSMF: a later stage fine-tunes freed weights of a trained
        network, for which the first stage's rate may be too large."""
        return list(self.stage_learning_rates or [self.learning_rate] * len(OBJECTIVES))

    def csmf_steps(self) -> int:
        """The most optimiser steps CSMF's phases take."""
        return sum(self.stage_budgets()) + self.recovery_phases() * self.recovery_steps


class MultiObjectiveRunConfig(BaseModel):
    """`config.yaml` of a multi-objective retrieval run: enough to rebuild the model."""

    model_config = ConfigDict(extra="forbid")

    task: str = TASK
    model: str
    model_params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    num_items: int
    scenarios: list[str]
    train: CascadeTrainConfig = Field(default_factory=CascadeTrainConfig)


def build_multi_objective(name: str, num_items: int, params: dict[str, Any] | None = None) -> MultiObjectiveRetriever:
    """A registered multi-objective retriever by name, with validated hyper-parameters."""
    cls = MODELS.get(name) if name in MODELS else None
    if not (isinstance(cls, type) and issubclass(cls, MultiObjectiveRetriever)):
        known = sorted(n for n, c in MODELS.items() if getattr(c, "task", None) == TASK)
        raise KeyError(f"'{name}' is not a multi-objective retriever; known: {', '.join(known)}")
    return cls(num_items, cls.Config(**(params or {})))


class _Stream:
    """Seeded, endlessly repeated permutations of some rows: batch g is rows [g*B, (g+1)*B) of
    the concatenation of permutation 0, 1, ... (permutation c drawn from (seed, tag, c))."""

    def __init__(self, rows: np.ndarray, seed: int, tag: int) -> None:
        self.rows, self.seed, self.tag = rows, seed, tag
        self._cached: tuple[int, np.ndarray] | None = None

    def _permutation(self, cycle: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != cycle:
            self._cached = (cycle, np.random.default_rng([self.seed, self.tag, cycle]).permutation(len(self.rows)))
        return self._cached[1]

    def batch(self, g: int, size: int) -> np.ndarray:
        n = len(self.rows)
        position = np.arange(g * size, (g + 1) * size, dtype=np.int64)
        cycle, within = position // n, position % n
        out = np.empty(size, dtype=np.int64)
        for c in np.unique(cycle):
            take = cycle == c
            out[take] = self.rows[self._permutation(int(c))[within[take]]]
        return out


class CascadeTask:
    """The engine task of a multi-objective retriever (see the module docstring).

    `objective` None trains every objective at once (one batch of each per step); an integer
    trains that objective on its positives, or on a seeded `share` of them."""

    def __init__(self, model: MultiObjectiveRetriever, data: CascadeData, config: CascadeTrainConfig,
                 objective: int | None = None, share: float = 1.0,
                 queries: dict[str, CascadeQueries] | None = None) -> None:  # fmt: skip
        self.data, self.config, self.objective = data, config, objective
        self.device = resolve_device(config.device)
        self.max_len = model.config.max_len
        train = data.train
        objectives = range(len(OBJECTIVES)) if objective is None else [objective]
        self.streams = []
        for o in objectives:
            rows = np.flatnonzero(train.levels >= o)
            if share < 1.0:
                rng = np.random.default_rng([config.seed, 7, o])
                rows = np.sort(rng.choice(rows, max(2, int(round(share * len(rows)))), replace=False))
            if len(rows) < 2:
                raise ValueError(f"data set '{data.name}' has {len(rows)} training {OBJECTIVES[o]} positive(s); "
                                 "in-batch negatives need at least 2")  # fmt: skip
            self.streams.append((o, _Stream(rows, config.seed, o)))
        self.batch_size = min(config.batch_size, min(len(s.rows) for _, s in self.streams))
        self._queries = {} if queries is None else queries  # shared by the phases of one run: built once

    def prepare(self, model: nn.Module) -> None:
        model.prepare_data(self.data)  # type: ignore[operator]

    def steps_per_epoch(self) -> int:
        return -(-len(self.streams[0][1].rows) // self.batch_size)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        train, per_epoch = self.data.train, self.steps_per_epoch()
        for step in range(skip, per_epoch):
            g = (epoch - 1) * per_epoch + step
            parts = [(o, stream.batch(g, self.batch_size)) for o, stream in self.streams]
            rows = np.concatenate([r for _, r in parts])
            batch = {
                "history": torch.from_numpy(train.histories(rows, self.max_len)),
                "user": torch.from_numpy(train.users[rows]), "target": torch.from_numpy(train.items[rows]),
                "objective": torch.from_numpy(np.repeat([o for o, _ in parts], [len(r) for _, r in parts])),
            }  # fmt: skip
            yield {name: value.to(self.device) for name, value in batch.items()}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return model.loss(batch), len(batch["target"])  # type: ignore[operator]

    def has_validation(self) -> bool:
        return True

    def queries(self, split: str) -> CascadeQueries:
        if split not in self._queries:
            queries = cascade_queries(self.data.split(split), self.max_len)
            if split == "valid" and self.config.valid_users is not None:
                queries = queries.sample(self.config.valid_users, self.config.seed)
            self._queries[split] = queries
        return self._queries[split]

    def evaluate(self, model: nn.Module, split: str, reporter: Reporter = SILENT) -> dict[str, float] | None:
        if split not in ("valid", "test"):
            return None
        return evaluate_multi_objective(model, self.queries(split), self.data.scenarios, self.config.metrics,  # type: ignore[arg-type]
                                        self.config.eval_batch_size, self.device)  # fmt: skip

    def summary(self, model: nn.Module) -> dict[str, Any]:
        return {"model": getattr(model, "name", type(model).__name__), "dataset": self.data.name,
                "objective": "every" if self.objective is None else OBJECTIVES[self.objective],
                "train_rows": [len(s.rows) for _, s in self.streams]}  # fmt: skip


@torch.no_grad()
def evaluate_multi_objective(
    model: MultiObjectiveRetriever, queries: CascadeQueries, scenarios: tuple[str, ...] | list[str],
    metrics: list[str], batch_size: int = 1024, device: torch.device | str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """Per objective, its own vector against its relevant sets; their mean (`all/`); the
    per-scenario fusion against the click and conversion sets (`fused_click/`, ...)."""
    model.eval()
    k = max(int(name.rsplit("@", 1)[1]) for name in metrics)
    k = min(k, model.num_items)
    tops: dict[str, list[np.ndarray]] = {}
    for batch in queries.batches(batch_size):
        batch = {name: value.to(device) for name, value in batch.items()}
        weights = model.fusion_weights(list(scenarios), batch["scenario"])
        for o, objective in enumerate(OBJECTIVES):
            tops.setdefault(objective, []).append(torch.topk(model.score_all(batch, o), k).indices.cpu().numpy())
        tops.setdefault("fused", []).append(torch.topk(model.score_all(batch, weights=weights), k).indices.cpu().numpy())
    out: dict[str, float] = {}
    fused = np.concatenate(tops["fused"])
    for o, objective in enumerate(OBJECTIVES):
        values = set_metrics(metrics, queries.hits(o, np.concatenate(tops[objective])))
        out.update({f"{objective}/{name}": v for name, v in values.items()})
    for name in metrics:
        out[f"all/{name}"] = float(np.mean([out[f"{o}/{name}"] for o in OBJECTIVES]))
    for o in (1, 2):
        values = set_metrics(metrics, queries.hits(o, fused))
        out.update({f"fused_{OBJECTIVES[o]}/{name}": v for name, v in values.items()})
    return out


# --- runs ---------------------------------------------------------------------------------------
@dataclass
class PhaseRecord:
    name: str
    steps: int
    stopped_by: str
    best_step: int
    valid: dict[str, float]
    train_seconds: float
    prune: dict[str, dict[str, float]] | None = None
    test: dict[str, float] = field(default_factory=dict)


@dataclass
class MultiObjectiveResult:
    valid: dict[str, float]
    test: dict[str, float]
    phases: list[PhaseRecord] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    stopped_by: str = ""
    serving: dict[str, float] = field(default_factory=dict)
    ownership: dict[str, int] = field(default_factory=dict)
    run_dir: Path | None = None


def _write_top(run: Run | None, model: MultiObjectiveRetriever, data: CascadeData, config: CascadeTrainConfig) -> None:
    if run is None:
        return
    run_config = MultiObjectiveRunConfig(model=model.name, model_params=model.config.model_dump(mode="json"),
                                         dataset=data.name, num_items=data.num_items, scenarios=list(data.scenarios),
                                         train=config)  # fmt: skip
    run.write_config(run_config.model_dump(mode="json"))


def _finish(run: Run | None, model: MultiObjectiveRetriever, task: CascadeTask, phases: list[PhaseRecord],
            reporter: Reporter) -> MultiObjectiveResult:  # fmt: skip
    # the last phase's engine run evaluated these very weights (its best, restored) on both splits
    last = phases[-1]
    valid = last.valid or task.evaluate(model, "valid", reporter) or {}
    test = last.test or task.evaluate(model, "test", reporter) or {}
    result = MultiObjectiveResult(
        valid=valid, test=test, phases=phases, steps=sum(p.steps for p in phases),
        train_seconds=sum(p.train_seconds for p in phases),
        stopped_by="; ".join(f"{p.name}: {p.stopped_by}" for p in phases), serving=serving_cost(model),
        ownership=model.ownership() if isinstance(model, CSMF) else {}, run_dir=run.folder if run else None,
    )  # fmt: skip
    if run is not None:
        run.save_weights(model.state_dict())
        run.write_summary({
            "model": model.name, "dataset": task.data.name, "valid": valid, "test": test, "steps": result.steps,
            "train_seconds": result.train_seconds, "stopped_by": result.stopped_by, "serving": result.serving,
            "ownership": result.ownership, "phases": [vars(p) for p in phases],
        })  # fmt: skip
    return result


def _record(name: str, result: TrainResult, prune: dict | None = None) -> PhaseRecord:
    return PhaseRecord(name=name, steps=result.steps, stopped_by=result.stopped_by, best_step=result.best_step,
                       valid=result.valid, train_seconds=result.train_seconds, prune=prune,
                       test=result.test or {})  # fmt: skip


def train_multi_objective(
    data: CascadeData, model_name: str = "multihead_two_tower", params: dict[str, Any] | None = None,
    config: CascadeTrainConfig | None = None, run_dir: str | Path | None = None, reporter: Reporter = SILENT,
    resume: bool = False,
) -> tuple[MultiObjectiveRetriever, MultiObjectiveResult]:  # fmt: skip
    """Train a multi-objective retriever that learns every objective at once (one engine run),
    early-stopped on the mean over objectives of the monitor."""
    cfg = config or CascadeTrainConfig()
    torch.manual_seed(cfg.seed)
    model = build_multi_objective(model_name, data.num_items, params)
    if isinstance(model, CSMF):
        raise ValueError("csmf trains objective by objective: use train_csmf")
    run = Run.at(run_dir) if run_dir is not None else None
    if not resume:
        _write_top(run, model, data, cfg)
    task = CascadeTask(model, data, cfg)
    # without its own budget the baseline gets the one CSMF's phases would take with these settings
    engine_cfg = cfg.model_copy(update={"monitor": f"all/{cfg.monitor}", "max_steps": cfg.max_steps or cfg.csmf_steps()})
    phase_run = Run.at(Path(run_dir) / PHASES / "joint") if run_dir is not None else None
    result = Engine(engine_cfg, reporter).fit(model, task, phase_run, resume=resume and _has_checkpoint(phase_run))
    return model, _finish(run, model, task, [_record("joint", result)], reporter)


def _has_checkpoint(run: Run | None) -> bool:
    return run is not None and run.has_checkpoint()


def _done(run: Run | None) -> bool:
    return run is not None and (run.folder / SUMMARY).is_file() and (run.folder / WEIGHTS).is_file()


def train_csmf(
    data: CascadeData, params: dict[str, Any] | None = None, config: CascadeTrainConfig | None = None,
    run_dir: str | Path | None = None, reporter: Reporter = SILENT, resume: bool = False,
) -> tuple[CSMF, MultiObjectiveResult]:  # fmt: skip
    """CSMF's cascade: per objective, train on its positives (early-stopped on its own monitor),
    then (not after the last) CPP-prune its weights, recover accuracy on a share of its data,
    freeze, and hand the freed weights to the next objective."""
    cfg = config or CascadeTrainConfig()
    torch.manual_seed(cfg.seed)
    model = build_multi_objective("csmf", data.num_items, params)
    assert isinstance(model, CSMF)
    run = Run.at(run_dir) if run_dir is not None else None
    if not resume:
        _write_top(run, model, data, cfg)
    phases: list[PhaseRecord] = []
    last_task: CascadeTask | None = None
    queries: dict[str, CascadeQueries] = {}

    def phase(index: int, name: str, objective: int, steps: int, share: float = 1.0) -> TrainResult | None:
        nonlocal last_task
        task = CascadeTask(model, data, cfg, objective, share, queries)
        last_task = task
        phase_run = Run.at(Path(run_dir) / PHASES / f"{index}_{name}") if run_dir is not None else None
        if resume and _done(phase_run):
            task.prepare(model)
            model.load_state_dict(phase_run.load_weights(resolve_device(cfg.device)))  # type: ignore[union-attr]
            summary = phase_run.summary  # type: ignore[union-attr]
            phases.append(PhaseRecord(name=name, steps=int(summary["steps"]), stopped_by=summary["stopped_by"],
                                      best_step=int(summary["best_step"]), valid=summary["valid"],
                                      train_seconds=float(summary["train_seconds"]), test=summary.get("test") or {}))  # fmt: skip
            reporter.log(f"phase {name}: done before, reloaded")
            return None
        reporter.log(f"phase {name}: {OBJECTIVES[objective]} positives" + (f" ({share:.0%})" if share < 1 else ""))
        # a phase that starts from a trained model (recovery, the later objectives) keeps its start if no
        # step improves the objective's validation metric: the freed weights then stay at zero
        engine_cfg = cfg.model_copy(update={"monitor": f"{OBJECTIVES[objective]}/{cfg.monitor}", "max_steps": steps,
                                            "eval_at_start": index > 0,
                                            "learning_rate": cfg.stage_rates()[objective]})  # fmt: skip
        result = Engine(engine_cfg, reporter).fit(model, task, phase_run,
                                                  resume=resume and _has_checkpoint(phase_run))  # fmt: skip
        phases.append(_record(name, result))
        return result

    budgets = cfg.stage_budgets()
    index = 0
    for objective, name in enumerate(OBJECTIVES):
        phase(index, name, objective, budgets[objective])
        index += 1
        if objective == len(OBJECTIVES) - 1:
            break
        if cfg.prune:
            report = model.prune()
            phases[-1].prune = report
            reporter.log(f"CPP after {name}: {_pruned_share(report):.1%} of its weights freed")
            if cfg.accuracy_recovery:
                phase(index, f"{name}_recovery", objective, cfg.recovery_steps, cfg.recovery_share)
        index += 1
        model.advance()
    assert last_task is not None
    return model, _finish(run, model, last_task, phases, reporter)  # type: ignore[return-value]


def _pruned_share(report: dict[str, dict[str, float]]) -> float:
    owned = sum(r["owned"] for r in report.values())
    return sum(r["pruned"] for r in report.values()) / owned if owned else 0.0


def load_multi_objective_run(run_dir: str | Path, device: str | torch.device = "cpu"
                             ) -> tuple[MultiObjectiveRetriever, MultiObjectiveRunConfig]:  # fmt: skip
    """The trained model of a multi-objective retrieval run (eval mode) and its config."""
    folder = Path(run_dir)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a complete multi-objective retrieval run: {CONFIG} or {WEIGHTS} is missing")
    config = MultiObjectiveRunConfig.model_validate(load_yaml(folder / CONFIG))
    model = build_multi_objective(config.model, config.num_items, config.model_params)
    model.load_state_dict(Run(folder).load_weights(device))
    return model.to(device).eval(), config


__all__ = [
    "CascadeTask", "CascadeTrainConfig", "MultiObjectiveResult", "MultiObjectiveRunConfig", "build_multi_objective",
    "evaluate_multi_objective", "load_multi_objective_run", "train_csmf", "train_multi_objective",
]


# --- the command line's entry points (`agenticrs train --task multi_objective_retrieval`) -------
class MultiObjectiveJob(BaseModel):
    """What `agenticrs train --task multi_objective_retrieval` reads (config YAML and --set)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="sim-<preset> or a simulator output folder")
    model: str = Field(description="csmf or multihead_two_tower")
    model_params: dict[str, Any] = Field(default_factory=dict)
    train: CascadeTrainConfig = Field(default_factory=CascadeTrainConfig)
    name: str | None = None


def train_by_name(data: CascadeData, model: str, params: dict[str, Any], config: CascadeTrainConfig, run_dir: Path,
               reporter: Reporter, resume: bool) -> MultiObjectiveResult:  # fmt: skip
    if model == "csmf":
        return train_csmf(data, params, config, run_dir, reporter, resume=resume)[1]
    return train_multi_objective(data, model, params, config, run_dir, reporter, resume=resume)[1]


def run_multi_objective_job(job: MultiObjectiveJob, runs_dir: str | Path, cache_dir: str | Path | None = None,
                            reporter: Reporter = SILENT) -> tuple[Path, MultiObjectiveResult]:  # fmt: skip
    """Train the job's model into a new run directory under `runs_dir`."""
    from agenticrs.retrieval.cascade import resolve_cascade

    build_multi_objective(job.model, 1, job.model_params)  # an unknown model or a bad setting fails before the data
    data = resolve_cascade(job.dataset, cache_dir)
    run = Run.create(runs_dir, job.name or f"{job.model}-{Path(job.dataset).name}")
    return run.folder, train_by_name(data, job.model, job.model_params, job.train, run.folder, reporter, resume=False)


def resume_multi_objective_run(folder: str | Path, cache_dir: str | Path | None = None,
                               reporter: Reporter = SILENT) -> MultiObjectiveResult:  # fmt: skip
    """Continue a killed run: finished phases are reloaded, the one in progress resumes from its checkpoint."""
    from agenticrs.retrieval.cascade import resolve_cascade

    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise FileNotFoundError(f"{folder} is not a multi-objective retrieval run: {CONFIG} is missing")
    config = MultiObjectiveRunConfig.model_validate(load_yaml(folder / CONFIG))
    data = resolve_cascade(config.dataset, cache_dir)
    return train_by_name(data, config.model, config.model_params, config.train, folder, reporter, resume=True)

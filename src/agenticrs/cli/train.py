"""`agenticrs train | evaluate | predict`: the CTR path from data to a run and back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from rich.syntax import Syntax

from agenticrs.cli.common import console, friendly_errors, metrics_table, reporter, styled
from agenticrs.config import apply_overrides, dump_yaml, load_yaml
from agenticrs.train.config import RunConfig
from agenticrs.train.distributed import launched_by_torchrun
from agenticrs.train.workflow import evaluate_run, predict_files, resume_run, train_run

if TYPE_CHECKING:  # imported where used: the sequential stack is not loaded for a CTR run
    from agenticrs.gr.workflow import SequentialJob


@friendly_errors
def train(
    task: str = typer.Option("ctr", "--task", help="ctr (click models), sequential (next-item: sasrec, tiger) or "
                             "multi_objective_retrieval (csmf, multihead_two_tower on a simulator's impressions)"),
    dataset: str = typer.Option(None, "--dataset", "-d", help="registered data set name or dataset-spec YAML"),
    model: str = typer.Option(None, "--model", "-m", help="model name (see `agenticrs models`)"),
    config: Path = typer.Option(None, "--config", "-c", help="run config YAML (dataset, model, model_params, train)"),
    overrides: list[str] = typer.Option([], "--set", help="override, e.g. train.epochs=5 or model_params.embedding_dim=16"),
    smoke: bool = typer.Option(False, "--smoke", help="use the model's tiny smoke config"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run directories are written"),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="processed-data cache (default .cache/agenticrs)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    resume: Path = typer.Option(None, "--resume", help="continue a killed run directory from its checkpoint"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="data-parallel processes (torchrun; gloo on CPU, nccl on "
                              "GPUs); train.batch_size is the global batch, split evenly over them"),
    init_from: Path = typer.Option(None, "--init-from", help="--task sequential: start from this finished run's weights "
                                   "(same model and data set; --set model_params.* overrides its settings), e.g. GRC's "
                                   "GRPO phase: --init-from SFT_RUN --set model_params.phase=grpo"),
) -> None:
    """Train a model on a data set and write a run directory (or continue one with --resume)."""
    if init_from is not None:
        if task != "sequential":
            raise ValueError(f"--init-from starts a sequential run from another one; --task is {task}")
        if resume is not None:
            raise ValueError("--init-from has no effect with --resume: a resumed run keeps the start it was given")
        if not init_from.is_dir():
            raise FileNotFoundError(f"--init-from {init_from}: no such run directory")
        overrides = [*overrides, f"init_from={init_from.resolve()}"]
    if nproc > 1 or launched_by_torchrun():
        if resume is not None:
            raise ValueError("--resume continues a run in one process; a data-parallel run cannot resume")
        if task not in ("ctr", "sequential"):
            raise ValueError(f"unknown task '{task}' (expected ctr or sequential)")
        if not launched_by_torchrun():
            _launch(nproc, dataset, model, config, overrides, smoke, runs_dir, cache_dir, quiet, task)
            return
    if resume is not None:
        given = {"--set": overrides, "--dataset": dataset, "--model": model, "--config": config, "--smoke": smoke}
        ignored = [flag for flag, value in given.items() if value]
        if ignored:
            raise ValueError(f"{ignored[0]} has no effect with --resume: a run continues with the settings it was "
                             "started with (its config.yaml); start a new run to change them")
        _resume(resume, task, cache_dir, quiet)
        return
    raw = load_yaml(config) if config else {}
    if dataset:
        raw["dataset"] = dataset
    if model:
        raw["model"] = model
    if smoke:
        raw["smoke"] = True
    raw = apply_overrides(raw, overrides)
    if "dataset" not in raw or "model" not in raw:
        raise ValueError("both a data set (--dataset) and a model (--model) are needed, on the command line or in --config")
    if task == "multi_objective_retrieval":
        _train_multi_objective(raw, overrides, runs_dir, cache_dir, quiet)
        return
    if task == "sequential":
        if launched_by_torchrun():
            _train_sequential_rank(raw, nproc, overrides, runs_dir, cache_dir, quiet)
        else:
            _train_sequential(raw, overrides, runs_dir, cache_dir, quiet)
        return
    if task != "ctr":
        raise ValueError(f"unknown task '{task}' (expected ctr, sequential or multi_objective_retrieval)")
    run_config = RunConfig.model_validate(raw)
    if launched_by_torchrun():
        _train_rank(run_config, nproc, overrides, runs_dir, cache_dir, quiet)
        return
    _print_config(run_config.model_dump(mode="json"), overrides)
    trained = train_run(run_config, runs_dir, cache_dir, reporter(quiet))
    result = trained.result
    console.print(metrics_table(f"{run_config.model} on {trained.data.spec.name} (best epoch {result.best_epoch})",
                                {"valid": result.valid, "test": result.test}))
    console.print(f"train samples/s: {result.train_samples_per_s:,.0f}   stopped by: {result.stopped_by}")
    console.print(styled("run directory: ", (str(trained.run.folder), "bold")))


def _launch(nproc: int, dataset: str | None, model: str | None, config: Path | None, overrides: list[str], smoke: bool,
            runs_dir: Path, cache_dir: Path | None, quiet: bool, task: str = "ctr") -> None:
    """Start `nproc` copies of this command under torchrun on this machine and wait for them.

    Every copy sees torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR) and trains its rank;
    on several machines, run torchrun itself (docs/scaling.md)."""
    # no --nproc for the copies (torchrun's own parser would take it for --nproc-per-node): they read
    # the world size from torchrun's environment
    args = ["train", "--task", task, "--runs-dir", str(runs_dir)]
    for flag, value in (("--dataset", dataset), ("--model", model), ("--config", config), ("--cache-dir", cache_dir)):
        if value is not None:
            args += [flag, str(value)]
    for override in overrides:
        args += ["--set", override]
    args += ["--smoke"] * smoke + ["--quiet"] * quiet
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "agenticrs.cli.main", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.run(command, env=env).returncode  # noqa: S603 - our own interpreter and module
    if code:
        raise typer.Exit(code)


def _train_rank(run_config: RunConfig, nproc: int, overrides: list[str], runs_dir: Path, cache_dir: Path | None,
                quiet: bool) -> None:
    """One rank of a data-parallel run (inside torchrun): rank 0 prints and writes the run."""
    from agenticrs.train import distributed

    ctx = distributed.init_from_env(run_config.train.device)
    finished = False
    try:
        if nproc > 1 and ctx.world_size != nproc:
            raise ValueError(f"--nproc {nproc} but torchrun started {ctx.world_size} processes")
        if ctx.is_main:
            _print_config(run_config.model_dump(mode="json"), overrides)
            console.print(f"data parallel: {ctx.world_size} processes, {run_config.train.batch_size} rows per global "
                          f"batch ({run_config.train.batch_size // ctx.world_size} per process)")
        trained = train_run(run_config, runs_dir, cache_dir, reporter(quiet or not ctx.is_main))
        if ctx.is_main and trained.run is not None:
            result = trained.result
            console.print(metrics_table(f"{run_config.model} on {trained.data.spec.name} (best epoch {result.best_epoch},"
                                        f" {ctx.world_size} processes)", {"valid": result.valid, "test": result.test}))
            console.print(f"train samples/s (all processes): {result.train_samples_per_s:,.0f}   "
                          f"stopped by: {result.stopped_by}")
            console.print(styled("run directory: ", (str(trained.run.folder), "bold")))
        finished = True
    finally:
        distributed.shutdown(finished)


@friendly_errors
def evaluate(
    run: Path = typer.Option(..., "--run", "-r", help="run directory"),
    split: str = typer.Option("test", "--split", help="split of the run's data set"),
    data: list[Path] = typer.Option([], "--data", help="other labelled files in the run's data layout"),
    cache_dir: Path = typer.Option(None, "--cache-dir"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    test_time: str = typer.Option(None, "--test-time", help="wrap the run in test-time inference: matt or uttsi "
                                  "(docs/test_time.md; statistics built on first use and saved in RUN/testtime/)"),
    tt_set: list[str] = typer.Option([], "--tt-set", help="test-time setting, e.g. matt.paths=4 or hashing.width=65536"),
) -> None:
    """Evaluate a saved run; on its own splits this reproduces the run's summary exactly."""
    if test_time is None and tt_set:
        raise ValueError("--tt-set has no effect without --test-time matt|uttsi")
    if test_time is not None:
        from agenticrs.train.testtime.workflow import evaluate_test_time

        metrics, _, record = evaluate_test_time(run, test_time, split, [str(p) for p in data] or None, tt_set,
                                                cache_dir, reporter(quiet))
        shown = "eval" if data else split
        console.print(metrics_table(f"{run} with {test_time}", {f"{shown} (base)": record["base_metrics"],
                                                                 f"{shown} ({test_time})": metrics}))
        console.print(f"rows explored: {record['explored_share']:.1%}   forward rows per row: "
                      f"{record['compute_vs_base']:.2f}   recorded in {Path(run) / 'testtime' / f'{test_time}-{shown}.json'}")
        return
    metrics, _ = evaluate_run(run, split, [str(p) for p in data] or None, cache_dir, reporter(quiet))
    console.print(metrics_table(f"{run}", {"eval" if data else split: metrics}))


@friendly_errors
def predict(
    run: Path = typer.Option(..., "--run", "-r", help="run directory"),
    input: list[Path] = typer.Option(..., "--input", "-i", help="file(s) in the run's data layout (labels optional)"),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file: columns `row` (input row, from 0) and `prediction`"),
    cache_dir: Path = typer.Option(None, "--cache-dir"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    test_time: str = typer.Option(None, "--test-time", help="score through test-time inference: matt or uttsi"),
    tt_set: list[str] = typer.Option([], "--tt-set", help="test-time setting, e.g. uttsi.explore_share=0.1"),
) -> None:
    """Score files with a saved run."""
    if test_time is None and tt_set:
        raise ValueError("--tt-set has no effect without --test-time matt|uttsi")
    # the library checks `--out` before the (long) scoring and writes the CSV atomically
    if test_time is not None:
        from agenticrs.train.testtime.workflow import predict_test_time

        probs = predict_test_time(run, test_time, [str(p) for p in input], tt_set, cache_dir, reporter(quiet), out=out)
    else:
        probs = predict_files(run, [str(p) for p in input], cache_dir, reporter(quiet), out=out)
    console.print(f"wrote {len(probs):,} predictions to {out} (mean {float(np.mean(probs)):.5f})")


def _print_config(effective: dict, overrides: list[str]) -> None:
    """The effective configuration as YAML, then the `--set` overrides that went into it."""
    console.print(Syntax(dump_yaml(effective), "yaml", theme="ansi_dark"))
    if overrides:
        console.print(styled(("overrides (--set):", "bold"), " " + "  ".join(o.strip() for o in overrides)))


def _resume(folder: Path, task: str, cache_dir: Path | None, quiet: bool) -> None:
    from agenticrs.train.run import run_task

    if run_task(folder) == "multi_objective_retrieval":
        from agenticrs.retrieval.cascade_train import resume_multi_objective_run

        result = resume_multi_objective_run(folder, cache_dir, reporter(quiet))
        console.print(metrics_table(f"{folder} (resumed)", {"valid": result.valid, "test": result.test}))
        console.print(styled(f"stopped by: {result.stopped_by}   run directory: ", (str(folder), "bold")))
        return
    if task == "sequential":
        from agenticrs.gr.workflow import resume_sequential_job

        result = resume_sequential_job(folder, cache_dir, reporter(quiet))
        console.print(metrics_table(f"{folder} (resumed; best epoch {result.best_epoch})",
                                    {"valid": result.valid, "test": result.test}))
    else:
        trained = resume_run(folder, cache_dir, reporter(quiet))
        result = trained.result
        console.print(metrics_table(f"{folder} (resumed; best epoch {result.best_epoch})",
                                    {"valid": result.valid, "test": result.test}))
    console.print(styled(f"stopped by: {result.stopped_by}   run directory: ", (str(folder), "bold")))


def _sequential_job(raw: dict) -> SequentialJob:
    from agenticrs.gr.workflow import SequentialJob, check_sequential_settings

    smoke = raw.pop("smoke", None)
    if isinstance(raw.get("dataset"), str) and Path(raw["dataset"]).exists():
        raw["dataset"] = str(Path(raw["dataset"]).resolve())  # a simulator folder: found again from any directory
    job = SequentialJob.model_validate(raw)
    check_sequential_settings({**raw, "smoke": smoke}, job)
    return job


def _train_sequential_rank(raw: dict, nproc: int, overrides: list[str], runs_dir: Path, cache_dir: Path | None,
                           quiet: bool) -> None:
    """One rank of a data-parallel sequential run (inside torchrun): rank 0 prints and writes the run."""
    from agenticrs.gr.workflow import run_sequential_job, with_train_defaults
    from agenticrs.train import distributed

    job = _sequential_job(raw)
    ctx = distributed.init_from_env(job.train.device)
    finished = False
    try:
        if nproc > 1 and ctx.world_size != nproc:
            raise ValueError(f"--nproc {nproc} but torchrun started {ctx.world_size} processes")
        batch = with_train_defaults(job).train.batch_size
        local = distributed.local_batch_size(batch, ctx.world_size)  # on every rank, before any data or run directory
        if ctx.is_main:
            _print_config(job.model_dump(mode="json"), overrides)
            console.print(f"data parallel: {ctx.world_size} processes, {batch} sequences per global batch "
                          f"({local} per process)")
        folder, result = run_sequential_job(job, runs_dir, cache_dir, reporter(quiet or not ctx.is_main))
        if folder is not None:
            console.print(metrics_table(f"{job.model} on {job.dataset} (best epoch {result.best_epoch}, "
                                        f"{ctx.world_size} processes, leave-one-out, full ranking)",
                                        {"valid": result.valid, "test": result.test}))
            console.print(f"stopped by: {result.stopped_by}   steps: {result.steps}")
            console.print(styled("run directory: ", (str(folder), "bold")))
        finished = True
    finally:
        distributed.shutdown(finished)


def _train_sequential(raw: dict, overrides: list[str], runs_dir: Path, cache_dir: Path | None, quiet: bool) -> None:
    from agenticrs.gr.workflow import run_sequential_job

    job = _sequential_job(raw)
    _print_config(job.model_dump(mode="json"), overrides)
    folder, result = run_sequential_job(job, runs_dir, cache_dir, reporter(quiet))
    console.print(metrics_table(f"{job.model} on {job.dataset} (best epoch {result.best_epoch}, leave-one-out, "
                                "full ranking)", {"valid": result.valid, "test": result.test}))
    per_epoch = sum(result.epoch_seconds) / max(len(result.epoch_seconds), 1)
    console.print(f"{per_epoch:.1f} s per training epoch   stopped by: {result.stopped_by}")
    console.print(styled("run directory: ", (str(folder), "bold")))


def _train_multi_objective(raw: dict, overrides: list[str], runs_dir: Path, cache_dir: Path | None, quiet: bool) -> None:
    from agenticrs.retrieval.cascade_train import MultiObjectiveJob, run_multi_objective_job

    raw.pop("smoke", None)
    if isinstance(raw.get("dataset"), str) and Path(raw["dataset"]).exists():
        raw["dataset"] = str(Path(raw["dataset"]).resolve())
    job = MultiObjectiveJob.model_validate(raw)
    _print_config(job.model_dump(mode="json"), overrides)
    folder, result = run_multi_objective_job(job, runs_dir, cache_dir, reporter(quiet))
    shown = {split: {k: v for k, v in metrics.items() if not k.startswith("all/")}
             for split, metrics in (("valid", result.valid), ("test", result.test))}  # fmt: skip
    console.print(metrics_table(f"{job.model} on {job.dataset} (retrieval from the whole catalogue, per objective)",
                                shown))  # fmt: skip
    console.print(f"steps: {result.steps}   stopped by: {result.stopped_by}")
    console.print(styled("run directory: ", (str(folder), "bold")))


@friendly_errors
def recommend(
    run: Path = typer.Option(..., "--run", "-r", help="a sequential run directory"),
    user: int = typer.Option(..., "--user", "-u", help="user id of the run's data set"),
    k: int = typer.Option(10, "--k", "-k", help="how many items"),
    cache_dir: Path = typer.Option(None, "--cache-dir"),
) -> None:
    """The next items a sequential run recommends to a user (after their whole history)."""
    from rich.table import Table

    from agenticrs.gr.workflow import recommend_for_user

    items, texts, history = recommend_for_user(run, user, k, cache_dir)
    console.print(f"user {user}: {len(history)} items in the history, the last: {history[-5:]}")
    table = Table(title=f"top {k} for user {user}")
    table.add_column("rank", justify="right")
    table.add_column("item", justify="right")
    table.add_column("text")
    for rank, (item, text) in enumerate(zip(items, texts, strict=True), start=1):
        table.add_row(str(rank), str(item), text)
    console.print(table)

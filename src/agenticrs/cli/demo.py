"""`agenticrs demo`: the agentic loop on the embedded default data (or, with `--zoo`, a model-zoo
comparison table)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from agenticrs.cli.common import console, friendly_errors, reporter

DEMO_MODELS = ["lr", "fm", "deepfm", "din"]
# shallow models learn slowly at the deep models' Adam step size; everything else is the default
DEMO_LEARNING_RATES = {"lr": 1e-2, "fm": 1e-2}


def oracle_metrics(files: list[str]) -> dict | None:
    """The generator's ground-truth figures for a synthetic split, if the data has them."""
    meta = Path(files[0]).parent / "meta.json"
    if not meta.exists():
        return None
    splits = json.loads(meta.read_text()).get("splits", {})
    return splits.get(Path(files[0]).stem)


@friendly_errors
def demo(
    dataset: str = typer.Option("sim-small", "--dataset", "-d", help="data set to run on (default: the simulator)"),
    budget: str = typer.Option("3m", "--budget", help="evolve's wall-clock budget"),
    zoo: bool = typer.Option(False, "--zoo", help="instead: train a few zoo models and compare them"),
    models: str = typer.Option(",".join(DEMO_MODELS), "--models", help="--zoo: comma-separated model names"),
    epochs: int = typer.Option(8, "--epochs", help="--zoo: epoch cap (early stopping may end sooner)"),
    seed: int = typer.Option(2024, "--seed"),
    runs_dir: Path = typer.Option(Path("runs/demo"), "--runs-dir"),
    cache_dir: Path = typer.Option(None, "--cache-dir"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Evolve models on the embedded default data for a few minutes and write the HTML report."""
    if not zoo:
        from agenticrs.cli.evolve import evolve

        evolve(
            dataset=dataset, objective="auc", budget=budget, candidates=None, proposer="builtin", agents=None,
            db=str(runs_dir / "knowledge.db"), resume=False, intent=None, seed=0, ensemble_size=8, config=None,
            # each learner gets at most 30 s, so that a slow family (DIN) cannot stretch the 3 minutes
            overrides=[f"artifacts={runs_dir / 'evolve'}", "train.time_budget_s=30"]
            + ([f"cache_dir={cache_dir}"] if cache_dir else []),
            report=runs_dir / "evolve-report.html", quiet=quiet, strict=False,
            executor="local", ray_address=None, cpus_per_training=1.0,
        )
        return
    from agenticrs.train.config import RunConfig, TrainConfig  # torch: imported by the command that trains
    from agenticrs.train.workflow import load_data, train_run

    started = time.perf_counter()
    progress = reporter(quiet)
    data = load_data(dataset, cache_dir, progress)
    oracle = oracle_metrics(data.spec.files["test"]) if "test" in data.spec.files else None
    table = Table(title=f"agenticrs demo on '{data.spec.name}' ({data.split('train').rows:,} training rows)")
    for column in ("model", "test AUC", "test logloss", "test GAUC", "train samples/s", "epochs", "seconds"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        train = TrainConfig(
            epochs=epochs, seed=seed, batch_size=4096, learning_rate=DEMO_LEARNING_RATES.get(name, 1e-3), patience=1
        )
        config = RunConfig(dataset=dataset, model=name, train=train)
        t0 = time.perf_counter()
        trained = train_run(config, runs_dir, cache_dir, progress, data=data)
        test = trained.result.test or {}
        table.add_row(
            name,
            f"{test.get('auc', float('nan')):.4f}",
            f"{test.get('logloss', float('nan')):.4f}",
            f"{test.get('gauc', float('nan')):.4f}",
            f"{trained.result.train_samples_per_s:,.0f}",
            str(len(trained.result.history)),
            f"{time.perf_counter() - t0:.1f}",
        )
    if oracle:
        table.add_row(
            "oracle (true probability)",
            f"{oracle['oracle_auc']:.4f}",
            f"{oracle['oracle_logloss']:.4f}",
            "", "", "", "",
            style="bold green",
        )
    console.print(table)
    console.print(f"total {time.perf_counter() - started:.0f} s; runs in {runs_dir}")

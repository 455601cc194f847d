"""Choose CTR settings on the VALIDATION split: a small grid per model, several seeds.

Each grid point is trained like a benchmark run (`ctr_benchmark.run_one`, one process per run)
with the benchmark config's shared overrides plus the point's own; the point with the best mean
validation AUC wins. Test figures are never read here. Writes every trial to JSON (resumable) and
prints, per model, the table of points and the winner, ready to copy into `bench/configs/`.

    python bench/tune_ctr.py --dataset frappe --config bench/configs/frappe.yaml \\
        --grid bench/configs/frappe_grid.yaml --seeds 2 --json bench/results/frappe_tuning.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agenticrs.runtime.files import atomic_write_json  # noqa: E402
from ctr_benchmark import _in_subprocess, run_one, run_overrides  # noqa: E402


def grid_points(grid: dict[str, list[Any]]) -> list[list[str]]:
    """Every combination of `{key: [values]}` as a list of `key=value` overrides."""
    keys = list(grid)
    return [[f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}" for k, v in zip(keys, values, strict=True)]
            for values in itertools.product(*(grid[k] for k in keys))]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", type=Path, default=None, help="the benchmark config (shared overrides)")
    parser.add_argument("--grid", type=Path, required=True, help="YAML: {model: {override key: [values]}}")
    parser.add_argument("--models", default=None, help="comma-separated subset of the grid's models")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/agenticrs"))
    parser.add_argument("--max-trials", type=int, default=None, help="at most the first N grid points per model")
    args = parser.parse_args(argv)
    args.epochs = args.max_steps = args.step_budget = None
    overrides, model_overrides = run_overrides(args)
    grid = yaml.safe_load(args.grid.read_text())
    models = [m.strip() for m in args.models.split(",")] if args.models else list(grid)
    trials: list[dict[str, Any]] = json.loads(args.json.read_text()) if args.json.exists() else []
    # a trial is done for one data set (older records without the field were written per data set)
    done = {(t["model"], tuple(t["point"]), t["seed"]) for t in trials if t.get("dataset", args.dataset) == args.dataset}
    console = Console(width=160)
    for model in models:
        for point in grid_points(grid[model])[: args.max_trials]:
            for seed in range(1, args.seeds + 1):
                if (model, tuple(point), seed) in done:
                    continue
                worker = {"cache_dir": str(args.cache_dir), "rows": 0, "overrides": overrides,
                          "model_overrides": {model: model_overrides.get(model, []) + point}, "skip_ceiling": True,
                          "skip_test": True}  # fmt: skip
                record = _in_subprocess(run_one, args.dataset, model, seed, worker)
                trial = {"dataset": args.dataset, "model": model, "point": point, "seed": seed,
                         "valid_auc": record["valid_auc"],
                         "stopped_by": record["stopped_by"], "steps": record["steps"], "best_step": record["best_step"]}
                trials.append(trial)
                console.print(f"{model} {point} seed {seed}: valid AUC {trial['valid_auc']:.4f} "
                              f"({trial['stopped_by']} at {trial['steps']}, best {trial['best_step']})")
                atomic_write_json(args.json, trials)
    for model in models:
        table = Table(title=f"{model} on {args.dataset}: mean validation AUC over {args.seeds} seeds")
        for column in ("point", "valid AUC", "std", "best steps"):
            table.add_column(column)
        rows = []
        for point in grid_points(grid[model])[: args.max_trials]:
            values = [t for t in trials if t["model"] == model and t["point"] == point]
            if values:
                aucs = [t["valid_auc"] for t in values]
                rows.append((statistics.fmean(aucs), point, aucs, [t["best_step"] for t in values]))
        for mean, point, aucs, steps in sorted(rows, reverse=True):
            std = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
            table.add_row(" ".join(point), f"{mean:.4f}", f"{std:.4f}", str(steps))
        console.print(table)
        if rows:
            console.print(f"[bold]{model}: chosen {' '.join(max(rows)[1])}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Test-time inference benchmark: MATT and UTTSI around trained CTR runs (docs/test_time.md).

For each data set, model and seed: train the model as `bench/ctr_benchmark.py` does (same loading,
the same per-data-set settings from `bench/configs/<config>.yaml`, the engine's step budget and
early stopping on validation), then, without retraining, score the test split with the base
model, MATT and UTTSI. Each record holds:

- test AUC of the base model and of each wrapper, the AUC change with a paired bootstrap 95 %
  interval over test rows (`agenticrs.agents.coordinator.paired_metric_bootstrap`, the helper the
  agents use), and the same change on the validation split;
- the share of test rows explored (MATT: rows with at least one masked path; UTTSI: rows over τ),
  the forward rows per row relative to the base model (padded, and UTTSI's effective M(x) count);
- ms per 1,000 candidates (median of repeated single-thread passes of 1,000 test rows) for the
  base model, MATT and UTTSI;
- per data set (first seed): the hashing's memory and its count error against exact counts of
  every combination of the training split (mean over-count of the upper bound, mean under-count
  of the lower bound, share of keys held exactly, share where the lower bound failed).

    nice -n 10 python bench/testtime_benchmark.py --datasets frappe --models deepfm,dcnv2,finalmlp \
        --seeds 1 --json bench/results/testtime.json
    python bench/testtime_benchmark.py --datasets frappe,movielens,sim-small --seeds 3 --resume --json ...
    python bench/testtime_benchmark.py --datasets frappe --seeds 1 --methods matt_uniform,matt_mean \
        --reuse-from bench/results/testtime.json --json bench/results/testtime_ablation.json   # no retraining

Each (data set, model, seed) runs in a fresh process (`ctr_benchmark._in_subprocess`) with one
torch thread; records are written as they finish, and `--resume` skips those already there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agenticrs.runtime.files import atomic_write_json  # noqa: E402
from ctr_benchmark import _in_subprocess, latency_ms_per_1000, resolve_spec  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CONFIGS = {"frappe": "frappe", "movielens": "movielens", "sim-small": "sim"}
# name -> (method, its settings): the two wrappers and the ablations that say where a change comes from
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "matt": ("matt", []),
    "uttsi": ("uttsi", []),
    "matt_uniform": ("matt", ["matt.guidance=uniform"]),  # as many fields dropped, not the low-confidence ones
    "matt_mean": ("matt", ["matt.aggregation=mean"]),
    "uttsi_filter_only": ("uttsi", ["uttsi.explore_share=0.0"]),  # the filter alone, nothing explored
    "uttsi_explore_all": ("uttsi", ["uttsi.explore_share=1.0"]),
}


def dataset_overrides(dataset: str, model: str) -> list[str]:
    """The data set's benchmark settings (bench/configs/*.yaml): shared, then the model's own."""
    name = CONFIGS.get(dataset)
    if name is None:
        return []
    config = yaml.safe_load((BENCH_DIR / "configs" / f"{name}.yaml").read_text()) or {}
    return list(config.get("overrides", [])) + list((config.get("models") or {}).get(model, []))


def _ms_per_1000(fn, repeats: int = 7) -> float:
    times = []
    for i in range(repeats + 2):
        started = time.perf_counter()
        fn()
        if i >= 2:
            times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def count_error(hph, categorical) -> dict[str, Any]:
    """Bounds of every distinct training combination against its exact count, per order."""
    import numpy as np

    out: dict[str, Any] = {"bytes": hph.nbytes, "orders": {}}
    for order in hph.orders:
        keys = hph.keys(categorical, order)
        unique, true = np.unique(keys.ravel(), return_counts=True)
        b = hph.bounds_of_keys(unique, order)
        lower, upper, exact = b.lower, b.upper, b.exact
        sketch = hph.sketches[order]
        out["orders"][str(order)] = {
            "distinct_keys": int(len(unique)), "occurrences": int(true.sum()),
            "sketch_bytes": sketch.nbytes, "heavy_entries": int(len(hph.heavy[order].keys)),
            "epsilon_n": sketch.epsilon * sketch.total, "delta": sketch.delta,
            "share_exact": float(exact.mean()),
            "upper_never_under": bool((upper >= true).all()),
            "mean_over_count": float((upper - true).mean()),
            "mean_under_count_of_lower": float((true - np.minimum(lower, true)).mean()),
            "share_lower_violated": float((lower > true).mean()),
            "raw_cms_mean_over_count": float((sketch.estimate(unique) - true).mean()),
        }
    return out


def _run_one(dataset: str, model: str, seed: int, args: dict[str, Any], queue) -> None:
    """Train one model with one seed, wrap it in MATT and UTTSI, put the record on the queue."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from agenticrs.agents.coordinator import paired_metric_bootstrap
    from agenticrs.config import apply_overrides
    from agenticrs.features.batching import iterate_batches
    from agenticrs.features.pipeline import process_dataset
    from agenticrs.train.config import RunConfig
    from agenticrs.train.ctr import label_metrics, predict_probs
    from agenticrs.train.run import Run
    from agenticrs.train.testtime.workflow import parse_settings, score_split, wrap_run
    from agenticrs.train.workflow import train_run

    cache_dir = Path(args["cache_dir"])
    data = process_dataset(resolve_spec(dataset, cache_dir, 0), cache_dir)
    reused = (args.get("reuse") or {}).get(f"{dataset}/{model}/{seed}")
    if reused is not None:  # a run this benchmark trained before: wrapped again, not retrained
        record = {k: v for k, v in reused.items() if k not in ("methods", "sketch", "settings")}
        run = Run(record["run"])
        model_ = run.load_model()
    else:
        raw = {"dataset": dataset, "model": model, "train": {"seed": seed}}
        raw = apply_overrides(raw, [*dataset_overrides(dataset, model), "train.num_threads=1", *args["overrides"]])
        config = RunConfig.model_validate(raw)
        runs = Path(args["runs_dir"]) if args["runs_dir"] else Path(tempfile.mkdtemp(prefix="agenticrs-tt-bench-"))
        started = time.perf_counter()
        trained = train_run(config, runs, cache_dir, data=data)
        run, model_ = trained.run, trained.model
        record = {
            "dataset": dataset, "model": model, "seed": seed, "run": str(trained.run.folder),
            "stopped_by": trained.result.stopped_by, "steps": trained.result.steps,
            "best_step": trained.result.best_step, "train_seconds": time.perf_counter() - started,
            "valid_auc": trained.result.valid.get("auc"), "test_auc": trained.result.test.get("auc"),
        }
    record["methods"] = {}
    label = list(data.schema.labels).index(run.summary.get("label") or data.schema.labels[0])
    test, valid = data.split("test"), data.split("valid")
    y_test = np.asarray(test["labels"][:, label], dtype=np.float64)
    y_valid = np.asarray(valid["labels"][:, label], dtype=np.float64)
    model_ = model_.eval()
    base_test = predict_probs(model_, test, 8192)
    base_valid = predict_probs(model_, valid, 8192)
    sample = next(iterate_batches(test, 1000, label_index=None))
    record["base_ms_per_1000"] = latency_ms_per_1000(model_, test)
    settings = parse_settings(args["tt_overrides"])
    for name in args.get("methods") or ["matt", "uttsi"]:
        method, extra = VARIANTS[name]
        wrapped = wrap_run(run.folder, method, parse_settings([*args["tt_overrides"], *extra]), cache_dir, data=data)
        probs, stats = score_split(wrapped, test)
        valid_probs, valid_stats = score_split(wrapped, valid)
        gain, draws = paired_metric_bootstrap("auc", probs.astype(np.float64), base_test.astype(np.float64), y_test,
                                              args["bootstrap"], seed)
        entry = {
            "test_auc": label_metrics(["auc"], y_test, probs, None)["auc"],
            "base_test_auc": label_metrics(["auc"], y_test, base_test, None)["auc"],
            "auc_change": gain, "auc_change_ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
            "test_logloss": label_metrics(["logloss"], y_test, probs, None)["logloss"],
            "base_test_logloss": label_metrics(["logloss"], y_test, base_test, None)["logloss"],
            "valid_auc_change": label_metrics(["auc"], y_valid, valid_probs, None)["auc"]
            - label_metrics(["auc"], y_valid, base_valid, None)["auc"],
            "explored_share": stats["explored_share"], "valid_explored_share": valid_stats["explored_share"],
            "compute_vs_base": stats["compute_vs_base"],
            "effective_compute_vs_base": stats.get("effective_compute_vs_base", stats["compute_vs_base"]),
            "ms_per_1000": _ms_per_1000(lambda w=wrapped: w.scorer.score(w.model, sample)),
            "build_seconds": wrapped.built.get("build_seconds", 0.0),
            "hashing_bytes": wrapped.scorer.hashing.nbytes,
        }
        if method == "uttsi":
            entry["threshold"] = wrapped.scorer.threshold
        record["methods"][name] = entry
    if args["sketch_error"]:
        wrapped = wrap_run(run.folder, "matt", settings, cache_dir, data=data)
        record["sketch"] = count_error(wrapped.scorer.hashing, np.asarray(data.split("train")["categorical"]))
    record["settings"] = settings.model_dump()
    queue.put(record)


def table(records: list[dict[str, Any]]) -> Table:
    out = Table(title="test-time inference (test split; Δ AUC with a paired bootstrap 95 % interval)")
    for column in ("data set", "model", "seed", "base AUC", "method", "Δ AUC", "95 %", "Δ logloss", "explored",
                   "compute (effective)", "ms/1k base / method", "stopped by"):
        out.add_column(column, justify="left" if column in ("data set", "model", "method") else "right")
    for r in records:
        for name, m in r["methods"].items():
            out.add_row(
                r["dataset"], r["model"], str(r["seed"]), f"{m['base_test_auc']:.4f}", name, f"{m['auc_change']:+.4f}",
                f"[{m['auc_change_ci95'][0]:+.4f}, {m['auc_change_ci95'][1]:+.4f}]",
                f"{m['test_logloss'] - m['base_test_logloss']:+.4f}", f"{m['explored_share']:.1%}",
                f"{m['compute_vs_base']:.2f}x ({m['effective_compute_vs_base']:.2f}x)",
                f"{r['base_ms_per_1000']:.1f} / {m['ms_per_1000']:.1f}", str(r.get("stopped_by")),
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="frappe,movielens,sim-small")
    parser.add_argument("--models", default="deepfm,dcnv2,finalmlp")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "testtime.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="run-config override")
    parser.add_argument("--tt-set", dest="tt_overrides", action="append", default=[],
                        help="test-time setting, e.g. matt.paths=4 (docs/test_time.md)")
    parser.add_argument("--bootstrap", type=int, default=500, help="paired bootstrap resamples")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/agenticrs"))
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the trained runs here (default: a temp folder)")
    parser.add_argument("--resume", action="store_true", help="keep records already in --json; run the missing ones")
    parser.add_argument("--methods", default="matt,uttsi", help=f"wrappers and ablations: {', '.join(VARIANTS)}")
    parser.add_argument("--reuse-from", type=Path, default=None,
                        help="a JSON this benchmark wrote: wrap its saved runs again instead of training")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in VARIANTS]
    if unknown:
        parser.error(f"unknown --methods {unknown} (expected {', '.join(VARIANTS)})")
    reuse = {}
    if args.reuse_from is not None:
        reuse = {f"{r['dataset']}/{r['model']}/{r['seed']}": r for r in json.loads(args.reuse_from.read_text())
                 if Path(r["run"]).is_dir()}
    console = Console(width=200)
    records = json.loads(args.json.read_text()) if args.resume and args.json.exists() else []
    done = {(r["dataset"], r["model"], r["seed"]) for r in records}
    sketched = {r["dataset"] for r in records if "sketch" in r}
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        for seed in range(1, args.seeds + 1):
            for model in [m.strip() for m in args.models.split(",") if m.strip()]:
                if (dataset, model, seed) in done:
                    continue
                worker = {"cache_dir": str(args.cache_dir), "overrides": args.overrides, "bootstrap": args.bootstrap,
                          "tt_overrides": args.tt_overrides, "runs_dir": str(args.runs_dir) if args.runs_dir else None,
                          "sketch_error": dataset not in sketched, "methods": methods, "reuse": reuse}
                record = _in_subprocess(_run_one, dataset, model, seed, worker)
                sketched.add(dataset)
                records.append(record)
                changes = ", ".join(f"{n} {m['auc_change']:+.4f} ({m['explored_share']:.0%} explored)"
                                    for n, m in record["methods"].items())
                console.print(f"  {dataset} {model} seed {seed}: base AUC {record['test_auc']:.4f}; {changes}; "
                              f"stopped by {record['stopped_by']} at step {record['steps']}")
                atomic_write_json(args.json, records)
    if records:
        console.print(table(records))
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

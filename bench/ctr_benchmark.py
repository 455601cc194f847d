"""CTR benchmark: quality and speed of zoo models on one data set, several seeds.

Prints a table (mean ± std over seeds) and writes a JSON list with one record per model and
seed: model, dataset, seed, auc, logloss, train_samples_per_s, eval_samples_per_s,
process_rows_per_s, peak_rss_mb, mlp_ceiling_samples_per_s (+ parameters, best_epoch, ...).

`mlp_ceiling_samples_per_s` is measured in the same run: the model's own MLP alone (forward,
backward, Adam) on random dense input of the same width and batch size. Throughput is best read
as the ratio train_samples_per_s / mlp_ceiling_samples_per_s, which holds across machines.

Each (model, seed) runs in a fresh process so that peak RSS is its own.

    python bench/ctr_benchmark.py --dataset frappe --models lr,fm,deepfm,dcnv2 --seeds 3 --json out.json
    python bench/ctr_benchmark.py --dataset criteo-layout --rows 1000000 --models deepfm --seeds 1 \
        --epochs 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from agenticrs.runtime.files import atomic_write_json

BENCH_DIR = Path(__file__).resolve().parent
CRITEO_LAYOUT = "criteo-layout"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def criteo_layout_spec(cache_dir: Path, rows: int):
    """Generated Criteo-layout TSV files (train `rows`, valid and test rows/10 each)."""
    from agenticrs.data.adapters.criteo import criteo_spec
    from agenticrs.data.criteo_layout import write_criteo_layout

    folder = cache_dir / "generated" / f"{CRITEO_LAYOUT}-v2-{rows}"
    files = {}
    for split, n, seed in (("train", rows, 0), ("valid", max(rows // 10, 1000), 1), ("test", max(rows // 10, 1000), 2)):
        path = folder / f"{split}.tsv"
        if not path.exists():
            write_criteo_layout(path, n, seed=seed)
        files[split] = [str(path)]
    return criteo_spec(files, min_count=2, name=f"{CRITEO_LAYOUT}-{rows}")


def resolve_spec(dataset: str, cache_dir: Path, rows: int):
    if dataset == CRITEO_LAYOUT:
        return criteo_layout_spec(cache_dir, rows)
    from agenticrs.data.registry import resolve_dataset

    return resolve_dataset(dataset, cache_dir=cache_dir)


def measure_processing(dataset: str, cache_dir: Path, rows: int, queue: mp.Queue) -> None:
    """Rows per second from raw files to the training cache (a fresh cache, nothing reused)."""
    from agenticrs.features.pipeline import process_dataset

    spec = resolve_spec(dataset, cache_dir, rows)
    scratch = Path(tempfile.mkdtemp(prefix="agenticrs-bench-process-"))
    try:
        started = time.perf_counter()
        data = process_dataset(spec, scratch)
        seconds = time.perf_counter() - started
        queue.put({"process_rows_per_s": data.total_rows / seconds, "rows": data.total_rows, "seconds": seconds,
                   "process_peak_rss_mb": _peak_rss_mb()})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mlp_ceiling(width: int, hidden: list[int], batch_size: int, dropout: float, batch_norm: bool, steps: int = 30) -> float:
    """Samples/s of the model's MLP alone: forward, backward and Adam on random dense input."""
    import torch

    from agenticrs.models.layers import MLP
    from agenticrs.train.optim import make_optimizer

    torch.manual_seed(0)
    mlp = MLP(width, hidden, dropout=dropout, batch_norm=batch_norm, output_dim=1)
    optimizer = make_optimizer(list(mlp.parameters()), "adam", 1e-3)  # the trainer's own optimizer
    x = torch.randn(batch_size, width)
    y = (torch.rand(batch_size) < 0.3).float()
    warmup = min(5, steps)
    for i in range(steps + warmup):
        if i == warmup:
            started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(mlp(x).squeeze(-1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def latency_ms_per_1000(model, split, repeats: int = 20) -> float:
    """Median milliseconds to score 1,000 candidates (one eval-mode forward pass, no gradients)."""
    import torch

    from agenticrs.features.batching import iterate_batches

    batch = next(iterate_batches(split, 1000, label_index=None))
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            started = time.perf_counter()
            model(batch)
            if i >= 3:  # warm-up first
                times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


_RECORDED_TRAIN_SETTINGS = (
    "optimizer", "learning_rate", "embedding_l2", "weight_l2", "lr_schedule", "warmup_steps", "max_steps", "epochs",
    "eval_every_steps", "patience", "grad_clip", "time_budget_s",
)  # fmt: skip


def run_one(dataset: str, model: str, seed: int, args: dict[str, Any], queue: mp.Queue) -> None:
    """Train and evaluate one model with one seed; put its record on the queue."""
    from agenticrs.config import apply_overrides
    from agenticrs.features.pipeline import process_dataset
    from agenticrs.models.base import IncompatibleDataError, build_model
    from agenticrs.train.config import RunConfig
    from agenticrs.train.ctr import evaluate
    from agenticrs.train.workflow import train_run

    cache_dir = Path(args["cache_dir"])
    spec = resolve_spec(dataset, cache_dir, args["rows"])
    data = process_dataset(spec, cache_dir)
    raw = {"dataset": dataset, "model": model, "train": {"seed": seed}}
    raw = apply_overrides(raw, args["overrides"] + args["model_overrides"].get(model, []))
    config = RunConfig.model_validate(raw)
    try:
        build_model(model, data.schema, config.model_params)
    except IncompatibleDataError as exc:
        queue.put({"model": model, "skipped": str(exc)})
        return
    with tempfile.TemporaryDirectory(prefix="agenticrs-bench-runs-") as runs:
        trained = train_run(config, runs, cache_dir, data=data)
        if args.get("skip_test"):  # tuning: the validation split only, never a test figure
            queue.put({"model": model, "seed": seed, "valid_auc": trained.result.valid.get("auc"),
                       "stopped_by": trained.result.stopped_by, "steps": trained.result.steps,
                       "best_step": trained.result.best_step})
            return
        test_split = data.splits.get("test") or data.splits.get("valid")
        eval_started = time.perf_counter()
        test_metrics, _ = evaluate(trained.model, test_split, ["auc", "logloss"], config.train.eval_batch_size)
        eval_seconds = time.perf_counter() - eval_started
        latency = latency_ms_per_1000(trained.model, test_split)
        record = {
            "model": model,
            "dataset": dataset if dataset != CRITEO_LAYOUT else f"{CRITEO_LAYOUT}-{args['rows']}",
            "seed": seed,
            "auc": test_metrics["auc"],
            "logloss": test_metrics["logloss"],
            "train_samples_per_s": trained.result.train_samples_per_s,
            "eval_samples_per_s": test_split.rows / eval_seconds,
            "latency_ms_per_1000": latency,
            "peak_rss_mb": _peak_rss_mb(),
            "parameters": sum(p.numel() for p in trained.model.parameters()),
            "best_epoch": trained.result.best_epoch,
            "epochs_run": trained.result.epochs_run,
            "steps": trained.result.steps,
            "best_step": trained.result.best_step,
            "stopped_by": trained.result.stopped_by,
            "valid_auc": trained.result.valid.get("auc"),
            "batch_size": config.train.batch_size,
            "train_settings": {k: v for k, v in trained.run.config.train.model_dump().items()
                               if k in _RECORDED_TRAIN_SETTINGS},
            "model_params": trained.run.config.model_params,
        }
    if args.get("skip_ceiling"):
        record["mlp_ceiling_samples_per_s"] = record["throughput_ratio"] = None
        queue.put(record)
        return
    ceiling_spec = trained.model.mlp_ceiling_spec()
    if ceiling_spec is None:  # no MLP of its own: the DeepFM-default MLP on the same field width
        ceiling_spec = (trained.model.config.embedding_dim * max(1, len(data.schema.categorical)), [400, 400, 400])
    width, hidden = ceiling_spec
    model_cfg = trained.model.config.model_dump()
    record["mlp_ceiling_samples_per_s"] = mlp_ceiling(
        width,
        hidden,
        config.train.batch_size,
        float(model_cfg.get("dropout", model_cfg.get("net_dropout", 0.2)) or 0.0),
        bool(model_cfg.get("batch_norm", True)),
        steps=int(args.get("ceiling_steps", 30)),
    )
    record["throughput_ratio"] = record["train_samples_per_s"] / record["mlp_ceiling_samples_per_s"]
    queue.put(record)


def _in_subprocess(target, *args) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = None
    while process.is_alive() or not queue.empty():
        try:
            result = queue.get(timeout=1.0)
            break
        except Exception:  # queue.Empty: keep waiting while the worker runs
            continue
    process.join()
    if result is None:
        raise RuntimeError(f"benchmark worker {target.__name__}{args[:3]} exited with code {process.exitcode}")
    return result


def summarise(records: list[dict[str, Any]]) -> Table:
    table = Table(title=f"CTR benchmark — {records[0]['dataset']}" if records else "CTR benchmark")
    columns = ["model", "seeds", "AUC", "logloss", "params", "train samples/s", "× MLP ceiling", "ms / 1k cand.",
               "peak RSS MB", "steps (best)", "stopped by"]
    for c in columns:
        table.add_column(c, justify="left" if c == "model" else "right")
    models = list(dict.fromkeys(r["model"] for r in records))
    for m in models:
        rs = [r for r in records if r["model"] == m]

        def ms(key: str, fmt: str, rs: list[dict[str, Any]] = rs) -> str:
            values = [r[key] for r in rs]
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{mean:{fmt}} ± {std:{fmt}}"

        table.add_row(
            m,
            str(len(rs)),
            ms("auc", ".4f"),
            ms("logloss", ".4f"),
            f"{rs[0]['parameters']:,}",
            f"{statistics.fmean(r['train_samples_per_s'] for r in rs):,.0f}",
            f"{statistics.fmean(r['throughput_ratio'] for r in rs):.2f}" if all(r.get("throughput_ratio") for r in rs)
            else "",
            f"{statistics.fmean(r.get('latency_ms_per_1000', float('nan')) for r in rs):.1f}",
            f"{max(r['peak_rss_mb'] for r in rs):,.0f}",
            ", ".join(f"{r.get('steps', '?')} ({r.get('best_step', '?')})" for r in rs),
            ", ".join(sorted({str(r.get("stopped_by", "?")) for r in rs})),
        )
    return table


def run_overrides(args: argparse.Namespace) -> tuple[list[str], dict[str, list[str]]]:
    """(overrides for every model, per-model overrides) from `--config`, `--set`, `--epochs` and
    `--max-steps`, in that order of precedence (later wins; per-model entries win over all)."""
    bench_config = yaml.safe_load(args.config.read_text()) if args.config else {}
    overrides = list(bench_config.get("overrides", [])) + list(args.overrides)
    model_overrides = {k: list(v) for k, v in (bench_config.get("models") or {}).items()}
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.max_steps:
        overrides.append(f"train.max_steps_per_epoch={args.max_steps}")
    if args.step_budget:
        overrides.append(f"train.max_steps={args.step_budget}")
    return overrides, model_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"registered data set, spec YAML, or '{CRITEO_LAYOUT}'")
    parser.add_argument("--models", default="lr,fm,deepfm,dcnv2", help="comma-separated model names")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    parser.add_argument("--json", type=Path, required=True, help="output JSON path")
    parser.add_argument("--rows", type=int, default=1_000_000, help=f"training rows of '{CRITEO_LAYOUT}'")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (default: the trainer's, early stopping)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    parser.add_argument("--step-budget", type=int, default=None,
                        help="the same optimiser-step budget for every model (train.max_steps)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="run-config override, e.g. train.embedding_l2=0.05 or model_params.dropout=0.1")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML with `overrides: [k=v, ...]` for all models and `models: {name: [k=v, ...]}`")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/agenticrs"))
    parser.add_argument("--ceiling-steps", type=int, default=30,
                        help="timed optimiser steps of the MLP ceiling (a quick check needs 1; a figure wants 30)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the records already in --json and run only the missing (model, seed) pairs")
    args = parser.parse_args(argv)

    overrides, model_overrides = run_overrides(args)
    console = Console(width=170)
    processing = _in_subprocess(measure_processing, args.dataset, args.cache_dir, args.rows)
    console.print(f"processing: {processing['rows']:,} rows in {processing['seconds']:.2f} s = "
                  f"{processing['process_rows_per_s']:,.0f} rows/s (peak RSS {processing['process_peak_rss_mb']:.0f} MB)")
    records = json.loads(args.json.read_text()) if args.resume and args.json.exists() else []
    done = {(r["model"], r["seed"]) for r in records}
    worker_args = {"cache_dir": str(args.cache_dir), "rows": args.rows, "overrides": overrides,
                   "model_overrides": model_overrides, "ceiling_steps": args.ceiling_steps}
    console.print(f"overrides: {overrides}; per model: {model_overrides}")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for seed in range(1, args.seeds + 1):
            if (model, seed) in done:
                continue
            record = _in_subprocess(run_one, args.dataset, model, seed, worker_args)
            if "skipped" in record:
                console.print(f"  {model}: skipped — {record['skipped']}")
                break
            record["process_rows_per_s"] = processing["process_rows_per_s"]
            records.append(record)
            ratio = record["throughput_ratio"]
            console.print(f"  {model} seed {seed}: AUC {record['auc']:.4f}  logloss {record['logloss']:.4f}  "
                          f"{record['train_samples_per_s']:,.0f} samples/s"
                          + (f" ({ratio:.2f} × MLP)" if ratio else "")
                          + f"  stopped by {record['stopped_by']} at step {record['steps']} (best {record['best_step']})")
            atomic_write_json(args.json, records)  # written as we go (atomically): nothing is lost
    console.print(summarise(records))
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""AutoPerf's serving cost of zoo models, as ratios to LR measured in the same process.

Each model (LR first) is trained briefly on the data set (`--train-steps`: latency, size and memory
do not depend on how well a model is trained) with its default configuration, then measured with
`agenticrs.agents.autoperf.measure_run` on 1,000 real valid rows: forward only, one thread, p50 and
p99 over `--repeats` timed passes per round. Rounds are interleaved (LR, A, B, C, LR, A, ...): a
model's latency is the median over rounds, and its ratio to LR is taken within each round (adjacent
measurements, so most of a shared machine's drift cancels), then the median over rounds. The export
size (ONNX, or the state dict where the model cannot be exported) is measured once
per model. Prints a table and writes JSON.

    python bench/autoperf_benchmark.py --dataset sim-small --models deepfm,dcnv2,autoint --rounds 5 \\
        --json bench/results/autoperf.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agenticrs import api
from agenticrs.agents.autoperf import measure_run
from agenticrs.runtime.files import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sim-small")
    parser.add_argument("--models", default="deepfm,dcnv2,autoint", help="compared with lr, which is always measured")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30, help="timed forward passes per model and round")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs-dir", default="bench/out/autoperf")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default="bench/results/autoperf.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = ["lr", *[m for m in args.models.split(",") if m and m != "lr"]]
    console = Console()

    started = time.perf_counter()
    runs: dict[str, Path] = {}
    stopped: dict[str, str] = {}
    for model in models:
        trained = api.train(args.dataset, model, train={"max_steps": args.train_steps, "seed": 1},
                            runs_dir=args.runs_dir, cache_dir=args.cache_dir)
        runs[model], stopped[model] = trained.run_dir, trained.stopped_by
    p50: dict[str, list[float]] = {m: [] for m in models}
    p99: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(args.rounds):
        for model in models:  # interleaved: every round measures every model once
            report = measure_run(runs[model], rows=args.rows, repeats=args.repeats, export=False, threads=args.threads)
            p50[model].append(report.latency_p50_ms)
            p99[model].append(report.latency_p99_ms)
    records: list[dict[str, Any]] = []
    for model in models:
        full = measure_run(runs[model], rows=args.rows, repeats=1, export=True, threads=args.threads)
        records.append({
            "model": model, "run": str(runs[model]), "train_steps": args.train_steps, "stopped_by": stopped[model],
            "latency_p50_ms": statistics.median(p50[model]), "latency_p99_ms": statistics.median(p99[model]),
            "latency_p50_rounds": p50[model], "latency_p99_rounds": p99[model],
            "parameters": full.parameters, "memory_mb": full.memory_mb, "export_bytes": full.export_bytes,
            "export_format": full.export_format, "rows_source": full.details["rows_source"],
            "export_reason": full.details.get("export_reason"),
        })
    for record in records:  # the ratio within each round (adjacent measurements), then its median over rounds
        for q, times in (("p50", p50), ("p99", p99)):
            ratios = [a / b for a, b in zip(times[record["model"]], times["lr"], strict=True)]
            record[f"{q}_ratio_rounds"] = ratios
            record[f"{q}_ratio_to_lr"] = statistics.median(ratios)

    table = Table(title=f"AutoPerf on {args.dataset}: per 1,000 candidates, {args.threads} thread(s), "
                        f"median of {args.rounds} rounds x {args.repeats} passes")
    for column in ("model", "p50 ms", "p99 ms", "p50 / LR", "p99 / LR", "parameters", "memory MB", "export KB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in records:
        export = "—" if r["export_bytes"] is None else f"{r['export_bytes'] / 1024:.0f} ({r['export_format']})"
        table.add_row(r["model"], f"{r['latency_p50_ms']:.3f}", f"{r['latency_p99_ms']:.3f}", f"{r['p50_ratio_to_lr']:.2f}",
                      f"{r['p99_ratio_to_lr']:.2f}", f"{r['parameters']:,}", f"{r['memory_mb']:.2f}", export)
    console.print(table)
    result = {
        "benchmark": "autoperf", "dataset": args.dataset, "rows": args.rows, "rounds": args.rounds,
        "repeats": args.repeats, "threads": args.threads, "train_steps": args.train_steps,
        "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor() or None,
        "seconds": time.perf_counter() - started, "models": records,
    }
    if args.json:
        atomic_write_json(args.json, result)
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

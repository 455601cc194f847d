"""Render benchmark JSON files (from ctr_benchmark.py) as the Markdown tables of the README.

    python bench/report.py bench/out/frappe.json bench/out/movielens.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _mean_std(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(values: list[float], fmt: str) -> str:
    return f"{statistics.fmean(values):{fmt}}" if values else ""


def markdown(records: list[dict]) -> str:
    """One row per model: mean ± std over seeds. `× DeepFM` is the model's training throughput over
    DeepFM's in the same benchmark run (a peer measured on the same machine at the same time);
    `steps (best)` and `stopped by` say what ended each seed's run."""
    deepfm = [r["train_samples_per_s"] for r in records if r["model"] == "deepfm"]
    deepfm_speed = statistics.fmean(deepfm) if deepfm else None
    lines = [
        "| model | seeds | test AUC | test logloss | parameters | train samples/s | × DeepFM | × MLP ceiling "
        "| ms / 1k candidates | peak RSS MB | steps (best) | stopped by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in records):
        rs = [r for r in records if r["model"] == model]
        speed = statistics.fmean(r["train_samples_per_s"] for r in rs)
        ratios = [r["throughput_ratio"] for r in rs if r.get("throughput_ratio")]
        latency = [r["latency_ms_per_1000"] for r in rs if "latency_ms_per_1000" in r]
        steps = ", ".join(f"{r['steps']} ({r['best_step']})" for r in rs if "steps" in r)
        stopped = ", ".join(sorted({r["stopped_by"] for r in rs if "stopped_by" in r}))
        lines.append(
            f"| {model} | {len(rs)} | {_mean_std([r['auc'] for r in rs], 4)} | {_mean_std([r['logloss'] for r in rs], 4)} "
            f"| {rs[0]['parameters']:,} | {speed:,.0f} | {f'{speed / deepfm_speed:.2f}' if deepfm_speed else ''} "
            f"| {_cell(ratios, '.2f')} | {_cell(latency, '.1f')} | {max(r['peak_rss_mb'] for r in rs):,.0f} "
            f"| {steps} | {stopped} |"
        )
    process = statistics.fmean(r["process_rows_per_s"] for r in records)
    lines.append("")
    lines.append(f"Processing (raw files → training cache): {process:,.0f} rows/s.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> list[str]:
    parser = argparse.ArgumentParser(description="Render ctr_benchmark.py JSON files as the README's Markdown tables.")
    parser.add_argument("paths", nargs="+", metavar="JSON", help="benchmark result files")
    return parser.parse_args(argv).paths


def main(argv: list[str] | None = None) -> int:
    paths = parse_args(argv)
    for path in paths:
        records = json.loads(Path(path).read_text())
        if records:
            print(f"### {records[0]['dataset']}\n")
            print(markdown(records))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

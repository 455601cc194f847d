"""Render the README table of bench/gr_benchmark.py results (one or more JSON files)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]


def label(record: dict) -> str:
    """The row a record belongs to: its model, or its variant (e.g. "tiger (collaborative IDs)")."""
    return record.get("model_label", record["model"])


def parse_args(argv: list[str] | None) -> list[str]:
    parser = argparse.ArgumentParser(description="Render gr_benchmark.py JSON files as the README's Markdown table.")
    parser.add_argument("paths", nargs="+", metavar="JSON", help="benchmark result files")
    return parser.parse_args(argv).paths


def main(argv: list[str] | None = None) -> int:
    paths = parse_args(argv)
    records = [r for p in paths for r in json.loads(Path(p).read_text())]
    print("| data set | model | seeds | " + " | ".join(KEYS) + " | s/epoch | beam ms/user |")
    print("|---|---|---|" + "---|" * (len(KEYS) + 2))
    groups = dict.fromkeys((r["dataset"], label(r)) for r in records)  # first-seen order
    for dataset, model in groups:
        rows = [r for r in records if (r["dataset"], label(r)) == (dataset, model)]
        cells = []
        for key in KEYS:
            values = np.array([r[key] for r in rows])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if len(rows) > 1 else f"{values[0]:.4f}")
        beam = [r["beam_latency_ms_per_user"] for r in rows if r["beam_latency_ms_per_user"] is not None]
        epoch = np.mean([r["train_s_per_epoch"] for r in rows])
        latency = f"{np.mean(beam):.1f}" if beam else ""
        print(f"| {dataset} | {model} | {len(rows)} | " + " | ".join(cells) + f" | {epoch:.0f} | {latency} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Render the README table of bench/gr_benchmark.py results (one or more JSON files), or with
`--paired METHOD BASELINE` the paired per-seed effect of one model over another (the README's
"MDGR − TIGER over seeds 1-3" figures), or with `--curve` the quality–steps curve of parallel decoders
(the `steps_curve` gr_benchmark.py records for MDGR) over seeds, so that every such figure has a
command behind it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
PAIRED_KEYS = [*KEYS, "valid_ndcg@10"]


def label(record: dict) -> str:
    """The row a record belongs to: its model, or its variant (e.g. "tiger (collaborative IDs)")."""
    return record.get("model_label", record["model"])


def row_key(by: str):
    """The row a record belongs to under `--by`: its label (variants apart) or its model name."""
    return label if by == "label" else (lambda record: record["model"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Render gr_benchmark.py JSON files as the README's Markdown table.")
    parser.add_argument("paths", nargs="+", metavar="JSON", help="benchmark result files")
    parser.add_argument("--paired", nargs=2, metavar=("METHOD", "BASELINE"),
                        help="instead of the table: the paired effect of METHOD over BASELINE (model names or "
                             "labels), seed by seed on each data set, with its 95%% interval")  # fmt: skip
    parser.add_argument("--by", choices=["label", "model"], default="label",
                        help="table rows per model label (default: variants apart) or per model name (one row "
                             "for records of one model whose labels differ between files)")  # fmt: skip
    parser.add_argument("--curve", action="store_true",
                        help="instead of the table: the quality-steps curve (records with a steps_curve), one "
                             "row per data set, model and number of decoding steps, over seeds")  # fmt: skip
    return parser.parse_args(argv)


def load(paths: list[str]) -> list[dict]:
    records = []
    for path in paths:
        for record in json.loads(Path(path).read_text()):
            records.append({**record, "_file": path})
    return records


def by_seed(records: list[dict], dataset: str, name: str) -> dict[int, dict]:
    """The records of one model (its name or its label) on one data set, keyed by seed; two records of
    one seed (the same model in two files) are ambiguous and refused, naming both files."""
    out: dict[int, dict] = {}
    for record in records:
        if record["dataset"] != dataset or name not in (record["model"], label(record)):
            continue
        if (seen := out.get(record["seed"])) is not None:
            raise SystemExit(
                f"{name!r} has two records of {dataset} seed {record['seed']}: {seen['_file']} ({label(seen)}) "
                f"and {record['_file']} ({label(record)}); pass only the files of the pairs to compare"
            )
        out[record["seed"]] = record
    return out


def paired(records: list[dict], method: str, baseline: str) -> list[str]:
    """Lines: per data set, the seeds both models have and the paired effect on each metric."""
    from agenticrs.agents.paper.verdict import paired_effect

    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        ours, theirs = by_seed(records, dataset, method), by_seed(records, dataset, baseline)
        seeds = sorted(set(ours) & set(theirs))
        if not seeds:
            continue
        lines.append(f"{dataset}: {method} - {baseline}, seeds {', '.join(map(str, seeds))}")
        for key in PAIRED_KEYS:
            if any(ours[s].get(key) is None or theirs[s].get(key) is None for s in seeds):
                continue  # absent, or null in an evaluation-only record (no validation run)
            effect = paired_effect([ours[s][key] for s in seeds], [theirs[s][key] for s in seeds])
            lines.append(f"  {key:14s} {effect.method_mean:.4f} vs {effect.baseline_mean:.4f}: "
                         f"{effect.interval()} {effect.verdict}")  # fmt: skip
    if not lines:
        raise SystemExit(f"no data set has a seed with both {method!r} and {baseline!r} in these files")
    return lines


def table(records: list[dict], by: str = "label") -> list[str]:
    lines = ["| data set | model | seeds | " + " | ".join(KEYS) + " | s/epoch | beam ms/user |",
             "|---|---|---|" + "---|" * (len(KEYS) + 2)]  # fmt: skip
    row_of = row_key(by)
    groups = dict.fromkeys((r["dataset"], row_of(r)) for r in records)  # first-seen order
    for dataset, model in groups:
        rows = [r for r in records if (r["dataset"], row_of(r)) == (dataset, model)]
        cells = [mean_sd([r[key] for r in rows]) for key in KEYS]
        beam = [r["beam_latency_ms_per_user"] for r in rows if r["beam_latency_ms_per_user"] is not None]
        # an evaluation-only record (another decoding of a trained run) has no training time
        epochs = [r["train_s_per_epoch"] for r in rows if r.get("train_s_per_epoch") is not None]
        epoch = f"{np.mean(epochs):.0f}" if epochs else ""
        latency = f"{np.mean(beam):.1f}" if beam else ""
        lines.append(f"| {dataset} | {model} | {len(rows)} | " + " | ".join(cells) + f" | {epoch} | {latency} |")
    return lines


def mean_sd(values: list[float]) -> str:
    """A cell: the mean ± the (population) SD over seeds, or the value itself for one seed."""
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def curve(records: list[dict], by: str = "label") -> list[str]:
    """Rows per (data set, model, steps, schedule) of the records' `steps_curve` points: metrics and
    decoding latency averaged over the seeds that have the point."""
    row_of = row_key(by)
    points: dict[tuple, list[dict]] = {}
    for record in records:
        for point in record.get("steps_curve") or []:
            key = (record["dataset"], row_of(record), point["steps"], point.get("schedule", ""))
            points.setdefault(key, []).append(point)
    if not points:
        raise SystemExit("no record in these files has a steps_curve (gr_benchmark.py records one for MDGR)")
    lines = ["| data set | model | steps | schedule | seeds | " + " | ".join(KEYS) + " | ms/user |",
             "|---|---|---|---|---|" + "---|" * (len(KEYS) + 1)]  # fmt: skip
    for (dataset, model, steps, schedule), rows in points.items():
        cells = [mean_sd([row[key] for row in rows]) for key in KEYS]
        latency = f"{np.mean([row['latency_ms_per_user'] for row in rows]):.1f}"
        lines.append(f"| {dataset} | {model} | {steps} | {schedule} | {len(rows)} | " + " | ".join(cells)
                     + f" | {latency} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    records = load(args.paths)
    if args.paired:
        lines = paired(records, *args.paired)
    else:
        lines = curve(records, args.by) if args.curve else table(records, args.by)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""RCLRec against TIGER on purchase targets, with the curriculum ablation (a sibling of gr_benchmark.py).

    python bench/rclrec_benchmark.py --dataset sim-small-behaviours --seeds 1 \
        --json bench/results/rclrec_sim_small.json

Multi-behaviour sequences (the simulator's clicks, carts and purchases); validation and test
targets are each user's last two purchases (`train.targets: conversion`, full ranking,
Recall/NDCG@{5,10,20}); settings from bench/configs/gr.yaml (the same for every variant: model
size, step and time budget, early stopping on validation NDCG@10). Variants:
- `tiger`: the baseline (no behaviour types, no curriculum);
- `rclrec-nocurriculum`: RCLRec with K = 0 (TIGER + behaviour embeddings and the target's
  behaviour at BOS): what the backbone changes alone give;
- `rclrec`: the full method (K = 3, quality weighting); its test metrics with the anchor prefix
  at inference (the spec's default) and, from the same trained model, without a prefix
  (`rclrec/no-prefix`: the curriculum only as a training signal);
- `rclrec-noquality`: the curriculum with a fixed weight alpha (no quality weighting, no L_q);
- `recent-intent` (always added, no model): the user's carted items, then clicked ones, most
  recent first - in the simulator every purchase follows a click of the same item.
`--set MODEL.key=value` overrides the config as in gr_benchmark.py (MODEL = tiger or rclrec).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agenticrs.config import apply_overrides
from agenticrs.gr.sequences import conversion_split, resolve_sequences
from agenticrs.gr.train import evaluate_sequential, load_sequential_run
from agenticrs.gr.workflow import SequentialJob, run_sequential_job
from agenticrs.progress import RichReporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gr_benchmark import METRIC_KEYS, job_for

console = Console()
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "tiger": ("tiger", []),
    "rclrec-nocurriculum": ("rclrec", ["model_params.curriculum_size=0"]),
    "rclrec": ("rclrec", []),
    "rclrec-noquality": ("rclrec", ["model_params.quality_weighting=false"]),
}


def recent_intent(examples) -> dict[str, float]:
    """Reference ranking without a model: the user's carted items, then the clicked ones, each
    most recent first (in the simulator a purchase always follows a click of the same item)."""
    from agenticrs.gr.base import CART, PURCHASE
    from agenticrs.gr.metrics import rank_metrics

    lists = []
    for u in range(len(examples)):
        s, e = examples.offsets[u], examples.offsets[u + 1]
        items, kinds = examples.items[s:e][::-1].tolist(), examples.behaviours[s:e][::-1].tolist()
        order = [i for i, k in zip(items, kinds, strict=True) if k == CART]
        order += [i for i, k in zip(items, kinds, strict=True) if k != PURCHASE]
        ranked = list(dict.fromkeys(order))[:20]
        lists.append(ranked + [0] * (20 - len(ranked)))
    return rank_metrics(np.array(lists), examples.targets, (5, 10, 20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sim-small-behaviours")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value")
    parser.add_argument("--runs-dir", type=Path, default=Path("bench/out/rclrec-runs"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--append", action="store_true", help="add to the records already in --json")
    parser.add_argument("--json", type=Path, default=Path("bench/results/rclrec_sim_small.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = resolve_sequences(args.dataset)
    records: list[dict[str, Any]] = json.loads(args.json.read_text()) if args.append and args.json.exists() else []
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        model, extra = VARIANTS[variant]
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            job = job_for(args.dataset, model, seed, args.set, args.runs_dir)
            raw = apply_overrides(job.model_dump(mode="json"), extra)
            raw["name"] = f"{variant}-{args.dataset}-seed{seed}"
            raw["train"]["num_threads"] = args.threads
            job = SequentialJob.model_validate(raw)
            folder = args.runs_dir / job.name
            if folder.exists():
                shutil.rmtree(folder)
            started = time.perf_counter()
            folder, result = run_sequential_job(job, args.runs_dir, None, RichReporter(console), data=data,
                                                folder=folder)  # fmt: skip
            wall = time.perf_counter() - started
            base = {"model": model, "dataset": args.dataset, "seed": seed, "valid_ndcg@10": result.valid.get("ndcg@10"),
                    "train_s_per_epoch": result.seconds_per_epoch,
                    "epochs": result.epochs_run, "best_epoch": result.best_epoch, "steps": result.steps,
                    "stopped_by": result.stopped_by, "wall_s": wall, "config": job.model_dump(mode="json")}  # fmt: skip
            records.append({"variant": variant, **{k: result.test.get(k) for k in METRIC_KEYS}, **base})
            if variant == "rclrec":  # the same trained model without an inference prefix
                trained, _ = load_sequential_run(folder)
                trained.config.inference_prefix = "none"
                splits = conversion_split(data)
                metrics = evaluate_sequential(trained, splits.test, job.train.ks, job.train.eval_batch_size)
                records.append({"variant": "rclrec/no-prefix", **{k: metrics.get(k) for k in METRIC_KEYS}, **base})
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))
    splits = conversion_split(data)
    if not any(r["variant"] == "recent-intent" for r in records):
        reference = recent_intent(splits.test)
        records.append({"variant": "recent-intent", **{k: reference[k] for k in METRIC_KEYS}, "model": None,
                        "dataset": args.dataset, "seed": 0, "train_s_per_epoch": 0.0, "steps": 0,
                        "stopped_by": "no training"})  # fmt: skip
        args.json.write_text(json.dumps(records, indent=1))
    table = Table(title=f"purchase targets (each user's last purchase), full ranking: {args.dataset}, "
                        f"{len(splits.test)} test users")  # fmt: skip
    for col in ["variant", "seed", *METRIC_KEYS, "s/epoch", "steps", "stopped_by"]:
        table.add_column(col)
    for r in records:
        table.add_row(r["variant"], str(r["seed"]), *(f"{r[k]:.4f}" for k in METRIC_KEYS),
                      f"{r['train_s_per_epoch']:.0f}", str(r["steps"]), r["stopped_by"])  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

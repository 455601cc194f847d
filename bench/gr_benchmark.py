"""Generative-recommendation benchmark: SASRec, TIGER (HSTU, MDGR, ...) under the leave-one-out protocol.

    python bench/gr_benchmark.py --dataset amazon_beauty --models sasrec,tiger --seeds 3 --json OUT

Per model and seed: one run (`agenticrs.gr.workflow.run_sequential_job`, the same path as
`agenticrs train --task sequential`), full ranking over all items, Recall/NDCG@{5,10,20} on the
test targets at the best validation epoch, training seconds per epoch, and (for models that
decode) beam-search latency per user measured on 512 test users. Model and training settings
come from bench/configs/gr.yaml (per data set and model), `--set model.key=value` overrides them.
The tokenizer statistics of TIGER runs are printed and stored. Models with a decoding-step setting
(MDGR's `steps`) also get a quality-steps curve: test Recall/NDCG@{5,10,20} and decoding latency per
user for every step count 1..ID length (`steps_curve` in the record; `--curve-users` caps the users).
Each run writes its record to the JSON as soon as it ends; `--resume` skips (model, seed) pairs already in OUT, reads
back a run that finished training before its record was written, and continues a killed run from its checkpoint
(wall_s then counts only the resumed part).
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
import yaml
from rich.console import Console
from rich.table import Table

from agenticrs.config import apply_overrides, deep_merge
from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.workflow import SequentialJob, run_or_resume_sequential_job
from agenticrs.progress import RichReporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gr_table import label as row_label

console = Console()
CONFIGS = Path(__file__).with_name("configs") / "gr.yaml"
METRIC_KEYS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]


def job_for(dataset: str, model: str, seed: int, overrides: list[str], runs_dir: Path = Path("runs")) -> SequentialJob:
    """The job of (data set, model, seed): defaults, then the data set's settings, then `--set`.

    `tokenizer.collaborative_run` may name the SASRec run of the same seed with the placeholders
    {runs_dir}, {dataset} and {seed}, so one command trains SASRec and then TIGER on its item table.
    """
    table = yaml.safe_load(CONFIGS.read_text()) if CONFIGS.exists() else {}
    base = table.get("defaults", {}).get(model, {})
    specific = table.get(dataset, {}).get(model, {})
    raw = {"dataset": dataset, "model": model, **deep_merge(base, specific)}
    raw = apply_overrides(raw, [o.split(".", 1)[1] for o in overrides if o.startswith(model + ".")])
    raw.setdefault("train", {})["seed"] = seed
    raw["name"] = f"{model}-{dataset}-seed{seed}"
    tokenizer = raw.get("tokenizer") or {}
    if isinstance(tokenizer.get("collaborative_run"), str):
        tokenizer["collaborative_run"] = tokenizer["collaborative_run"].format(
            runs_dir=runs_dir, dataset=dataset, seed=seed
        )
    return SequentialJob.model_validate(raw)


def beam_latency_ms(folder: Path, dataset: str, cache_dir: Path | None, users: int = 512) -> float | None:
    from agenticrs.gr.train import decoding_latency_ms, load_sequential_run

    model, _ = load_sequential_run(folder)
    if not hasattr(model, "beam_search"):
        return None
    return decoding_latency_ms(model, leave_one_out(resolve_sequences(dataset, cache_dir)).test, users)


def steps_curve(folder: Path, dataset: str, cache_dir: Path | None, users: int | None = None,
                latency_users: int = 512) -> list[dict[str, Any]] | None:
    """Test metrics and decoding latency per user of a run for every decoding step count 1..L
    (models whose config has `steps`, e.g. MDGR); None for other models."""
    from agenticrs.gr.train import decoding_latency_ms, evaluate_sequential, load_sequential_run

    model, config = load_sequential_run(folder)
    if "steps" not in type(model.config).model_fields or not hasattr(model, "levels"):
        return None
    data = resolve_sequences(dataset, cache_dir)
    test = leave_one_out(data).test
    if users is not None and users < len(test):
        test = test.sample(users, 0)
    batch_size = config.train.eval_batch_size
    curve = []
    for steps in range(1, model.levels + 1):
        model.config = model.config.model_copy(update={"steps": steps})
        metrics = evaluate_sequential(model, test, (5, 10, 20), batch_size, model.config.max_len)
        latency = decoding_latency_ms(model, test, latency_users)
        curve.append({"steps": steps, "schedule": model.config.schedule, "users": len(test),
                      **{k: metrics[k] for k in METRIC_KEYS}, "latency_ms_per_user": latency})  # fmt: skip
        console.print(f"  {model.name} steps={steps}: recall@10 {metrics['recall@10']:.4f}, "
                      f"ndcg@10 {metrics['ndcg@10']:.4f}, {latency:.2f} ms/user")  # fmt: skip
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon_beauty")
    parser.add_argument("--models", default="sasrec,tiger")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value, e.g. sasrec.train.epochs=50")
    parser.add_argument("--runs-dir", type=Path, default=Path("bench/out/gr-runs"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/out/gr.json"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--curve-users", type=int, default=None,
                        help="test users for MDGR's quality-steps curve (default: all)")
    parser.add_argument("--label", default=None,
                        help="a variant name added to each record's row label, e.g. 'd128' for an ablation arm")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    records: list[dict[str, Any]] = json.loads(args.json.read_text()) if args.resume and args.json.exists() else []
    done = {(r["model"], r["seed"]) for r in records}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if (model, seed) in done:
                continue
            job = job_for(args.dataset, model, seed, args.set, args.runs_dir)
            folder = args.runs_dir / job.name
            started = time.perf_counter()
            if not args.resume and folder.exists():
                shutil.rmtree(folder)
            # with --resume a run that finished (killed while its record was being evaluated) is read
            # back and a killed one continues from its checkpoint: hours of training are never redone
            folder, result = run_or_resume_sequential_job(job, folder, args.cache_dir, RichReporter(console))
            tokenizer = folder / "tokenizer.json"
            token_info = json.loads(tokenizer.read_text()) if tokenizer.exists() else None
            label = model
            if token_info:  # e.g. "tiger (collaborative IDs)", "tiger (text IDs, rq_vae)"
                method = "" if token_info["method"] == "rq_kmeans" else f", {token_info['method']}"
                label = f"{model} ({token_info['source']} IDs{method})"
            if args.label:  # an ablation arm gets its own row: "tiger (collaborative IDs) [d128]"
                label = f"{label} [{args.label}]"
            record = {
                "model": model,
                "model_label": label,
                "dataset": args.dataset,
                "seed": seed,
                **{k: result.test.get(k) for k in METRIC_KEYS},
                "valid_ndcg@10": result.valid.get("ndcg@10"),
                "train_s_per_epoch": result.seconds_per_epoch,
                "epochs": result.epochs_run,
                "steps": result.steps,
                "best_epoch": result.best_epoch,
                "stopped_by": result.stopped_by,
                "beam_latency_ms_per_user": beam_latency_ms(folder, args.dataset, args.cache_dir),
                "wall_s": time.perf_counter() - started,
                "steps_curve": steps_curve(folder, args.dataset, args.cache_dir, args.curve_users),
                "tokenizer": token_info,
                "config": job.model_dump(mode="json"),
            }
            records.append(record)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))
    table = Table(title=f"leave-one-out, full ranking, test split: {args.dataset}")
    for col in ["model", "seed", *METRIC_KEYS, "s/epoch", "beam ms/user"]:  # model = its label
        table.add_column(col, justify="right" if col != "model" else "left")
    for r in records:
        beam = r["beam_latency_ms_per_user"]
        table.add_row(row_label(r), str(r["seed"]), *(f"{r[k]:.4f}" for k in METRIC_KEYS),
                      f"{r['train_s_per_epoch']:.1f}", "" if beam is None else f"{beam:.1f}")
    for model in dict.fromkeys(map(row_label, records)):
        rows = [r for r in records if row_label(r) == model]
        means = [np.mean([r[k] for r in rows]) for k in METRIC_KEYS]
        stds = [np.std([r[k] for r in rows]) for k in METRIC_KEYS]
        table.add_row(f"{model} mean ± std", str(len(rows)), *(f"{m:.4f}±{s:.4f}" for m, s in zip(means, stds, strict=True)),
                      "", "", style="bold")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

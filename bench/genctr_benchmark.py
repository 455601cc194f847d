"""Generative CTR benchmark: DGenCTR against its controls, SGCTR and HeteGenCTR against DGenCTR.

Arms (every arm has the same optimiser-step budget `--max-steps`; the generative pre-training of
DGenCTR / HeteGenCTR is the first `--pretrain-share` of it, so it is paid for out of that budget):
  deepfm        the zoo's DeepFM (the speed reference and a discriminative baseline)
  disc          the same transformer as DGenCTR trained only discriminatively (pretrain_steps=0,
                no reconstruction term)
  dgenctr       generative pre-training, then fine-tuning that transfers every parameter
  dgenctr_emb   the same, transferring only the value embeddings (the rest re-initialised)
  sgctr         BCE + reconstruction from the first step, iterative refinement at inference
  hetegenctr    DGenCTR with learnable per-field difficulties (proportional weighting, attention)
  hetegenctr_inv  the same with the inverse weighting (`--arms` to add it)
  hetegenctr_fast the same with the difficulties on 50x the learning rate (`--arms` to add it)

Each record: overall test AUC / logloss, AUC on long-tail / cold rows (the row's user or item has
at most `--rare` impressions in the training split, unseen included), on the simulator also AUC on
items launched during the test window (item_age_days < 1 in the raw test log) and on young items
(item_age_days <= 3), `stopped_by`, steps, best step, training samples/s and that speed relative to
DeepFM in the same run (same data, seed, batch size, threads), for HeteGenCTR the learned
per-field difficulties exp(s_k), for SGCTR the same AUCs of the same weights without refinement
(`auc_no_refine`, ...: the ablation of its inference). Records are appended to the JSON file as they finish.

    python bench/genctr_benchmark.py --datasets frappe,sim-small --seeds 1 --max-steps 1200
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agenticrs.runtime.files import atomic_write_json

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from ctr_benchmark import resolve_spec  # noqa: E402  (one way to load the data sets)

# the user and item fields of each data set (cold / long-tail rows are rare in either)
USER_ITEM = {"frappe": ("user", "item"), "movielens": ("user_id", "item_id"), "sim-small": ("user_id", "item_id"),
             "sim-tiny": ("user_id", "item_id")}  # fmt: skip
ALL_ARMS = ["deepfm", "disc", "dgenctr", "dgenctr_emb", "sgctr", "hetegenctr", "hetegenctr_inv", "hetegenctr_fast"]
DEFAULT_ARMS = ALL_ARMS[:6]
# HeteGenCTR's difficulties move about one learning rate per Adam step: at 1e-3 they cannot reach log L_k
# (about 1-6) within a few hundred steps. This arm gives them 50 times the rate (an engine parameter group).
FAST_DIFFICULTY = [{"match": "^log_difficulty$", "learning_rate": 5e-2}]


def arm_setup(arm: str, pretrain_steps: int) -> tuple[str, dict[str, Any]]:
    """(registered model, model_params) of an arm."""
    return {
        "deepfm": ("deepfm", {}),
        "disc": ("dgenctr", {"pretrain_steps": 0, "generative_weight": 0.0}),
        "dgenctr": ("dgenctr", {"pretrain_steps": pretrain_steps}),
        "dgenctr_emb": ("dgenctr", {"pretrain_steps": pretrain_steps, "transfer": "embeddings"}),
        "sgctr": ("sgctr", {}),
        "hetegenctr": ("hetegenctr", {"pretrain_steps": pretrain_steps}),
        "hetegenctr_inv": ("hetegenctr", {"pretrain_steps": pretrain_steps, "weighting": "inverse"}),
        "hetegenctr_fast": ("hetegenctr", {"pretrain_steps": pretrain_steps}),
    }[arm]


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from agenticrs.train.metrics import compute_metrics

    if len(labels) < 2 or labels.min() == labels.max():
        return None
    return float(compute_metrics(["auc"], labels.astype(np.float64), scores.astype(np.float64), None)["auc"])


def cold_masks(dataset: str, data, spec, rare: int) -> dict[str, np.ndarray]:
    """Boolean masks over the test rows: rare users / items in training, new items on the simulator."""
    user_field, item_field = USER_ITEM.get(dataset, (None, None))
    names = data.schema.categorical_names
    train = np.asarray(data.split("train")["categorical"])
    test = np.asarray(data.split("test")["categorical"])
    masks: dict[str, np.ndarray] = {}
    for key, field in (("rare_user", user_field), ("rare_item", item_field)):
        if field in names:
            j = names.index(field)
            counts = np.bincount(train[:, j], minlength=int(max(train[:, j].max(), test[:, j].max())) + 1)
            masks[key] = (counts[test[:, j]] <= rare) | (test[:, j] <= 2)  # OOV / missing count as unseen
    if masks:
        masks["cold"] = np.logical_or.reduce(list(masks.values()))
    if dataset.startswith("sim-"):
        import pyarrow.parquet as pq

        age = np.concatenate([pq.read_table(path, columns=["item_age_days"])["item_age_days"].to_numpy()
                              for path in spec.files["test"]])  # fmt: skip
        if len(age) == len(test):
            masks["new_item"] = age < 1.0  # launched during the test day
            masks["young_item"] = age <= 3.0
    return masks


def run_arm(dataset: str, arm: str, seed: int, args: argparse.Namespace, data, spec, masks) -> dict[str, Any]:
    import torch

    from agenticrs.train.config import RunConfig
    from agenticrs.train.ctr import predict_probs
    from agenticrs.train.workflow import train_run

    pretrain_steps = int(args.max_steps * args.pretrain_share)
    model, params = arm_setup(arm, pretrain_steps)
    params = {**params, **json.loads(args.model_params)} if model != "deepfm" else params
    torch.set_num_threads(args.threads)
    config = RunConfig.model_validate({
        "dataset": dataset, "model": model, "model_params": params,
        "train": {"seed": seed, "batch_size": args.batch_size, "max_steps": args.max_steps, "epochs": 1000,
                  "eval_every_steps": args.eval_every, "patience": args.patience, "learning_rate": args.lr,
                  "num_threads": args.threads, **({"param_groups": FAST_DIFFICULTY} if arm == "hetegenctr_fast" else {})},
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="agenticrs-genctr-") as runs:
        started = time.perf_counter()
        trained = train_run(config, runs, args.cache_dir, data=data)
        wall = time.perf_counter() - started
        test = data.split("test")
        probs = predict_probs(trained.model, test, config.train.eval_batch_size)
        labels = np.asarray(test["labels"][:, 0], dtype=np.float64)
        result = trained.result
        record: dict[str, Any] = {
            "dataset": dataset, "arm": arm, "model": model, "seed": seed, "model_params": params,
            "auc": auc(labels, probs), "logloss": (trained.result.test or {}).get("logloss"),
            "valid_auc": result.valid.get("auc"), "stopped_by": result.stopped_by, "steps": result.steps,
            "best_step": result.best_step, "pretrain_steps": params.get("pretrain_steps", 0),
            "train_samples_per_s": result.train_samples_per_s, "train_seconds": result.train_seconds,
            "eval_seconds": result.eval_seconds, "wall_seconds": wall,
            "parameters": sum(p.numel() for p in trained.model.parameters()),
        }  # fmt: skip
        for name, mask in masks.items():
            record[f"auc_{name}"] = auc(labels[mask], probs[mask])
            record[f"rows_{name}"] = int(mask.sum())
        if hasattr(trained.model, "difficulties"):
            record["difficulties"] = trained.model.difficulties()
        if getattr(trained.model.config, "refine_rounds", 0):  # SGCTR's ablation: the same weights, no refinement
            refined = trained.model.config
            trained.model.config = refined.model_copy(update={"refine_rounds": 0})
            plain = predict_probs(trained.model, test, config.train.eval_batch_size)
            trained.model.config = refined
            record["auc_no_refine"] = auc(labels, plain)
            for name, mask in masks.items():
                record[f"auc_{name}_no_refine"] = auc(labels[mask], plain[mask])
    return record


def summarise(records: list[dict[str, Any]]) -> str:
    keys = ["auc", "auc_cold", "auc_new_item", "auc_young_item", "auc_no_refine", "speed_vs_deepfm"]
    lines = [f"{'dataset':<10} {'arm':<15} " + " ".join(f"{k:>16}" for k in keys) + "  stopped_by"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    latest = {(r["dataset"], r["arm"], r["seed"]): r for r in records}  # a rerun (--append) replaces a seed's record
    for r in latest.values():
        groups.setdefault((r["dataset"], r["arm"]), []).append(r)
    for (dataset, arm), rs in groups.items():
        cells = []
        for k in keys:
            values = [r[k] for r in rs if r.get(k) is not None]
            if not values:
                cells.append(f"{'-':>16}")
            elif len(values) == 1:
                cells.append(f"{values[0]:>16.4f}")
            else:
                cells.append(f"{statistics.mean(values):>9.4f}±{statistics.stdev(values):.4f}")
        lines.append(f"{dataset:<10} {arm:<15} " + " ".join(cells) + "  " + ",".join(sorted({r["stopped_by"] for r in rs})))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="frappe,sim-small")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS))
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first..first + N - 1")
    parser.add_argument("--max-steps", type=int, default=1200, help="optimiser-step budget of every arm")
    parser.add_argument("--pretrain-share", type=float, default=0.5, help="share of the budget spent pre-training")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--rare", type=int, default=5, help="a user / item with at most this many training rows is rare")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-params", default="{}", help="JSON overrides for the generative arms")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "agenticrs-genctr-cache"))
    parser.add_argument("--json", default=str(BENCH_DIR / "results" / "genctr.json"))
    parser.add_argument("--append", action="store_true", help="keep the records already in --json")
    args = parser.parse_args(argv)
    if not 0 <= args.pretrain_share < 1:
        parser.error("--pretrain-share must be in [0, 1): fine-tuning needs steps")

    from agenticrs.features.pipeline import process_dataset

    out = Path(args.json)
    records: list[dict[str, Any]] = json.loads(out.read_text()) if args.append and out.exists() else []
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ALL_ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {ALL_ARMS}")
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        spec = resolve_spec(dataset, Path(args.cache_dir), 0)
        data = process_dataset(spec, args.cache_dir)
        for split in data.splits.values():
            split.load_in_memory()
        masks = cold_masks(dataset, data, spec, args.rare)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            speed_ref = None
            for arm in arms:
                record = run_arm(dataset, arm, seed, args, data, spec, masks)
                record.update({"max_steps": args.max_steps, "batch_size": args.batch_size, "threads": args.threads,
                               "learning_rate": args.lr, "eval_every_steps": args.eval_every, "patience": args.patience,
                               "rare": args.rare})  # fmt: skip
                if arm == "deepfm":
                    speed_ref = record["train_samples_per_s"]
                record["speed_vs_deepfm"] = record["train_samples_per_s"] / speed_ref if speed_ref else None
                records.append(record)
                out.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(out, records)
                shown = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()
                         if k in ("auc", "auc_cold", "auc_new_item", "stopped_by", "steps", "best_step", "speed_vs_deepfm")}
                print(dataset, seed, arm, shown, flush=True)
    print(summarise(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

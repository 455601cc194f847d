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

With `--lrs` (a grid) every arm's learning rate is chosen on the validation split: each arm runs the
grid at `--select-seed` (up to two steps further while the best is on the grid's edge), the rate with the
best validation AUC is kept (`lr_chosen: true` on its records, `lr_grid` on the grid's), and the
other seeds run at that rate only. Records already in
`--json` or a `--reuse` file with the same settings are not run again (a run is resumable).

    python bench/genctr_benchmark.py --datasets frappe,sim-small --seeds 1 --max-steps 1200
    python bench/genctr_benchmark.py --datasets movielens --seeds 3 --lrs 3e-4,1e-3,3e-3 --append
    python bench/genctr_benchmark.py --report bench/results/genctr_tuned.json   # the table only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
    for key, name in (("rare_user", user_field), ("rare_item", item_field)):
        if name in names:
            j = names.index(name)
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


def run_arm(dataset: str, arm: str, seed: int, lr: float, args: argparse.Namespace, data, spec, masks) -> dict[str, Any]:
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
                  "eval_every_steps": args.eval_every, "patience": args.patience, "learning_rate": lr,
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


def same_settings(record: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a stored record ran with the settings of `wanted` (so it need not run again)."""
    return all(record.get(k) == v for k, v in wanted.items())


def table_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records a table shows: an arm whose rate was searched shows its chosen rate only."""
    searched = {(r["dataset"], r["arm"]) for r in records if "lr_chosen" in r}
    return [r for r in records if (r["dataset"], r["arm"]) not in searched or r.get("lr_chosen")]


def best_on_validation(trials: list[dict[str, Any]]) -> dict[str, Any]:
    return max(trials, key=lambda r: (r.get("valid_auc") is not None, r.get("valid_auc") or 0.0))


def summarise(records: list[dict[str, Any]]) -> str:
    keys = ["auc", "auc_cold", "auc_new_item", "auc_young_item", "auc_no_refine", "speed_vs_deepfm"]
    lines = [f"{'dataset':<10} {'arm':<15} " + " ".join(f"{k:>16}" for k in keys) + "  lr  stopped_by"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    records = table_records(records)  # a rerun (--append) replaces a seed's record
    latest = {(r["dataset"], r["arm"], r["seed"]): r for r in records}
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
        rates = ",".join(f"{x:g}" for x in sorted({r["learning_rate"] for r in rs}))
        stops = ",".join(sorted({r["stopped_by"] for r in rs}))
        lines.append(f"{dataset:<10} {arm:<15} " + " ".join(cells) + f"  {rates}  {stops}")
    return "\n".join(lines)


@dataclass
class Bench:
    """One data set's runs: reuses stored records with the same settings, appends and saves new ones."""

    dataset: str
    data: Any
    spec: Any
    masks: dict[str, np.ndarray]
    args: argparse.Namespace
    records: list[dict[str, Any]]
    reusable: list[dict[str, Any]]
    out: Path
    speed_ref: dict[int, float] = field(default_factory=dict)

    def measure(self, arm: str, seed: int, lr: float, speed_reference: bool = False) -> dict[str, Any]:
        """One arm at one seed and rate: a stored record with the same settings, or a new run."""
        args = self.args
        model, params = arm_setup(arm, int(args.max_steps * args.pretrain_share))
        params = {**params, **json.loads(args.model_params)} if model != "deepfm" else params
        wanted = {"dataset": self.dataset, "arm": arm, "seed": seed, "learning_rate": lr, "model_params": params,
                  "max_steps": args.max_steps, "batch_size": args.batch_size, "threads": args.threads,
                  "eval_every_steps": args.eval_every, "patience": args.patience, "rare": args.rare}  # fmt: skip
        mine = [r for r in self.records if same_settings(r, wanted)]
        stored = mine or [dict(r) for r in self.reusable if same_settings(r, wanted)]
        if stored:
            if not mine:
                self.records.append(stored[-1])
            record = stored[-1]
        else:
            record = run_arm(self.dataset, arm, seed, lr, args, self.data, self.spec, self.masks)
            record.update({k: v for k, v in wanted.items() if k not in record})
            self.records.append(record)
        if speed_reference:
            self.speed_ref[seed] = record["train_samples_per_s"]
        ref = self.speed_ref.get(seed)
        if not stored or speed_reference or record.get("speed_vs_deepfm") is None:
            record["speed_vs_deepfm"] = record["train_samples_per_s"] / ref if ref else None
        self.save()
        if not stored:
            shown = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()
                     if k in ("auc", "valid_auc", "auc_cold", "auc_new_item", "stopped_by", "steps", "best_step",
                              "speed_vs_deepfm")}  # fmt: skip
            print(self.dataset, seed, arm, f"lr={lr:g}", shown, flush=True)
        return record

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out, self.records)


# the papers' claims as paired comparisons: (method arm, baseline arm, what it tests)
CLAIMS = [
    ("dgenctr", "disc", "DGenCTR's generative pre-training beats the same transformer trained discriminatively"),
    ("dgenctr", "dgenctr_emb", "transferring every parameter beats transferring the embeddings only"),
    ("sgctr", "dgenctr", "SGCTR (generative loss kept, refinement at inference) beats DGenCTR"),
    ("hetegenctr", "dgenctr", "HeteGenCTR's difficulty balancing beats DGenCTR"),
]


def claims_table(records: list[dict[str, Any]]) -> str:
    """Each claim per data set: the paired effect over the seeds both arms ran (95 % t interval)."""
    from agenticrs.agents.paper.verdict import paired_effect

    kept = table_records(records)
    by = {(r["dataset"], r["arm"], r["seed"]): r for r in kept}
    lines = [f"{'dataset':<10} {'method':<11} {'baseline':<12} {'metric':<9} {'n':>2}  effect [95 % CI]  verdict"]
    for dataset in sorted({r["dataset"] for r in kept}):
        for method, baseline, _ in CLAIMS:
            seeds = sorted(s for (d, a, s) in by if d == dataset and a == method and (d, baseline, s) in by)
            for metric in ("auc", "auc_cold"):
                pairs = [(by[(dataset, method, s)].get(metric), by[(dataset, baseline, s)].get(metric)) for s in seeds]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                if not pairs:
                    continue
                effect = paired_effect([a for a, _ in pairs], [b for _, b in pairs])
                lines.append(f"{dataset:<10} {method:<11} {baseline:<12} {metric:<9} {effect.n:>2}  "
                             f"{effect.interval()}  {effect.verdict}")  # fmt: skip
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
    parser.add_argument("--lr", type=float, default=1e-3, help="the rate of every arm (without --lrs)")
    parser.add_argument("--lrs", default="", help="a learning-rate grid chosen on validation per data set and arm")
    parser.add_argument("--select-seed", type=int, default=1, help="the seed the --lrs grid runs on")
    parser.add_argument("--reuse", action="append", default=[], help="JSON files whose matching records are reused")
    parser.add_argument("--report", nargs="*", help="print the table of these JSON files and run nothing")
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

    if args.report is not None:
        stored = [r for path in args.report for r in json.loads(Path(path).read_text())]
        print(summarise(stored))
        print(claims_table(stored))
        return 0
    from agenticrs.features.pipeline import process_dataset

    out = Path(args.json)
    records: list[dict[str, Any]] = json.loads(out.read_text()) if args.append and out.exists() else []
    reusable = [r for path in args.reuse for r in json.loads(Path(path).read_text())]
    grid = [float(x) for x in args.lrs.split(",") if x.strip()]
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
        bench = Bench(dataset, data, spec, masks, args, records, reusable, out)
        chosen: dict[str, float] = {}
        for arm in arms:
            if not grid:
                chosen[arm] = args.lr
                continue
            arm_grid = list(grid)
            trials = [bench.measure(arm, args.select_seed, lr) for lr in arm_grid]
            best = best_on_validation(trials)
            for _ in range(2):  # the best rate on the grid's edge: up to two steps past it, so the choice is bracketed
                if len(arm_grid) < 2 or best["learning_rate"] not in (arm_grid[0], arm_grid[-1]):
                    break
                low = best["learning_rate"] == arm_grid[0]
                step = arm_grid[1] / arm_grid[0] if low else arm_grid[-1] / arm_grid[-2]
                extra = float(f"{(best['learning_rate'] / step if low else best['learning_rate'] * step):.3g}")
                arm_grid = [extra, *arm_grid] if low else [*arm_grid, extra]
                trials.append(bench.measure(arm, args.select_seed, extra))
                best = best_on_validation(trials)
            chosen[arm] = best["learning_rate"]
            for r in records:
                if r["dataset"] == dataset and r["arm"] == arm and r.get("learning_rate") in arm_grid:
                    r["lr_grid"], r["lr_chosen"] = arm_grid, r["learning_rate"] == chosen[arm]
            bench.save()
            print(
                dataset,
                arm,
                "chosen on validation:",
                f"lr={chosen[arm]:g}",
                {f"{r['learning_rate']:g}": round(r["valid_auc"] or 0.0, 4) for r in trials},
                flush=True,
            )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for arm in arms:
                record = bench.measure(arm, seed, chosen[arm], speed_reference=arm == "deepfm")
                if grid:
                    record["lr_chosen"] = True
        bench.save()
    print(summarise(records))
    print(claims_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

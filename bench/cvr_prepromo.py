"""Pre-promotion conversion benchmark (CM-DCM) on the simulator's `promo` preset.

Train on the earlier promotions' pre-promotion clicks (plus the current promotion's first
pre-promotion day, without delayed labels) and evaluate on the held-out last promotion's later
pre-promotion clicks (`agenticrs.data.prepromo`): delayed-conversion AUC and calibration (ECE over
10 equal-mass bins, predicted / observed ratio), plus the AUC of the composed p_cvr on "bought by
the promotion day" (y_dir or y_del). Rows: each model of `--models` (CM-DCM, MMoE on the same
inputs and labels, later ESMM ...) and CM-DCM's ablations (`--ablations`: no-gating,
no-counterfactual, no-history). One JSON record per model x seed with its settings and
`stopped_by`.

    python bench/cvr_prepromo.py --models cmdcm,mmoe --seeds 3 --json bench/results/cvr_prepromo.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agenticrs.data.prepromo import write_prepromo_dataset
from agenticrs.data.simulated import write_simulation
from agenticrs.features.batching import iterate_batches
from agenticrs.features.pipeline import process_dataset
from agenticrs.sim import sim_preset
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.metrics import auc, logloss
from agenticrs.train.workflow import train_run

ABLATIONS = {
    "no-gating": {"gating": False},
    "no-counterfactual": {"counterfactual": False},
    "no-history": {},  # the data set changes, not the model
}
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "cmdcm": {"embedding_dim": 8, "num_experts": 4, "expert_units": [64, 32], "tower_units": [32], "dropout": 0.1},
    "mmoe": {"embedding_dim": 8, "num_experts": 4, "expert_units": [64, 32], "tower_units": [32], "dropout": 0.1,
             "tasks": ["y_dir", "y_atc", "y_del"]},
}  # fmt: skip
SMOKE_WORLD = {"n_users": 700, "n_items": 600, "new_items_per_day": 5, "requests_per_user_day": 1.0}


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over `bins` equal-mass bins of the prediction."""
    order = np.argsort(probs, kind="stable")
    parts = np.array_split(order, bins)
    return float(sum(len(p) * abs(probs[p].mean() - labels[p].mean()) for p in parts if len(p)) / len(probs))


@torch.no_grad()
def predict_components(model: torch.nn.Module, split, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """p_dir, p_del (delayed conversion over the click space) and the composed score of a model on a split.

    A model that returns `p_del` / `score` (CM-DCM) is read as it is; any other multi-task model
    gives its `y_del` (and `y_dir`) head, composed as p_dir + (1 - p_dir) p_del."""
    model.eval()
    labels = list(getattr(model, "output_labels", None) or [])
    if "y_del" not in labels:
        raise ValueError(f"model '{getattr(model, 'name', '?')}' has no y_del head (its labels: {labels}); "
                         "give it tasks/labels including y_del")  # fmt: skip
    parts: dict[str, list[np.ndarray]] = {"p_dir": [], "p_del": [], "score": []}
    for batch in iterate_batches(split, batch_size, label_index=None):
        out = model(batch)
        probs = torch.sigmoid(out["logit"].float())
        p_del = out.get("p_del", probs[:, labels.index("y_del")])
        p_dir = out.get("p_dir", probs[:, labels.index("y_dir")] if "y_dir" in labels else torch.zeros_like(p_del))
        score = out.get("score", p_dir + (1 - p_dir) * p_del)
        for key, value in (("p_dir", p_dir), ("p_del", p_del), ("score", score)):
            parts[key].append(value.float().cpu().numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}


def score_record(schema_labels: list[str], split, pred: dict[str, np.ndarray]) -> dict[str, float]:
    y = np.asarray(split["labels"], dtype=np.float64)
    y_dir, y_del = y[:, schema_labels.index("y_dir")], y[:, schema_labels.index("y_del")]
    bought = np.maximum(y_dir, y_del)
    p = pred["p_del"]
    return {
        "del_auc": auc(y_del, p), "del_logloss": logloss(y_del, p), "del_ece": ece(y_del, p),
        "del_ratio": float(p.mean() / max(y_del.mean(), 1e-12)),
        "cvr_auc": auc(bought, pred["score"]), "cvr_ratio": float(pred["score"].mean() / max(bought.mean(), 1e-12)),
        "test_rows": int(len(y_del)), "test_del_rate": float(y_del.mean()),
    }  # fmt: skip


def variants(models: list[str], ablations: list[str]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(row name, model, model params, history) of every row of the table."""
    rows = [(m, m, dict(MODEL_PARAMS.get(m, {})), True) for m in models]
    if "cmdcm" in models:
        for ablation in ablations:
            params = {**MODEL_PARAMS["cmdcm"], **ABLATIONS[ablation]}
            rows.append((f"cmdcm-{ablation}", "cmdcm", params, ablation != "no-history"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="promo", help="simulator preset with several promotions")
    parser.add_argument("--sim-seed", type=int, default=0)
    parser.add_argument("--models", default="cmdcm,mmoe", help="registered multi-task models with a y_del head")
    parser.add_argument("--ablations", default="no-gating,no-counterfactual,no-history",
                        help=f"CM-DCM ablations among {','.join(ABLATIONS)} ('none': no ablation rows)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--max-steps", type=int, default=None, help="optimiser-step budget per run")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--patience", type=int, default=2, help="evaluations without a better valid logloss")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--observed-days", type=int, default=1, help="current pre-promotion days seen in training")
    parser.add_argument("--work", default=None, help="folder for the simulation, data and runs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the records here")
    parser.add_argument("--smoke", action="store_true", help="a shrunken world and a few steps (the docs' test)")
    parser.add_argument("--online", action="store_true",
                        help="A/B-test pCTR x pCVR x price with CM-DCM (B) against the first other model (A) in the "
                        "simulator over the last promotion's pre-promotion days and promotion day (seed 0's runs)")
    parser.add_argument("--ctr-steps", type=int, default=400, help="optimiser steps of the pCTR run (--online)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    ablations = [] if args.ablations == "none" else [a for a in args.ablations.split(",") if a]
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        parser.error(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="cvr-prepromo-"))
    config = sim_preset(args.preset, seed=args.sim_seed, **(SMOKE_WORLD if args.smoke else {}))
    if len(config.promotions) < 2:
        parser.error(f"preset '{args.preset}' has {len(config.promotions)} promotion(s); CM-DCM learns from earlier "
                     "ones (use --preset promo)")  # fmt: skip
    started = time.perf_counter()
    sim_dir = work / f"sim-{args.preset}-{args.sim_seed}{'-smoke' if args.smoke else ''}"
    write_simulation(config, sim_dir, name=f"sim-{args.preset}")
    print(f"simulated {args.preset} (promotions on days {list(config.promotions)}) in {time.perf_counter() - started:.0f}s")
    datasets = {}
    for history in (True, False):
        spec = write_prepromo_dataset(sim_dir, config, work / f"prepromo-{'history' if history else 'current'}",
                                      history=history, observed_days=args.observed_days)  # fmt: skip
        datasets[history] = process_dataset(spec, work / "cache")
        for split in datasets[history].splits.values():
            split.load_in_memory()
    records: list[dict[str, Any]] = []
    runs: dict[tuple[str, int], Path] = {}
    for seed in range(args.seeds):
        for row, model, params, history in variants(models, ablations):
            data = datasets[history]
            train = TrainConfig(
                epochs=2 if args.smoke else args.epochs, max_steps=4 if args.smoke else args.max_steps,
                batch_size=args.batch_size, learning_rate=args.learning_rate, patience=args.patience, monitor="logloss",
                metrics=["auc", "logloss", "calibration"], seed=seed, num_threads=args.threads, log_every=1000,
            )  # fmt: skip
            spec_path = work / f"prepromo-{'history' if history else 'current'}" / "prepromo.yaml"
            config_run = RunConfig(dataset=str(spec_path), model=model, model_params=params, train=train,
                                   name=f"{row}-seed{seed}")  # fmt: skip
            t0 = time.perf_counter()
            trained = train_run(config_run, runs_dir=work / "runs", data=data)
            test = data.split("test")
            pred = predict_components(trained.model, test)
            record = {
                "row": row, "model": model, "seed": seed, "history": history, "model_params": params,
                "train": {k: train.model_dump()[k] for k in ("epochs", "max_steps", "batch_size", "learning_rate",
                                                              "patience", "monitor")},
                "preset": args.preset, "sim_seed": args.sim_seed, "smoke": args.smoke,
                "promotions": list(config.promotions), "observed_days": args.observed_days,
                "train_rows": data.split("train").rows, "stopped_by": trained.result.stopped_by,
                "best_epoch": trained.result.best_epoch, "seconds": round(time.perf_counter() - t0, 1),
                **score_record(list(data.schema.labels), test, pred),
            }  # fmt: skip
            records.append(record)
            runs[(row, seed)] = trained.run.folder
            print(f"{row:<26} seed {seed}  del AUC {record['del_auc']:.4f}  ECE {record['del_ece']:.4f}  "
                  f"pred/obs {record['del_ratio']:.3f}  cvr AUC {record['cvr_auc']:.4f}  ({record['stopped_by']}, "
                  f"{record['seconds']}s)", flush=True)  # fmt: skip
    print_table(records)
    output: Any = records
    if args.online:
        output = {"offline": records, "online": online(args, config, sim_dir, work, models, runs)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
    return 0


def online(args: argparse.Namespace, config, sim_dir: Path, work: Path, models: list[str],
           runs: dict[tuple[str, int], Path]) -> dict[str, Any]:  # fmt: skip
    """CM-DCM's pCVR against the first other model's in pCTR x pCVR x price, in the simulator."""
    from agenticrs.sim import build_world
    from agenticrs.train.promo_online import ValuePolicy, promo_ab_test

    others = [m for m in models if m != "cmdcm"]
    if "cmdcm" not in models:
        raise SystemExit("--online compares CM-DCM with a baseline: --models must include cmdcm")
    train = TrainConfig(epochs=1, max_steps=4 if args.smoke else args.ctr_steps, batch_size=2048,
                        eval_every_steps=4 if args.smoke else args.ctr_steps, seed=0, num_threads=args.threads,
                        metrics=["auc", "logloss"], log_every=1000)  # fmt: skip
    ctr = train_run(RunConfig(dataset=str(sim_dir / "ctr.yaml"), model="dnn", train=train, name="ctr-dnn"),
                    runs_dir=work / "runs", cache_dir=work / "cache")  # fmt: skip
    baseline = others[0] if others else None
    policy_a = ValuePolicy(ctr.run.folder, runs[(baseline, 0)] if baseline else None, config)
    policy_b = ValuePolicy(ctr.run.folder, runs[("cmdcm", 0)], config)
    world = build_world(config)
    names = (f"pCTR x pCVR({baseline}) x price" if baseline else "pCTR x price", "pCTR x pCVR(cmdcm) x price")
    report = promo_ab_test(world, sim_dir / "events.parquet", policy_a, policy_b, names=names)
    report["ctr_run_valid_auc"] = ctr.result.valid.get("auc")
    print(f"\nonline, promotion on day {report['promotion_day']}: B = {names[1]} vs A = {names[0]}")
    for period, body in report["periods"].items():
        for metric in ("purchases", "gmv"):
            c = body["comparisons"][metric]
            print(f"  {period:<14} {metric:<10} lift {c['lift']:+.4f}  95% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
                  f"  p {c['p_value']:.3f}")
    return report


def print_table(records: list[dict[str, Any]]) -> None:
    rows = list(dict.fromkeys(r["row"] for r in records))
    keys = ("del_auc", "del_ece", "del_ratio", "cvr_auc")
    print(f"\n{'model':<26} {'seeds':>5} " + " ".join(f"{k:>17}" for k in keys))
    for row in rows:
        mine = [r for r in records if r["row"] == row]
        cells = []
        for k in keys:
            values = np.array([r[k] for r in mine], dtype=np.float64)
            spread = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else " " * 9
            cells.append(f"{values.mean():8.4f}{spread}")
        print(f"{row:<26} {len(mine):>5} " + " ".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())

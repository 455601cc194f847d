"""Does the two-learner EnsNAS decision agree with real M-ensembles?

For each data set, trains M learners (seeds) of an incumbent and of >= 12 candidate
architectures, then compares, per candidate:
  - the EnsNAS decision from the first two learners of each side (the exact plug-in rule with its
    paired bootstrap, as `evolve` runs it; also the bare point estimate and the paper's inequality),
  - the truth: accept iff the measured Brier of the candidate's real M-ensemble is lower than the
    incumbent's, on the same validation rows.
Reports the agreement rate and the cost ratio (trainings EnsNAS used / trainings the full check
uses). Learners are ordinary runs; their predictions are cached under --out, so an interrupted
benchmark resumes where it stopped.

    python bench/ensnas_agreement.py --datasets frappe,sim-small --ensemble-size 8 --json bench/results/ensnas_agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agenticrs.agents import ensnas
from agenticrs.agents.autotrain import PREDICTIONS, MemberTrainer, load_predictions
from agenticrs.agents.candidate import Candidate
from agenticrs.agents.splits import make_evolution_data
from agenticrs.train.config import TrainConfig
from agenticrs.train.workflow import load_data

console = Console()

INCUMBENT = Candidate(model="deepfm", embedding_dim=10, hidden_units=[128, 128], dropout=0.1, epochs=4)


def candidates() -> list[tuple[str, Candidate]]:
    """Fourteen architectures around the incumbent: families, widths, depths, sizes, bagging."""
    base = INCUMBENT
    return [
        ("lr", Candidate(model="lr", learning_rate=1e-2, epochs=4)),
        ("fm", Candidate(model="fm", embedding_dim=10, learning_rate=1e-2, epochs=4)),
        ("fm-e16", Candidate(model="fm", embedding_dim=16, learning_rate=1e-2, epochs=4)),
        ("dnn", base.model_copy(update={"model": "dnn"})),
        ("dcnv2", base.model_copy(update={"model": "dcnv2"})),
        ("deepfm-e16", base.model_copy(update={"embedding_dim": 16})),
        ("deepfm-e4", base.model_copy(update={"embedding_dim": 4})),
        ("deepfm-wide", base.model_copy(update={"hidden_units": [256, 256, 256]})),
        ("deepfm-narrow", base.model_copy(update={"hidden_units": [64]})),
        ("deepfm-drop0.3", base.model_copy(update={"dropout": 0.3})),
        ("deepfm-lr3e-3", base.model_copy(update={"learning_rate": 3e-3})),
        ("deepfm-lr3e-4", base.model_copy(update={"learning_rate": 3e-4})),
        ("deepfm-bag0.8", base.model_copy(update={"feature_bagging": 0.8})),
        ("deepfm-bag0.6", base.model_copy(update={"feature_bagging": 0.6})),
    ]


def ensemble(
    trainer: MemberTrainer, root: Path, name: str, candidate: Candidate, seeds: list[int]
) -> tuple[dict[str, np.ndarray], float]:
    """(M, rows) predictions per split, training only the missing learners; and the seconds spent."""
    loaded, spent = [], 0.0
    for seed in seeds:
        folder = root / name / f"seed{seed}"
        if not (folder / PREDICTIONS).exists():
            result = trainer.train(candidate, seed, folder)
            spent += result.cost_s
        loaded.append(load_predictions(folder))
    return {split: np.stack([p[split] for p in loaded]) for split in loaded[0]}, spent


def jackknife_se(candidate: np.ndarray, incumbent: np.ndarray, labels: np.ndarray) -> float:
    """Seed noise of the truth itself: paired leave-one-learner-out standard error of the
    measured M-ensemble Brier gain (the same seed left out on both sides)."""
    m = candidate.shape[0]
    e_c, e_i = candidate - labels, incumbent - labels
    sum_c, sum_i = e_c.sum(axis=0), e_i.sum(axis=0)
    gains = np.array([
        np.mean(((sum_i - e_i[k]) / (m - 1)) ** 2) - np.mean(((sum_c - e_c[k]) / (m - 1)) ** 2) for k in range(m)
    ])
    return float(np.sqrt((m - 1) / m * np.sum((gains - gains.mean()) ** 2)))


def run_dataset(dataset: str, m: int, out: Path, bootstrap: int, level: float, cache_dir: Path | None,
                epochs: int, patience: int, limit: int | None = None) -> list[dict[str, Any]]:
    data = load_data(dataset, cache_dir)
    evo = make_evolution_data(data)
    base = TrainConfig(batch_size=2048, epochs=epochs, patience=patience, monitor="auc",
                       metrics=["auc", "logloss"], num_threads=1)
    trainer = MemberTrainer(evo, base)
    seeds = [11 + k for k in range(m)]
    root = out / dataset
    labels = evo.labels("valid")
    incumbent = INCUMBENT.model_copy(update={"epochs": epochs})
    inc, _ = ensemble(trainer, root, "incumbent", incumbent, seeds)
    inc_measured = ensnas.measured_ensemble_error(inc["valid"], labels)
    records = []
    for name, candidate in candidates()[:limit]:
        candidate = candidate.model_copy(update={"epochs": epochs})
        started = time.perf_counter()
        cand, seconds = ensemble(trainer, root, name, candidate, seeds)
        decision = ensnas.compare(cand["valid"][:2], inc["valid"][:2], labels, m, bootstrap=bootstrap, level=level)
        measured = ensnas.measured_ensemble_error(cand["valid"], labels)
        truth = measured < inc_measured
        truth_se = jackknife_se(cand["valid"], inc["valid"], labels)
        record = {
            "dataset": dataset,
            "candidate": name,
            "description": candidate.describe(),
            "m": m,
            "predicted_candidate": decision.predicted_candidate,
            "predicted_incumbent": decision.predicted_incumbent,
            "measured_candidate": measured,
            "measured_incumbent": inc_measured,
            "predicted_improvement": decision.improvement,
            "measured_improvement": inc_measured - measured,
            "ci_low": decision.ci_low,
            "ensnas_accept": bool(decision.accepted),
            "point_accept": bool(decision.improvement > 0),
            "paper_accept": bool(decision.paper_condition),
            "truth_accept": bool(truth),
            "truth_se": truth_se,
            "decidable": bool(abs(inc_measured - measured) > 2 * truth_se),
            "agree": bool(decision.accepted == truth),
            "agree_point": bool((decision.improvement > 0) == truth),
            "gain_accuracy": decision.gain_accuracy,
            "gain_diversity": decision.gain_diversity,
            "correlation": decision.candidate.correlation,
            "train_seconds": seconds,
            "seconds": time.perf_counter() - started,
        }
        records.append(record)
        measured = record["measured_improvement"]
        console.print(f"{dataset} {name:16s} predicted {decision.improvement:+.2e} measured {measured:+.2e} "
                      f"ensnas {'accept' if decision.accepted else 'reject'} truth {'accept' if truth else 'reject'}")
    return records


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarise(records: list[dict[str, Any]], m: int) -> dict[str, Any]:
    n = len(records)
    datasets = sorted({r["dataset"] for r in records})
    candidates_n = n
    used = 2 * (candidates_n + len(datasets))  # two learners per candidate and per incumbent
    full = m * (candidates_n + len(datasets))
    return {
        "candidates": n,
        "agreement": sum(r["agree"] for r in records) / n,
        "agreement_point": sum(r["agree_point"] for r in records) / n,
        "agreement_paper": sum(r["paper_accept"] == r["truth_accept"] for r in records) / n,
        "decidable": sum(r["decidable"] for r in records),
        "agreement_decidable": _rate([r["agree"] for r in records if r["decidable"]]),
        "agreement_point_decidable": _rate([r["agree_point"] for r in records if r["decidable"]]),
        "false_accepts": sum(r["ensnas_accept"] and not r["truth_accept"] for r in records),
        "missed_gains": sum(r["truth_accept"] and not r["ensnas_accept"] for r in records),
        "cost_ratio": used / full,
        "target_cost_ratio": 2 / m,
        "mean_abs_prediction_error": float(np.mean([abs(r["predicted_candidate"] - r["measured_candidate"]) for r in records])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="frappe,sim-small")
    parser.add_argument("--ensemble-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("bench/out/ensnas"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=30, help="epoch cap of every learner")
    parser.add_argument("--patience", type=int, default=2, help="early-stopping patience (on the stop slice)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--candidates", type=int, default=None, help="only the first N candidates (a quick check)")
    args = parser.parse_args(argv)
    records: list[dict[str, Any]] = []
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        records += run_dataset(dataset, args.ensemble_size, args.out / f"e{args.epochs}p{args.patience}", args.bootstrap,
                               args.level, args.cache_dir, args.epochs, args.patience, args.candidates)
    summary = summarise(records, args.ensemble_size)
    table = Table(title=f"EnsNAS (2 learners) vs real M={args.ensemble_size} ensembles, valid Brier")
    for col in ("dataset", "candidate", "pred. gain", "meas. gain", "± seed SE", "CI low", "EnsNAS", "truth", "agree"):
        table.add_column(col, justify="right" if col not in ("dataset", "candidate") else "left")
    for r in records:
        table.add_row(r["dataset"], r["candidate"], f"{r['predicted_improvement']:+.2e}", f"{r['measured_improvement']:+.2e}",
                      f"{r['truth_se']:.1e}", f"{r['ci_low']:+.1e}", "accept" if r["ensnas_accept"] else "reject",
                      "accept" if r["truth_accept"] else "reject", "yes" if r["agree"] else "NO")
    console.print(table)
    console.print(
        f"agreement {summary['agreement']:.1%} (point estimate {summary['agreement_point']:.1%}, paper's inequality "
        f"{summary['agreement_paper']:.1%}) over {summary['candidates']} candidates; false accepts "
        f"{summary['false_accepts']}, missed gains {summary['missed_gains']}; cost ratio {summary['cost_ratio']:.3f} "
        f"(target <= 2/M = {summary['target_cost_ratio']:.3f})"
    )
    if summary["agreement_decidable"] is not None:
        console.print(
            f"on the {summary['decidable']} candidates whose measured gain exceeds twice its own seed noise "
            f"(jackknife over learners): agreement {summary['agreement_decidable']:.1%} "
            f"(point estimate {summary['agreement_point_decidable']:.1%})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GSVR benchmark: a multi-scenario base alone against the base with GSVR plugged in, per scenario.

On the simulator's `multi_scenario` task (three scenarios: home feed, search, cart page), every
(base, with / without GSVR, seed) trains with the same step budget, batch size, embedding width
and base settings through the engine (`train_run`, validation every `--eval-every` steps, the
best step restored), then scores the test split: click AUC per scenario (rows grouped by the
`scenario` column), overall click AUC, and the sparsest scenario's (fewest training rows) gain
of GSVR over its base, reported separately.

    python bench/gsvr_benchmark.py --bases mmoe --seeds 1 --steps 400 --json bench/results/gsvr.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agenticrs.runtime.files import atomic_write_json


def per_scenario_auc(scenario: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict[int, float]:
    """Click AUC of each scenario id's rows (vectorised per group by the project's `auc`)."""
    from agenticrs.train.metrics import auc

    order = np.argsort(scenario, kind="stable")
    ids, starts = np.unique(scenario[order], return_index=True)
    bounds = np.append(starts, len(order))
    out = {}
    for k, sid in enumerate(ids):  # one call per scenario (3), not per row
        rows = order[bounds[k] : bounds[k + 1]]
        y = labels[rows]
        if 0 < y.sum() < len(y):
            out[int(sid)] = float(auc(y, scores[rows]))
    return out


def run_one(dataset: str, base: str, gsvr: bool, seed: int, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    from agenticrs.features.schema import NUM_RESERVED
    from agenticrs.train.config import RunConfig, TrainConfig
    from agenticrs.train.ctr import predict_probs
    from agenticrs.train.workflow import load_data, train_run

    data = load_data(dataset, cache_dir)
    train = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, eval_every_steps=args.eval_every,
                        seed=seed, num_threads=args.threads, patience=args.patience,
                        conversion_labels=["click", "purchase"])  # fmt: skip
    base_params = {"embedding_dim": args.embedding_dim}
    if gsvr:
        model, params = "gsvr", {**base_params, "base": base}
    elif base == "shared_bottom":
        model, params = "mmoe", {**base_params, "num_experts": 1}
    else:
        model, params = base, base_params
    config = RunConfig(dataset=dataset, model=model, model_params=params, train=train)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agenticrs-gsvr-bench-") as runs:
        trained = train_run(config, runs, cache_dir, data=data)
    seconds = time.perf_counter() - started
    test = data.split("test")
    column = data.schema.categorical_index("scenario")
    scenario = np.asarray(test["categorical"][:, column])
    click = trained.model.output_labels.index("click")
    labels = np.asarray(test["labels"][:, data.schema.labels.index("click")])
    probs = predict_probs(trained.model, test)[:, click]
    vocab = data.encoder.categorical["scenario"].vocab
    name = lambda sid: vocab[sid - NUM_RESERVED] if sid >= NUM_RESERVED else f"<reserved {sid}>"  # noqa: E731
    train_scenario = np.asarray(data.split("train")["categorical"][:, column])
    ids, counts = np.unique(train_scenario, return_counts=True)
    return {
        "base": base, "gsvr": gsvr, "seed": seed, "model": model, "model_params": params,
        "steps": trained.result.steps, "best_step": trained.result.best_step, "stopped_by": trained.result.stopped_by,
        "test_ctr_auc": trained.result.test.get("ctr_auc") if trained.result.test else None,
        "scenario_auc": {name(s): a for s, a in per_scenario_auc(scenario, labels, probs).items()},
        "train_rows": {name(int(s)): int(c) for s, c in zip(ids, counts, strict=True)},
        "parameters": sum(p.numel() for p in trained.model.parameters()),
        "seconds": seconds,
    }  # fmt: skip


def summarise(records: list[dict[str, Any]]) -> tuple[Table, dict[str, Any]]:
    """Mean per-scenario AUC of each (base, gsvr), and GSVR's gain on the sparsest scenario."""
    train_rows = records[0]["train_rows"]
    scenarios = sorted(records[0]["scenario_auc"], key=lambda s: -train_rows.get(s, 0))
    sparsest = min(scenarios, key=lambda s: train_rows.get(s, 0))
    mean = lambda rs, key: statistics.fmean(r[key] for r in rs)  # noqa: E731
    table = Table(title=f"test click AUC per scenario (mean over {len({r['seed'] for r in records})} seed(s))")
    for column in ["model", "overall", *(f"{s} ({train_rows[s]:,} train rows)" for s in scenarios)]:
        table.add_column(column)
    gains: dict[str, Any] = {}
    for base in dict.fromkeys(r["base"] for r in records):
        means = {}
        for gsvr in (False, True):
            rs = [r for r in records if r["base"] == base and r["gsvr"] == gsvr]
            if not rs:
                continue
            per = {s: statistics.fmean(r["scenario_auc"][s] for r in rs) for s in scenarios}
            means[gsvr] = per
            label = f"{base} + gsvr" if gsvr else base
            table.add_row(label, f"{mean(rs, 'test_ctr_auc'):.4f}", *(f"{per[s]:.4f}" for s in scenarios))
        if len(means) == 2:
            gains[base] = {"per_scenario": {s: means[True][s] - means[False][s] for s in scenarios},
                           "sparsest": sparsest, "sparsest_gain": means[True][sparsest] - means[False][sparsest]}  # fmt: skip
    return table, gains


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="sim-small-multi_scenario")
    parser.add_argument("--bases", default="mmoe", help="comma-separated: mmoe, ple, shared_bottom")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None, help="processed-data cache (default: a temporary folder)")
    parser.add_argument("--json", default="bench/results/gsvr.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "cache_dir")}
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agenticrs-gsvr-cache-") as tmp:
        cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tmp)
        for seed in range(1, args.seeds + 1):
            for base in args.bases.split(","):
                for gsvr in (False, True):
                    record = run_one(args.dataset, base, gsvr, seed, args, cache_dir)
                    console.print(f"{base}{' + gsvr' if gsvr else ''} seed {seed}: {record['scenario_auc']} "
                                  f"({record['seconds']:.0f} s, best step {record['best_step']})")  # fmt: skip
                    records.append(record)
                    # written after every run, so that an interrupted benchmark keeps what it measured
                    atomic_write_json(Path(args.json), {"settings": settings, "records": records, "complete": False})
    table, gains = summarise(records)
    console.print(table)
    for base, gain in gains.items():
        console.print(f"{base}: GSVR's gain on the sparsest scenario ({gain['sparsest']}): {gain['sparsest_gain']:+.4f}")
    atomic_write_json(Path(args.json), {"settings": settings, "records": records, "gains": gains, "complete": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SSR scaling benchmark: test AUC against parameter count, SSR vs a dense MLP of the same budget.

The SSR paper (Yu et al., arXiv:2604.08011, 2026) claims that SSR keeps improving with size where
dense MLPs saturate. This runs `ssr` at three sizes (block width x view width, 2 blocks) and, at
each size, `dnn` (embedding + 3-layer MLP) with hidden widths chosen so that its non-embedding
("dense") parameters are within 10% of SSR's (checked before any training; the embeddings are
identical). Each (size, model, seed) is one `ctr_benchmark.run_one` in a fresh process, so the
runs use the benchmark's training, evaluation and overrides (`--config`, `--set`) unchanged.

Prints a table (size, model, dense / total parameters, mean ± std test AUC and logloss over seeds)
and writes `--json OUT`: one record per run with model, size, seed, parameters, dense_parameters,
auc, logloss, train_samples_per_s (+ the other fields of ctr_benchmark's records).

    python bench/ssr_scaling.py --config bench/configs/frappe.yaml --seeds 3 --json bench/out/ssr_scaling_frappe.json
    python bench/ssr_scaling.py --dataset synthetic-tiny --seeds 1 --epochs 2 --json /tmp/ssr_scaling.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctr_benchmark import _in_subprocess, resolve_spec, run_one, run_overrides  # noqa: E402

# SSR sizes (2 blocks each); "medium" is the model's default configuration
SSR_SIZES: dict[str, dict[str, Any]] = {
    "small": {"block_units": 128, "view_units": 32},
    "medium": {"block_units": 400, "view_units": 64},
    "large": {"block_units": 1024, "view_units": 256},
}
BUDGET_TOLERANCE = 0.10


def _model_params(model: str, dataset: str, overrides: list[str], extra: list[str]) -> dict[str, Any]:
    from agenticrs.config import apply_overrides

    raw = apply_overrides({"dataset": dataset, "model": model}, overrides + extra)
    return dict(raw.get("model_params") or {})


def _as_overrides(params: dict[str, Any]) -> list[str]:
    return [f"model_params.{k}={json.dumps(v)}" for k, v in params.items()]


def matched_dnn_width(input_dim: int, dnn_params: dict[str, Any], target: int, layers: int) -> int:
    """The width w of a `layers`-deep [w, ..., w] MLP whose dense parameters are closest to `target`."""
    from agenticrs.models.dnn import DNNConfig, dnn_dense_parameters

    def count(width: int) -> int:
        return dnn_dense_parameters(input_dim, DNNConfig(**{**dnn_params, "hidden_units": [width] * layers}))

    low, high = 1, 1
    while count(high) < target:
        high *= 2
    while high - low > 1:  # the count grows with the width
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < target else (low, mid)
    return min((low, high), key=lambda w: abs(count(w) - target))


def plan_runs(dataset: str, sizes: list[str], cache_dir: Path, rows: int, overrides: list[str],
              model_overrides: dict[str, list[str]], ssr_filter: str, dnn_layers: int) -> list[dict[str, Any]]:
    """Per size: the SSR and DNN overrides and their parameter counts (built once on the data's schema)."""
    from agenticrs.features.pipeline import process_dataset
    from agenticrs.models.base import build_model
    from agenticrs.models.ssr import embedding_and_dense_parameters

    schema = process_dataset(resolve_spec(dataset, cache_dir, rows), cache_dir).schema
    plan = []
    for size in sizes:
        ssr_extra = _as_overrides({**SSR_SIZES[size], "filter": ssr_filter})
        ssr_params = _model_params("ssr", dataset, overrides, model_overrides.get("ssr", []) + ssr_extra)
        ssr = build_model("ssr", schema, ssr_params)
        ssr_embedding, ssr_dense = embedding_and_dense_parameters(ssr)
        dnn_params = _model_params("dnn", dataset, overrides, model_overrides.get("dnn", []))
        width = matched_dnn_width(ssr.embedding.output_dim, dnn_params, ssr_dense, dnn_layers)
        dnn_extra = _as_overrides({"hidden_units": [width] * dnn_layers})
        dnn = build_model("dnn", schema, {**dnn_params, "hidden_units": [width] * dnn_layers})
        dnn_embedding, dnn_dense = embedding_and_dense_parameters(dnn)
        if abs(dnn_dense / ssr_dense - 1) > BUDGET_TOLERANCE:
            raise ValueError(f"size {size}: DNN {dnn_dense:,} vs SSR {ssr_dense:,} dense parameters (> 10% apart)")
        plan.append({"size": size, "model": "ssr", "extra": ssr_extra, "dense_parameters": ssr_dense,
                     "embedding_parameters": ssr_embedding, "size_params": SSR_SIZES[size]})
        plan.append({"size": size, "model": "dnn", "extra": dnn_extra, "dense_parameters": dnn_dense,
                     "embedding_parameters": dnn_embedding, "size_params": {"hidden_units": [width] * dnn_layers}})
    return plan


def _mean_std(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _groups(records: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    keys = list(dict.fromkeys((r["size"], r["model"]) for r in records))
    return [(s, m, [r for r in records if (r["size"], r["model"]) == (s, m)]) for s, m in keys]


COLUMNS = ["size", "model", "seeds", "dense params", "total params", "test AUC", "test logloss", "train samples/s"]


def _row(size: str, model: str, rs: list[dict[str, Any]]) -> list[str]:
    return [size, model, str(len(rs)), f"{rs[0]['dense_parameters']:,}", f"{rs[0]['parameters']:,}",
            _mean_std([r["auc"] for r in rs], 4), _mean_std([r["logloss"] for r in rs], 4),
            f"{statistics.fmean(r['train_samples_per_s'] for r in rs):,.0f}"]


def summarise(records: list[dict[str, Any]]) -> Table:
    table = Table(title=f"SSR scaling — {records[0]['dataset']}" if records else "SSR scaling")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("size", "model") else "right")
    for size, model, rs in _groups(records):
        table.add_row(*_row(size, model, rs))
    return table


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(s, m, rs)) + " |" for s, m, rs in _groups(records)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None,
                        help="registered data set or spec YAML; default: the config's `dataset:` or its file name")
    parser.add_argument("--config", type=Path, default=None,
                        help="ctr_benchmark YAML (`overrides: [...]`, `models: {name: [...]}`, optional `dataset:`)")
    parser.add_argument("--sizes", default=",".join(SSR_SIZES), help=f"comma-separated, of {list(SSR_SIZES)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    parser.add_argument("--ssr-filter", choices=["static", "ics"], default="static")
    parser.add_argument("--dnn-layers", type=int, default=3, help="hidden layers of the matched DNN")
    parser.add_argument("--json", type=Path, required=True, help="output JSON path")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows of 'criteo-layout'")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (default: the trainer's, early stopping)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    parser.add_argument("--step-budget", type=int, default=None, help="total optimiser steps (train.max_steps)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="run-config override for both models, e.g. train.embedding_l2=0.05")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/agenticrs"))
    args = parser.parse_args(argv)

    bench_config = yaml.safe_load(args.config.read_text()) or {} if args.config else {}
    dataset = args.dataset or bench_config.get("dataset") or (args.config.stem if args.config else None)
    if dataset is None:
        parser.error("give --dataset or --config")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SSR_SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {list(SSR_SIZES)}")
    overrides, model_overrides = run_overrides(args)

    console = Console(width=170)
    plan = plan_runs(dataset, sizes, args.cache_dir, args.rows, overrides, model_overrides, args.ssr_filter,
                     args.dnn_layers)
    console.print(f"dataset {dataset}; overrides: {overrides}; per model: {model_overrides}")
    for p in plan:
        console.print(f"  {p['size']:>6} {p['model']}: {p['size_params']} -> {p['dense_parameters']:,} dense parameters")
    records: list[dict[str, Any]] = []
    for p in plan:
        worker_args = {"cache_dir": str(args.cache_dir), "rows": args.rows, "overrides": overrides,
                       "model_overrides": {p["model"]: model_overrides.get(p["model"], []) + p["extra"]},
                       "skip_ceiling": True}  # the MLP-ceiling timing is not needed for the scaling curve
        for seed in range(1, args.seeds + 1):
            record = _in_subprocess(run_one, dataset, p["model"], seed, worker_args)
            if "skipped" in record:
                raise RuntimeError(f"{p['model']} cannot run on {dataset}: {record['skipped']}")
            record.update(size=p["size"], dense_parameters=p["dense_parameters"],
                          embedding_parameters=p["embedding_parameters"], size_params=p["size_params"])
            records.append(record)
            console.print(f"  {p['size']} {p['model']} seed {seed}: AUC {record['auc']:.4f}  "
                          f"logloss {record['logloss']:.4f}  {record['train_samples_per_s']:,.0f} samples/s  "
                          f"(best epoch {record['best_epoch']})")
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))  # written as we go: nothing is lost
    console.print(summarise(records))
    if args.markdown:
        console.print(markdown(records), markup=False, highlight=False)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training speed of models relative to DeepFM, measured in one process, interleaved.

Throughput on a shared machine drifts; ratios measured in the same process, with the models'
timing rounds interleaved (A B C A B C ...), cancel most of that drift. Each round times
`--steps` full training steps (forward, CTR loss, backward, the engine's optimisers) on the same
seeded batches of the data set's training split, one thread. Prints a table and writes JSON:
one record per configuration with samples/s (median over rounds) and the ratio to DeepFM.

    python bench/speed_ratio.py --dataset sim-small --config bench/configs/sim.yaml \\
        --models deepfm,sort,mgdin --json bench/results/speed_sim.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table

from agenticrs.config import apply_overrides
from agenticrs.models.base import build_model
from agenticrs.runtime import resolve_device
from agenticrs.runtime.files import atomic_write_json
from agenticrs.train.config import RunConfig
from agenticrs.train.ctr import CTRTask
from agenticrs.train.optim import build_optimizers
from agenticrs.train.workflow import load_data


def _configs(dataset: str, models: list[str], bench_config: Path | None, defaults_too: bool,
             device: str = "cpu") -> list[tuple[str, RunConfig]]:  # fmt: skip
    raw = yaml.safe_load(bench_config.read_text()) if bench_config else {}
    shared = [o for o in raw.get("overrides", []) if not o.startswith(("train.max_steps", "train.time_budget"))]
    per_model = raw.get("models") or {}
    out = []
    for model in models:
        variants = [(model, per_model.get(model, []))]
        if defaults_too and per_model.get(model) and any(o.startswith("model_params.") for o in per_model[model]):
            variants.insert(0, (f"{model} (defaults)", [o for o in per_model[model] if not o.startswith("model_params.")]))
        for label, extra in variants:
            config = apply_overrides({"dataset": dataset, "model": model, "train": {"seed": 1}},
                                     [*shared, *extra, f"train.device={device}"])  # fmt: skip
            out.append((label, RunConfig.model_validate(config)))
    return out


class _Timer:
    def __init__(self, data, config: RunConfig) -> None:
        torch.manual_seed(0)
        self.device = resolve_device(config.train.device)
        self.model = build_model(config.model, data.schema, config.model_params).to(self.device)
        self.task = CTRTask(data, config.train, self.model)
        self.task.prepare(self.model)
        self.optimizers = build_optimizers(self.model, config.train)
        self.batch_size = config.train.batch_size
        self.batches = self.task.batches(1)

    def round(self, steps: int) -> float:
        self.model.train()
        started = time.perf_counter()
        for _ in range(steps):
            batch = next(self.batches, None)
            if batch is None:
                self.batches = self.task.batches(2)
                batch = next(self.batches)
            loss, _ = self.task.loss(self.model, batch)
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run asynchronously: time them to their end
        return steps * self.batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", type=Path, default=None, help="a benchmark config (its per-model settings)")
    parser.add_argument("--models", default="deepfm,sort,mgdin", help="deepfm first: the peer of every ratio")
    parser.add_argument("--steps", type=int, default=8, help="training steps per timing round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-defaults", action="store_true", help="skip the paper-default variants")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU the thread count does not matter)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if models[0] != "deepfm":
        models.insert(0, "deepfm")
    data = load_data(args.dataset)
    configs = _configs(args.dataset, models, args.config, not args.no_defaults, args.device)
    timers = {label: _Timer(data, config) for label, config in configs}
    for timer in timers.values():
        timer.round(2)  # warm-up
    speeds: dict[str, list[float]] = {label: [] for label in timers}
    for _ in range(args.rounds):
        for label, timer in timers.items():
            speeds[label].append(timer.round(args.steps))
    peer = statistics.median(speeds["deepfm"])
    records: list[dict[str, Any]] = []
    where = "one thread" if args.device == "cpu" else args.device
    table = Table(title=f"training speed on {args.dataset}, {where}, relative to DeepFM (same process)")
    for column in ("model", "samples/s", "× DeepFM", "parameters"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for (label, config), timer in zip(configs, timers.values(), strict=True):
        speed = statistics.median(speeds[label])
        parameters = sum(p.numel() for p in timer.model.parameters())
        records.append({"model": label, "dataset": args.dataset, "samples_per_s": speed, "ratio_to_deepfm": speed / peer,
                        "rounds": speeds[label], "model_params": config.model_params, "parameters": parameters,
                        "batch_size": config.train.batch_size, "device": args.device})  # fmt: skip
        table.add_row(label, f"{speed:,.0f}", f"{speed / peer:.2f}", f"{parameters:,}")
    Console(width=140).print(table)
    atomic_write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

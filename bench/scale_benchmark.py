"""Scale-out benchmark: the agents' trainings on Ray, data-parallel training, data beyond memory.

Three parts (each row of the table is one measurement, written to JSON with `stopped_by`):

- `evolve`: candidate trainings per hour on `sim-small` with the local executor and with the Ray
  executor at 1 and 2 workers (a private local Ray instance of that many CPUs), same settings and
  seed, so the decisions are equal and only the wall time differs.
- `ddp`: training samples/s of `agenticrs train --nproc N` (N = 1, 2; gloo on CPU) with the same
  global batch, and the valid AUC of each.
- `data`: Criteo-layout files of R rows (generated into a scratch folder, deleted afterwards):
  processing rows/s, training rows/s from the memory-mapped cache (block-shuffled reads), the
  processed cache's size and the peak RSS of the process, with `train.memory_budget_mb` and
  AGENTICRS_SPILL_MB set to `--memory-mb`. Each size runs in a fresh process, so peak RSS is its own.

    python bench/scale_benchmark.py --parts evolve,ddp --json bench/results/scale.json
    python bench/scale_benchmark.py --parts data --rows 1000000,10000000,50000000 --memory-mb 2048 \
        --scratch /tmp/scale --json bench/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agenticrs.runtime.files import atomic_write_json

BENCH_DIR = Path(__file__).resolve().parent
SRC = BENCH_DIR.parent / "src"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": str(threads), "AGENTICRS_NUM_THREADS": str(threads)}  # fmt: skip


# -- evolve: local vs Ray ---------------------------------------------------------------------------
EVOLVE: dict[str, Any] = {
    "dataset": "sim-small",
    "seed": 0,
    "bootstrap": 100,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 2, "embedding_dim": 8, "hidden_units": [32]},
    "train": {"patience": 1, "monitor": "logloss", "metrics": ["auc", "logloss"], "num_threads": 1},
    "space": {"models": ["lr", "fm", "dnn"], "widths": [16, 32], "embedding_dims": [4, 8], "depth_max": 2},
    # AutoTrain alone, no AutoPerf measurement, no outer A/B test: those run in the coordinator whatever
    # trains the learners, so they would only dilute what this part measures (trainings on an executor)
    "agents": ["train"],
    "measure_perf": False,
    "outer_every": 0,
}


def evolve_once(executor: str, workers: int, candidates: int, scratch: Path, cache: Path) -> dict[str, Any]:
    """One evolution; trainings per hour = learners trained / wall seconds x 3600."""
    import ray

    from agenticrs.agents.coordinator import Coordinator
    from agenticrs.agents.executor import RayExecutor, start_local_ray
    from agenticrs.agents.knowledge import KnowledgeStore
    from agenticrs.agents.settings import EvolveSettings

    folder = Path(tempfile.mkdtemp(dir=scratch))
    settings = EvolveSettings.model_validate({**EVOLVE, "candidates": candidates, "artifacts": str(folder / "a"),
                                              "cache_dir": str(cache)})  # fmt: skip
    store = KnowledgeStore(f"sqlite:///{folder / 'k.db'}")
    factory = None
    if executor == "ray":
        start_local_ray(workers)
        factory = RayExecutor
    coordinator = Coordinator(store, settings, executor=factory)  # data loaded before the clock starts
    started = time.perf_counter()
    summary = coordinator.run()
    seconds = time.perf_counter() - started
    coordinator.executor.close()
    if executor == "ray":
        ray.shutdown()
    with store.transaction() as tx:
        trainings = [t for t in tx.trainings(intent_id=summary.intent_id) if t.status == "done"]
        decisions = sorted((d.candidate_id, d.gate, d.accepted) for d in tx.decisions(intent_id=summary.intent_id))
    shutil.rmtree(folder, ignore_errors=True)
    return {"part": "evolve", "executor": executor, "workers": workers, "candidates": candidates,
            "trainings": len(trainings), "seconds": seconds, "trainings_per_hour": len(trainings) / seconds * 3600,
            "champion": summary.champion, "decisions": decisions, "stopped_by": f"{candidates} candidates"}  # fmt: skip


# -- ddp: 1 vs 2 processes ----------------------------------------------------------------------------
def ddp_once(nproc: int, scratch: Path, cache: Path, epochs: int, batch: int) -> dict[str, Any]:
    runs = Path(tempfile.mkdtemp(dir=scratch))
    command = [sys.executable, "-m", "agenticrs.cli.main", "train", "--nproc", str(nproc), "-d", "sim-small", "-m", "dnn",
               "-q", "--runs-dir", str(runs), "--cache-dir", str(cache), "--set", f"train.epochs={epochs}",
               "--set", f"train.batch_size={batch}", "--set", "train.num_threads=1"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    summary = json.loads(next(runs.iterdir()).joinpath("summary.json").read_text())
    shutil.rmtree(runs, ignore_errors=True)
    return {"part": "ddp", "nproc": nproc, "global_batch": batch, "train_samples_per_s": summary["train_samples_per_s"],
            "valid_auc": summary["valid"]["auc"], "train_seconds": summary["train_seconds"], "wall_seconds": wall,
            "stopped_by": summary["stopped_by"]}  # fmt: skip


# -- data beyond memory ---------------------------------------------------------------------------------
def data_files(rows: int, scratch: Path) -> dict[str, list[str]]:
    """The generated Criteo-layout files of `rows` training rows (valid: 1%, at least 10,000)."""
    from agenticrs.data.criteo_layout import write_criteo_layout

    folder = scratch / f"criteo-layout-{rows}"
    files = {}
    for split, n, seed in (("train", rows, 0), ("valid", max(rows // 100, 10_000), 1)):
        path = folder / f"{split}.tsv"
        files[split] = [str(path if path.exists() else write_criteo_layout(path, n, seed=seed))]
    return files


def data_child(rows: int, scratch: Path, memory_mb: float, hash_buckets: int, batch: int) -> dict[str, Any]:
    """In a fresh process (the files already generated): process and train one epoch of LR from
    the memory-mapped cache; the peak RSS of this process against its RSS after the imports."""
    from agenticrs.data.adapters.criteo import criteo_spec
    from agenticrs.features.pipeline import process_dataset
    from agenticrs.train.config import RunConfig
    from agenticrs.train.workflow import train_run

    baseline_mb = _peak_rss_mb()
    os.environ["AGENTICRS_SPILL_MB"] = str(memory_mb / 4)
    folder = scratch / f"criteo-layout-{rows}"
    files = data_files(rows, scratch)
    raw_mb = sum(Path(f[0]).stat().st_size for f in files.values()) / (1 << 20)
    spec = criteo_spec(files, hash_buckets=hash_buckets, name=f"criteo-layout-{rows}")
    started = time.perf_counter()
    data = process_dataset(spec, folder / "cache")
    process_s = time.perf_counter() - started
    cache_mb = sum(p.stat().st_size for p in (folder / "cache").rglob("*.bin")) / (1 << 20)
    config = RunConfig(dataset="unused", model="lr", train={
        "epochs": 1, "batch_size": batch, "num_threads": 1, "memory_budget_mb": memory_mb, "metrics": ["auc", "logloss"],
        "eval_batch_size": 65_536})  # fmt: skip
    trained = train_run(config, folder / "runs", folder / "cache", data=data)
    return {"part": "data", "rows": rows, "memory_budget_mb": memory_mb, "hash_buckets": hash_buckets,
            "raw_mb": raw_mb, "cache_mb": cache_mb, "process_s": process_s,
            "process_rows_per_s": (rows + rows // 100) / process_s,
            "train_samples_per_s": trained.result.train_samples_per_s, "valid_auc": trained.result.valid.get("auc"),
            "rss_after_imports_mb": baseline_mb, "peak_rss_mb": _peak_rss_mb(),
            "stopped_by": trained.result.stopped_by}  # fmt: skip


def data_once(rows: int, scratch: Path, memory_mb: float, hash_buckets: int, batch: int) -> dict[str, Any]:
    out = scratch / f"data-{rows}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--data-child", str(rows), "--scratch", str(scratch),
               "--memory-mb", str(memory_mb), "--hash-buckets", str(hash_buckets), "--batch-size", str(batch),
               "--json", str(out)]  # fmt: skip
    try:
        data_files(rows, scratch)  # generated here, outside the measured process
        subprocess.run(command, env=_env(), check=True)
        return json.loads(out.read_text())
    finally:
        shutil.rmtree(scratch / f"criteo-layout-{rows}", ignore_errors=True)  # the data is never kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="evolve,ddp,data", help="evolve, ddp, data (comma-separated)")
    parser.add_argument("--candidates", type=int, default=3, help="evolve: rounds per evolution")
    parser.add_argument("--epochs", type=int, default=2, help="ddp: epochs")
    parser.add_argument("--rows", default="1000000", help="data: comma-separated row counts")
    parser.add_argument("--memory-mb", type=float, default=2048, help="data: train.memory_budget_mb (spill: a quarter)")
    parser.add_argument("--hash-buckets", type=int, default=1 << 17, help="data: hash buckets per categorical field")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--scratch", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache of sim-small (default: in scratch)")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument("--data-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="agenticrs-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    if args.data_child is not None:
        record = data_child(args.data_child, scratch, args.memory_mb, args.hash_buckets, args.batch_size)
        atomic_write_json(args.json, record)
        return
    cache = args.cache_dir or scratch / "cache"
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    records: list[dict[str, Any]] = []
    if "evolve" in parts:
        for executor, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            records.append(evolve_once(executor, workers, args.candidates, scratch, cache))
    if "ddp" in parts:
        for nproc in (1, 2):
            records.append(ddp_once(nproc, scratch, cache, args.epochs, args.batch_size))
    if "data" in parts:
        for rows in (int(r) for r in args.rows.split(",")):
            records.append(data_once(rows, scratch, args.memory_mb, args.hash_buckets, args.batch_size))
    show(records)
    if args.json is not None:
        previous = json.loads(args.json.read_text()) if args.json.exists() else []
        kept = [r for r in previous if r.get("part") not in parts]  # a rerun of a part replaces its rows
        atomic_write_json(args.json, kept + records)
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


def show(records: list[dict[str, Any]]) -> None:
    table = Table(title="agenticrs scale-out")
    for column in ("part", "setting", "figure", "detail", "stopped by"):
        table.add_column(column)
    for r in records:
        if r["part"] == "evolve":
            setting = f"{r['executor']} x{r['workers']}"
            figure = f"{r['trainings_per_hour']:,.0f} trainings/h"
            detail = f"{r['trainings']} trainings in {r['seconds']:.1f} s; champion {r['champion']}"
        elif r["part"] == "ddp":
            setting = f"--nproc {r['nproc']} (global batch {r['global_batch']})"
            figure = f"{r['train_samples_per_s']:,.0f} samples/s"
            detail = f"valid auc {r['valid_auc']:.4f}; {r['wall_seconds']:.1f} s wall"
        else:
            setting = f"{r['rows']:,} rows, budget {r['memory_budget_mb']:,.0f} MB"
            figure = f"process {r['process_rows_per_s']:,.0f} rows/s; train {r['train_samples_per_s']:,.0f} rows/s"
            detail = (f"peak RSS {r['peak_rss_mb']:,.0f} MB (after imports {r['rss_after_imports_mb']:,.0f}); "
                      f"cache {r['cache_mb']:,.0f} MB; raw {r['raw_mb']:,.0f} MB")
        table.add_row(r["part"], setting, figure, detail, str(r["stopped_by"]))
    Console().print(table)


if __name__ == "__main__":
    main()

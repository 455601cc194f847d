"""Simulator benchmark: impressions generated per second and peak memory, per preset.

Each preset runs in a fresh process (so peak RSS is its own) and writes its full output (all
Parquet tables and the four task specs) to a temporary folder. Generation is single-threaded
NumPy; read the figures as impressions/s on one core. The ceiling column is a peer measured in
the same run: NumPy drawing and writing the same number of plain Bernoulli rows (no world).

    python bench/sim_benchmark.py --presets small,medium,large --json bench/results/simulator.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _generate(preset: str, seed: int, queue: mp.Queue) -> None:
    import pyarrow.parquet as pq

    from agenticrs.data.simulated import write_simulation
    from agenticrs.sim import sim_preset

    out = Path(tempfile.mkdtemp(prefix=f"sim-bench-{preset}-"))
    try:
        started = time.perf_counter()
        write_simulation(sim_preset(preset, seed=seed), out, name=f"sim-{preset}")
        seconds = time.perf_counter() - started
        rows = sum(pq.ParquetFile(str(out / f"impressions_{s}.parquet")).metadata.num_rows for s in ("train", "valid", "test"))
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        queue.put({
            "preset": preset, "seed": seed, "impressions": rows, "seconds": seconds,
            "impressions_per_s": rows / seconds, "disk_mb": size / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        })  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _ceiling(rows: int, queue: mp.Queue) -> None:
    """Plain Bernoulli rows with the same number of columns, written as Parquet: the I/O + RNG floor."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(tempfile.mkdtemp(prefix="sim-bench-ceiling-"))
    try:
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        with pq.ParquetWriter(str(out / "x.parquet"), pa.schema([(f"c{i}", pa.float32()) for i in range(20)]),
                              compression="zstd") as writer:  # fmt: skip
            for start in range(0, rows, 262_144):
                n = min(262_144, rows - start)
                writer.write_table(pa.table({f"c{i}": rng.random(n, dtype=np.float32) for i in range(20)}))
        queue.put(rows / (time.perf_counter() - started))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _in_child(target, *args) -> Any:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="small,medium,large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    records = []
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        record = _in_child(_generate, preset, args.seed)
        record["ceiling_rows_per_s"] = _in_child(_ceiling, min(record["impressions"], 2_000_000))
        record["ratio_to_ceiling"] = record["impressions_per_s"] / record["ceiling_rows_per_s"]
        records.append(record)
    table = Table(title="simulator generation (one process per preset)")
    for column in ("preset", "impressions", "seconds", "impressions/s", "ratio to write ceiling", "peak RSS MB", "disk MB"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for r in records:
        table.add_row(r["preset"], f"{r['impressions']:,}", f"{r['seconds']:.1f}", f"{r['impressions_per_s']:,.0f}",
                      f"{r['ratio_to_ceiling']:.3f}", f"{r['peak_rss_mb']:,.0f}", f"{r['disk_mb']:,.0f}")  # fmt: skip
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()

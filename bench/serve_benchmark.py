"""Latency and throughput of the scoring service under a bounded open-loop load, on loopback.

For each model and backend (eager PyTorch, ONNX Runtime, int8 ONNX Runtime) the service runs in a
child process pinned to one core (one scoring thread, one intra-op thread); the load generator runs
in this process on another core. At each request rate it sends requests of `--candidates`
candidates on a fixed schedule for `--seconds` (at most `--max-requests`), and measures each
request's latency from the moment it is sent (a service that falls behind queues the requests
that keep coming, so it shows; the generator's own timer lateness is reported apart), p50 /
p99, the rate it sustained and errors. The rate at which p99 crosses `--target-ms` is the
model's serving capacity on one core. `--repeats K` runs the whole ladder of rates K times
against the same service (rates interleaved with the repeats, so a noisy minute on a shared
machine hits one reading of each rate, not every reading of one): the table shows the median
p50 / p99 over the repeats and how many repeats met the target. A rate is *sustained* when every
repeat served at least 97% of it and the median p99 stayed under 5x the target (no backlog).
Prints a table and writes JSON, one record per (model, backend, rate, repeat).

    python bench/serve_benchmark.py --dataset sim-small --config bench/configs/sim.yaml \\
        --models deepfm,dcnv2,din,sort --rates 50,100,200,400,800 --json bench/results/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import yaml
from rich.console import Console
from rich.table import Table

from agenticrs.config import apply_overrides
from agenticrs.runtime.files import atomic_write_json
from agenticrs.serve.client import request_payloads
from agenticrs.serve.payload import FieldKinds
from agenticrs.serve.server import free_port
from agenticrs.train.config import RunConfig
from agenticrs.train.run import Run
from agenticrs.train.workflow import train_run


def _train(dataset: str, model: str, bench_config: Path | None, steps: int, runs_dir: Path) -> Path:
    raw = yaml.safe_load(bench_config.read_text()) if bench_config else {}
    overrides = [o for o in raw.get("overrides", []) if not o.startswith("train.max_steps")]
    overrides += (raw.get("models") or {}).get(model, []) + [f"train.max_steps={steps}"]
    config = RunConfig.model_validate(apply_overrides({"dataset": dataset, "model": model, "train": {"seed": 1}}, overrides))
    return train_run(config, runs_dir).run.folder


def _payloads(run_dir: Path, candidates: int, count: int) -> list[dict[str, Any]]:
    """`count` distinct requests of `candidates` candidates each: the context (user, history) of a
    test row and the item fields of the next `candidates` test rows (real values, so encoding does
    real work, and the service's per-value memo meets users, items and histories it has not seen)."""
    spec = Run(run_dir).spec
    test = pq.read_table(spec.files["test"][0])
    count = max(1, min(count, test.num_rows // candidates))
    fields = FieldKinds.of(Run(run_dir).encoder)
    payloads = []
    for k in range(count):
        (_, _, payload), = request_payloads(test.slice(k * candidates, candidates), fields, list(spec.request_fields), None)
        payloads.append(payload)
    return payloads


def _export(run_dir: Path, backend: str) -> None:
    if backend == "torch":
        return
    from agenticrs.serve.export import export_onnx

    if not (run_dir / "export" / ("model.int8.onnx" if backend == "onnx-int8" else "model.onnx")).is_file():
        export_onnx(run_dir, quantize=True)


class Service:
    """`agenticrs serve` in a child process on one core, on loopback; stops on exit."""

    def __init__(self, run_dir: Path, backend: str, core: int, extra: list[str] | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "AGENTICRS_NUM_THREADS": "1"}
        cores = sorted(os.sched_getaffinity(0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agenticrs.cli.main", "serve", "--run", str(run_dir), "--backend", backend,
             "--port", str(self.port), *(extra or [])],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, {cores[core % len(cores)]}),
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Service:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not become ready in 120 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _load(url: str, payloads: list[dict[str, Any]], rate: float, seconds: float, max_requests: int) -> dict[str, Any]:
    """Open loop: request i is sent at start + i / rate whatever the earlier ones do, so a
    service that falls behind queues them. Its latency counts from the moment the generator
    sends it (waiting for a connection included); how late the generator's own timer woke for
    it (milliseconds on a virtual machine's idle core) is reported apart as `send_lag_p99_ms`.
    Request i carries payload i mod len(payloads). aiohttp on keep-alive connections (about a
    third of httpx's client cost per request)."""
    import gc

    import aiohttp

    total = min(int(rate * seconds), max_requests)
    bodies = [json.dumps(payload).encode() for payload in payloads]
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    lags: list[float] = []  # how late the generator sent each request: its own share of the latency
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as client:
        for i in range(5):  # warm-up
            async with client.post("/score", data=bodies[i % len(bodies)], headers=headers) as response:
                await response.read()
        gc.collect()  # before the schedule starts: a full collection takes tens of milliseconds
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            sent = time.perf_counter()
            lags.append(max(0.0, loop.time() - due) * 1000)
            try:
                async with client.post("/score", data=bodies[i % len(bodies)], headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append((time.perf_counter() - sent) * 1000)
            else:
                errors += 1

        gc.disable()  # the generator's own collections would show up as the service's tail
        steal_before = _cpu_steal()
        try:
            await asyncio.gather(*(one(i) for i in range(total)))
        finally:
            gc.enable()
        elapsed = loop.time() - start
        steal = _cpu_steal_share(steal_before, _cpu_steal())
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"rate": rate, "requests": total, "achieved_rps": len(latencies) / elapsed, "errors": errors,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()), "send_lag_p99_ms": float(np.percentile(lags, 99)) if lags else None,
            "cpu_steal": steal}  # fmt: skip


def _cpu_steal() -> tuple[int, int] | None:
    """(steal, total) jiffies of the machine (Linux /proc/stat): on a shared virtual machine the
    time the hypervisor gave to others, which no service can avoid; None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _cpu_steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time stolen between two `_cpu_steal` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _sequential(url: str, payloads: list[dict[str, Any]], requests: int) -> dict[str, Any]:
    """Closed loop on one keep-alive connection: the service's own latency with no queueing, and the
    server-side mean from its Prometheus histogram (what the HTTP client adds is the difference)."""
    bodies = [json.dumps(payload).encode() for payload in payloads]
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(10):
            client.post("/score", content=bodies[i % len(bodies)], headers=headers)
        before = _server_latency(client)
        latencies = []
        for i in range(requests):
            began = time.perf_counter()
            client.post("/score", content=bodies[i % len(bodies)], headers=headers)
            latencies.append((time.perf_counter() - began) * 1000)
        after = _server_latency(client)
    lat = np.asarray(latencies)
    server_ms = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1000
    return {"rate": "sequential", "requests": requests, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "server_mean_ms": server_ms, "errors": 0,
            "achieved_rps": requests / (lat.sum() / 1000)}  # fmt: skip


def _server_latency(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics").text
    total = float(text.split('agenticrs_request_latency_seconds_sum{arm="champion"} ')[1].split()[0])
    count = float(text.split('agenticrs_request_latency_seconds_count{arm="champion"} ')[1].split()[0])
    return total, count


def summarise(records: list[dict[str, Any]], target_ms: float) -> dict[str, Any] | None:
    """One model and backend's records: the median p50 / p99 per rate over its repeats, how many
    repeats met the target, the highest rate whose median p99 is within it, and the highest rate
    sustained (every repeat served 97% of the rate, median p99 under 5x the target)."""
    if not records:
        return None
    sequential = next((r for r in records if r["rate"] == "sequential"), None)
    by_rate: dict[float, dict[str, Any]] = {}
    for rate in sorted({r["rate"] for r in records if r["rate"] != "sequential"}):
        runs = [r for r in records if r["rate"] == rate]
        p99 = [r["p99_ms"] for r in runs]
        by_rate[rate] = {
            "p50_ms": float(np.median([r["p50_ms"] for r in runs])), "p99_ms": float(np.median(p99)),
            "p99_max_ms": float(max(p99)), "repeats": len(runs),
            "within_target": sum(r["p99_ms"] <= target_ms and r["errors"] == 0 for r in runs),
            "served": min(r["achieved_rps"] / rate for r in runs),
            "cpu_steal_max": max((r.get("cpu_steal") or 0.0 for r in runs), default=0.0),
        }  # fmt: skip
    within = [rate for rate, s in by_rate.items() if s["p99_ms"] <= target_ms and s["within_target"] * 2 > s["repeats"]]
    sustained = [rate for rate, s in by_rate.items() if s["served"] >= 0.97 and s["p99_ms"] <= 5 * target_ms]
    return {"sequential": sequential, "rates": by_rate, "max_rate_within_target": max(within, default=None),
            "max_sustained_rate": max(sustained, default=None)}  # fmt: skip


def _cell(summary: dict[str, Any], repeats: int) -> str:
    text = f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f}"
    return text + (f" ({summary['within_target']}/{summary['repeats']})" if repeats > 1 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sim-small")
    parser.add_argument("--config", type=Path, default=None, help="a benchmark config (its per-model settings)")
    parser.add_argument("--models", default="deepfm,dcnv2,din,sort")
    parser.add_argument("--run", action="append", default=[], help="MODEL=RUN_DIR: serve this run instead of training")
    parser.add_argument("--train-steps", type=int, default=300, help="optimiser steps of the runs trained here")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--rates", default="50,100,150,200,300,400", help="requests per second, ascending")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--payloads", type=int, default=64,
                        help="distinct requests (users, histories, candidates) the generator cycles through")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per rate")
    parser.add_argument("--max-requests", type=int, default=4_000, help="bound on the requests of one rate")
    parser.add_argument("--target-ms", type=float, default=10.0)
    parser.add_argument("--sequential", type=int, default=300, help="closed-loop requests on one connection first")
    parser.add_argument("--repeats", type=int, default=1, help="times the ladder of rates runs against each service")
    parser.add_argument("--runs-dir", type=Path, default=Path("bench/out/serve-runs"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.run)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rates = sorted(float(r) for r in args.rates.split(","))
    records: list[dict[str, Any]] = []
    console = Console(width=150)
    for model in models:
        if model in given:
            run_dir = Path(given[model])
        else:
            run_dir = _train(args.dataset, model, args.config, args.train_steps, args.runs_dir)
        payloads = _payloads(run_dir, args.candidates, args.payloads)
        for backend in backends:
            try:
                _export(run_dir, backend)
            except Exception as exc:  # noqa: BLE001 - a model that cannot export serves eagerly; say so
                console.print(f"{model}: {backend} unavailable ({str(exc).splitlines()[0]})")
                continue
            cores = sorted(os.sched_getaffinity(0))
            with Service(run_dir, backend, core=0, extra=["--inline-scoring"]) as service:
                if len(cores) > 1:  # the load generator on the other cores, away from the service's
                    os.sched_setaffinity(0, set(cores[1:]))
                result = _sequential(service.url, payloads, args.sequential)
                records.append({"model": model, "backend": backend, "candidates": args.candidates, "payloads": len(payloads),
                                "run": str(run_dir), **result})  # fmt: skip
                r = result
                console.print(f"{model:8s} {backend:9s} sequential: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                              f"server mean {r['server_mean_ms']:.1f} ms")  # fmt: skip
                for repeat in range(args.repeats):
                    for rate in rates:
                        result = asyncio.run(_load(service.url, payloads, rate, args.seconds, args.max_requests))
                        records.append({"model": model, "backend": backend, "candidates": args.candidates,
                                        "payloads": len(payloads), "run": str(run_dir), "repeat": repeat, **result})  # fmt: skip
                        r = result
                        console.print(f"{model:8s} {backend:9s} {rate:6.0f}/s #{repeat}: p50 {r['p50_ms']:.1f} ms, "
                                      f"p99 {r['p99_ms']:.1f} ms, {r['achieved_rps']:.0f}/s, {r['errors']} errors, "
                                      f"send lag p99 {r['send_lag_p99_ms']:.1f} ms, "
                                      f"steal {100 * (r['cpu_steal'] or 0):.1f}%")  # fmt: skip
                        if result["p99_ms"] > 20 * args.target_ms:  # far past saturation: higher rates add nothing
                            break
                os.sched_setaffinity(0, set(cores))
            atomic_write_json(args.json, records)
    table = Table(title=f"scoring service on one core, {args.candidates} candidates per request: p50 / p99 ms by rate"
                        + (f" (median of {args.repeats} repeats)" if args.repeats > 1 else ""))
    table.add_column("model")
    table.add_column("backend")
    table.add_column("one at a time", justify="right")
    for rate in rates:
        table.add_column(f"{rate:.0f}/s", justify="right")
    table.add_column(f"max rate with p99 ≤ {args.target_ms:.0f} ms", justify="right")
    table.add_column("max sustained", justify="right")
    for model in models:
        for backend in backends:
            summary = summarise([r for r in records if r["model"] == model and r["backend"] == backend], args.target_ms)
            if summary is None:
                continue
            one, by_rate = summary["sequential"], summary["rates"]
            cells = [f"{one['p50_ms']:.1f} / {one['p99_ms']:.1f}" if one else ""]
            cells += [_cell(by_rate[r], args.repeats) if r in by_rate else "" for r in rates]
            best, sustained = summary["max_rate_within_target"], summary["max_sustained_rate"]
            table.add_row(model, backend, *cells, f"{best:.0f}/s" if best else "none",
                          f"{sustained:.0f}/s" if sustained else "none")  # fmt: skip
    console.print("one at a time: closed loop on one connection (the service's own latency); a rate: open loop, "
                  "latency from each request's send, aiohttp client on another core")
    console.print(table)
    atomic_write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

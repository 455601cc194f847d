"""`agenticrs serve` (the scoring service) and `agenticrs rollout` (a canary against the simulator)."""

from __future__ import annotations

from pathlib import Path

import typer

from agenticrs.cli.common import console, friendly_errors


@friendly_errors
def serve(
    run: list[Path] = typer.Option([], "--run", help="a CTR run directory to serve (several: their mean)"),
    champion: bool = typer.Option(False, "--champion", help="serve the knowledge layer's champion; hot-swap on promotion"),
    db: str = typer.Option("sqlite:///runs/evolve/knowledge.db", "--db", help="knowledge database URL (with --champion)"),
    intent: int | None = typer.Option(None, "--intent", help="whose champion (default: the latest intent)"),
    backend: str = typer.Option("torch", "--backend", help="torch, onnx or onnx-int8 (ONNX needs `agenticrs export`)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, "--port"),
    poll_s: float = typer.Option(2.0, "--poll-s", help="how often --champion looks for a promotion"),
    max_candidates: int = typer.Option(2_000, "--max-candidates", help="the most candidates one request may carry"),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms",
                                      help="how long a request may wait for others to share its scoring call "
                                           "(0: only those already queued)"),
    inline_scoring: bool = typer.Option(False, "--inline-scoring",
                                        help="score on the event loop's thread (fewer hand-offs on one core)"),
    threads: int = typer.Option(1, "--threads", min=1, help="intra-op threads of the model (PyTorch and ONNX Runtime)"),
) -> None:
    """Serve click probabilities over HTTP: POST /score {context, candidates} -> scores in order;
    /healthz, /readyz, /metrics (Prometheus)."""
    import torch
    import uvicorn

    from agenticrs.serve.app import ServiceLimits
    from agenticrs.serve.server import champion_app, run_app

    torch.set_num_threads(threads)
    limits = ServiceLimits(max_candidates=max_candidates, max_wait_ms=max_wait_ms, inline_scoring=inline_scoring,
                           freeze_gc=True)  # a process that only serves
    if champion == bool(run):
        raise ValueError("give either --run DIR (one or more) or --champion --db URL")
    if champion:
        app, follower = champion_app(db, intent, backend, poll_s, limits, endpoint=f"http://{host}:{port}", threads=threads)
    else:
        app, follower = run_app(run, backend, limits, threads=threads), None
        console.print(f"serving {', '.join(map(str, run))} ({backend}) on http://{host}:{port}")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)  # errors still log
    finally:
        if follower is not None:
            follower.retire()


@friendly_errors
def rollout(
    candidate: int = typer.Option(..., "--candidate", help="the knowledge-layer candidate to roll out"),
    share: float = typer.Option(0.1, "--share", help="share of users routed to the candidate"),
    db: str = typer.Option("sqlite:///runs/evolve/knowledge.db", "--db", help="knowledge database URL"),
    days: int = typer.Option(4, "--days", help="simulated days (steps) before the candidate may be promoted"),
    max_drop: float = typer.Option(0.0, "--max-drop", help="tolerated relative drop of a guard metric"),
    p99_ms: float = typer.Option(250.0, "--p99-ms", help="latency guardrail"),
    backend: str = typer.Option("torch", "--backend", help="torch, onnx or onnx-int8"),
    seed: int = typer.Option(0, "--seed", help="the simulated days' seed"),
    out: Path = typer.Option(Path("runs/rollouts"), "--out", help="folder for the per-step outcomes"),
) -> None:
    """Canary a candidate against its intent's champion through the HTTP service and the simulator;
    promote or roll back by the guardrails. A rollout still running (killed) resumes."""
    from rich.table import Table

    from agenticrs.serve.rollout import RolloutSettings, run_rollout

    settings = RolloutSettings(share=share, days=days, max_drop=max_drop, p99_ms=p99_ms, backend=backend, seed=seed)
    result = run_rollout(db, candidate, settings, out)
    table = Table(title=f"rollout {result.rollout_id}: candidate {candidate} on {share:.0%} of users")
    for column in ("day", "clicks lift [CI]", "purchases lift [CI]", "gmv lift [CI]", "p99 ms", "verdict"):
        table.add_column(column, justify="left" if column == "verdict" else "right")
    for step in result.steps:
        m = step["metrics"]
        cells = [f"{m[k]['lift']:+.1%} [{m[k]['ci_low']:+.1%}, {m[k]['ci_high']:+.1%}]" for k in ("clicks", "purchases", "gmv")]
        table.add_row(str(step["step"]), *cells, f"{m['p99_ms']:.1f}", step["verdict"])
    console.print(table)
    console.print(f"{result.status}: {result.reason}")

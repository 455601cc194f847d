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
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="how long a request waits to share a scoring call"),
) -> None:
    """Serve click probabilities over HTTP: POST /score {context, candidates} -> scores in order;
    /healthz, /readyz, /metrics (Prometheus)."""
    import uvicorn

    from agenticrs.serve.app import ServiceLimits
    from agenticrs.serve.server import champion_app, run_app

    limits = ServiceLimits(max_candidates=max_candidates, max_wait_ms=max_wait_ms)
    if champion == bool(run):
        raise ValueError("give either --run DIR (one or more) or --champion --db URL")
    if champion:
        app, follower = champion_app(db, intent, backend, poll_s, limits, endpoint=f"http://{host}:{port}")
    else:
        app, follower = run_app(run, backend, limits), None
        console.print(f"serving {', '.join(map(str, run))} ({backend}) on http://{host}:{port}")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if follower is not None:
            follower.retire()

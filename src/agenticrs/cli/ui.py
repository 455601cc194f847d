"""`agenticrs ui`: the live dashboard over the knowledge layer (read-only)."""

from __future__ import annotations

import socket

import typer

from agenticrs.cli.common import console, friendly_errors, styled
from agenticrs.cli.evolve import DB_OPTION


def _check_port(host: str, port: int) -> None:
    """Fail with one line before the server starts when the address cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@friendly_errors
def ui(
    db: str = DB_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: this machine only)"),
    port: int = typer.Option(8765, "--port", "-p", min=1, max=65535, help="port to listen on"),
) -> None:
    """A live web page over the knowledge layer: champion, trajectory, candidates, audits, deployments, rollouts."""
    import uvicorn

    from agenticrs.serve.dashboard import create_dashboard

    app = create_dashboard(db)  # opens the database now: a bad one is a one-line error, not a broken page
    _check_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    reading = f"  (reading {app.state.store.display}; Ctrl-C stops)"
    console.print(styled("dashboard: ", (f"http://{shown}:{port}/", "bold"), reading))
    uvicorn.run(app, host=host, port=port, log_level="warning")

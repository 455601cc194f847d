"""Running the service: on loopback in a background thread (tests, rollouts, benchmarks) or in
the foreground (`agenticrs serve`), and following the knowledge layer's champion (hot swap on
promotion), with every model put behind the endpoint recorded as a deployment."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from agenticrs.serve.app import Router, ServiceLimits, create_app
from agenticrs.serve.models import ServedModel, candidate_runs


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread; yields the base URL; stops on exit."""
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the service did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@dataclass
class ChampionFollower:
    """Polls the knowledge layer for an intent's champion and swaps it in when it changes; records a
    deployment per model served (the previous one is retired)."""

    db: str
    router: Router
    intent_id: int | None = None
    backend: str = "torch"
    endpoint: str = ""
    poll_s: float = 2.0
    threads: int | None = None
    current: int | None = None
    deployment_id: int | None = None

    def _champion(self) -> tuple[int, int] | None:
        from agenticrs.agents.knowledge import KnowledgeStore
        from agenticrs.agents.knowledge.schema import Intent

        store = KnowledgeStore(self.db, readonly=True)
        try:
            with store.transaction() as tx:
                intent = tx.get(Intent, self.intent_id) if self.intent_id else tx.latest_intent()
                if intent is None:
                    return None
                champion = tx.champion(intent.id)
                return (intent.id, champion.candidate_id) if champion else None
        finally:
            store.close()

    def check(self) -> bool:
        """Load and swap in a new champion if there is one; True when a swap happened."""
        found = self._champion()
        if found is None or found[1] == self.current:
            return False
        intent_id, candidate_id = found
        from agenticrs.agents.knowledge import KnowledgeStore

        store = KnowledgeStore(self.db)
        try:
            from agenticrs.serve.export import ExportError

            runs = candidate_runs(store, candidate_id)
            backend, why_eager = self.backend, None
            if backend != "torch":
                try:
                    ensure_exports(store, runs, backend, candidate_id, intent_id)
                except ExportError as exc:  # e.g. SORT: served eagerly, and the deployment says why
                    backend, why_eager = "torch", str(exc).splitlines()[0]
                    print(f"champion follower: candidate {candidate_id} serves eagerly: {why_eager}")
            model = ServedModel.load(runs, backend, candidate_id=candidate_id, threads=self.threads)
            self.router.swap(model)  # loaded first, swapped in one assignment: no request waits or fails
            with store.transaction() as tx:
                if self.deployment_id is not None:
                    tx.end_deployment(self.deployment_id)
                details = {"intent": intent_id, "runs": [str(p) for p in model.runs], "version": model.version}
                if why_eager:
                    details["eager_because"] = why_eager
                row = tx.add_deployment(str(model.runs[0]), backend, candidate_id=candidate_id, endpoint=self.endpoint,
                                        details=details)  # fmt: skip
                self.deployment_id = row.id
        finally:
            store.close()
        self.current = candidate_id
        return True

    def retire(self) -> None:
        if self.deployment_id is None:
            return
        from agenticrs.agents.knowledge import KnowledgeStore

        store = KnowledgeStore(self.db)
        try:
            with store.transaction() as tx:
                tx.end_deployment(self.deployment_id)
        finally:
            store.close()
        self.deployment_id = None

    async def follow(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.check)
            except Exception as exc:  # noqa: BLE001 - a failed load keeps the current model serving
                print(f"champion follower: {str(exc).splitlines()[0]}")
            await asyncio.sleep(self.poll_s)


def ensure_exports(store, runs: list[Path], backend: str, candidate_id: int | None = None,
                   intent_id: int | None = None) -> None:  # fmt: skip
    """Export the runs an ONNX backend needs (once; each export is recorded as an artifact of the
    candidate). A model that cannot export raises `ExportError`: the caller serves it eagerly."""
    from agenticrs.serve.export import export_onnx, record_export

    name = "model.int8.onnx" if backend == "onnx-int8" else "model.onnx"
    for run in runs:
        if not (run / "export" / name).is_file():
            report = export_onnx(run, quantize=backend == "onnx-int8")
            record_export(store, report, candidate_id=candidate_id, intent_id=intent_id)


def champion_app(db: str, intent_id: int | None = None, backend: str = "torch", poll_s: float = 2.0,
                 limits: ServiceLimits | None = None, endpoint: str = "",
                 threads: int | None = None) -> tuple[FastAPI, ChampionFollower]:  # fmt: skip
    """A service that serves an intent's champion and follows its promotions."""
    router = Router()
    follower = ChampionFollower(db, router, intent_id, backend, endpoint, poll_s, threads)
    tasks: list[asyncio.Task] = []

    async def start(app: FastAPI) -> None:
        await asyncio.get_running_loop().run_in_executor(None, follower.check)
        tasks.append(asyncio.get_running_loop().create_task(follower.follow()))

    app = create_app(router, limits, on_startup=start)
    return app, follower


def run_app(runs: list[str | Path], backend: str = "torch", limits: ServiceLimits | None = None,
            route_field: str | None = None, threads: int | None = None) -> FastAPI:  # fmt: skip
    """A service over fixed run directories (their mean when several)."""
    model = ServedModel.load(list(runs), backend, threads=threads)
    return create_app(Router(champion=model, route_field=route_field), limits)

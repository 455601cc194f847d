"""The scoring service (`agenticrs serve`): FastAPI over the served model(s).

- `POST /score`: one user context plus candidates (raw field values, encoded with the run's saved
  encoder; unseen values go to the OOV id) -> their click probabilities in order, with the arm and
  the model version that scored them.
- Micro-batching: each request is encoded as it arrives (its context once, not once per candidate;
  straight from its values, `RequestEncoder`; a bad request fails alone with a 4xx), and
  concurrent requests for the same model are scored in one call (up to `max_batch_rows`, waiting
  at most `max_wait_ms` for company), on one scoring thread, so the event loop never blocks on
  the model.
- Hot swap: `Router.swap` replaces a model between batches; a batch already taken keeps the model
  it started with, so no request is dropped or scored by half of each.
- Canary: with a canary set, a stable hash of the routing field (the user) sends `share` of users
  to it; the response names the arm.
- `/healthz` (alive), `/readyz` (a model is loaded), `/metrics` (Prometheus: requests by arm and
  status, latency histogram, batch sizes, the served model versions).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from agenticrs.data.errors import DataError
from agenticrs.serve.models import Encoded, ServedModel
from agenticrs.serve.payload import PayloadError, ScoreRequest, ScoreResponse


@dataclass
class ServiceLimits:
    """What one request may carry: bigger bodies are refused before they are read whole."""

    max_body_bytes: int = 1_000_000
    max_candidates: int = 2_000
    max_batch_rows: int = 8_192
    max_wait_ms: float = 0.0  # 0: take what is queued now (while a batch is scored, the next one gathers)
    inline_scoring: bool = False  # score on the event loop's thread (one core: no thread hand-offs)
    # after start-up, move everything loaded (models, vocabularies, libraries) out of the garbage
    # collector's full passes, which otherwise stall a request now and then (the p99); for a
    # process that only serves (`agenticrs serve`), not for apps made inside a longer program
    freeze_gc: bool = False


def in_canary(keys: np.ndarray | list[Any], share: float, salt: str = "canary") -> np.ndarray:
    """Stable user -> arm assignment: CRC32 of salt:key below share * 2^32 (the same in every
    process, so the controller can split outcomes by the arm the service used)."""
    threshold = share * 2**32
    return np.array([zlib.crc32(f"{salt}:{k}".encode()) < threshold for k in keys], dtype=bool)


@dataclass
class Router:
    """The champion, an optional canary and the share of users it gets."""

    champion: ServedModel | None = None
    canary: ServedModel | None = None
    share: float = 0.0
    route_field: str | None = None
    salt: str = "canary"
    swaps: int = 0

    def swap(self, model: ServedModel, arm: str = "champion") -> None:
        """Replace an arm's model. One reference assignment: batches in flight keep their model."""
        if arm == "champion":
            self.champion = model
        elif arm == "canary":
            self.canary = model
        else:
            raise ValueError(f"arm must be 'champion' or 'canary', got {arm!r}")
        self.swaps += 1

    def set_canary(self, model: ServedModel | None, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        self.canary, self.share = model, share if model is not None else 0.0

    def arm_for(self, request: ScoreRequest) -> str:
        if self.canary is None or self.share <= 0 or self.route_field is None:
            return "champion"
        key = request.context.get(self.route_field)
        if key is None and request.candidates:
            key = request.candidates[0].get(self.route_field)
        return "canary" if bool(in_canary([key], self.share, self.salt)[0]) else "champion"

    def model(self, arm: str) -> ServedModel | None:
        return self.canary if arm == "canary" else self.champion


@dataclass
class _Pending:
    encoded: list[Encoded]  # the request's model inputs, per run of the model
    rows: int
    future: asyncio.Future
    model: ServedModel


def _score_group(model: ServedModel, group: list[_Pending]) -> list[np.ndarray | Exception]:
    """The encoded requests of one model scored in one call per run, split back per request."""
    try:
        scores = model.score_encoded([pending.encoded for pending in group])
    except Exception as exc:  # noqa: BLE001 - delivered to every request of the call
        return [exc] * len(group)
    results: list[np.ndarray | Exception] = []
    start = 0
    for pending in group:
        results.append(scores[start : start + pending.rows])
        start += pending.rows
    return results


@dataclass
class MicroBatcher:
    """Collects concurrent requests per model into one scoring call on a single worker thread."""

    limits: ServiceLimits
    metrics: ServiceMetrics
    queue: asyncio.Queue | None = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="scoring"))
    task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def score(self, model: ServedModel, encoded: list[Encoded], rows: int) -> np.ndarray:
        assert self.queue is not None, "the batcher is not started"
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(encoded, rows, future, model))
        return await future

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            batch, rows = [first], first.rows
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while rows < self.limits.max_batch_rows:
                try:
                    item = self.queue.get_nowait() if loop.time() >= deadline else await asyncio.wait_for(
                        self.queue.get(), deadline - loop.time())
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                batch.append(item)
                rows += item.rows
            by_model: dict[int, list[_Pending]] = {}
            for item in batch:
                by_model.setdefault(id(item.model), []).append(item)
            for group in by_model.values():
                await self._run(group)

    async def _run(self, group: list[_Pending]) -> None:
        model = group[0].model
        self.metrics.batch_rows.observe(sum(g.rows for g in group))
        if self.limits.inline_scoring:
            results = _score_group(model, group)
        else:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, _score_group, model, group)
        for pending, result in zip(group, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)


class ServiceMetrics:
    """Prometheus metrics in a registry of the app's own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("agenticrs_requests", "scoring requests", ["arm", "status"], registry=self.registry)
        self.latency = Histogram("agenticrs_request_latency_seconds", "time to score one request", ["arm"],
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                 registry=self.registry)  # fmt: skip
        self.batch_rows = Histogram("agenticrs_batch_rows", "rows per scoring call (micro-batches)",
                                    buckets=(1, 10, 100, 300, 1000, 3000, 10000), registry=self.registry)  # fmt: skip
        self.version = Gauge("agenticrs_model_version", "version of the model serving an arm", ["arm", "model"],
                             registry=self.registry)  # fmt: skip

    def show(self, router: Router) -> None:
        self.version.clear()
        for arm in ("champion", "canary"):
            model = router.model(arm)
            if model is not None:
                self.version.labels(arm, model.name).set(model.version)


def create_app(router: Router, limits: ServiceLimits | None = None,
               on_startup: Callable[[FastAPI], Awaitable[None]] | None = None) -> FastAPI:  # fmt: skip
    """The service over `router` (whose models may be swapped while it runs)."""
    limits = limits or ServiceLimits()
    metrics = ServiceMetrics()
    batcher = MicroBatcher(limits, metrics)
    request_ids = itertools.count(1)

    async def lifespan(app: FastAPI):
        batcher.start()
        if on_startup is not None:
            await on_startup(app)
        if limits.freeze_gc:
            gc.collect()
            gc.freeze()
        yield
        await batcher.stop()

    app = FastAPI(title="agenticrs scoring service", lifespan=lifespan)
    app.state.router, app.state.metrics, app.state.limits, app.state.batcher = router, metrics, limits, batcher

    def error(status: int, message: str, arm: str = "none") -> JSONResponse:
        metrics.requests.labels(arm, str(status)).inc()
        return JSONResponse({"detail": message}, status_code=status)

    @app.post("/score", response_model=ScoreResponse, openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": ScoreRequest.model_json_schema()}}}
    })  # fmt: skip
    async def score(request: Request) -> Any:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return error(413, f"body: {length} bytes; this service takes at most {limits.max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                return error(413, f"body: more than {limits.max_body_bytes} bytes")
        try:
            parsed = ScoreRequest.model_validate_json(body)  # parsed and checked in one pass (pydantic-core)
        except ValueError:
            try:  # the careful path, for its message: NaN, bad JSON, a wrong type, each by name
                raw = json.loads(body, parse_constant=_refuse_constant)
                parsed = ScoreRequest.model_validate(raw)
            except PayloadError as exc:
                return error(exc.status, str(exc))
            except (ValueError, RecursionError) as exc:  # includes JSON and pydantic errors
                return error(422, _validation_message(exc))
        arm = router.arm_for(parsed)
        model = router.model(arm)
        if model is None:
            return error(503, "no model is loaded yet", arm)
        try:
            # each request its own request id: a micro-batch must not merge requests for request-centric models (SORT)
            encoded = model.encode_request(parsed, next(request_ids), limits.max_candidates)
            scores = await batcher.score(model, encoded, len(parsed.candidates))
        except PayloadError as exc:
            return error(exc.status, str(exc), arm)
        except DataError as exc:
            return error(422, str(exc).splitlines()[0], arm)
        metrics.requests.labels(arm, "200").inc()
        metrics.latency.labels(arm).observe(time.perf_counter() - started)
        # serialised here: FastAPI's response-model pass re-validates every score (the schema stays documented)
        content = {"scores": scores.astype(float).tolist(), "arm": arm, "model": model.name, "version": model.version}
        return Response(json.dumps(content).encode(), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> Any:
        if router.champion is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "champion": router.champion.describe(),
                "canary": router.canary.describe() if router.canary else None, "share": router.share}  # fmt: skip

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        metrics.show(router)
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    return app


def _refuse_constant(name: str) -> Any:
    raise PayloadError(f"body: {name} is not a JSON value (send null for a missing value)")


def _validation_message(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return f"{where}: {first['msg']}" + (f" ({len(exc.errors())} problems)" if len(exc.errors()) > 1 else "")
    if isinstance(exc, json.JSONDecodeError):
        return f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "body: nested too deeply"
    return f"body: {str(exc).splitlines()[0][:200]}"

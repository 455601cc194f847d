"""Talking to the service: rows of a table -> scoring requests, and an environment policy that
scores the simulator's requests through the HTTP endpoint (so an A/B test or a canary measures
the served system, not the in-process model)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from agenticrs.serve.payload import FieldKinds


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def request_payloads(table: pa.Table, fields: FieldKinds, context_fields: list[str],
                     request_column: str | None = None) -> list[tuple[int, int, dict[str, Any]]]:  # fmt: skip
    """(start, stop, payload) per request: the rows of one request are contiguous (`request_column`,
    or the whole table as one request); `context_fields` go in the context once, the rest of the
    model's fields in each candidate."""
    n = table.num_rows
    if request_column and request_column in table.column_names:
        ids = table.column(request_column).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if n else np.zeros(0, np.int64)
    else:
        starts = np.zeros(1 if n else 0, np.int64)
    stops = np.r_[starts[1:], n].astype(np.int64)
    names = sorted(fields.required & set(table.column_names))
    columns = {name: [_plain(v) for v in table.column(name).to_pylist()] for name in names}
    context = [c for c in context_fields if c in columns]
    item_fields = [c for c in names if c not in context]
    out = []
    for start, stop in zip(starts.tolist(), stops.tolist()):
        payload = {
            "context": {c: columns[c][start] for c in context},
            "candidates": [{c: columns[c][i] for c in item_fields} for i in range(start, stop)],
        }
        out.append((start, stop, payload))
    return out


@dataclass
class HttpPolicy:
    """An `Environment` policy that scores each request through `POST {url}/score`, `concurrency`
    requests in flight (so the service's micro-batching is exercised). Keeps, per served request,
    the arm that answered, the model version and the client-side latency."""

    url: str
    fields: FieldKinds
    context_fields: list[str]
    request_column: str | None = None
    concurrency: int = 16
    timeout_s: float = 30.0
    arms: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    row_arm: np.ndarray | None = None

    async def _score_all(self, payloads: list[tuple[int, int, dict[str, Any]]], n: int) -> np.ndarray:
        scores = np.zeros(n, np.float64)
        row_arm = np.empty(n, dtype=object)
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout_s) as client:

            async def one(start: int, stop: int, payload: dict[str, Any]) -> None:
                async with gate:
                    began = time.perf_counter()
                    try:
                        response = await client.post("/score", json=payload)
                    except httpx.HTTPError:
                        response = None
                    self.latencies_ms.append((time.perf_counter() - began) * 1000)
                if response is None or response.status_code != 200:
                    self.errors += 1  # an error leaves the request's candidates unranked (score 0)
                    self.arms.append("error")
                    row_arm[start:stop] = "error"
                    return
                body = response.json()
                scores[start:stop] = body["scores"]
                self.arms.append(body["arm"])
                row_arm[start:stop] = body["arm"]

            await asyncio.gather(*(one(*p) for p in payloads))
        self.row_arm = row_arm
        return scores

    def __call__(self, batch: Any) -> np.ndarray:
        table = batch.table if hasattr(batch, "table") else batch
        payloads = request_payloads(table, self.fields, self.context_fields, self.request_column)
        return asyncio.run(self._score_all(payloads, table.num_rows))

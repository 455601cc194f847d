"""A tiny OpenAI-compatible chat-completions server for tests (stdlib only, loopback, port 0).

    with FakeOpenAI(responder=lambda request: '{"model": "dnn"}', api_key="k") as server:
        proposer = LLMProposer(base_url=server.base_url, model="fake", api_key="k")
        ...
        server.requests  # the JSON bodies received

The answer text comes from `responder(request_json) -> str`; the default one reads the incumbent
(the first JSON object of the user message), changes its dropout and answers in a ```json block
with a rationale. A wrong or missing `Authorization: Bearer <api_key>` gets a 401.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Responder = Callable[[dict[str, Any]], str]


def first_json_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                value, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def user_message(request: dict[str, Any]) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def incumbent_of(request: dict[str, Any]) -> dict[str, Any]:
    found = first_json_object(user_message(request))
    if found is None:
        raise ValueError("no incumbent JSON in the user message")
    return found


def default_responder(request: dict[str, Any]) -> str:
    """The incumbent with dropout moved (0.3, or 0.4 when it already is 0.3), as a ```json block."""
    candidate = incumbent_of(request)
    candidate["dropout"] = 0.4 if candidate.get("dropout") == 0.3 else 0.3
    candidate["rationale"] = "more regularisation"
    return "Here is my proposal:\n```json\n" + json.dumps(candidate, indent=2) + "\n```\n"


class FakeOpenAI:
    """Context manager running the server in a daemon thread; `.base_url` ends in /v1."""

    def __init__(self, responder: Responder = default_responder, api_key: str | None = "test-key", delay_s: float = 0.0):
        self.responder = responder
        self.api_key = api_key
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                fake.headers.append(dict(self.headers.items()))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_api_key"}})
                    return
                try:
                    request = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                    return
                fake.requests.append(request)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                content = fake.responder(request)
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-fake-{len(fake.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": len(raw) // 4, "completion_tokens": len(content) // 4,
                                  "total_tokens": (len(raw) + len(content)) // 4},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

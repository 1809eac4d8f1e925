"""A tiny OpenAI-compatible chat server on loopback, for tests that must not reach a real model.

Answers are deterministic: "fake answer: <last user message>". Every request is recorded (method,
path, JSON body) in `FakeOpenAI.requests` so tests can assert what the client actually sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_MODEL = "fake-echo-1"


@dataclass
class FakeRequest:
    method: str
    path: str
    body: dict[str, Any] | None
    authorization: str | None = None


@dataclass
class FakeOpenAI:
    base_url: str  # ends in /v1, the form OpenAI clients expect
    requests: list[FakeRequest] = field(default_factory=list)
    models: tuple[str, ...] = (FAKE_MODEL,)  # what GET /v1/models lists (clients check the name)

    @property
    def chat_requests(self) -> list[FakeRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]


def fake_answer(messages: list[dict[str, Any]]) -> str:
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last_user.get("content", "")
    if isinstance(content, list):  # multi-part content: keep the text parts
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return f"fake answer: {content}"


def _completion(model: str, answer: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunks(model: str, answer: str) -> Iterator[dict[str, Any]]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    for start in range(0, len(answer), 8):  # several content deltas, as a real server streams
        piece = answer[start : start + 8]
        yield {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield {**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _handler_for(state: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _send_json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.requests.append(FakeRequest("GET", self.path, None, self.headers.get("Authorization")))
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": model, "object": "model"} for model in state.models]
                self._send_json(200, {"object": "list", "data": data})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append(FakeRequest("POST", self.path, body, self.headers.get("Authorization")))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            model = str(body.get("model") or FAKE_MODEL)
            answer = fake_answer(body.get("messages") or [])
            if not body.get("stream"):
                self._send_json(200, _completion(model, answer))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")  # the stream's end is the connection's end
            self.end_headers()
            for chunk in _chunks(model, answer):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def running_fake_openai(*, extra_models: tuple[str, ...] = ()) -> Iterator[FakeOpenAI]:
    """Serve the fake API on 127.0.0.1 (a free port) for the duration of the block."""
    state = FakeOpenAI(base_url="", models=(FAKE_MODEL, *extra_models))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    state.base_url = f"http://{host}:{port}/v1"
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

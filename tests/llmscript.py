"""A scripted OpenAI-compatible chat-completions server on loopback, for deterministic
tests of the monitors' LLM rung (the real model is tests/llmserver.py).

Each POST /v1/chat/completions takes the next step of the script (the last one
repeats): ``Reply(content)`` answers with that message content, ``Status(429)``
answers an error status (with ``retry-after-ms``), and any step may ``delay_s``
first (a slow endpoint, or one slower than the client's timeout); a ``Reply`` may also
``hold`` until the test releases it (an endpoint slow for exactly as long as the test
needs, whatever the machine's load). Every request
body is kept (``requests``) and the most calls seen in flight at once
(``max_in_flight``).
"""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    content: str
    delay_s: float = 0.0
    hold: threading.Event | None = None  # answer only once the test sets it (≤ 300 s)


@dataclass(frozen=True)
class Status:
    code: int
    delay_s: float = 0.0


Step = Reply | Status


class Script:
    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def next(self, body: dict[str, Any]) -> Step:
        with self.lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            i = min(len(self.requests) - 1, len(self.steps) - 1)
            return self.steps[i]

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            blob = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(blob)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(blob)

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            step = script.next(body)
            try:
                if step.delay_s:
                    time.sleep(step.delay_s)
                if isinstance(step, Reply) and step.hold is not None:
                    step.hold.wait(300)
                if isinstance(step, Status):
                    self._send(step.code, {"error": {"message": "scripted", "type": "x"}},
                               {"retry-after-ms": "10"})
                    return
                self._send(200, {
                    "id": "c1", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": step.content}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                }, {})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout)
            finally:
                script.done()

    return Handler


@contextmanager
def scripted_llm(steps: list[Step]) -> Iterator[tuple[str, Script]]:
    """(base URL ending in /v1, the script) while the server runs."""
    script = Script(steps)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

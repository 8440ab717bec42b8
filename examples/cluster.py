"""Two or more cortexd hosts sharing PostgreSQL and Redis, on this machine: for the
cluster fault tests (tests/system/test_system_cluster*.py) and bench/crosshost.py.

A cluster's hubs share their signing key and credentials: the first hub creates
them, each later hub starts from a copy (as an operator would copy ``hub.key``
and ``tokens`` to every hub host). Each hub has its own state directory, ports
and ``--hub-id``.
"""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.fleet import enroll
from cortex.tokens import bearer, read_token_file
from cortex.v1 import control_pb2, control_pb2_grpc
from examples.localfleet import LocalHub

SHARED = ("hub.key", "hub.pub", "tokens", "admin.token")


def start_cluster(fleet: Any, store: str, coordination: str, hubs: int = 2,
                  shards: int = 1, extra: tuple[str, ...] = ()) -> list[LocalHub]:
    """Start ``hubs`` cortexd hosts (hub-a, hub-b, …) in ``fleet.base``; each is appended to
    ``fleet.hubs`` before it starts, so the caller's cleanup kills it whatever happens."""
    out: list[LocalHub] = []
    for i in range(hubs):
        hub = LocalHub(fleet.base / f"hub{len(fleet.hubs)}", shards=shards, extra_args=[
            "--store", store, "--coordination", coordination, "--hub-id", f"hub-{'abcdef'[i]}",
            *extra])
        fleet.hubs.append(hub)
        if out:
            hub.state_dir.mkdir(parents=True, exist_ok=True)
            for name in SHARED:
                src: Path = out[0].state_dir / name
                shutil.copy2(src, hub.state_dir / name)
        out.append(hub.start())
    return out


# -- simulated fleets and a steady stream of submissions -------------------------





class SimFleet:
    """One ``bench.fleet`` process of simulated nodes (the real node protocol)."""

    def __init__(self, base: Path, name: str, hubs: list[LocalHub], count: int,
                 task_s: float = 0.0, bound_s: float = 110.0) -> None:
        self.base, self.name, self.count = base, name, count
        self.tokens = base / f"{name}.tokens"
        self.status_file = base / f"{name}.status.json"
        self.report_file = base / f"{name}.report.json"
        self.log = base / f"{name}.log"
        self.node_ids = [f"{name}-{i}" for i in range(count)]
        self.hubs, self.task_s, self.bound_s = hubs, task_s, bound_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []  # more bench.fleet flags (--stream-bps, …)

    def enroll(self, tokens_file: Path) -> None:
        tokens_file.parent.mkdir(parents=True, exist_ok=True)
        enroll(tokens_file, self.node_ids, self.tokens)

    def start(self) -> "SimFleet":
        with open(self.log, "ab") as log:
            self.proc = self._popen(log)
        return self

    def _popen(self, log: Any) -> "subprocess.Popen[bytes]":
        return subprocess.Popen(
            [sys.executable, "-m", "bench.fleet",
             "--hub", ",".join(h.node_address for h in self.hubs),
             "--hub-key", str(self.hubs[0].hub_key_file), "--tokens", str(self.tokens),
             "--report", str(self.report_file), "--status", str(self.status_file),
             "--status-every-s", "0.2", "--task-s", str(self.task_s),
             "--seconds", str(self.bound_s), *self.extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    def status(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"fleet {self.name} exited {self.proc.returncode}: "
                               f"{self.log.read_text()[-2000:]}")
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}

    def attached(self) -> int:
        return int(self.status().get("attached", 0))

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait for the report (the nodes' own records)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return dict(json.loads(self.report_file.read_text()))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Submitter(threading.Thread):
    """Submit short no-op tasks round-robin through several hubs' Control APIs, at about
    ``rate`` per second, until stopped (and at most ``limit`` of them). A submit that
    fails (its hub is dead) is counted, not retried: the store is what says which
    tasks exist."""

    def __init__(self, hubs: list[LocalHub], rate: float, limit: int = 5_000) -> None:
        super().__init__(daemon=True)
        self.rate, self.limit = rate, limit
        self.targets = []
        for hub in hubs:
            channel = grpc.insecure_channel(hub.control_address)
            stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
            self.targets.append((hub, channel, stub,
                                 bearer(read_token_file(hub.admin_token_file))))
        self.accepted: list[str] = []
        self.failed = 0
        self.halt = threading.Event()
        self.skip: set[str] = set()  # hub ids not to use any more

    def run(self) -> None:
        i = 0
        while not self.halt.is_set() and i < self.limit:
            hub, _, stub, meta = self.targets[i % len(self.targets)]
            i += 1
            if str(hub.state_dir) in self.skip:
                continue
            req = control_pb2.SubmitRequest(command="true",
                                            idempotency_key=uuid.uuid4().hex)
            try:
                resp = stub.Submit(req, metadata=meta, timeout=5)
                self.accepted.append(resp.task.task_id)
            except grpc.RpcError:
                self.failed += 1
            self.halt.wait(1 / self.rate)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        for _, channel, _, _ in self.targets:
            channel.close()


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> float:
    """Poll until truthy; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - start


def store_tasks(url: str) -> dict[str, tuple[str, int]]:
    """task id -> (state, attempt), straight from PostgreSQL."""
    import psycopg

    with psycopg.connect(url) as conn:
        return {t: (s, a) for t, s, a in conn.execute(
            "SELECT task_id, state, attempt FROM tasks").fetchall()}


def history(url: str) -> dict[str, Any]:
    """The history checker's report of a store (cortexd/history.py), as a dict."""
    import asyncio
    from dataclasses import asdict

    from cortexd.history import check_url

    report = asyncio.run(check_url(url))
    return {**asdict(report), "exit": 0 if report.ok else 1}


def executed_per_task(reports: list[dict[str, Any]]) -> dict[str, int]:
    """How many times each task was executed, from the simulated nodes' own records."""
    counts: dict[str, int] = {}
    for report in reports:
        for runs in report["executed"].values():
            for task_id, _attempt in runs:
                counts[task_id] = counts.get(task_id, 0) + 1
    return counts

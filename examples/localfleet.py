"""A hub and nodes on this machine, as real processes: for the demo and the system tests.

``LocalHub`` starts ``cortexd`` on loopback (port 0 unless told otherwise), waits
for the ``cortexd.json`` it writes when ready, and after a stop tells what was
left behind: child processes, listening ports, ``/dev/shm/cortex*`` segments.
``LocalNode`` enrolls a node and runs ``nodeagent`` against the hub. ``Ctl``
runs the real ``cortexctl``. Every process is remembered by pid and start time,
so cleanup only ever signals processes this module started (or their children).

Nothing here sleeps to synchronise: waits poll a condition under a deadline.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from examples.proctable import (
    alive,
    descendants,
    listening_ports,
    processes_with_env,
    shm_segments,
    signal_all,
    start_time,
)

__all__ = ["Ctl", "FleetError", "LocalHub", "LocalNode", "binary", "log_events",
           "shm_segments", "start_time", "tail", "wait_until"]

T = TypeVar("T")
#: Environment variable put on every nodeagent (and so on its tasks) to find strays; not
#: CORTEX_*, which the agent strips from task environments.
RUN_MARKER_ENV = "LOCALFLEET_RUN"


class FleetError(Exception):
    """A local process did not do what it should; the message carries its log tail."""


def wait_until(predicate: Callable[[], T | None], timeout_s: float, what: str,
               interval_s: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def log_events(path: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` whose ``event`` is ``name``. Processes sharing one log
    file may interleave a line now and then: such a line is skipped."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("event") == name:
            out.append(event)
    return out


def binary(name: str) -> list[str]:
    """The console script ``name`` of the interpreter running us (same venv)."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    module = {"cortexd": "cortexd.cli", "nodeagent": "nodeagent.cli",
              "cortexctl": "cortexctl.cli", "browserd": "browserd.cli"}[name]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def stop_process(proc: "subprocess.Popen[bytes]", timeout_s: float) -> int:
    """SIGTERM, wait up to ``timeout_s``; SIGKILL and raise if it did not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise FleetError(f"pid {proc.pid} did not exit within {timeout_s:g}s of SIGTERM "
                         "(killed it)") from None


# -- the hub --------------------------------------------------------------------

class LocalHub:
    def __init__(self, base_dir: Path, *, shards: int = 2, node_port: int = 0,
                 control_port: int = 0, extra_args: Sequence[str] = ()) -> None:
        self.base_dir = base_dir
        self.state_dir = base_dir / "hub"
        self.log_dir = base_dir / "logs"
        self.shards = shards
        self.node_port, self.control_port = node_port, control_port
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.starts = 0
        self.log_path = self.log_dir / "cortexd.log"
        self._seen: dict[int, int] = {}  # every child ever seen: {pid: start time}
        self._supervisor_pids: set[int] = set()  # every cortexd pid this hub had

    # addresses, known once started
    @property
    def node_address(self) -> str:
        return str(self.info["node_address"])

    @property
    def control_address(self) -> str:
        return str(self.info["control_address"])

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "admin.token"

    @property
    def hub_key_file(self) -> Path:
        return self.state_dir / "hub.pub"

    @property
    def ready_file(self) -> Path:
        return self.state_dir / "cortexd.json"

    def command(self) -> list[str]:
        return [*binary("cortexd"), "--state-dir", str(self.state_dir),
                "--shards", str(self.shards), "--insecure-loopback", "--log-format", "json",
                "--node-listen", f"127.0.0.1:{self.node_port}",
                "--control-listen", f"127.0.0.1:{self.control_port}", *self.extra_args]

    def start(self, timeout_s: float = 30.0) -> "LocalHub":
        """Start cortexd and wait until it is ready; keep the ports for a restart."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.log_path = self.log_dir / f"cortexd.{self.starts}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self._supervisor_pids.add(self.proc.pid)
        self.info = wait_until(self._ready, timeout_s, f"{self.ready_file} of pid {self.proc.pid}")
        self.node_port = int(self.node_address.rsplit(":", 1)[1])
        self.control_port = int(self.control_address.rsplit(":", 1)[1])
        self.remember_children()
        return self

    def _ready(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise FleetError(f"cortexd exited with {self.proc.returncode} before it was ready; "
                             f"log {self.log_path}:\n{tail(self.log_path)}")
        try:
            info: dict[str, Any] = json.loads(self.ready_file.read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.proc.pid else None

    def read_info(self) -> dict[str, Any]:
        """Re-read cortexd.json (shard pids change when a shard is restarted)."""
        self.info = json.loads(self.ready_file.read_text())
        self.remember_children()
        return self.info

    def remember_children(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._seen.update(descendants(self.proc.pid))

    def shard_pid(self, shard: int) -> int:
        for entry in self.info["shards"]:
            if entry["shard"] == shard:
                return int(entry["pid"])
        raise KeyError(f"no shard {shard} in {self.ready_file}")

    def kill_shard(self, shard: int) -> int:
        pid = self.shard_pid(shard)
        os.kill(pid, signal.SIGKILL)
        return pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM cortexd and return its exit code."""
        assert self.proc is not None
        self.remember_children()
        return stop_process(self.proc, timeout_s)

    def leftovers(self) -> list[str]:
        """After a stop: what cortexd left behind (empty when it cleaned up)."""
        problems = [f"child pid {pid} still runs" for pid in alive(self._seen)]
        ports = listening_ports()
        problems += [f"port {port} still listening" for port in (self.node_port,
                                                                 self.control_port)
                     if port and port in ports]
        # Segments are named cortex-<supervisor pid>-…: count only this hub's, not those of
        # another cortexd that happens to run on the machine at the same time.
        ours = {f"cortex-{pid}-" for pid in self._supervisor_pids}
        problems += [f"/dev/shm/{name} left" for name in sorted(shm_segments())
                     if any(name.startswith(prefix) for prefix in ours)]
        if self.ready_file.exists():
            problems.append(f"{self.ready_file} left")
        return problems

    def kill(self) -> None:
        """Cleanup after a failure: SIGKILL cortexd and every child it had."""
        self.remember_children()
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        signal_all(alive(self._seen), signal.SIGKILL)

    def enroll(self, node_id: str) -> str:
        result = subprocess.run([*binary("cortexd"), "enroll", node_id, "--state-dir",
                                 str(self.state_dir)], capture_output=True, timeout=30)
        if result.returncode != 0:
            raise FleetError(f"cortexd enroll {node_id} exited {result.returncode}: "
                             f"{result.stderr.decode(errors='replace').strip()}")
        return result.stdout.decode().strip()


# -- a node ---------------------------------------------------------------------

class LocalNode:
    def __init__(self, hub: LocalHub, node_id: str, *, labels: dict[str, str] | None = None,
                 capacity: int = 4, extra_args: Sequence[str] = ()) -> None:
        self.hub = hub
        self.node_id = node_id
        self.labels = labels or {}
        self.capacity = capacity
        self.extra_args = list(extra_args)
        self.dir = hub.base_dir / "nodes" / node_id
        self.token_file = self.dir / "node.token"
        self.log_path = hub.log_dir / f"nodeagent-{node_id}.log"
        self.marker = uuid.uuid4().hex
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        labels = [arg for k, v in sorted(self.labels.items()) for arg in ("--label", f"{k}={v}")]
        return [*binary("nodeagent"), "--node-port", self.hub.node_address,
                "--node-id", self.node_id, "--node-token-file", str(self.token_file),
                "--hub-key", str(self.hub.hub_key_file),
                "--state-dir", str(self.dir / "state"), "--capacity", str(self.capacity),
                "--control", self.hub.control_address,  # artifacts
                "--insecure-loopback", *labels, *self.extra_args]

    def start(self) -> "LocalNode":
        if not self.token_file.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            token = self.hub.enroll(self.node_id)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
        env = {**os.environ, RUN_MARKER_ENV: self.marker}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout_s)

    def kill(self) -> None:
        """Cleanup after a failure: SIGKILL the agent and anything it started."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        signal_all(processes_with_env(RUN_MARKER_ENV, self.marker), signal.SIGKILL)

    def stray_processes(self) -> list[int]:
        """Processes started by this agent (its tasks) that still run."""
        return [pid for pid in processes_with_env(RUN_MARKER_ENV, self.marker)
                if self.proc is None or pid != self.proc.pid]

    def log_tail(self) -> str:
        return tail(self.log_path)


# -- cortexctl ------------------------------------------------------------------

class Ctl:
    """Runs the real cortexctl against a hub; returns the CompletedProcess."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    def __call__(self, *args: str, timeout_s: float = 60.0,
                 stdin: bytes | None = None) -> "subprocess.CompletedProcess[bytes]":
        command = [*binary("cortexctl"), "--hub", self.hub.control_address,
                   "--token-file", str(self.hub.admin_token_file), "--insecure-loopback", *args]
        return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout_s,
                              stdin=None if stdin is not None else subprocess.DEVNULL)

    def ok(self, *args: str, timeout_s: float = 60.0) -> bytes:
        """Run and require exit 0; return stdout."""
        result = self(*args, timeout_s=timeout_s)
        if result.returncode != 0:
            raise FleetError(f"cortexctl {' '.join(args)} exited {result.returncode}: "
                             f"{result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    def json(self, *args: str) -> list[dict[str, Any]]:
        """Run a command with --json; return its JSON lines as objects."""
        out = self.ok(*args, "--json").decode()
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def submit(self, command: str, *flags: str) -> str:
        """Submit ``command`` (options of submit in ``flags``); return the task id."""
        return self.ok("submit", *flags, "--", command).decode().strip()

    def watch(self, task_id: str, timeout_s: float = 120.0) -> tuple[bytes, int]:
        """The task's whole output and cortexctl's exit status (the task's, see exitcodes)."""
        result = self("watch", task_id, timeout_s=timeout_s)
        return result.stdout, result.returncode

    def task(self, task_id: str) -> dict[str, Any]:
        return self.json("get", task_id)[0]

    def wait_state(self, task_id: str, states: Iterable[str], timeout_s: float = 30.0,
                   ) -> dict[str, Any]:
        wanted = set(states)

        def reached() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task["state"] in wanted else None
        return wait_until(reached, timeout_s, f"task {task_id} to be {'/'.join(sorted(wanted))}",
                          interval_s=0.1)

    def wait_nodes(self, node_ids: Iterable[str], timeout_s: float = 30.0) -> None:
        wanted = set(node_ids)

        def attached() -> bool:
            return wanted <= {n["node_id"] for n in self.json("nodes") if n["attached"]}
        wait_until(attached, timeout_s, f"nodes {', '.join(sorted(wanted))} to attach",
                   interval_s=0.1)

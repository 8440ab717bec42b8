"""What every scenario needs: a hub and its fleet processes, clocks, and the result file.

Processes are started here and ended here by pid (``Popen`` objects we hold, or the hub's
own process tree through :class:`examples.localfleet.LocalHub`); nothing is signalled by
name. Waits poll a file or an API under a deadline; none sleeps blindly.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.fleet import enroll
from bench.machine import describe
from cortex.tokens import bearer, read_token_file
from cortex.v1 import control_pb2, control_pb2_grpc
from examples.localfleet import LocalHub, wait_until
from examples.proctable import descendants

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of ``pids`` (/proc/<pid>/stat), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def save(name: str, result: dict[str, Any], path: Path = RESULTS) -> None:
    """Merge one scenario's figures into the result file (with the machine, load average)."""
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    data["machine"] = describe()
    data[name] = {**result, "loadavg_after": loadavg()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def control_stub(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    return control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]


@dataclass
class Bench:
    """A running cortexd and the fleet processes attached to it."""

    hub: LocalHub
    base: Path
    token: str
    fleets: list["subprocess.Popen[bytes]"] = field(default_factory=list)
    nodes: int = 0
    profile: Any = None  # a bench.profile.HubProfile when the phase was profiled

    def hub_pids(self) -> list[int]:
        """The supervisor and every process under it (control, shards, store helpers)."""
        proc = self.hub.proc
        return [proc.pid, *descendants(proc.pid)] if proc is not None else []

    def start_fleets(self, nodes: int, fleets: int, bound_s: float, *, enrolled: bool = False,
                     extra: list[str] | None = None, hubs: str | None = None) -> None:
        """Start ``fleets`` fleet processes with ``nodes`` simulated nodes in all
        (``hubs``: the fleet's --hub list, default this hub's node address)."""
        per = nodes // fleets
        self.nodes = per * fleets
        for f in range(fleets):
            tokens = self.base / f"fleet{f}.tokens"
            if not enrolled:
                enroll(self.hub.state_dir / "tokens", [f"sim-{f}-{i}" for i in range(per)],
                       tokens)
            for stale in (self.status_file(f), self.report_file(f)):
                stale.unlink(missing_ok=True)
            self.fleets.append(subprocess.Popen(
                [sys.executable, "-m", "bench.fleet", "--hub", hubs or self.hub.node_address,
                 "--hub-key", str(self.hub.hub_key_file), "--tokens", str(tokens),
                 "--report", str(self.report_file(f)), "--status", str(self.status_file(f)),
                 "--status-every-s", "0.05", "--seconds", str(bound_s), *(extra or [])],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.base / f"fleet{f}.log", "ab")))

    def status_file(self, f: int) -> Path:
        return self.base / f"fleet{f}.status.json"

    def report_file(self, f: int) -> Path:
        return self.base / f"fleet{f}.json"

    def statuses(self) -> list[dict[str, Any]]:
        out = []
        for f, proc in enumerate(self.fleets):
            if proc.poll() is not None:
                raise RuntimeError(f"fleet {f} (pid {proc.pid}) exited with {proc.returncode}; "
                                   f"see {self.base / f'fleet{f}.log'}")
            try:
                out.append(json.loads(self.status_file(f).read_text()))
            except (OSError, ValueError):
                out.append({})
        return out

    def wait_attached(self, timeout_s: float) -> float:
        """Seconds until every fleet reports all its nodes attached."""
        t0 = time.monotonic()
        wait_until(lambda: all(s.get("all_attached") for s in self.statuses()), timeout_s,
                   "the fleet to attach", interval_s=0.1)
        return time.monotonic() - t0

    def done(self) -> int:
        return sum(int(s.get("done", 0)) for s in self.statuses())

    def heartbeats(self) -> int:
        """Heartbeat frames the fleet has sent (as of its last status, <= 50 ms old)."""
        return sum(int(s.get("heartbeats", 0)) for s in self.statuses())

    def wait_done(self, count: int, timeout_s: float) -> None:
        wait_until(lambda: self.done() >= count, timeout_s, f"{count} FinishedAcks",
                   interval_s=0.05)

    def stop_fleets(self, kill: bool = False) -> list[dict[str, Any]]:
        """End the fleet processes (by pid); return their reports (none when killed)."""
        for proc in self.fleets:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        for proc in self.fleets:
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reports = [] if kill else [json.loads(self.report_file(f).read_text())
                                   for f in range(len(self.fleets))]
        self.fleets = []
        return reports

    def attached_at_hub(self) -> int:
        with grpc.insecure_channel(self.hub.control_address) as channel:
            resp = control_stub(channel).ListNodes(control_pb2.ListNodesRequest(),
                                                   metadata=bearer(self.token), timeout=60)
            return sum(1 for n in resp.nodes if n.attached)

    def shard_nodes(self) -> list[int]:
        with grpc.insecure_channel(self.hub.control_address) as channel:
            resp = control_stub(channel).ListShards(control_pb2.ListShardsRequest(),
                                                    metadata=bearer(self.token), timeout=30)
            return [s.nodes for s in sorted(resp.shards, key=lambda s: s.shard)]


@contextmanager
def running_hub(shards: int = 2, extra_args: list[str] | None = None) -> Iterator[Bench]:
    base = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    hub = LocalHub(base, shards=shards, extra_args=["--log-level", "warning",
                                                     *(extra_args or [])])
    hub.start()
    bench = Bench(hub, base, read_token_file(hub.admin_token_file))
    try:
        yield bench
    finally:
        for proc in bench.fleets:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        try:
            hub.stop()
        except Exception:
            hub.kill()

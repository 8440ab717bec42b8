"""systemd for real: the notify protocol against a socket the test holds, the watchdog
under a hung control process, SIGHUP reloads, and every unit checked by
``systemd-analyze verify``.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from examples.localfleet import Ctl, log_events, wait_until

pytestmark = pytest.mark.system

UNITS = sorted((Path(__file__).resolve().parents[2] / "systemd").glob("*.service"))


class NotifySocket:
    """The test's end of NOTIFY_SOCKET, read by a thread at once (as systemd would: an
    unread socket would fill and drop the supervisor's messages)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.cursor = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(4096).decode()
            except (TimeoutError, OSError):
                continue
            self.messages.append((time.monotonic(), msg))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def expect(self, wanted: str, timeout_s: float) -> list[str]:
        """Wait for a message (after the last one expected) with the line ``wanted``;
        return the messages up to it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i in range(self.cursor, len(self.messages)):
                if wanted in self.messages[i][1].splitlines():
                    seen = [m for _, m in self.messages[self.cursor:i + 1]]
                    self.cursor = i + 1
                    return seen
            time.sleep(0.05)
        raise AssertionError(f"no {wanted!r} within {timeout_s} s; got "
                             f"{[m for _, m in self.messages[self.cursor:]]}")

    def quiet_for(self, line: str, seconds: float) -> None:
        """Fails if ``line`` arrives within ``seconds`` from now."""
        since = time.monotonic()
        time.sleep(seconds)
        late = [m for t, m in self.messages if t >= since and line in m.splitlines()]
        assert not late, late


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


@pytest.mark.timeout(150)
def test_notify_protocol_watchdog_and_reload(fleet, tmp_path, monkeypatch, notify):
    config = tmp_path / "cortexd.toml"
    config.write_text('log_level = "info"\n')
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    monkeypatch.setenv("CORTEX_CHILD_TIMEOUT_S", "2")
    hub = fleet.hub(shards=2, extra_args=["--config", str(config)])
    notify.expect("READY=1", 30)
    notify.expect("WATCHDOG=1", 5)
    notify.expect("WATCHDOG=1", 5)
    ctl = Ctl(hub)
    node = fleet.node(hub, "node-1")
    ctl.wait_nodes(["node-1"])

    # SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1; what changed is applied or
    # named as needing a restart; the node's stream stays.
    config.write_text('log_level = "debug"\nmax_queued_tasks = 7\nsigner = "pool"\n')
    os.kill(hub.proc.pid, signal.SIGHUP)
    seen = notify.expect("READY=1", 20)
    reloading = [m for m in seen if "RELOADING=1" in m.splitlines()]
    assert reloading and "MONOTONIC_USEC=" in reloading[0], seen
    reloaded = wait_until(lambda: log_events(hub.log_path, "reloaded"), 20, "reloaded line")
    assert reloaded[-1]["applied"] == ["log_level", "max_queued_tasks"]
    assert reloaded[-1]["needs_restart"] == ["signer"]
    wait_until(lambda: log_events(hub.log_path, "control_reloaded"), 20, "control reloaded")
    assert len(wait_until(lambda: len(log_events(hub.log_path, "shard_reloaded")) == 2 and
                          log_events(hub.log_path, "shard_reloaded"), 20, "shards reloaded")) == 2
    for _ in range(7):  # the new queue limit is in force at once
        ctl.submit("true", "--selector", "never=matches")
    refused = ctl("submit", "--selector", "never=matches", "--", "true")
    assert refused.returncode != 0 and b"queue" in refused.stderr.lower(), refused.stderr
    assert not log_events(node.log_path, "reconnect"), "a reload must not drop a node stream"

    # A hung control process (SIGSTOP): the pings stop; SIGCONT: they resume.
    control_pid = hub.read_info()["control_pid"]
    os.kill(control_pid, signal.SIGSTOP)
    try:
        # Pings may go on until the 2 s child timeout has passed; then none for 3 s.
        wait_until(lambda: log_events(hub.log_path, "watchdog_withheld"), 15,
                   "the supervisor to withhold the watchdog ping")
        notify.quiet_for("WATCHDOG=1", 3.0)
        assert log_events(hub.log_path, "watchdog_withheld")
    finally:
        os.kill(control_pid, signal.SIGCONT)
    notify.expect("WATCHDOG=1", 10)

    hub.proc.send_signal(signal.SIGTERM)
    notify.expect("STOPPING=1", 20)
    assert hub.proc.wait(30) == 0


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required in CI (make test installs systemd)")
        pytest.skip("systemd-analyze is not installed")
    # The units name /usr/local/bin/<program>: verify checks that ExecStart= exists, so
    # point it at a tree where it does (a copy of the unit with the path rewritten).
    text = unit.read_text()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for program in ("cortexd", "nodeagent", "browserd"):
        (bindir / program).write_text("#!/bin/sh\n")
        (bindir / program).chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(text.replace("/usr/local/bin/", f"{bindir}/"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if unit.name in line or copy.name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def _fds_and_threads(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.timeout(240)
def test_twenty_reloads_under_100_nodes_drop_no_stream_and_leak_nothing(fleet, tmp_path):
    from examples.cluster import SimFleet

    config = tmp_path / "cortexd.toml"
    config.write_text('log_level = "info"\n')
    hub = fleet.hub(shards=2, extra_args=["--config", str(config)])
    sims = SimFleet(fleet.base, "sim", [hub], 100, bound_s=200)
    sims.enroll(hub.state_dir / "tokens")
    sims.start()
    try:
        wait_until(lambda: sims.attached() == 100, 90, "100 simulated nodes attached")
        info = hub.read_info()
        pids = [hub.proc.pid, info["control_pid"], *(s["pid"] for s in info["shards"])]
        for i in range(1, 21):
            # Alternate a reloadable change, so each reload applies something.
            config.write_text(f'log_level = "info"\nmax_watchers = {1000 + i}\n')
            if i == 1:
                before = {pid: _fds_and_threads(pid) for pid in pids}
            os.kill(hub.proc.pid, signal.SIGHUP)
            wait_until(lambda n=i: len(log_events(hub.log_path, "shard_reloaded")) == 2 * n
                       and len(log_events(hub.log_path, "control_reloaded")) == n, 30,
                       f"reload {i} applied by every child")
        after = {pid: _fds_and_threads(pid) for pid in pids}
        status = sims.status()
        assert status["dropped"] == 0, status
        assert status["attached"] == 100 and status["ever_attached"] == 100, status
        assert after == before, f"fd and thread counts moved: {before} -> {after}"
        assert hub.read_info()["control_pid"] == info["control_pid"]
        assert [e["applied"] for e in log_events(hub.log_path, "reloaded")][-1] == \
            ["max_watchers"]
    finally:
        sims.kill()


def _unit_settings(unit: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def test_the_unit_has_systemd_restart_a_hub_whose_pings_stop():
    """What systemd does when the pings stop (there is no systemd to run here): with
    WatchdogSec= it kills the unit with SIGABRT once a ping is WatchdogSec late, and
    Restart=on-failure covers a watchdog timeout, so the hub is started again. The
    supervisor pings at half WatchdogSec (cortexd/watchdog.py)."""
    from cortexd.watchdog import interval_s

    unit = _unit_settings(next(u for u in UNITS if u.name == "cortexd.service"))
    assert unit["Type"] == "notify" and unit["NotifyAccess"] in ("main", "all")
    watchdog_s = float(unit["WatchdogSec"])
    assert watchdog_s > 0
    assert unit["Restart"] in ("on-failure", "on-abnormal", "on-watchdog", "always")
    assert unit["ExecReload"].endswith("kill -HUP $MAINPID")
    ping = interval_s({"WATCHDOG_USEC": str(int(watchdog_s * 1e6))}, pid=1)
    assert ping == watchdog_s / 2


@pytest.mark.timeout(150)
def test_watchdog_pings_go_on_while_a_shard_drains(fleet, tmp_path, monkeypatch, notify):
    """A shard operation runs in the supervisor's loop: it must keep pinging meanwhile
    (a drain may take many seconds; WatchdogSec=30 would kill the hub in the middle)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    hub = fleet.hub(shards=2)
    notify.expect("READY=1", 30)
    ctl = Ctl(hub)
    nodes = [fleet.node(hub, f"node-{i}") for i in range(1, 5)]
    ctl.wait_nodes(n.node_id for n in nodes)
    start = time.monotonic()
    result = ctl("shards", "drain", "0", timeout_s=120)
    end = time.monotonic()
    assert result.returncode == 0, result.stderr
    pings = [t for t, m in notify.messages if start <= t <= end and "WATCHDOG=1" in m]
    gaps = [b - a for a, b in zip([start, *pings], [*pings, end], strict=True)]
    assert max(gaps) < 2.5, gaps

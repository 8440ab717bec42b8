"""The cortexd supervisor (the gunicorn "arbiter" shape).

It reads the settings, takes the single-instance locks, creates the rings,
spawns the control process and the shards (``spawn`` start method), keeps them
alive, and runs the stop ladder. It never touches task data.

- Boot: a child that fails before it reports ``ready`` halts the hub with that
  child's exit code (BOOT_ERROR, PORT_IN_USE, CONFIG_ERROR) instead of looping.
- Liveness: a shard proves it lives by advancing the producer heartbeat of its
  ring; one that stops (SIGSTOP, a hang) for ``child_timeout_s`` is killed.
- A crashed shard is respawned with exponential backoff on the same rings; its
  nodes reconnect. More than ``max_restarts_per_minute`` crashes halt the hub
  (CRASH_LOOP). A crashed control process takes the shards down with it and all
  children are started again (nodes reconnect and reconcile).
- systemd: READY=1 once every child is ready, WATCHDOG=1 at half WatchdogSec= only
  while every child beats (cortexd/watchdog.py), RELOADING=1 … READY=1 around a
  SIGHUP reload (cortexd/reload.py), STOPPING=1 when the ladder starts.
- Signals only enqueue; the loop decides. SIGTERM/SIGINT: graceful stop; a
  second one skips to the forced step. The ladder: shards stop accepting and end
  their streams → control flushes the store → SIGKILL whatever is left after
  ``shutdown_grace_s`` → unlink rings, remove the ready file, release the locks.
"""

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from types import ModuleType
from typing import Any

from cortex import logs
from cortex.errors import ConfigError
from cortexd import exitcodes, stopping, systemd
from cortexd.childproc import RingPaths, report
from cortexd.children import (
    Child,
    await_ready,
    backoff,
    read_pending,
    terminate,
)
from cortexd.config import Settings
from cortexd.entry import control_main, monitor_main, shard_main
from cortexd.ipc.link import make_fifo
from cortexd.ipc.ring import Ring
from cortexd.metrics import procdir
from cortexd.monitors.credentials import ensure_monitor_token
from cortexd.monitors.heartbeat import Heartbeat, beat_path
from cortexd.runtime import (
    BootError,
    port_lock_path,
    prepare_keys,
    probe_port,
    remove_stale_segments,
    ring_prefix,
    sd_notify,
    take_lock,
    write_ready_file,
)
from cortexd.shardset import ShardSet
from cortexd.watchdog import Watchdog
from cortexd.watchdog import interval_s as watchdog_interval_s


def metrics() -> ModuleType:
    """The metric definitions, imported after procdir.prepare (prometheus_client picks
    its multiprocess value store when first imported)."""
    from cortexd.metrics import hub

    return hub
TICK_S = 0.5



class Supervisor:
    def __init__(self, settings: Settings,
                 reread: Callable[[], Settings] | None = None) -> None:
        self.s = settings
        self.loaded = settings  # as configured (before ports were made concrete)
        self.reread = reread  # SIGHUP: the same sources read again
        period = watchdog_interval_s()
        self.watchdog = Watchdog(period) if period else None
        self.ctx = multiprocessing.get_context("spawn")
        self.log = logs.get()
        self.signals: deque[int] = deque()
        self.rings: list[RingPaths] = []
        self.ring_objs: list[Ring] = []
        self.control = Child("control", None)
        self.shards: list[Child] = []
        self.monitors: list[Child] = []  # monitor processes (cortexd/monitors/process.py)
        self.monitor_beats: list[Heartbeat] = []
        self.locks: list[int] = []
        self.node_address = settings.node_listen
        self.control_address = settings.control_listen
        self.stopping = False
        self.ready_file_written = False
        self.metrics_dir: Path | None = None
        self.shardset = ShardSet(self)  # drain, restart, scale (asked by control)

    # -- boot -------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._boot()
        except BootError as e:
            self.log.error("boot_failed", message=str(e), exit_code=e.exit_code)
            print(f"cortexd: {e}", flush=True, file=sys.stderr)
            stopping.halt(self)
            return e.exit_code
        code = self._loop()
        stopping.halt(self)
        return code

    def _boot(self) -> None:
        s = self.s
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.locks.append(take_lock(s.state_dir / "cortexd.lock", f"state directory {s.state_dir}"))
        host, port = s.node_listen.rsplit(":", 1)
        if port != "0":
            self.locks.append(take_lock(port_lock_path(int(port)), f"node port {port}"))
        node_port = probe_port(s.node_listen, "node port")
        if port == "0":
            self.locks.append(take_lock(port_lock_path(node_port), f"node port {node_port}"))
        self.node_address = f"{host}:{node_port}"
        chost, cport = s.control_listen.rsplit(":", 1)
        # Shared by the shards with shard_intake (SO_REUSEPORT): the lock keeps it ours.
        if s.shard_intake and cport != "0":
            self.locks.append(take_lock(port_lock_path(int(cport)), f"control port {cport}"))
        control_port = probe_port(s.control_listen, "control port")
        if s.shard_intake and cport == "0":
            self.locks.append(take_lock(port_lock_path(control_port),
                                        f"control port {control_port}"))
        self.control_address = f"{chost}:{control_port}"
        concrete = {"node_listen": self.node_address, "control_listen": self.control_address}
        if s.metrics_address:
            mhost = s.metrics_address.rsplit(":", 1)[0]
            concrete["metrics_listen"] = f"{mhost}:{probe_port(s.metrics_address, 'metrics port')}"
            self.metrics_dir = procdir.prepare()
        self.s = s = type(s).from_dict({**s.to_dict(), **concrete})
        try:
            prepare_keys(s.state_dir, s.key_file, s.tokens_file)
        except ConfigError as e:
            raise BootError(str(e), exitcodes.CONFIG_ERROR) from e
        if removed := remove_stale_segments() + procdir.remove_stale():
            self.log.info("stale_segments_removed", segments=removed)
        prefix = ring_prefix()
        for index in range(s.shards):
            paths = RingPaths.for_shard(prefix, index)
            self.ring_objs.append(Ring(paths.up, create=True, capacity=s.ring_capacity_bytes))
            self.ring_objs.append(Ring(paths.down, create=True, capacity=s.ring_capacity_bytes))
            make_fifo(paths.up_wake)
            make_fifo(paths.down_wake)
            self.rings.append(paths)
        self.shards = [Child(f"shard-{i}", i) for i in range(s.shards)]
        if s.monitor_processes:
            ensure_monitor_token(s.state_dir, s.tokens_file)
        for i in range(s.monitor_processes):
            self.monitor_beats.append(Heartbeat(beat_path(prefix, i), create=True))
            self.monitors.append(Child(f"monitor-{i}", None, monitor=i))
        for child in (self.control, *self.shards, *self.monitors):  # exported at 0 at first
            metrics().CHILD_RESTARTS.labels(s.host_id, child.name)
        self._start_all()
        self.log.info("cortexd_ready", **self._write_ready())
        sd_notify("READY=1")

    def _write_ready(self) -> dict[str, Any]:
        """(Re)write cortexd.json: addresses and the pids of the current children."""
        info = {"pid": os.getpid(), "node_address": self.node_address,
                "control_address": self.control_address, "control_pid": self.control.pid,
                "shards": [{"shard": c.shard, "pid": c.pid} for c in self.shards],
                "monitors": [{"monitor": c.monitor, "pid": c.pid} for c in self.monitors],
                "state_dir": str(self.s.state_dir), "metrics_address": self.s.metrics_address}
        write_ready_file(self.s.state_dir / "cortexd.json", info)
        self.ready_file_written = True
        return info

    def _start_all(self) -> None:
        self._spawn(self.control)
        self._await_ready(self.control)
        for child in self.shards:
            self._spawn(child)
        for child in self.shards:
            self._await_ready(child)
        # Monitors outlive a control restart (they reconnect to its feed).
        for child in self.monitors:
            if child.proc is None or not child.proc.is_alive():
                self._spawn(child)
                self._await_ready(child)

    def _spawn(self, child: Child) -> None:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        settings = self.s.to_dict()
        args: tuple[Any, ...]
        if child.monitor is not None:
            target: Any = monitor_main
            args = (settings, child.monitor, len(self.monitors),
                    str(self.monitor_beats[child.monitor].path), child_conn, os.getpid())
        elif child.shard is None:
            target = control_main
            args = (settings, self.rings, child_conn, os.getpid())
        else:
            target = shard_main
            args = (child.shard, settings, self.rings[child.shard], child_conn, os.getpid())
        proc = self.ctx.Process(target=target, args=args, name=f"cortexd-{child.name}")
        proc.start()
        child_conn.close()
        child.proc, child.conn = proc, parent_conn
        child.respawn_at = None
        child.last_beat, child.last_beat_change = -1, time.monotonic()

    def _await_ready(self, child: Child) -> None:
        await_ready(child)
        self.log.info("child_ready", child=child.name, pid=child.pid)
        self._tell_control_up(child)

    def spawn_ready(self, child: Child) -> None:
        """Spawn into ``child``'s slot, wait for its ready, rewrite cortexd.json."""
        self._spawn(child)
        self._await_ready(child)
        self._write_ready()

    def set_shard_count(self, count: int) -> None:
        """After a scale: the children spawned from now on are told the new count."""
        self.s = type(self.s).from_dict({**self.s.to_dict(), "shards": count})
        self._write_ready()

    def _tell_control_up(self, child: Child) -> None:
        if child.shard is not None and self.control.conn is not None:
            with contextlib.suppress(OSError):
                report(self.control.conn, "shard_up", shard=child.shard, pid=child.pid,
                       restarts=child.restarts)

    # -- the loop ---------------------------------------------------------------

    def _signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)

    def _loop(self) -> int:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wfd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            signal.signal(signum, self._signal)
        try:
            while True:
                sentinels: list[Any] = [rfd]
                for child in (self.control, *self.shards, *self.monitors):
                    if child.proc is not None and child.respawn_at is None:
                        sentinels.append(child.proc.sentinel)
                if self.control.conn is not None and self.control.alive():
                    sentinels.append(self.control.conn)  # shard operations it asks for
                wait(sentinels, timeout=TICK_S)
                with contextlib.suppress(BlockingIOError):
                    os.read(rfd, 4096)
                while self.signals:
                    sig = self.signals.popleft()
                    if sig == signal.SIGHUP:
                        systemd.reload(self)
                        continue
                    self.log.info("stop_signal", signal=signal.Signals(sig).name)
                    return stopping.stop_ladder(self, force=sig == signal.SIGQUIT)
                if (code := self._check_children()) is not None:
                    return code
                if self.control.alive():
                    for msg in read_pending(self.control):
                        if msg.get("event") == "shard_op":
                            self.shardset.handle(msg)
                systemd.watchdog_tick(self)
        finally:
            signal.set_wakeup_fd(-1)
            os.close(rfd)
            os.close(wfd)

    def _check_children(self) -> int | None:
        now = time.monotonic()
        if self.control.proc is not None and not self.control.proc.is_alive():
            self.log.error("control_died", exitcode=self.control.proc.exitcode)
            if self._crashing(self.control, now):
                return exitcodes.CRASH_LOOP
            # The shards' sessions lived in the dead control's memory: restart all.
            for child in self.shards:
                terminate(child, 5.0)
            for child in (self.control, *self.shards):
                self.count_restart(child)
            try:
                self._start_all()
                self._write_ready()
            except BootError as e:
                self.log.error("restart_failed", message=str(e))
                return e.exit_code
            return None
        for child in self.shards:
            assert child.shard is not None
            if child.respawn_at is not None:
                self._respawn_if_due(child, now)
                continue
            assert child.proc is not None
            if not child.proc.is_alive():
                self.log.warning("shard_died", shard=child.shard, exitcode=child.proc.exitcode)
                if self._crashing(child, now):
                    return exitcodes.CRASH_LOOP
                self._shard_down(child, now)
                continue
            beat = self.ring_objs[2 * child.shard].producer_heartbeat
            if beat != child.last_beat:
                child.last_beat, child.last_beat_change = beat, now
            elif now - child.last_beat_change > self.s.child_timeout_s:
                self.log.error("shard_unresponsive", shard=child.shard, pid=child.proc.pid,
                               silent_s=round(now - child.last_beat_change, 1))
                child.proc.kill()
                child.proc.join(5)
                self._shard_down(child, now)
        return self._check_monitors(now)

    def _respawn_if_due(self, child: Child, now: float) -> None:
        """A dead shard or monitor whose backoff has passed: spawn it again; a failed boot
        backs off once more."""
        assert child.respawn_at is not None
        if now < child.respawn_at:
            return
        self._spawn(child)
        try:
            self._await_ready(child)
            self._write_ready()
        except BootError as e:
            self.log.error("respawn_failed", child=child.name, message=str(e))
            child.respawn_at = now + backoff(child)

    def _check_monitors(self, now: float) -> int | None:
        """Monitor processes: respawned with backoff when they die or stop beating."""
        for child in self.monitors:
            assert child.monitor is not None
            if child.respawn_at is not None:
                self._respawn_if_due(child, now)
                continue
            assert child.proc is not None
            beat = self.monitor_beats[child.monitor].value
            if beat != child.last_beat:
                child.last_beat, child.last_beat_change = beat, now
            elif child.proc.is_alive() and now - child.last_beat_change > self.s.child_timeout_s:
                self.log.error("monitor_unresponsive", child=child.name, pid=child.proc.pid)
                child.proc.kill()
                child.proc.join(5)
            if not child.proc.is_alive():
                self.log.warning("monitor_died", child=child.name, exitcode=child.proc.exitcode)
                if self._crashing(child, now):
                    return exitcodes.CRASH_LOOP
                self.count_restart(child)
                if child.conn is not None:
                    child.conn.close()
                    child.conn = None
                child.restarts += 1
                child.respawn_at = now + backoff(child)
        return None

    def count_restart(self, child: Child) -> None:
        procdir.mark_dead(child.pid)
        metrics().CHILD_RESTARTS.labels(self.s.host_id, child.name).inc()

    def _shard_down(self, child: Child, now: float) -> None:
        self.count_restart(child)
        if child.conn is not None:
            child.conn.close()
            child.conn = None
        if self.control.conn is not None:
            with contextlib.suppress(OSError):
                report(self.control.conn, "shard_down", shard=child.shard)
        child.restarts += 1
        child.respawn_at = now + backoff(child)

    def _crashing(self, child: Child, now: float) -> bool:
        child.crash_times.append(now)
        recent = sum(1 for t in child.crash_times if now - t < 60)
        if recent > self.s.max_restarts_per_minute:
            self.log.error("crash_loop", child=child.name, crashes_last_minute=recent)
            return True
        return False

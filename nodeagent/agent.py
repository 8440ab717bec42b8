"""The node agent's lifecycle: start-up, the connect loop, signals and the shutdown ladder.

One loop decides (STYLE.md): signal handlers only put the signal on a queue. The first
SIGTERM/SIGINT starts the graceful ladder: tell the hub ``Draining`` and refuse new
tasks, let running tasks finish within ``shutdown_grace_s`` while their output still
streams, then SIGINT → SIGTERM → SIGKILL each task's group, then wait briefly for the
hub's ``FinishedAck``s. A second signal skips to SIGKILL of every task group at once.
Either way the exit code is 0 and no task process is left. What the hub has not
acknowledged stays in the spools and is reported by the next agent start.

The connect loop runs sessions (:mod:`nodeagent.link`) back to back; which hub address
each dials and after what jittered delay is :mod:`nodeagent.hubs`' decision (failover
between the hubs of a cluster, backoff per full rotation, a hub's ``RetryLater``
honoured). Tasks keep running and spooling while it is disconnected. Bad credentials
are retried at the backoff cap, loudly: an operator may fix the token. An address that
is no node port (the Control port answers Attach UNIMPLEMENTED) is no outage to wait
out: the agent says so and stops (``fatal``, exit code ``WRONG_HUB``; issue 13).
"""

import asyncio
import contextlib
import fcntl
import os
import secrets
import signal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cortex.envelope import EnvelopeVerifier
from cortex.tlsdiag import Probe, explain
from cortex.v1 import node_pb2
from nodeagent import exitcodes
from nodeagent.artifacts import ArtifactLink
from nodeagent.backoff import Backoff
from nodeagent.browsertool import BrowserTool
from nodeagent.cgroup import PROCESS_GROUP, open_isolation
from nodeagent.config import AgentConfig
from nodeagent.errors import NodeAgentError
from nodeagent.host import TaskHost
from nodeagent.hubs import HubRotation, Outcome
from nodeagent.link import LinkSession, SessionEnd
from nodeagent.ranlog import RanLog
from nodeagent.reaper import OrphanReaper, become_subreaper
from nodeagent.recovery import recover
from nodeagent.workspace.mirror import WorkspaceMirror

LOCK_FILE = "agent.lock"
FORCED_KILL_WAIT_S = 5.0



def all_finished(host: TaskHost) -> bool:
    return not host.processes


def all_forgotten(host: TaskHost) -> bool:
    return len(host.table) == 0

class StateLocked(NodeAgentError):
    """Another agent process holds the state directory."""


class NodeAgent:
    def __init__(self, config: AgentConfig, token: str, hub_key: Ed25519PublicKey, log: Any,
                 *, manage_process: bool = True) -> None:
        """``manage_process``: install signal handlers and act as child subreaper (the
        real agent); tests running an agent in-process pass False and call stop()."""
        self.config = config
        self._token = token
        self._log = log
        self._manage_process = manage_process
        self.ranlog = RanLog(config.state_dir)
        self.host = TaskHost(config, EnvelopeVerifier(hub_key, config.node_id), self.ranlog,
                             log)
        self.boot_id = secrets.randbits(64)
        self._signals: asyncio.Queue[int] = asyncio.Queue()
        self._stop_link = asyncio.Event()
        self.sessions = 0
        self.retry_laters = 0
        self.last_end: SessionEnd | None = None
        self.fatal = ""  # why the agent stopped itself; "" = it was asked to
        self._explained: dict[str, str] = {}  # address -> the TLS problem last logged
        self._lock_fd = -1
        self.workspaces: WorkspaceMirror | None = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask for shutdown as a signal would (a second call forces it)."""
        self._signals.put_nowait(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._lock_state_dir()
        self.ranlog.load()
        self.host.adopt(recover(self.host.tasks_dir, self._log))
        self.host.cgroups = open_isolation(self.config.isolation, self._log)
        if self.config.control_address:  # tasks' artifacts (nodeagent/taskfiles.py)
            self.host.files.link = ArtifactLink(self.config, self._token, self._log)
            self.workspaces = WorkspaceMirror(self.config, self._token, self._log)
            self.workspaces.start()  # workspace copies (nodeagent/workspace/)
            self.host.files.workspaces = self.workspaces  # tasks in a workspace wait for it
            self.host.files.workspace_wait_s = self.config.workspace_wait_s
        reaper_task = None
        if self._manage_process:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signals.put_nowait, sig)
            if become_subreaper():
                reaper_task = loop.create_task(
                    OrphanReaper(self.host.protected_pids, self._log).run())
            else:
                self._log.warning("subreaper_unavailable")
        self._log.info("agent_start", hubs=list(self.config.hub_addresses),
                       boot_id=self.boot_id,
                       capacity=self.config.capacity, held=len(self.host.table),
                       isolation=self.host.cgroups.mode if self.host.cgroups else PROCESS_GROUP)
        cfg = self.config
        if cfg.browserd_socket is not None:
            self.host.browser = BrowserTool(cfg.browserd_socket, cfg.state_dir / "browserd",
                                            cfg.browserd_start, self.host.queue, self._log,
                                            cfg.browserd_args)
            self.host.browser.uploader = self.host.files.link  # recordings (artifacts)
            self.host.browser.start()
        connector = loop.create_task(self._connect_loop())
        try:
            await self._shutdown(await self._signals.get())
        finally:
            self._stop_link.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(connector, 5.0)
            if reaper_task is not None:
                reaper_task.cancel()
                await asyncio.gather(reaper_task, return_exceptions=True)
            if self._manage_process:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self.host.files.close()
            if self.workspaces is not None:
                await self.workspaces.close()
            if self.host.browser is not None:
                await self.host.browser.stop()
            self.host.close()
            self.ranlog.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
        c = self.host.counts
        self._log.info("agent_stop", started=c["started"], finished=c["finished"],
                       rejected=c["rejected"], sessions=self.sessions,
                       retry_laters=self.retry_laters,
                       held=len(self.host.table), fatal=self.fatal or None)
        return exitcodes.WRONG_HUB if self.fatal else exitcodes.OK

    def _lock_state_dir(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.config.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(f"state directory {self.config.state_dir} is in use by another "
                              "nodeagent") from None
        self._lock_fd = fd

    # ---- connecting -------------------------------------------------------

    async def _connect_loop(self) -> None:
        c = self.config
        hubs = HubRotation(c.hub_addresses,
                           Backoff(c.backoff_base_s, c.backoff_cap_s, c.backoff_reset_after_s))
        while not self._stop_link.is_set():
            self.sessions += 1
            address = hubs.current
            session = LinkSession(c, self.host, self._token, self.boot_id, self._log,
                                  self._stop_link, address=address)
            end = self.last_end = await session.run()
            if self._stop_link.is_set():
                return
            if end.fatal:
                self.fatal = end.fatal
                self._signals.put_nowait(signal.SIGTERM)  # the one loop decides: stop
                return
            if end.code == "UNAVAILABLE" and end.welcomed_for_s is None:
                await self._explain_unreachable(address)
            if end.retry_after_s is not None:
                self.retry_laters += 1
            if end.auth_failed:
                self._log.error("auth_failed", address=address, code=end.code,
                                reason=end.reason,
                                hint="check --node-token-file and the hub's token table")
            delay = hubs.next_delay(Outcome(end.welcomed_for_s, end.retry_after_s,
                                            end.auth_failed))
            self._log.warning("reconnect", address=address, next_address=hubs.current,
                              delay_s=round(delay, 3), reason=end.reason,
                              lasted_s=None if end.welcomed_for_s is None
                              else round(end.welcomed_for_s, 3))
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_link.wait(), delay)

    async def _explain_unreachable(self, address: str) -> None:
        """Log which TLS mistake, if one, kept the hub unreachable; once per address and
        diagnosis (the agent keeps dialling: someone may fix the hub's certificate)."""
        probe = Probe(address, self.config.tls, not self.config.tls.enabled)
        why = await asyncio.to_thread(explain, probe)
        if why is not None and self._explained.get(address) != why:
            self._explained[address] = why
            self._log.error("hub_tls_problem", address=address, problem=why)

    # ---- shutting down ----------------------------------------------------

    async def _shutdown(self, sig: int) -> None:
        host = self.host
        self._log.info("shutdown", signal=signal.Signals(sig).name, running=host.table.running,
                       grace_s=self.config.shutdown_grace_s)
        host.draining = True
        host.queue(node_pb2.NodeFrame(draining=node_pb2.Draining(reason="shutting down")))
        graceful = asyncio.create_task(self._graceful())
        forced = asyncio.create_task(self._signals.get())
        done, _ = await asyncio.wait({graceful, forced}, return_when=asyncio.FIRST_COMPLETED)
        if forced in done:
            graceful.cancel()
            await asyncio.gather(graceful, return_exceptions=True)
            self._log.warning("shutdown_forced", running=len(host.processes))
            host.kill_all("node agent forced shutdown")
            await host.wait_until(all_finished, FORCED_KILL_WAIT_S)
        else:
            forced.cancel()
            graceful.result()

    async def _graceful(self) -> None:
        host, c = self.host, self.config
        if not await host.wait_until(all_finished, c.shutdown_grace_s):
            self._log.warning("shutdown_grace_expired", running=len(host.processes))
            host.cancel_all("node shutting down")
            await host.wait_until(all_finished, 2 * c.cancel_grace_s + FORCED_KILL_WAIT_S)
        # Give the hub a moment to take the last output and acknowledge the results;
        # whatever it does not acknowledge stays spooled for the next start.
        await host.wait_until(all_forgotten, c.finish_ack_wait_s)

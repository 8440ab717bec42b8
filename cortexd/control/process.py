"""The control process: opens the store, serves the Control API, drives the Hub.

Spawned by the supervisor. It attaches to every shard's ring pair, listens to
the supervisor's pipe for shard exits and restarts (``shard_up``/``shard_down``
maps), and on SIGTERM runs its part of the stop ladder: stop accepting client
calls, let streams finish, close the store (flushing it).
"""

import asyncio
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import uvloop

from cortex import logs
from cortex.envelope import load_or_create_private_key
from cortex.errors import ConfigError
from cortex.tls import ServerTLS
from cortex.tokens import TokenTable
from cortex.v1 import (
    artifacts_pb2_grpc,
    browse_pb2_grpc,
    control_pb2_grpc,
    credentials_pb2_grpc,
    monitor_pb2_grpc,
    operate_pb2_grpc,
    shell_pb2_grpc,
    workspace_pb2_grpc,
)
from cortexd import exitcodes
from cortexd.artifacts import open_artifacts
from cortexd.childproc import RingPaths, install_stop_signals, read_report, report, watch_parent
from cortexd.config import Settings
from cortexd.control.agents import start_agents
from cortexd.control.browse import BrowseService
from cortexd.control.credentials import CredentialsService
from cortexd.control.figures import ControlFigures
from cortexd.control.hub import Hub
from cortexd.control.localport import control_frame_bytes, prepare_local_socket
from cortexd.control.monitorapi import MonitorsService
from cortexd.control.operate import Operations, SupervisorLink
from cortexd.control.operateapi import OPERATE_SERVICE, OperateService
from cortexd.control.pagereads import PageReads
from cortexd.control.policyfiles import sync_policies
from cortexd.control.queuewaits import run_queue_timeouts
from cortexd.control.service import ControlService
from cortexd.control.shells import ShellService
from cortexd.control.state import HubState, ShardInfo
from cortexd.coord import make_coordinator
from cortexd.ingress.auth import CONTROL_METHODS, Authenticator, AuthInterceptor
from cortexd.ingress.edge import EdgeGuard
from cortexd.ingress.grpchealth import SERVING, PortHealth
from cortexd.ingress.server import BindError, build_server
from cortexd.ipc.link import RingLink
from cortexd.ipc.ring import Ring
from cortexd.metrics.storewrites import StoreWriteMetrics
from cortexd.serializers import make_encoder
from cortexd.status.collect import StatusSource
from cortexd.status.routes import add_routes as add_status_routes
from cortexd.store import Store, StoreError, open_store
from cortexd.store.monitoring import MonitorTables
from cortexd.store.rows import BatchedWrites
from cortexd.web.server import build_app
from cortexd.web.server import start as start_web
from cortexd.workspaces import close_workspaces, open_workspaces

CONTROL_SERVICE = "cortex.v1.Control"


def watch_store_writes(store: Store, host: str) -> None:
    """Put the metrics observer on the store's writes and its group commit."""
    if isinstance(store, BatchedWrites):
        observer = StoreWriteMetrics(host)
        store.observer = observer
        store.writer.on_commit = observer.committed


class Control:
    def __init__(self, settings: Settings, rings: list[RingPaths], conn: Connection,
                 parent_pid: int) -> None:
        self.settings = settings
        self.rings = rings
        self.conn = conn
        self.parent_pid = parent_pid
        self.stop = asyncio.Event()
        self.log = logs.get()
        self.figures: ControlFigures
        self.tokens: TokenTable
        self.ops: Operations

    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            key = load_or_create_private_key(s.key_file)
        except ConfigError as e:
            report(self.conn, "boot_error", message=str(e), exit_code=exitcodes.CONFIG_ERROR)
            return exitcodes.CONFIG_ERROR
        try:
            store = open_store(s.store_url, batch_max=s.store_batch_max_rows,
                               flush_delay_ms=s.store_flush_delay_ms,
                               pool_size=s.store_pool_size)
            await store.open()
        except StoreError as e:
            report(self.conn, "boot_error", message=str(e), exit_code=exitcodes.CONFIG_ERROR)
            return exitcodes.CONFIG_ERROR
        watch_store_writes(store, s.host_id)
        encoder = make_encoder(s.signer, key, s.envelope_ttl_ms, s.signer_pool_workers)
        hub = Hub(s, store, encoder, hub_id=s.host_id)
        st = hub.state
        st.welcome_key = key
        self.figures = ControlFigures(hub)
        st.coord = make_coordinator(s.coordination, s.host_id, s.lease_ttl_ms,
                                    s.control_listen)
        await hub.sessions.recover()
        for index, paths in enumerate(self.rings):
            link = RingLink(Ring(paths.down), Ring(paths.up), paths.up_wake, paths.down_wake)
            link.start(loop)
            st.links[index] = link
            st.shards[index] = ShardInfo()
        table = self.tokens = TokenTable(s.tokens_file)
        table.load()
        auth = Authenticator(table)
        artifacts = await open_artifacts(s, store, auth)
        try:
            server, port, local = self._server(auth)
        except BindError as e:
            report(self.conn, "boot_error", message=str(e), exit_code=exitcodes.PORT_IN_USE)
            return exitcodes.PORT_IN_USE
        agents = await start_agents(st, hub.tasks, store)  # monitors (cortexd/control/agents.py)
        if s.monitor_policy_files:
            await sync_policies(agents.store, s.monitor_policy_files)
        control = ControlService(hub, agents)
        control.artifacts = artifacts
        control.auth = auth
        control_pb2_grpc.add_ControlServicer_to_server(  # type: ignore[no-untyped-call]
            control, server)
        monitor_pb2_grpc.add_MonitorsServicer_to_server(  # type: ignore[no-untyped-call]
            MonitorsService(agents), server)
        artifacts_pb2_grpc.add_ArtifactsServicer_to_server(  # type: ignore[no-untyped-call]
            artifacts, server)
        workspaces, ws_watchers = await open_workspaces(s, auth)
        st.workspace_nodes = workspaces.hub.nodes_of  # tasks in a workspace (placement.py)
        workspaces.hub.on_attachments_changed = st.kick
        workspace_pb2_grpc.add_WorkspacesServicer_to_server(  # type: ignore[no-untyped-call]
            workspaces, server)
        browse = BrowseService(st, auth, artifacts.grants)
        agents.pages = PageReads(browse, agents.secrets)  # what monitors read of a page
        browse_pb2_grpc.add_BrowseServicer_to_server(  # type: ignore[no-untyped-call]
            browse, server)
        shell_pb2_grpc.add_ShellServicer_to_server(  # type: ignore[no-untyped-call]
            ShellService(hub), server)
        self.ops = Operations(hub, SupervisorLink(self.conn))
        operate_pb2_grpc.add_OperateServicer_to_server(  # type: ignore[no-untyped-call]
            OperateService(self.ops), server)
        credentials_pb2_grpc.add_CredentialsServicer_to_server(  # type: ignore[no-untyped-call]
            CredentialsService(table, st), server)
        health = PortHealth(server, [CONTROL_SERVICE, OPERATE_SERVICE])
        await server.start()
        await health.set(SERVING)
        web_runner = None
        if s.metrics_address:
            try:
                app = build_app(self.figures)
                add_status_routes(app, StatusSource(hub), auth)  # /status (cortexd/status)
                web_runner, _ = await start_web(s.metrics_address, app)
            except OSError as e:
                report(self.conn, "boot_error", message=f"metrics_listen {s.metrics_address}: "
                       f"{e.strerror}", exit_code=exitcodes.PORT_IN_USE)
                return exitcodes.PORT_IN_USE
        install_stop_signals(loop, lambda sig: self.stop.set())
        tasks = [asyncio.create_task(hub.inbox.serve(i, link)) for i, link in st.links.items()]
        tasks.append(asyncio.create_task(hub.placement.run()))
        tasks.append(asyncio.create_task(run_queue_timeouts(st)))
        tasks.append(asyncio.create_task(hub.sessions.run_housekeeping()))
        tasks.append(asyncio.create_task(watch_parent(self.parent_pid, self.stop.set)))
        tasks.append(asyncio.create_task(artifacts.collector.run_forever()))
        tasks.append(asyncio.create_task(beat_rings(st)))
        tasks.append(asyncio.create_task(hub.submits.run_sweeps()))
        if st.coord.clustered:
            await st.coord.open(hub.cluster.on_message)
            tasks.append(asyncio.create_task(hub.cluster.run()))
            tasks.append(asyncio.create_task(hub.cluster.send_remote_events()))
        loop.add_reader(self.conn.fileno(), self._from_supervisor, hub)
        st.kick()
        report(self.conn, "ready", pid=os.getpid(), control_port=port)
        self.log.info("control_ready", address=s.control_listen, port=port)
        await self.stop.wait()
        self.figures.stopping = True
        await health.stopping()
        loop.remove_reader(self.conn.fileno())
        await server.stop(grace=min(3.0, s.shutdown_grace_s))
        Path(local.removeprefix("unix:")).unlink(missing_ok=True)
        if web_runner is not None:
            await web_runner.cleanup()
        self.ops.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        encoder.close()
        await st.coord.close()  # releases this host's leases
        for link in st.links.values():
            link.close()
        await artifacts.store.close()
        await close_workspaces(workspaces, ws_watchers)
        await store.close()
        self.log.info("control_stopped", nodes=sum(n.attached for n in st.nodes.values()),
                      queued=len(st.queue))
        return exitcodes.OK

    def _server(self, auth: Authenticator) -> tuple[grpc.aio.Server, int, str]:
        """The Control API's server, its TCP port and its Unix socket (localport.py: the
        same services for the monitor processes). With shard_intake the shards serve
        the TCP port (cortexd/shards/intake.py) and send what they do not take in
        themselves to the socket, which is then this server's only address."""
        s = self.settings
        try:
            local = prepare_local_socket(s.state_dir)
        except OSError as e:
            raise BindError(f"control socket: {e}") from e
        server, port = build_server(local if s.shard_intake else s.control_listen,
                                    ServerTLS() if s.shard_intake else s.tls,
                                    max_frame_bytes=control_frame_bytes(s.max_frame_bytes),
                                    reuse_port=False, bdp_probe=True,
                                    interceptors=[AuthInterceptor(auth, CONTROL_METHODS),
                                                  EdgeGuard()])
        if s.shard_intake:
            return server, int(s.control_listen.rsplit(":", 1)[1]), local
        try:
            if server.add_insecure_port(local) == 0:
                raise RuntimeError("address in use")
        except RuntimeError as e:
            raise BindError(f"control socket: cannot bind {local}: {e}") from e
        return server, port, local

    def _from_supervisor(self, hub: Hub) -> None:
        try:
            msg = read_report(self.conn)
        except (EOFError, OSError, ValueError):
            self.stop.set()  # the supervisor is gone
            return
        if msg["event"] == "stopping":  # the supervisor began its stop ladder
            self.figures.stopping = True
            return
        if msg["event"] == "reload":
            self._reload(hub, Settings.from_dict(msg["settings"]))
            return
        if msg["event"] in ("op_done", "shard_added", "shard_removed"):
            self.ops.from_supervisor(msg)  # shard operations (operate.py)
            return
        info = hub.state.shards.setdefault(int(msg.get("shard", 0)), ShardInfo())
        if msg["event"] == "shard_up":
            info.pid, info.alive, info.restarts = msg["pid"], True, msg["restarts"]
            hub.shards.drained.discard(int(msg["shard"]))
        elif msg["event"] == "shard_down":
            info.alive = False
            hub.submits.shard_down(int(msg["shard"]))
            hub.state.spawn(hub.cluster.shard_down(int(msg["shard"])))


    def _reload(self, hub: Hub, settings: Settings) -> None:
        """SIGHUP (cortexd/reload.py): settings read at their use, credentials re-read."""
        self.settings = hub.state.settings = settings
        hub.state.watchers.limit = settings.max_watchers
        logs.set_level(settings.log_level)
        try:
            self.tokens.load()
        except Exception as e:  # a broken tokens file: keep the credentials we had
            self.log.error("reload_tokens_failed", error=str(e))
        if settings.monitor_policy_files and isinstance(hub.state.store, MonitorTables):
            hub.state.spawn(self._sync_policies(hub.state.store, settings.monitor_policy_files))
        self.log.info("control_reloaded", log_level=settings.log_level)

    async def _sync_policies(self, store: MonitorTables, spec: str) -> None:
        try:
            await sync_policies(store, spec)
        except Exception:  # a store outage: the files are read again at the next reload
            self.log.exception("policies_reload_failed")


async def beat_rings(st: HubState, interval_s: float = 1.0) -> None:
    """Prove this process lives: advance the producer heartbeat of every down ring
    (the supervisor's watchdog reads it, cortexd/watchdog.py). A hung loop stops it."""
    while True:
        for link in list(st.links.values()):
            link.tx.beat_producer()
        await asyncio.sleep(interval_s)


def main(settings_dict: dict[str, Any], rings: list[RingPaths], conn: Connection,
         parent_pid: int) -> None:
    """Entry point of the spawned control process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.from_dict(settings_dict)
    logs.configure("control", json=logs.wants_json(settings.log_format), level=settings.log_level)
    try:
        code = uvloop.run(Control(settings, rings, conn, parent_pid).run())
    except Exception as e:
        logs.get().exception("control_crashed")
        report(conn, "boot_error", message=f"control: {type(e).__name__}: {e}",
               exit_code=exitcodes.BOOT_ERROR)
        code = exitcodes.ERROR
    os._exit(code)

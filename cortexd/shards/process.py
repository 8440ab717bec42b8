"""The shard process: its own grpc.aio server on the shared node port.

Started by the supervisor with the ``spawn`` method; everything that owns a
socket, a thread or gRPC state is created here, after the spawn. The kernel
spreads node connections over the shards (SO_REUSEPORT); the shard that accepts
a node owns its session. It talks to the control process only through its two
rings.
"""

import asyncio
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import grpc
import uvloop

from cortex import logs
from cortex.envelope import load_or_create_private_key
from cortex.errors import ConfigError
from cortex.tokens import TokenTable
from cortexd import exitcodes
from cortexd.childproc import (
    RingPaths,
    install_stop_signals,
    read_report,
    report,
    watch_parent,
)
from cortexd.config import Settings
from cortexd.control.localport import control_frame_bytes, local_socket_path
from cortexd.ingress.auth import CONTROL_METHODS, NODE_METHODS, Authenticator, AuthInterceptor
from cortexd.ingress.grpchealth import SERVING, PortHealth
from cortexd.ingress.nodelink import NodeLinkService
from cortexd.ingress.proxy import Relay, channel_options
from cortexd.ingress.server import BindError, build_server
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink
from cortexd.ipc.ring import Ring
from cortexd.metrics import hub as metrics
from cortexd.metrics.hub import ShardFigures
from cortexd.metrics.storewrites import StoreWriteMetrics
from cortexd.serializers.envelope import InlineEncoder
from cortexd.shards.admission import AttachAdmission
from cortexd.shards.intake import ShardIntake
from cortexd.shards.session import SessionTable
from cortexd.shards.writes import ShardWrites
from cortexd.store import Store, StoreError, open_store
from cortexd.store.rows import BatchedWrites

NODE_SERVICE = "cortex.v1.NodeLink"
STATS_INTERVAL_S = 1.0
#: Silent sessions are looked for every this many STATS ticks (the floor of the
#: silence limit is 3 heartbeat intervals, 15 s by default: found within 5 s more).
SILENCE_SWEEP_TICKS = 5
DRAIN_GRACE_S = 5.0


class Shard:
    def __init__(self, index: int, settings: Settings, paths: RingPaths, conn: Connection,
                 parent_pid: int) -> None:
        self.index = index
        self.settings = settings
        self.paths = paths
        self.conn = conn
        self.parent_pid = parent_pid
        self.stop = asyncio.Event()
        self.log = logs.get()
        self._waits = 0
        self._frames = (0, 0)
        self._writes: dict[str, int] = {}
        self._taken: dict[str, int] = {}
        self._drain: asyncio.Future[None] | None = None
        self._server: grpc.aio.Server
        self._health: PortHealth
        self._sessions: SessionTable
        self._intake: ShardIntake | None = None

    async def _drained(self, service: NodeLinkService) -> None:
        """Drain (cortexd/shardset.py): refuse new attaches, close the listening socket,
        end every node stream (the nodes reconnect to another shard with their tasks),
        then say ``drained``. The process stays, beating its rings, until restarted."""
        service.draining = True
        await self._health.stopping()
        # grpc.aio's stop closes the listeners before it waits out the grace; the
        # streams are ended below, so the grace is only for their last writes.
        stopped = asyncio.ensure_future(self._server.stop(grace=DRAIN_GRACE_S))
        await asyncio.sleep(0)
        nodes = len(self._sessions.active)
        for session in list(self._sessions.active.values()):
            session.close("shard draining: attach again")
        await stopped
        self.log.info("shard_drained", nodes=nodes)
        report(self.conn, "drained", nodes=nodes)

    async def run(self) -> int:
        s = self.settings
        link = RingLink(Ring(self.paths.up), Ring(self.paths.down), self.paths.down_wake,
                        self.paths.up_wake)
        link.start(asyncio.get_running_loop())
        table = TokenTable(s.tokens_file)
        table.load()
        auth = Authenticator(table)
        sessions = SessionTable()
        admission = AttachAdmission.for_shard(s.admit_per_s, s.max_pending_attaches, s.shards,
                                              time.monotonic(), node_grace_s=s.node_grace_s)
        figures = ShardFigures(s.host_id, self.index)
        try:
            store = await open_shard_store(s)
        except StoreError as e:
            report(self.conn, "boot_error", message=f"shard {self.index}: {e}",
                   exit_code=exitcodes.CONFIG_ERROR)
            return exitcodes.CONFIG_ERROR
        writes = ShardWrites(store) if store is not None and s.shard_writes else None
        service = NodeLinkService(self.index, link, sessions, auth, s.attach_timeout_s,
                                  s.heartbeat_interval_ms, admission, figures, writes)
        relay = None
        if s.shard_intake:  # the Control port too (cortexd/shards/intake.py)
            try:  # the hub's key: envelopes for this shard's own nodes are signed here
                key = load_or_create_private_key(s.key_file)
            except ConfigError as e:
                report(self.conn, "boot_error", message=f"shard {self.index}: {e}",
                       exit_code=exitcodes.CONFIG_ERROR)
                return exitcodes.CONFIG_ERROR
            relay = Relay(grpc.aio.insecure_channel(
                "unix:" + str(local_socket_path(s.state_dir)),
                options=channel_options(control_frame_bytes(s.max_frame_bytes))))
            self._intake = ShardIntake(s, link, store, relay,
                                       InlineEncoder(key, s.envelope_ttl_ms), sessions)
        try:
            return await self._serve(link, sessions, service, auth, table)
        finally:
            if relay is not None:
                await relay.channel.close(None)
            if store is not None:
                await store.close()

    async def _control_port(self, auth: Authenticator) -> grpc.aio.Server | None:
        """The Control port's server of this shard (shard_intake), started; None: off."""
        s = self.settings
        if self._intake is None:
            return None
        server, _ = build_server(s.control_listen, s.tls,
                                 max_frame_bytes=control_frame_bytes(s.max_frame_bytes),
                                 reuse_port=True, bdp_probe=True,
                                 interceptors=[AuthInterceptor(auth, CONTROL_METHODS)])
        server.add_generic_rpc_handlers([self._intake.handler()])
        await server.start()
        return server

    async def _serve(self, link: RingLink, sessions: SessionTable, service: NodeLinkService,
                     auth: Authenticator, table: TokenTable) -> int:
        s = self.settings
        admission = service.admission
        try:
            server, _ = build_server(s.node_listen, s.tls, max_frame_bytes=s.max_frame_bytes,
                                     reuse_port=True,
                                     interceptors=[AuthInterceptor(auth, NODE_METHODS)])
        except BindError as e:
            report(self.conn, "boot_error", message=str(e), exit_code=exitcodes.PORT_IN_USE)
            return exitcodes.PORT_IN_USE
        server.add_generic_rpc_handlers([service.handler()])
        health = PortHealth(server, [NODE_SERVICE])
        await server.start()
        try:
            control_port = await self._control_port(auth)
        except BindError as e:
            report(self.conn, "boot_error", message=str(e), exit_code=exitcodes.PORT_IN_USE)
            return exitcodes.PORT_IN_USE
        await health.set(SERVING)
        install_stop_signals(asyncio.get_running_loop(), lambda sig: self.stop.set())
        self._server, self._health, self._sessions = server, health, sessions
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self._from_supervisor,
                                              service, table)
        report(self.conn, "ready", pid=os.getpid())
        self.log.info("shard_ready", address=s.node_listen)
        tasks = [
            asyncio.create_task(self._from_control(link, sessions, service)),
            asyncio.create_task(self._housekeeping(link, sessions, service)),
            asyncio.create_task(watch_parent(self.parent_pid, self.stop.set)),
        ]
        await self.stop.wait()
        # Stop ladder, shard part: end every node stream (nodes keep their tasks and
        # reconnect to the next hub), stop accepting, then close the rings.
        if self._drain is None:
            await health.stopping()
            for session in list(sessions.active.values()):
                session.close("hub is shutting down")
            await server.stop(grace=min(2.0, s.shutdown_grace_s))
        else:
            await self._drain
        if control_port is not None:
            await control_port.stop(grace=min(2.0, s.shutdown_grace_s))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        link.close()
        self.log.info("shard_stopped", nodes=len(sessions.active), frames_in=service.frames_in,
                      frames_out=service.frames_out,
                      **(service.writes.counts if service.writes else {}),
                      attaches_admitted=admission.admitted,
                      attaches_retry_later=admission.refused,
                      waits_for_ring_room=service.held_for_room)
        return exitcodes.OK

    def _from_supervisor(self, service: NodeLinkService, table: TokenTable) -> None:
        """A reload (SIGHUP, cortexd/reload.py): limits, log level, credentials. The node
        streams are not touched."""
        try:
            msg = read_report(self.conn)
        except (EOFError, OSError, ValueError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            return  # the supervisor is gone; watch_parent stops us
        if msg.get("event") == "drain" and self._drain is None:
            self._drain = asyncio.ensure_future(self._drained(service))
        if msg.get("event") != "reload":
            return
        s = self.settings = Settings.from_dict(msg["settings"])
        logs.set_level(s.log_level)
        service.attach_timeout_s = s.attach_timeout_s
        fresh = AttachAdmission.for_shard(s.admit_per_s, s.max_pending_attaches, s.shards,
                                          time.monotonic(), node_grace_s=s.node_grace_s)
        admission = service.admission
        admission.rate_per_s, admission.burst = fresh.rate_per_s, fresh.burst
        admission.max_pending, admission.max_retry_s = fresh.max_pending, fresh.max_retry_s
        try:
            table.load()
        except Exception as e:  # a broken tokens file: keep the credentials we had
            self.log.error("reload_tokens_failed", error=str(e))
        self.log.info("shard_reloaded", log_level=s.log_level)

    async def _from_control(self, link: RingLink, sessions: SessionTable,
                            service: NodeLinkService) -> None:
        while True:
            for record in await link.recv():
                msg = m.unpack(record)
                kind = msg[0]
                if kind == m.SEND:
                    if (session := sessions.route(msg[1], msg[2])) is not None:
                        session.push(msg[3])
                elif kind == m.WELCOME:
                    if not sessions.welcomed(msg[1], msg[3], msg[4], msg[5] / 1000):
                        # Admitted after the attach gave up (RetryLater on timeout, or
                        # the node left): end that session at the control process too.
                        detach = m.pack(m.DETACH, msg[2], msg[3], "attach abandoned before "
                                        "Welcome")
                        if not link.send_nowait(detach):
                            await link.send(detach)
                elif kind == m.RESERVED and self._intake is not None:
                    self._intake.reserved(msg)
                elif kind == m.REFUSE:
                    sessions.refused(msg[1], msg[2], msg[3])
                elif kind == m.CLOSE:
                    if (session := sessions.route(msg[1], msg[2])) is not None:
                        session.close(msg[3])
                elif kind in (m.ADMIT, m.INTERVAL):
                    self._told(msg, sessions, service)

    def _told(self, msg: list[Any], sessions: SessionTable, service: NodeLinkService) -> None:
        """ADMIT or INTERVAL from control."""
        if msg[0] == m.ADMIT:
            if self._drain is None:
                service.draining = not msg[1]  # a rebalance holds new attaches off
            return
        # Heartbeat acks carry it to the nodes; a session's silence limit only grows (a
        # node may still beat at its old, longer interval).
        service.heartbeat_interval_ms = int(msg[1])
        for session in sessions.active.values():
            session.heartbeat_s = max(session.heartbeat_s, msg[1] / 1000)

    async def _housekeeping(self, link: RingLink, sessions: SessionTable,
                            service: NodeLinkService) -> None:
        admission = service.admission
        logged = (0, 0)
        ticks = 0
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            link.tx.beat_producer()
            if (admission.admitted, admission.refused) != logged:
                # One line a second while nodes attach, not one per refused node.
                logged = (admission.admitted, admission.refused)
                self.log.info("attach_admission", admitted=admission.admitted,
                              retry_later=admission.refused, pending=len(sessions.pending),
                              nodes=len(sessions.active))
            ticks += 1
            if ticks % SILENCE_SWEEP_TICKS == 0:  # a scan of every session: not every second
                for session in sessions.silent(time.monotonic()):
                    session.close(f"no frame from the node for {3 * session.heartbeat_s:.1f} s")
            link.send_nowait(m.pack(m.STATS, len(sessions.active), service.frames_in,
                                    service.frames_out))
            self._figures(service, link, len(sessions.active))

    def _figures(self, service: NodeLinkService, link: RingLink, attached: int) -> None:
        """Once a second: this shard's gauges, and its counters' growth since the last."""
        f, host, shard = service.figures, self.settings.host_id, str(self.index)
        f.attached.set(attached)
        for direction, ring in (("up", link.tx), ("down", link.rx)):
            metrics.RING_USED.labels(host, shard, direction).set(ring.used_bytes)
            metrics.RING_CAPACITY.labels(host, shard, direction).set(ring.capacity)
        # full_waits: a send that waited; held_for_room: heartbeat intervals a node's
        # frame waited on top of that (both are back-pressure towards control).
        waits = link.full_waits + service.held_for_room
        metrics.RING_FULL_WAITS.labels(host, shard, "up").inc(waits - self._waits)
        self._waits = waits
        f.frames_in.inc(service.frames_in - self._frames[0])
        f.frames_out.inc(service.frames_out - self._frames[1])
        self._frames = (service.frames_in, service.frames_out)
        if service.writes is not None:
            for outcome, count in service.writes.counts.items():
                f.writes[outcome].inc(count - self._writes.get(outcome, 0))
            self._writes = dict(service.writes.counts)
        if self._intake is not None:
            for outcome, count in self._intake.counts.items():
                f.intake[outcome].inc(count - self._taken.get(outcome, 0))
            self._taken = dict(self._intake.counts)


async def open_shard_store(s: Settings) -> Store | None:
    """The shard's own connection to the store, for the node frames it writes and the
    submissions it takes in (None: ``shard_writes`` and ``shard_intake`` are off). The
    control process migrated the schema before any shard started; commits are timed
    into the same metrics as control's (multiprocess mode)."""
    if not (s.shard_writes or s.shard_intake):
        return None
    store = open_store(s.store_url, batch_max=s.store_batch_max_rows,
                       flush_delay_ms=s.store_flush_delay_ms,
                       pool_size=min(2, s.store_pool_size))
    await store.open()
    if isinstance(store, BatchedWrites):
        store.writer.on_commit = StoreWriteMetrics(s.host_id).committed
    return store


def main(index: int, settings_dict: dict[str, Any], paths: RingPaths, conn: Connection,
         parent_pid: int) -> None:
    """Entry point of a spawned shard process."""
    settings = Settings.from_dict(settings_dict)
    logs.configure("shard", json=logs.wants_json(settings.log_format), level=settings.log_level,
                   shard=index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; see install_stop
    try:
        code = uvloop.run(Shard(index, settings, paths, conn, parent_pid).run())
    except Exception as e:
        logs.get().exception("shard_crashed")
        report(conn, "boot_error", message=f"shard {index}: {type(e).__name__}: {e}",
               exit_code=exitcodes.BOOT_ERROR)
        code = exitcodes.ERROR
    os._exit(code)

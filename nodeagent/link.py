"""One ``NodeLink.Attach`` stream to the hub (docs/protocol.md, "Connecting", "Liveness").

A session: dial one hub address (the connect loop picks which, nodeagent/hubs.py), send
``Hello`` (every task held), wait for ``Welcome`` (or ``RetryLater``), hand the verdicts
to the host, then run three loops until one ends:
the reader (hub frames to the host), the writer (the host's next frame, one write in
flight at a time, as grpc.aio requires), the progress reports (nodeagent/pacing.py)
and the liveness timer (a heartbeat every
interval ±10 %, and the end of the session when nothing came from the hub for three
intervals). The session ends on any gRPC error, a closed stream, a silent hub, a
``RetryLater`` or ``stop``; it never raises for those, it returns a :class:`SessionEnd`
the connect loop turns into a delay. Tasks are not touched by a session ending.
"""

import asyncio
import contextlib
import random
import secrets
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from cortex import tls, tokens
from cortex.envelope import CHALLENGE_BYTES
from cortex.v1 import node_pb2, node_pb2_grpc
from nodeagent.config import AgentConfig
from nodeagent.errors import NodeAgentError
from nodeagent.host import TaskHost

AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
SILENT_INTERVALS = 3
# A hub's interval outside these bounds is clamped: a typo must not make the node spin
# (1 ms) or never notice a dead hub (days).
MIN_HEARTBEAT_INTERVAL_MS = 50
MAX_HEARTBEAT_INTERVAL_MS = 600_000
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs predates grpc.aio.EOF


@dataclass(frozen=True, slots=True)
class SessionEnd:
    reason: str
    welcomed_for_s: float | None = None  # how long the session lasted after Welcome
    retry_after_s: float | None = None  # the hub's RetryLater
    auth_failed: bool = False
    code: str = ""
    fatal: str = ""  # retrying cannot help: the agent stops (exitcodes.WRONG_HUB)


class _End(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None,
                 fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.fatal = fatal


def channel_options(config: AgentConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", config.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.enable_retries", 0),  # our own backoff decides when to dial again
        # No bandwidth-delay probing: it answers every heartbeat with an HTTP/2 ping,
        # which doubled the hub's idle CPU at 10,000 nodes (bench hold).
        ("grpc.http2.bdp_probe", 0),
        # Every session on a connection of its own: from grpc's global subchannel pool a
        # new channel could take the last session's TCP connection, and so the same hub
        # shard (SO_REUSEPORT picks a shard per connection) — a shard that ends the
        # session to move the node (cortexctl shards rebalance) would get it back.
        ("grpc.use_local_subchannel_pool", 1),
    ]


def open_channel(config: AgentConfig, address: str) -> grpc.aio.Channel:
    if config.tls.enabled:
        creds = tls.channel_credentials(config.tls)
        return grpc.aio.secure_channel(address, creds, channel_options(config)
                                       + tls.channel_name_options(config.tls))
    return grpc.aio.insecure_channel(address, channel_options(config))


def not_a_node_port(address: str, code: grpc.StatusCode) -> str:
    """A gRPC server without the NodeLink service answers Attach UNIMPLEMENTED: most
    likely the hub's Control port (what cortexctl's --hub and CORTEX_HUB name)."""
    if code is not grpc.StatusCode.UNIMPLEMENTED:
        return ""
    return (f"{address} is not a hub's node port: it answers gRPC but has no NodeLink "
            "service (the Control port, cortexctl's --hub, answers this way); give "
            "--node-port the address of cortexd --node-listen (7700 by default)")


class LinkSession:
    def __init__(self, config: AgentConfig, host: TaskHost, token: str, boot_id: int,
                 log: Any, stop: asyncio.Event, rng: random.Random | None = None,
                 address: str | None = None) -> None:
        self.config = config
        self.address = address or config.hub_addresses[0]
        self.host = host
        self._token = token
        self._boot_id = boot_id
        self._log = log
        self._stop = stop
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        self._last_rx = 0.0
        self._interval_s = config.default_heartbeat_interval_ms / 1000
        self._seq = 0
        self._welcomed_at: float | None = None

    async def run(self) -> SessionEnd:
        channel = open_channel(self.config, self.address)
        stub = node_pb2_grpc.NodeLinkStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Attach(metadata=tokens.bearer(self._token))
        try:
            return await self._run(call)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            return self._end(f"{code.name}: {e.details()}", auth_failed=code in AUTH_CODES,
                             code=code.name, fatal=not_a_node_port(self.address, code))
        except _End as e:
            return self._end(e.reason, retry_after_s=e.retry_after_s,
                             fatal=e.reason if e.fatal else "")
        except Exception as e:  # a bug or a disk error must cost a reconnect, not the agent
            self._log.exception("session_error")
            return self._end(f"session error: {type(e).__name__}: {e}")
        finally:
            call.cancel()
            await channel.close(None)

    def _end(self, reason: str, **kw: Any) -> SessionEnd:
        lasted = None if self._welcomed_at is None else self._loop.time() - self._welcomed_at
        return SessionEnd(reason=reason, welcomed_for_s=lasted, **kw)

    async def _run(self, call: Any) -> SessionEnd:
        hello = self.host.hello(self._boot_id)
        challenge = hello.hello.hub_challenge = secrets.token_bytes(CHALLENGE_BYTES)
        await call.write(hello)
        first = await self._read_first(call)
        welcome = first.welcome
        self._check_hub_key(challenge, welcome)
        self._welcomed_at = self._last_rx = self._loop.time()
        if welcome.heartbeat_interval_ms:
            interval_ms = min(max(welcome.heartbeat_interval_ms, MIN_HEARTBEAT_INTERVAL_MS),
                              MAX_HEARTBEAT_INTERVAL_MS)
            self._interval_s = interval_ms / 1000
        self.host.welcome(welcome)
        self._log.info("attach", address=self.address, epoch=welcome.session_epoch,
                       shard=welcome.shard, hub=welcome.hub_id,
                       heartbeat_interval_ms=int(self._interval_s * 1000),
                       verdicts=len(welcome.verdicts), tasks=len(self.host.table))
        loops = [self._loop.create_task(c) for c in
                 (self._reader(call), self._writer(call), self._liveness(), self._progress(),
                  self._stop.wait())]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        for t in done:
            t.result()  # re-raise _End / AioRpcError from the loop that ended
        return self._end("stopped")

    def _check_hub_key(self, challenge: bytes, welcome: node_pb2.Welcome) -> None:
        """The hub signed our challenge with the key it signs tasks with: one that is not
        --hub-key's would get every task refused as bad_signature, so stop now."""
        verifier = self.host.verifier
        if not welcome.hub_proof:  # a hub from before issue 13: nothing to check yet
            self._log.warning("hub_key_unproven", address=self.address)
            return
        if not verifier.proves_key(challenge, welcome.hub_proof):
            raise _End(f"the hub at {self.address} signs with key {welcome.hub_key_id or '?'}"
                       f", but --hub-key {self.config.hub_key_file} is key "
                       f"{verifier.key_id}: every task it sends would be refused "
                       "(bad_signature); give --hub-key that hub's STATE_DIR/hub.pub",
                       fatal=True)

    async def _read_first(self, call: Any) -> node_pb2.HubFrame:
        try:
            frame = await asyncio.wait_for(call.read(), self.config.welcome_timeout_s)
        except TimeoutError:
            raise _End("no Welcome from the hub in time") from None
        if frame is EOF:
            raise _End("hub closed the stream before Welcome")
        kind = frame.WhichOneof("kind")
        if kind == "retry_later":
            raise _End(f"hub asked to retry later: {frame.retry_later.reason}",
                       retry_after_s=frame.retry_later.retry_after_ms / 1000)
        if kind != "welcome":
            raise _End(f"hub sent {kind} before Welcome")
        return frame  # type: ignore[no-any-return]

    async def _reader(self, call: Any) -> None:
        host = self.host
        while True:
            frame = await call.read()
            if frame is EOF:
                raise _End("hub closed the stream")
            self._last_rx = self._loop.time()
            kind = frame.WhichOneof("kind")
            if kind == "task":
                host.on_envelope(frame.task)
            elif kind == "ack":
                host.on_ack(frame.ack)
            elif kind == "cancel":
                host.on_cancel(frame.cancel)
            elif kind == "input":
                host.on_input(frame.input)
            elif kind == "finished_ack":
                host.on_finished_ack(frame.finished_ack)
            elif kind == "log_request":
                host.on_log_request(frame.log_request)
            elif kind == "call":
                host.on_call(frame.call)
            elif kind == "retry_later":
                raise _End(f"hub asked to retry later: {frame.retry_later.reason}",
                           retry_after_s=frame.retry_later.retry_after_ms / 1000)
            elif kind == "welcome":
                raise _End("hub sent a second Welcome")
            elif kind == "heartbeat_ack" and frame.heartbeat_ack.interval_ms:
                # The hub's interval grows with its fleet: follow it from the next beat.
                self._interval_s = min(max(frame.heartbeat_ack.interval_ms,
                                           MIN_HEARTBEAT_INTERVAL_MS),
                                       MAX_HEARTBEAT_INTERVAL_MS) / 1000
            # heartbeat_ack: receiving it is the point (last_rx); unknown kinds are ignored

    async def _writer(self, call: Any) -> None:
        host = self.host
        while True:
            frame = host.next_frame()
            if frame is None:
                host.wake.clear()
                frame = host.next_frame()  # re-check after clear: no lost wake-up
                if frame is None:
                    await host.wake.wait()
                    continue
            await call.write(frame)

    async def _progress(self) -> None:
        """Every ``progress_interval_s``: TaskProgress for tasks whose numbers changed."""
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            with contextlib.suppress(NodeAgentError):  # a full queue: the next tick will do
                for frame in self.host.progress_frames():
                    self.host.queue(frame)

    async def _liveness(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s * self._rng.uniform(0.9, 1.1))
            silent_s = self._loop.time() - self._last_rx
            if silent_s > SILENT_INTERVALS * self._interval_s:
                raise _End(f"hub silent for {silent_s:.1f} s")
            self._seq += 1
            with contextlib.suppress(NodeAgentError):  # a full queue: the next beat will do
                self.host.queue(node_pb2.NodeFrame(heartbeat=node_pb2.Heartbeat(
                    seq=self._seq, running=self.host.table.running)))

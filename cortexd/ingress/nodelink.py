"""The NodeLink.Attach handler: a thin adapter between a node's stream and the rings.

Frames arrive as raw bytes (identity deserializer) and are parsed here, so that a
malformed frame ends that stream with INVALID_ARGUMENT and a clear message.
Heartbeats are answered in the shard; a task's Started, output and Finished are
written to the store here and acked from here (cortexd/shards/writes.py: in the
node's order, with what each write did reported to control); everything else about
tasks is forwarded to the control process as the node's own bytes, tagged with the
session epoch.
Frames to the node are written as the bytes the control process produced
(identity serializer): an envelope is never re-encoded.

A session whose credential leaves the token table (revoked, or replaced by a new
enrollment of the node) is ended at its next heartbeat with UNAUTHENTICATED: a running
hub drops the stream of a revoked node without a restart (issue 13).

Admission (cortexd/shards/admission.py): after a valid Hello, an attach over this
shard's rate or in-flight budget — or one the control process did not answer within
``attach_timeout_s`` — is answered with ``RetryLater{retry_after_ms, reason}`` and the
stream ends with OK: the node waits that long and comes back, which is not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from cortex import logs
from cortex.ids import check_labels, is_node_id
from cortex.tokens import token_hash
from cortex.v1 import node_pb2
from cortexd.ingress.auth import Authenticator, bearer_token
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink
from cortexd.metrics.hub import ShardFigures
from cortexd.shards.admission import (
    REASON_PENDING,
    REASON_RATE,
    REASON_SLOW,
    AttachAdmission,
    Refusal,
)
from cortexd.shards.session import CLOSE, NodeSession, RefusedAttach, SessionTable
from cortexd.shards.writes import Pipeline, ShardWrites

#: Bounded label values of cortex_node_attach_rejections_total for RetryLater answers.
#: A draining shard (cortexd/shardset.py) sends new attaches back at once: by then its
#: listening socket is closed, so the node's next connection reaches another shard.
REASON_DRAINING = "shard is draining"
DRAINING_RETRY_MS = 100
RETRY_REASONS = {REASON_RATE: "retry_rate", REASON_PENDING: "retry_pending",
                 REASON_SLOW: "retry_slow", REASON_DRAINING: "retry_draining"}
MAX_REPORTED_TASKS = 10_000
MAX_CAPACITY = 10_000
Context = grpc.aio.ServicerContext[bytes, bytes]
T = TypeVar("T")


class CredentialRevoked(ValueError):
    """The session's credential is no longer in the token table."""

    code = grpc.StatusCode.UNAUTHENTICATED


def _parse(raw: bytes) -> node_pb2.NodeFrame:
    frame = node_pb2.NodeFrame()
    try:
        frame.ParseFromString(raw)
    except DecodeError as e:
        raise ValueError(f"malformed NodeFrame: {e}") from e
    if frame.WhichOneof("kind") is None:
        raise ValueError("NodeFrame carries no frame kind")
    return frame


def _check_hello(hello: node_pb2.Hello, identity: str) -> str | None:
    if hello.node_id != identity:
        return f"hello names node {hello.node_id!r} but the credential is for {identity!r}"
    if not is_node_id(hello.node_id):
        return f"node id {hello.node_id!r} is not valid"
    if (err := check_labels(dict(hello.labels))) is not None:
        return err
    if not 0 < hello.capacity <= MAX_CAPACITY:
        return f"capacity must be between 1 and {MAX_CAPACITY}"
    if len(hello.tasks) > MAX_REPORTED_TASKS:
        return f"too many reported tasks ({len(hello.tasks)} > {MAX_REPORTED_TASKS})"
    return None


class NodeLinkService:
    def __init__(self, shard: int, link: RingLink, sessions: SessionTable, auth: Authenticator,
                 attach_timeout_s: float, heartbeat_interval_ms: int,
                 admission: AttachAdmission | None = None,
                 figures: ShardFigures | None = None,
                 writes: ShardWrites | None = None) -> None:
        self.shard = shard
        self.writes = writes  # None: every frame about tasks goes to control to be written
        self.figures = figures or ShardFigures("", shard)
        self.admission = admission or AttachAdmission(0.0, 1.0, 0)  # default: unlimited
        self.link = link
        self.sessions = sessions
        self.auth = auth
        self.attach_timeout_s = attach_timeout_s
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.frames_in = 0
        self.held_for_room = 0  # heartbeat intervals a node's frame waited for ring room
        self.frames_out = 0
        self.draining = False
        self.log = logs.get()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        def identity(b: bytes) -> bytes:
            return b

        return grpc.method_handlers_generic_handler("cortex.v1.NodeLink", {
            "Attach": grpc.stream_stream_rpc_method_handler(
                self.attach, request_deserializer=identity, response_serializer=identity),
        })

    async def attach(self, requests: AsyncIterator[bytes], context: Context) -> None:
        principal = self.auth.identify(context.invocation_metadata())
        if principal is None or principal.role != "node":
            self.figures.rejected("credential")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "not a node credential")
            return
        stream = requests.__aiter__()
        try:
            first = await asyncio.wait_for(anext(stream), self.attach_timeout_s)
            frame = _parse(first)
        except (TimeoutError, StopAsyncIteration):
            self.figures.rejected("no_hello")
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello frame in time")
            return
        except ValueError as e:
            self.figures.rejected("bad_hello")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            return
        if frame.WhichOneof("kind") != "hello":
            self.figures.rejected("bad_hello")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first frame must be hello")
            return
        if (err := _check_hello(frame.hello, principal.name)) is not None:
            code = (grpc.StatusCode.PERMISSION_DENIED if "credential" in err
                    else grpc.StatusCode.INVALID_ARGUMENT)
            self.figures.rejected("identity" if "credential" in err else "bad_hello")
            await context.abort(code, err)
            return
        if self.draining:
            await self._retry_later(context, principal.name,
                                    Refusal(DRAINING_RETRY_MS, REASON_DRAINING))
            return
        admitted_at = time.monotonic()
        refusal = self.admission.decide(admitted_at, len(self.sessions.pending))
        if refusal is not None:
            await self._retry_later(context, principal.name, refusal)
            return
        session = self.sessions.begin(principal.name, asyncio.get_running_loop())
        session.credential = token_hash(bearer_token(context.invocation_metadata()) or "")
        assert session.welcome is not None
        try:
            await self.link.send(m.pack(m.ATTACH, session.conn_id, session.node_id,
                                         frame.hello.SerializeToString()))
            epoch, welcome = await asyncio.wait_for(session.welcome, self.attach_timeout_s)
        except asyncio.CancelledError:
            # The node went away before its Welcome: forget the attach, so that a late
            # Welcome is answered with a detach (shards/process.py) instead of making a
            # session nobody serves.
            self.sessions.end(session)
            raise
        except TimeoutError:
            self.sessions.end(session)
            await self._retry_later(context, principal.name,
                                    self.admission.refuse(time.monotonic(), REASON_SLOW))
            return
        except RefusedAttach as e:
            self.sessions.end(session)
            self.figures.rejected("refused")
            await context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNAVAILABLE),
                                str(e))
            return
        self.admission.welcomed(time.monotonic())
        self.figures.attaches.inc()
        # welcome_ms: from admission to control's Welcome (how far behind control is).
        self.log.info("node_attached", node=session.node_id, epoch=epoch, shard=self.shard,
                      welcome_ms=round((time.monotonic() - admitted_at) * 1000, 1))
        await context.write(welcome)
        reader = asyncio.create_task(self._read(stream, session))
        try:
            await self._write(session, context, reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if session.pipeline is not None:  # its writes' outcomes go before the DETACH
                await session.pipeline.close()
            self.sessions.end(session)
            reason = session.close_reason or "stream ended"
            detach = m.pack(m.DETACH, session.node_id, epoch, reason)
            if not self.link.send_nowait(detach):
                await self.link.send(detach)
            self.log.info("node_detached", node=session.node_id, epoch=epoch, reason=reason)

    async def _retry_later(self, context: Context, node_id: str, refusal: Refusal) -> None:
        """Tell the node when to come back, then end the stream cleanly (status OK)."""
        self.log.debug("attach_retry_later", node=node_id, shard=self.shard,
                       retry_after_ms=refusal.retry_after_ms, reason=refusal.reason,
                       refused=self.admission.refused)
        self.figures.rejected(RETRY_REASONS.get(refusal.reason, "retry_later"))
        frame = node_pb2.HubFrame(retry_later=node_pb2.RetryLater(
            retry_after_ms=refusal.retry_after_ms, reason=refusal.reason))
        with contextlib.suppress(Exception):  # the node may have gone already
            await context.write(frame.SerializeToString())

    async def _write(self, session: NodeSession, context: Context,
                     reader: asyncio.Task[Any]) -> None:
        while True:
            out = await session.outbound.get()
            if out is CLOSE or out == CLOSE:
                if reader.done() and (exc := reader.exception()) is not None:
                    code = getattr(exc, "code", grpc.StatusCode.INVALID_ARGUMENT)
                    await context.abort(code, str(exc))
                return
            await context.write(out)
            self.frames_out += 1

    async def _forward_when_room(self, session: NodeSession, record: bytes) -> None:
        """The ring to control is full (control is behind: its store is down, say). This
        node's frames wait — its stream is not read meanwhile, so HTTP/2 flow control
        holds the node."""
        await self._held(session, self.link.send(record))

    async def _held(self, session: NodeSession, work: Awaitable[T]) -> T:
        """Wait for ``work`` while the node's stream is not read. The node is not silent,
        the hub is: so while waiting, tell the node every heartbeat interval that the hub
        lives (an unsolicited HeartbeatAck, seq 0) and do not count the wait against the
        node's silence limit. Otherwise a long enough stall (the store down, control
        behind) would drop every node with frames in flight."""
        job = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=session.heartbeat_s)
                if done:
                    return job.result()
                session.last_seen = time.monotonic()
                self.held_for_room += 1
                session.push(node_pb2.HubFrame(heartbeat_ack=node_pb2.HeartbeatAck(
                    seq=0, interval_ms=self.heartbeat_interval_ms)).SerializeToString())
        finally:
            job.cancel()

    async def _to_control(self, record: bytes) -> None:
        if not self.link.send_nowait(record):
            await self.link.send(record)

    async def _read(self, stream: AsyncIterator[bytes], session: NodeSession) -> None:
        pipe = None
        if self.writes is not None:
            pipe = session.pipeline = Pipeline(session.node_id, session.epoch, self.writes,
                                               session.tracker, session.push, self._to_control)
        try:
            async for raw in stream:
                session.last_seen = time.monotonic()
                self.frames_in += 1
                frame = _parse(raw)
                kind = frame.WhichOneof("kind")
                if kind == "heartbeat":
                    if not self.auth.table.holds(session.credential):
                        raise CredentialRevoked("the node's credential was revoked or "
                                                "replaced (cortexctl tokens ls)")
                    ack = node_pb2.HubFrame(heartbeat_ack=node_pb2.HeartbeatAck(
                        seq=frame.heartbeat.seq, interval_ms=self.heartbeat_interval_ms))
                    session.push(ack.SerializeToString())
                elif kind == "hello":
                    raise ValueError("hello may only be the first frame")
                elif pipe is not None:
                    if (wait := pipe.room()) is not None:
                        await self._held(session, wait)
                    pipe.put(raw, frame, kind)
                else:
                    record = m.pack(m.FRAME, session.node_id, session.epoch, raw)
                    if not self.link.send_nowait(record):
                        await self._forward_when_room(session, record)
            session.close("node closed its stream")
        except ValueError as e:
            session.close(str(e))
            raise
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the stream broke (reset, cancelled by the peer)
            session.close(f"stream error: {type(e).__name__}")

"""Calls from the control process to a node's tool over its stream (``NodeCall``).

docs/protocol.md, "Node calls". :meth:`NodeCalls.call` sends one ``HubFrame.call`` with a
fresh ``call_id`` and waits for the node's ``call_reply`` frames, which
:meth:`NodeCalls.deliver` routes back by id. Invariants:

- Bounded: at most ``max_inflight_per_node`` calls wait on one node (one more is
  :class:`CallError` ``RESOURCE_EXHAUSTED``), a reply's binary part is at most
  ``max_data_bytes``, and the replies of a call are queued at most ``QUEUE_REPLIES`` deep
  (the node sends 256 KiB pieces in order; the waiter drains them as they come).
- A reply is accepted only from the node the call went to; one for an unknown call (a
  late answer after a timeout) is dropped.
- Nobody waits forever: the call's own timeout plus a margin, and a node that detaches
  fails its calls at once with ``UNAVAILABLE``.
- The binary result is checked piece by piece (offsets contiguous) and as a whole
  (size and sha256) before it is returned.
- ``ToolEvent`` frames go to the subscribers registered with :meth:`on_event`.
"""

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cortex.v1 import node_pb2, nodecall_pb2

MAX_INFLIGHT_PER_NODE = 16
MAX_DATA_BYTES = 64 * 1024 * 1024
QUEUE_REPLIES = 64
MARGIN_S = 5.0


class CallError(Exception):
    """``code`` is a grpc.StatusCode name; ``kind`` the tool's error type (or ours)."""

    def __init__(self, code: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


@dataclass(eq=False)
class _Waiter:
    node_id: str
    queue: asyncio.Queue[nodecall_pb2.NodeCallReply | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_REPLIES))
    overflowed: bool = False


class CallResult:
    """A tool's answer: its result JSON as the node sent it (parsed on first use: the
    Browse service passes it through unparsed) and its binary part as the node's pieces
    (passed on as they are, joined only when asked)."""

    __slots__ = ("_result", "pieces", "result_json", "sha256")

    def __init__(self, result_json: bytes, pieces: tuple[bytes, ...] = (),
                 sha256: str = "") -> None:
        self.result_json = result_json or b"{}"
        self.pieces = pieces
        self.sha256 = sha256
        self._result: dict[str, Any] | None = None

    @property
    def result(self) -> dict[str, Any]:
        if self._result is None:
            try:
                got = json.loads(self.result_json)
            except ValueError:
                got = None
            self._result = got if isinstance(got, dict) else {}
        return self._result

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.pieces)

    @property
    def data(self) -> bytes | None:
        return b"".join(self.pieces) if self.pieces else None


class NodeCalls:
    def __init__(self, max_inflight_per_node: int = MAX_INFLIGHT_PER_NODE,
                 max_data_bytes: int = MAX_DATA_BYTES) -> None:
        self._next_id = 0
        self._waiting: dict[int, _Waiter] = {}
        self._per_node: dict[str, int] = {}
        self.max_inflight_per_node = max_inflight_per_node
        self.max_data_bytes = max_data_bytes
        self._subscribers: list[Callable[[str, nodecall_pb2.ToolEvent], None]] = []
        self.counts = {"calls": 0, "failed": 0, "late_replies": 0}

    def __len__(self) -> int:
        return len(self._waiting)

    def on_event(self, subscriber: Callable[[str, nodecall_pb2.ToolEvent], None]) -> None:
        self._subscribers.append(subscriber)

    def deliver(self, node_id: str, frame: node_pb2.NodeFrame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "tool_event":
            for sub in self._subscribers:
                sub(node_id, frame.tool_event)
            return
        reply = frame.call_reply
        waiter = self._waiting.get(reply.call_id)
        if waiter is None or waiter.node_id != node_id:
            self.counts["late_replies"] += 1
            return
        try:
            waiter.queue.put_nowait(reply)
        except asyncio.QueueFull:
            waiter.overflowed = True

    def node_gone(self, node_id: str) -> None:
        for waiter in self._waiting.values():
            if waiter.node_id == node_id:
                while waiter.queue.full():
                    waiter.queue.get_nowait()
                waiter.queue.put_nowait(None)

    async def call(self, node_id: str, tool: str, op: str, args: dict[str, Any], owner: str,
                   timeout_ms: int, send: Callable[[node_pb2.HubFrame], Awaitable[None]],
                   ) -> CallResult:
        if self._per_node.get(node_id, 0) >= self.max_inflight_per_node:
            raise CallError("RESOURCE_EXHAUSTED", "busy", f"{self.max_inflight_per_node} "
                            f"calls are in flight on node {node_id}; retry")
        self._next_id += 1
        cid = self._next_id
        waiter = self._waiting[cid] = _Waiter(node_id)
        self._per_node[node_id] = self._per_node.get(node_id, 0) + 1
        self.counts["calls"] += 1
        try:
            await send(node_pb2.HubFrame(call=nodecall_pb2.NodeCall(
                call_id=cid, tool=tool, op=op, args_json=json.dumps(args).encode(),
                owner=owner, timeout_ms=timeout_ms)))
            return await self._collect(node_id, waiter, timeout_ms / 1000 + MARGIN_S)
        except CallError:
            self.counts["failed"] += 1
            raise
        finally:
            self._waiting.pop(cid, None)
            left = self._per_node.get(node_id, 1) - 1
            if left:
                self._per_node[node_id] = left
            else:
                self._per_node.pop(node_id, None)

    async def _next(self, node_id: str, waiter: _Waiter,
                    deadline: float) -> nodecall_pb2.NodeCallReply:
        loop = asyncio.get_running_loop()
        try:
            reply = await asyncio.wait_for(waiter.queue.get(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise CallError("DEADLINE_EXCEEDED", "timeout",
                            f"node {node_id} did not answer in time") from None
        if reply is None:
            raise CallError("UNAVAILABLE", "unavailable",
                            f"node {node_id} went away during the call")
        if waiter.overflowed:
            raise CallError("INTERNAL", "internal", f"node {node_id} sent too many replies")
        return reply

    async def _collect(self, node_id: str, waiter: _Waiter, timeout_s: float) -> CallResult:
        deadline = asyncio.get_running_loop().time() + timeout_s
        first = await self._next(node_id, waiter, deadline)
        if not first.ok:
            raise CallError(_grpc_code(first.error_type), first.error_type or "internal",
                            first.error_message or "the node's tool failed")
        if not first.data_size:
            return CallResult(first.result_json)
        size = first.data_size
        if size > self.max_data_bytes:
            raise CallError("RESOURCE_EXHAUSTED", "too_large", f"a {size}-byte result is over "
                            f"the hub's {self.max_data_bytes}-byte limit")
        pieces: list[bytes] = []
        got = 0
        digest = hashlib.sha256()
        reply = first
        while True:
            if reply.data:
                if reply.data_offset != got or got + len(reply.data) > size:
                    raise CallError("INTERNAL", "internal",
                                    f"node {node_id} sent a piece out of order")
                pieces.append(reply.data)
                digest.update(reply.data)  # piece by piece, while the next ones arrive
                got += len(reply.data)
            if reply.eof:
                break
            reply = await self._next(node_id, waiter, deadline)
        if got != size or digest.hexdigest() != first.data_sha256:
            raise CallError("DATA_LOSS", "data_loss",
                            f"node {node_id}: result of {got} bytes does not match its "
                            f"size {size} / sha256")
        return CallResult(first.result_json, tuple(pieces), first.data_sha256)

_CODES = {"bad_request": "INVALID_ARGUMENT", "url_refused": "PERMISSION_DENIED",
          "ref_not_found": "NOT_FOUND", "session_not_found": "NOT_FOUND",
          "session_limit": "RESOURCE_EXHAUSTED", "busy": "RESOURCE_EXHAUSTED",
          "session_crashed": "FAILED_PRECONDITION", "page_error": "ABORTED",
          "timeout": "DEADLINE_EXCEEDED", "unavailable": "UNAVAILABLE",
          "frame_too_large": "RESOURCE_EXHAUSTED", "unknown_tool": "UNIMPLEMENTED"}


def _grpc_code(kind: str) -> str:
    return _CODES.get(kind, "INTERNAL")

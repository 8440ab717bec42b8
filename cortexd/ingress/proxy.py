"""Calls passed on, bytes as they are, to the control process's Unix socket.

A shard serving the Control port (``shard_intake``, cortexd/shards/intake.py) answers
plain submissions itself; every other call — Watch, Run, GetTask, the artifacts,
browse and workspace services, health — it relays here to the control process, which
serves the same services on ``STATE_DIR/control.sock`` (cortexd/control/localport.py).

Relayed unchanged: the request and response messages (never decoded here, so a new
method or field needs no line in this file), the caller's metadata (its bearer token:
the control process authenticates the call again, so this process is not trusted for
who the caller is), the deadline (what is left of it), cancellation (the caller's
going cancels the relayed call) and the status, details and trailing metadata. Every
method is relayed as a bidirectional stream — gRPC's wire format is the same for
unary and streaming calls, so the control process's unary handlers answer it.

Hand-written: grpcio has no proxy; the generic handler API is what it offers for one.
"""

from collections.abc import AsyncIterator
from typing import Any

import grpc

#: Metadata the transport sets itself: never copied onto the relayed call.
_TRANSPORT_KEYS = frozenset({"user-agent", "te", "content-type", "grpc-accept-encoding",
                             "grpc-encoding", "grpc-timeout"})


def relay_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ())
                 if not k.startswith(":") and k not in _TRANSPORT_KEYS)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The relay channel's options: messages as large as the Control port takes."""
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]


def _pairs(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((str(k), v) for k, v in (metadata or ()))


class Relay:
    """Relays any call to ``channel`` (the control process's socket)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.calls = 0

    def handler(self, method: str) -> "grpc.RpcMethodHandler[Any, Any]":
        async def relay(requests: AsyncIterator[bytes],
                        context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
            self.calls += 1
            remaining = context.time_remaining()
            call = self.channel.stream_stream(method, request_serializer=None,
                                              response_deserializer=None)(
                requests, metadata=relay_metadata(context),
                timeout=remaining if remaining is not None and remaining < 1e9 else None)
            try:
                # Headers first (Run names its task in them before its answer).
                if head := _pairs(await call.initial_metadata()):
                    await context.send_initial_metadata(head)
                async for response in call:
                    yield response
                if trailing := _pairs(await call.trailing_metadata()):
                    context.set_trailing_metadata(trailing)
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "", _pairs(e.trailing_metadata()))
            finally:
                call.cancel()  # the caller went (or we are done): nothing left to relay

        return grpc.stream_stream_rpc_method_handler(relay)

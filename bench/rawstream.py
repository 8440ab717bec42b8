"""The ceiling for artifact transfers: a bare grpc.aio stream of the same 1 MiB chunks.

``python -m bench.rawstream serve PORT DIR`` runs a server whose ``Up`` takes a stream of
``WriteRequest`` messages and writes their data to ``DIR/up.bin`` (``UpDurable`` also
fsyncs it at the end, as a store that keeps the blob must), and whose ``Down`` streams
``DIR/down.bin`` as ``ReadResponse`` messages: the same messages and file I/O as the
Artifacts service, without hashing, storage rows, auth or resumability.
``upload``/``download`` are the matching grpc.aio clients, used by ``bench.artifacts``.
"""

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from cortex.v1 import artifacts_pb2 as apb

CHUNK = 1 << 20
OPTIONS = [("grpc.max_receive_message_length", 4 * CHUNK),
           ("grpc.max_send_message_length", 4 * CHUNK)]


async def serve(port: int, root: Path) -> None:
    async def up(requests: AsyncIterator[apb.WriteRequest], _ctx: Any,
                 durable: bool = False) -> apb.WriteResponse:
        n = 0
        with open(root / "up.bin", "wb") as f:
            async for msg in requests:
                f.write(msg.data)
                n += len(msg.data)
            if durable:  # what a store that keeps the blob pays at the end
                f.flush()
                os.fsync(f.fileno())
        return apb.WriteResponse(committed_size=n, complete=True)

    async def up_durable(requests: AsyncIterator[apb.WriteRequest],
                         ctx: Any) -> apb.WriteResponse:
        return await up(requests, ctx, durable=True)

    async def down(_req: apb.ReadRequest, _ctx: Any) -> AsyncIterator[apb.ReadResponse]:
        offset = 0
        with open(root / "down.bin", "rb") as f:
            while data := f.read(CHUNK):
                yield apb.ReadResponse(offset=offset, data=data)
                offset += len(data)

    server = grpc.aio.server(options=OPTIONS)
    handlers = {
        "Up": grpc.stream_unary_rpc_method_handler(
            up, request_deserializer=apb.WriteRequest.FromString,
            response_serializer=apb.WriteResponse.SerializeToString),
        "UpDurable": grpc.stream_unary_rpc_method_handler(
            up_durable, request_deserializer=apb.WriteRequest.FromString,
            response_serializer=apb.WriteResponse.SerializeToString),
        "Down": grpc.unary_stream_rpc_method_handler(
            down, request_deserializer=apb.ReadRequest.FromString,
            response_serializer=apb.ReadResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("raw.Raw", handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def upload(address: str, path: Path, durable: bool = False) -> float:
    """Seconds to stream ``path`` to the raw server (``durable``: it fsyncs at the end)."""
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        call = channel.stream_unary("/raw.Raw/UpDurable" if durable else "/raw.Raw/Up",
                                    request_serializer=apb.WriteRequest.SerializeToString,
                                    response_deserializer=apb.WriteResponse.FromString)

        async def chunks() -> AsyncIterator[apb.WriteRequest]:
            offset = 0
            with open(path, "rb") as f:
                while data := f.read(CHUNK):
                    yield apb.WriteRequest(write_offset=offset, data=data)
                    offset += len(data)

        started = time.monotonic()
        await call(chunks())
        return time.monotonic() - started


async def download(address: str, dest: Path) -> float:
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        call = channel.unary_stream("/raw.Raw/Down",
                                    request_serializer=apb.ReadRequest.SerializeToString,
                                    response_deserializer=apb.ReadResponse.FromString)
        started = time.monotonic()
        with open(dest, "wb") as f:
            async for msg in call(apb.ReadRequest()):
                f.write(msg.data)
        return time.monotonic() - started


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        asyncio.run(serve(int(sys.argv[2]), Path(sys.argv[3])))

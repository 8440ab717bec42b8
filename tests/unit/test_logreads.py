"""Routing log reads on the hub (cortexd/control/logreads.py): by request id, bounded,
one request of at most 1 MiB at a time, clear errors."""

import asyncio

import pytest

from cortex.v1 import node_pb2
from cortexd.control.logreads import REQUEST_BYTES, LogReadError, LogReads


class FakeNode:
    """Answers each LogRequest from ``data`` in 64 KiB chunks, as the node would."""

    def __init__(self, reads: LogReads, data: bytes, node_id: str = "n1") -> None:
        self.reads, self.data, self.node_id = reads, data, node_id
        self.requests: list[node_pb2.LogRequest] = []

    async def send(self, frame: node_pb2.HubFrame) -> None:
        req = frame.log_request
        self.requests.append(req)
        stop = min(len(self.data), req.offset + req.length)
        offsets = list(range(req.offset, stop, 65536)) or [req.offset]
        for i, off in enumerate(offsets):
            self.reads.deliver(self.node_id, node_pb2.LogChunk(
                request_id=req.request_id, offset=off, data=self.data[off:min(stop, off + 65536)],
                eof=i == len(offsets) - 1, spooled_bytes=len(self.data)))


async def collect(reads: LogReads, node: FakeNode, offset: int, length: int) -> bytes:
    out = b""
    async for at, data in reads.read("n1", "t", 1, offset, length, node.send):
        assert at == offset + len(out)
        out += data
    return out


def test_a_long_range_is_read_one_bounded_request_at_a_time():
    async def main() -> None:
        reads = LogReads()
        data = bytes(range(256)) * 10_000  # 2,560,000 bytes
        node = FakeNode(reads, data)
        assert await collect(reads, node, 0, 0) == data
        assert [r.length for r in node.requests] == [REQUEST_BYTES] * 3
        assert len(reads) == 0  # nothing left registered
        assert await collect(reads, node, 5, 10) == data[5:15]
    asyncio.run(main())


def test_a_chunk_from_another_node_or_request_is_dropped_and_the_reader_times_out():
    async def main() -> None:
        reads = LogReads(chunk_timeout_s=0.05)

        async def send(frame: node_pb2.HubFrame) -> None:
            reads.deliver("other-node", node_pb2.LogChunk(
                request_id=frame.log_request.request_id, data=b"x", eof=True))
            reads.deliver("n1", node_pb2.LogChunk(request_id=999, data=b"x", eof=True))

        with pytest.raises(LogReadError) as e:
            async for _ in reads.read("n1", "t", 1, 0, 0, send):
                pass
        assert e.value.code == "UNAVAILABLE" and "did not answer" in str(e.value)
    asyncio.run(main())


def test_node_errors_and_detach_end_the_read_with_a_reason():
    async def main() -> None:
        reads = LogReads()

        async def pruned(frame: node_pb2.HubFrame) -> None:
            reads.deliver("n1", node_pb2.LogChunk(request_id=frame.log_request.request_id,
                                                  eof=True, error="pruned"))

        with pytest.raises(LogReadError) as e:
            async for _ in reads.read("n1", "t", 1, 0, 0, pruned):
                pass
        assert e.value.code == "NOT_FOUND" and "pruned" in str(e.value)

        async def gone(frame: node_pb2.HubFrame) -> None:
            reads.node_gone("n1")

        with pytest.raises(LogReadError) as e:
            async for _ in reads.read("n1", "t", 1, 0, 0, gone):
                pass
        assert "went away" in str(e.value)
    asyncio.run(main())

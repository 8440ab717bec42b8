"""Answering the hub's ``LogRequest``: a range of a task's spool as ``LogChunk`` frames.

docs/protocol.md, "Reading a spool". Invariants:

- One request is answered with at most ``MAX_READ_BYTES`` (1 MiB) in chunks of at most
  ``CHUNK_BYTES`` (64 KiB), in order, the last one with ``eof``; the hub asks again for
  the next range. So one request never costs the node more than 1 MiB of memory or the
  hub more than 16 queued chunks.
- A range past the spool's end is answered with one empty ``eof`` chunk; a task the node
  does not hold (never ran here, forgotten, or pruned by retention) with one ``error``
  chunk. Every chunk carries ``spooled_bytes``, the spool's end when it was read.
"""

from cortex.v1 import node_pb2
from nodeagent.errors import SpoolError
from nodeagent.retention import RetainedSpool
from nodeagent.spool import TaskSpool, read_range

CHUNK_BYTES = 64 * 1024
MAX_READ_BYTES = 1024 * 1024


def _chunk(request_id: int, *, offset: int = 0, data: bytes = b"", eof: bool = False,
           error: str = "", spooled_bytes: int = 0) -> node_pb2.NodeFrame:
    return node_pb2.NodeFrame(log_chunk=node_pb2.LogChunk(
        request_id=request_id, offset=offset, data=data, eof=eof, error=error,
        spooled_bytes=spooled_bytes))


def answer(req: node_pb2.LogRequest, live: TaskSpool | None,
           retained: RetainedSpool | None) -> list[node_pb2.NodeFrame]:
    if live is not None:
        end = live.end
    elif retained is not None:
        end = retained.size_bytes
    else:
        return [_chunk(req.request_id, eof=True, error=(
            f"no spool for task {req.task_id} attempt {req.attempt} on this node "
            "(never ran here, or pruned by the retention limits)"))]
    want = MAX_READ_BYTES if req.length == 0 else min(req.length, MAX_READ_BYTES)
    stop = min(end, req.offset + want)
    frames: list[node_pb2.NodeFrame] = []
    offset = req.offset
    try:
        while offset < stop:
            n = min(CHUNK_BYTES, stop - offset)
            if live is not None:
                data = live.read(offset, n)
            else:
                assert retained is not None
                data = read_range(retained.path, offset, n)
            if not data:
                break
            frames.append(_chunk(req.request_id, offset=offset, data=data,
                                 spooled_bytes=end))
            offset += len(data)
    except SpoolError as e:
        return [_chunk(req.request_id, eof=True, error=str(e))]
    if frames:
        frames[-1].log_chunk.eof = True
    else:
        frames.append(_chunk(req.request_id, offset=req.offset, eof=True, spooled_bytes=end))
    return frames

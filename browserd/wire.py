"""Frames on browserd's socket: a 4-byte big-endian length, then one msgpack map.

- client → browserd: ``{"id": int, "op": str, "args": map}``
- browserd → client: ``{"id": int, "ok": true, "result": map}``, or
  ``{"id": int, "ok": false, "error": {"type", "message", "details"}}``

Binary results (screenshots, HTML, recordings) are msgpack bin inline, or, above the
handoff threshold, ``{"shm": path, "size": n, "sha256": hex}`` (browserd/shm.py).
Invariants: a frame is at most ``max_frame_bytes`` (both sides refuse a larger one before
reading it); the body must decode to a map; ids are chosen by the client and echoed, so
several calls may be in flight on one connection.
"""

import asyncio
import struct
from typing import Any

import msgpack

from browserd.errors import BadRequest, FrameTooLarge

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024


def encode(message: dict[str, Any], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over the {max_frame_bytes} cap",
                            {"size": len(body), "max": max_frame_bytes})
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise BadRequest(f"undecodable frame: {e}") from e
    if not isinstance(message, dict):
        raise BadRequest("a frame must be a map")
    return message


async def read_frame(reader: asyncio.StreamReader,
                     max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream (between frames)."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    (size,) = HEADER.unpack(header)
    if size > max_frame_bytes:
        raise FrameTooLarge(f"peer announced a {size}-byte frame, over the {max_frame_bytes} cap",
                            {"size": size, "max": max_frame_bytes})
    return decode(await reader.readexactly(size))

"""The framing between the agent and a task's worker process (:mod:`nodeagent.worker`).

One ``AF_UNIX`` stream socket per task. A frame is a big-endian ``u32`` length and a
msgpack map (bytes as msgpack ``bin``; never pickle), at most :data:`MAX_FRAME_BYTES`.
Every map has ``t``, its type:

- agent → worker: ``spec`` (first and once), ``in`` {d}, ``cancel`` {kind, reason},
  ``kill`` {kind, reason};
- worker → agent: ``started`` {pid} (carries the PTY master as ``SCM_RIGHTS``, for the
  prompt detector's kernel check), ``out`` {d} in PTY order, then exactly one of ``exit``
  {code, kind, reason} (after the last ``out``: drain before done) or ``error`` {reason}
  (the task could not be started; nothing ran).

EOF means the peer is gone: the worker then kills its task; the agent kills the task's
tree and cgroup itself and reports it ``LOST``.
"""

import struct
from typing import Any

import msgpack

from nodeagent.errors import NodeAgentError

MAX_FRAME_BYTES = 1024 * 1024 + 4096  # an output chunk is at most 64 KiB; input 1 MiB
_LEN = struct.Struct(">I")


class FrameError(NodeAgentError):
    """The peer sent a frame that is too big or not a msgpack map with a type."""


def encode(msg: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(msg, use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _LEN.pack(len(body)) + body


class FrameReader:
    """Bytes in, whole frames out (sans-IO)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(self._buf)
            if size > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
            if len(self._buf) < _LEN.size + size:
                break
            body = bytes(self._buf[_LEN.size:_LEN.size + size])
            del self._buf[:_LEN.size + size]
            try:
                msg = msgpack.unpackb(body, raw=False)
            except (ValueError, msgpack.UnpackException) as e:
                raise FrameError(f"bad frame: {e}") from e
            if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                raise FrameError("frame is not a map with a type")
            out.append(msg)
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

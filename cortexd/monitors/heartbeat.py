"""A child's proof of life in shared memory: one 8-byte counter in a mapped file.

The monitor process advances it every :data:`BEAT_S`; the supervisor reads it
(like a shard's ring heartbeat) and kills a monitor process whose counter has not
moved for ``child_timeout_s``. The supervisor creates and unlinks the file; its name
matches the start-up sweep of stale segments (``cortex-<pid>-s…``).
"""

import mmap
import os
import struct
from pathlib import Path

BEAT_S = 0.5
_SIZE = 8


def beat_path(prefix: Path, index: int) -> Path:
    return Path(f"{prefix}-smonitor{index}.beat")


class Heartbeat:
    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    @property
    def value(self) -> int:
        return int(struct.unpack_from("<Q", self._map, 0)[0])

    def beat(self) -> None:
        struct.pack_into("<Q", self._map, 0, (self.value + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    def close(self) -> None:
        self._map.close()

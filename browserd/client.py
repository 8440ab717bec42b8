"""An async client of browserd's socket (the node agent, the tests and the benches use it).

Several calls may be in flight on one connection (ids are matched); a result's ``data``
that came through /dev/shm is taken (mapped, unlinked) before it is returned: as verified
``bytes``, or, for a ``zero_copy`` client (the node agent), as a read-only ``memoryview``
of the mapping with ``result["handoff"]["sha256"]`` the writer's digest, not re-hashed.
A lost connection fails every pending call with :class:`Unavailable`; ``on_lost`` is
called once.
"""

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browserd import shm, wire
from browserd.errors import BrowserdError, OpTimeout, Unavailable, from_wire


class BrowserdClient:
    def __init__(self, socket_path: Path, max_frame_bytes: int = 64 * 1024 * 1024,
                 shm_dir: Path = shm.DEFAULT_DIR, zero_copy: bool = False) -> None:
        self.socket_path = socket_path
        self.zero_copy = zero_copy
        self.max_frame_bytes = max_frame_bytes
        self.shm_dir = shm_dir
        self.on_lost: Callable[[], None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(
                str(self.socket_path), limit=2 ** 20)
        except OSError as e:
            raise Unavailable(f"browserd is not serving {self.socket_path}: {e.strerror}") from e
        self._task = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_all("client closed")

    def _fail_all(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"browserd connection lost: {why}"))
        self._pending.clear()

    async def _read(self) -> None:
        assert self._reader is not None
        why = "browserd closed the connection"
        try:
            while True:
                msg = await wire.read_frame(self._reader, self.max_frame_bytes)
                if msg is None:
                    break
                fut = self._pending.pop(msg.get("id", 0), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (OSError, asyncio.IncompleteReadError, BrowserdError) as e:
            why = str(e) or type(e).__name__
        finally:
            self._fail_all(why)
            if self.on_lost is not None:
                self.on_lost()

    async def call(self, op: str, timeout_s: float = 120.0, **args: Any) -> dict[str, Any]:
        if not self.connected or self._writer is None:
            raise Unavailable("not connected to browserd")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(wire.encode({"id": rid, "op": op, "args": args},
                                           self.max_frame_bytes))
            await self._writer.drain()
            msg = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise OpTimeout(f"browserd did not answer {op} within {timeout_s:g} s") from None
        except OSError as e:
            raise Unavailable(f"browserd connection lost: {e}") from e
        finally:
            self._pending.pop(rid, None)
        if not msg.get("ok"):
            raise from_wire(msg.get("error"))
        result: dict[str, Any] = msg.get("result") or {}
        if shm.is_ref(result.get("data")):
            ref = result["data"]
            if self.zero_copy:  # a map and an unlink: no thread hop for that
                result["data"] = shm.take_view(ref, self.shm_dir)
            else:
                result["data"] = await asyncio.to_thread(shm.take, ref, self.shm_dir)
            result["handoff"] = {"size": ref["size"], "sha256": ref["sha256"]}
        return result

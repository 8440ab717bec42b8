"""browserd's socket server: frames in, one task per request, answers out.

Invariants:
- The socket is created mode 0600 in a directory we own; a stale socket file of a dead
  browserd is replaced, a live one is refused (exit 4: another browserd serves it).
- At most ``max_connections`` connections and ``max_inflight_per_connection`` requests
  in flight on each; a frame over ``max_frame_bytes`` ends that connection with a
  ``frame_too_large`` error (the stream cannot be resynchronised).
- Calls on one session are serialised by the session's lock; calls on different
  sessions run concurrently. An op that fails answers a typed error and browserd
  carries on; only the op's own session can be affected.
- A call naming an ``owner`` reaches only that owner's sessions (the node agent passes
  the hub's caller; ``*`` is an admin); a call without one is a local operator's.
- A ``data`` result above ``shm_threshold_bytes`` goes through /dev/shm (browserd/shm.py)
  named for the peer's pid (SO_PEERCRED), unless the call asked ``inline``.
"""

import asyncio
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from browserd import actions, shm, wire
from browserd.config import BrowserdSettings
from browserd.errors import BadRequest, BrowserdError, FrameTooLarge, SessionNotFound
from browserd.session import BrowserSession
from browserd.table import SessionTable

SESSION_OPS = ("navigate", "snapshot", "click", "type", "select", "hover", "press", "scroll",
               "eval", "screenshot", "html", "console", "network", "downloads", "record.start",
               "record.stop", "steps")


class SocketInUse(BrowserdError):
    code = "socket_in_use"


def peer_pid(sock: socket.socket | None) -> int:
    if sock is None:
        return 0
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def prepare_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: a dead browserd's socket
        else:
            raise SocketInUse(f"another browserd serves {path}")
        finally:
            probe.close()


def _owns(owner: Any, s: BrowserSession) -> bool:
    """No owner (a local caller) or "*" (an admin through the hub) sees every session."""
    return owner is None or owner == "*" or owner == s.owner


def _check_owner(owner: Any, s: BrowserSession) -> None:
    if not _owns(owner, s):  # the same answer as for no session: nothing leaks
        raise SessionNotFound(f"no session {s.id}", {"session": s.id})


class BrowserdServer:
    def __init__(self, settings: BrowserdSettings, table: SessionTable, log: Any) -> None:
        self.settings = settings
        self.table = table
        self.log = log
        self.connections = 0
        self.requests = 0
        self.errors = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        prepare_socket(self.settings.socket_path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve,
                                                           path=str(self.settings.socket_path))
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                self.settings.socket_path.unlink()
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.settings.max_connections:
            writer.write(wire.encode({"id": 0, "ok": False, "error": BrowserdError(
                "too many connections").to_wire()}))
            writer.close()
            return
        self.connections += 1
        pid = peer_pid(writer.get_extra_info("socket"))
        slots = asyncio.Semaphore(self.settings.max_inflight_per_connection)
        write_lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def answer(message: dict[str, Any]) -> None:
            try:
                frame = wire.encode(message, self.settings.max_frame_bytes)
            except FrameTooLarge as e:
                frame = wire.encode({"id": message.get("id", 0), "ok": False,
                                     "error": e.to_wire()})
            async with write_lock:
                writer.write(frame)
                await writer.drain()

        async def handle(req: dict[str, Any]) -> None:
            try:
                await answer(await self.call(req, pid))
            except (ConnectionError, RuntimeError):
                pass
            finally:
                slots.release()

        try:
            while True:
                try:
                    req = await wire.read_frame(reader, self.settings.max_frame_bytes)
                except BrowserdError as e:
                    await answer({"id": 0, "ok": False, "error": e.to_wire()})
                    break
                if req is None:
                    break
                await slots.acquire()
                t = asyncio.create_task(handle(req))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            for t in tasks:
                t.cancel()
            writer.close()

    async def call(self, req: dict[str, Any], pid: int) -> dict[str, Any]:
        rid = req.get("id", 0)
        self.requests += 1
        started = time.monotonic()
        try:
            op = req.get("op")
            args = req.get("args") or {}
            if not isinstance(op, str) or not isinstance(args, dict):
                raise BadRequest("a request needs op (string) and args (map)")
            result = await self._dispatch(op, args)
            if isinstance(result.get("data"), bytes) and not args.get("inline") and pid \
                    and len(result["data"]) > self.settings.shm_threshold_bytes:
                result["data"] = await asyncio.to_thread(shm.put, result["data"], pid,
                                                         self.settings.shm_dir)
            return {"id": rid, "ok": True, "result": result}
        except BrowserdError as e:
            self.errors += 1
            self.log.info("op_failed", op=req.get("op"), error=e.code, message=str(e)[:300],
                          ms=round((time.monotonic() - started) * 1000, 1))
            return {"id": rid, "ok": False, "error": e.to_wire()}
        except Exception as e:  # noqa: BLE001 - a bug in one op must not end browserd
            self.errors += 1
            self.log.exception("op_crashed", op=req.get("op"))
            return {"id": rid, "ok": False, "error": BrowserdError(
                f"internal error in {req.get('op')}: {type(e).__name__}: {e}"[:2000]).to_wire()}

    async def _dispatch(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        t = self.table
        if op == "ping":
            return {"pid": os.getpid(), **t.stats()}
        if op == "session.create":
            owner = args.get("owner", "")
            if not isinstance(owner, str) or len(owner) > 200 or owner == "*":
                raise BadRequest("owner must be a string of at most 200 characters")
            if args.get("session") is not None:
                _check_owner(owner, t.get(args["session"]))
            s = await t.create(owner, args.get("session"))
            out = s.describe()
            if args.get("url"):
                async with s.lock:
                    out["navigate"] = await actions.navigate(s, args)
            return out
        owner = args.get("owner")
        if op == "session.list":
            return {"sessions": [s.describe() for s in t.sessions.values()
                                 if _owns(owner, s)]}
        if op == "session.close":
            _check_owner(owner, t.get(args.get("session")))
            return await t.close(args.get("session"))
        if op in SESSION_OPS:
            s = t.get(args.get("session"))
            _check_owner(owner, s)
            async with s.lock:
                return await self._session_op(s, op, args)
        raise BadRequest(f"unknown op {op!r}")

    async def _session_op(self, s: BrowserSession, op: str,
                          args: dict[str, Any]) -> dict[str, Any]:
        simple: dict[str, Callable[[BrowserSession, dict[str, Any]],
                                   Awaitable[dict[str, Any]]]] = {
            "navigate": actions.navigate, "snapshot": actions.snapshot,
            "eval": actions.evaluate, "screenshot": actions.screenshot, "html": actions.html,
            "steps": actions.steps}
        if op in simple:
            return await simple[op](s, args)
        if op in ("click", "type", "select", "hover", "press", "scroll"):
            return await actions.act(s, op, args)
        if op == "console":
            return actions.console(s, args)
        if op == "network":
            return actions.network(s, args)
        if op == "downloads":
            s.live_page()
            return {"downloads": list(s.downloads)}
        return await actions.record(s, op)

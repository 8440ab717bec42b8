"""The ``browser`` tool of a node: the hub's ``NodeCall``s answered by the local browserd.

browserd is found on ``--browserd-socket``; with ``--browserd-start`` the agent starts it
itself (``browserd --socket S --state-dir STATE/browserd``) and starts it again when it
exits, else systemd runs it. The node advertises it as the ``browser`` entry of
``Hello.tools`` (the tool registry's field; the hub's label ``cortex.tool/browser``), but
it is not a task runner: its work arrives as ``NodeCall``s, never as tasks. Invariants:

- At most :data:`MAX_INFLIGHT` calls at once; one more is answered ``busy`` at once.
- Every call is answered exactly once with ``ok`` or an error (``unavailable`` when
  browserd is not connected), then, for a binary result, the data in pieces of
  :data:`CHUNK` bytes, the last with ``eof`` (the hub checks size and sha256).
- The owner the hub names (from the caller's credential) is passed to browserd with every
  call, and browserd refuses another owner's session.
- The sessions opened through this connection are remembered; when the connection to
  browserd is lost (it crashed or was killed), they are reported to the hub as
  ``ToolEvent{sessions_lost}`` and the agent reconnects (to the new browserd) with backoff.
- Recordings: a ``record.stop`` or ``session.close`` result that names recording files
  gets ``uploads`` (file, sha256, size) added; the hub grants them and calls
  ``artifact.upload``, which this agent answers itself by uploading that file (only a
  file browserd named, never a path from the hub) through its artifact client
  (nodeagent/artifacts.py) under the name the hub chose.
"""

import asyncio
import contextlib
import hashlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cortex
from browserd.client import BrowserdClient
from browserd.errors import BrowserdError
from cortex.digests import file_sha256
from cortex.v1 import node_pb2, nodecall_pb2, tool_pb2

TOOL = "browser"
MAX_INFLIGHT = 16
CHUNK = 256 * 1024
MAX_SESSIONS_REMEMBERED = 4096
CONNECT_BACKOFF_S = (0.05, 2.0)
MAX_RECORDINGS_REMEMBERED = 1024


class Uploader(Protocol):
    async def upload(self, task_id: str, path: Path, sha: str, size: int,
                     name: str = "") -> None: ...


def reply(call_id: int, **fields: Any) -> node_pb2.NodeFrame:
    return node_pb2.NodeFrame(call_reply=nodecall_pb2.NodeCallReply(call_id=call_id, **fields))


def data_frames(call_id: int, result: dict[str, Any], data: bytes | memoryview,
                sha256: str = "") -> list[node_pb2.NodeFrame]:
    """The reply and its data in pieces of CHUNK bytes; each piece is the one copy of the
    bytes here (protobuf takes bytes), cut straight from a handoff's mapping. ``sha256``
    is browserd's digest of a handoff (checked at the hub), else computed here."""
    size = len(data)
    digest = sha256 or (hashlib.sha256(data).hexdigest() if size else "")
    frames = [reply(call_id, ok=True, result_json=json.dumps(result).encode(),
                    data=bytes(data[:CHUNK]), data_offset=0, data_size=size,
                    data_sha256=digest, eof=size <= CHUNK)]
    for offset in range(CHUNK, size, CHUNK):
        frames.append(reply(call_id, data=bytes(data[offset:offset + CHUNK]),
                            data_offset=offset, eof=offset + CHUNK >= size))
    return frames


class BrowserTool:
    def __init__(self, socket_path: Path, state_dir: Path, start: bool,
                 queue: Callable[[node_pb2.NodeFrame], None], log: Any,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.socket_path = socket_path
        self.state_dir = state_dir
        self.start_browserd = start
        self.extra_args = extra_args
        self._queue = queue
        self._log = log
        self.client: BrowserdClient | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.sessions: set[str] = set()
        self.uploader: Uploader | None = None  # the agent's artifact client (--control)
        self.recordings: dict[tuple[str, str], Path] = {}  # (session, file) browserd named
        self.inflight = 0
        self.counts = {"calls": 0, "busy": 0, "lost_sessions": 0, "browserd_starts": 0}
        self._lost = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    @property
    def pids(self) -> set[int]:
        """The browserd child this agent waits on itself (the orphan reaper leaves it)."""
        return {self.proc.pid} if self.proc is not None and self.proc.returncode is None \
            else set()

    def tool_info(self) -> tool_pb2.ToolInfo:
        """The ``browser`` entry of Hello.tools: the hub labels the node
        ``cortex.tool/browser`` and ``Browse.Open`` places sessions by it."""
        return tool_pb2.ToolInfo(name=TOOL, version=cortex.__version__,
                                 input_schema_json='{"type": "object"}')

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        if self.client is not None:
            await self.client.close()
        await self._stop_child()

    async def _stop_child(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def _spawn(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = open(self.state_dir / "browserd.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "browserd", "--socket", str(self.socket_path),
                "--state-dir", str(self.state_dir), *self.extra_args,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        self.counts["browserd_starts"] += 1
        self._log.info("browserd_started", pid=self.proc.pid, socket=str(self.socket_path))

    async def _run(self) -> None:
        delay = CONNECT_BACKOFF_S[0]
        while True:
            if self.start_browserd and (self.proc is None or self.proc.returncode is not None):
                if self.proc is not None:
                    self._log.warning("browserd_exited", code=self.proc.returncode)
                await self._spawn()
            client = BrowserdClient(self.socket_path, zero_copy=True)
            try:
                await client.connect()
                await client.call("ping", timeout_s=10)
            except BrowserdError:
                await client.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_BACKOFF_S[1])
                continue
            delay = CONNECT_BACKOFF_S[0]
            self._lost.clear()
            client.on_lost = self._lost.set
            self.client = client
            self._log.info("browserd_connected", socket=str(self.socket_path))
            await self._lost.wait()
            self.client = None
            await client.close()
            self._report_lost("browserd connection lost (browserd exited or was killed)")

    def _report_lost(self, reason: str) -> None:
        if not self.sessions:
            return
        lost = sorted(self.sessions)
        self.sessions.clear()
        self.counts["lost_sessions"] += len(lost)
        self._log.warning("browser_sessions_lost", sessions=len(lost), reason=reason)
        with contextlib.suppress(Exception):  # a full control queue: the hub's calls fail
            self._queue(node_pb2.NodeFrame(tool_event=nodecall_pb2.ToolEvent(
                tool=TOOL, kind="sessions_lost", sessions=lost, reason=reason)))

    def on_call(self, call: nodecall_pb2.NodeCall) -> None:
        if call.tool != TOOL:
            self._queue(reply(call.call_id, ok=False, eof=True, error_type="unknown_tool",
                              error_message=f"this node has no tool {call.tool!r}"))
            return
        if self.inflight >= MAX_INFLIGHT:
            self.counts["busy"] += 1
            self._queue(reply(call.call_id, ok=False, eof=True, error_type="busy",
                              error_message=f"{MAX_INFLIGHT} browser calls are in flight"))
            return
        self.inflight += 1
        self.counts["calls"] += 1
        t = asyncio.create_task(self._answer(call))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _answer(self, call: nodecall_pb2.NodeCall) -> None:
        try:
            for frame in await self._frames(call):
                self._queue(frame)
        except Exception as e:  # noqa: BLE001 - a full queue: the hub's call times out
            self._log.warning("browser_reply_dropped", error=str(e)[:200])
        finally:
            self.inflight -= 1

    async def _frames(self, call: nodecall_pb2.NodeCall) -> list[node_pb2.NodeFrame]:
        client = self.client
        try:
            args = json.loads(call.args_json or b"{}")
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except ValueError:
            return [reply(call.call_id, ok=False, eof=True, error_type="bad_request",
                          error_message="args_json must be a JSON object")]
        if call.op == "artifact.upload":
            return [await self._upload(call.call_id, args)]
        if client is None or not client.connected:
            return [reply(call.call_id, ok=False, eof=True, error_type="unavailable",
                          error_message="browserd is not running on this node")]
        args["owner"] = call.owner
        timeout_s = (call.timeout_ms or 60_000) / 1000 + 2
        try:
            result = await client.call(call.op, timeout_s=timeout_s, **args)
        except BrowserdError as e:
            return [reply(call.call_id, ok=False, eof=True, error_type=e.code,
                          error_message=str(e)[:4000])]
        if call.op == "session.create" and len(self.sessions) < MAX_SESSIONS_REMEMBERED:
            self.sessions.add(str(result.get("session", "")))
        elif call.op == "session.close":
            self.sessions.discard(str(args.get("session", "")))
        if call.op in ("record.stop", "session.close"):
            await self._note_recordings(str(args.get("session", "")), result)
        data = result.pop("data", None)
        handoff = result.pop("handoff", None) or {}
        if not isinstance(data, bytes | memoryview):
            data = b""
        try:
            return data_frames(call.call_id, result, data, str(handoff.get("sha256", "")))
        finally:
            if isinstance(data, memoryview):
                data.release()  # the handoff's pages go now, not at the next collection

    async def _note_recordings(self, sid: str, result: dict[str, Any]) -> None:
        """Remember the recording files browserd named and add ``uploads`` for the hub."""
        paths = [p for p in result.get("artifacts", []) if isinstance(p, str)]
        if isinstance(result.get("path"), str):
            paths.append(result["path"])
        uploads = []
        for p in dict.fromkeys(paths):
            path = Path(p)
            if path.parent.name != "recordings" or not path.is_file():
                continue  # downloads stay in the session; recordings are collected
            try:
                sha, size = await asyncio.to_thread(file_sha256, path)
            except OSError:
                continue
            if len(self.recordings) >= MAX_RECORDINGS_REMEMBERED:
                self.recordings.pop(next(iter(self.recordings)))
            self.recordings[(sid, path.name)] = path
            uploads.append({"file": path.name, "sha256": sha, "size": size})
        if uploads:
            result["uploads"] = uploads

    async def _upload(self, call_id: int, args: dict[str, Any]) -> node_pb2.NodeFrame:
        path = self.recordings.get((str(args.get("session", "")), str(args.get("file", ""))))
        if path is None:
            return reply(call_id, ok=False, eof=True, error_type="not_found",
                         error_message="no recording of that name from browserd")
        if self.uploader is None:
            return reply(call_id, ok=False, eof=True, error_type="unavailable",
                         error_message="this node has no artifact link (nodeagent --control)")
        name, sha = str(args.get("name", "")), str(args.get("sha256", ""))
        try:
            await self.uploader.upload("", path, sha, int(args.get("size", 0)), name=name)
        except Exception as e:  # noqa: BLE001 - ArtifactFailure, OSError: said to the hub
            return reply(call_id, ok=False, eof=True, error_type="upload_failed",
                         error_message=str(e)[:2000])
        self._log.info("browser_recording_uploaded", name=name, sha256=sha)
        return reply(call_id, ok=True, eof=True,
                     result_json=json.dumps({"name": name, "sha256": sha}).encode())

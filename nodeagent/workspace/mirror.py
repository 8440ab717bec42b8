"""The node's workspace copies: follow the hub's attachments, sync each on change.

``WorkspaceMirror`` keeps one ``Follow`` stream to the hub's Control port (reconnecting
with a capped backoff: a node offline during edits catches up by a round as soon as it
is back). The stream says which workspaces are attached here and at which path, and
pokes a workspace when its hub tree changed or an operator asked ``sync``. Each
attachment has one ``CopySync``: a watcher on the copy (inotify, polling as fallback,
``cortex/wswatch.py``) and the hub's pokes both set one trigger; one round at a time
runs (``rounds.py``) and a trigger during a round makes one more. A rescan every
``RESCAN_S`` covers a watch that missed something.

A task that runs in a workspace waits in :meth:`WorkspaceMirror.current` for a round
that **started** after it asked: rounds are numbered as they start (``started``) and
``completed`` is the number of the last one that ended well, so a round already under
way when the task arrived (whose plan may predate the hub's latest edit) never counts.
"""

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import grpc

from cortex import tls
from cortex.tokens import bearer
from cortex.v1 import workspace_pb2 as wpb
from cortex.v1 import workspace_pb2_grpc
from cortex.wstree import TreeScanner, sweep_scratch
from cortex.wswatch import changes
from nodeagent.config import AgentConfig
from nodeagent.workspace.rounds import RoundResult, run_round

RESCAN_S = 30.0
ATTACH_WAIT_S = 5.0  # current(): how long an attachment may trail the task
MAX_MESSAGE = 4 << 20


class CopySync:
    def __init__(self, mirror: "WorkspaceMirror", name: str, path: Path) -> None:
        self.mirror = mirror
        self.name = name
        self.root = path
        self.scanner = TreeScanner(path)
        self.trigger = asyncio.Event()
        self.stop = asyncio.Event()
        self.rounds = 0
        self.started = 0  # rounds begun (each one's number)
        self.completed = 0  # the number of the last round that ended well
        self.last: RoundResult | None = None
        self.done = asyncio.Event()  # set (and replaced) after each round that ended well
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_scratch(self.root)
        self.trigger.set()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._rounds()), loop.create_task(self._watch())]

    async def close(self) -> None:
        self.stop.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                async for _ in changes(self.root, self.stop):
                    self.trigger.set()
            except Exception as e:
                self.mirror.log.warning("workspace_watch_failed", workspace=self.name,
                                        error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 2.0)

    async def _rounds(self) -> None:
        failures = 0
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.trigger.wait(), RESCAN_S)
            self.trigger.clear()
            if not self.mirror.online:
                await self.mirror.online_event.wait()
            t0 = time.monotonic()
            self.started += 1
            number = self.started
            try:
                res = await run_round(self.mirror.stub, self.mirror.md, self.name, self.root,
                                      self.scanner, self.mirror.staging / self.name)
            except (grpc.RpcError, OSError) as e:
                failures += 1
                self.mirror.log.warning("workspace_round_failed", workspace=self.name,
                                        error=str(e)[:300])
                self.trigger.set()
                await asyncio.sleep(min(5.0, 0.2 * 2 ** failures))
                continue
            failures = 0
            self.rounds += 1
            self.completed = number
            self.last = res
            if res.to_node or res.to_hub or res.conflicts or res.failed:
                self.mirror.log.info(
                    "workspace_round", workspace=self.name, to_node=res.to_node,
                    applied=res.applied, failed=res.failed, to_hub=res.to_hub,
                    conflicts=res.conflicts, pushed=res.pushed_bytes,
                    pulled=res.pulled_bytes, hashed=self.scanner.hashed,
                    ms=int((time.monotonic() - t0) * 1000))
            if res.failed:
                self.trigger.set()
            self.done.set()
            self.done = asyncio.Event()


class WorkspaceMirror:
    def __init__(self, config: AgentConfig, token: str, log: Any) -> None:
        self.log = log
        self.staging = config.state_dir / "workspaces" / "staging"
        options = [("grpc.max_receive_message_length", MAX_MESSAGE),
                   ("grpc.max_send_message_length", MAX_MESSAGE)]
        if config.tls.enabled:
            self.channel = grpc.aio.secure_channel(
                config.control_address, tls.channel_credentials(config.tls), options)
        else:
            self.channel = grpc.aio.insecure_channel(config.control_address, options)
        self.stub = workspace_pb2_grpc.WorkspacesStub(self.channel)  # type: ignore[no-untyped-call]
        self.md = bearer(token)
        self.copies: dict[str, CopySync] = {}
        self.attachments_changed = asyncio.Event()  # set (and replaced) on each change
        self.online = False
        self.online_event = asyncio.Event()  # set while online
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for c in list(self.copies.values()):
            await c.close()
        await self.channel.close(None)

    async def _follow(self) -> None:
        failures = 0
        while True:
            try:
                async for ev in self.stub.Follow(wpb.FollowRequest(), metadata=self.md):
                    if not self.online:
                        self.online = True
                        self.online_event.set()
                        failures = 0
                        for c in self.copies.values():
                            c.trigger.set()  # catch up on what changed while away
                    if ev.attachments_changed:
                        await self._set_attachments({a.workspace: a.path
                                                     for a in ev.attachments})
                    if ev.poke and ev.poke in self.copies:
                        self.copies[ev.poke].trigger.set()
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.aio.AioRpcError) else None
                if failures == 0 or failures % 20 == 0:
                    self.log.warning("workspace_follow_lost", code=code.name if code else "",
                                     failures=failures)
            if self.online:  # a new event only on going offline: waiters hold the current one
                self.online = False
                self.online_event = asyncio.Event()
            failures += 1
            await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))

    async def _set_attachments(self, wanted: dict[str, str]) -> None:
        for name in list(self.copies):
            if wanted.get(name) != str(self.copies[name].root):
                await self.copies.pop(name).close()  # its copy stays as it is
                self.log.info("workspace_detached", workspace=name)
        for name, path in wanted.items():
            if name not in self.copies:
                c = self.copies[name] = CopySync(self, name, Path(path))
                c.start()
                self.log.info("workspace_attached", workspace=name, path=path)
        self.attachments_changed.set()
        self.attachments_changed = asyncio.Event()

    def poke(self, name: str) -> None:
        """Run a round of ``name`` soon (a task in it ended)."""
        c = self.copies.get(name)
        if c is not None:
            c.trigger.set()

    async def current(self, name: str, timeout_s: float = 60.0) -> Path:
        """The root of ``name``'s copy once a round that started after this call has
        ended well (a task's start). LookupError: not attached here (after waiting up to
        ``ATTACH_WAIT_S`` for the hub's word, which may trail the task's envelope);
        TimeoutError: no such round within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        attach_by = loop.time() + min(ATTACH_WAIT_S, timeout_s)
        while (c := self.copies.get(name)) is None:
            left = attach_by - loop.time()
            if left <= 0:
                raise LookupError(f"workspace {name!r} is not attached on this node")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.attachments_changed.wait(), left)
        after = c.started  # a round under way now may have planned before the task came
        c.trigger.set()
        while c.completed <= after:
            if self.copies.get(name) is not c:
                raise LookupError(f"workspace {name!r} was detached from this node")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no sync round of workspace {name!r} ended within "
                                   f"{timeout_s:g} s" + ("" if self.online else
                                                         " (the hub is out of reach)"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.done.wait(), min(left, 1.0))
        return c.root

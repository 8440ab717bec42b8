"""Workspaces (issue 12, "ghost mirror"): the hub's trees, kept in sync with node copies.

``open_workspaces`` builds the records (the hub's own store: SQLite or PostgreSQL), the
hub side (``hub.py``) and the gRPC service; ``watch_trees`` pokes the attached nodes when
a hub tree changes (an agent edits it), so a change reaches them within a second or two;
``gc.py`` collects the blobs nothing needs any more.
"""

import asyncio
import contextlib
from typing import Any

from cortex import logs
from cortex.wswatch import changes
from cortexd.config import Settings
from cortexd.ingress.auth import Authenticator
from cortexd.workspaces.gc import run_collector
from cortexd.workspaces.hub import Workspace, WorkspaceHub
from cortexd.workspaces.records import WorkspaceRecords
from cortexd.workspaces.service import WorkspacesService

__all__ = ["WorkspaceHub", "WorkspacesService", "open_workspaces", "TreeWatchers"]


class TreeWatchers:
    """One watcher task per hub tree; a change not written by a commit pokes the nodes."""

    def __init__(self, hub: WorkspaceHub) -> None:
        self.hub = hub
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.log = logs.get()

    def start(self, ws: Workspace) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(self._watch(ws)))

    async def _watch(self, ws: Workspace) -> None:
        while not self.stop.is_set():
            try:
                async for paths in changes(ws.root, self.stop):
                    if paths <= ws.written:
                        ws.written = set()
                        continue
                    self.hub.poke(ws)
            except Exception as e:  # a watch that cannot run: poll by rescans instead
                self.log.warning("workspace_watch_failed", workspace=ws.name, error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 2.0)
            self.hub.poke(ws)

    async def close(self) -> None:
        self.stop.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def open_workspaces(settings: Settings,
                          auth: Authenticator) -> tuple[WorkspacesService, TreeWatchers]:
    records = WorkspaceRecords(settings.store_url)
    await records.open()
    hub = WorkspaceHub(records, settings.state_dir / "workspaces", logs.get())
    watchers = TreeWatchers(hub)
    hub.on_new_workspace = watchers.start
    await hub.load()
    # The blob collector (gc.py) ends with the watchers.
    watchers.tasks.append(asyncio.get_running_loop().create_task(run_collector(hub)))
    return WorkspacesService(hub, auth), watchers


async def close_workspaces(service: WorkspacesService, watchers: Any) -> None:
    await watchers.close()
    await service.hub.records.close()

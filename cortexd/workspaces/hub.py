"""The hub's side of the workspaces: its trees, the attachments, the sync rounds.

A **round** is driven by one node for one attachment: ``plan`` (the node's tree in; the
hub scans its own tree, incrementally, and merges three-way against the attachment's
synced state with ``cortex/wsmerge.plan``), then the node pushes the blobs the hub
lacks and applies its own actions, then ``commit`` (the hub applies its actions).

The synced state (the base) only ever records what **both sides had at once**, path by
path: at ``plan``, paths that are equal on both sides; at ``commit``, each action the hub
applied and each node action the node did not report as failed. So a crash anywhere
(hub kill -9 between plan and commit, a node that vanishes) loses nothing: the next
round sees the sides equal (the base catches up) or still different (the action is
planned again); it never mistakes a change for a deletion.

Each hub action is applied only if the hub's path still holds what it held at plan
time (else it waits for the next round), with atomic writes; one asyncio lock per
workspace serialises plans and commits of all its nodes. Conflicts are recorded once
per (path, hub version, node version), both versions stay where they are and the node's
version is pushed to the hub's blobs as well; ``resolve`` rewrites the base so the next
round carries the chosen side over, after keeping the losing hub version as a blob.
"""

import asyncio
import itertools
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.v1 import workspace_pb2 as wpb
from cortex.wsmerge import FILE, Action, Entry, WorkspacePathError, plan, tree_digest
from cortex.wstree import TreeScanner, apply_entry, remove_entry, sweep_scratch
from cortexd.workspaces.blobs import BlobDir
from cortexd.workspaces.records import AttachmentRow, ConflictRow, WorkspaceRecords


class WorkspaceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Round:
    id: int
    plan_seq: int
    hub: dict[str, Entry]
    to_hub: list[Action]
    to_node: list[Action]


@dataclass(slots=True)
class Attachment:
    row: AttachmentRow
    base: dict[str, Entry] | None = None
    round: Round | None = None
    plans: int = 0
    committed_plan: int = 0
    rounds: int = 0
    synced_ms: int = 0
    node_digest: str = ""
    refused: list[str] = field(default_factory=list)
    pending: int = 0
    open: dict[str, ConflictRow] = field(default_factory=dict)
    committed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class Workspace:
    owner: str
    name: str
    created_ms: int
    root: Path
    scanner: TreeScanner
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    attachments: dict[str, Attachment] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)  # paths the last commit wrote


class WorkspaceHub:
    def __init__(self, records: WorkspaceRecords, data_dir: Path, log: Any) -> None:
        self.records = records
        self.data_dir = data_dir
        self.blob_root = data_dir / ".blobs"
        self.blobs = BlobDir(self.blob_root)
        self.log = log
        self.spaces: dict[tuple[str, str], Workspace] = {}
        self.followers: dict[str, asyncio.Queue[wpb.FollowEvent]] = {}
        self._round_ids = itertools.count(int(time.time() * 1000) << 8)
        self.on_new_workspace: Any = None  # the watcher starts one per workspace
        self.on_attachments_changed: Any = None  # placement looks again (tasks in one)

    # -- loading, creating, attaching ---------------------------------------------
    async def load(self) -> None:
        await asyncio.to_thread(self.blobs.sweep)  # part files of pushes a kill cut off
        for owner, name, created in await self.records.workspaces():
            self._add(owner, name, created)
        for row in await self.records.attachments():
            ws = self.spaces.get((row.owner, row.workspace))
            if ws is not None:
                ws.attachments[row.node_id] = Attachment(row, rounds=row.rounds,
                                                         synced_ms=row.synced_ms)
        for c in await self.records.conflicts_all_open():
            ws = self.spaces.get((c.owner, c.workspace))
            if ws is not None and c.node_id in ws.attachments:
                ws.attachments[c.node_id].open[c.path] = c

    def _add(self, owner: str, name: str, created_ms: int) -> Workspace:
        root = self.data_dir / owner / name / "tree"
        root.mkdir(parents=True, exist_ok=True)
        sweep_scratch(root)  # a kill -9 mid-write leaves at most these
        ws = self.spaces[(owner, name)] = Workspace(owner, name, created_ms, root,
                                                     TreeScanner(root))
        if self.on_new_workspace is not None:
            self.on_new_workspace(ws)
        return ws

    def get(self, owner: str, name: str) -> Workspace:
        ws = self.spaces.get((owner, name))
        if ws is None:
            raise WorkspaceError("NOT_FOUND", f"no workspace {name!r}")
        return ws

    async def create(self, owner: str, name: str) -> Workspace:
        if (owner, name) in self.spaces:
            raise WorkspaceError("ALREADY_EXISTS", f"workspace {name!r} exists")
        created = now_ms()
        await self.records.create(owner, name, created)
        return self._add(owner, name, created)

    async def attach(self, owner: str, name: str, node_id: str, path: str) -> Workspace:
        ws = self.get(owner, name)
        row = AttachmentRow(owner, name, node_id, path, now_ms(), 0, 0)
        await self.records.attach(row)
        old = ws.attachments.get(node_id)
        if old is not None and old.row.path == path:
            return ws
        await self.records.detach(owner, name, node_id)  # a new path starts from no base
        await self.records.attach(row)
        ws.attachments[node_id] = Attachment(row)
        self.tell_attachments(node_id)
        return ws

    async def detach(self, owner: str, name: str, node_id: str) -> Workspace:
        ws = self.get(owner, name)
        if ws.attachments.pop(node_id, None) is None:
            raise WorkspaceError("NOT_FOUND", f"{name!r} is not attached on {node_id!r}")
        await self.records.detach(owner, name, node_id)
        self.tell_attachments(node_id)
        return ws

    def attachments_of(self, node_id: str) -> list[wpb.WsAttached]:
        return [wpb.WsAttached(workspace=ws.name, path=att.row.path)
                for ws in self.spaces.values() for n, att in ws.attachments.items()
                if n == node_id]

    def nodes_of(self, owner: str, name: str) -> Collection[str] | None:
        """The nodes workspace ``name`` is attached to (where its tasks may be placed);
        None: there is no such workspace."""
        ws = self.spaces.get((owner, name))
        return None if ws is None else ws.attachments.keys()

    def tell_attachments(self, node_id: str) -> None:
        if self.on_attachments_changed is not None:
            self.on_attachments_changed()
        q = self.followers.get(node_id)
        if q is not None:
            q.put_nowait(wpb.FollowEvent(attachments=self.attachments_of(node_id),
                                         attachments_changed=True))

    def poke(self, ws: Workspace, but: str = "") -> None:
        for node_id in ws.attachments:
            q = self.followers.get(node_id)
            if node_id != but and q is not None:
                q.put_nowait(wpb.FollowEvent(poke=ws.name))

    def attachment(self, ws: Workspace, node_id: str) -> Attachment:
        att = ws.attachments.get(node_id)
        if att is None:
            raise WorkspaceError("PERMISSION_DENIED",
                                 f"workspace {ws.name!r} is not attached on {node_id!r}")
        return att

    # -- rounds --------------------------------------------------------------------
    async def plan(self, ws: Workspace, node_id: str, node: dict[str, Entry],
                   refused: list[str]) -> tuple[Round, list[str], int]:
        att = self.attachment(ws, node_id)
        async with ws.lock:
            if att.base is None:
                att.base = await self.records.synced(ws.owner, ws.name, node_id)
            hub = await asyncio.to_thread(ws.scanner.scan)
            base = att.base
            try:
                p = plan(base, hub, node)
            except WorkspacePathError as e:
                raise WorkspaceError("INVALID_ARGUMENT", str(e)) from e
            ups, dels = {}, []
            for path in set(base) | set(hub) | set(node):
                h = hub.get(path)
                if h != node.get(path):
                    continue
                if h is None:
                    dels.append(path)
                elif base.get(path) != h:
                    ups[path] = h
            await self._save_base(ws, att, ups, dels)
            await self._record_conflicts(ws, att, p.conflicts, hub, node)
            att.plans += 1
            to_hub = [a for a in p.actions if a.to == "hub"]
            to_node = [a for a in p.actions if a.to == "node"]
            att.round = Round(next(self._round_ids), att.plans, hub, to_hub, to_node)
            att.refused, att.node_digest = refused, tree_digest(node)
            att.pending = len(p.actions)
            have = set(ws.scanner.by_digest())
            wanted = [a.entry.digest for a in to_hub if a.entry and a.entry.kind == FILE]
            wanted += [c.node.digest for c in p.conflicts if c.node and c.node.kind == FILE]
            need = sorted({d for d in wanted if d not in have and not self.blobs.has(d)})
            return att.round, need, len(p.conflicts)

    async def commit(self, ws: Workspace, node_id: str, round_id: int,
                     failed: list[str]) -> tuple[int, int]:
        att = self.attachment(ws, node_id)
        async with ws.lock:
            rnd = att.round
            if rnd is None or rnd.id != round_id:
                raise WorkspaceError("FAILED_PRECONDITION",
                                     f"round {round_id} is not the current one: plan again")
            att.round = None
            applied, skipped, written = await asyncio.to_thread(self._apply_hub, ws, rnd)
            ups: dict[str, Entry] = {}
            dels: list[str] = []
            failed_set = set(failed)
            done = [a for a in rnd.to_node if a.path not in failed_set] + applied
            for a in done:
                if a.entry is None:
                    dels.append(a.path)
                else:
                    ups[a.path] = a.entry
            ws.written = written
            att.pending = skipped + len(failed_set)
            await self._save_base(ws, att, ups, dels, commit=True)
            att.committed_plan = rnd.plan_seq
            att.committed.set()
            att.committed = asyncio.Event()
            if applied:
                self.poke(ws, but=node_id)
            return len(applied), skipped

    def _apply_hub(self, ws: Workspace, rnd: Round) -> tuple[list[Action], int, set[str]]:
        applied: list[Action] = []
        written: set[str] = set()
        skipped = 0
        local = ws.scanner.by_digest()
        for a in rnd.to_hub:
            try:
                if ws.scanner.entry_now(a.path) != rnd.hub.get(a.path):
                    skipped += 1  # changed on the hub since the plan
                    continue
                if a.entry is None:
                    if not remove_entry(ws.root, a.path):
                        skipped += 1
                        continue
                    ws.scanner.cache.pop(a.path, None)
                else:
                    source = None
                    if a.entry.kind == FILE:
                        source = self.blobs.path(a.entry.digest)
                        if not source.exists() and a.entry.digest in local:
                            source = ws.root / local[a.entry.digest]
                        if not source.exists():
                            skipped += 1
                            continue
                    apply_entry(ws.root, a.path, a.entry, source)
                    ws.scanner.note(a.path, a.entry)
                written.add(str(ws.root / a.path))
                applied.append(a)
            except (OSError, WorkspacePathError) as e:
                self.log.warning("workspace_apply_failed", workspace=ws.name, path=a.path,
                                 error=str(e))
                skipped += 1
        return applied, skipped, written

    async def _save_base(self, ws: Workspace, att: Attachment, ups: dict[str, Entry],
                         dels: list[str], *, commit: bool = False) -> None:
        assert att.base is not None
        dels = [p for p in dels if p in att.base]
        if not ups and not dels and not commit:
            return
        stamp = now_ms()
        await self.records.save_synced(ws.owner, ws.name, att.row.node_id, ups, dels, stamp)
        att.base.update(ups)
        for p in dels:
            att.base.pop(p, None)
        att.rounds += 1
        att.synced_ms = stamp
        for path in [p for p in att.open if p in ups or p in dels]:
            await self._close_conflict(att, path, "equal")

    async def _record_conflicts(self, ws: Workspace, att: Attachment, conflicts: list[Any],
                                hub: dict[str, Entry], node: dict[str, Entry]) -> None:
        for c in conflicts:
            old = att.open.get(c.path)
            if old is not None and old.hub == c.hub and old.node == c.node:
                continue
            if old is not None:
                await self._close_conflict(att, c.path, "superseded")
            row = ConflictRow(0, ws.owner, ws.name, att.row.node_id, c.path, c.base, c.hub,
                              c.node, now_ms(), 0, "")
            cid = await self.records.add_conflict(row)
            att.open[c.path] = ConflictRow(cid, *(getattr(row, f) for f in
                                                  ConflictRow.__slots__[1:]))
            self.log.warning("workspace_conflict", workspace=ws.name, node=att.row.node_id,
                             path=c.path, conflict=cid)

    async def _close_conflict(self, att: Attachment, path: str, resolution: str) -> None:
        old = att.open.pop(path)
        await self.records.resolve_conflict(old.owner, old.id, resolution, now_ms())

    async def resolve(self, ws: Workspace, conflict: ConflictRow, keep: str) -> None:
        att = self.attachment(ws, conflict.node_id)
        async with ws.lock:
            if att.base is None:
                att.base = await self.records.synced(ws.owner, ws.name, conflict.node_id)
            hub_now = ws.scanner.entry_now(conflict.path)
            if keep == "node" and hub_now is not None and hub_now.kind == FILE:
                await asyncio.to_thread(self.blobs.keep, ws.root / conflict.path,
                                        hub_now.digest)  # the losing version stays
            # The base becomes the losing side's version, so the next round sees only
            # the kept side as changed and carries it over.
            losing = conflict.node if keep == "hub" else conflict.hub
            ups = {conflict.path: losing} if losing is not None else {}
            dels = [] if losing is not None else [conflict.path]
            att.open.pop(conflict.path, None)
            await self.records.resolve_conflict(ws.owner, conflict.id, keep, now_ms())
            assert att.base is not None
            await self.records.save_synced(ws.owner, ws.name, conflict.node_id, ups,
                                           [p for p in dels if p in att.base], now_ms())
            att.base.update(ups)
            for p in dels:
                att.base.pop(p, None)
        self.poke(ws)

    async def seed(self, ws: Workspace, entries: list[tuple[str, Entry]]) -> int:
        """Fill the hub tree (create --from): entries whose blobs were pushed."""
        async with ws.lock:
            def run() -> int:
                n = 0
                for path, entry in entries:
                    source = self.blobs.path(entry.digest) if entry.kind == FILE else None
                    apply_entry(ws.root, path, entry, source)
                    ws.scanner.note(path, entry)
                    n += 1
                return n
            try:
                n = await asyncio.to_thread(run)
            except (OSError, WorkspacePathError) as e:
                raise WorkspaceError("FAILED_PRECONDITION", f"seeding: {e}") from e
        self.poke(ws)
        return n

    async def sync_now(self, ws: Workspace, timeout_s: float) -> None:
        waits = {}
        for node_id, att in ws.attachments.items():
            if node_id in self.followers:
                waits[node_id] = att.plans
        self.poke(ws)
        deadline = time.monotonic() + timeout_s
        for node_id, seq in waits.items():
            got = ws.attachments.get(node_id)
            while got is not None and got.committed_plan <= seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(got.committed.wait(), left)
                except TimeoutError:
                    return
                got = ws.attachments.get(node_id)

"""Collecting the hub's workspace blobs (``STATE_DIR/workspaces/.blobs``).

A blob is a way station: pushed by a node (or cortexctl's ``create --from``) and copied
into the hub's tree at the round's commit (or the seed), or served to a node's Pull in
place of the tree's file. Only a conflict's versions (the node's, pushed when the
conflict was found, and the hub's losing one kept by ``resolve``) must outlive that, as
long as the conflict is recorded. So every ``COLLECT_EVERY_S`` the blobs no conflict
names and nobody used (pushed, asked for by ``Missing`` or a plan) for ``BLOB_GRACE_S``
are removed; a removal under a slow round costs that round's action a retry.
"""

import asyncio
import time

from cortexd.workspaces.hub import WorkspaceHub

BLOB_GRACE_S = 3600.0
COLLECT_EVERY_S = 600.0


async def collect_blobs(hub: WorkspaceHub, grace_s: float = BLOB_GRACE_S) -> tuple[int, int]:
    """One collection; (blobs, bytes) removed."""
    keep = await hub.records.conflict_digests()
    count, size = await asyncio.to_thread(hub.blobs.collect, keep, time.time() - grace_s)
    if count:
        hub.log.info("workspace_blobs_collected", blobs=count, bytes=size, kept=len(keep))
    return count, size


async def run_collector(hub: WorkspaceHub, every_s: float = COLLECT_EVERY_S) -> None:
    while True:
        try:
            await collect_blobs(hub)
        except Exception:  # a store outage: the next collection tries again
            hub.log.exception("workspace_blob_collect_failed")
        await asyncio.sleep(every_s)

"""Garbage collection of artifacts: ``cortexctl artifacts gc`` and the hourly pass.

The decision is ``rules.plan_gc`` (pure); this applies it. In order: expired task
references go; artifact rows left with no reference and unused for the grace period go;
blobs no owner's row names go (under the finish lock, so an upload finishing on this hub
never loses the blob it found present); partial uploads nobody continued for
``partial_ttl_s`` go. Clustered, hubs may collect at once: every step is an idempotent
delete. (A blob another hub's upload finds present in the instant between our plan and
our delete is the one window left: that upload's row then names a missing blob, a read
says NOT_FOUND and the client uploads again.)
"""

import asyncio
import time

from cortex import logs
from cortex.v1 import artifacts_pb2 as pb
from cortexd.artifacts.backend import ArtifactStore
from cortexd.artifacts.rules import Retention, plan_gc
from cortexd.artifacts.uploads import Uploads

GC_INTERVAL_S = 3600.0


class Collector:
    def __init__(self, store: ArtifactStore, uploads: Uploads, retention: Retention) -> None:
        self.store = store
        self.uploads = uploads
        self.retention = retention
        self.log = logs.get()

    async def run(self, now_ms: int, dry_run: bool = False) -> pb.CollectResponse:
        rows = await self.store.all_rows()
        blobs = dict(await self.store.blobs())
        plan = plan_gc(rows, blobs, now_ms, self.retention)
        stale = [p for p in await self.store.partials()
                 if p.updated_ms + self.retention.partial_ttl_s * 1000 <= now_ms
                 and not self.uploads.is_live((p.owner, p.sha256))]
        result = pb.CollectResponse(
            refs_expired=len(plan.refs), artifacts_removed=len(plan.artifacts),
            blobs_removed=len(plan.blobs), bytes_freed=sum(blobs[b] for b in plan.blobs),
            partials_removed=len(stale), partial_bytes_freed=sum(p.committed for p in stale))
        if dry_run:
            return result
        await self.store.drop(plan.refs, plan.artifacts)
        async with self.uploads.finish_lock:
            named = {r.sha256 for r in await self.store.all_rows()}
            for sha in plan.blobs:
                if sha not in named:
                    await self.store.delete_blob(sha)
        for p in stale:
            await self.store.discard(p.owner, p.sha256)
            self.uploads.release(p.committed)
        self.log.info("artifacts_collected", refs=result.refs_expired,
                      artifacts=result.artifacts_removed, blobs=result.blobs_removed,
                      bytes=result.bytes_freed, partials=result.partials_removed)
        return result

    async def run_forever(self, interval_s: float = GC_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.run(int(time.time() * 1000))
            except Exception:
                self.log.exception("artifacts_collect_failed")

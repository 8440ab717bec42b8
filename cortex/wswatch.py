"""Watching a workspace tree: a batch of changed paths after a short quiet.

inotify through ``watchfiles`` (its Rust notify backend) on Linux; polling (every
``poll_ms``) where inotify is not available or ``force_polling`` is asked (the
``CORTEX_WS_POLL=1`` environment variable forces it everywhere, for tests). A batch is
yielded once nothing changed for ``quiet_ms`` (at most ``max_batch_ms`` after its first
change), so a burst of edits makes one sync round. The scratch files the sync itself
writes are not changes. If the watcher itself fails (the tree was removed, too many
watches), the caller falls back to its periodic rescan; nothing depends on a watch alone.
"""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import watchfiles

from cortex.wstree import TMP_PREFIX

QUIET_MS = 300
MAX_BATCH_MS = 1500
POLL_MS = 400


def _ours(path: str) -> bool:
    return os.path.basename(path).startswith(TMP_PREFIX)


async def changes(root: Path, stop: asyncio.Event, *, force_polling: bool = False,
                  quiet_ms: int = QUIET_MS) -> AsyncIterator[set[str]]:
    polling = force_polling or os.environ.get("CORTEX_WS_POLL") == "1"
    async for batch in watchfiles.awatch(root, stop_event=stop, step=quiet_ms,
                                         debounce=MAX_BATCH_MS, force_polling=polling,
                                         poll_delay_ms=POLL_MS, recursive=True,
                                         watch_filter=None, raise_interrupt=False):
        paths = {p for _, p in batch if not _ours(p)}
        if paths:
            yield paths

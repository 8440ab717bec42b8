"""Who may touch which artifact, from the credential and the store, never the payload.

- A **client** (role client or admin) acts as its tenant's owner. Tenants are a later
  issue: every principal's tenant is ``default`` today (the same as every task's), and
  this function is the one seam to change.
- A **node** acts only for a task that the store says is placed on it (its node id is
  the credential's name) and still active, and as that task's tenant: it may read the
  task's inputs, and upload and attach its outputs. A task id in the request is a claim
  this checks; the owner never comes from the request.
- A node may also upload one blob the hub asked it for (:class:`UploadGrants`: a browser
  session's recording, cortexd/control/browse.py): granted by (node, sha256) for the
  session owner's tenant and one name, before the hub asks, for a bounded time.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass

from cortex.tokens import Principal
from cortexd.artifacts.rules import ArtifactError
from cortexd.lifecycle import ACTIVE
from cortexd.store import Store, TaskRow

DEFAULT_TENANT = "default"
GRANT_TTL_S = 600.0
MAX_GRANTS = 4096


@dataclass(frozen=True, slots=True)
class Grant:
    owner: str
    name: str
    size: int
    expires: float


class UploadGrants:
    """Blobs a node may upload without a task: (node id, sha256) → owner and name."""

    def __init__(self) -> None:
        self._grants: OrderedDict[tuple[str, str], Grant] = OrderedDict()

    def grant(self, node_id: str, sha256: str, size: int, owner: str, name: str,
              ttl_s: float = GRANT_TTL_S) -> None:
        self._grants[(node_id, sha256)] = Grant(owner, name, size, time.monotonic() + ttl_s)
        while len(self._grants) > MAX_GRANTS:
            self._grants.popitem(last=False)

    def find(self, node_id: str, sha256: str, size: int) -> Grant | None:
        g = self._grants.get((node_id, sha256))
        if g is None or g.expires < time.monotonic() or g.size != size:
            return None
        return g

    def revoke(self, node_id: str, sha256: str) -> None:
        self._grants.pop((node_id, sha256), None)


def tenant_of(principal: Principal) -> str:
    return DEFAULT_TENANT


async def node_task(store: Store, principal: Principal, task_id: str) -> TaskRow:
    if not task_id:
        raise ArtifactError("PERMISSION_DENIED",
                            "a node reads and writes artifacts only for a task (task_id)")
    task = await store.get_task(task_id)
    if task is None or task.node_id != principal.name or task.state not in ACTIVE:
        raise ArtifactError("PERMISSION_DENIED",
                            f"task {task_id[:40]!r} is not active on node {principal.name!r}")
    return task


async def owner_for(store: Store, principal: Principal, task_id: str,
                    *, sha256: str = "", writing: bool = False) -> str:
    """The owner this principal acts as; for a node, checked against its task."""
    if principal.role != "node":
        return tenant_of(principal)
    task = await node_task(store, principal, task_id)
    if writing and not task.outputs:
        raise ArtifactError("PERMISSION_DENIED", f"task {task_id} collects no outputs")
    if not writing and sha256 not in {sha for sha, _, _ in task.inputs}:
        raise ArtifactError("PERMISSION_DENIED",
                            f"{sha256[:16]}… is not an input of task {task_id}")
    return task.tenant

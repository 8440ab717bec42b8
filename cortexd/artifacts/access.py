"""Who may touch which artifact, from the credential and the store, never the payload.

- A **client** (role client or admin) acts as its tenant's owner. Tenants are a later
  issue: every principal's tenant is ``default`` today (the same as every task's), and
  this function is the one seam to change.
- A **node** acts only for a task that the store says is placed on it (its node id is
  the credential's name) and still active, and as that task's tenant: it may read the
  task's inputs, and upload and attach its outputs. A task id in the request is a claim
  this checks; the owner never comes from the request.
"""

from cortex.tokens import Principal
from cortexd.artifacts.rules import ArtifactError
from cortexd.lifecycle import ACTIVE
from cortexd.store import Store, TaskRow

DEFAULT_TENANT = "default"


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

"""The Control API's check of a SubmitRequest (Submit, SubmitMany, Run): the first
problem as a sentence for INVALID_ARGUMENT, or None. Generic checks (a valid message,
enums, 64-bit ranges) happen before, at the edge (cortexd/ingress/edge.py).
``check_workspace`` then asks the hub's workspaces whether the task's can run it."""

from collections.abc import Callable, Collection

from cortex.cliargs import PIDS_MAX_LIMIT
from cortex.ids import (
    ENV_NAME_RE,
    IDEMPOTENCY_KEY_RE,
    WORKSPACE_NAME_RE,
    check_labels,
    is_node_id,
)
from cortex.tools import TOOL_NAME_RE, is_tool_name
from cortex.v1 import control_pb2
from cortex.wsmerge import WorkspacePathError, check_path

MAX_COMMAND_BYTES = 64 << 10
MAX_ENV = 256
MIN_MEMORY_MAX_BYTES = 1 << 20  # below this not even the task's shell starts


def check_submit(req: control_pb2.SubmitRequest) -> str | None:
    if not req.command.strip():
        return "command is required"
    if len(req.command.encode()) > MAX_COMMAND_BYTES:
        return f"command is longer than {MAX_COMMAND_BYTES} bytes"
    if (err := check_labels(dict(req.selector), "selector")) is not None:
        return err
    if req.node_id and not is_node_id(req.node_id):
        return f"node_id {req.node_id!r} is not a valid node id"
    if req.idempotency_key and not IDEMPOTENCY_KEY_RE.fullmatch(req.idempotency_key):
        return f"idempotency_key must match {IDEMPOTENCY_KEY_RE.pattern}"
    if len(req.env) > MAX_ENV:
        return f"at most {MAX_ENV} environment variables"
    for name in req.env:
        if not ENV_NAME_RE.fullmatch(name):
            return f"environment variable name {name!r} is not valid"
    if (err := _check_place(req)) is not None:
        return err
    if req.tool and not is_tool_name(req.tool):
        return f"tool {req.tool!r} is not a valid tool name ({TOOL_NAME_RE.pattern})"
    if req.pids_max > PIDS_MAX_LIMIT:  # the node's cgroup write would fail (EINVAL)
        return f"pids_max must be at most {PIDS_MAX_LIMIT} (the kernel's PID_MAX_LIMIT)"
    if 0 < req.memory_max_bytes < MIN_MEMORY_MAX_BYTES:
        return f"memory_max_bytes must be 0 (no limit) or at least {MIN_MEMORY_MAX_BYTES}"
    return None


def _check_place(req: control_pb2.SubmitRequest) -> str | None:
    """The workspace's name and the cwd: absolute, or (in a workspace) inside its copy."""
    if not req.workspace:
        return "cwd must be an absolute path" if req.cwd and req.cwd[0] != "/" else None
    if not WORKSPACE_NAME_RE.fullmatch(req.workspace):
        return f"workspace {req.workspace!r} is not a workspace name ({WORKSPACE_NAME_RE.pattern})"
    if req.cwd.startswith("/"):
        return "with a workspace, cwd is relative to the copy's root (e.g. src/app)"
    if req.cwd not in ("", "."):
        try:
            check_path(req.cwd)
        except WorkspacePathError as e:
            return f"cwd: {e}"
    return None


NodesOf = Callable[[str, str], Collection[str] | None]


def check_workspace(nodes_of: NodesOf, tenant: str,
                    req: control_pb2.SubmitRequest) -> tuple[str, str] | None:
    """Why the task's workspace cannot run it, as (status code name, sentence), or None.
    ``nodes_of`` is the hub's workspaces (``WorkspaceHub.nodes_of``)."""
    name = req.workspace
    if not name:
        return None
    nodes = nodes_of(tenant, name)
    if nodes is None:
        return "NOT_FOUND", f"no workspace {name!r} (cortexctl workspace create {name})"
    if not nodes:
        return ("FAILED_PRECONDITION", f"workspace {name!r} is attached to no node, so no "
                f"node could run the task (cortexctl workspace attach {name} --node N "
                "--path DIR)")
    if req.node_id and req.node_id not in nodes:
        return ("FAILED_PRECONDITION", f"workspace {name!r} is not attached on node "
                f"{req.node_id!r} (it is on {', '.join(sorted(nodes))})")
    return None

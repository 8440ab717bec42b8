"""The Control API's check of a SubmitRequest (Submit, SubmitMany, Run): the first
problem as a sentence for INVALID_ARGUMENT, or None. Generic checks (a valid message,
enums, 64-bit ranges) happen before, at the edge (cortexd/ingress/edge.py)."""

from cortex.cliargs import PIDS_MAX_LIMIT
from cortex.ids import ENV_NAME_RE, IDEMPOTENCY_KEY_RE, check_labels, is_node_id
from cortex.tools import TOOL_NAME_RE, is_tool_name
from cortex.v1 import control_pb2

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
    if req.cwd and not req.cwd.startswith("/"):
        return "cwd must be an absolute path"
    if req.tool and not is_tool_name(req.tool):
        return f"tool {req.tool!r} is not a valid tool name ({TOOL_NAME_RE.pattern})"
    if req.pids_max > PIDS_MAX_LIMIT:  # the node's cgroup write would fail (EINVAL)
        return f"pids_max must be at most {PIDS_MAX_LIMIT} (the kernel's PID_MAX_LIMIT)"
    if 0 < req.memory_max_bytes < MIN_MEMORY_MAX_BYTES:
        return f"memory_max_bytes must be 0 (no limit) or at least {MIN_MEMORY_MAX_BYTES}"
    return None

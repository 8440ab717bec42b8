"""Human tables and machine-readable JSON for tasks, nodes and shards.

Tables are plain aligned text (no table library): a header row, then one row
per item, columns separated by two spaces, numbers right-aligned. ``--json``
output is JSON lines — one object per line, one line per item — so it streams
and feeds ``jq`` directly; the fields are documented by the ``*_dict`` functions
and never renamed (64-bit counters stay JSON numbers, times are Unix ms).
"""

import json
import signal
import time
from collections.abc import Sequence
from typing import Any

from cortex.v1 import control_pb2 as pb

COMMAND_WIDTH = 48
TERMINAL_STATES = frozenset({pb.SUCCEEDED, pb.FAILED, pb.CANCELLED, pb.TIMED_OUT, pb.LOST})


def state_name(state: int) -> str:
    try:
        return pb.TaskState.Name(state)
    except ValueError:
        return f"STATE_{state}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[str] = ()) -> str:
    """Align ``rows`` under ``headers``; columns named in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (list(headers), *rows):
        cells = [cell.rjust(w) if h in right else cell.ljust(w)
                 for h, w, cell in zip(headers, widths, row, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def json_lines(items: Sequence[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(item, ensure_ascii=False) for item in items)


def age(ms: int, now_ms: int | None = None) -> str:
    if ms <= 0:
        return "-"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    seconds = max(0, (now - ms) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def one_line(text: str, width: int = COMMAND_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def labels(mapping: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def exit_code(task: pb.Task) -> int | None:
    return task.exit_code if task.has_exit_code else None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_text(task: pb.Task, long: bool = False) -> str:
    """The exit code as text: a task killed by signal N has exit code -N (the API's
    convention); the text says which signal and, in ``long`` form, the status cortexctl
    exits with for it (128+N, as a shell's; 130 for any CANCELLED task)."""
    code = exit_code(task)
    if code is None:
        return "-"
    if code >= 0:
        return str(code)
    name = signal_name(-code)
    if not long:
        return f"{code} ({name})"
    status = 130 if task.state == pb.CANCELLED else 128 + min(-code, 127)
    return f"{code} (killed by {name}; cortexctl watch exits {status})"


#: Prompt kinds that mean the task waits for someone to type (not "finished": a shell's
#: command ended; nodeagent/detect/events.py).
NOT_WAITING_KINDS = frozenset({"finished"})


def waiting_for_input(task: pb.Task) -> str:
    """"password", "confirm", … when the running task's last prompt is still its latest
    output (nothing came after it, so nobody answered); "" otherwise."""
    if task.state != pb.RUNNING or not task.HasField("last_prompt"):
        return ""
    p = task.last_prompt
    if p.kind in NOT_WAITING_KINDS or task.output_bytes > p.offset:
        return ""
    return p.kind or "input"


#: Table words for Task.queue_wait (cortexd/control/waits.py).
QUEUE_WAIT_WORDS = {"node_unknown": "node unknown", "node_detached": "node detached",
                    "node_draining": "node draining", "no_node": "no node",
                    "no_match": "no node matches", "draining": "nodes draining",
                    "busy": "nodes busy"}


def waiting_line(task: pb.Task) -> str:
    """One line saying what the task waits for, or ""."""
    if task.state == pb.QUEUED and task.queue_reason:
        timeout = (f"; fails after {task.queue_timeout_s}s queued (--queue-timeout)"
                   if task.queue_timeout_s else "")
        return f"a node: {task.queue_reason}{timeout}"
    kind = waiting_for_input(task)
    if kind:
        excerpt = one_line(task.last_prompt.excerpt.decode("utf-8", "replace"), 60)
        return (f"for input ({kind}{': ' + repr(excerpt) if excerpt else ''}; "
                f"answer: cortexctl input {task.task_id} TEXT)")
    return ""


def state_cell(task: pb.Task) -> str:
    """The state as a table shows it: RUNNING (input) while a prompt waits, QUEUED (why)."""
    if task.state == pb.QUEUED and task.queue_wait:
        return f"QUEUED ({QUEUE_WAIT_WORDS.get(task.queue_wait, task.queue_wait)})"
    kind = waiting_for_input(task)
    return f"{state_name(task.state)} (input)" if kind else state_name(task.state)


# -- tasks ------------------------------------------------------------------

def task_dict(task: pb.Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "state": state_name(task.state),
        "attempt": task.attempt,
        "node_id": task.node_id,
        "command": task.command,
        "command_truncated": task.command_truncated,  # a listing's command: get has it all
        "exit_code": exit_code(task),
        "reason": task.reason,
        "output_bytes": task.output_bytes,
        "created_ms": task.created_ms,
        "updated_ms": task.updated_ms,
        "idempotency_key": task.idempotency_key,
        "selector": dict(task.selector),
        "tool": task.tool or "shell", "workspace": task.workspace,
        "queue_wait": task.queue_wait, "queue_reason": task.queue_reason,
        "queue_timeout_s": task.queue_timeout_s,
        "tenant": task.tenant,
        "spooled_bytes": task.spooled_bytes,
        "held_back_bytes": task.held_back_bytes,
        "last_prompt": prompt_dict(task.last_prompt) if task.HasField("last_prompt") else None,
        "waiting_for_input": waiting_for_input(task) or None,  # the prompt's kind, if unanswered
        "inputs": [{"path": i.path, "sha256": i.digest.sha256, "size_bytes": i.digest.size_bytes}
                   for i in task.inputs],
        "outputs": [{"path": o.path, "sha256": o.digest.sha256,
                     "size_bytes": o.digest.size_bytes, "error": o.error} for o in task.outputs],
        "monitor_policy": task.monitor_policy, "monitor_state": task.monitor_state,
        "attention": task.attention, "parent_task_id": task.parent_task_id,
        "children": list(task.children), "session_id": task.session_id, "goal": task.goal,
    }


def prompt_dict(p: pb.Prompt) -> dict[str, Any]:
    return {"kind": p.kind, "detector": p.detector, "confidence": round(p.confidence, 3),
            "excerpt": p.excerpt.decode("utf-8", "replace"), "offset": p.offset,
            "at_ms": p.at_ms, "exit_code": p.exit_code, "cwd": p.cwd}


def tasks_table(tasks: Sequence[pb.Task]) -> str:
    rows = [[t.task_id, state_cell(t), str(t.attempt), t.node_id or "-",
             exit_text(t), size(t.output_bytes),
             age(t.created_ms), one_line(t.command)] for t in tasks]
    headers = ["TASK", "STATE", "ATTEMPT", "NODE", "EXIT", "OUTPUT", "AGE", "COMMAND"]
    return table(headers, rows, right=("ATTEMPT", "EXIT", "OUTPUT", "AGE"))


def task_detail(task: pb.Task) -> str:
    fields = [
        ("task", task.task_id), ("state", state_name(task.state)),
        ("attempt", str(task.attempt)), ("node", task.node_id or "-"),
        ("command", task.command), ("tool", task.tool or "shell"),
        ("workspace", task.workspace or "-"),
        ("exit code", exit_text(task, long=True)),
        ("reason", task.reason or "-"), ("waiting", waiting_line(task) or "-"),
        ("output", f"{task.output_bytes} bytes"),
        ("created", f"{age(task.created_ms)} ago"), ("updated", f"{age(task.updated_ms)} ago"),
        ("selector", labels(task.selector)), ("idempotency key", task.idempotency_key or "-"),
        ("tenant", task.tenant or "-"),
        ("held back", f"{task.held_back_bytes} bytes (of {task.spooled_bytes} spooled)"
         if task.held_back_bytes else "-"),
        ("monitor", f"{task.monitor_policy} ({task.monitor_state})" if task.monitor_policy
         else "-"),
        ("attention", task.attention or "-"), ("goal", task.goal or "-"),
        ("session", task.session_id or "-"), ("parent", task.parent_task_id or "-"),
        ("children", " ".join(task.children) or "-"),
    ]
    fields += [(f"input {i.path}", f"{i.digest.sha256} ({size(i.digest.size_bytes)})")
               for i in task.inputs]
    fields += [(f"output {o.path}", o.error or f"{o.digest.sha256} ({size(o.digest.size_bytes)})")
               for o in task.outputs]
    width = max(len(k) for k, _ in fields)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in fields)


# -- nodes ------------------------------------------------------------------

def node_status(node: pb.Node) -> str:
    if not node.attached:
        return "detached"
    return "draining" if node.draining else "attached"


def node_dict(node: pb.Node) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "attached": node.attached,
        "draining": node.draining,
        "session_epoch": node.session_epoch,
        "labels": dict(node.labels),
        "capacity": node.capacity,
        "running": node.running,
        "agent_version": node.agent_version,
        "isolation": node.isolation,
        "shard": node.shard,
        "hub_id": node.hub_id,
        "last_seen_ms": node.last_seen_ms,
    }


def nodes_table(nodes: Sequence[pb.Node]) -> str:
    rows = [[n.node_id, node_status(n), (n.hub_id or "-") if n.attached else "-",
             str(n.shard) if n.attached else "-",
             str(n.session_epoch), f"{n.running}/{n.capacity}", labels(n.labels),
             n.agent_version or "-", n.isolation or "-", age(n.last_seen_ms)] for n in nodes]
    headers = ["NODE", "STATUS", "HUB", "SHARD", "EPOCH", "RUNNING", "LABELS", "AGENT",
               "ISOLATION", "SEEN"]
    return table(headers, rows, right=("SHARD", "EPOCH", "RUNNING", "SEEN"))


# -- shards -----------------------------------------------------------------

def shard_dict(shard: pb.Shard) -> dict[str, Any]:
    return {
        "hub_id": shard.hub_id,
        "shard": shard.shard,
        "pid": shard.pid,
        "alive": shard.alive,
        "draining": shard.draining,
        "nodes": shard.nodes,
        "restarts": shard.restarts,
        "frames_in": shard.frames_in,
        "frames_out": shard.frames_out,
        "ring_in_used_bytes": shard.ring_in_used_bytes,
        "ring_out_used_bytes": shard.ring_out_used_bytes,
    }


def shards_table(shards: Sequence[pb.Shard]) -> str:
    rows = [[s.hub_id or "-", str(s.shard), str(s.pid),
             ("drained" if s.draining else "yes") if s.alive else "NO",
             str(s.nodes), str(s.restarts), str(s.frames_in), str(s.frames_out),
             size(s.ring_in_used_bytes), size(s.ring_out_used_bytes)] for s in shards]
    headers = ["HUB", "SHARD", "PID", "ALIVE", "NODES", "RESTARTS", "FRAMES_IN", "FRAMES_OUT",
               "RING_IN", "RING_OUT"]
    return table(headers, rows, right=tuple(h for h in headers if h not in ("ALIVE", "HUB")))

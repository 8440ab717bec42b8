"""Strict grammars for identifiers that cross a trust boundary.

Everything a node or a client sends that names something (node ids, task ids,
labels, idempotency keys) is validated here, at the edge, before it reaches a
store, a path or a log line. Every grammar is matched whole (``fullmatch``): an anchored
``^…$`` with ``match`` accepts a trailing newline (``$`` matches before one), which then
reaches a path, a label or a log line (issue 13).
"""

import re
import secrets

NODE_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
TASK_ID_RE = re.compile(r"t-[0-9a-f]{20}")
LABEL_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9._:/-]{0,128}")
IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
WORKSPACE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")

MAX_LABELS = 32


def new_task_id() -> str:
    return "t-" + secrets.token_hex(10)


def is_node_id(value: str) -> bool:
    return bool(NODE_ID_RE.fullmatch(value))


def is_task_id(value: str) -> bool:
    return bool(TASK_ID_RE.fullmatch(value))


def check_labels(labels: dict[str, str], what: str = "label") -> str | None:
    """Return an error message for the first bad label, or None when all are valid."""
    if len(labels) > MAX_LABELS:
        return f"too many {what}s: {len(labels)} > {MAX_LABELS}"
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            return f"{what} key {key!r} must match {LABEL_KEY_RE.pattern}"
        if not LABEL_VALUE_RE.fullmatch(value):
            return f"{what} value {value!r} for {key!r} must match {LABEL_VALUE_RE.pattern}"
    return None

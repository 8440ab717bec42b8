"""ListTasks and ListNodes pages: a cursor token, a byte budget per response, and
commands cut short.

A listing used to carry every task's whole command: a handful of 60 KB commands made
the response exceed the message size limit, and ``cortexctl tasks`` failed until a
hundred newer tasks pushed them out (issue 13). Now:

- a listed task's command is at most :data:`LIST_COMMAND_BYTES` (cut on a UTF-8
  boundary), with ``command_truncated`` and ``command_bytes`` saying so; GetTask gives
  the whole;
- a page holds at most ``limit`` tasks and at most :data:`PAGE_BUDGET_BYTES` of them;
  when more may follow, ``next_page_token`` names the last task of the page, and the
  next request continues just after it (created_ms DESC, task_id: the store's order).

ListNodes pages the same way by node_id (10,000 nodes are about 1.5 MB of Node
messages, over the Control port's message limit): :func:`node_page`.

The token is opaque to clients: ``base64url("<created_ms>.<task_id>")``. A token this
module cannot read is a :class:`BadPageToken` (INVALID_ARGUMENT at the API).
"""

from __future__ import annotations

import base64
import binascii

from cortex.errors import CortexError
from cortex.ids import is_node_id, is_task_id
from cortex.v1 import control_pb2

LIST_COMMAND_BYTES = 1024
#: Well under the smallest max message size of the Control port (1 MiB by default).
PAGE_BUDGET_BYTES = 512 * 1024


class BadPageToken(CortexError):
    """A page_token this hub did not give."""


def page_token(created_ms: int, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_ms}.{task_id}".encode()).decode()


def read_page_token(token: str) -> tuple[int, str] | None:
    """The (created_ms, task_id) cursor of ``token``; None for "" (the first page)."""
    if not token:
        return None
    try:
        created, sep, task_id = base64.urlsafe_b64decode(token.encode()).decode().partition(".")
        if sep and is_task_id(task_id) and created.isdigit():
            return int(created), task_id
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise BadPageToken("page_token is not one this hub gave (pass a next_page_token as is)")


def truncate_command(task: control_pb2.Task) -> control_pb2.Task:
    """``task`` with its command cut to LIST_COMMAND_BYTES (in place; returned)."""
    raw = task.command.encode()
    task.command_bytes = len(raw)
    if len(raw) > LIST_COMMAND_BYTES:
        task.command = raw[:LIST_COMMAND_BYTES].decode("utf-8", "ignore")
        task.command_truncated = True
    return task


def page(tasks: list[control_pb2.Task], limit: int) -> control_pb2.ListTasksResponse:
    """The response for ``tasks``: the store's rows for this page, up to ``limit + 1``
    (one more than fits says that more follow), as Task messages in the store's order."""
    response = control_pb2.ListTasksResponse()
    used = 0
    for i, task in enumerate(tasks):
        if i == limit:  # the row past the limit: only says that more follow
            break
        size = truncate_command(task).ByteSize() + 8
        if i > 0 and used + size > PAGE_BUDGET_BYTES:
            break
        response.tasks.append(task)
        used += size
    if len(response.tasks) < len(tasks):
        last = response.tasks[-1]
        response.next_page_token = page_token(last.created_ms, last.task_id)
    return response


def read_node_token(token: str) -> str:
    """The node_id a ListNodes page token continues after ("" for the first page)."""
    if not token:
        return ""
    try:
        node_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        node_id = ""
    if not node_id.startswith("n:") or not is_node_id(node_id[2:]):
        raise BadPageToken("page_token is not one this hub gave (pass a next_page_token as is)")
    return node_id[2:]


def node_page(nodes: list[control_pb2.Node], after: str,
              limit: int) -> control_pb2.ListNodesResponse:
    """The page of ``nodes`` (any order) after node id ``after``: by node_id, at most
    ``limit`` (0: no count limit) and PAGE_BUDGET_BYTES."""
    response = control_pb2.ListNodesResponse()
    rest = sorted((n for n in nodes if n.node_id > after), key=lambda n: n.node_id)
    used = 0
    for node in rest:
        size = node.ByteSize() + 8
        if (limit and len(response.nodes) == limit) or (
                response.nodes and used + size > PAGE_BUDGET_BYTES):
            break
        response.nodes.append(node)
        used += size
    if len(response.nodes) < len(rest):
        last = "n:" + response.nodes[-1].node_id
        response.next_page_token = base64.urlsafe_b64encode(last.encode()).decode()
    return response

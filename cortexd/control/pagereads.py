"""The browser page a monitored task works in, as its monitor reads it.

A task's policy may name a browser session (``browse_session = "SID@NODE"``, or
``cortexctl submit --browse-session``). Two things happen here:

- at submission, :meth:`PageReads.check` refuses a session the submitter does not own
  (browserd lists only the caller's own sessions) or that is not open, so a task cannot
  have another principal's page read into its monitor's context;
- at each decision, :meth:`PageReads.snapshot` fetches the session's accessibility
  snapshot from the node that holds it (``snapshot`` with ``peek``: the session's own
  diff baseline is left alone), replaces the task's secrets in it as in the journal
  (cortexd/control/secrets.py), and cuts it to :data:`MAX_SNAPSHOT_BYTES`; its sha256 is
  of the text as returned. A session that is lost, a node away or a browserd error is
  an ``error`` in the answer, never a failed GetContext: the monitor then decides
  without a snapshot (a ``snapshot_match`` rule does not hold).
"""

import hashlib
from typing import Any

from cortex.v1 import monitor_pb2, node_pb2
from cortexd.control.browse import TOOL, BrowseService, split_handle
from cortexd.control.errors import RequestError
from cortexd.control.nodecalls import CallError
from cortexd.control.secrets import SecretKeeper
from cortexd.monitors.context import cut_utf8

MAX_SNAPSHOT_BYTES = 256 << 10
SNAPSHOT_TIMEOUT_MS = 8_000  # within the monitor's 10 s deadline of its GetContext call
CHECK_TIMEOUT_MS = 5_000
ADMIN_OWNER = "*"  # ownership was checked at submission


class PageReads:
    def __init__(self, browse: BrowseService, secrets: SecretKeeper) -> None:
        self.browse = browse
        self.secrets = secrets

    async def _node_call(self, node_id: str, op: str, args: dict[str, Any], owner: str,
                         timeout_ms: int) -> dict[str, Any]:
        hub = self.browse.hub
        node = hub.nodes.get(node_id)
        if node is None or not node.attached:
            raise CallError("UNAVAILABLE", "node_away", f"node {node_id} is not attached")

        async def send(frame: node_pb2.HubFrame) -> None:
            await hub.send_node(node, frame)
        got = await hub.node_calls.call(node_id, TOOL, op, args, owner, timeout_ms, send)
        return got.result

    async def check(self, handle: str, caller: str) -> None:
        """RequestError unless ``handle`` is an open session of ``caller``."""
        parts = split_handle(handle)
        if parts is None:
            raise RequestError("INVALID_ARGUMENT", f"bad browse session {handle!r}: want "
                               "SID@NODE (cortexctl browse ls)")
        sid, node_id = parts
        if handle in self.browse.lost:
            raise RequestError("FAILED_PRECONDITION", f"browse session {handle} was lost: "
                               f"{self.browse.lost[handle]}")
        try:
            listed = await self._node_call(node_id, "session.list", {}, caller,
                                           CHECK_TIMEOUT_MS)
        except CallError as e:
            raise RequestError("UNAVAILABLE", f"cannot check browse session {handle}: "
                               f"{e.kind}: {e}") from e
        for s in listed.get("sessions", []):
            if isinstance(s, dict) and s.get("session") == sid:
                if s.get("state") != "open":
                    raise RequestError("FAILED_PRECONDITION",
                                       f"browse session {handle} is {s.get('state')}")
                return
        raise RequestError("NOT_FOUND", f"no browse session {handle} of yours")

    async def snapshot(self, task_id: str, handle: str) -> monitor_pb2.BrowseSnapshot:
        out = monitor_pb2.BrowseSnapshot(session=handle)
        parts = split_handle(handle)
        if parts is None:
            out.error = "not a session handle"
            return out
        if handle in self.browse.lost:
            out.error = f"session lost: {self.browse.lost[handle]}"
            return out
        sid, node_id = parts
        try:
            got = await self._node_call(node_id, "snapshot", {"session": sid, "peek": True},
                                        ADMIN_OWNER, SNAPSHOT_TIMEOUT_MS)
        except CallError as e:
            out.error = f"{e.kind}: {e}"[:1000]
            return out
        text = got.get("text")
        if not isinstance(text, str):
            out.error = "the node sent no snapshot text"
            return out
        (redacted,) = await self.secrets.redact(task_id, text.encode())
        whole = redacted.decode(errors="replace")
        cut = cut_utf8(whole, MAX_SNAPSHOT_BYTES)
        out.url = str(got.get("url", ""))[:2000]
        out.text, out.truncated = cut, cut != whole
        out.full_bytes = int(got.get("full_bytes") or len(redacted))
        out.sha256 = hashlib.sha256(cut.encode()).hexdigest()
        return out

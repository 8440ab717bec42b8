"""Live changes to this host's set of shards, asked for by the control process.

The operator's ``cortexctl shards drain|restart|scale`` reaches the control process
(cortexd/control/operate.py), which asks the supervisor with a ``shard_op`` map on
its pipe; the supervisor carries it out here, between two turns of its loop, and
answers ``op_done``. The control process shows the progress (nodes leaving,
re-attaching) and the summary.

- **drain N**: the shard answers new attaches with ``RetryLater`` and closes its
  listening socket, then ends every node stream. The nodes keep their tasks and
  spool (as at any shard loss) and reconnect; SO_REUSEPORT gives the connection to a
  shard that still listens. A drained shard stays alive (its rings beat) and takes no
  node until ``restart N``.
- **restart N**: the shard's own stop ladder (its nodes reconnect to the others),
  then a fresh process on the same rings.
- **scale K**: up, new ring pairs first (the control process attaches to them and
  says so), then the new shards; down, the highest shards are drained, stopped, let
  go by the control process (after it read their last messages) and their rings
  removed. A shard index is always ``0 … K-1``.

Only one operation runs at a time (the control process serializes them); each
answers within its own bound.
"""

import contextlib
from typing import TYPE_CHECKING, Any

from cortexd import systemd
from cortexd.childproc import RingPaths, report
from cortexd.children import Child, await_event, terminate
from cortexd.ipc.link import make_fifo
from cortexd.ipc.ring import Ring
from cortexd.metrics import procdir
from cortexd.runtime import BootError, ring_prefix

if TYPE_CHECKING:
    from cortexd.supervisor import Supervisor

DRAIN_TIMEOUT_S = 30.0
CONTROL_ACK_TIMEOUT_S = 15.0
MAX_SHARDS = 64


class OpError(Exception):
    """An operation refused or failed; its message goes back to the operator."""


class ShardSet:
    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup

    def _tick(self) -> None:
        systemd.watchdog_tick(self.sup)  # an operation must not starve the watchdog

    def handle(self, msg: dict[str, Any]) -> None:
        """One ``shard_op`` map from the control process: do it, answer ``op_done``."""
        sup = self.sup
        op = str(msg.get("op", ""))
        try:
            if op == "drain":
                message = self.drain(self._shard(msg))
            elif op == "restart":
                message = self.restart(self._shard(msg))
            elif op == "scale":
                message = self.scale(int(msg.get("count", 0)))
            else:
                raise OpError(f"unknown shard operation {op!r}")
            ok = True
        except (OpError, BootError) as e:
            ok, message = False, str(e)
        sup.log.info("shard_op", op=op, ok=ok, message=message, shards=len(sup.shards))
        if sup.control.conn is not None:
            with contextlib.suppress(OSError):
                report(sup.control.conn, "op_done", op_id=msg.get("op_id", 0), ok=ok,
                       message=message, shards=len(sup.shards),
                       drained=[c.shard for c in sup.shards if c.drained])

    def _shard(self, msg: dict[str, Any]) -> Child:
        index = int(msg.get("shard", -1))
        if not 0 <= index < len(self.sup.shards):
            raise OpError(f"no shard {index} (this host has shards 0-{len(self.sup.shards) - 1})")
        return self.sup.shards[index]

    # -- drain and restart ---------------------------------------------------------

    def drain(self, child: Child, last_ok: bool = False) -> str:
        if child.drained:
            return f"shard {child.shard} was already drained"
        others = [c for c in self.sup.shards if c is not child and not c.drained and c.alive()]
        if not others and not last_ok:
            raise OpError(f"shard {child.shard} is the last shard that accepts nodes")
        if not child.alive() or child.conn is None:
            raise OpError(f"shard {child.shard} is not running")
        report(child.conn, "drain")
        done = await_event(child, "drained", DRAIN_TIMEOUT_S, self._tick)
        if done is None:
            raise OpError(f"shard {child.shard} did not drain within {DRAIN_TIMEOUT_S:.0f} s")
        child.drained = True
        return f"shard {child.shard} drained: {done.get('nodes', 0)} node streams ended"

    def restart(self, child: Child) -> str:
        sup = self.sup
        old = child.pid
        terminate(child, sup.s.shutdown_grace_s)
        sup.count_restart(child)
        child.restarts += 1
        child.drained = False
        sup.spawn_ready(child)
        return f"shard {child.shard} restarted (pid {old} -> {child.pid})"

    # -- scale ---------------------------------------------------------------------

    def scale(self, count: int) -> str:
        sup = self.sup
        if not 1 <= count <= MAX_SHARDS:
            raise OpError(f"a host runs 1 to {MAX_SHARDS} shards, not {count}")
        before = len(sup.shards)
        note = ""
        if count < before and all(c.drained for c in sup.shards[:count]):
            # The shards that stay would take no node: the first one takes them again.
            note = "; " + self.restart(sup.shards[0])
        while len(sup.shards) < count:
            self._add()
        while len(sup.shards) > count:
            self._remove()
        sup.set_shard_count(count)
        return f"shards {before} -> {count}{note}"

    def _add(self) -> None:
        sup = self.sup
        index = len(sup.shards)
        paths = RingPaths.for_shard(ring_prefix(), index)
        for path in paths.all():  # a ring of a shard removed earlier is gone already
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        capacity = sup.s.ring_capacity_bytes
        sup.ring_objs += [Ring(paths.up, create=True, capacity=capacity),
                          Ring(paths.down, create=True, capacity=capacity)]
        make_fifo(paths.up_wake)
        make_fifo(paths.down_wake)
        sup.rings.append(paths)
        self._ask_control("shard_added", "shard_attached", shard=index,
                          paths=[str(p) for p in paths.all()])
        child = Child(f"shard-{index}", index)
        sup.shards.append(child)
        sup.set_shard_count(len(sup.shards))
        sup.spawn_ready(child)

    def _remove(self) -> None:
        sup = self.sup
        child = sup.shards[-1]
        if child.alive() and not child.drained:
            self.drain(child, last_ok=True)
        terminate(child, sup.s.shutdown_grace_s)
        procdir.mark_dead(child.pid)  # its gauges leave the scrape; its counters stay
        if child.conn is not None:
            child.conn.close()
            child.conn = None
        self._ask_control("shard_removed", "shard_released", shard=child.shard)
        sup.shards.pop()
        for ring in sup.ring_objs[-2:]:
            ring.close()
        del sup.ring_objs[-2:]
        for path in sup.rings.pop().all():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _ask_control(self, event: str, answer: str, **fields: Any) -> None:
        control = self.sup.control
        if control.conn is None:
            raise OpError("the control process is not running")
        report(control.conn, event, **fields)
        if await_event(control, answer, CONTROL_ACK_TIMEOUT_S, self._tick) is None:
            raise OpError(f"the control process did not answer {event} within "
                          f"{CONTROL_ACK_TIMEOUT_S:.0f} s")

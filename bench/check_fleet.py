"""A smoke check of the fleet's fault behaviour against the real cortexd (not a benchmark).

    python -m bench.check_fleet

Simulated nodes get a hub list whose first address refuses connections (they must move
on), run tasks that print for a while, and the hub is SIGKILLed mid-task and restarted on
the same ports: the nodes re-attach, report the tasks they hold in Hello, obey the
verdicts, and the run ends with every task terminal at the hub and no (task, attempt)
executed twice by the nodes' own records. Prints a JSON summary; exit 1 on a violation.
"""

import json
import socket
import sys
from collections import Counter

import grpc

from bench.harness import control_stub, running_hub
from cortex.tokens import bearer
from cortex.v1 import control_pb2
from examples.localfleet import wait_until

TERMINAL = {control_pb2.SUCCEEDED, control_pb2.FAILED, control_pb2.CANCELLED,
            control_pb2.TIMED_OUT, control_pb2.LOST}


def _closed_port() -> int:
    with socket.socket() as s:  # bound and closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    tasks, nodes = 20, 10
    with running_hub(2) as b:
        hub = b.hub
        dead = f"127.0.0.1:{_closed_port()}"
        b.start_fleets(nodes, 1, 180, extra=["--stream-bps", "2000", "--stream-s", "6"],
                       hubs=f"{dead},{hub.node_address}")
        b.wait_attached(60)
        with grpc.insecure_channel(hub.control_address) as ch:
            stub = control_stub(ch)
            ids = [stub.Submit(control_pb2.SubmitRequest(command=f"true # c{i}"),
                               metadata=bearer(b.token), timeout=30).task.task_id
                   for i in range(tasks)]
        wait_until(lambda: sum(s.get("bytes_acked", 0) for s in b.statuses()) > 0, 60,
                   "output to flow")
        hub.kill()
        hub.start()
        b.wait_attached(120)

        def states() -> list[int]:
            with grpc.insecure_channel(hub.control_address) as ch:
                stub = control_stub(ch)
                return [stub.GetTask(control_pb2.GetTaskRequest(task_id=t),
                                     metadata=bearer(b.token), timeout=30).state for t in ids]
        wait_until(lambda: all(s in TERMINAL for s in states()), 120, "every task to end",
                   interval_s=0.5)
        final = Counter(control_pb2.TaskState.Name(s) for s in states())
        reports = b.stop_fleets()
    executed = [tuple(k) for r in reports for ks in r["executed"].values() for k in ks]
    twice = [k for k, n in Counter(executed).items() if n > 1]
    summary = {"dead_address": dead, "states": dict(final), "executed": len(executed),
               "executed_twice": twice,
               **{k: sum(r[k] for r in reports) for k in (
                   "attach_failures", "dropped", "retry_later", "kept_by_verdict",
                   "killed_by_verdict", "already_ran", "bytes_acked")}}
    print(json.dumps(summary, indent=2))
    return 1 if twice else 0


if __name__ == "__main__":
    sys.exit(main())

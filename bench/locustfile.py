"""A Locust user for the Control API: Submit a task, then Watch it to its end.

    export CORTEX_CONTROL=127.0.0.1:PORT CORTEX_TOKEN_FILE=STATE/admin.token
    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s

(``CORTEX_TOKEN`` may carry the token itself; ``CORTEX_COMMAND`` the task's command,
default ``true``.) Two request types are reported: ``Submit`` (the call alone) and
``submit+watch`` (from the Submit until the Watch stream shows a terminal state: the
result is durable at the hub). A task that ends in any state but SUCCEEDED counts as a
failure. Needs nodes attached to the hub: ``python -m bench.serve --nodes 100`` starts a
hub with a simulated fleet and prints these variables.

Locust runs users as gevent greenlets, so gRPC's gevent support is switched on before any
channel is made; the synchronous stubs then yield to other users while they wait.
"""

import os
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent  # type: ignore[import-not-found]
from locust import User, constant, task

from cortex.tokens import bearer
from cortex.v1 import control_pb2, control_pb2_grpc

grpc_gevent.init_gevent()

TERMINAL = {control_pb2.SUCCEEDED, control_pb2.FAILED, control_pb2.CANCELLED,
            control_pb2.TIMED_OUT, control_pb2.LOST}
TIMEOUT_S = float(os.environ.get("CORTEX_TIMEOUT_S", "60"))


def _token() -> str:
    if "CORTEX_TOKEN" in os.environ:
        return os.environ["CORTEX_TOKEN"]
    return Path(os.environ["CORTEX_TOKEN_FILE"]).read_text().strip()


class TaskFailed(Exception):
    pass


class ControlUser(User):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(os.environ["CORTEX_CONTROL"])
        self.stub: Any = control_pb2_grpc.ControlStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = bearer(_token())
        self.command = os.environ.get("CORTEX_COMMAND", "true")

    def on_stop(self) -> None:
        self.channel.close()

    def _report(self, name: str, started: float, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - started)
            * 1000, response_length=0, exception=error, context={})

    @task
    def submit_and_watch(self) -> None:
        t0 = time.perf_counter()
        try:
            resp = self.stub.Submit(control_pb2.SubmitRequest(command=self.command),
                                    metadata=self.metadata, timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            self._report("Submit", t0, e)
            self._report("submit+watch", t0, e)
            return
        self._report("Submit", t0, None)
        error: Exception | None = TaskFailed("the Watch stream ended before the task did")
        try:
            for ev in self.stub.Watch(control_pb2.WatchRequest(task_id=resp.task.task_id,
                                                               no_output=True),
                                      metadata=self.metadata, timeout=TIMEOUT_S):
                if ev.WhichOneof("kind") == "state" and ev.state.state in TERMINAL:
                    ok = ev.state.state == control_pb2.SUCCEEDED
                    error = None if ok else TaskFailed(control_pb2.TaskState.Name(
                        ev.state.state))
                    break
        except grpc.RpcError as e:
            error = e
        self._report("submit+watch", t0, error)

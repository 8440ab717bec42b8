"""A LocalHub's admin client, and a SubmitMany loop that outlives hub processes killed
under it (for the system tests)."""

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubClient, HubSettings, client_tls
from examples.localfleet import wait_until


def admin_client(hub: Any, timeout_s: float = 10.0) -> HubClient:
    """A HubClient of ``hub`` (examples.localfleet.LocalHub) with its admin token."""
    token = hub.admin_token_file.read_text().strip()
    return HubClient(HubSettings(address=hub.control_address, token=token,
                                 tls=client_tls(None, None, None, False),
                                 insecure_loopback=True, timeout_s=timeout_s))


class KeyedSubmitter:
    """SubmitMany of keyed tasks (each appends its key to ``ran``), ``batch`` at a time; a
    call that fails is sent again with the same keys. ``kills`` maps a batch number to
    what to kill right after that batch's first call was sent. Counts: ``acked`` (key ->
    task id), ``failed_calls`` (resent), ``in_flight`` (kills that found their call not
    answered yet: gRPC retries a call cut before its request left the client by itself,
    so a kill in flight is not always a failed call)."""

    def __init__(self, hub: Any, ran: Path, kills: dict[int, Callable[[], None]],
                 tasks: int, batch: int, bound_s: float = 120.0) -> None:
        self.hub, self.ran, self.kills = hub, ran, kills
        self.tasks, self.batch = tasks, batch
        self.acked: dict[str, str] = {}
        self.failed_calls = 0
        self.in_flight = 0
        self.stop_at = time.monotonic() + bound_s

    def run(self) -> None:
        with admin_client(self.hub) as c:
            for number, start in enumerate(range(0, self.tasks, self.batch)):
                keys = [f"k-{i}" for i in range(start, start + self.batch)]
                self._submit(c, keys, self.kills.get(number))

    def _submit(self, c: HubClient, keys: list[str], kill: Callable[[], None] | None) -> None:
        request = pb.SubmitManyRequest(tasks=[
            pb.SubmitRequest(command=f"echo {k} >> {self.ran}", idempotency_key=k)
            for k in keys])
        while time.monotonic() < self.stop_at:
            call = c._stub.SubmitMany.future(request, timeout=10, metadata=c._metadata)
            if kill is not None:
                self.in_flight += not call.done()
                kill()
                kill = None
            try:
                results = call.result().results
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED), e
                self.failed_calls += 1
                time.sleep(0.2)  # a pause before the resend, not a wait for anything
                continue
            for key, result in zip(keys, results, strict=True):
                assert result.HasField("submitted"), (key, result)
                self.acked[key] = result.submitted.task.task_id
            return
        raise TimeoutError("the hub did not take a batch within the bound")

    def check_every_acked_ran_once(self, client: HubClient) -> None:
        """Wait (bounded) until every task ended; then: one task per key, each
        acknowledged one SUCCEEDED, each key in ``ran`` exactly once."""
        def all_ended() -> bool:
            tasks = client.list_tasks(limit=10_000)
            return len(tasks) >= self.tasks and all(
                t.state in (pb.SUCCEEDED, pb.FAILED, pb.LOST, pb.CANCELLED) for t in tasks)
        wait_until(all_ended, 180, "every task to end", interval_s=0.5)
        tasks = {t.task_id: t for t in client.list_tasks(limit=10_000)}
        assert len(tasks) == self.tasks, "one task per key, none created twice"
        for key, task_id in self.acked.items():
            assert (tasks[task_id].state, tasks[task_id].idempotency_key) == (pb.SUCCEEDED, key)
        runs = Counter(self.ran.read_text().split())
        assert set(runs) == set(self.acked), "every acknowledged task ran"
        assert not {k: n for k, n in runs.items() if n != 1}, "none ran twice"

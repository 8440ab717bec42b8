"""The Control API client: one gRPC channel, typed calls, errors as CtlError.

Every unary call carries the bearer token and the ``--timeout`` deadline; a
failure comes back as a :class:`CtlError` with the operator-facing message and
exit status (see ``errors.from_rpc``). ``watch`` returns the raw stream: it has
no deadline and its errors surface while iterating (``follow`` handles them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc

from cortex import tls
from cortex.errors import ConfigError
from cortex.tlsdiag import Probe
from cortex.tokens import bearer
from cortex.v1 import control_pb2 as pb
from cortex.v1 import control_pb2_grpc
from cortexctl.errors import CtlError, UsageError, from_rpc, remember_probe

#: Output chunks are at most 64 KiB (docs/protocol.md); leave room for a larger hub.
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
DEFAULT_LIST_LIMIT = 100  # the hub's page when a ListTasks names no limit

Resp = TypeVar("Resp")


class RunDeadline(CtlError):
    """A Run whose task was still going at the deadline; ``task_id`` names it ("" if the
    hub never said)."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Where the hub is and how to talk to it; built once from flags and environment."""

    address: str
    token: str
    tls: tls.ClientTLS
    insecure_loopback: bool = False
    timeout_s: float = 10.0


def client_tls(ca_file: str | None, cert_file: str | None, key_file: str | None,
               force: bool, server_name: str = "") -> tls.ClientTLS:
    """TLS is on when asked for (``--tls``) or when any TLS file is given."""
    if (cert_file is None) != (key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    return tls.ClientTLS(
        ca_file=Path(ca_file) if ca_file else None,
        cert_file=Path(cert_file) if cert_file else None,
        key_file=Path(key_file) if key_file else None,
        enabled=force or any((ca_file, cert_file, key_file, server_name)),
        server_name=server_name,
    )


def open_channel(settings: HubSettings) -> grpc.Channel:
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
    options += tls.channel_name_options(settings.tls)
    # If this channel fails to connect, errors.from_rpc probes what TLS did wrong.
    remember_probe(Probe(settings.address, settings.tls, not settings.tls.enabled))
    try:
        tls.check_plaintext(settings.address, settings.tls.enabled, settings.insecure_loopback,
                            "hub")
        if settings.tls.enabled:
            creds = tls.channel_credentials(settings.tls)
            return grpc.secure_channel(settings.address, creds, options=options)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    return grpc.insecure_channel(settings.address, options=options)


class HubClient:
    """Typed calls on ``cortex.v1.Control``; use as a context manager to close the channel."""

    def __init__(self, settings: HubSettings, channel: grpc.Channel | None = None) -> None:
        self.settings = settings
        self._channel = channel if channel is not None else open_channel(settings)
        self._metadata = bearer(settings.token)
        # The generated stub (untyped: grpc_tools writes no stubs for it); the
        # methods below give each call its types.
        self._stub: Any = control_pb2_grpc.ControlStub(  # type: ignore[no-untyped-call]
            self._channel)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: object, resp: type[Resp], subject: str = "") -> Resp:
        try:
            return cast(Resp, getattr(self._stub, method)(
                request, timeout=self.settings.timeout_s, metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, subject) from e

    def submit_many(self, requests: list[pb.SubmitRequest]) -> list[pb.SubmitResult]:
        """One SubmitMany call; a result per request, in order."""
        response = self._call("SubmitMany", pb.SubmitManyRequest(tasks=requests),
                              pb.SubmitManyResponse)
        return list(response.results)

    def run(self, request: pb.SubmitRequest, wait_s: float | None,
            cancel_on_drop: bool = False) -> pb.RunResponse:
        """Submit and wait for the end; ``wait_s`` None waits as long as the task runs.
        A task still running at the deadline is a CtlError (DEADLINE_EXCEEDED) and goes on."""
        try:
            return cast(pb.RunResponse, self._stub.Run(
                pb.RunRequest(task=request, cancel_on_drop=cancel_on_drop), timeout=wait_s,
                metadata=self._metadata))
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                task_id = dict(e.initial_metadata() or ()).get("cortex-task-id", "")
                raise RunDeadline(e.details() or "the task outlived --wait", task_id) from e
            raise from_rpc(e, self.settings.address) from e

    def submit(self, request: pb.SubmitRequest) -> pb.SubmitResponse:
        return self._call("Submit", request, pb.SubmitResponse)

    def get_task(self, task_id: str) -> pb.Task:
        return self._call("GetTask", pb.GetTaskRequest(task_id=task_id), pb.Task,
                          f"task {task_id}")

    def cancel(self, task_id: str, reason: str = "") -> pb.Task:
        request = pb.CancelRequest(task_id=task_id, reason=reason)
        return self._call("Cancel", request, pb.CancelResponse, f"task {task_id}").task

    def send_input(self, task_id: str, data: bytes) -> int:
        request = pb.SendInputRequest(task_id=task_id, data=data)
        return self._call("SendInput", request, pb.SendInputResponse, f"task {task_id}").attempt

    def list_nodes(self) -> list[pb.Node]:
        """Every node, by node_id, page after page."""
        nodes: list[pb.Node] = []
        token = ""
        while True:
            response = self._call("ListNodes", pb.ListNodesRequest(page_token=token),
                                  pb.ListNodesResponse)
            nodes += response.nodes
            token = response.next_page_token
            if not token or not response.nodes:
                return nodes

    def list_tasks(self, state: str = "TASK_STATE_UNSPECIFIED", node_id: str = "",
                   limit: int = 0, attention: bool = False) -> list[pb.Task]:
        """Newest first, page after page until ``limit`` tasks (0: the hub's default page,
        100) or the last page. A listed command is cut at 1 KiB (``command_truncated``);
        get_task has the whole."""
        wanted = limit or DEFAULT_LIST_LIMIT
        tasks: list[pb.Task] = []
        token = ""
        while len(tasks) < wanted:
            request = pb.ListTasksRequest(state=state, node_id=node_id,
                                          limit=wanted - len(tasks), attention=attention,
                                          page_token=token)
            response = self._call("ListTasks", request, pb.ListTasksResponse)
            tasks += response.tasks
            token = response.next_page_token
            if not token or not response.tasks:
                break
        return tasks

    def list_shards(self) -> list[pb.Shard]:
        return list(self._call("ListShards", pb.ListShardsRequest(), pb.ListShardsResponse).shards)

    def watch(self, task_id: str, from_offset: int = 0,
              no_output: bool = False) -> grpc.CallIterator[pb.WatchEvent]:
        """Open a Watch stream; errors are raised while iterating it (as grpc.RpcError)."""
        request = pb.WatchRequest(task_id=task_id, from_offset=from_offset, no_output=no_output)
        return cast("grpc.CallIterator[pb.WatchEvent]",
                    self._stub.Watch(request, metadata=self._metadata))

    def journal(self, task_id: str) -> pb.Journal:
        return self._call("GetJournal", pb.GetJournalRequest(task_id=task_id), pb.Journal,
                          f"task {task_id}")

    def read_logs(self, task_id: str, attempt: int = 0, offset: int = 0,
                  length: int = 0) -> grpc.CallIterator[pb.LogData]:
        """Open a ReadLogs stream; errors are raised while iterating it (as grpc.RpcError).
        No deadline: a long range takes as long as the node needs to read it."""
        request = pb.ReadLogsRequest(task_id=task_id, attempt=attempt, offset=offset,
                                     length=length)
        return cast("grpc.CallIterator[pb.LogData]",
                    self._stub.ReadLogs(request, metadata=self._metadata))

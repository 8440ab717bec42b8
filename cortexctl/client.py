"""The Control API client: one gRPC channel, typed calls, errors as CtlError.

Every unary call carries the bearer token and the ``--timeout`` deadline; a
failure comes back as a :class:`CtlError` with the operator-facing message and
exit status (see ``errors.from_rpc``). ``watch`` returns the raw stream: it has
no deadline and its errors surface while iterating (``follow`` handles them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from cortex import tls
from cortex.errors import ConfigError
from cortex.tokens import bearer
from cortex.v1 import control_pb2 as pb
from cortexctl.errors import UsageError, from_rpc

SERVICE = "/cortex.v1.Control/"
#: Output chunks are at most 64 KiB (docs/protocol.md); leave room for a larger hub.
MAX_RECEIVE_BYTES = 16 * 1024 * 1024

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Where the hub is and how to talk to it; built once from flags and environment."""

    address: str
    token: str
    tls: tls.ClientTLS
    insecure_loopback: bool = False
    timeout_s: float = 10.0


def client_tls(ca_file: str | None, cert_file: str | None, key_file: str | None,
               force: bool) -> tls.ClientTLS:
    """TLS is on when asked for (``--tls``) or when any TLS file is given."""
    if (cert_file is None) != (key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    return tls.ClientTLS(
        ca_file=Path(ca_file) if ca_file else None,
        cert_file=Path(cert_file) if cert_file else None,
        key_file=Path(key_file) if key_file else None,
        enabled=force or any((ca_file, cert_file, key_file)),
    )


def open_channel(settings: HubSettings) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
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
        ch = self._channel
        self._submit: grpc.UnaryUnaryMultiCallable[pb.SubmitRequest, pb.SubmitResponse] = (
            ch.unary_unary(SERVICE + "Submit", pb.SubmitRequest.SerializeToString,
                           pb.SubmitResponse.FromString))
        self._get: grpc.UnaryUnaryMultiCallable[pb.GetTaskRequest, pb.Task] = ch.unary_unary(
            SERVICE + "GetTask", pb.GetTaskRequest.SerializeToString, pb.Task.FromString)
        self._watch: grpc.UnaryStreamMultiCallable[pb.WatchRequest, pb.WatchEvent] = (
            ch.unary_stream(SERVICE + "Watch", pb.WatchRequest.SerializeToString,
                            pb.WatchEvent.FromString))
        self._cancel: grpc.UnaryUnaryMultiCallable[pb.CancelRequest, pb.CancelResponse] = (
            ch.unary_unary(SERVICE + "Cancel", pb.CancelRequest.SerializeToString,
                           pb.CancelResponse.FromString))
        self._input: grpc.UnaryUnaryMultiCallable[pb.SendInputRequest, pb.SendInputResponse] = (
            ch.unary_unary(SERVICE + "SendInput", pb.SendInputRequest.SerializeToString,
                           pb.SendInputResponse.FromString))
        self._nodes: grpc.UnaryUnaryMultiCallable[pb.ListNodesRequest, pb.ListNodesResponse] = (
            ch.unary_unary(SERVICE + "ListNodes", pb.ListNodesRequest.SerializeToString,
                           pb.ListNodesResponse.FromString))
        self._tasks: grpc.UnaryUnaryMultiCallable[pb.ListTasksRequest, pb.ListTasksResponse] = (
            ch.unary_unary(SERVICE + "ListTasks", pb.ListTasksRequest.SerializeToString,
                           pb.ListTasksResponse.FromString))
        self._shards: grpc.UnaryUnaryMultiCallable[pb.ListShardsRequest, pb.ListShardsResponse] = (
            ch.unary_unary(SERVICE + "ListShards", pb.ListShardsRequest.SerializeToString,
                           pb.ListShardsResponse.FromString))
        self._journal: grpc.UnaryUnaryMultiCallable[pb.GetJournalRequest, pb.Journal] = (
            ch.unary_unary(SERVICE + "GetJournal", pb.GetJournalRequest.SerializeToString,
                           pb.Journal.FromString))
        self._logs: grpc.UnaryStreamMultiCallable[pb.ReadLogsRequest, pb.LogData] = (
            ch.unary_stream(SERVICE + "ReadLogs", pb.ReadLogsRequest.SerializeToString,
                            pb.LogData.FromString))

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., Resp], request: object, subject: str = "") -> Resp:
        try:
            return method(request, timeout=self.settings.timeout_s, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, subject) from e

    def submit(self, request: pb.SubmitRequest) -> pb.SubmitResponse:
        return self._call(self._submit, request)

    def get_task(self, task_id: str) -> pb.Task:
        return self._call(self._get, pb.GetTaskRequest(task_id=task_id), f"task {task_id}")

    def cancel(self, task_id: str, reason: str = "") -> pb.Task:
        request = pb.CancelRequest(task_id=task_id, reason=reason)
        return self._call(self._cancel, request, f"task {task_id}").task

    def send_input(self, task_id: str, data: bytes) -> int:
        request = pb.SendInputRequest(task_id=task_id, data=data)
        return self._call(self._input, request, f"task {task_id}").attempt

    def list_nodes(self) -> list[pb.Node]:
        return list(self._call(self._nodes, pb.ListNodesRequest()).nodes)

    def list_tasks(self, state: str = "TASK_STATE_UNSPECIFIED", node_id: str = "",
                   limit: int = 0) -> list[pb.Task]:
        request = pb.ListTasksRequest(state=state, node_id=node_id, limit=limit)
        return list(self._call(self._tasks, request).tasks)

    def list_shards(self) -> list[pb.Shard]:
        return list(self._call(self._shards, pb.ListShardsRequest()).shards)

    def watch(self, task_id: str, from_offset: int = 0,
              no_output: bool = False) -> grpc.CallIterator[pb.WatchEvent]:
        """Open a Watch stream; errors are raised while iterating it (as grpc.RpcError)."""
        request = pb.WatchRequest(task_id=task_id, from_offset=from_offset, no_output=no_output)
        return self._watch(request, metadata=self._metadata)

    def journal(self, task_id: str) -> pb.Journal:
        return self._call(self._journal, pb.GetJournalRequest(task_id=task_id), f"task {task_id}")

    def read_logs(self, task_id: str, attempt: int = 0, offset: int = 0,
                  length: int = 0) -> grpc.CallIterator[pb.LogData]:
        """Open a ReadLogs stream; errors are raised while iterating it (as grpc.RpcError).
        No deadline: a long range takes as long as the node needs to read it."""
        request = pb.ReadLogsRequest(task_id=task_id, attempt=attempt, offset=offset,
                                     length=length)
        return self._logs(request, metadata=self._metadata)

"""Follow one task's Watch stream to its end, resuming across hub restarts.

The hub sends the task's state first, then output chunks from ``from_offset``,
then live states and output until the task is terminal, then ends the stream.
The follower keeps the offset it has written up to, so after a lost connection
it reopens the stream at that offset: nothing is written twice and a gap (which
the hub should never produce) is reported on stderr, not hidden. Offsets belong
to one attempt; when a new attempt shows up, following restarts at its offset 0.

Reconnecting is bounded (``reconnect_s``) and only happens after the hub has
answered once: a hub that is not there at all is reported at once.
"""

import base64
import json
import sys
import time
from typing import Protocol

import grpc

from cortex.v1 import control_pb2 as pb
from cortexctl import render
from cortexctl.client import HubClient
from cortexctl.errors import CtlError, from_rpc

#: Stream failures worth reopening the stream for (hub restarting, connection cut).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                       grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL})
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 2.0


class Sink(Protocol):
    def state(self, task: pb.Task) -> None: ...
    def output(self, chunk: pb.OutputChunk, data: bytes) -> None: ...
    def prompt(self, prompt: pb.Prompt) -> None: ...


class RawSink:
    """Output bytes as they are, to stdout; states are not shown, but what a task waits
    for is said on stderr (a prompt nobody answered)."""

    def __init__(self) -> None:
        self.task_id = ""
        self._said = ""

    def state(self, task: pb.Task) -> None:
        self.task_id = task.task_id
        if task.state == pb.QUEUED and task.queue_reason and task.queue_reason != self._said:
            self._said = task.queue_reason  # a follow that hangs says why (issue 13)
            notice(f"task {task.task_id} waits in QUEUED: {task.queue_reason}")

    def output(self, chunk: pb.OutputChunk, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def prompt(self, prompt: pb.Prompt) -> None:
        # The terminal shows the prompt itself; say (on stderr) that the task now waits
        # and how to answer: the output alone does not tell a person it is stuck.
        if prompt.kind not in render.NOT_WAITING_KINDS | {"shell_ready"} and self.task_id:
            notice(f"task {self.task_id} waits for input ({prompt.kind}; answer: "
                   f"cortexctl input {self.task_id} TEXT)")


class JsonSink:
    """One JSON line per event: ``{"event": "state", "task": {...}}`` or
    ``{"event": "output", "attempt": N, "offset": N, "data_b64": "..."}`` or
    ``{"event": "prompt", "prompt": {...}}`` (the node's prompt detector)."""

    def prompt(self, prompt: pb.Prompt) -> None:
        self._emit({"event": "prompt", "prompt": render.prompt_dict(prompt)})

    def state(self, task: pb.Task) -> None:
        self._emit({"event": "state", "task": render.task_dict(task)})

    def output(self, chunk: pb.OutputChunk, data: bytes) -> None:
        skipped = len(chunk.data) - len(data)
        self._emit({"event": "output", "attempt": chunk.attempt, "offset": chunk.offset + skipped,
                    "data_b64": base64.b64encode(data).decode("ascii")})

    @staticmethod
    def _emit(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def notice(message: str) -> None:
    print(f"cortexctl: {message}", file=sys.stderr, flush=True)


class Follower:
    def __init__(self, client: HubClient, task_id: str, sink: Sink, *, from_offset: int = 0,
                 reconnect_s: float = 30.0, no_output: bool = False) -> None:
        self.client = client
        self.task_id = task_id
        self.sink = sink
        self.offset = from_offset
        self.reconnect_s = reconnect_s
        self.no_output = no_output
        self.attempt: int | None = None
        self.task: pb.Task | None = None

    def run(self) -> pb.Task:
        """Follow until the task is terminal; return its final state."""
        lost_at: float | None = None
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                if self._stream_once():
                    assert self.task is not None
                    return self.task
                error = "the stream ended before the task did"
            except grpc.RpcError as e:
                if self.task is None or not isinstance(e, grpc.Call) or e.code() not in RETRYABLE:
                    raise from_rpc(e, self.client.settings.address, f"task {self.task_id}") from e
                error = from_rpc(e, self.client.settings.address).args[0]
            now = time.monotonic()
            if lost_at is None:
                lost_at = now
                notice(f"{error}; reconnecting for up to {self.reconnect_s:g}s")
            if now - lost_at >= self.reconnect_s:
                raise CtlError(f"gave up following task {self.task_id}: {error}")
            time.sleep(backoff)  # backoff between reconnect attempts, not synchronisation
            backoff = min(BACKOFF_CAP_S, backoff * 2)

    def _stream_once(self) -> bool:
        """One Watch stream; True when the task reached a terminal state."""
        call = self.client.watch(self.task_id, self.offset, self.no_output)
        opened = True
        try:
            for event in call:
                if event.HasField("state"):
                    if self._on_state(event.state, opened):
                        return False  # another attempt than ours: reopen at its offset 0
                    opened = False
                elif event.HasField("output"):
                    self._on_output(event.output)
                elif event.HasField("prompt"):
                    self.sink.prompt(event.prompt)
                elif event.HasField("attention"):  # a monitor escalated to a person
                    notice(f"task {self.task_id} needs a person: {event.attention} "
                           f"(answer: cortexctl input {self.task_id} TEXT)" if event.attention
                           else f"task {self.task_id}: answered")
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped
        return self.task is not None and self.task.state in render.TERMINAL_STATES

    def _on_state(self, task: pb.Task, opened: bool) -> bool:
        """Record a state; True when a freshly opened stream is at another attempt."""
        self.task = task
        self.sink.state(task)
        if self.attempt is None:
            self.attempt = task.attempt
        elif opened and task.attempt > self.attempt:
            notice(f"task {self.task_id} is now at attempt {task.attempt}; following it from 0")
            self.attempt, self.offset = task.attempt, 0
            return True
        return False

    def _on_output(self, chunk: pb.OutputChunk) -> None:
        if self.attempt is None or chunk.attempt > self.attempt:
            if self.attempt is not None:
                notice(f"task {self.task_id}: attempt {chunk.attempt} started")
            self.attempt, self.offset = chunk.attempt, 0
        elif chunk.attempt < self.attempt:
            return  # a superseded attempt's output
        if chunk.offset > self.offset:
            notice(f"task {self.task_id}: output bytes {self.offset}..{chunk.offset} are missing")
            self.offset = chunk.offset
        data = chunk.data[self.offset - chunk.offset:]
        if data:
            self.sink.output(chunk, data)
            self.offset += len(data)

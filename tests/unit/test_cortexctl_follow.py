"""The follower against a scripted Watch stream: offsets, resume, attempts, giving up."""

import grpc
import pytest
from test_cortexctl_cli import FakeRpcError  # noqa: I001 (sibling test module)

from cortex import tls
from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubSettings
from cortexctl.errors import CtlError
from cortexctl.follow import Follower

TID = "t-0123456789abcdef0123"


def state(s: int, attempt: int = 1) -> pb.WatchEvent:
    return pb.WatchEvent(state=pb.Task(task_id=TID, state=s, attempt=attempt))


def out(offset: int, data: bytes, attempt: int = 1) -> pb.WatchEvent:
    return pb.WatchEvent(output=pb.OutputChunk(attempt=attempt, offset=offset, data=data))


class Stream:
    def __init__(self, events, error=None):
        self.events, self.error, self.cancelled = events, error, False

    def __iter__(self):
        yield from self.events
        if self.error is not None:
            raise self.error

    def cancel(self):
        self.cancelled = True


class ScriptedHub:
    """Answers each Watch with the next scripted stream and records the offsets asked for."""

    def __init__(self, *streams):
        self.streams = list(streams)
        self.opened: list[int] = []
        self.settings = HubSettings("h:1", "tok", tls.ClientTLS())

    def watch(self, task_id, from_offset=0, no_output=False):
        self.opened.append(from_offset)
        return self.streams.pop(0)


class Collect:
    def __init__(self):
        self.data = b""
        self.states: list[int] = []

    def state(self, task):
        self.states.append(task.state)

    def output(self, chunk, data):
        self.data += data


def follow(hub, **kw):
    sink = Collect()
    task = Follower(hub, TID, sink, **kw).run()
    return task, sink


def test_follows_to_the_terminal_state():
    hub = ScriptedHub(Stream([state(pb.RUNNING), out(0, b"ab"), out(2, b"cd"),
                              state(pb.SUCCEEDED)]))
    task, sink = follow(hub)
    assert task.state == pb.SUCCEEDED and sink.data == b"abcd"
    assert sink.states == [pb.RUNNING, pb.SUCCEEDED]


def test_resumes_at_its_offset_and_drops_overlap():
    lost = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "hub restarting")
    hub = ScriptedHub(
        Stream([state(pb.RUNNING), out(0, b"hello ")], error=lost),
        Stream([state(pb.RUNNING), out(3, b"lo world"), state(pb.SUCCEEDED)]),
    )
    task, sink = follow(hub, reconnect_s=5)
    assert sink.data == b"hello world"
    assert hub.opened == [0, 6]
    assert task.state == pb.SUCCEEDED


def test_stream_ending_early_is_resumed():
    hub = ScriptedHub(Stream([state(pb.RUNNING), out(0, b"x")]),
                      Stream([state(pb.SUCCEEDED), out(1, b"y")]))
    _, sink = follow(hub, reconnect_s=5)
    assert sink.data == b"xy" and hub.opened == [0, 1]


def test_a_new_attempt_restarts_at_its_offset_zero():
    hub = ScriptedHub(Stream([state(pb.RUNNING, 1), out(0, b"first"),
                              out(0, b"second", attempt=2), out(1, b"late", attempt=1),
                              state(pb.SUCCEEDED, 2)]))
    _, sink = follow(hub)
    assert sink.data == b"firstsecond"


def test_unknown_task_is_not_retried():
    hub = ScriptedHub(Stream([], error=FakeRpcError(grpc.StatusCode.NOT_FOUND, "no such task")))
    with pytest.raises(CtlError, match=f"task {TID} not found"):
        follow(hub)


def test_unreachable_hub_is_reported_at_once():
    hub = ScriptedHub(Stream([], error=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "refused")))
    with pytest.raises(CtlError, match="cannot reach hub"):
        follow(hub, reconnect_s=60)


def test_gives_up_after_the_reconnect_window():
    lost = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "gone")
    hub = ScriptedHub(Stream([state(pb.RUNNING)], error=lost),
                      *[Stream([], error=lost) for _ in range(50)])
    with pytest.raises(CtlError, match="gave up following"):
        follow(hub, reconnect_s=0.3)

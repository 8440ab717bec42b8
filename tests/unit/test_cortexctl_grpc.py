"""cortexctl's commands against an in-process fake Control server on loopback.

The fake checks the bearer token, records requests and answers from a small
in-memory task table, so these tests cover the real gRPC path (metadata, status
codes, streaming, resume after a dropped stream) without a hub.
"""

import json
from concurrent import futures

import grpc
import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl import cli

TOKEN = "ctk_test-token"
TID = "t-0123456789abcdef0123"


class FakeControl:
    def __init__(self) -> None:
        self.requests: list[object] = []
        self.tasks = {TID: pb.Task(task_id=TID, state=pb.FAILED, attempt=1, node_id="n1",
                                   command="echo hi; exit 3", has_exit_code=True, exit_code=3,
                                   output_bytes=4)}
        self.output = b"hi\r\n"
        self.drop_first_watch_after = 0  # bytes; 0 = never drop

    def _auth(self, context: grpc.ServicerContext) -> None:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")

    def _task(self, task_id: str, context: grpc.ServicerContext) -> pb.Task:
        if task_id not in self.tasks:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no task {task_id}")
        return self.tasks[task_id]

    def submit(self, request: pb.SubmitRequest, context) -> pb.SubmitResponse:
        self._auth(context)
        self.requests.append(request)
        if not request.command:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "command is required")
        return pb.SubmitResponse(task=self.tasks[TID])

    def get_task(self, request: pb.GetTaskRequest, context) -> pb.Task:
        self._auth(context)
        return self._task(request.task_id, context)

    def watch(self, request: pb.WatchRequest, context):
        self._auth(context)
        self.requests.append(request)
        task = self._task(request.task_id, context)
        yield pb.WatchEvent(state=pb.Task(task_id=TID, state=pb.RUNNING, attempt=1))
        data = self.output[request.from_offset:]
        if self.drop_first_watch_after:
            cut, self.drop_first_watch_after = self.drop_first_watch_after, 0
            yield pb.WatchEvent(output=pb.OutputChunk(attempt=1, offset=request.from_offset,
                                                      data=data[:cut]))
            context.abort(grpc.StatusCode.UNAVAILABLE, "shard restarting")
        for i in range(0, len(data), 3):
            yield pb.WatchEvent(output=pb.OutputChunk(
                attempt=1, offset=request.from_offset + i, data=data[i:i + 3]))
        yield pb.WatchEvent(state=task)

    def send_input(self, request: pb.SendInputRequest, context) -> pb.SendInputResponse:
        self._auth(context)
        self.requests.append(request)
        task = self._task(request.task_id, context)
        if task.state != pb.RUNNING:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"task {TID} is finished")
        return pb.SendInputResponse(attempt=1)

    def list_tasks(self, request: pb.ListTasksRequest, context) -> pb.ListTasksResponse:
        self._auth(context)
        self.requests.append(request)
        return pb.ListTasksResponse(tasks=list(self.tasks.values()))

    def list_nodes(self, request, context) -> pb.ListNodesResponse:
        self._auth(context)
        return pb.ListNodesResponse(nodes=[pb.Node(node_id="n1", attached=True, capacity=2)])

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn, req, resp):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString)
        return grpc.method_handlers_generic_handler("cortex.v1.Control", {
            "Submit": unary(self.submit, pb.SubmitRequest, pb.SubmitResponse),
            "GetTask": unary(self.get_task, pb.GetTaskRequest, pb.Task),
            "SendInput": unary(self.send_input, pb.SendInputRequest, pb.SendInputResponse),
            "ListTasks": unary(self.list_tasks, pb.ListTasksRequest, pb.ListTasksResponse),
            "ListNodes": unary(self.list_nodes, pb.ListNodesRequest, pb.ListNodesResponse),
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.watch, request_deserializer=pb.WatchRequest.FromString,
                response_serializer=pb.WatchEvent.SerializeToString),
        })


@pytest.fixture
def fake(monkeypatch):
    control = FakeControl()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((control.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("CORTEX_HUB", f"127.0.0.1:{port}")
    monkeypatch.setenv("CORTEX_TOKEN", TOKEN)
    monkeypatch.setenv("CORTEX_INSECURE_LOOPBACK", "1")
    monkeypatch.setenv("GRPC_VERBOSITY", "NONE")
    monkeypatch.delenv("CORTEX_TOKEN_FILE", raising=False)
    yield control
    server.stop(grace=None)


def test_submit_prints_the_task_id(fake, capsys):
    assert cli.main(["submit", "--env", "A=1", "echo", "hi;", "exit", "3"]) == 0
    assert capsys.readouterr().out == f"{TID}\n"
    request = fake.requests[0]
    assert request.command == "echo hi; exit 3" and dict(request.env) == {"A": "1"}


def test_submit_follow_streams_output_and_exits_with_the_tasks_code(fake, capsysbinary):
    assert cli.main(["submit", "--follow", "--", "echo hi; exit 3"]) == 3
    captured = capsysbinary.readouterr()
    assert captured.out == b"hi\r\n"
    assert b"FAILED, exit code 3" in captured.err


def test_watch_resumes_after_a_dropped_stream_without_duplicates(fake, capsysbinary):
    fake.output = b"".join(b"line %d\r\n" % i for i in range(50))
    fake.drop_first_watch_after = 20
    assert cli.main(["watch", TID, "--reconnect-s", "10"]) == 3
    captured = capsysbinary.readouterr()
    assert captured.out == fake.output
    assert [r.from_offset for r in fake.requests if isinstance(r, pb.WatchRequest)] == [0, 20]
    assert b"reconnecting" in captured.err


def test_watch_json_lines(fake, capsys):
    assert cli.main(["watch", TID, "--json"]) == 3
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "state" and events[-1]["task"]["exit_code"] == 3
    assert sum(1 for e in events if e["event"] == "output") == 2


def test_unknown_task_is_one_line(fake, capsys):
    missing = "t-" + "f" * 20
    assert cli.main(["get", missing]) == 1
    assert capsys.readouterr().err == f"cortexctl: task {missing} not found\n"


def test_bad_token_exits_4(fake, capsys, monkeypatch):
    monkeypatch.setenv("CORTEX_TOKEN", "ctk_wrong")
    assert cli.main(["tasks"]) == 4
    assert capsys.readouterr().err.startswith("cortexctl: hub at 127.0.0.1:")


def test_input_to_a_finished_task_is_refused(fake, capsys):
    assert cli.main(["input", TID, "yes"]) == 1
    assert "is finished" in capsys.readouterr().err
    assert fake.requests[-1].data == b"yes\n"


def test_listings(fake, capsys):
    assert cli.main(["tasks", "--state", "failed", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("TASK") and TID in out
    request = fake.requests[-1]
    assert (request.state, request.limit) == (pb.FAILED, 5)
    assert cli.main(["nodes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["node_id"] == "n1"

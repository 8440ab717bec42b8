"""cortexctl without a hub: argument parsing, requests, exit statuses, rendering, errors."""

import json

import grpc
import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl import cli, commands, exitcodes, render
from cortexctl.errors import CtlError, UsageError, from_rpc

TID = "t-0123456789abcdef0123"


class FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None: ...
    def trailing_metadata(self) -> None: ...
    def is_active(self) -> bool: return False
    def time_remaining(self) -> None: ...
    def cancel(self) -> bool: return False
    def add_callback(self, callback: object) -> bool: return False


@pytest.fixture(autouse=True)
def _grpc_quiet(monkeypatch):
    # cli.main sets GRPC_VERBOSITY with setdefault; keep that out of other tests' environment.
    monkeypatch.setenv("GRPC_VERBOSITY", "NONE")


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_submit_options_go_before_the_command_which_keeps_its_own_flags():
    args = parse("submit", "--node", "n1", "--env", "A=1", "--selector", "os=linux",
                 "--task-timeout", "5", "ls", "-la", "--follow")
    req = commands.submit_request(args)
    assert req.command == "ls -la --follow"
    assert not args.follow
    assert (req.node_id, dict(req.env), dict(req.selector), req.timeout_s) == (
        "n1", {"A": "1"}, {"os": "linux"}, 5)


def test_submit_strips_a_leading_double_dash():
    assert commands.submit_request(parse("submit", "--", "echo", "hi")).command == "echo hi"


@pytest.mark.parametrize("argv, message", [
    (["submit"], "needs a command"),
    (["submit", "--env", "1A=x", "true"], "environment variable"),
    (["submit", "--env", "novalue", "true"], "KEY=VALUE"),
    (["submit", "--selector", "Bad Key=x", "true"], "selector key"),
    (["submit", "--node", "Not/Valid", "true"], "not a valid node id"),
    (["submit", "--idempotency-key", "a b", "true"], "--idempotency-key"),
])
def test_submit_refuses_bad_arguments_before_calling_the_hub(argv, message):
    with pytest.raises(UsageError, match=message):
        commands.submit_request(parse(*argv))


def test_global_flags_work_before_and_after_the_command():
    assert parse("--hub", "h:1", "tasks").hub == "h:1"
    assert parse("tasks", "--hub", "h:2").hub == "h:2"
    assert parse("tasks").timeout == 10.0


def test_bad_task_id_is_a_usage_error(capsys):
    assert cli.main(["get", "nope"]) == exitcodes.USAGE
    assert capsys.readouterr().err.strip() == (
        "cortexctl: 'nope' is not a task id (expected t- and 20 hex digits)")


def test_missing_credential_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.delenv("CORTEX_TOKEN", raising=False)
    monkeypatch.delenv("CORTEX_TOKEN_FILE", raising=False)
    assert cli.main(["nodes"]) == exitcodes.USAGE
    assert "no credential" in capsys.readouterr().err


def test_plaintext_needs_insecure_loopback(capsys, monkeypatch):
    monkeypatch.setenv("CORTEX_TOKEN", "x")
    monkeypatch.delenv("CORTEX_INSECURE_LOOPBACK", raising=False)
    assert cli.main(["nodes", "--hub", "127.0.0.1:9"]) == exitcodes.USAGE
    assert "--insecure-loopback" in capsys.readouterr().err


def test_state_filter_is_case_insensitive_and_checked(capsys):
    assert parse("tasks", "--state", "running").state == "RUNNING"
    with pytest.raises(SystemExit):
        parse("tasks", "--state", "bogus")
    assert "unknown state" in capsys.readouterr().err


@pytest.mark.parametrize("task, status", [
    (pb.Task(state=pb.SUCCEEDED, has_exit_code=True, exit_code=0), 0),
    (pb.Task(state=pb.SUCCEEDED), 0),
    (pb.Task(state=pb.FAILED, has_exit_code=True, exit_code=3), 3),
    (pb.Task(state=pb.FAILED, has_exit_code=True, exit_code=-9), 137),
    (pb.Task(state=pb.FAILED), exitcodes.TASK_FAILED_NO_CODE),
    (pb.Task(state=pb.TIMED_OUT, has_exit_code=True, exit_code=-15), 124),
    (pb.Task(state=pb.CANCELLED, has_exit_code=True, exit_code=-2), 130),
    (pb.Task(state=pb.LOST), 129),
])
def test_task_status(task, status):
    assert commands.task_status(task) == status


@pytest.mark.parametrize("code, exit_code, text", [
    (grpc.StatusCode.NOT_FOUND, exitcodes.ERROR, f"task {TID} not found"),
    (grpc.StatusCode.UNAVAILABLE, exitcodes.UNREACHABLE, "cannot reach hub at h:1: down"),
    (grpc.StatusCode.UNAUTHENTICATED, exitcodes.AUTH, "hub at h:1 refused the credential: down"),
    (grpc.StatusCode.INVALID_ARGUMENT, exitcodes.ERROR, "hub refused the request: down"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, exitcodes.UNREACHABLE, "did not answer in time"),
])
def test_rpc_errors_become_one_line(code, exit_code, text):
    error = from_rpc(FakeRpcError(code, "down"), "h:1", f"task {TID}")
    assert isinstance(error, CtlError)
    assert error.exit_code == exit_code
    assert text in str(error)
    assert "\n" not in str(error)


def test_table_aligns_columns_and_right_aligns_numbers():
    text = render.table(["NAME", "N"], [["a", "1"], ["long-name", "100"]], right=("N",))
    assert text.splitlines() == ["NAME         N", "a            1", "long-name  100"]


def test_tasks_table_and_json_lines():
    tasks = [pb.Task(task_id=TID, state=pb.RUNNING, attempt=1, node_id="n1",
                     command="echo  hello\nworld", output_bytes=2048),
             pb.Task(task_id=TID, state=pb.FAILED, attempt=2, has_exit_code=True, exit_code=3)]
    lines = render.tasks_table(tasks).splitlines()
    assert lines[0].split() == ["TASK", "STATE", "ATTEMPT", "NODE", "EXIT", "OUTPUT", "AGE",
                                "COMMAND"]
    assert "echo hello world" in lines[1] and "2.0KiB" in lines[1]
    objs = [json.loads(line) for line in render.json_lines(
        [render.task_dict(t) for t in tasks]).splitlines()]
    assert objs[0]["state"] == "RUNNING" and objs[0]["exit_code"] is None
    assert objs[1]["exit_code"] == 3


def test_nodes_and_shards_tables():
    node = pb.Node(node_id="n1", attached=True, labels={"os": "linux"}, capacity=4, running=1)
    assert "1/4" in render.nodes_table([node]) and "os=linux" in render.nodes_table([node])
    shard = pb.Shard(shard=0, pid=42, alive=True, nodes=3, hub_id="hub-a")
    assert render.shards_table([shard]).splitlines()[1].split()[:5] == [
        "hub-a", "0", "42", "yes", "3"]


def test_sizes_and_ages():
    assert render.size(10) == "10B" and render.size(1536) == "1.5KiB"
    assert render.age(1_000, now_ms=61_000) == "1m" and render.age(0) == "-"

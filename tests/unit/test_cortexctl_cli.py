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
                 "--task-timeout", "5", "--", "ls", "-la", "--follow")
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


@pytest.mark.parametrize("verb", ["submit", "run"])
def test_an_own_option_after_the_command_is_refused_not_passed_on(verb, capsys):
    # `submit 'make' --follow` used to run `make --follow` (issue 13)
    assert cli.main([verb, "make", "--follow" if verb == "submit" else "--wait=5"]) == (
        exitcodes.USAGE)
    err = capsys.readouterr().err
    assert "comes after the command" in err and "after --" in err
    # the command's own options stay the command's
    assert commands.submit_request(parse(verb, "ls", "-la", "--color")).command == (
        "ls -la --color")


@pytest.mark.parametrize("argv", [
    ["submit", "--fol", "true"], ["tasks", "--lim", "3"], ["--insecure", "tasks"],
    ["watch", TID, "--fr", "3"],
])
def test_no_option_may_be_abbreviated(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == exitcodes.USAGE
    assert "unrecognized arguments" in capsys.readouterr().err


def test_no_parser_of_any_program_accepts_abbreviations():
    from pathlib import Path

    from cortex.cliargs import walk
    from cortexd import cli as cortexd_cli
    from nodeagent import config as agent_config

    for top in (cli.build_parser(), cortexd_cli._parser(), agent_config._parser()):
        for p in walk(top):
            assert not p.allow_abbrev, p.prog
    root = Path(__file__).resolve().parents[2]
    for package in ("cortex", "cortexd", "cortexctl", "nodeagent", "browserd"):
        for module in (root / package).rglob("*.py"):
            if module.name != "cliargs.py":  # every parser is a cliargs.Parser
                assert "argparse.ArgumentParser(" not in module.read_text(), module


@pytest.mark.parametrize("argv", [["--json", "tasks"], ["tasks", "--json"],
                                  ["--json", "artifacts", "ls"], ["nodes", "--json"]])
def test_json_before_or_after_the_command(argv):
    assert parse(*argv).json is True
    assert parse(*[a for a in argv if a != "--json"]).json is False


@pytest.mark.parametrize("argv, message", [
    (["tasks", "--limit", "-1"], "--limit: -1 is out of range"),
    (["submit", "--pids-max", "4294967295", "true"], "--pids-max: 4294967295 is out of range"),
    (["submit", "--task-timeout", "4294967296", "true"], "out of range"),
    (["watch", TID, "--from", str(1 << 63)], "--from: 9223372036854775808 is out of range"),
    (["logs", TID, "--attempt", "x"], "'x' is not an integer"),
    (["tasks", "--timeout", "nan"], "out of range"),
])
def test_an_integer_flag_out_of_range_is_one_usage_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == exitcodes.USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_integer_flag_of_cortexctl_is_range_checked():
    import argparse

    from cortex.cliargs import walk

    for p in walk(cli.build_parser()):
        for action in p._actions:
            if isinstance(action, argparse._StoreAction):
                assert action.type not in (int, float), (p.prog, action.option_strings)


def test_a_memory_limit_beyond_64_bits_is_refused(capsys):
    assert cli.main(["submit", "--memory-max", "99999999999G", "true"]) == exitcodes.USAGE
    assert "at most" in capsys.readouterr().err


def _waiting_task(output_bytes: int, kind: str = "password") -> pb.Task:
    return pb.Task(task_id=TID, state=pb.RUNNING, output_bytes=output_bytes,
                   last_prompt=pb.Prompt(kind=kind, excerpt=b"Password: ", offset=10))


def test_a_task_waiting_for_input_shows_in_tasks_and_get():
    waiting = _waiting_task(10)
    assert "RUNNING (input)" in render.tasks_table([waiting])
    assert "for input (password: 'Password:'; answer: cortexctl input" in (
        render.task_detail(waiting))
    answered = _waiting_task(25)  # output came after the prompt: someone typed
    assert "(input)" not in render.tasks_table([answered])
    assert render.waiting_line(answered) == ""
    assert render.waiting_for_input(_waiting_task(10, kind="finished")) == ""


def test_watch_says_when_the_task_waits_for_input(capsys):
    from cortexctl.follow import RawSink

    sink = RawSink()
    sink.state(pb.Task(task_id=TID, state=pb.RUNNING))
    sink.prompt(pb.Prompt(kind="confirm", offset=3))
    assert f"task {TID} waits for input (confirm; answer: cortexctl input {TID} TEXT)" in (
        capsys.readouterr().err)
    sink.prompt(pb.Prompt(kind="finished", offset=3))
    assert capsys.readouterr().err == ""


def test_a_cancelled_task_says_its_signal_and_the_status_cortexctl_exits_with():
    task = pb.Task(task_id=TID, state=pb.CANCELLED, has_exit_code=True, exit_code=-2)
    assert commands.task_status(task) == exitcodes.TASK_CANCELLED == 130
    assert "-2 (SIGINT)" in render.tasks_table([task])
    assert "-2 (killed by SIGINT; cortexctl watch exits 130)" in render.task_detail(task)
    killed = pb.Task(task_id=TID, state=pb.FAILED, has_exit_code=True, exit_code=-9)
    assert commands.task_status(killed) == 137
    assert "-9 (killed by SIGKILL; cortexctl watch exits 137)" in render.task_detail(killed)


def _complete(line: str) -> list[str]:
    """What bash completion offers for ``line``, through argcomplete's own protocol (the
    answer on fd 8, fd 9 for its debug output)."""
    import os
    import shlex
    import subprocess
    import sys

    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_SHELL": "bash"}
    script = (f"{shlex.quote(sys.executable)} -c 'from cortexctl.cli import main; main()' "
              "8>&1 9>/dev/null 1>/dev/null")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [w.strip() for w in done.stdout.split("\n") if w.strip()]


def test_shell_completion_completes_commands_and_options(capsys):
    assert cli.main(["completion", "bash"]) == exitcodes.OK
    assert "complete " in capsys.readouterr().out  # bash's `complete` registers it
    assert "submit" in _complete("cortexctl sub")
    assert _complete("cortexctl submit --fo") == ["--follow"]

"""The pure parts of agent shells (cortexd/control/shells.py) and cortexctl's parsing."""

from cortex.v1 import node_pb2
from cortexctl.cli import build_parser
from cortexd.control.shells import is_marker, marker_bytes, strip_marker, wrap_command
from nodeagent.detect.markers import prompt_marker


def test_commands_are_typed_as_one_group() -> None:
    assert wrap_command("echo hi") == b"echo hi\n"
    assert wrap_command("echo hi\n") == b"echo hi\n"
    assert wrap_command("a\nb") == b"{\na\nb\n}\n"


def test_the_marker_is_cut_off_exactly() -> None:
    marker = prompt_marker("0123456789abcdef", 7, "/tmp/x y")
    assert strip_marker(b"out\n" + marker) == b"out\n"
    assert strip_marker(marker + b"out\n") == marker + b"out\n"  # only a trailing one
    assert strip_marker(b"no marker") == b"no marker"
    ev = node_pb2.PromptEvent(kind="shell_ready", detector="marker", excerpt=marker[2:-1])
    assert marker_bytes(ev) == len(marker) and is_marker(ev)
    assert not is_marker(node_pb2.PromptEvent(kind="confirm", detector="pattern"))


def test_exec_takes_options_before_and_after_the_id() -> None:
    args = build_parser().parse_args(["shell", "exec", "--wait", "5", "t-" + "0" * 20, "--",
                                      "echo", "hi"])
    assert args.wait == 5 and args.command == ["echo", "hi"]
    args = build_parser().parse_args(["shell", "exec", "t-" + "0" * 20, "--wait", "9", "--",
                                      "ls"])
    assert args.command == ["--wait", "9", "--", "ls"]  # cmd_exec reads the late options


def test_late_options_and_a_command_with_its_own_double_dash() -> None:
    from cortexctl import shellcmds

    seen = {}

    def fake_call(args, method, request, subject, deadline_s=None):  # type: ignore[no-untyped-def]
        seen.update(command=request.command, wait=request.timeout_s)
        return shellcmds.spb.ShellExecResult(exit_code=3)

    real = shellcmds._call
    shellcmds._call = fake_call
    try:
        for argv, command, wait in (
                (["t-" + "0" * 20, "--wait", "9", "--", "ls", "-l"], "ls -l", 9),
                (["t-" + "0" * 20, "--", "git", "log", "--", "f"], "git log -- f", 60)):
            args = build_parser().parse_args(["shell", "exec", *argv])
            assert shellcmds.cmd_exec(args) == 3
            assert seen == {"command": command, "wait": wait}
    finally:
        shellcmds._call = real

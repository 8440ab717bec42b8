"""``cortexctl shell open|exec|close``: drive a long-lived shell on a node (shell.proto).

``open [--node N | --selector K=V …]`` starts a bash in a PTY task and prints its id once
it shows its first prompt; ``exec ID -- CMD…`` types CMD and returns when the shell's
next prompt marker arrives, writing exactly the command's output to stdout and exiting
with its exit code (``--json``: one object with the output as text, cwd and offsets;
124 when it did not finish within ``--wait``);
``close ID`` ends the shell. A truncated output (over 1 MiB) says so on stderr.
"""

import argparse
import json
import sys
from collections.abc import Callable

import grpc

from cortex import ids
from cortex.cliargs import UINT32, Parser, int_range
from cortex.tokens import bearer
from cortex.v1 import shell_pb2 as spb
from cortex.v1 import shell_pb2_grpc
from cortexctl import commands, exitcodes
from cortexctl.client import open_channel
from cortexctl.errors import CtlError, UsageError, from_rpc

EXEC_DEADLINE_SLACK_S = 15.0


def _call(args: argparse.Namespace, method: str, request: object, subject: str,
          deadline_s: float | None = None) -> object:
    settings = commands.settings(args)
    channel = open_channel(settings)
    try:
        stub = shell_pb2_grpc.ShellStub(channel)  # type: ignore[no-untyped-call]
        call = getattr(stub, method)
        return call(request, timeout=deadline_s or settings.timeout_s,
                    metadata=bearer(settings.token))
    except grpc.RpcError as e:
        if e.code() is grpc.StatusCode.ABORTED:  # the hub gave up waiting for the shell
            raise CtlError(f"{subject}: {e.details()}", exitcodes.TASK_TIMED_OUT) from e
        raise from_rpc(e, settings.address, subject) from e
    finally:
        channel.close()


def _shell_id(value: str) -> str:
    if not ids.is_task_id(value):
        raise UsageError(f"{value!r} is not a shell id (a task id: t- and 20 hex digits)")
    return value


def cmd_open(args: argparse.Namespace) -> int:
    selector = commands.pairs(args.selector, "--selector")
    if (problem := ids.check_labels(selector, "selector")) is not None:
        raise UsageError(problem)
    if args.node and not ids.is_node_id(args.node):
        raise UsageError(f"--node {args.node!r} is not a valid node id")
    request = spb.OpenShellRequest(
        node_id=args.node or "", selector=selector, env=commands.pairs(args.env, "--env"),
        cwd=args.cwd or "", idle_timeout_s=args.idle_timeout or 0,
        ready_timeout_s=args.ready_timeout)
    info = _call(args, "Open", request, "shell", args.ready_timeout + EXEC_DEADLINE_SLACK_S)
    assert isinstance(info, spb.ShellInfo)
    if args.json:
        print(json.dumps({"shell_id": info.shell_id, "node_id": info.node_id,
                          "state": info.state, "cwd": info.cwd}))
    else:
        print(info.shell_id)
    return exitcodes.OK


def cmd_exec(args: argparse.Namespace) -> int:
    words = list(args.command)
    if words and words[0] == "--":
        words = words[1:]
    elif words and words[0].split("=")[0] in ("--wait", "--json") and "--" in words:
        # options given after ID (`exec ID --wait 5 -- CMD`) count too
        cut = words.index("--")
        late = Parser(prog="cortexctl shell exec", add_help=False)
        late.add_argument("--wait", type=int_range(1, 3600), default=args.wait)
        late.add_argument("--json", action="store_true", default=args.json)
        try:
            known = late.parse_args(words[:cut])
        except SystemExit as e:
            raise UsageError(f"shell exec: options before '--' must be --wait S or --json: "
                             f"{' '.join(words[:cut])}") from e
        args.wait, args.json, words = known.wait, known.json, words[cut + 1:]
    command = " ".join(words)
    if not command.strip():
        raise UsageError("shell exec needs a command: cortexctl shell exec ID -- CMD")
    shell_id = _shell_id(args.shell)
    request = spb.ShellExecRequest(shell_id=shell_id, command=command, timeout_s=args.wait)
    result = _call(args, "Exec", request, f"shell {shell_id}",
                   args.wait + EXEC_DEADLINE_SLACK_S)
    assert isinstance(result, spb.ShellExecResult)
    if args.json:
        print(json.dumps({"exit_code": result.exit_code,
                          "output": result.output.decode("utf-8", "replace"),
                          "output_bytes": result.output_bytes, "truncated": result.truncated,
                          "cwd": result.cwd, "start_offset": result.start_offset,
                          "end_offset": result.end_offset}))
    else:
        sys.stdout.buffer.write(result.output)
        sys.stdout.buffer.flush()
        if result.truncated:
            print(f"cortexctl: output truncated at {len(result.output)} of "
                  f"{result.output_bytes} bytes (cortexctl logs {shell_id} --from "
                  f"{result.start_offset})", file=sys.stderr)
    return result.exit_code & 0xFF if result.exit_code >= 0 else 128 + (-result.exit_code & 0x7F)


def cmd_close(args: argparse.Namespace) -> int:
    shell_id = _shell_id(args.shell)
    info = _call(args, "Close", spb.CloseShellRequest(shell_id=shell_id), f"shell {shell_id}")
    assert isinstance(info, spb.ShellInfo)
    print(json.dumps({"shell_id": info.shell_id, "state": info.state}) if args.json
          else f"{info.shell_id} {info.state}")
    return exitcodes.OK


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
               global_flags: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    p = sub.add_parser("shell", help="open, drive and close a long-lived shell on a node",
                       description="Open, drive and close a long-lived shell on a node.")
    actions = p.add_subparsers(dest="shell_action", metavar="ACTION", required=True)

    def action(name: str, run: Callable[[argparse.Namespace], int],
               help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        global_flags(a, True)
        a.add_argument("--json", action="store_true", help="one JSON object")
        a.set_defaults(run=run)
        return a

    a = action("open", cmd_open, "start a shell; print its id when it is at its first prompt")
    where = a.add_mutually_exclusive_group()
    where.add_argument("--node", metavar="ID", help="on this node")
    where.add_argument("--selector", action="append", metavar="K=V",
                       help="on a node with this label")
    a.add_argument("--env", action="append", metavar="K=V", help="environment variable")
    a.add_argument("--cwd", metavar="DIR", help="working directory on the node")
    a.add_argument("--idle-timeout", metavar="S", type=UINT32,
                   help="end the shell after S seconds without output")
    a.add_argument("--ready-timeout", metavar="S", type=int_range(1, 3600), default=60,
                   help="how long to wait for the first prompt (default 60)")
    a = action("exec", cmd_exec, "run CMD in the shell; print its output, exit with its code")
    a.add_argument("shell", metavar="ID")
    a.add_argument("--wait", metavar="S", type=int_range(1, 3600), default=60,
                   help="how long the command may take (default 60, at most 3600)")
    a.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    a = action("close", cmd_close, "end the shell")
    a.add_argument("shell", metavar="ID")

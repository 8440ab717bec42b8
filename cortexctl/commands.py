"""What each cortexctl command does, given its parsed arguments.

Every command returns the process exit status (see ``exitcodes``) and raises
:class:`CtlError` for anything the operator should read as one line.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from cortex import ids
from cortex.cliargs import INT64_MAX
from cortex.errors import ConfigError
from cortex.tokens import read_token_file
from cortex.tools import TOOL_NAME_RE, is_tool_name
from cortex.v1 import control_pb2 as pb
from cortexctl import exitcodes, render
from cortexctl.client import HubClient, HubSettings, client_tls
from cortexctl.errors import CtlError, UsageError
from cortexctl.follow import Follower, JsonSink, RawSink, Sink, notice

DEFAULT_HUB = "127.0.0.1:7701"


# -- settings ---------------------------------------------------------------

def load_token(token_file: str | None) -> str:
    """--token-file, else $CORTEX_TOKEN_FILE, else the token itself in $CORTEX_TOKEN."""
    path = token_file or os.environ.get("CORTEX_TOKEN_FILE")
    if path:
        try:
            return read_token_file(Path(path))
        except ConfigError as e:
            raise UsageError(str(e)) from e
    token = os.environ.get("CORTEX_TOKEN", "").strip()
    if token:
        return token
    raise UsageError("no credential: pass --token-file FILE (or set CORTEX_TOKEN_FILE, "
                     "or CORTEX_TOKEN to the token itself)")


def settings(args: argparse.Namespace) -> HubSettings:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return HubSettings(
        address=args.hub or os.environ.get("CORTEX_HUB") or DEFAULT_HUB,
        token=load_token(args.token_file),
        tls=client_tls(args.ca_file, args.cert_file, args.key_file, args.tls,
                       getattr(args, "tls_server_name", None) or ""),
        insecure_loopback=args.insecure_loopback
        or os.environ.get("CORTEX_INSECURE_LOOPBACK", "") in ("1", "true", "yes"),
        timeout_s=args.timeout,
    )


def connect(args: argparse.Namespace) -> HubClient:
    return HubClient(settings(args))


# -- argument values --------------------------------------------------------

def task_id(value: str) -> str:
    if not ids.is_task_id(value):
        raise UsageError(f"{value!r} is not a task id (expected t- and 20 hex digits)")
    return value


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


def monitor_fields(args: argparse.Namespace) -> dict[str, str]:
    """--monitor POLICY / --policy-file FILE / --goal TEXT / --browse-session SID@NODE as
    SubmitRequest fields."""
    monitor, policy_file = getattr(args, "monitor", None), getattr(args, "policy_file", None)
    if monitor and policy_file:
        raise UsageError("--monitor and --policy-file: give one")
    out = {"goal": getattr(args, "goal", None) or ""}
    if browse := getattr(args, "browse_session", None):
        out["browse_session"] = browse
    if monitor:
        out["monitor_policy"] = monitor
    if policy_file:
        try:
            out["policy_toml"] = Path(policy_file).read_text()
        except OSError as e:
            raise UsageError(f"cannot read --policy-file {policy_file}: {e.strerror}") from e
        out["monitor_policy"] = "inline"
    return out


def command_words(args: argparse.Namespace) -> list[str]:
    """The words of ``submit``/``run``'s command. After ``--`` every word is the command's;
    without it, one of the command's own long options after the command
    (``submit 'make' --follow``) is refused: it was meant for cortexctl, and running
    ``make --follow`` instead is the one thing not to do (issue 13)."""
    words = list(args.command)
    if words and words[0] == "--":
        return words[1:]
    own = set(getattr(args, "own_options", ()))
    for word in words[1:]:
        name = word.partition("=")[0]
        if name.startswith("--") and name in own:
            verb = args.command_name
            raise UsageError(
                f"{name} comes after the command, where it would be passed to the command: "
                f"put {verb}'s options before it (cortexctl {verb} {name} ... CMD), or write "
                f"the command after -- to pass {name} on (cortexctl {verb} -- CMD {name})")
    return words


def submit_request(args: argparse.Namespace) -> pb.SubmitRequest:
    command = " ".join(command_words(args))
    if not command.strip():
        raise UsageError("submit needs a command, e.g. cortexctl submit -- echo hello")
    selector = pairs(args.selector, "--selector")
    problem = ids.check_labels(selector, "selector")
    if problem:
        raise UsageError(problem)
    env = pairs(args.env, "--env")
    for name in env:
        if not ids.ENV_NAME_RE.fullmatch(name):
            raise UsageError(f"--env {name!r}: not a valid environment variable name")
    if args.node and not ids.is_node_id(args.node):
        raise UsageError(f"--node {args.node!r} is not a valid node id")
    if args.idempotency_key and not ids.IDEMPOTENCY_KEY_RE.fullmatch(args.idempotency_key):
        raise UsageError(f"--idempotency-key must match {ids.IDEMPOTENCY_KEY_RE.pattern}")
    memory_max = parse_size(args.memory_max, "--memory-max") if args.memory_max else 0
    tool = getattr(args, "tool", None) or ""
    if tool and not is_tool_name(tool):
        raise UsageError(f"--tool {tool!r} is not a tool name ({TOOL_NAME_RE.pattern})")
    workspace = getattr(args, "workspace", None) or ""
    if workspace and not ids.WORKSPACE_NAME_RE.fullmatch(workspace):
        raise UsageError(f"--workspace {workspace!r} is not a workspace name "
                         f"({ids.WORKSPACE_NAME_RE.pattern})")
    request = pb.SubmitRequest(
        tool=tool, workspace=workspace,
        command=command, selector=selector, node_id=args.node or "",
        idempotency_key=args.idempotency_key or "", env=env, cwd=args.cwd or "",
        timeout_s=args.task_timeout or 0, idle_timeout_s=args.idle_timeout or 0,
        memory_max_bytes=memory_max, pids_max=args.pids_max or 0,
        queue_timeout_s=getattr(args, "queue_timeout", None) or 0,
    )
    for name, value in monitor_fields(args).items():
        setattr(request, name, value)
    return request


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str, flag: str) -> int:
    """``64M`` → 67108864 (binary units; an optional trailing ``B`` or ``iB``)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in SIZE_UNITS else ""
    number = t[:-1] if unit else t
    if not number.isdigit():
        raise UsageError(f"{flag} {text!r}: expected a size like 67108864, 64M or 1G")
    value = int(number) * SIZE_UNITS[unit]
    if value > INT64_MAX:
        raise UsageError(f"{flag} {text!r}: at most {INT64_MAX} bytes")
    return value


# -- the result of a task as an exit status ----------------------------------

def task_status(task: pb.Task) -> int:
    """The exit status that reports ``task``'s result (see ``exitcodes``)."""
    if task.state == pb.CANCELLED:
        return exitcodes.TASK_CANCELLED
    if task.state == pb.TIMED_OUT:
        return exitcodes.TASK_TIMED_OUT
    if task.state == pb.LOST:
        return exitcodes.TASK_LOST
    if not task.has_exit_code:
        return exitcodes.OK if task.state == pb.SUCCEEDED else exitcodes.TASK_FAILED_NO_CODE
    if task.exit_code < 0:
        return 128 + min(-task.exit_code, 127)
    return task.exit_code & 0xFF


def follow(client: HubClient, tid: str, args: argparse.Namespace, from_offset: int = 0) -> int:
    sink: Sink = JsonSink() if args.json else RawSink()
    try:
        task = Follower(client, tid, sink, from_offset=from_offset,
                        reconnect_s=args.reconnect_s).run()
    except CtlError as e:
        raise CtlError(str(e), exitcodes.FOLLOW_ERROR) from e
    except KeyboardInterrupt:
        notice(f"stopped following task {tid}; it keeps running (cortexctl cancel {tid})")
        raise
    if task.state != pb.SUCCEEDED and not args.json:
        code = f", exit code {render.exit_text(task)}" if task.has_exit_code else ""
        reason = f": {task.reason}" if task.reason else ""
        notice(f"task {tid} {render.state_name(task.state)}{code}{reason}")
    return task_status(task)


# -- commands -----------------------------------------------------------------

def cmd_submit(args: argparse.Namespace) -> int:
    from cortexctl.artcmds import task_files

    request = submit_request(args)
    task_files(args, request)  # uploads the --input files first
    with connect(args) as client:
        try:
            response = client.submit(request)
        except CtlError as e:
            if args.follow:  # the status of submit --follow is the task's: ours is 125
                raise CtlError(str(e), exitcodes.FOLLOW_ERROR) from e
            raise
        task = response.task
        if response.deduplicated:
            notice(f"idempotency key {request.idempotency_key!r} names existing task "
                   f"{task.task_id}")
        if not args.follow:
            print(render.json_lines([render.task_dict(task)]) if args.json else task.task_id)
            return exitcodes.OK
        if not args.json:
            notice(f"task {task.task_id} submitted")
        return follow(client, task.task_id, args)


def cmd_get(args: argparse.Namespace) -> int:
    tid = task_id(args.task)
    with connect(args) as client:
        task = client.get_task(tid)
    print(render.json_lines([render.task_dict(task)]) if args.json else render.task_detail(task))
    return exitcodes.OK


def cmd_watch(args: argparse.Namespace) -> int:
    tid = task_id(args.task)
    if args.from_offset < 0:
        raise UsageError("--from must not be negative")
    with connect(args) as client:
        return follow(client, tid, args, from_offset=args.from_offset)


def cmd_cancel(args: argparse.Namespace) -> int:
    tid = task_id(args.task)
    with connect(args) as client:
        task = client.cancel(tid, args.reason or "")
    if args.json:
        print(render.json_lines([render.task_dict(task)]))
    elif task.state in render.TERMINAL_STATES:
        print(f"{task.task_id} {render.state_name(task.state)}")
    else:  # the node stops it (SIGINT, SIGTERM, SIGKILL); `watch` follows it to the end
        print(f"{task.task_id} cancel requested (was {render.state_name(task.state)})")
    return exitcodes.OK


def cmd_input(args: argparse.Namespace) -> int:
    tid = task_id(args.task)
    if args.text == "-":
        data = sys.stdin.buffer.read()
    else:
        data = args.text.encode() + (b"" if args.no_newline else b"\n")
    with connect(args) as client:
        attempt = client.send_input(tid, data)
    if args.json:
        print(json.dumps({"task_id": tid, "attempt": attempt, "bytes": len(data)}))
    return exitcodes.OK


def cmd_nodes(args: argparse.Namespace) -> int:
    with connect(args) as client:
        nodes = client.list_nodes()
    if args.json:
        text = render.json_lines([render.node_dict(n) for n in nodes])
    else:
        text = render.nodes_table(nodes)
    if text:
        print(text)
    return exitcodes.OK


def cmd_tasks(args: argparse.Namespace) -> int:
    if args.node and not ids.is_node_id(args.node):
        raise UsageError(f"--node {args.node!r} is not a valid node id")
    with connect(args) as client:
        tasks = client.list_tasks(args.state or "TASK_STATE_UNSPECIFIED", args.node or "",
                                  args.limit, attention=args.attention)
    if args.json:
        text = render.json_lines([render.task_dict(t) for t in tasks])
    else:
        text = render.tasks_table(tasks)
        if args.attention and tasks:
            text += "\n\n" + "\n".join(f"{t.task_id}  needs a person: {t.attention}"
                                      for t in tasks)
    if text:
        print(text)
    return exitcodes.OK


def cmd_shards(args: argparse.Namespace) -> int:
    with connect(args) as client:
        shards = client.list_shards()
    if args.json:
        text = render.json_lines([render.shard_dict(s) for s in shards])
    else:
        text = render.shards_table(shards)
    if text:
        print(text)
    return exitcodes.OK

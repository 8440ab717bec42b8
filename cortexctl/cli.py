"""cortexctl's command line: the parser, and ``main`` which never shows a traceback
for an operator's mistake or an unreachable hub.

Shell completion is argcomplete's, from this parser: ``eval "$(cortexctl completion
bash)"`` (or zsh, fish) installs it; argcomplete is imported only while completing.

Global flags, ``--json`` among them, may be given before or after the command name
(``cortexctl --json tasks`` and ``cortexctl tasks --json``, ``cortexctl --hub H tasks``
and ``cortexctl tasks --hub H`` all work). No option may be abbreviated (``--fol`` is
not ``--follow``: :mod:`cortex.cliargs`), and every integer flag is range-checked.
``submit`` and ``run`` take their options before the command: everything from the
first word that is not an option is the command, joined with spaces and run by
``/bin/sh -c`` on the node, as ssh does. One of their own options after the command
(``submit 'make' --follow``) is refused rather than passed to the command; after
``--`` every word is the command's (``submit --follow -- grep --follow x``).
"""

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from cortex.cliargs import (
    OFFSET,
    PIDS_MAX_LIMIT,
    SECONDS,
    UINT32,
    Parser,
    int_range,
    walk,
)
from cortex.v1 import control_pb2 as pb
from cortex.version import line as version_line
from cortexctl import (
    artcmds,
    browse,
    bulk,
    commands,
    db,
    exitcodes,
    logcmds,
    monitorcmds,
    opscmds,
    runcmd,
    shellcmds,
    tokencmds,
    wscmds,
)
from cortexctl.errors import CtlError, UsageError

EPILOG = """\
exit status: 0 ok; 1 the hub refused the request; 2 usage or local configuration;
3 hub unreachable or too slow; 4 credential refused. submit --follow and watch exit
with the task's status instead: its exit code, 128+N if killed by signal N,
124 TIMED_OUT, 129 LOST, 130 CANCELLED, 1 FAILED without a code, 125 cortexctl failed
(run too; and 125 when --wait passed before the task ended: it goes on).
--json prints JSON lines: one object per item (per event for --follow and watch).
"""

STATES = [name for name in pb.TaskState.keys() if name != "TASK_STATE_UNSPECIFIED"]


def task_state(value: str) -> str:
    name = value.upper()
    if name not in STATES:
        raise argparse.ArgumentTypeError(f"unknown state {value!r} (one of {', '.join(STATES)})")
    return name


def add_global_flags(p: argparse.ArgumentParser, on_command: bool) -> None:
    """The connection flags; on a command they default to SUPPRESS, so they only
    override what was given before the command name."""
    def d(value: object) -> object:
        return argparse.SUPPRESS if on_command else value

    g = p.add_argument_group("hub connection")
    g.add_argument("--hub", metavar="HOST:PORT", default=d(None),
                   help=f"Control address (env CORTEX_HUB, default {commands.DEFAULT_HUB})")
    g.add_argument("--token-file", metavar="FILE", default=d(None),
                   help="bearer token file (env CORTEX_TOKEN_FILE; or the token in CORTEX_TOKEN)")
    g.add_argument("--insecure-loopback", action="store_true", default=d(False),
                   help="plaintext to a loopback hub (env CORTEX_INSECURE_LOOPBACK=1)")
    g.add_argument("--tls", action="store_true", default=d(False),
                   help="use TLS with the system's CAs (implied by --ca-file)")
    g.add_argument("--ca-file", metavar="FILE", default=d(None), help="CA to verify the hub")
    g.add_argument("--cert-file", metavar="FILE", default=d(None), help="client certificate")
    g.add_argument("--key-file", metavar="FILE", default=d(None), help="client key")
    g.add_argument("--tls-server-name", metavar="NAME", default=d(None),
                   help="the name the hub's certificate must have, when the address "
                   "dialled is not one of its names (implies TLS)")
    if not on_command:  # each command has its own --json, saying what its JSON is
        g.add_argument("--json", action="store_true", default=False,
                       help="JSON lines instead of text (before or after the command)")
    g.add_argument("--timeout", metavar="S", type=SECONDS, default=d(10.0),
                   help="deadline of each unary call in seconds (default 10)")


def add_follow_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reconnect-s", metavar="S", type=SECONDS, default=30.0,
                   help="how long to keep reconnecting to a hub that went away (default 30)")


def add_task_flags(p: argparse.ArgumentParser) -> None:
    """What a task is made of (submit and run)."""
    p.add_argument("--selector", action="append", metavar="K=V", help="label a node must have")
    p.add_argument("--node", metavar="ID", help="run on this node only")
    p.add_argument("--idempotency-key", metavar="K", help="same key = same task")
    p.add_argument("--env", action="append", metavar="K=V", help="environment variable")
    p.add_argument("--cwd", metavar="DIR", help="working directory on the node (absolute; "
                   "with --workspace relative to the copy's root)")
    p.add_argument("--workspace", metavar="NAME",
                   help="run in the node's copy of workspace NAME, once a sync round that "
                   "started after the task arrived has ended; placed only on a node NAME "
                   "is attached to")
    p.add_argument("--task-timeout", metavar="S", type=UINT32, help="kill the task after S seconds")
    p.add_argument("--idle-timeout", metavar="S", type=UINT32,
                   help="kill the task after S seconds without output")
    p.add_argument("--memory-max", metavar="SIZE",
                   help="memory limit of the task's cgroup: bytes, or with K/M/G (binary)")
    p.add_argument("--pids-max", metavar="N", type=int_range(0, PIDS_MAX_LIMIT),
                   help="most processes the task may have at once (cgroup pids.max; "
                   f"at most {PIDS_MAX_LIMIT}, the kernel's limit)")
    p.add_argument("--queue-timeout", metavar="S", type=UINT32,
                   help="fail the task (FAILED, reason 'queue timeout: …') if no node took "
                   "it within S seconds; default: wait as long as it takes")
    p.add_argument("--monitor", metavar="POLICY",
                   help="watch the task with this stored monitor policy (policies ls)")
    p.add_argument("--policy-file", metavar="FILE",
                   help="watch the task with this inline monitor policy (TOML)")
    p.add_argument("--goal", metavar="TEXT",
                   help="the agent session's goal (starts a session; the LLM is told it)")
    p.add_argument("--browse-session", metavar="SID@NODE",
                   help="the monitor also reads this browser session's snapshot (yours, "
                   "open: browse ls) at every decision; rules match it with snapshot_match")


def _submit(args: argparse.Namespace) -> int:
    return bulk.cmd_submit_from(args) if args.from_file else commands.cmd_submit(args)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(
        prog="cortexctl", description="Operate a Cortex hub: submit and follow tasks, "
        "list nodes, tasks and shards.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line("cortexctl"))
    add_global_flags(parser, on_command=False)
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int],
                help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_global_flags(p, on_command=True)
        p.set_defaults(run=run, own_options=p._option_string_actions.keys())
        return p

    p = command("submit", _submit, "submit a shell command; print its task id "
                "(--from FILE: many tasks, one JSON object a line)")
    add_task_flags(p)
    p.add_argument("--follow", action="store_true",
                   help="stream the output and exit with the task's status")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="submit the tasks of FILE (JSON lines of SubmitRequest fields; "
                   "'-' = stdin) in SubmitMany calls")
    p.add_argument("--batch", type=int_range(1, 1000), default=500, metavar="N",
                   help="with --from: tasks per SubmitMany call (default 500, at most 1000)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of text")
    p.add_argument("--tool", metavar="NAME",
                   help="the node tool that runs CMD as its input (default: the shell; "
                   "`cortexctl nodes` shows each node's cortex.tool/NAME labels)")
    add_follow_flags(p)
    artcmds.add_submit_flags(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD...",
                   help="the command (options of submit go before it)")

    p = command("run", runcmd.cmd_run, "submit a command, wait for its end in one call, "
                "print its journal and exit with its status")
    add_task_flags(p)
    p.add_argument("--wait", type=SECONDS, metavar="S",
                   help="stop waiting after S seconds (the task goes on; default: until "
                   "it ends)")
    p.add_argument("--cancel-on-drop", action="store_true",
                   help="cancel the task if the call ends first (--wait, Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON object: task and journal")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD...",
                   help="the command (options of run go before it)")

    p = command("get", commands.cmd_get, "show one task")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = command("watch", commands.cmd_watch,
                "stream a task's output until it ends; exit with the task's status")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--from", dest="from_offset", metavar="OFFSET", type=OFFSET, default=0,
                   help="start at this output offset (default 0)")
    p.add_argument("--json", action="store_true", help="JSON lines, one per event")
    add_follow_flags(p)

    p = command("cancel", commands.cmd_cancel, "cancel a task")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--reason", help="recorded with the cancellation")
    p.add_argument("--json", action="store_true", help="the task as one JSON object")

    p = command("input", commands.cmd_input, "type TEXT into a running task's terminal")
    p.add_argument("task", metavar="TASK")
    p.add_argument("text", metavar="TEXT", help="the text ('-' reads raw bytes from stdin)")
    p.add_argument("--no-newline", action="store_true", help="do not append a newline")
    p.add_argument("--json", action="store_true", help="report what was sent as JSON")

    p = command("tasks", commands.cmd_tasks, "list tasks, newest first")
    p.add_argument("--state", type=task_state, help="only tasks in this state")
    p.add_argument("--node", metavar="ID", help="only tasks of this node")
    p.add_argument("--limit", type=UINT32, default=0, help="at most N tasks (hub default 100)")
    p.add_argument("--attention", action="store_true",
                   help="only tasks a monitor escalated to a person (answer: cortexctl input)")
    p.add_argument("--json", action="store_true", help="JSON lines, one per task")

    p = command("logs", logcmds.cmd_logs,
                "print a range of a task's output from the node's spool")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--from", dest="from_offset", metavar="OFFSET", type=OFFSET, default=0,
                   help="first byte (default 0)")
    p.add_argument("--length", metavar="N", type=OFFSET, default=0,
                   help="at most N bytes (default 0: to the end)")
    p.add_argument("--attempt", metavar="N", type=UINT32, default=0,
                   help="this attempt (default 0: the current one)")
    p.add_argument("--json", action="store_true", help="JSON lines, one per chunk (base64)")

    p = command("journal", logcmds.cmd_journal,
                "print a task's journal: first 10 KB, what was omitted, last 30 KB")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--json", action="store_true", help="one JSON object (head/tail base64)")

    p = sub.add_parser("completion", help="print the shell code that completes cortexctl "
                       "(eval \"$(cortexctl completion bash)\")",
                       description="Print the shell code for cortexctl's completion: "
                       "eval \"$(cortexctl completion bash)\" in ~/.bashrc.")
    p.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh"), nargs="?",
                   default="bash")
    p.set_defaults(run=cmd_completion)

    opscmds.add_parsers(command, add_global_flags)  # shards, nodes and their actions
    db.add_parser(sub)
    artcmds.add_parser(sub, add_global_flags)
    shellcmds.add_parser(sub, add_global_flags)
    tokencmds.add_parser(sub, add_global_flags)
    monitorcmds.add_parsers(command, sub)
    browse.add_parser(sub, add_global_flags)
    _json_anywhere(parser)
    wscmds.add_parser(sub, add_global_flags)
    return parser


def _json_anywhere(parser: argparse.ArgumentParser) -> None:
    """``--json`` of a command only overrides a ``--json`` given before the command name:
    a subparser writes its defaults over the parent's namespace, so below the top every
    --json defaults to SUPPRESS (the top-level default, False, stays)."""
    for p in walk(parser):
        for action in p._actions:
            if action.dest == "json" and p is not parser:
                action.default = argparse.SUPPRESS


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        from argcomplete.shell_integration import shellcode
    except ImportError as e:
        raise UsageError("shell completion needs argcomplete (pip install argcomplete)") from e
    print(shellcode(["cortexctl"], shell=args.shell))
    return exitcodes.OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer and exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except CtlError as e:
        print(f"cortexctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (cortexctl tasks | head): not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.ERROR


if __name__ == "__main__":
    sys.exit(main())

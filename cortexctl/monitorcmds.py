"""cortexctl's monitor commands: policies, decisions, tree, sessions, nudge.

``policies put NAME FILE`` / ``ls`` / ``show NAME``; ``decisions TASK``;
``tree TASK`` (a task's chain of follow-ups, from its root); ``sessions``;
``session show ID``; ``nudge TASK`` (wake the task's monitor now). They call the
``cortex.v1.Monitors`` service with the same connection flags as every command.
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc

from cortex.v1 import control_pb2 as pb
from cortex.v1 import monitor_pb2 as mpb
from cortex.v1 import monitor_pb2_grpc
from cortexctl import commands, exitcodes, render
from cortexctl.errors import UsageError, from_rpc

Resp = TypeVar("Resp")


class MonitorsClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.hub = commands.connect(args)
        self.settings = self.hub.settings
        self._stub: Any = monitor_pb2_grpc.MonitorsStub(  # type: ignore[no-untyped-call]
            self.hub._channel)
        self._metadata = self.hub._metadata

    def __enter__(self) -> "MonitorsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub.close()

    def call(self, method: str, request: object, resp: type[Resp], subject: str = "") -> Resp:
        try:
            return cast(Resp, getattr(self._stub, method)(
                request, timeout=self.settings.timeout_s, metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, subject) from e


def decision_dict(d: mpb.Decision) -> dict[str, Any]:
    return {"decision_id": d.decision_id, "task_id": d.task_id, "attempt": d.attempt,
            "wake": d.wake, "trigger_key": d.trigger_key, "rule_id": d.rule_id,
            "model": d.model, "action": d.action, "args": json.loads(d.args_json or "{}"),
            "latency_ms": round(d.latency_ms, 3), "prompt_tokens": d.prompt_tokens,
            "completion_tokens": d.completion_tokens, "context_digest": d.context_digest,
            "context_bytes": d.context_bytes, "note": d.note, "session_id": d.session_id,
            "applied": d.applied, "result": d.result, "at_ms": d.at_ms}


def decisions_table(ds: list[mpb.Decision]) -> str:
    rows = [[str(d.decision_id), d.task_id, str(d.attempt), d.trigger_key,
             d.rule_id or f"model:{d.model}", d.action,
             render.one_line(json.dumps(json.loads(d.args_json or "{}")))[:40],
             f"{d.latency_ms:.1f}", f"{d.prompt_tokens}+{d.completion_tokens}",
             "yes" if d.applied else "no", render.one_line(d.result)[:40]] for d in ds]
    return render.table(["ID", "TASK", "ATT", "TRIGGER", "BY", "ACTION", "ARGS", "MS",
                         "TOKENS", "APPLIED", "RESULT"], rows, right=("ID", "MS"))


def _emit(args: argparse.Namespace, items: list[dict[str, Any]], text: str) -> int:
    out = render.json_lines(items) if args.json else text
    if out:
        print(out)
    return exitcodes.OK


def cmd_policies_put(args: argparse.Namespace) -> int:
    try:
        body = Path(args.file).read_text()
    except OSError as e:
        raise UsageError(f"cannot read policy file {args.file}: {e.strerror}") from e
    with MonitorsClient(args) as c:
        info = c.call("PutPolicy", mpb.PutPolicyRequest(name=args.name, body=body),
                      mpb.PolicyInfo, f"policy {args.name}")
    return _emit(args, [{"name": info.name, "rules": info.rules}],
                 f"policy {info.name}: {info.rules} rules")


def cmd_policies_ls(args: argparse.Namespace) -> int:
    with MonitorsClient(args) as c:
        ps = list(c.call("ListPolicies", mpb.ListPoliciesRequest(),
                         mpb.ListPoliciesResponse).policies)
    return _emit(args, [{"name": p.name, "rules": p.rules, "updated_ms": p.updated_ms}
                        for p in ps],
                 render.table(["POLICY", "RULES", "UPDATED"],
                              [[p.name, str(p.rules), render.age(p.updated_ms)] for p in ps],
                              right=("RULES",)))


def cmd_policies_show(args: argparse.Namespace) -> int:
    with MonitorsClient(args) as c:
        p = c.call("GetPolicy", mpb.GetPolicyRequest(name=args.name), mpb.PolicyInfo,
                   f"policy {args.name}")
    return _emit(args, [{"name": p.name, "body": p.body, "rules": p.rules}], p.body.rstrip())


def cmd_decisions(args: argparse.Namespace) -> int:
    tid = commands.task_id(args.task)
    with MonitorsClient(args) as c:
        ds = list(c.call("ListDecisions", mpb.ListDecisionsRequest(task_id=tid),
                         mpb.ListDecisionsResponse, f"task {tid}").decisions)
    return _emit(args, [decision_dict(d) for d in ds], decisions_table(ds))


def cmd_tree(args: argparse.Namespace) -> int:
    tid = commands.task_id(args.task)
    with MonitorsClient(args) as c:
        nodes = list(c.call("GetTree", mpb.GetTreeRequest(task_id=tid), mpb.TaskTree,
                            f"task {tid}").nodes)
    lines = [f"{'  ' * n.depth}{'└─ ' if n.depth else ''}{n.task.task_id} "
             f"{render.state_name(n.task.state)} on {n.task.node_id or '-'}: "
             f"{render.one_line(n.task.command)}" + (f"  (after {n.cause})" if n.cause else "")
             for n in nodes]
    return _emit(args, [{"task_id": n.task.task_id, "depth": n.depth, "cause": n.cause,
                         "state": render.state_name(n.task.state), "node_id": n.task.node_id}
                        for n in nodes], "\n".join(lines))


def session_dict(s: mpb.SessionInfo) -> dict[str, Any]:
    return {"session_id": s.session_id, "goal": s.goal, "root_task_id": s.root_task_id,
            "state": s.state, "tasks": s.tasks, "decisions": s.decisions,
            "created_ms": s.created_ms}


def cmd_sessions(args: argparse.Namespace) -> int:
    with MonitorsClient(args) as c:
        ss = list(c.call("ListSessions", mpb.ListSessionsRequest(),
                         mpb.ListSessionsResponse).sessions)
    return _emit(args, [session_dict(s) for s in ss], render.table(
        ["SESSION", "STATE", "TASKS", "DECISIONS", "AGE", "GOAL"],
        [[s.session_id, s.state, str(s.tasks), str(s.decisions), render.age(s.created_ms),
          render.one_line(s.goal)] for s in ss], right=("TASKS", "DECISIONS", "AGE")))


def cmd_session_show(args: argparse.Namespace) -> int:
    with MonitorsClient(args) as c:
        d = c.call("GetSession", mpb.GetSessionRequest(session_id=args.session),
                   mpb.SessionDetail, f"session {args.session}")
    if args.json:
        print(json.dumps({**session_dict(d.session),
                          "task_list": [render.task_dict(t) for t in d.tasks],
                          "decision_list": [decision_dict(x) for x in d.decisions]}))
        return exitcodes.OK
    s = d.session
    print(f"session {s.session_id} ({s.state}): {s.goal}\n")
    print(render.tasks_table(list(d.tasks)))
    if d.decisions:
        print()
        print(decisions_table(list(d.decisions)))
    return exitcodes.OK


def cmd_nudge(args: argparse.Namespace) -> int:
    tid = commands.task_id(args.task)
    with MonitorsClient(args) as c:
        r = c.call("Nudge", mpb.NudgeRequest(task_id=tid), mpb.NudgeResponse, f"task {tid}")
    return _emit(args, [{"task_id": tid, "delivered": r.delivered}],
                 "" if r.delivered else "no monitor process is connected; it will look when "
                 "it is")


def attention_lines(tasks: list[pb.Task]) -> str:
    return "\n".join(f"{t.task_id}  needs a person: {t.attention}" for t in tasks if t.attention)


Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add_parsers(command: Command,
                sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from cortexctl.cli import add_global_flags

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="JSON lines")

    pol = sub.add_parser("policies", help="monitor policies stored in the hub",
                         description="Monitor policies (TOML) stored in the hub by name.")
    acts = pol.add_subparsers(dest="policies_action", metavar="ACTION", required=True)
    for name, run, helptext in (("put", cmd_policies_put, "store a policy from a TOML file"),
                                ("ls", cmd_policies_ls, "list the stored policies"),
                                ("show", cmd_policies_show, "print a stored policy")):
        p = acts.add_parser(name, help=helptext, description=helptext)
        add_global_flags(p, on_command=True)
        p.set_defaults(run=run)
        json_flag(p)
        if name != "ls":
            p.add_argument("name", metavar="NAME")
        if name == "put":
            p.add_argument("file", metavar="FILE")
    p = command("decisions", cmd_decisions, "list every decision a task's monitor made")
    p.add_argument("task", metavar="TASK")
    json_flag(p)
    p = command("tree", cmd_tree, "draw a task's chain of follow-ups from its root")
    p.add_argument("task", metavar="TASK")
    json_flag(p)
    p = command("sessions", cmd_sessions, "list agent sessions (a goal and its tasks)")
    json_flag(p)
    ses = sub.add_parser("session", help="one agent session", description="One agent session.")
    acts = ses.add_subparsers(dest="session_action", metavar="ACTION", required=True)
    p = acts.add_parser("show", help="a session's tasks, decisions and state")
    add_global_flags(p, on_command=True)
    p.set_defaults(run=cmd_session_show)
    p.add_argument("session", metavar="ID")
    json_flag(p)
    p = command("nudge", cmd_nudge, "wake a task's monitor now")
    p.add_argument("task", metavar="TASK")
    json_flag(p)

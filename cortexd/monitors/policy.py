"""Monitor policies: TOML rules that decide without an LLM where they can (pure).

A policy is stored in the hub by name (``cortexctl policies put NAME FILE``) or given
inline at submission. Its shape::

    check_every_s = 60        # look again this often while the task runs quietly (0: never)
    llm = true                # ask the LLM when no rule decides (if one is configured)
    instructions = "…"        # what the LLM is told about this kind of task
    on_undecided = "escalate" # no rule, no LLM, a prompt: "escalate" or "wait"
    browse_session = "s-…@web-1"  # a browser session whose snapshot the monitor reads
                              # at every decision (or ``cortexctl submit --browse-session``)

    [[rule]]
    id = "confirm"            # recorded with every decision it makes
    on = "prompt"             # prompt | end | idle | timer | any
    kind = ["confirm"]        # prompt kinds (the node's detector names them)
    match = 'Proceed\\? \\[y/N\\]'  # regex searched in the rendered last lines
    snapshot_match = 'Order placed'  # regex searched in the browser session's snapshot
    exit_code = 0             # end: the exit code (or a list of them)
    state = "SUCCEEDED"       # end: the final state (or a list)
    elapsed_over_s = 0        # since the task started
    idle_over_s = 0           # since its last output
    action = "SEND_INPUT"     # and the action's fields: text, next_check_seconds,
    text = "y\\n"              # verdict, reason, command, selector, node, monitor

Rules are tried in order; the first whose every condition holds decides; a rule with
``snapshot_match`` holds only when a snapshot was read (the policy names a session and
the hub could fetch it). Invariant: a password prompt is never sent to an LLM —
without a rule for it the task is escalated to a person (:func:`decide_by_rules`
returns that decision).
"""

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from cortex.errors import CortexError
from cortex.ids import NODE_ID_RE
from cortexd.monitors.actions import Action, ActionError, action_from_dict, wait

MAX_POLICY_BYTES = 64 << 10
MAX_RULES = 200
ON_VALUES = ("prompt", "end", "idle", "timer", "any")
RULE_KEYS = frozenset({"id", "on", "kind", "match", "exit_code", "state", "elapsed_over_s",
                       "idle_over_s", "action", "next_check_seconds", "text", "verdict",
                       "reason", "command", "selector", "node", "monitor", "snapshot_match"})
TOP_KEYS = frozenset({"check_every_s", "llm", "instructions", "on_undecided", "rule",
                      "browse_session"})
BROWSE_HANDLE = re.compile(r"s-[0-9a-f]{16}@" + NODE_ID_RE.pattern)
PASSWORD_KINDS = frozenset({"password"})
DEFAULT_CHECK_EVERY_S = 60


class PolicyError(CortexError):
    """A policy that cannot be used; the message names the rule and the problem."""


@dataclass(frozen=True, slots=True)
class Situation:
    """What a monitor knows when it wakes: the event, the task, the screen."""

    trigger: str  # prompt | end | timer | nudge
    state: str  # the task's state name (RUNNING, SUCCEEDED, …)
    terminal: bool
    prompt_kind: str = ""  # the unanswered prompt's kind ("" when none)
    last_lines: str = ""  # the rendered last lines of the terminal
    exit_code: int | None = None
    elapsed_s: float = 0.0
    idle_s: float = 0.0
    snapshot: str | None = None  # the browser session's snapshot (None: none was read)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    on: str
    action: Action
    kinds: frozenset[str] = frozenset()
    match: re.Pattern[str] | None = None
    exit_codes: frozenset[int] = frozenset()
    states: frozenset[str] = frozenset()
    elapsed_over_s: float = 0.0
    idle_over_s: float = 0.0
    snapshot_match: re.Pattern[str] | None = None

    def matches(self, s: Situation) -> bool:
        if not _on(self.on, s):
            return False
        if self.kinds and s.prompt_kind not in self.kinds:
            return False
        if self.exit_codes and (s.exit_code is None or s.exit_code not in self.exit_codes):
            return False
        if self.states and s.state not in self.states:
            return False
        if s.elapsed_s <= self.elapsed_over_s and self.elapsed_over_s:
            return False
        if s.idle_s <= self.idle_over_s and self.idle_over_s:
            return False
        if self.snapshot_match is not None and (
                s.snapshot is None or self.snapshot_match.search(s.snapshot) is None):
            return False
        return self.match is None or self.match.search(s.last_lines) is not None


def _on(on: str, s: Situation) -> bool:
    if on == "any":
        return True
    if on == "end":
        return s.terminal
    if s.terminal:
        return False
    if on == "prompt":
        return bool(s.prompt_kind)
    if on == "idle":
        return not s.prompt_kind and s.trigger in ("timer", "nudge")
    return s.trigger == "timer"


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    rules: tuple[Rule, ...] = ()
    check_every_s: int = DEFAULT_CHECK_EVERY_S
    llm: bool = True
    instructions: str = ""
    on_undecided: str = "escalate"
    browse_session: str = ""
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RuleDecision:
    action: Action
    rule_id: str  # the rule's id, or "builtin:…" for the policy's own defaults


def _set(value: Any, what: str, kind: type) -> frozenset[Any]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        raise PolicyError(f"{what} must be a {kind.__name__} or a list of them")
    return frozenset(items)


def _seconds(raw: dict[str, Any], key: str, where: str) -> float:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PolicyError(f"{where}: {key} must be a non-negative number of seconds")
    return float(value)


def _regex(raw: dict[str, Any], key: str, where: str) -> re.Pattern[str] | None:
    if key not in raw:
        return None
    if not isinstance(raw[key], str):
        raise PolicyError(f"{where}: {key} must be a regular expression string")
    try:
        return re.compile(raw[key], re.MULTILINE)
    except re.error as e:
        raise PolicyError(f"{where}: {key} is not a valid regular expression: {e}") from e


def check_browse_session(handle: Any, where: str) -> str:
    if not isinstance(handle, str) or not BROWSE_HANDLE.fullmatch(handle):
        raise PolicyError(f"{where}: browse_session must be a session handle SID@NODE "
                          f"(cortexctl browse ls), not {handle!r:.80}")
    return handle


def with_browse_session(name: str, body: str, handle: str) -> str:
    """``body`` with ``browse_session = handle`` set (a submission's --browse-session):
    a first line, so the TOML stays one document; refused when the policy names another."""
    check_browse_session(handle, f"policy {name}")
    named = parse_policy(name, body).browse_session
    if named == handle:
        return body
    if named:
        raise PolicyError(f"policy {name} names browse session {named}; "
                          f"--browse-session {handle} cannot replace it")
    return f"browse_session = {json.dumps(handle)}\n{body}"


def _rule(raw: Any, index: int) -> Rule:
    where = f"rule {index + 1}"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: expected a [[rule]] table")
    rid = raw.get("id", f"rule-{index + 1}")
    if not isinstance(rid, str) or not rid or len(rid) > 64:
        raise PolicyError(f"{where}: id must be a short string")
    where = f"rule {rid!r}"
    if unknown := set(raw) - RULE_KEYS:
        raise PolicyError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    on = raw.get("on", "any")
    if on not in ON_VALUES:
        raise PolicyError(f"{where}: on must be one of {', '.join(ON_VALUES)}")
    try:
        action = action_from_dict(raw)
    except ActionError as e:
        raise PolicyError(f"{where}: {e}") from e
    return Rule(
        id=rid, on=on, action=action, match=_regex(raw, "match", where),
        snapshot_match=_regex(raw, "snapshot_match", where),
        kinds=_set(raw["kind"], f"{where}: kind", str) if "kind" in raw else frozenset(),
        exit_codes=(_set(raw["exit_code"], f"{where}: exit_code", int)
                    if "exit_code" in raw else frozenset()),
        states=(frozenset(s.upper() for s in _set(raw["state"], f"{where}: state", str))
                if "state" in raw else frozenset()),
        elapsed_over_s=_seconds(raw, "elapsed_over_s", where),
        idle_over_s=_seconds(raw, "idle_over_s", where))


def parse_policy(name: str, text: str) -> Policy:
    """Parse and validate a policy's TOML; every problem is one PolicyError line."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy {name}: longer than {MAX_POLICY_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"policy {name}: not valid TOML: {e}") from e
    if unknown := set(data) - TOP_KEYS:
        raise PolicyError(f"policy {name}: unknown keys {', '.join(sorted(unknown))}")
    rules = data.get("rule", [])
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise PolicyError(f"policy {name}: rule must be [[rule]] tables, at most {MAX_RULES}")
    try:
        parsed = tuple(_rule(r, i) for i, r in enumerate(rules))
    except PolicyError as e:
        raise PolicyError(f"policy {name}: {e}") from e
    if len({r.id for r in parsed}) != len(parsed):
        raise PolicyError(f"policy {name}: rule ids must be unique")
    check = data.get("check_every_s", DEFAULT_CHECK_EVERY_S)
    if isinstance(check, bool) or not isinstance(check, int) or not 0 <= check <= 86_400:
        raise PolicyError(f"policy {name}: check_every_s must be 0..86400")
    llm, instructions = data.get("llm", True), data.get("instructions", "")
    if not isinstance(llm, bool) or not isinstance(instructions, str):
        raise PolicyError(f"policy {name}: llm must be true/false, instructions a string")
    undecided = data.get("on_undecided", "escalate")
    if undecided not in ("escalate", "wait"):
        raise PolicyError(f"policy {name}: on_undecided must be 'escalate' or 'wait'")
    browse = data.get("browse_session", "")
    if browse:
        check_browse_session(browse, f"policy {name}")
    return Policy(name=name, rules=parsed, check_every_s=check, llm=llm,
                  instructions=instructions[:4000], on_undecided=undecided,
                  browse_session=browse, source=text)


def decide_by_rules(policy: Policy, s: Situation) -> RuleDecision | None:
    """The first matching rule's action; for a password prompt no rule matched, ESCALATE
    (never the LLM); otherwise None: the LLM, if any, or :func:`undecided` decides."""
    for rule in policy.rules:
        if rule.matches(s):
            return RuleDecision(rule.action, rule.id)
    if s.prompt_kind in PASSWORD_KINDS and not s.terminal:
        return RuleDecision(Action("ESCALATE", reason="password prompt: a person must answer"),
                            "builtin:password")
    return None


NO_LLM = "no rule decided and no LLM is configured"


def undecided(policy: Policy, s: Situation, note: str = NO_LLM) -> RuleDecision:
    """What happens when no rule decides and no LLM may (none configured, off, failed)."""
    if s.terminal:
        return RuleDecision(Action("COMPLETE", verdict=f"{s.state} ({note})"),
                            "builtin:undecided")
    if s.prompt_kind and policy.on_undecided == "escalate":
        return RuleDecision(Action("ESCALATE", reason=f"{s.prompt_kind} prompt: {note}"),
                            "builtin:undecided")
    return RuleDecision(wait(policy.check_every_s or DEFAULT_CHECK_EVERY_S), "builtin:undecided")

"""A monitor's actions (DESIGN.md §6): what one decision tells the hub to do.

``WAIT(next_check_seconds)``, ``SEND_INPUT(text)``, ``COMPLETE(verdict)``,
``KILL(reason)``, ``EXECUTE(selector or node, command, monitor policy)`` and
``ESCALATE(reason)``. Pure: one parser, :func:`action_from_dict`, validates every
action whether it comes from a policy rule or from an LLM's answer (a plain JSON
object ``{"action": NAME, ...}``), so a model cannot name an action or a field the
rules could not. Anything invalid is an :class:`ActionError` with a message that
says what is wrong (the LLM is asked again with it).
"""

from dataclasses import dataclass, field
from typing import Any

from cortex.errors import CortexError
from cortex.ids import check_labels, is_node_id

ACTION_NAMES = ("WAIT", "SEND_INPUT", "COMPLETE", "KILL", "EXECUTE", "ESCALATE")
MAX_WAIT_S = 86_400
MIN_WAIT_S = 1
MAX_TEXT_BYTES = 4096
MAX_REASON_CHARS = 1000
MAX_COMMAND_BYTES = 64 << 10
POLICY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ActionError(CortexError):
    """An action (from a rule or an LLM) is not one the monitor can apply."""


@dataclass(frozen=True, slots=True)
class Action:
    """One validated action. Only the fields of ``name`` are meaningful."""

    name: str
    next_check_seconds: int = 0  # WAIT
    text: str = ""  # SEND_INPUT
    verdict: str = ""  # COMPLETE
    reason: str = ""  # KILL, ESCALATE
    command: str = ""  # EXECUTE
    selector: dict[str, str] = field(default_factory=dict)  # EXECUTE
    node: str = ""  # EXECUTE
    monitor: str = ""  # EXECUTE: the follow-up's monitor policy ("" = unmonitored)

    def args(self) -> dict[str, Any]:
        """The action's own fields, for the decision record and the CLI."""
        if self.name == "WAIT":
            return {"next_check_seconds": self.next_check_seconds}
        if self.name == "SEND_INPUT":
            return {"text": self.text}
        if self.name == "COMPLETE":
            return {"verdict": self.verdict}
        if self.name in ("KILL", "ESCALATE"):
            return {"reason": self.reason}
        out: dict[str, Any] = {"command": self.command}
        if self.selector:
            out["selector"] = dict(self.selector)
        if self.node:
            out["node"] = self.node
        if self.monitor:
            out["monitor"] = self.monitor
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.name, **self.args()}

    def summary(self) -> str:
        """One line for tables: ``SEND_INPUT 'y\\n'``, ``WAIT 30s``."""
        if self.name == "WAIT":
            return f"WAIT {self.next_check_seconds}s"
        if self.name == "SEND_INPUT":
            return f"SEND_INPUT {self.text!r}"
        if self.name == "EXECUTE":
            where = self.node or ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))
            return f"EXECUTE [{where or 'any'}] {self.command}"
        detail = self.verdict or self.reason
        return f"{self.name} {detail}".rstrip()


def wait(seconds: float) -> Action:
    return Action("WAIT", next_check_seconds=max(MIN_WAIT_S, min(MAX_WAIT_S, round(seconds))))


def _str(d: dict[str, Any], key: str, required: bool, limit: int) -> str:
    value = d.get(key, "")
    if not isinstance(value, str):
        raise ActionError(f"{key} must be a string")
    if required and not value.strip():
        raise ActionError(f"{d.get('action')} needs a non-empty {key}")
    if len(value.encode()) > limit:
        raise ActionError(f"{key} is longer than {limit} bytes")
    return value


def _wait_seconds(d: dict[str, Any]) -> int:
    raw = d.get("next_check_seconds")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ActionError("WAIT needs next_check_seconds (a number of seconds)")
    if not MIN_WAIT_S <= raw <= MAX_WAIT_S:
        raise ActionError(f"next_check_seconds must be {MIN_WAIT_S}..{MAX_WAIT_S}")
    return round(raw)


def _execute(d: dict[str, Any]) -> Action:
    command = _str(d, "command", True, MAX_COMMAND_BYTES)
    selector = d.get("selector") or {}
    if not isinstance(selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
        raise ActionError("selector must be a table of label = value strings")
    if (problem := check_labels(selector, "selector")) is not None:
        raise ActionError(problem)
    node = _str(d, "node", False, 128)
    if node and not is_node_id(node):
        raise ActionError(f"node {node!r} is not a valid node id")
    monitor = _str(d, "monitor", False, 64)
    if monitor and not set(monitor) <= POLICY_NAME_CHARS:
        raise ActionError(f"monitor policy name {monitor!r}: use letters, digits, - _ .")
    return Action("EXECUTE", command=command, selector=dict(selector), node=node,
                  monitor=monitor)


def action_from_dict(d: object) -> Action:
    """Validate ``{"action": NAME, ...}``; unknown fields are ignored, unknown actions not."""
    if not isinstance(d, dict):
        raise ActionError("an action must be a JSON object")
    name = d.get("action")
    if not isinstance(name, str) or name.upper() not in ACTION_NAMES:
        raise ActionError(f"unknown action {name!r}; expected one of {', '.join(ACTION_NAMES)}")
    name = name.upper()
    if name == "WAIT":
        return Action("WAIT", next_check_seconds=_wait_seconds(d))
    if name == "SEND_INPUT":
        return Action("SEND_INPUT", text=_str(d, "text", True, MAX_TEXT_BYTES))
    if name == "COMPLETE":
        return Action("COMPLETE", verdict=_str(d, "verdict", False, MAX_REASON_CHARS))
    if name in ("KILL", "ESCALATE"):
        return Action(name, reason=_str(d, "reason", False, MAX_REASON_CHARS))
    return _execute(d)


#: The JSON schema an LLM's answer must follow (structured output). Flat, so that
#: small models manage it; :func:`action_from_dict` enforces what it cannot say.
ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(ACTION_NAMES)},
        "next_check_seconds": {"type": "integer"},
        "text": {"type": "string"},
        "verdict": {"type": "string"},
        "reason": {"type": "string"},
        "command": {"type": "string"},
        "node": {"type": "string"},
        "selector": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["action"],
    "additionalProperties": False,
}

"""One task's monitor as a state machine (pure: events in, wake-ups out).

A monitor sleeps until one of four things wakes it: a prompt event from the node,
the task's end, its own timer, or an operator's nudge. Each wake-up has a *trigger
key* naming the event that caused it — ``prompt:ATTEMPT:OFFSET``, ``end:ATTEMPT``,
``timer:ATTEMPT:DUE_MS``, ``nudge:ID`` — and the decision it leads to is recorded
under that key, once (the store refuses a second decision for the same task,
attempt and key). So a monitor woken twice by the same event (the feed replayed
after a reconnect, a nudge of a task that already ended, a monitor process
restarted between decision and action) decides once and acts once.

Invariants:

- At most one wake-up per trigger key is handed out by one monitor.
- While a person owns the task (ESCALATE, until an operator answers), only the
  task's end wakes the monitor.
- After the end of the task has been decided (anything but WAIT) the monitor is
  done; nothing wakes it again.
- A prompt is "unanswered" until output passes its offset (the typed answer's echo)
  or an answer was sent.
- The task's state only moves forward: a state older than the one known (an earlier
  attempt, or QUEUED < ASSIGNED < RUNNING < an end within one attempt) is ignored, so a
  snapshot followed by an event published before it cannot move a monitor back.
"""

from collections import OrderedDict
from dataclasses import dataclass, field

from cortexd.monitors.actions import Action
from cortexd.monitors.policy import Policy, Situation

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"})
#: Prompt kinds that do not ask for input from the task's point of view.
NOT_PROMPTS = frozenset({"finished"})
MAX_HANDLED_KEYS = 256
_RANK = {"QUEUED": 0, "ASSIGNED": 1, "RUNNING": 2}


def state_rank(attempt: int, state: str) -> tuple[int, int]:
    return attempt, _RANK.get(state, 3)


@dataclass(frozen=True, slots=True)
class Prompt:
    kind: str
    offset: int
    excerpt: bytes
    at_ms: int


@dataclass(frozen=True, slots=True)
class Wake:
    trigger: str  # prompt | end | timer | nudge
    key: str
    attempt: int


@dataclass(eq=False)
class TaskMonitor:
    task_id: str
    policy: Policy
    goal: str = ""
    session_id: str = ""
    state: str = "QUEUED"
    attempt: int = 0
    exit_code: int | None = None
    started_ms: int = 0
    last_output_ms: int = 0
    output_end: int = 0
    prompt: Prompt | None = None
    attention: str = ""
    done: bool = False
    next_check_ms: int = 0
    handled: OrderedDict[str, None] = field(default_factory=OrderedDict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def _wake(self, trigger: str, key: str) -> Wake | None:
        if self.done or key in self.handled:
            return None
        if self.attention and trigger != "end":
            return None
        self.handled[key] = None
        while len(self.handled) > MAX_HANDLED_KEYS:
            self.handled.popitem(last=False)
        return Wake(trigger, key, self.attempt)

    def forget(self, key: str) -> None:
        """A wake-up whose decision failed (the hub was unreachable): may come again."""
        self.handled.pop(key, None)

    # -- events -------------------------------------------------------------------

    def on_task(self, state: str, attempt: int, exit_code: int | None, now_ms: int) -> Wake | None:
        if state_rank(attempt, state) < state_rank(self.attempt, self.state):
            return None  # older than what is known
        if attempt != self.attempt:
            self.attempt, self.prompt, self.output_end = attempt, None, 0
        self.state, self.exit_code = state, exit_code
        if state == "RUNNING" and not self.started_ms:
            self.started_ms = self.last_output_ms = now_ms
        if self.terminal:
            self.next_check_ms = 0
            return self._wake("end", f"end:{attempt}")
        if state == "RUNNING" and not self.next_check_ms and self.policy.check_every_s:
            self.next_check_ms = now_ms + self.policy.check_every_s * 1000
        return None

    def on_prompt(self, attempt: int, kind: str, offset: int, excerpt: bytes,
                  at_ms: int) -> Wake | None:
        if attempt != self.attempt or kind in NOT_PROMPTS or self.terminal:
            return None
        if offset < self.output_end:
            return None  # already answered: output went past it
        self.prompt = Prompt(kind, offset, excerpt, at_ms)
        return self._wake("prompt", f"prompt:{attempt}:{offset}")

    def on_output(self, attempt: int, end: int, at_ms: int) -> None:
        if attempt != self.attempt or end <= self.output_end:
            return
        self.output_end, self.last_output_ms = end, at_ms
        if self.prompt is not None and end > self.prompt.offset:
            self.prompt = None

    def on_attention(self, reason: str, now_ms: int) -> None:
        """A person took the task (reason) or gave it back (""): answered, look again."""
        was, self.attention = self.attention, reason
        if was and not reason:
            self.prompt = None
            if not self.terminal and self.policy.check_every_s:
                self.next_check_ms = now_ms + self.policy.check_every_s * 1000

    def due(self, now_ms: int) -> Wake | None:
        if not self.next_check_ms or now_ms < self.next_check_ms or self.terminal:
            return None
        due, self.next_check_ms = self.next_check_ms, 0
        return self._wake("timer", f"timer:{self.attempt}:{due}")

    def on_nudge(self, nudge_id: str) -> Wake | None:
        """An operator's nudge re-examines the task's current situation: if that is an
        event already decided (its end, an unanswered prompt), it is that event."""
        if self.terminal:
            self.handled.pop(f"end:{self.attempt}", None)
            return self._wake("end", f"end:{self.attempt}")
        if self.prompt is not None:
            key = f"prompt:{self.attempt}:{self.prompt.offset}"
            self.handled.pop(key, None)
            return self._wake("prompt", key)
        return self._wake("nudge", f"nudge:{nudge_id}")

    # -- deciding -------------------------------------------------------------------

    def situation(self, wake: Wake, now_ms: int, last_lines: str) -> Situation:
        started = self.started_ms or now_ms
        return Situation(
            trigger=wake.trigger, state=self.state, terminal=self.terminal,
            prompt_kind=self.prompt.kind if self.prompt is not None else "",
            last_lines=last_lines, exit_code=self.exit_code if self.terminal else None,
            elapsed_s=max(0.0, (now_ms - started) / 1000),
            idle_s=max(0.0, (now_ms - (self.last_output_ms or started)) / 1000))

    def decided(self, wake: Wake, action: Action, now_ms: int) -> None:
        """Update the monitor for an action that was applied."""
        if wake.trigger == "end" or self.terminal:
            self.done = action.name != "WAIT" or self.terminal
            self.next_check_ms = 0
            return
        if action.name == "WAIT":
            self.next_check_ms = now_ms + action.next_check_seconds * 1000
        elif action.name == "COMPLETE":
            self.done = True
        elif action.name == "ESCALATE":
            self.attention = action.reason or "needs a person"
        elif action.name == "SEND_INPUT":
            self.prompt = None
        if action.name != "WAIT" and not self.done and self.policy.check_every_s:
            self.next_check_ms = now_ms + self.policy.check_every_s * 1000

"""The monitor process's work: feed events in, decisions out, through the Control API.

One :class:`~cortexd.monitors.core.TaskMonitor` per monitored task (this process's
share of them). A wake-up runs the decision ladder in its own asyncio task — at most
one per monitored task at a time, the rest wait their turn — so a slow LLM call
holds up only its own task:

1. read the task's context (``GetContext``: the journal, secrets already redacted; and
   when the policy names a browser session, its snapshot, fetched by the hub now — its
   sha256 goes into the decision's note);
2. **rules** (``policy.decide_by_rules``): no LLM call when a rule decides, and never
   one for a password prompt;
3. else the **LLM** if one is configured and the policy allows it; a failure
   (unreachable, slow, invalid answers, 429s) ESCALATEs; calls over the per-task
   rate WAIT until one is allowed;
4. else the policy's default (``policy.undecided``), which says no LLM decided.

The decision is recorded *before* it is applied (``Act``, unique per task, attempt
and trigger key; in the same call the hub applies WAIT, SEND_INPUT, KILL, COMPLETE
and ESCALATE itself and records that it did, so a decision costs two round trips,
the screen and the act). If one was recorded already — a double wake-up, or this
process restarted between recording and applying — the stored action is applied,
unless it was applied; EXECUTE submits with an idempotency key made from the same
(task, attempt, trigger key), so its follow-up starts exactly once.
"""

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from cortex import logs
from cortex.v1 import control_pb2, control_pb2_grpc, monitor_pb2, monitor_pb2_grpc
from cortexd.monitors.actions import Action, action_from_dict, wait
from cortexd.monitors.context import JournalText, PageSnapshot, last_lines, screen_end
from cortexd.monitors.core import TaskMonitor, Wake
from cortexd.monitors.llm import LLMClient, LLMError, RateLimited
from cortexd.monitors.policy import (
    NO_LLM,
    PolicyError,
    RuleDecision,
    decide_by_rules,
    parse_policy,
    undecided,
)

APPLY_RETRIES = 6
APPLY_BACKOFF_S = 0.25
CALL_TIMEOUT_S = 10.0
SCREEN_BYTES = 16_384  # what last_lines renders
#: Calls to the hub in flight at once. A burst of wake-ups then goes through in about
#: the order it came (asyncio's semaphore is FIFO) instead of every decision waiting
#: for all the others' screens before any acts; an LLM call holds no slot.
MAX_HUB_CALLS = 32
STATES = {v: k for k, v in control_pb2.TaskState.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


def execute_key(task_id: str, attempt: int, trigger_key: str) -> str:
    """The follow-up's idempotency key: one per (task, attempt, causing event)."""
    h = hashlib.sha256(f"{task_id}:{attempt}:{trigger_key}".encode()).hexdigest()
    return f"mx-{h[:40]}"


def snapshot_of(ctx: monitor_pb2.TaskContext) -> tuple[PageSnapshot | None, str]:
    """The snapshot a GetContext carried, and what the decision record notes of it."""
    if not ctx.HasField("snapshot"):
        return None, ""
    p = ctx.snapshot
    if p.error:
        return None, f"no snapshot of {p.session}: {p.error}"[:300]
    return (PageSnapshot(p.session, p.url, p.text, p.full_bytes, p.sha256, p.truncated),
            f"snapshot sha256={p.sha256} ({len(p.text.encode())} B of {p.session})")


@dataclass
class Decided:
    action: Action
    rule_id: str = ""
    model: str = ""
    note: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_digest: str = ""
    context_bytes: int = 0


@dataclass(eq=False)
class Slot:
    """One task's turn: the wake-ups waiting while a decision runs."""

    waiting: list[Wake] = field(default_factory=list)
    running: bool = False


class Runner:
    def __init__(self, control: control_pb2_grpc.ControlStub,
                 monitors: monitor_pb2_grpc.MonitorsStub, metadata: Any,
                 llm: LLMClient | None, hold_ms: int = 0) -> None:
        self.control = control
        self.monitors = monitors
        self.metadata = metadata
        self.llm = llm
        self.hold_ms = hold_ms
        self.tasks: dict[str, TaskMonitor] = {}
        self.slots: dict[str, Slot] = {}
        self._work: set[asyncio.Task[None]] = set()
        self._hub_calls = asyncio.Semaphore(MAX_HUB_CALLS)
        # {task: (wake key, screen, its journal end)}: the screen a prompt's feed event
        # carried, used by that wake's rules instead of a GetContext (one per task).
        self._screens: dict[str, tuple[str, bytes, int]] = {}
        self.decisions = self.by_rule = self.by_llm = 0
        self.log = logs.get()

    async def _call(self, fn: Callable[..., Awaitable[Any]], request: Any) -> Any:
        async with self._hub_calls:
            return await fn(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)

    def reset(self) -> None:
        """A new feed: rebuild every monitor from its snapshot (decisions are durable)."""
        self.tasks.clear()
        self._screens.clear()

    # -- feed events ------------------------------------------------------------------

    def on_event(self, ev: monitor_pb2.FeedEvent) -> None:
        kind = ev.WhichOneof("kind")
        now = now_ms()
        if kind == "monitored":
            self._monitored(ev.monitored, now)
        elif kind == "state":
            if (tm := self.tasks.get(ev.state.task_id)) is not None:
                t = ev.state
                self._wake(tm, tm.on_task(STATES[t.state], t.attempt,
                                          t.exit_code if t.has_exit_code else None, now))
        elif kind == "prompt":
            if (tm := self.tasks.get(ev.prompt.task_id)) is not None:
                p = ev.prompt.prompt
                wake = tm.on_prompt(ev.prompt.attempt, p.kind, p.offset, p.excerpt, p.at_ms)
                if wake is not None and ev.prompt.has_screen:
                    self._screens[tm.task_id] = (wake.key, ev.prompt.screen,
                                                 ev.prompt.screen_end)
                self._wake(tm, wake)
        elif kind == "output":
            if (tm := self.tasks.get(ev.output.task_id)) is not None:
                tm.on_output(ev.output.attempt, ev.output.end, ev.output.at_ms)
        elif kind == "nudge":
            if (tm := self.tasks.get(ev.nudge)) is not None:
                self._wake(tm, tm.on_nudge(str(now)))
        elif kind == "attention":
            if (tm := self.tasks.get(ev.attention.task_id)) is not None:
                tm.on_attention(ev.attention.reason, now)

    def _monitored(self, m: monitor_pb2.MonitoredTask, now: int) -> None:
        t = m.task
        if t.task_id in self.tasks:
            return
        try:
            policy = parse_policy(m.policy_name, m.policy_body)
        except PolicyError:
            self.log.exception("monitor_policy_invalid", task=t.task_id)
            return
        tm = TaskMonitor(t.task_id, policy, goal=m.goal, session_id=m.session_id,
                         attention=m.attention)
        self.tasks[t.task_id] = tm
        self._wake(tm, tm.on_task(STATES[t.state], t.attempt,
                                  t.exit_code if t.has_exit_code else None, now))
        tm.on_output(t.attempt, t.output_bytes, t.updated_ms or now)
        if t.HasField("last_prompt") and t.last_prompt.offset >= t.output_bytes:
            p = t.last_prompt
            self._wake(tm, tm.on_prompt(t.attempt, p.kind, p.offset, p.excerpt, p.at_ms))

    def tick(self) -> None:
        """Fire the timers that are due."""
        now = now_ms()
        for tm in list(self.tasks.values()):
            if tm.next_check_ms and tm.next_check_ms <= now:
                self._wake(tm, tm.due(now))

    # -- deciding ------------------------------------------------------------------------

    def _wake(self, tm: TaskMonitor, wake: Wake | None) -> None:
        if wake is None:
            return
        slot = self.slots.setdefault(tm.task_id, Slot())
        slot.waiting.append(wake)
        if not slot.running:
            slot.running = True
            work = asyncio.get_running_loop().create_task(self._drain(tm, slot))
            self._work.add(work)
            work.add_done_callback(self._work.discard)

    async def _drain(self, tm: TaskMonitor, slot: Slot) -> None:
        try:
            while slot.waiting:
                wake = slot.waiting.pop(0)
                try:
                    await self._decide_and_apply(tm, wake)
                except Exception:
                    tm.forget(wake.key)  # may come again (the next feed's snapshot)
                    self.log.exception("monitor_decision_failed", task=tm.task_id,
                                       trigger=wake.key)
        finally:
            slot.running = False
            if self.slots.get(tm.task_id) is slot and not slot.waiting:
                del self.slots[tm.task_id]

    async def _screen(self, tm: TaskMonitor, wake: Wake) -> tuple[str, PageSnapshot | None,
                                                                    str]:
        """The rendered last lines the rules match on (only the end of the journal): the
        one the prompt's feed event carried, else the hub's now; and when the policy names
        a browser session, its snapshot (fetched now by the hub) and a note for the record."""
        held = self._screens.pop(tm.task_id, None)
        snap, note = None, ""
        if held is not None and held[0] == wake.key and not tm.policy.browse_session:
            screen, total = held[1], held[2]
        else:
            ctx = await self._call(self.monitors.GetContext, monitor_pb2.GetContextRequest(
                task_id=tm.task_id, screen_bytes=SCREEN_BYTES,
                browse_snapshot=bool(tm.policy.browse_session)))
            screen, total = ctx.journal.tail, ctx.journal.total_bytes
            snap, note = snapshot_of(ctx)
        if tm.prompt is not None:
            screen = screen_end(screen, total, tm.prompt.excerpt, tm.prompt.offset)
        return last_lines(screen), snap, note

    async def _journal(self, tm: TaskMonitor) -> JournalText:
        """The whole context an LLM call may see (10 KB head, marker, 30 KB tail)."""
        ctx = await self._call(self.monitors.GetContext,
                               monitor_pb2.GetContextRequest(task_id=tm.task_id))
        j = ctx.journal
        marker = (f"[… {j.omitted_bytes} bytes omitted (offsets {j.omitted_from}–"
                  f"{j.omitted_to}) …]" if j.omitted_bytes else "")
        return JournalText(j.head, j.tail, marker)

    async def _decide(self, tm: TaskMonitor, wake: Wake) -> Decided:
        lines, snap, page_note = await self._screen(tm, wake)
        d = await self._decide_on(tm, wake, lines, snap)
        if page_note:
            d.note = f"{d.note}; {page_note}" if d.note else page_note
        return d

    async def _decide_on(self, tm: TaskMonitor, wake: Wake, lines: str,
                         snap: PageSnapshot | None) -> Decided:
        s = tm.situation(wake, now_ms(), lines)
        if snap is not None:
            s = replace(s, snapshot=snap.text)
        rd = decide_by_rules(tm.policy, s)
        if rd is not None:
            return Decided(rd.action, rule_id=rd.rule_id)
        if self.llm is None or not tm.policy.llm:
            why = NO_LLM if self.llm is None else "no rule decided and the policy has llm = false"
            rd = undecided(tm.policy, s, why)
            return Decided(rd.action, rule_id=rd.rule_id, note=why)
        try:
            journal = await self._journal(tm)
            a = await self.llm.decide(tm.task_id, s, tm.goal, tm.policy.instructions, journal,
                                      snap)
        except RateLimited as e:
            return Decided(wait(e.retry_in_s), rule_id="builtin:llm-rate", note=str(e))
        except LLMError as e:
            fallback: RuleDecision = undecided(tm.policy, s, str(e))
            action = fallback.action if s.terminal else Action("ESCALATE", reason=str(e))
            return Decided(action, rule_id="builtin:llm-failed", model=self.llm.s.model,
                           note=str(e))
        return Decided(a.action, model=a.model, prompt_tokens=a.prompt_tokens,
                       completion_tokens=a.completion_tokens, context_digest=a.context_digest,
                       context_bytes=a.context_bytes, note=f"{a.calls} call(s)")

    async def _decide_and_apply(self, tm: TaskMonitor, wake: Wake) -> None:
        started = time.perf_counter()
        d = await self._decide(tm, wake)
        latency_ms = (time.perf_counter() - started) * 1000
        # One round trip when the hub can apply the action itself (all but EXECUTE, and
        # not when a test holds the monitor between recording and applying).
        hub_applies = d.action.name != "EXECUTE" and not self.hold_ms
        rec = await self._call(self.monitors.Act, monitor_pb2.ActRequest(
            apply=hub_applies, decision=monitor_pb2.Decision(
                task_id=tm.task_id, attempt=wake.attempt, wake=wake.trigger,
                trigger_key=wake.key, rule_id=d.rule_id, model=d.model,
                action=d.action.name, args_json=json.dumps(d.action.args()),
                latency_ms=latency_ms, prompt_tokens=d.prompt_tokens,
                completion_tokens=d.completion_tokens, context_digest=d.context_digest,
                context_bytes=d.context_bytes, note=d.note)))
        stored = rec.decision
        action = d.action if rec.created else action_from_dict(
            {"action": stored.action, **json.loads(stored.args_json or "{}")})
        self.decisions += 1
        if rec.created:
            self.by_llm += bool(d.model) and not d.rule_id
            self.by_rule += bool(d.rule_id)
        if stored.applied and not rec.applied_now:
            tm.decided(wake, action, now_ms())
            return
        if not rec.applied_now:
            if self.hold_ms:
                await asyncio.sleep(self.hold_ms / 1000)
            result = await self._apply(tm, wake, action)
            await self._call(self.monitors.DecisionApplied, monitor_pb2.DecisionAppliedRequest(
                decision_id=stored.decision_id, result=result))
        tm.decided(wake, action, now_ms())
        if tm.done and action.name != "COMPLETE":
            await self._call(self.monitors.SetMonitorState, monitor_pb2.SetMonitorStateRequest(
                task_id=tm.task_id, done=True, verdict=action.summary()))
        self.log.info("monitor_decided", task=tm.task_id, trigger=wake.key, action=action.name,
                      rule=d.rule_id or None, model=d.model or None,
                      replayed=not rec.created, latency_ms=round(latency_ms, 2))

    async def _apply(self, tm: TaskMonitor, wake: Wake, a: Action) -> str:
        for attempt in range(APPLY_RETRIES):
            try:
                return await self._apply_once(tm, wake, a)
            except grpc.aio.AioRpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED) \
                        or attempt == APPLY_RETRIES - 1:
                    if a.name in ("SEND_INPUT", "KILL"):  # the task moved on: nothing to do
                        return f"not applied: {e.details()}"
                    raise
                await asyncio.sleep(APPLY_BACKOFF_S * 2 ** attempt)
        raise AssertionError("unreachable")

    async def _apply_once(self, tm: TaskMonitor, wake: Wake, a: Action) -> str:
        if a.name == "WAIT":
            return f"next check in {a.next_check_seconds} s"
        if a.name == "SEND_INPUT":
            await self._call(self.control.SendInput, control_pb2.SendInputRequest(
                task_id=tm.task_id, data=a.text.encode()))
            return f"sent {len(a.text.encode())} bytes"
        if a.name == "KILL":
            await self._call(self.control.Cancel, control_pb2.CancelRequest(
                task_id=tm.task_id, reason=a.reason or "killed by its monitor"))
            return "cancel requested"
        if a.name == "COMPLETE":
            await self._call(self.monitors.SetMonitorState, monitor_pb2.SetMonitorStateRequest(
                task_id=tm.task_id, done=True, verdict=a.verdict or "complete"))
            return "monitor done"
        if a.name == "ESCALATE":
            await self._call(self.monitors.SetMonitorState, monitor_pb2.SetMonitorStateRequest(
                task_id=tm.task_id, set_attention=True, attention=a.reason or "needs a person"))
            return "waiting for a person"
        resp = await self._call(self.control.Submit, control_pb2.SubmitRequest(
            command=a.command, selector=a.selector, node_id=a.node,
            idempotency_key=execute_key(tm.task_id, wake.attempt, wake.key),
            monitor_policy=a.monitor, parent_task_id=tm.task_id, cause=wake.key))
        return f"started {resp.task.task_id}" + (" (deduplicated)" if resp.deduplicated else "")

    async def close(self) -> None:
        for work in list(self._work):
            work.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)

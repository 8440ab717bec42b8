"""The LLM rung of the decision ladder: any OpenAI-compatible chat-completions endpoint.

Through the ``openai`` client library (never hand-written HTTP). The answer is
structured output (``response_format`` JSON schema, or ``json_object`` for servers
that only have that), parsed and validated by :func:`action_from_dict`; an invalid
answer is asked again with the error, at most ``max_invalid_answers`` times, then
the caller ESCALATEs. Bounded:

- concurrent calls (a semaphore of ``max_concurrent``), time per call
  (``timeout_s``; the client's own retries of 429/5xx are kept to ``HTTP_RETRIES``,
  honouring Retry-After), calls per task per minute (a sliding window: past it the
  monitor WAITs instead of calling);
- context: the journal's 10 KB head + 30 KB tail with the omitted-bytes marker,
  never more than 40 KB per call (``context.llm_messages``), a browser session's
  snapshot included when the policy names one.
"""

import asyncio
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import openai

from cortex.errors import CortexError
from cortexd.monitors.actions import ACTION_SCHEMA, Action, ActionError, action_from_dict
from cortexd.monitors.context import JournalText, PageSnapshot, digest, llm_messages
from cortexd.monitors.policy import Situation

HTTP_RETRIES = 2
MAX_TASKS_TRACKED = 10_000
MAX_ANSWER_TOKENS = 200


class LLMError(CortexError):
    """The LLM did not give a usable answer (unreachable, too slow, invalid, rate-limited)."""


@dataclass(frozen=True, slots=True)
class LLMSettings:
    url: str
    model: str
    api_key_file: Path | None = None
    max_concurrent: int = 4
    timeout_s: float = 30.0
    calls_per_task_per_min: int = 6
    max_invalid_answers: int = 2
    response_format: str = "json_schema"  # json_schema | json_object
    max_context_bytes: int = 40_000


@dataclass(frozen=True, slots=True)
class LLMAnswer:
    action: Action
    model: str
    prompt_tokens: int
    completion_tokens: int
    context_digest: str
    context_bytes: int
    calls: int
    note: str = ""


class RateLimited(LLMError):
    """Calls per task per minute reached; ``retry_in_s`` says when one is allowed."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"LLM calls for this task are at their limit; again in "
                         f"{retry_in_s:.0f} s")
        self.retry_in_s = retry_in_s


class LLMClient:
    def __init__(self, s: LLMSettings) -> None:
        self.s = s
        key = "none"
        if s.api_key_file is not None:
            key = s.api_key_file.read_text().strip() or "none"
        self.client = openai.AsyncOpenAI(base_url=s.url, api_key=key, timeout=s.timeout_s,
                                         max_retries=HTTP_RETRIES)
        self._slots = asyncio.Semaphore(s.max_concurrent)
        self._calls: OrderedDict[str, deque[float]] = OrderedDict()
        self.in_flight = 0

    async def close(self) -> None:
        await self.client.close()

    def _admit(self, task_id: str) -> None:
        now = time.monotonic()
        window = self._calls.setdefault(task_id, deque())
        self._calls.move_to_end(task_id)
        while len(self._calls) > MAX_TASKS_TRACKED:
            self._calls.popitem(last=False)
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= self.s.calls_per_task_per_min:
            raise RateLimited(60 - (now - window[0]))
        window.append(now)

    def _format(self) -> dict[str, object]:
        if self.s.response_format == "json_object":
            return {"type": "json_object", "schema": ACTION_SCHEMA}
        return {"type": "json_schema", "json_schema": {
            "name": "monitor_action", "schema": ACTION_SCHEMA, "strict": False}}

    async def decide(self, task_id: str, s: Situation, goal: str, instructions: str,
                     journal: JournalText, snapshot: PageSnapshot | None = None) -> LLMAnswer:
        """One action from the model, validated; LLMError when there is none to be had."""
        messages: list[dict[str, str]] = llm_messages(s, goal, instructions, journal,
                                                      self.s.max_context_bytes, snapshot)
        sent_digest, sent_bytes = digest(messages)
        prompt_tokens = completion_tokens = calls = 0
        problem = ""
        for _ in range(1 + self.s.max_invalid_answers):
            self._admit(task_id)
            calls += 1
            text, usage = await self._call(messages)
            prompt_tokens += usage[0]
            completion_tokens += usage[1]
            try:
                action = action_from_dict(json.loads(text))
            except (ValueError, ActionError) as e:
                problem = f"invalid answer: {e}"
                # Ask again, saying what was wrong (the context sent is unchanged).
                messages = [*messages[:2], {"role": "assistant", "content": text[:2000]},
                            {"role": "user", "content": f"That answer was not valid ({e}). "
                             "Answer with one JSON object with an \"action\" field."}]
                continue
            return LLMAnswer(action, self.s.model, prompt_tokens, completion_tokens,
                             sent_digest, sent_bytes, calls)
        raise LLMError(f"{problem} (after {calls} calls)")

    async def _call(self, messages: list[dict[str, str]]) -> tuple[str, tuple[int, int]]:
        async with self._slots:
            self.in_flight += 1
            try:
                reply = await self.client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.s.model, messages=messages, response_format=self._format(),
                    temperature=0, max_tokens=MAX_ANSWER_TOKENS)
            except openai.RateLimitError as e:
                raise LLMError(f"the LLM endpoint is rate-limiting (429): {e.message}") from e
            except openai.APITimeoutError as e:
                raise LLMError(f"the LLM did not answer within {self.s.timeout_s:g} s") from e
            except openai.APIError as e:
                raise LLMError(f"the LLM endpoint failed: {e}") from e
            finally:
                self.in_flight -= 1
        usage = reply.usage
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        if not reply.choices:
            return "", tokens
        return reply.choices[0].message.content or "", tokens

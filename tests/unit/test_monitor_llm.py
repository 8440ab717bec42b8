"""The monitors' LLM rung against a scripted OpenAI-compatible server on loopback:
invalid JSON, an unknown action, timeouts, a slow endpoint, 429s, the bounds."""

import asyncio
import json
from typing import Any

import pytest

from cortexd.monitors.context import JournalText
from cortexd.monitors.llm import LLMAnswer, LLMClient, LLMError, LLMSettings, RateLimited
from cortexd.monitors.policy import Situation
from tests.llmscript import Reply, Status, scripted_llm

SIT = Situation(trigger="prompt", state="RUNNING", terminal=False, prompt_kind="confirm",
                last_lines="Continue? [y/n]")
JOURNAL = JournalText(b"starting\r\n", b"Continue? [y/n] ", "")
GOOD = json.dumps({"action": "SEND_INPUT", "text": "y\n"})


def decide(url: str, journal: JournalText = JOURNAL, **kw: Any) -> LLMAnswer:
    async def main() -> LLMAnswer:
        client = LLMClient(LLMSettings(url=url, model="m", **kw))
        try:
            return await client.decide("t-1", SIT, "ship it", "", journal)
        finally:
            await client.close()
    return asyncio.run(main())


def test_a_valid_answer_is_an_action_with_its_cost_and_digest() -> None:
    with scripted_llm([Reply(GOOD)]) as (url, script):
        a = decide(url)
    assert a.action.name == "SEND_INPUT" and a.action.text == "y\n"
    assert (a.prompt_tokens, a.completion_tokens, a.calls) == (11, 7, 1)
    assert len(a.context_digest) == 64
    body = script.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    assert "ship it" in body["messages"][1]["content"]


def test_invalid_json_is_asked_again_then_given_up() -> None:
    with scripted_llm([Reply("not json"), Reply(GOOD)]) as (url, script):
        a = decide(url)
    assert a.calls == 2 and "not valid" in script.requests[1]["messages"][-1]["content"]
    with scripted_llm([Reply("{oops")]) as (url, script):
        with pytest.raises(LLMError, match="invalid answer"):
            decide(url, max_invalid_answers=2)
    assert len(script.requests) == 3  # bounded: 1 + 2 retries


def test_an_unknown_action_is_invalid() -> None:
    with scripted_llm([Reply(json.dumps({"action": "REBOOT"}))]) as (url, script):
        with pytest.raises(LLMError, match="unknown action"):
            decide(url, max_invalid_answers=1)
    assert len(script.requests) == 2


def test_a_timeout_is_an_error_within_the_bound() -> None:
    with scripted_llm([Reply(GOOD, delay_s=3.0)]) as (url, _):
        with pytest.raises(LLMError, match="did not answer within"):
            decide(url, timeout_s=0.3)


def test_429s_are_retried_a_bounded_number_of_times() -> None:
    with scripted_llm([Status(429), Reply(GOOD)]) as (url, script):
        assert decide(url).action.name == "SEND_INPUT"
    assert len(script.requests) == 2
    with scripted_llm([Status(429)]) as (url, script):
        with pytest.raises(LLMError, match="429"):
            decide(url)
    assert len(script.requests) == 3  # the client's 2 retries, then the error


def test_a_slow_endpoint_is_called_at_most_max_concurrent_at_once() -> None:
    async def main(url: str) -> None:
        client = LLMClient(LLMSettings(url=url, model="m", max_concurrent=2))
        try:
            await asyncio.gather(*(client.decide(f"t-{i}", SIT, "", "", JOURNAL)
                                   for i in range(5)))
        finally:
            await client.close()
    with scripted_llm([Reply(GOOD, delay_s=0.3)]) as (url, script):
        asyncio.run(main(url))
    assert len(script.requests) == 5 and script.max_in_flight == 2


def test_calls_per_task_per_minute_are_bounded() -> None:
    async def main(url: str) -> None:
        client = LLMClient(LLMSettings(url=url, model="m", calls_per_task_per_min=2))
        try:
            for _ in range(2):
                await client.decide("t-1", SIT, "", "", JOURNAL)
            with pytest.raises(RateLimited):
                await client.decide("t-1", SIT, "", "", JOURNAL)
            await client.decide("t-2", SIT, "", "", JOURNAL)  # another task's budget
        finally:
            await client.close()
    with scripted_llm([Reply(GOOD)]) as (url, script):
        asyncio.run(main(url))
    assert len(script.requests) == 3


def test_the_context_sent_is_at_most_40_kb() -> None:
    big = JournalText(b"h" * 10_000, "é".encode() * 30_000, "[… 99 bytes omitted …]")
    with scripted_llm([Reply(GOOD)]) as (url, script):
        decide(url, journal=big)
    sent = json.dumps(script.requests[0]["messages"], ensure_ascii=False).encode()
    assert len(sent) <= 40_000 and "99 bytes omitted" in sent.decode()

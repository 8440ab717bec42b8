"""The real model answers structured output through the openai client.

SmolLM2-135M-Instruct served by llama-cpp-python (tests/llmserver.py). Both ways a monitor
may ask for a structured answer are exercised: a forced tool call (the OpenAI-standard way)
and llama-cpp-python's ``json_object`` response format with a schema. The schema's enum
is what a monitor validates against; decoding is grammar-constrained, so the answer must
parse and validate whatever the small model thinks.
"""

from __future__ import annotations

import json

import pytest

from tests.llmserver import LlmServer

pytestmark = pytest.mark.system

ACTIONS = ["WAIT", "SEND_INPUT", "COMPLETE", "KILL", "ESCALATE"]
DECISION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ACTIONS},
        "text": {"type": "string", "maxLength": 40},
        "next_check_seconds": {"type": "integer", "minimum": 1, "maximum": 600},
    },
    "required": ["action", "text", "next_check_seconds"],
}
MESSAGES = [
    {"role": "system", "content": "You watch a terminal. Answer with one action."},
    {"role": "user", "content": "The terminal shows:\nDelete 3 files? [y/N]\n"
                                "The goal is to delete the files."},
]


def _check(decision: object) -> None:
    assert isinstance(decision, dict), decision
    assert decision["action"] in ACTIONS
    assert isinstance(decision["text"], str)
    assert isinstance(decision["next_check_seconds"], int)


def _client(llm_server: LlmServer):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=llm_server.base_url, api_key="unused", timeout=120.0,
                         max_retries=0)


def test_models_lists_the_alias(llm_server: LlmServer) -> None:
    models = [m.id for m in _client(llm_server).models.list().data]
    assert models == [llm_server.model]


def test_forced_tool_call_answers_the_schema(llm_server: LlmServer) -> None:
    reply = _client(llm_server).chat.completions.create(
        model=llm_server.model, messages=MESSAGES, max_tokens=96, temperature=0.0,
        tools=[{"type": "function", "function": {
            "name": "decide", "description": "The monitor's next action.",
            "parameters": DECISION_SCHEMA}}],
        tool_choice={"type": "function", "function": {"name": "decide"}},
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "decide"
    _check(json.loads(calls[0].function.arguments))
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_json_object_with_schema(llm_server: LlmServer) -> None:
    reply = _client(llm_server).chat.completions.create(
        model=llm_server.model, messages=MESSAGES, max_tokens=96, temperature=0.0,
        response_format={"type": "json_object", "schema": DECISION_SCHEMA},  # type: ignore[typeddict-unknown-key]
    )
    content = reply.choices[0].message.content
    assert content is not None
    _check(json.loads(content))

"""The monitors' pure core: actions, policies (rules), one task's monitor, the context."""

import json

import pytest

from cortexd.monitors.actions import ActionError, action_from_dict
from cortexd.monitors.context import JournalText, digest, last_lines, llm_messages, screen_end
from cortexd.monitors.core import TaskMonitor
from cortexd.monitors.policy import PolicyError, Situation, decide_by_rules, parse_policy, undecided

POLICY = r'''
check_every_s = 30
[[rule]]
id = "confirm"
on = "prompt"
kind = "confirm"
match = 'Proceed\? \[y/N\]'
action = "SEND_INPUT"
text = "y\n"

[[rule]]
id = "next"
on = "end"
exit_code = 0
action = "EXECUTE"
command = "echo follow-up"
node = "node-b"
monitor = "watch-b"

[[rule]]
id = "idle"
on = "idle"
idle_over_s = 5
action = "WAIT"
next_check_seconds = 7
'''


def sit(**kw: object) -> Situation:
    base: dict[str, object] = {"trigger": "prompt", "state": "RUNNING", "terminal": False}
    base.update(kw)
    return Situation(**base)  # type: ignore[arg-type]


def test_rules_decide_confirm_end_and_idle() -> None:
    p = parse_policy("p", POLICY)
    d = decide_by_rules(p, sit(prompt_kind="confirm", last_lines="Proceed? [y/N] "))
    assert d is not None and (d.rule_id, d.action.name, d.action.text) == (
        "confirm", "SEND_INPUT", "y\n")
    assert decide_by_rules(p, sit(prompt_kind="confirm", last_lines="Delete? [y/N]")) is None
    d = decide_by_rules(p, sit(trigger="end", state="SUCCEEDED", terminal=True, exit_code=0))
    assert d is not None and d.action.name == "EXECUTE" and d.action.node == "node-b"
    assert decide_by_rules(p, sit(trigger="end", state="FAILED", terminal=True,
                                  exit_code=1)) is None
    d = decide_by_rules(p, sit(trigger="timer", idle_s=6.0))
    assert d is not None and d.action.next_check_seconds == 7
    assert decide_by_rules(p, sit(trigger="timer", idle_s=4.0)) is None


def test_a_password_prompt_escalates_without_a_rule_and_never_asks_the_llm() -> None:
    p = parse_policy("p", "")
    d = decide_by_rules(p, sit(prompt_kind="password", last_lines="Password: "))
    assert d is not None and d.action.name == "ESCALATE" and d.rule_id == "builtin:password"


def test_undecided_says_no_llm() -> None:
    p = parse_policy("p", "")
    d = undecided(p, sit(prompt_kind="confirm"))
    assert d.action.name == "ESCALATE" and "no LLM" in d.action.reason
    d = undecided(p, sit(trigger="end", state="SUCCEEDED", terminal=True))
    assert d.action.name == "COMPLETE"


@pytest.mark.parametrize("text, message", [
    ("[[rule]]\naction = 'FLY'", "unknown action"),
    ("[[rule]]\naction = 'WAIT'", "next_check_seconds"),
    ("[[rule]]\naction = 'SEND_INPUT'\nmatch = '('\ntext='y'", "regular expression"),
    ("[[rule]]\nwhen = 1\naction = 'KILL'", "unknown keys"),
    ("bogus = 1", "unknown keys"),
    ("[[rule]\n", "not valid TOML"),
    ("[[rule]]\naction='EXECUTE'\ncommand='x'\nnode='bad node!'", "not a valid node id"),
])
def test_bad_policies_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy("p", text)


def test_actions_from_an_llm_are_validated() -> None:
    assert action_from_dict({"action": "wait", "next_check_seconds": 3}).next_check_seconds == 3
    for bad in ({"action": "REBOOT"}, {"action": "WAIT", "next_check_seconds": "soon"},
                {"action": "SEND_INPUT"}, [1], {"action": "EXECUTE", "command": ""}):
        with pytest.raises(ActionError):
            action_from_dict(bad)


def test_one_wake_per_event_and_a_nudge_is_the_same_event() -> None:
    m = TaskMonitor("t-1", parse_policy("p", POLICY))
    assert m.on_task("RUNNING", 1, None, 1000) is None
    assert m.next_check_ms == 31_000
    w = m.on_prompt(1, "confirm", 40, b"Proceed? [y/N] ", 1001)
    assert w is not None and w.key == "prompt:1:40"
    assert m.on_prompt(1, "confirm", 40, b"Proceed? [y/N] ", 1001) is None  # replayed
    m.on_output(1, 45, 1100)  # the answer's echo passes the prompt
    assert m.prompt is None
    end = m.on_task("SUCCEEDED", 1, 0, 2000)
    assert end is not None and end.key == "end:1"
    assert m.on_task("SUCCEEDED", 1, 0, 2001) is None  # the same end again
    again = m.on_nudge("n1")  # a nudge of an ended task is its end, decided once (store)
    assert again is not None and again.key == "end:1"
    m.decided(end, action_from_dict({"action": "COMPLETE"}), 2002)
    assert m.done and m.on_nudge("n2") is None


def test_timer_wait_and_attention() -> None:
    m = TaskMonitor("t-1", parse_policy("p", POLICY))
    m.on_task("RUNNING", 1, None, 0)
    assert m.due(29_999) is None
    w = m.due(30_000)
    assert w is not None and w.trigger == "timer"
    m.decided(w, action_from_dict({"action": "WAIT", "next_check_seconds": 7}), 30_000)
    assert m.next_check_ms == 37_000
    p = m.on_prompt(1, "password", 10, b"Password: ", 31_000)
    assert p is not None
    m.decided(p, action_from_dict({"action": "ESCALATE", "reason": "pw"}), 31_000)
    assert m.attention == "pw" and m.due(10**9) is None and m.on_nudge("x") is None
    m.on_attention("", 40_000)  # a person answered
    assert m.attention == "" and m.prompt is None and m.next_check_ms == 70_000


def test_context_is_bounded_and_digested() -> None:
    s = sit(trigger="end", state="SUCCEEDED", terminal=True, exit_code=0)
    j = JournalText(head=b"h" * 10_000, tail=b"\x1b[31mt\x1b[0m" * 30_000, marker="[… 9 …]")
    messages = llm_messages(s, "ship it", "be careful", j, max_bytes=40_000)
    assert len(json.dumps(messages, ensure_ascii=False).encode()) <= 40_000
    assert "[… 9 …]" in messages[1]["content"] and "\x1b" not in messages[1]["content"]
    d1, n1 = digest(messages)
    assert len(d1) == 64 and n1 > 0 and digest(messages)[0] == d1


def test_screen_rendering() -> None:
    assert last_lines(b"a\r\nprogress 10%\rprogress 99%\r\nProceed? [y/N] ") == (
        "a\nprogress 99%\nProceed? [y/N]")
    # the prompt's bytes are not durable yet: the excerpt completes the screen
    assert screen_end(b"abc", 3, b"cdef", 6) == b"abcdef"
    assert screen_end(b"abcdef", 6, b"ef", 6) == b"abcdef"

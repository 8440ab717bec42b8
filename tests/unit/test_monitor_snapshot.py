"""A monitor reading a browser session's snapshot: policy keys, rules, the LLM context."""

import json

import pytest

from cortex.v1 import monitor_pb2
from cortexd.monitors.context import (
    MAX_CONTEXT_BYTES,
    SNAPSHOT_CONTEXT_BYTES,
    JournalText,
    PageSnapshot,
    llm_messages,
)
from cortexd.monitors.policy import (
    PolicyError,
    Situation,
    decide_by_rules,
    parse_policy,
    with_browse_session,
)
from cortexd.monitors.runner import snapshot_of

HANDLE = "s-0123456789abcdef@web-1"
POLICY = '''
check_every_s = 5
[[rule]]
id = "placed"
on = "timer"
snapshot_match = 'heading "Order placed'
action = "COMPLETE"
verdict = "the page says the order was placed"
[[rule]]
id = "wait"
on = "timer"
action = "WAIT"
next_check_seconds = 5
'''


def timer(snapshot: str | None) -> Situation:
    return Situation(trigger="timer", state="RUNNING", terminal=False, snapshot=snapshot)


def test_a_rule_decides_on_the_snapshot_text_and_only_when_one_was_read() -> None:
    p = parse_policy("shop", f'browse_session = "{HANDLE}"\n' + POLICY)
    assert p.browse_session == HANDLE
    placed = decide_by_rules(p, timer('- heading "Order placed: #42" [level=1]'))
    assert placed is not None and placed.rule_id == "placed"
    assert placed.action.name == "COMPLETE"
    for snap in ('- heading "Checkout" [level=1]', None):  # another page, or none read
        d = decide_by_rules(p, timer(snap))
        assert d is not None and d.rule_id == "wait"


@pytest.mark.parametrize(("text", "message"), [
    ('browse_session = "web-1"\n', "browse_session must be a session handle SID@NODE"),
    ('browse_session = 3\n', "browse_session must be a session handle"),
    ('[[rule]]\nsnapshot_match = "("\naction = "KILL"\n', "snapshot_match is not a valid"),
    ('[[rule]]\nsnapshot_match = 1\naction = "KILL"\n', "snapshot_match must be a regular"),
])
def test_bad_browse_settings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy("p", text)


def test_a_submissions_browse_session_goes_into_the_tasks_policy_text() -> None:
    body = with_browse_session("shop", POLICY, HANDLE)
    assert parse_policy("shop", body).browse_session == HANDLE
    assert parse_policy("shop", body).rules == parse_policy("shop", POLICY).rules
    assert with_browse_session("shop", body, HANDLE) == body  # the same one: unchanged
    with pytest.raises(PolicyError, match="cannot replace it"):
        with_browse_session("shop", body, "s-fedcba9876543210@web-2")
    with pytest.raises(PolicyError, match="SID@NODE"):
        with_browse_session("shop", POLICY, "s-1@web-1")


def test_the_llm_context_holds_the_snapshot_bounded_within_40_kb() -> None:
    text = "".join(f'- row "item {i}" [ref=e{i}]\n' for i in range(5000))  # ~130 KB
    snap = PageSnapshot(HANDLE, "http://127.0.0.1:1/shop", text, len(text), "ab" * 32)
    journal = JournalText(b"h" * 10_000, b"t" * 30_000, "[… 9 bytes omitted …]")
    messages = llm_messages(timer(text), "buy a lamp", "", journal, snapshot=snap)
    user = messages[1]["content"]
    assert len(json.dumps(messages, ensure_ascii=False).encode()) <= MAX_CONTEXT_BYTES
    assert f"session {HANDLE}" in user and 'row "item 0" [ref=e0]' in user
    shown = user.split("its accessibility snapshot:\n")[1].split("\n[… ")[0]
    assert len(shown.encode()) <= SNAPSHOT_CONTEXT_BYTES
    assert "more bytes of the snapshot not shown" in user
    assert user.index("accessibility snapshot") < user.index("its journal")
    small = PageSnapshot(HANDLE, "u", '- heading "Order placed"', 24, "cd" * 32)
    user = llm_messages(timer(None), "", "", journal, snapshot=small)[1]["content"]
    assert 'heading "Order placed"\n' in user and "not shown" not in user


def test_the_decision_note_names_the_snapshot_digest_or_why_there_is_none() -> None:
    ctx = monitor_pb2.TaskContext()
    assert snapshot_of(ctx) == (None, "")
    ctx.snapshot.CopyFrom(monitor_pb2.BrowseSnapshot(session=HANDLE, url="u", text="abc",
                                                     full_bytes=3, sha256="e" * 64))
    snap, note = snapshot_of(ctx)
    assert snap is not None and snap.text == "abc"
    assert note == f"snapshot sha256={'e' * 64} (3 B of {HANDLE})"
    ctx.snapshot.CopyFrom(monitor_pb2.BrowseSnapshot(session=HANDLE, error="session lost"))
    assert snapshot_of(ctx) == (None, f"no snapshot of {HANDLE}: session lost")

"""Monitors, rules only, on a real hub and real nodes (DESIGN.md §6, issue 10).

- a real program asking ``Proceed? [y/N]`` is answered by a rule and finishes;
- a password prompt is escalated (never to an LLM: none is configured, and no rule
  answers it), shows in ``tasks --attention`` and ``watch``, and is answered
  through ``cortexctl input``; what was typed never reaches the monitor's context;
- an idle task is re-checked at the time its rule asked (WAIT next_check_seconds);
- every decision is recorded: ``cortexctl decisions``.
"""

from pathlib import Path

import pytest

from examples.localfleet import Ctl, wait_until

pytestmark = pytest.mark.system

POLICY = r'''
check_every_s = 0
[[rule]]
id = "proceed"
on = "prompt"
match = 'Proceed\? \[y/N\]'
action = "SEND_INPUT"
text = "y\n"

[[rule]]
id = "done"
on = "end"
action = "COMPLETE"
verdict = "finished"
'''

IDLE = r'''
check_every_s = 2
[[rule]]
id = "quiet"
on = "idle"
idle_over_s = 1
action = "WAIT"
next_check_seconds = 3

[[rule]]
id = "done"
on = "end"
action = "COMPLETE"
'''


def decisions(ctl: Ctl, task_id: str) -> list[dict]:
    return ctl.json("decisions", task_id)


def wait_decisions(ctl: Ctl, task_id: str, n: int, timeout_s: float = 60.0) -> list[dict]:
    return wait_until(lambda: (d := decisions(ctl, task_id)) and len(d) >= n and d,
                      timeout_s, f"{n} decisions of {task_id}", interval_s=0.1)


def test_a_rule_answers_proceed_and_the_task_finishes(ctl, nodes, tmp_path: Path) -> None:
    policy = tmp_path / "proceed.toml"
    policy.write_text(POLICY)
    assert b"2 rules" in ctl.ok("policies", "put", "proceed", str(policy))
    assert [p["name"] for p in ctl.json("policies", "ls")] == ["proceed"]
    assert b"Proceed" in ctl.ok("policies", "show", "proceed")
    tid = ctl.submit("printf 'Delete 3 files. Proceed? [y/N] '; read a; "
                     "[ \"$a\" = y ] && echo confirmed", "--monitor", "proceed",
                     "--goal", "clean up")
    out, status = ctl.watch(tid)
    assert status == 0, out
    assert b"confirmed" in out
    ds = wait_decisions(ctl, tid, 2)
    first = ds[0]
    assert (first["rule_id"], first["action"], first["args"]) == (
        "proceed", "SEND_INPUT", {"text": "y\n"})
    assert first["applied"] and first["trigger_key"].startswith("prompt:1:")
    assert first["model"] == "" and first["prompt_tokens"] == 0  # no LLM call
    assert (ds[1]["trigger_key"], ds[1]["action"]) == ("end:1", "COMPLETE")
    task = ctl.task(tid)
    assert task["monitor_policy"] == "proceed" and task["session_id"]
    wait_until(lambda: ctl.task(tid)["monitor_state"] == "done", 30, "monitor done")
    sessions = ctl.json("sessions")
    assert [s["goal"] for s in sessions] == ["clean up"]
    assert sessions[0]["state"] == "done" and sessions[0]["decisions"] == 2


def test_a_password_prompt_escalates_and_a_person_answers(ctl, nodes, tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(POLICY)
    tid = ctl.submit("stty -echo; printf 'Password: '; read pw; stty echo; echo; "
                     "[ \"$pw\" = hunter2 ] && echo unlocked", "--policy-file", str(policy))
    wait_until(lambda: ctl.task(tid)["attention"], 60, "the task to need a person",
               interval_s=0.1)
    ds = decisions(ctl, tid)
    assert [(d["rule_id"], d["action"]) for d in ds] == [("builtin:password", "ESCALATE")]
    listed = ctl.json("tasks", "--attention")
    assert [t["task_id"] for t in listed] == [tid]
    assert b"needs a person" in ctl.ok("tasks", "--attention")
    ctl.ok("input", tid, "hunter2")
    out, status = ctl.watch(tid)
    assert status == 0 and b"unlocked" in out, out
    assert b"hunter2" not in out
    assert ctl.json("tasks", "--attention") == []
    assert not ctl.task(tid)["attention"]
    # Nothing recorded holds the secret.
    assert "hunter2" not in str(decisions(ctl, tid))


def test_an_idle_task_is_rechecked_when_its_rule_asked(ctl, nodes, tmp_path: Path) -> None:
    policy = tmp_path / "idle.toml"
    policy.write_text(IDLE)
    ctl.ok("policies", "put", "idle", str(policy))
    tid = ctl.submit("echo start; sleep 9; echo end", "--monitor", "idle")
    ds = wait_decisions(ctl, tid, 2, timeout_s=60)
    waits = [d for d in ds if d["trigger_key"].startswith("timer:")]
    assert len(waits) >= 2 and all(d["rule_id"] == "quiet" for d in waits)
    # The second check came when the first decision asked: 3 s after it (a timer's key
    # carries the moment it was due).
    due = [int(d["trigger_key"].rsplit(":", 1)[1]) for d in waits]
    assert abs((due[1] - waits[0]["at_ms"]) - 3000) < 500, (due, waits)
    assert 2700 <= waits[1]["at_ms"] - waits[0]["at_ms"] <= 5000
    out, status = ctl.watch(tid)
    assert status == 0

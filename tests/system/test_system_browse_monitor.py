"""A monitor that reads a browser session (issue 11, item 5): real browserd + Chromium,
a page served on loopback, the snapshot fetched by the hub at each decision.

- a rule decides from the snapshot: the task waits at ``read`` while the monitor looks
  every second; once the page says "Order placed" (clicked through the hub), the rule's
  SEND_INPUT answers the task; the decision's note has the digest of that snapshot;
- the LLM path: the scripted OpenAI endpoint receives the snapshot text in the context
  (at most 40 KB), with a secret typed at the task's password prompt — also typed into
  the page — replaced by ``[secret]``;
- a session the submitter does not have is refused at submission.
"""

import hashlib
import json
import re

import pytest

from examples.localfleet import Ctl, log_events, wait_until
from examples.testpages import PageServer
from tests.chromiumkit import need_chromium
from tests.llmscript import Reply, scripted_llm

pytestmark = [pytest.mark.system, pytest.mark.browser]

SHOP_POLICY = r'''
check_every_s = 1
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
[[rule]]
id = "placed"
snapshot_match = 'heading "Order placed"'
action = "SEND_INPUT"
text = "placed\n"
[[rule]]
id = "not-yet"
action = "WAIT"
next_check_seconds = 1
'''

ASK_LLM = '''
check_every_s = 0
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
'''


def ref_of(snapshot: str, needle: str) -> str:
    for line in snapshot.splitlines():
        if needle in line and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise AssertionError(f"no {needle!r} in:\n{snapshot}")


def browser_fleet(fleet, extra_hub_args: list[str] | None = None) -> Ctl:
    need_chromium()
    hub = fleet.hub(shards=1, extra_args=extra_hub_args or [])
    node = fleet.node(hub, "web-1", extra_args=["--browserd-start",
                                                "--browserd-arg=--warm-sessions=1"])
    ctl = Ctl(hub)
    ctl.wait_nodes(["web-1"])
    wait_until(lambda: log_events(node.log_path, "browserd_connected"), 60, "browserd")
    return ctl


@pytest.mark.timeout(240)
def test_a_rule_answers_the_task_when_the_page_shows_order_placed(fleet, tmp_path) -> None:
    ctl = browser_fleet(fleet)
    (tmp_path / "shop.toml").write_text(SHOP_POLICY)
    with PageServer() as pages:
        handle = ctl.ok("browse", "open", pages.base + "/shop").decode().strip()
        refused = ctl("submit", "--policy-file", str(tmp_path / "shop.toml"),
                      "--browse-session", "s-0000000000000000@web-1", "--", "true")
        assert refused.returncode != 0 and b"no browse session" in refused.stderr
        tid = ctl.submit("printf 'waiting for the order\\n'; read a; echo \"got=$a\"",
                         "--policy-file", str(tmp_path / "shop.toml"),
                         "--browse-session", handle)

        def looked() -> list[dict]:
            return [d for d in ctl.json("decisions", tid) if d["rule_id"] == "not-yet"]
        first = wait_until(looked, 60, "a decision on the checkout page", interval_s=0.2)[0]
        assert re.search(r"snapshot sha256=[0-9a-f]{64} \(\d+ B of " + re.escape(handle),
                         first["note"]), first
        before = ctl.ok("browse", "snapshot", "-s", handle).decode()
        assert 'heading "Checkout"' in before
        ctl.ok("browse", "click", "-s", handle, ref_of(before, 'button "Place order"'))
        out, status = ctl.watch(tid, timeout_s=60)
        assert status == 0 and b"got=placed" in out, out
        placed = [d for d in ctl.json("decisions", tid) if d["rule_id"] == "placed"]
        assert len(placed) == 1 and placed[0]["action"] == "SEND_INPUT"
        after = ctl.ok("browse", "snapshot", "-s", handle).decode().removesuffix("\n")
        assert 'heading "Order placed"' in after
        digest = re.search(r"snapshot sha256=([0-9a-f]{64})", placed[0]["note"])
        assert digest is not None
        assert digest.group(1) == hashlib.sha256(after.encode()).hexdigest()
        # the monitor's looks (peek) left the session's diff baseline alone: the diff is
        # against the snapshot taken above, so nothing changed since
        assert ctl.ok("browse", "snapshot", "-s", handle, "--diff").strip() == b""


@pytest.mark.timeout(240)
def test_the_llm_context_holds_the_snapshot_with_secrets_replaced(fleet, tmp_path) -> None:
    answer = json.dumps({"action": "SEND_INPUT", "text": "yes\n"})
    with scripted_llm([Reply(answer)]) as (url, script):
        cfg = tmp_path / "hub.toml"
        cfg.write_text(f'llm_url = "{url}"\nllm_model = "scripted-model"\n')
        ctl = browser_fleet(fleet, ["--config", str(cfg)])
        (tmp_path / "ask.toml").write_text(ASK_LLM)
        with PageServer() as pages:
            handle = ctl.ok("browse", "open", pages.base + "/shop").decode().strip()
            tid = ctl.submit("stty -echo; printf 'Password: '; read pw; stty echo; echo; "
                             "printf 'Continue? (yes/no) '; read a; echo \"answer=$a\"",
                             "--policy-file", str(tmp_path / "ask.toml"),
                             "--browse-session", handle, "--goal", "place the order")
            wait_until(lambda: ctl.task(tid)["attention"], 60, "the password escalation",
                       interval_s=0.1)
            snap = ctl.ok("browse", "snapshot", "-s", handle).decode()
            ctl.ok("browse", "type", "-s", handle, ref_of(snap, 'textbox "note"'), "hunter2")
            ctl.ok("input", tid, "hunter2")
            out, status = ctl.watch(tid, timeout_s=90)
    assert status == 0 and b"answer=yes" in out, out
    assert len(script.requests) == 1
    sent = json.dumps(script.requests)
    user = script.requests[0]["messages"][1]["content"]
    assert f"session {handle}" in user and 'heading "Checkout"' in user
    assert re.search(r'textbox "note".*: \[secret\]$', user, re.MULTILINE), user
    assert "hunter2" not in sent
    d = [d for d in ctl.json("decisions", tid) if d["model"]][0]
    assert 0 < d["context_bytes"] <= 40_000
    assert re.search(r"snapshot sha256=[0-9a-f]{64}", d["note"]), d

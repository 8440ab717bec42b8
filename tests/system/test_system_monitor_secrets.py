"""Secrets stay in the hub across restarts (issue 10): input typed at a password prompt
is replaced by ``[secret]`` in the context an LLM call is sent after a kill -9 of the
monitor process and after a kill -9 of the whole hub (the control process's memory is
gone then: the sealed copy in the store is what redacts).

The task echoes the password back (so the journal holds it), then waits for a flag
file before it asks a question no rule covers, so the LLM call comes after the kills.
"""

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from examples.localfleet import Ctl, wait_until
from tests.llmscript import Reply, scripted_llm

pytestmark = pytest.mark.system

ASK_LLM = '''
check_every_s = 0
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
'''


@pytest.mark.timeout(300)
def test_a_secret_is_redacted_after_the_monitor_and_the_hub_are_killed(
        fleet, tmp_path: Path) -> None:
    answer = json.dumps({"action": "SEND_INPUT", "text": "yes\n"})
    with scripted_llm([Reply(answer)]) as (url, script):
        cfg = tmp_path / "hub.toml"
        cfg.write_text(f'llm_url = "{url}"\nllm_model = "scripted"\n'
                       'llm_response_format = "json_schema"\n')
        hub = fleet.hub(extra_args=["--config", str(cfg)])
        ctl = Ctl(hub)
        fleet.nodes(hub, 1)
        (tmp_path / "ask.toml").write_text(ASK_LLM)
        flag = tmp_path / "go"
        tid = ctl.submit(
            "stty -echo; printf 'Password: '; read pw; stty echo; echo; "
            f"echo \"typed $pw\"; while [ ! -e {flag} ]; do sleep 0.1; done; "
            "printf 'Continue? (yes/no) '; read a; echo \"answer=$a\"",
            "--policy-file", str(tmp_path / "ask.toml"))
        wait_until(lambda: ctl.task(tid)["attention"], 60, "the password escalation",
                   interval_s=0.1)
        ctl.ok("input", tid, "hunter2")
        wait_until(lambda: b"typed hunter2" in ctl.ok("journal", tid), 60,
                   "the hub to store the password printed back", interval_s=0.1)

        monitor_pid = hub.read_info()["monitors"][0]["pid"]
        os.kill(monitor_pid, signal.SIGKILL)
        wait_until(lambda: hub.read_info()["monitors"][0]["pid"] not in (0, monitor_pid), 60,
                   "the monitor process to be respawned", interval_s=0.2)
        hub.kill()  # SIGKILL: the supervisor and every child; memory is gone
        hub.start(timeout_s=60)
        ctl.wait_nodes(["node-1"], timeout_s=90)
        assert script.requests == []

        flag.touch()
        out, status = ctl.watch(tid, timeout_s=120)
    assert status == 0 and b"answer=yes" in out, out
    assert len(script.requests) >= 1
    sent = json.dumps(script.requests)
    assert "hunter2" not in sent and "[secret]" in sent
    assert b"typed hunter2" in out  # the task printed it: only what leaves is redacted
    with sqlite3.connect(hub.state_dir / "cortex.db") as db:  # sealed at rest
        sealed = [r[0] for r in db.execute("SELECT sealed FROM task_secrets WHERE task_id=?",
                                           (tid,))]
    assert len(sealed) == 1 and b"hunter2" not in sealed[0]

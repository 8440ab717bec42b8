"""The LLM rung on a real hub: a scripted OpenAI-compatible endpoint (deterministic), and
the real model (SmolLM2-135M served by llama-cpp-python, tests/llmserver.py).

- a prompt no rule decides goes to the LLM; its answer is applied and recorded with
  the model, tokens and the digest of the context sent;
- a slow LLM stalls nothing else: a rule-answered task starts, is answered and
  finishes while the LLM call is still in flight;
- input typed at a password prompt never leaves the hub: the task prints it back,
  and the context sent to the LLM has ``[secret]`` in its place.
"""

import json
import threading
import time
from pathlib import Path

import pytest

from cortexd.monitors.actions import ACTION_NAMES
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

RULE = r'''
check_every_s = 0
[[rule]]
id = "proceed"
on = "prompt"
match = 'Proceed\? \[y/N\]'
action = "SEND_INPUT"
text = "y\n"
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
'''


def hub_with_llm(fleet, tmp_path: Path, url: str, model: str, fmt: str = "json_schema",
                 timeout_s: float = 30.0) -> Ctl:
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'llm_url = "{url}"\nllm_model = "{model}"\nllm_response_format = "{fmt}"\n'
                   f"llm_timeout_s = {timeout_s}\n")
    hub = fleet.hub(extra_args=["--config", str(cfg)])
    ctl = Ctl(hub)
    fleet.nodes(hub, 2)
    return ctl


def test_a_slow_llm_decides_and_stalls_nothing_else(fleet, tmp_path: Path) -> None:
    answer = json.dumps({"action": "SEND_INPUT", "text": "yes\n"})
    release = threading.Event()  # the LLM answers only after the quick task has ended
    with scripted_llm([Reply(answer, hold=release)]) as (url, script):
        ctl = hub_with_llm(fleet, tmp_path, url, "scripted-model", timeout_s=120.0)
        (tmp_path / "ask.toml").write_text(ASK_LLM)
        (tmp_path / "rule.toml").write_text(RULE)
        slow = ctl.submit("stty -echo; printf 'Password: '; read pw; stty echo; "
                          "echo; echo \"typed $pw\"; printf 'Continue? (yes/no) '; read a; "
                          "echo \"answer=$a\"", "--policy-file", str(tmp_path / "ask.toml"))
        wait_until(lambda: ctl.task(slow)["attention"], 60, "the password escalation",
                   interval_s=0.1)
        ctl.ok("input", slow, "hunter2")
        wait_until(lambda: script.in_flight == 1, 60, "the LLM call", interval_s=0.05)
        held_from = time.monotonic()
        # While the LLM thinks, a rule-answered task runs from start to end.
        quick = ctl.submit("printf 'Proceed? [y/N] '; read a; echo ok=$a",
                           "--policy-file", str(tmp_path / "rule.toml"))
        out, status = ctl.watch(quick, timeout_s=60)
        assert status == 0 and b"ok=y" in out
        assert script.in_flight == 1, "the rule waited for the LLM"
        held_ms = (time.monotonic() - held_from) * 1000
        release.set()
        out, status = ctl.watch(slow, timeout_s=90)
    assert status == 0 and b"answer=yes" in out, out
    llm = [d for d in ctl.json("decisions", slow) if d["model"]]
    assert len(llm) == 1
    d = llm[0]
    assert (d["action"], d["args"], d["model"]) == ("SEND_INPUT", {"text": "yes\n"},
                                                    "scripted-model")
    assert (d["prompt_tokens"], d["completion_tokens"]) == (11, 7)
    assert len(d["context_digest"]) == 64 and 0 < d["context_bytes"] <= 40_000
    assert d["latency_ms"] >= held_ms - 100  # the decision waited for the held answer
    sent = json.dumps(script.requests)
    assert "hunter2" not in sent and "[secret]" in sent  # typed at a password prompt
    assert b"typed hunter2" in out  # the task itself printed it: only the hub redacts


@pytest.mark.timeout(600)  # a 135M model on two shared cores: ~80 s per call measured
def test_the_real_model_decides_a_monitored_task(fleet, tmp_path: Path, llm_server) -> None:
    ctl = hub_with_llm(fleet, tmp_path, llm_server.base_url, llm_server.model,
                       fmt="json_object", timeout_s=120.0)
    (tmp_path / "ask.toml").write_text('instructions = "Answer prompts with y."\n' + ASK_LLM)
    tid = ctl.submit("printf 'Install the update? [y/n] '; read a; echo \"answer=$a\"",
                     "--policy-file", str(tmp_path / "ask.toml"), "--task-timeout", "500",
                     "--goal", "update the machine")

    def decided() -> dict | None:
        ds = [d for d in ctl.json("decisions", tid) if d["model"]]
        return ds[0] if ds else None
    d = wait_until(decided, 400, "the model's decision", interval_s=0.5)
    assert d["model"] == llm_server.model and d["action"] in ACTION_NAMES
    assert d["prompt_tokens"] > 0 and len(d["context_digest"]) == 64
    assert d["rule_id"] in ("", "builtin:llm-failed")
    ctl("cancel", tid)

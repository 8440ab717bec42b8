"""The demo's monitor part: a rule answers a confirm prompt, and EXECUTE starts a
follow-up on another node when the task ends (DESIGN.md §6)."""

from collections.abc import Callable
from typing import Any

from examples.localfleet import wait_until

POLICY = r'''
check_every_s = 0
[[rule]]
id = "confirm"
on = "prompt"
match = 'Proceed\? \[y/N\]'
action = "SEND_INPUT"
text = "y\n"

[[rule]]
id = "then-node-2"
on = "end"
exit_code = 0
action = "EXECUTE"
node = "node-2"
command = "echo follow-up on $(hostname)"
'''


def monitor_tour(demo: Any, step: Callable[[str], None], indent: Callable[[str], str]) -> None:
    ctl = demo.ctl
    step("A monitored task: a rule answers its confirm prompt, then EXECUTEs on node-2")
    policy = demo.hub.base_dir / "demo-policy.toml"
    policy.write_text(POLICY)
    print(indent(ctl.ok("policies", "put", "demo", str(policy)).decode()))
    tid = ctl.submit("printf 'Deploy 3 services. Proceed? [y/N] '; read a; echo \"answer=$a\"",
                     "--node", "node-1", "--monitor", "demo", "--goal", "deploy, then check")
    out, status = ctl.watch(tid)
    demo.check("monitor answered the prompt", "answer=y",
               "answer=y" if b"answer=y" in out else out.decode(errors="replace")[-40:])

    def child() -> str | None:
        kids = ctl.task(tid)["children"]
        return kids[0] if kids else None
    kid = wait_until(child, 60, "the EXECUTE follow-up", interval_s=0.2)
    follow = ctl.wait_state(kid, ["SUCCEEDED", "FAILED"], timeout_s=60)
    demo.check("EXECUTE follow-up node", "node-2", follow["node_id"])
    demo.check("EXECUTE follow-up state", "SUCCEEDED", follow["state"])
    print(indent(ctl.ok("decisions", tid).decode()))
    print(indent(ctl.ok("tree", tid).decode()))
    print(indent(ctl.ok("sessions").decode()))

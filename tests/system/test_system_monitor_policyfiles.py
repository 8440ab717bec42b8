"""Monitor policies from files named in the configuration (monitor_policy_files): stored
at start, re-read on SIGHUP, and the log says what changed (issue 10)."""

import os
import signal
from pathlib import Path

import pytest

from examples.localfleet import Ctl, log_events, wait_until

pytestmark = pytest.mark.system

CONFIRM = r'''
check_every_s = 0
[[rule]]
id = "confirm"
on = "prompt"
match = 'Proceed\? \[y/N\]'
action = "SEND_INPUT"
text = "y\n"
'''
END = '''
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
'''


def test_policy_files_are_stored_and_reloaded_on_sighup(fleet, tmp_path: Path) -> None:
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "build.toml").write_text(CONFIRM)
    extra = tmp_path / "extra.toml"
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'monitor_policy_files = "{pdir}, {extra}"\n')
    hub = fleet.hub(extra_args=["--config", str(cfg)])
    ctl = Ctl(hub)
    fleet.nodes(hub, 1)
    first = wait_until(lambda: log_events(hub.log_path, "policies_reloaded"), 30, "the sync")
    assert first[0]["added"] == ["build"] and first[0]["invalid"] == ["extra"]  # not there yet
    assert b"Proceed" in ctl.ok("policies", "show", "build")

    tid = ctl.submit("printf 'Proceed? [y/N] '; read a; echo a=$a", "--monitor", "build")
    (pdir / "build.toml").write_text(CONFIRM.replace('"y\\n"', '"n\\n"') + END)
    extra.write_text(END)
    (pdir / "broken.toml").write_text("[[rule]]\nid = 'x'\naction = 'REBOOT'\n")
    os.kill(hub.proc.pid, signal.SIGHUP)
    second = wait_until(lambda: log_events(hub.log_path, "policies_reloaded")[1:], 30,
                        "the reload's sync")[0]
    assert (second["added"], second["changed"], second["invalid"]) == \
        (["extra"], ["build"], ["broken"])
    changed = log_events(hub.log_path, "policy_changed")[0]
    assert (changed["rules_added"], changed["rules_changed"], changed["rules_removed"]) == \
        (["end"], ["confirm"], [])
    assert "REBOOT" in log_events(hub.log_path, "policy_file_invalid")[-1]["problem"]
    assert b'"n\\n"' in ctl.ok("policies", "show", "build")
    assert b"broken" not in ctl.ok("policies", "ls")
    # A running task keeps the policy it was submitted with; a new one gets the new text.
    out, status = ctl.watch(tid, timeout_s=60)
    assert status == 0 and b"a=y" in out
    later = ctl.submit("printf 'Proceed? [y/N] '; read a; echo a=$a", "--monitor", "build")
    out, status = ctl.watch(later, timeout_s=60)
    assert status == 0 and b"a=n" in out

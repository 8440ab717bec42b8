"""Interactive shells for agents, end to end: real cortexd, two nodeagents, cortexctl.

``cortexctl shell exec`` returns when the shell's nonce'd prompt marker says the command
ended: exactly its output (no echo, no \\r\\n, no marker), its exit code, and state that
lasts between commands (cwd, variables) because it is one shell.
"""

import json
import subprocess
import threading

import pytest

from examples.localfleet import Ctl, wait_until

pytestmark = pytest.mark.system


def test_shell_open_exec_close(fleet, tmp_path):
    hub = fleet.hub()
    nodes = fleet.nodes(hub, 2)
    ctl = Ctl(hub)

    opened = ctl.json("shell", "open", "--node", "node-2")[0]
    shell = opened["shell_id"]
    assert opened["node_id"] == "node-2" and opened["state"] == "RUNNING"

    def run(*cmd: str, wait: str = "60") -> "subprocess.CompletedProcess[bytes]":
        return ctl("shell", "exec", shell, "--wait", wait, "--", *cmd)

    r = run("echo", "hello")
    assert (r.returncode, r.stdout) == (0, b"hello\n"), r.stderr
    r = run("printf 'a\\nb'; false")
    assert (r.returncode, r.stdout) == (1, b"a\nb")
    r = run("export GREETING=hi; cd", str(tmp_path))
    assert (r.returncode, r.stdout) == (0, b"")
    r = ctl("shell", "exec", shell, "--json", "--", "echo $GREETING; pwd")
    got = json.loads(r.stdout)
    assert (got["exit_code"], got["output"], got["cwd"]) == (0, f"hi\n{tmp_path}\n",
                                                             str(tmp_path))
    assert got["end_offset"] > got["start_offset"]
    # Several lines run as one group; a here-document inside it too.
    r = run("cat <<EOF\nline one\nline two\nEOF\n(exit 7)")
    assert (r.returncode, r.stdout) == (7, b"line one\nline two\n")
    # Binary-ish output comes back byte for byte.
    r = run("printf '\\x01\\xff\\t end'")
    assert r.stdout == b"\x01\xff\t end"
    assert ctl.task(shell)["node_id"] == "node-2"

    # One command at a time: a second exec while one runs is refused, the first goes on.
    before = ctl.task(shell)["output_bytes"]
    slow: dict[str, subprocess.CompletedProcess[bytes]] = {}
    t = threading.Thread(target=lambda: slow.update(r=run("echo started; sleep 6; echo slept")))
    t.start()
    wait_until(lambda: ctl.task(shell)["output_bytes"] > before, 60.0,
               "the slow command to start", interval_s=0.2)
    busy = ctl("shell", "exec", shell, "--", "true")
    assert busy.returncode == 1 and b"running a command" in busy.stderr, busy.stderr
    t.join(90)
    assert (slow["r"].returncode, slow["r"].stdout) == (0, b"started\nslept\n")

    # A command that outlives --wait: a clear error; the shell answers again once it ends.
    late = run("sleep 12; echo late", wait="1")  # long enough to outlast a slow cortexctl
    assert late.returncode == 124 and b"did not finish within 1 s" in late.stderr, late.stderr
    refused = run("true")
    assert refused.returncode == 1 and b"still running an earlier command" in refused.stderr

    def answers() -> bool:
        return run("echo back").stdout == b"back\n"
    wait_until(answers, 90.0, "the shell to answer after the slow command", interval_s=0.5)

    closed = ctl.json("shell", "close", shell)[0]
    assert closed["state"] == "CANCELLED"
    after = run("true")
    assert after.returncode == 1 and b"CANCELLED" in after.stderr
    # Not a shell: a plain task has no prompt marker to end commands with.
    plain = ctl.submit("sleep 30")
    ctl.wait_state(plain, ["RUNNING"])
    r = ctl("shell", "exec", plain, "--", "true")
    assert r.returncode == 1 and b"not at a shell prompt" in r.stderr
    ctl("cancel", plain)
    assert all(n.running() for n in nodes)

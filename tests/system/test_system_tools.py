"""Tools as plugins, end to end: a third-party tool package installed with pip runs tasks.

``tests/data/cortex-tool-sample`` is a package as someone outside Cortex would write it: a
``sum`` tool (an ``AsyncTool``) and a ``broken`` entry point whose module cannot be
imported, both registered under ``cortex.tools``. It is installed with pip into a target
directory that only one node's ``PYTHONPATH`` names — the same entry-point discovery as
an install into the venv, without changing the venv other tests (and other engineers'
runs) share, and with nothing to uninstall if this test is killed. Nothing of Cortex is
changed for it: the node finds the tool, the hub routes ``--tool sum`` tasks to that node
only, and the broken entry point is reported and skipped.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from examples.localfleet import Ctl, wait_until

pytestmark = pytest.mark.system

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "cortex-tool-sample"


@pytest.fixture(scope="module")
def tool_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tool-site")
    build = tmp_path_factory.mktemp("tool-build")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target),
                    str(SAMPLE)], check=True, timeout=300, cwd=build)
    assert any(target.glob("cortex_tool_sample-1.2.0.dist-info"))
    return target


def test_third_party_tool_runs_tasks_on_the_node_that_has_it(fleet, tool_site, monkeypatch):
    hub = fleet.hub()
    ctl = Ctl(hub)
    fleet.node(hub, "plain", capacity=4)
    monkeypatch.setenv("PYTHONPATH", str(tool_site))
    tooled = fleet.node(hub, "tooled", capacity=4)
    monkeypatch.delenv("PYTHONPATH")
    ctl.wait_nodes(["plain", "tooled"])

    labels = {n["node_id"]: n["labels"] for n in ctl.json("nodes")}
    assert labels["tooled"]["cortex.tool/sum"] == "1.2.0"
    assert "cortex.tool/shell" in labels["tooled"] and "cortex.tool/shell" in labels["plain"]
    assert "cortex.tool/sum" not in labels["plain"]
    assert "cortex.tool/broken" not in labels["tooled"]
    # The broken entry point was reported (node log, and the hub heard it in Hello).
    assert b"tool_skipped" in tooled.log_path.read_bytes()
    hub_logs = "".join(p.read_text(errors="replace") for p in hub.log_dir.glob("*.log")
                       if not p.name.startswith("nodeagent"))
    assert "node_tool_skipped" in hub_logs and "cortex_tool_sample_missing_dependency" in hub_logs

    # Every sum task goes to the node with the tool, however loaded the other is.
    ids = [ctl.submit(json.dumps({"numbers": [i, 2, 3.5], "label": f"t{i}"}), "--tool", "sum")
           for i in range(3)]
    for i, task_id in enumerate(ids):
        out, status = ctl.watch(task_id)
        assert status == 0, out
        assert out == f"t{i}={i + 5.5:g}\r\n".encode()
        task = ctl.task(task_id)
        assert (task["state"], task["node_id"], task["tool"]) == ("SUCCEEDED", "tooled", "sum")

    # Input typed to a tool task reaches it; its question is seen by the prompt detector.
    asked = ctl.submit(json.dumps({"numbers": [1, 1], "ask": True}), "--tool", "sum")
    wait_until(lambda: (ctl.task(asked).get("last_prompt") or {}).get("kind") == "confirm",
               30.0, "the sum tool's question to be detected", interval_s=0.1)
    assert ctl("input", asked, "y").returncode == 0
    out, status = ctl.watch(asked)
    assert status == 0 and out.endswith(b"sum=2\r\n"), out

    # An input that does not match the tool's schema: nothing runs, exit 65, said why.
    bad = ctl.submit(json.dumps({"numbers": "three"}), "--tool", "sum")
    out, status = ctl.watch(bad)
    assert status == 65, out
    assert b"numbers" in out and b"is not of type 'array'" in out
    # The tool's own exit code is the task's.
    out, status = ctl.watch(ctl.submit('{"numbers": [-4]}', "--tool", "sum"))
    assert status == 3 and out == b"sum=-4\r\n"

    # The shell is still everyone's; a tool nobody has is never placed.
    nowhere = ctl.submit("{}", "--tool", "nosuch")
    shells = [ctl.submit("echo shell-ok") for _ in range(4)]
    for task_id in shells:
        out, status = ctl.watch(task_id)
        assert status == 0 and b"shell-ok" in out
    assert {ctl.task(t)["node_id"] for t in shells} == {"plain", "tooled"}
    assert ctl.task(nowhere)["state"] == "QUEUED"
    bad_name = ctl("submit", "--tool", "Bad Name", "--", "x")
    assert bad_name.returncode == 2 and b"--tool" in bad_name.stderr

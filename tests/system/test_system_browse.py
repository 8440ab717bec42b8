"""Browser sessions through the hub: cortexctl → cortexd → nodeagent → browserd and back."""

import asyncio
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from browserd.client import BrowserdClient
from examples.localfleet import Ctl, log_events, wait_until
from examples.testpages import PageServer
from tests.chromiumkit import need_chromium

pytestmark = [pytest.mark.system, pytest.mark.browser]


def ref_of(snapshot: str, needle: str) -> str:
    for line in snapshot.splitlines():
        if needle in line and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise AssertionError(f"no {needle!r} in:\n{snapshot}")


@pytest.mark.timeout(240)
def test_browse_through_the_hub_and_browserd_killed(fleet, tmp_path: Path) -> None:
    need_chromium()
    hub = fleet.hub(shards=1)
    node = fleet.node(hub, "web-1", extra_args=["--browserd-start",
                                                "--browserd-arg=--warm-sessions=1"])
    ctl = Ctl(hub)
    ctl.wait_nodes(["web-1"])
    wait_until(lambda: log_events(node.log_path, "browserd_connected"), 60, "browserd")
    socket = node.dir / "state" / "browserd.sock"
    with PageServer() as pages:
        handle = ctl.ok("browse", "open", pages.base + "/form").decode().strip()
        assert handle.endswith("@web-1")
        snap = ctl.ok("browse", "snapshot", "-s", handle).decode()
        ctl.ok("browse", "type", "-s", handle, ref_of(snap, 'textbox "Name"'), "Grace")
        ctl.ok("browse", "click", "-s", handle, ref_of(snap, 'button "Send"'))
        diff = ctl.ok("browse", "snapshot", "-s", handle, "--diff").decode()
        assert 'heading "Hello Grace"' in diff
        assert json.loads(ctl.ok("browse", "eval", "-s", handle, "location.search")) == \
            "?name=Grace&colour=red"
        bad = ctl("browse", "eval", "-s", handle, "() => { throw new Error('kaput') }")
        assert bad.returncode == 1 and b"page_error" in bad.stderr and b"kaput" in bad.stderr
        assert b"Hello Grace" in ctl.ok("browse", "html", "-s", handle)

        # a screenshot arrives byte-identical: cortexctl's file against browserd's own bytes
        ctl.ok("browse", "navigate", "-s", handle, pages.base + "/rows?n=300")
        shot = tmp_path / "full.png"
        out = ctl.ok("browse", "screenshot", "-s", handle, "--full-page", "-o", str(shot))
        got = shot.read_bytes()
        assert len(got) > 256 * 1024  # more than one piece on the node stream

        async def direct() -> bytes:
            c = BrowserdClient(socket)
            await c.connect()
            try:
                r = await c.call("screenshot", session=handle.split("@")[0], full_page=True)
                return bytes(r["data"])
            finally:
                await c.close()
        assert hashlib.sha256(asyncio.run(direct())).hexdigest() == \
            hashlib.sha256(got).hexdigest()
        assert hashlib.sha256(got).hexdigest().encode() in out

        second = ctl.ok("browse", "open").decode().strip()
        listed = {r["session"]: r for r in ctl.json("browse", "ls")}
        assert listed[handle]["state"] == "open" and listed[second]["state"] == "open"

        # browserd killed -9 with two sessions open: the node reports them lost, and the
        # browserd the node starts again serves new sessions
        pid = log_events(node.log_path, "browserd_started")[-1]["pid"]
        os.kill(pid, signal.SIGKILL)

        def lost() -> bool:
            rows = {r["session"]: r for r in ctl.json("browse", "ls")}
            return all(rows.get(h, {}).get("state") == "lost" for h in (handle, second))
        wait_until(lost, 60, "the sessions reported lost")
        gone = ctl("browse", "snapshot", "-s", handle)
        assert gone.returncode == 1 and b"lost" in gone.stderr
        wait_until(lambda: len(log_events(node.log_path, "browserd_connected")) >= 2, 60,
                   "a new browserd")
        fresh = ctl.ok("browse", "open", pages.base + "/done?name=again").decode().strip()
        assert 'heading "Hello again"' in ctl.ok("browse", "snapshot", "-s", fresh).decode()
        ctl.ok("browse", "close", "-s", fresh)

"""A session's recording collected as an artifact: at ``record stop`` and when it closes."""

import hashlib
import json
from pathlib import Path

import pytest

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
def test_recordings_are_artifacts_the_client_fetches(fleet, tmp_path: Path) -> None:
    need_chromium()
    hub = fleet.hub(shards=1)
    node = fleet.node(hub, "web-1", extra_args=["--browserd-start",
                                                "--browserd-arg=--warm-sessions=1"])
    ctl = Ctl(hub)
    ctl.wait_nodes(["web-1"])
    wait_until(lambda: log_events(node.log_path, "browserd_connected"), 60, "browserd")
    with PageServer() as pages:
        handle = ctl.ok("browse", "open", pages.base + "/counter").decode().strip()
        sid = handle.split("@")[0]
        ctl.ok("browse", "record", "start", "-s", handle)
        add = ref_of(ctl.ok("browse", "snapshot", "-s", handle).decode(), 'button "Add"')
        for _ in range(3):
            ctl.ok("browse", "click", "-s", handle, add)
        local = tmp_path / "stop.mjpeg"
        stop = ctl("browse", "record", "stop", "-s", handle, "-o", str(local))
        assert stop.returncode == 0, stop.stderr
        first = f"browse/{sid}/web-1/"
        names = [line.split()[-1] for line in stop.stderr.decode().splitlines()
                 if line.startswith("stored as artifact ")]
        assert len(names) == 1 and names[0].startswith(first), stop.stderr
        fetched = tmp_path / "got.mjpeg"
        ctl.ok("artifacts", "get", names[0], "-o", str(fetched))
        assert fetched.read_bytes() == local.read_bytes()
        assert local.read_bytes()[:2] == b"\xff\xd8"  # Motion JPEG: JPEG frames

        # a recording still running when the session closes is collected at the close
        ctl.ok("browse", "record", "start", "-s", handle)
        ctl.ok("browse", "click", "-s", handle, add)
        closed = json.loads(ctl.ok("browse", "close", "-s", handle, "--json"))
        later = [n for n in closed["artifact_names"] if n != names[0]]
        assert len(later) == 1 and later[0].startswith(first), closed
        second = tmp_path / "close.mjpeg"
        ctl.ok("artifacts", "get", later[0], "-o", str(second))
        assert second.read_bytes()[:2] == b"\xff\xd8"
        listed = ctl.ok("artifacts", "ls", "--json").decode()
        digest = hashlib.sha256(second.read_bytes()).hexdigest()
        assert digest in listed and later[0] in listed
        assert log_events(node.log_path, "browser_recording_uploaded")

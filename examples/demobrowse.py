"""The demo's browser step: a local page opened in a session on node-1 (whose agent
started its browserd), a field filled by its element reference, the snapshot shown."""

from typing import Any

from examples.localfleet import log_events, wait_until
from examples.testpages import PageServer

BROWSER_NODE = "node-1"
BROWSER_ARGS = ["--browserd-start", "--browserd-arg=--warm-sessions=1"]


def ref_of(snapshot: str, needle: str) -> str:
    for line in snapshot.splitlines():
        if needle in line and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise ValueError(f"no element {needle!r} in the snapshot")


def browse_tour(demo: Any, step: Any, indent: Any) -> None:
    node = next(n for n in demo.nodes if n.node_id == BROWSER_NODE)
    step(f"A browser session on {BROWSER_NODE} (browserd, headless Chromium) via cortexctl")
    wait_until(lambda: log_events(node.log_path, "browserd_connected"), 60, "browserd")
    ctl = demo.ctl
    with PageServer() as pages:
        handle = ctl.ok("browse", "open", pages.base + "/form").decode().strip()
        print(f"  cortexctl browse open {pages.base}/form  ->  {handle}")
        snap = ctl.ok("browse", "snapshot", "-s", handle).decode()
        print(indent(snap))
        ref = ref_of(snap, 'textbox "Name"')
        ctl.ok("browse", "type", "-s", handle, ref, "Ada Lovelace")
        print(f"  cortexctl browse type -s {handle} {ref} 'Ada Lovelace'")
        after = ctl.ok("browse", "snapshot", "-s", handle).decode()
        print(indent(after))
        filled = ctl.ok("browse", "eval", "-s", handle,
                        "document.querySelector('input[name=name]').value").decode().strip()
        demo.check("browser field filled by reference", '"Ada Lovelace"', filled)
        ctl.ok("browse", "close", "-s", handle)

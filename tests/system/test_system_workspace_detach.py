"""`workspace detach` and what the hub keeps of a push, with real processes.

Detach: the node's copy stops syncing both ways (the node says ``workspace_detached``;
a second node, still attached, is the witness that edits made after it did move), the
hub keeps its tree and the detached copy stays as it was; a task can no longer be
pinned there. A pushed blob whose bytes are not its sha256 is refused and nothing of it
is kept, while a good blob in the same stream is stored.
"""

import hashlib
import os

import grpc
import pytest

from cortex.tokens import bearer
from cortex.v1 import workspace_pb2 as wpb
from cortex.v1 import workspace_pb2_grpc
from examples.localfleet import Ctl, log_events, wait_until
from tests.system.test_system_workspace import converged, digest, hub_tree


@pytest.mark.timeout(240)
def test_a_detached_copy_stops_syncing_and_the_hub_keeps_its_tree(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    one, two = fleet.nodes(hub, 2)
    ctl.ok("workspace", "create", "wd")
    ht = hub_tree(hub, "wd")
    (ht / "a.txt").write_text("a\n")
    c1, c2 = tmp_path / "copy1", tmp_path / "copy2"
    for node, copy in ((one, c1), (two, c2)):
        ctl.ok("workspace", "attach", "wd", "--node", node.node_id, "--path", str(copy))
    wait_until(lambda: converged(ht, c1) and converged(ht, c2)
               and (c1 / "a.txt").exists(), 60, "first sync of both copies")

    info = ctl.json("workspace", "detach", "wd", "--node", one.node_id)[0]
    assert [a["node_id"] for a in info["attachments"]] == [two.node_id], info
    wait_until(lambda: log_events(one.log_path, "workspace_detached"), 30,
               "node-1 to drop its copy")
    kept_hub, kept_copy = digest(ht), digest(c1)
    assert kept_hub == kept_copy  # the hub's tree and the copy stay as they were

    (c1 / "from-detached.txt").write_text("never synced\n")
    (ht / "from-hub.txt").write_text("hub\n")
    (c2 / "from-attached.txt").write_text("synced\n")  # after node-1's edit
    wait_until(lambda: (c2 / "from-hub.txt").exists() and (ht / "from-attached.txt").exists()
               and converged(ht, c2), 60, "the attached copy to sync")
    assert not (ht / "from-detached.txt").exists()
    assert not (c1 / "from-hub.txt").exists() and not (c1 / "from-attached.txt").exists()
    assert (c1 / "a.txt").read_text() == "a\n" and (ht / "a.txt").read_text() == "a\n"
    got = ctl("submit", "--workspace", "wd", "--node", one.node_id, "--", "true")
    assert got.returncode != 0 and b"not attached on node 'node-1'" in got.stderr, got.stderr
    again = ctl("workspace", "detach", "wd", "--node", one.node_id)
    assert again.returncode != 0 and b"is not attached on" in again.stderr, again.stderr


@pytest.mark.timeout(120)
def test_a_pushed_blob_that_is_not_its_digest_is_refused_and_nothing_kept(fleet) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    good, bad = os.urandom(3 << 20), os.urandom(2 << 20)
    good_sha = hashlib.sha256(good).hexdigest()
    lie = hashlib.sha256(b"something else").hexdigest()  # the name bad claims

    def chunks():  # type: ignore[no-untyped-def]
        for sha, data in ((lie, bad), (good_sha, good)):
            for off in range(0, len(data), 1 << 20):
                piece = data[off:off + (1 << 20)]
                yield wpb.BlobChunk(sha256=sha, size_bytes=len(data), offset=off, data=piece,
                                    last=off + len(piece) == len(data))

    with grpc.insecure_channel(hub.control_address, options=[
            ("grpc.max_send_message_length", 4 << 20)]) as channel:
        stub = workspace_pb2_grpc.WorkspacesStub(channel)  # type: ignore[no-untyped-call]
        md = bearer(hub.admin_token_file.read_text().strip())
        got = stub.Push(chunks(), metadata=md, timeout=30)
        assert (got.stored, got.refused, got.bytes) == (1, 1, len(good) + len(bad)), got
        missing = stub.Missing(wpb.MissingRequest(sha256=[lie, good_sha]), metadata=md,
                               timeout=10)
        assert list(missing.sha256) == [lie]
    blobs = hub.state_dir / "workspaces" / ".blobs"
    files = sorted(p.relative_to(blobs).as_posix() for p in blobs.rglob("*") if p.is_file())
    assert files == [f"{good_sha[:2]}/{good_sha}"], files  # no .part, nothing of the lie
    assert (blobs / good_sha[:2] / good_sha).read_bytes() == good

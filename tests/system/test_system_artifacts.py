"""Artifacts against a real cortexd: the ByteStream-style protocol's refusals and resumes.

A raw gRPC client (the generated stub, the admin token) drives the edge cases; the
real cortexctl does the operator's round trip. Each refusal is checked to have kept
nothing: the committed offset the hub reports afterwards is what it was before.
"""

import asyncio
import hashlib
import json
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cortex.tokens import bearer
from cortex.v1 import artifacts_pb2 as apb
from cortex.v1 import artifacts_pb2_grpc
from examples.localfleet import Ctl, LocalHub, log_events, wait_until

pytestmark = pytest.mark.system
MiB = 1 << 20


def config(tmp_path: Path, **settings: object) -> list[str]:
    path = tmp_path / "cortexd.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return ["--config", str(path)]


class Raw:
    """The generated stub with the hub's admin credential."""

    def __init__(self, hub: LocalHub, address: str = "") -> None:
        self.channel = grpc.insecure_channel(address or hub.control_address, options=[
            ("grpc.max_send_message_length", 8 * MiB)])
        self.stub = artifacts_pb2_grpc.ArtifactsStub(self.channel)  # type: ignore[no-untyped-call]
        self.md = bearer(hub.admin_token_file.read_text().strip())

    def committed(self, digest: apb.Digest) -> apb.QueryWriteStatusResponse:
        return self.stub.QueryWriteStatus(apb.QueryWriteStatusRequest(digest=digest),
                                          metadata=self.md, timeout=10)

    def write(self, messages: list[apb.WriteRequest]) -> apb.WriteResponse:
        return self.stub.Write(iter(messages), metadata=self.md, timeout=30)

    def read(self, sha: str, offset: int = 0) -> bytes:
        return b"".join(m.data for m in self.stub.Read(
            apb.ReadRequest(sha256=sha, read_offset=offset), metadata=self.md, timeout=30))


def blob(size: int) -> tuple[bytes, apb.Digest]:
    data = os.urandom(size)
    return data, apb.Digest(sha256=hashlib.sha256(data).hexdigest(), size_bytes=size)


def chunks(data: bytes, digest: apb.Digest, start: int = 0, stop: int | None = None,
           finish: bool = True) -> list[apb.WriteRequest]:
    stop = len(data) if stop is None else stop
    out = [apb.WriteRequest(digest=digest, write_offset=o, data=data[o:min(o + MiB, stop)])
           for o in range(start, stop, MiB)]
    if finish and stop == len(data):
        out[-1].finish_write = True
    return out


def code(e: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return e.value.code()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def raw(hub: LocalHub) -> Iterator[Raw]:
    r = Raw(hub)
    yield r
    r.channel.close()


def test_put_get_dedup_ls_rm_gc_through_cortexctl(hub: LocalHub, ctl: Ctl,
                                                   tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5 * MiB + 3))
    first = json.loads(ctl.ok("artifacts", "put", str(src), "--json"))
    again = json.loads(ctl.ok("artifacts", "put", str(src), "--json"))
    assert first["uploaded"] is True and again["uploaded"] is False  # not sent again
    assert first["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    listed = ctl.json("artifacts", "ls")
    assert [(a["sha256"], [r["ref"] for r in a["refs"]]) for a in listed] == [
        (first["sha256"], ["name:data.bin"])]
    out = tmp_path / "copy.bin"
    got = json.loads(ctl.ok("artifacts", "get", "data.bin", "-o", str(out), "--json"))
    assert out.read_bytes() == src.read_bytes() and got["sha256"] == first["sha256"]
    assert json.loads(ctl.ok("artifacts", "rm", "data.bin", "--json")) == {"refs_removed": 1}
    # Unreferenced but within the grace period: gc keeps it.
    gc = json.loads(ctl.ok("artifacts", "gc", "--json"))
    assert gc["blobs_removed"] == 0 and len(ctl.json("artifacts", "ls")) == 1
    missing = ctl("artifacts", "get", "nope", "-o", str(tmp_path / "x"))
    assert missing.returncode == 1 and b"not found" in missing.stderr


def test_upload_resumes_from_the_committed_offset(raw: Raw) -> None:
    data, digest = blob(5 * MiB + 100)
    resp = raw.write(chunks(data, digest, 0, 2 * MiB))  # the stream ends without finish
    assert (resp.committed_size, resp.complete) == (2 * MiB, False)
    status = raw.committed(digest)
    assert (status.committed_size, status.complete) == (2 * MiB, False)
    resp = raw.write(chunks(data, digest, status.committed_size))
    assert (resp.committed_size, resp.complete) == (len(data), True)
    assert raw.committed(digest).complete
    assert hashlib.sha256(raw.read(digest.sha256)).hexdigest() == digest.sha256
    assert raw.read(digest.sha256, 3 * MiB + 7) == data[3 * MiB + 7:]
    # Dedup: a Write of a blob the hub has ends at once, complete, whatever follows.
    resp = raw.write(chunks(data, digest, 0, MiB, finish=False))
    assert resp.complete and resp.committed_size == len(data)


def test_digest_mismatch_is_refused_and_nothing_kept(raw: Raw, hub: LocalHub) -> None:
    data, digest = blob(2 * MiB)
    bad = bytearray(data)
    bad[MiB + 5] ^= 1
    with pytest.raises(grpc.RpcError) as e:
        raw.write(chunks(bytes(bad), digest))
    assert code(e) == grpc.StatusCode.INVALID_ARGUMENT and "sha256 mismatch" in e.value.details()  # type: ignore[attr-defined]
    assert raw.committed(digest).committed_size == 0
    root = hub.state_dir / "artifacts"
    assert [p for p in root.rglob("*") if p.is_file()] == []
    with pytest.raises(grpc.RpcError) as e:
        raw.read(digest.sha256)
    assert code(e) == grpc.StatusCode.NOT_FOUND


def test_oversized_chunk_unknown_offset_and_bad_digest_keep_nothing(raw: Raw) -> None:
    data, digest = blob(4 * MiB)
    raw.write(chunks(data, digest, 0, MiB, finish=False))
    over = apb.WriteRequest(digest=digest, write_offset=MiB, data=data[MiB:2 * MiB + 1])
    with pytest.raises(grpc.RpcError) as e:
        raw.write([over])
    assert code(e) == grpc.StatusCode.INVALID_ARGUMENT and "over the limit" in e.value.details()  # type: ignore[attr-defined]
    huge = apb.WriteRequest(digest=digest, write_offset=MiB, data=data[MiB:4 * MiB])
    with pytest.raises(grpc.RpcError) as e:
        raw.write([huge])  # over the server's message size: refused by gRPC itself
    assert code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
    for offset in (2 * MiB, 0):  # ahead of and behind what the hub committed
        with pytest.raises(grpc.RpcError) as e:
            raw.write([apb.WriteRequest(digest=digest, write_offset=offset, data=b"x")])
        assert code(e) == grpc.StatusCode.OUT_OF_RANGE
        assert f"committed {MiB} bytes" in e.value.details()  # type: ignore[attr-defined]
    bad = apb.Digest(sha256="Z" * 64, size_bytes=1)
    with pytest.raises(grpc.RpcError) as e:
        raw.write([apb.WriteRequest(digest=bad, data=b"x", finish_write=True)])
    assert code(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert raw.committed(digest).committed_size == MiB  # every refusal kept nothing


class StallingProxy:
    """A loopback TCP proxy that passes ``budget`` bytes from the client and then holds the
    rest (the connection stays open): the hub sees a message cut off mid-chunk."""

    def __init__(self, target: str, budget: int) -> None:
        self.target, self.budget = target, budget
        self.stalled = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._conn, "127.0.0.1", 0), self.loop).result(10)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        up_r, up_w = await asyncio.open_connection(host, int(port))
        self.writers += [writer, up_w]

        async def down() -> None:
            while data := await up_r.read(65536):
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(down())
        try:
            while data := await reader.read(65536):
                if self.budget <= 0:
                    self.stalled.set()
                    continue  # swallowed: the hub waits for the rest of the message
                data = data[:self.budget]
                self.budget -= len(data)
                up_w.write(data)
                await up_w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            task.cancel()

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            for w in self.writers:
                w.close()
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.mark.timeout(90)
def test_a_client_that_stops_mid_chunk_is_ended_by_the_idle_timeout(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1, extra_args=config(tmp_path, artifact_idle_timeout_s=5.0,
                                                artifact_uploads_per_client=1))
    direct = Raw(hub)
    proxy = StallingProxy(hub.control_address, budget=MiB + MiB // 2)
    stalled = Raw(hub, proxy.address)
    data, digest = blob(4 * MiB)
    feed: queue.Queue[apb.WriteRequest | None] = queue.Queue()

    def requests() -> Iterator[apb.WriteRequest]:
        while (m := feed.get()) is not None:
            yield m

    call = stalled.stub.Write.future(requests(), metadata=stalled.md)
    for m in chunks(data, digest, 0, 3 * MiB, finish=False):
        feed.put(m)
    assert proxy.stalled.wait(30), "the proxy never cut the stream"
    # While the stalled stream lasts, it holds the client's only upload slot.
    with pytest.raises(grpc.RpcError) as e:
        direct.write(chunks(data, digest, MiB, 2 * MiB, finish=False))
    assert code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
    refused = wait_until(lambda: [ev for ev in log_events(hub.log_path, "artifact_write_refused")
                                  if ev["code"] == "DEADLINE_EXCEEDED"], 30,
                         "the idle timeout to end the stalled upload")
    assert "no data for 5 s" in refused[0]["reason"]
    assert direct.committed(digest).committed_size == MiB  # the whole first chunk only
    resp = direct.write(chunks(data, digest, MiB))  # the slot is free again: resume
    assert resp.complete
    assert direct.read(digest.sha256) == data
    feed.put(None)
    call.cancel()
    stalled.channel.close()
    direct.channel.close()
    proxy.close()


@pytest.mark.timeout(120)
def test_hub_killed_mid_upload_then_the_upload_resumes(fleet) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    raw = Raw(hub)
    data, digest = blob(12 * MiB + 5)
    feed: queue.Queue[apb.WriteRequest | None] = queue.Queue()

    def requests() -> Iterator[apb.WriteRequest]:
        while (m := feed.get()) is not None:
            yield m

    call = raw.stub.Write.future(requests(), metadata=raw.md)
    for m in chunks(data, digest, 0, 8 * MiB, finish=False):
        feed.put(m)
    partial = hub.state_dir / "artifacts" / "partial" / "default" / digest.sha256
    wait_until(lambda: partial.exists() and partial.stat().st_size == 8 * MiB, 30,
               "8 MiB committed")
    hub.kill()  # SIGKILL the supervisor and every child, mid-stream
    with pytest.raises(grpc.RpcError):
        call.result(timeout=30)
    feed.put(None)
    raw.channel.close()
    hub.start()
    raw = Raw(hub)
    status = raw.committed(digest)
    assert (status.committed_size, status.complete) == (8 * MiB, False)
    resp = raw.write(chunks(data, digest, status.committed_size))
    assert resp.complete and resp.committed_size == len(data)
    assert raw.read(digest.sha256) == data
    raw.channel.close()


@pytest.mark.timeout(120)
def test_task_inputs_are_placed_and_outputs_collected(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    node = fleet.nodes(hub, 1)[0]
    src = tmp_path / "words.txt"
    src.write_bytes(b"hello artifacts\n" * 100_000)  # 1.6 MB: two chunks
    script = ("tr a-z A-Z < in/words.txt > up.txt; mkdir -p d; cp up.txt d/copy; "
              "wc -c < in/words.txt")
    tids = [ctl.submit(script, "--node", node.node_id, "--input", f"{src}:in/words.txt",
                       "--output", "up.txt", "--output", "d/copy", "--output", "absent")
            for _ in range(2)]
    for tid in tids:
        out, status = ctl.watch(tid)
        assert status == 0 and out.strip() == b"1600000", out
        task = ctl.task(tid)
        outputs = {o["path"]: o for o in task["outputs"]}
        assert set(outputs) == {"up.txt", "d/copy"}, task  # the missing one has no digest
        want = hashlib.sha256(src.read_bytes().upper()).hexdigest()
        assert outputs["up.txt"]["sha256"] == want == outputs["d/copy"]["sha256"]
        assert task["inputs"][0]["path"] == "in/words.txt"
    got = tmp_path / "up.txt"
    ctl.ok("artifacts", "get", want, "-o", str(got))
    assert got.read_bytes() == src.read_bytes().upper()
    # Fetched once for both tasks (cached by digest on the node), uploaded once (dedup).
    assert len(log_events(node.log_path, "artifact_fetched")) == 1
    assert len(log_events(node.log_path, "artifact_uploaded")) == 1
    absent = log_events(node.log_path, "task_outputs")
    assert absent and absent[0]["errors"] == ["absent: missing"]


@pytest.mark.timeout(120)
def test_a_node_reads_only_its_own_tasks_inputs(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    node = fleet.nodes(hub, 1)[0]
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(1000))
    put = json.loads(ctl.ok("artifacts", "put", str(secret), "--json"))
    tid = ctl.submit("sleep 30", "--node", node.node_id)
    ctl.wait_state(tid, ["RUNNING"])
    channel = grpc.insecure_channel(hub.control_address)
    stub = artifacts_pb2_grpc.ArtifactsStub(channel)  # type: ignore[no-untyped-call]
    md = bearer(node.token_file.read_text().strip())
    for task_id in ("", tid):  # no task; a task of its own that does not name the blob
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Read(apb.ReadRequest(sha256=put["sha256"], task_id=task_id),
                           metadata=md, timeout=10))
        assert code(e) == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:
        stub.List(apb.ListArtifactsRequest(), metadata=md, timeout=10)
    assert code(e) == grpc.StatusCode.PERMISSION_DENIED  # the allowlist: clients only
    channel.close()
    ctl.ok("cancel", tid)

"""The agent against a real grpc.aio peer on loopback that plays the hub.

``FakeHub`` is a tiny NodeLink servicer driven by the test: every stream the agent opens
becomes a ``Conn`` whose frames the test reads and answers. Real agent, real PTYs, real
processes, real gRPC; nothing of nodeagent is mocked.
"""

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
import structlog
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from cortex.envelope import EnvelopeSigner, public_key_pem
from cortex.ids import new_task_id
from cortex.tls import ClientTLS, ServerTLS, server_credentials
from cortex.v1 import node_pb2, node_pb2_grpc
from nodeagent import procgroup
from nodeagent.agent import NodeAgent
from nodeagent.config import AgentConfig
from nodeagent.spool import SpoolMeta

T = TypeVar("T")
TIMEOUT_S = 10.0
KEEP, KILL = node_pb2.VERDICT_KEEP, node_pb2.VERDICT_KILL


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class Conn:
    """One Attach stream as the hub sees it."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        self.inbox: asyncio.Queue[node_pb2.NodeFrame | None] = asyncio.Queue()
        self.outbox: asyncio.Queue[node_pb2.HubFrame | grpc.StatusCode | None] = asyncio.Queue()
        self.heartbeats = 0

    def send(self, **frame: Any) -> None:
        self.outbox.put_nowait(node_pb2.HubFrame(**frame))

    async def expect(self, kind: str) -> Any:
        """The next frame of ``kind``. Heartbeats are counted and skipped, and so are
        progress reports (they are control frames a timer queues, so one may go ahead of
        output that is already spooled); any other frame fails."""
        while True:
            frame = await asyncio.wait_for(self.inbox.get(), TIMEOUT_S)
            assert frame is not None, f"stream ended while waiting for {kind}"
            got = frame.WhichOneof("kind")
            if got == "heartbeat":
                self.heartbeats += 1
                continue
            if got == "progress" and kind != "progress":
                continue
            assert got == kind, f"expected {kind}, got {frame}"
            return getattr(frame, kind)

    async def output_until(self, task_id: str, length: int, start: int = 0,
                           ack: bool = True) -> bytes:
        """Collect ``length`` bytes of TaskOutput from ``start``, checking there is no gap."""
        data = bytearray()
        while len(data) < length:
            out = await self.expect("output")
            assert out.task_id == task_id and out.offset == start + len(data)
            data += out.data
            if ack:
                self.send(ack=node_pb2.OutputAck(task_id=task_id, attempt=out.attempt,
                                                 offset=start + len(data)))
        return bytes(data)


class FakeHub(node_pb2_grpc.NodeLinkServicer):
    def __init__(self) -> None:
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.refuse: grpc.StatusCode | None = None

    async def Attach(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        if self.refuse is not None:
            await context.abort(self.refuse, "refused by test")
        conn = Conn(dict(context.invocation_metadata()))
        await self.conns.put(conn)

        async def pump() -> None:
            with contextlib.suppress(Exception):
                async for frame in request_iterator:
                    await conn.inbox.put(frame)
            await conn.inbox.put(None)

        reader = asyncio.create_task(pump())
        try:
            while True:
                item = await conn.outbox.get()
                if item is None:
                    return
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "aborted by test")
                yield item
        finally:
            reader.cancel()

    async def attach(self, epoch: int, verdicts: list[node_pb2.TaskVerdict] | None = None,
                     interval_ms: int = 1000) -> tuple[Conn, node_pb2.Hello]:
        conn = await asyncio.wait_for(self.conns.get(), TIMEOUT_S)
        hello = await conn.expect("hello")
        conn.send(welcome=node_pb2.Welcome(session_epoch=epoch, heartbeat_interval_ms=interval_ms,
                                           verdicts=verdicts or [], hub_id="hub-test", shard=0))
        return conn, hello


@dataclass
class Rig:
    hub: FakeHub
    agent: NodeAgent
    signer: EnvelopeSigner
    config: AgentConfig
    agent_run: "asyncio.Task[int]"

    def envelope(self, command: str, epoch: int, task_id: str = "", attempt: int = 1,
                 node_id: str = "n1", **spec: Any) -> node_pb2.SignedEnvelope:
        return self.signer.sign(task_id=task_id or new_task_id(), attempt=attempt,
                                node_id=node_id, session_epoch=epoch,
                                spec=node_pb2.TaskSpec(command=command, **spec))


def make_config(tmp_path: Path, port: int, **overrides: Any) -> AgentConfig:
    base = AgentConfig(hub_address=f"127.0.0.1:{port}", node_id="n1",
                       token_file=tmp_path / "token", hub_key_file=tmp_path / "hub.pub",
                       state_dir=tmp_path / "state", insecure_loopback=True,
                       labels={"os": "linux", "gpu": "none"}, capacity=4,
                       cancel_grace_s=0.2, shutdown_grace_s=5.0, backoff_base_s=0.01,
                       backoff_cap_s=0.05, finish_ack_wait_s=1.0)
    return replace(base, **overrides)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, key: Ed25519PrivateKey | None = None,
              server_creds: grpc.ServerCredentials | None = None,
              also: tuple[str, ...] = (), **overrides: Any) -> AsyncIterator[Rig]:
    """``also``: more hub addresses the agent is given after this hub's."""
    hub = FakeHub()
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeLinkServicer_to_server(hub, server)
    if server_creds is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", server_creds)
    await server.start()
    key = key or Ed25519PrivateKey.generate()
    config = make_config(tmp_path, port, **overrides)
    if also:
        config = replace(config, hub_address=",".join([config.hub_address, *also]))
    agent = NodeAgent(config, "tok-n1", key.public_key(), structlog.get_logger(),
                      manage_process=False)
    agent_run = asyncio.create_task(agent.run())
    try:
        yield Rig(hub, agent, EnvelopeSigner(key), config, agent_run)
    finally:
        if not agent_run.done():
            agent.stop()
            agent.stop()  # forced: kill whatever still runs
        await asyncio.wait_for(agent_run, TIMEOUT_S)
        await server.stop(None)


# ---- the happy path ---------------------------------------------------------

def test_hello_welcome_run_stream_ack_finish(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, hello = await r.hub.attach(epoch=7)
            assert conn.metadata["authorization"] == "Bearer tok-n1"
            assert (hello.node_id, hello.capacity, hello.agent_version) == ("n1", 4, "0.1.0")
            assert dict(hello.labels) == {"os": "linux", "gpu": "none"} and not hello.tasks
            assert hello.boot_id == r.agent.boot_id
            env = r.envelope("printf 'one\\ntwo\\n'; exit 4", epoch=7, cols=80, rows=24)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            started = await conn.expect("started")
            assert (started.task_id, started.attempt) == (task_id, 1) and started.pid > 0
            assert await conn.output_until(task_id, 10) == b"one\r\ntwo\r\n"
            finished = await conn.expect("finished")
            assert (finished.kind, finished.exit_code, finished.output_end) == (
                node_pb2.FINISH_KIND_EXITED, 4, 10)
            spool = r.config.state_dir / "tasks" / f"{task_id}.1"
            assert (spool / "output").read_bytes() == b"one\r\ntwo\r\n"
            conn.send(finished_ack=node_pb2.FinishedAck(task_id=task_id, attempt=1))
            await r.agent.host.wait_until(lambda h: len(h.table) == 0, TIMEOUT_S)
            # Out of the table; the spool is kept for `cortexctl logs` (retention.py).
            assert r.agent.host.retained.get((task_id, 1)) is not None
            assert SpoolMeta(**json.loads((spool / "meta.json").read_text())).retained_at
    run(main())


def test_input_and_cancel(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, _ = await r.hub.attach(epoch=1)
            env = r.envelope("read x; echo got $x; sleep 1000", epoch=1)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            pid = (await conn.expect("started")).pid
            conn.send(input=node_pb2.TaskInput(task_id=task_id, attempt=1, data=b"yes\n"))
            seen = b""
            while b"got yes" not in seen:
                seen += (await conn.expect("output")).data
            conn.send(cancel=node_pb2.CancelTask(task_id=task_id, attempt=1, reason="test"))
            finished = await conn.expect("finished")
            assert finished.kind == node_pb2.FINISH_KIND_CANCELLED
            assert procgroup.live_members(pid, pid) == []
            conn.send(cancel=node_pb2.CancelTask(task_id="t-" + "1" * 20, attempt=1))  # ignored
    run(main())


# ---- verification: nothing runs ----------------------------------------------

def test_bad_envelopes_are_rejected_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, _ = await r.hub.attach(epoch=3)
            touch = f"touch {marker}"
            tampered = r.envelope("true", epoch=3)
            tampered.body = tampered.body.replace(b"true", b"exit")
            forged = EnvelopeSigner(Ed25519PrivateKey.generate()).sign(
                task_id=new_task_id(), attempt=1, node_id="n1", session_epoch=3,
                spec=node_pb2.TaskSpec(command=touch))
            cases = [
                ("bad_signature", tampered),
                ("bad_signature", forged),
                ("wrong_node", r.envelope(touch, epoch=3, node_id="n2")),
                ("stale_epoch", r.envelope(touch, epoch=2)),
                ("malformed", r.envelope(touch, epoch=3, cwd="/no/such/dir")),
            ]
            for code, env in cases:
                conn.send(task=env)
                rejected = await conn.expect("rejected")
                assert rejected.code == code, rejected
                body = node_pb2.TaskEnvelope.FromString(env.body)
                assert (rejected.task_id, rejected.attempt) == (body.task_id, body.attempt)
            # A replay of an envelope that did run: rejected, and it does not run again.
            once = r.envelope(f"echo x >> {marker}", epoch=3)
            conn.send(task=once)
            await conn.expect("started")
            await conn.expect("finished")
            conn.send(task=once)
            assert (await conn.expect("rejected")).code == "replay"
            # The same attempt under a fresh envelope: at-most-once per attempt.
            body = node_pb2.TaskEnvelope.FromString(once.body)
            conn.send(task=r.envelope(f"echo x >> {marker}", epoch=3, task_id=body.task_id))
            assert (await conn.expect("rejected")).code == "already_ran"
        assert marker.read_text() == "x\n"
    run(main())


def test_capacity_and_draining(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, capacity=1, shutdown_grace_s=0.3) as r:
            conn, _ = await r.hub.attach(epoch=1)
            conn.send(task=r.envelope("sleep 1000", epoch=1))
            started = await conn.expect("started")
            conn.send(task=r.envelope("true", epoch=1))
            assert (await conn.expect("rejected")).code == "capacity"
            r.agent.stop()
            await conn.expect("draining")
            conn.send(task=r.envelope("true", epoch=1))
            assert (await conn.expect("rejected")).code == "draining"
            # The grace expires: the ladder ends the task, the result still reaches the hub.
            finished = await conn.expect("finished")
            assert finished.kind == node_pb2.FINISH_KIND_CANCELLED
            conn.send(finished_ack=node_pb2.FinishedAck(task_id=finished.task_id, attempt=1))
            assert await asyncio.wait_for(r.agent_run, TIMEOUT_S) == 0
            assert procgroup.live_members(started.pid, started.pid) == []
    run(main())


# ---- reconnects ----------------------------------------------------------------

def test_output_survives_a_dropped_stream_and_is_resent_from_resume_offset(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, _ = await r.hub.attach(epoch=1)
            env = r.envelope("echo first; read x; echo second", epoch=1)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            await conn.expect("started")
            first = await conn.output_until(task_id, len(b"first\r\n"), ack=False)
            conn.outbox.put_nowait(grpc.StatusCode.UNAVAILABLE)  # the hub goes away, no acks

            conn2, hello = await r.hub.attach(epoch=2, verdicts=[node_pb2.TaskVerdict(
                task_id=task_id, attempt=1, verdict=KEEP, resume_offset=0)])
            (report,) = hello.tasks
            assert (report.task_id, report.acked_offset, report.finished) == (task_id, 0, False)
            assert report.output_end == len(first)
            replay = await conn2.output_until(task_id, len(first))
            assert replay == first
            conn2.send(input=node_pb2.TaskInput(task_id=task_id, attempt=1, data=b"go\n"))
            rest = b""
            while True:
                out = await conn2.inbox.get()
                assert out is not None
                if out.WhichOneof("kind") == "finished":
                    break
                if out.WhichOneof("kind") == "output":
                    assert out.output.offset == len(first) + len(rest)
                    rest += out.output.data
            assert rest == b"go\r\nsecond\r\n"
            assert out.finished.output_end == len(first) + len(rest)
    run(main())


def test_kill_verdict_kills_and_forgets(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, _ = await r.hub.attach(epoch=1)
            env = r.envelope("sleep 1000", epoch=1)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            pid = (await conn.expect("started")).pid
            conn.outbox.put_nowait(None)  # the hub ends the stream
            _, hello = await r.hub.attach(epoch=2)  # no verdict for the task: KILL
            assert [t.task_id for t in hello.tasks] == [task_id]
            await r.agent.host.wait_until(lambda h: not h.processes, TIMEOUT_S)
            assert procgroup.live_members(pid, pid) == []
            assert not (r.config.state_dir / "tasks" / f"{task_id}.1").exists()
            assert len(r.agent.host.table) == 0  # the next Hello reports nothing
    run(main())


def test_window_bounds_unacked_output(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, output_window_bytes=64 * 1024,
                       max_output_frame_bytes=16 * 1024) as r:
            conn, _ = await r.hub.attach(epoch=1)
            env = r.envelope("head -c 300000 /dev/zero | tr '\\0' z", epoch=1)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            await conn.expect("started")
            data = await conn.output_until(task_id, 64 * 1024, ack=False)
            assert len(data) == 64 * 1024
            await r.agent.host.wait_until(lambda h: not h.processes, TIMEOUT_S)
            entry = r.agent.host.table.get((task_id, 1))
            assert entry is not None and entry.output_end == 300_000
            assert entry.sent == 64 * 1024  # all spooled, one window offered, no more
            conn.send(ack=node_pb2.OutputAck(task_id=task_id, attempt=1, offset=len(data)))
            rest = await conn.output_until(task_id, 300_000 - len(data), start=len(data))
            assert data + rest == b"z" * 300_000
            assert (await conn.expect("finished")).output_end == 300_000
    run(main())


def test_heartbeats_are_sequenced_and_acks_keep_the_session(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, _ = await r.hub.attach(epoch=1, interval_ms=50)
            seqs = []
            while len(seqs) < 8:  # 8 intervals: well past the 3-interval silence limit
                frame = await asyncio.wait_for(conn.inbox.get(), TIMEOUT_S)
                assert frame is not None and frame.WhichOneof("kind") == "heartbeat"
                seqs.append(frame.heartbeat.seq)
                assert frame.heartbeat.running == 0
                conn.send(heartbeat_ack=node_pb2.HeartbeatAck(seq=frame.heartbeat.seq))
            assert seqs == list(range(seqs[0], seqs[0] + 8))
            assert r.agent.sessions == 1 and r.hub.conns.empty()
    run(main())


def test_silent_hub_is_dropped_and_redialled(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn, _ = await r.hub.attach(epoch=1, interval_ms=50)
            await r.hub.attach(epoch=2)  # the agent gave up on the silent stream and came back
            while (frame := await asyncio.wait_for(conn.inbox.get(), TIMEOUT_S)) is not None:
                assert frame.WhichOneof("kind") == "heartbeat"  # the old stream has ended
            assert r.agent.last_end is not None and "silent" in r.agent.last_end.reason
    run(main())


def test_bad_credentials_are_retried(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.hub.refuse = grpc.StatusCode.UNAUTHENTICATED
            while r.agent.sessions < 3:
                await asyncio.sleep(0.01)
            assert r.agent.last_end is not None and r.agent.last_end.auth_failed
            r.hub.refuse = None
            await r.hub.attach(epoch=1)
    run(main())


def test_retry_later_then_welcome(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            conn = await asyncio.wait_for(r.hub.conns.get(), TIMEOUT_S)
            await conn.expect("hello")
            conn.send(retry_later=node_pb2.RetryLater(retry_after_ms=50, reason="busy"))
            await r.hub.attach(epoch=1)
            assert r.agent.last_end is not None and r.agent.last_end.retry_after_s == 0.05
    run(main())


# ---- several hubs ---------------------------------------------------------------

@contextlib.asynccontextmanager
async def second_hub() -> AsyncIterator[tuple[FakeHub, str]]:
    hub = FakeHub()
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeLinkServicer_to_server(hub, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield hub, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def refused_address() -> tuple[socket.socket, str]:
    """A loopback port that refuses connections (bound, never listening) while held."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


async def first_conn(*hubs: FakeHub) -> tuple[FakeHub, Conn]:
    gets = {asyncio.ensure_future(h.conns.get()): h for h in hubs}
    done, pending = await asyncio.wait(gets, timeout=TIMEOUT_S,
                                       return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    assert done, "no hub saw a stream"
    t = done.pop()
    return gets[t], t.result()


def test_a_dead_address_is_skipped_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        sock, dead = refused_address()
        with sock:
            # Long backoff: attaching in time proves the dead address cost no delay.
            async with rig(tmp_path, also=(dead,), backoff_base_s=30.0,
                           backoff_cap_s=30.0) as r:
                await r.hub.attach(epoch=1)
                assert r.agent.sessions <= 2
    run(main())


def test_fails_over_to_the_other_hub_with_its_tasks(tmp_path: Path) -> None:
    async def main() -> None:
        async with second_hub() as (hub2, address2), rig(tmp_path, also=(address2,)) as r:
            first, conn = await first_conn(r.hub, hub2)
            other = hub2 if first is r.hub else r.hub
            await conn.expect("hello")
            conn.send(welcome=node_pb2.Welcome(session_epoch=1, heartbeat_interval_ms=1000))
            env = r.envelope("sleep 30", epoch=1)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            await conn.expect("started")
            # The first hub dies: its stream fails and it refuses new ones.
            first.refuse = grpc.StatusCode.UNAVAILABLE
            conn.outbox.put_nowait(grpc.StatusCode.UNAVAILABLE)
            conn2, hello = await other.attach(epoch=2, verdicts=[node_pb2.TaskVerdict(
                task_id=task_id, attempt=1, verdict=KEEP, resume_offset=0)])
            assert [(t.task_id, t.attempt) for t in hello.tasks] == [(task_id, 1)]
            assert r.agent.last_end is not None and "UNAVAILABLE" in r.agent.last_end.reason
            # The task kept running across the failover; a cancel through hub 2 ends it.
            conn2.send(cancel=node_pb2.CancelTask(task_id=task_id, attempt=1, reason="t"))
            finished = await conn2.expect("finished")
            assert finished.kind == node_pb2.FINISH_KIND_CANCELLED
    run(main())


# ---- agent restarts -----------------------------------------------------------

def test_unacked_results_survive_an_agent_restart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()

    async def first_life() -> tuple[str, node_pb2.SignedEnvelope]:
        async with rig(tmp_path, key=key, finish_ack_wait_s=0.05) as r:
            conn, _ = await r.hub.attach(epoch=1)
            env = r.envelope("echo done; exit 2", epoch=1)
            task_id = node_pb2.TaskEnvelope.FromString(env.body).task_id
            conn.send(task=env)
            await conn.expect("started")
            await conn.output_until(task_id, 6, ack=False)
            await conn.expect("finished")  # never acknowledged
            r.agent.stop()
            assert await asyncio.wait_for(r.agent_run, TIMEOUT_S) == 0
        return task_id, env

    async def second_life(task_id: str) -> None:
        async with rig(tmp_path, key=key) as r:
            conn, hello = await r.hub.attach(epoch=5, verdicts=[node_pb2.TaskVerdict(
                task_id=task_id, attempt=1, verdict=KEEP, resume_offset=0)])
            (report,) = hello.tasks
            assert (report.finished, report.exit_code, report.output_end) == (True, 2, 6)
            assert await conn.output_until(task_id, 6) == b"done\r\n"
            finished = await conn.expect("finished")
            assert (finished.exit_code, finished.kind) == (2, node_pb2.FINISH_KIND_EXITED)
            conn.send(task=r.envelope("echo again", epoch=5, task_id=task_id))
            assert (await conn.expect("rejected")).code == "already_ran"

    task_id, _ = run(first_life())
    run(second_life(task_id))


def test_forced_shutdown_kills_every_task_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, shutdown_grace_s=60.0) as r:
            conn, _ = await r.hub.attach(epoch=1)
            pids = []
            for _ in range(3):
                conn.send(task=r.envelope("trap '' INT TERM; sleep 1000", epoch=1))
                pids.append((await conn.expect("started")).pid)
            r.agent.stop(signal.SIGTERM)
            await conn.expect("draining")
            r.agent.stop(signal.SIGINT)
            assert await asyncio.wait_for(r.agent_run, TIMEOUT_S) == 0
            for pid in pids:
                assert procgroup.live_members(pid, pid) == []
    run(main())


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED])
def test_permission_denied_counts_as_auth_failure(tmp_path: Path, code: grpc.StatusCode) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.hub.refuse = code
            while r.agent.last_end is None:
                await asyncio.sleep(0.01)
            assert r.agent.last_end.auth_failed and r.agent.last_end.code == code.name
    run(main())


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA (server and client alike)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cortex-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_mutual_tls(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_creds = server_credentials(ServerTLS(cert_file, key_file, client_ca_file=cert_file))
    client_tls = ClientTLS(ca_file=cert_file, cert_file=cert_file, key_file=key_file,
                           enabled=True)

    async def main() -> None:
        async with rig(tmp_path, server_creds=server_creds, tls=client_tls,
                       insecure_loopback=False) as r:
            conn, hello = await r.hub.attach(epoch=1)
            assert hello.node_id == "n1"
            conn.send(task=r.envelope("echo over tls", epoch=1))
            await conn.expect("started")
            assert (await conn.expect("output")).data == b"over tls\r\n"
    run(main())


# ---- the real process ---------------------------------------------------------

def test_agent_process_sigterm_drains_reaps_and_leaves_nothing(tmp_path: Path) -> None:
    """The console script as a process: uvloop, signals, subreaper, the shutdown ladder."""
    key = Ed25519PrivateKey.generate()
    (tmp_path / "hub.pub").write_bytes(public_key_pem(key))
    (tmp_path / "token").write_text("tok-n1\n")

    async def main() -> None:
        hub = FakeHub()
        server = grpc.aio.server()
        node_pb2_grpc.add_NodeLinkServicer_to_server(hub, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nodeagent", "--node-port", f"127.0.0.1:{port}",
            "--node-id", "n1",
            "--node-token-file", str(tmp_path / "token"), "--hub-key", str(tmp_path / "hub.pub"),
            "--state-dir", str(tmp_path / "state"), "--insecure-loopback",
            "--shutdown-grace-s", "0.3", "--cancel-grace-s", "0.2",
            stderr=asyncio.subprocess.PIPE)
        try:
            conn, hello = await hub.attach(epoch=1)
            assert hello.node_id == "n1" and hello.labels["os"] == "linux"
            signer = EnvelopeSigner(key)
            conn.send(task=signer.sign(
                task_id=new_task_id(), attempt=1, node_id="n1", session_epoch=1,
                spec=node_pb2.TaskSpec(command="(trap '' HUP INT TERM; sleep 1000 &) ; "
                                       "echo started; sleep 1000")))
            pid = (await conn.expect("started")).pid
            seen = b""
            while b"started" not in seen:
                seen += (await conn.expect("output")).data
            orphans = [p for p in procgroup.live_members(pid, pid)
                       if (st := procgroup.proc_stat(p)) and st.ppid == proc.pid]
            assert orphans, "the double-forked sleep was re-parented to the agent (subreaper)"
            proc.send_signal(signal.SIGTERM)
            await conn.expect("draining")
            finished = await conn.expect("finished")
            assert finished.kind == node_pb2.FINISH_KIND_CANCELLED
            conn.send(finished_ack=node_pb2.FinishedAck(task_id=finished.task_id, attempt=1))
            _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
            assert proc.returncode == 0, stderr.decode()
            assert procgroup.live_members(pid, pid) == []
            events = [json.loads(line)["event"] for line in stderr.decode().splitlines()]
            for event in ("agent_start", "attach", "task_started", "shutdown",
                          "shutdown_grace_expired", "task_finished", "agent_stop"):
                assert event in events, (event, events)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await server.stop(None)

    run(main())


def test_agent_process_second_signal_skips_the_grace_and_orphans_nothing(
        tmp_path: Path) -> None:
    """SIGTERM starts a 60 s grace; SIGINT during it kills every task tree at once (issue 3,
    item 10). Tasks ignore INT and TERM; with cgroups one also hides in a new session."""
    import secrets

    from nodeagent.cgroup import AGENT_DIR_PREFIX, CGROUP, discover

    key = Ed25519PrivateKey.generate()
    (tmp_path / "hub.pub").write_bytes(public_key_pem(key))
    (tmp_path / "token").write_text("tok-n1\n")
    marker = f"4001.{secrets.randbelow(10**8):08d}"

    def leftovers() -> list[int]:
        found = []
        for pid in procgroup.all_pids():
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        st = procgroup.proc_stat(pid)
                        if st is not None and st.state not in ("Z", "X"):
                            found.append(pid)
        return found

    async def main() -> None:
        hub = FakeHub()
        server = grpc.aio.server()
        node_pb2_grpc.add_NodeLinkServicer_to_server(hub, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nodeagent", "--node-port", f"127.0.0.1:{port}",
            "--node-id", "n1",
            "--node-token-file", str(tmp_path / "token"), "--hub-key", str(tmp_path / "hub.pub"),
            "--state-dir", str(tmp_path / "state"), "--insecure-loopback",
            "--shutdown-grace-s", "60", "--cancel-grace-s", "5",
            stderr=asyncio.subprocess.PIPE)
        try:
            conn, hello = await hub.attach(epoch=1)
            hidden = (f"(setsid sh -c 'trap \"\" HUP INT TERM; sleep {marker}' &); "
                      if hello.isolation == CGROUP else "")
            signer = EnvelopeSigner(key)
            for _ in range(2):
                conn.send(task=signer.sign(
                    task_id=new_task_id(), attempt=1, node_id="n1", session_epoch=1,
                    spec=node_pb2.TaskSpec(command=f"trap '' INT TERM; {hidden}"
                                           f"(trap '' HUP INT TERM; sleep {marker} &); "
                                           f"echo started; sleep {marker}")))
            started = 0
            while started < 2:  # a worker's TaskStarted may follow the other task's output
                frame = await asyncio.wait_for(conn.inbox.get(), TIMEOUT_S)
                assert frame is not None
                started += frame.WhichOneof("kind") == "started"
            while len(leftovers()) < (6 if hidden else 4):
                await asyncio.sleep(0.02)
            loop = asyncio.get_running_loop()
            proc.send_signal(signal.SIGTERM)
            while (frame := await asyncio.wait_for(conn.inbox.get(), TIMEOUT_S)) is not None:
                if frame.WhichOneof("kind") == "draining":  # output may come first
                    break
            t0 = loop.time()
            proc.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
            assert loop.time() - t0 < 5.0  # neither the 60 s grace nor the 5 s cancel ladder
            assert proc.returncode == 0, stderr.decode()
            assert leftovers() == []
            lines = [json.loads(line) for line in stderr.decode().splitlines()]
            events = [line["event"] for line in lines]
            assert "shutdown_forced" in events and events.count("task_finished") == 2
            assert [e["mode"] for e in lines if e["event"] == "isolation"] == [hello.isolation]
            for h in discover(Path("/proc/self/mounts").read_text(),
                              Path("/proc/self/cgroup").read_text()):
                assert not list(h.own.glob(f"{AGENT_DIR_PREFIX}{proc.pid}-*")), h
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for pid in leftovers():  # only ours: the marker is unique to this test
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await server.stop(None)

    run(main())

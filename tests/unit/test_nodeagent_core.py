"""The node agent's pure parts: task table, admission, spool ranges, ran log, backoff."""

import asyncio
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.envelope import EnvelopeSigner, EnvelopeVerifier
from cortex.ids import new_task_id
from cortex.v1 import node_pb2
from nodeagent import procgroup
from nodeagent.admission import Rejection, admit
from nodeagent.backoff import Backoff
from nodeagent.ranlog import RanLog
from nodeagent.reaper import OrphanReaper
from nodeagent.recovery import recover
from nodeagent.spool import SpoolMeta, TaskSpool, scan
from nodeagent.tasktable import SendFinished, SendOutput, TaskEntry, TaskTable

KEEP, KILL = node_pb2.VERDICT_KEEP, node_pb2.VERDICT_KILL


def drain_sends(table: TaskTable) -> list[SendOutput | SendFinished]:
    out = []
    while (step := table.next_send()) is not None:
        out.append(step)
    return out


# ---- task table -------------------------------------------------------------

def test_output_is_framed_in_order_and_bounded_by_the_window() -> None:
    table = TaskTable(window_bytes=100, max_frame_bytes=30)
    table.admit("t-a", 1)
    table.output_appended(("t-a", 1), 250)
    sends = drain_sends(table)
    assert [(s.offset, s.length) for s in sends if isinstance(s, SendOutput)] == [
        (0, 30), (30, 30), (60, 30), (90, 10)]
    assert table.ack(("t-a", 1), 60)
    assert [(s.offset, s.length) for s in drain_sends(table)] == [  # type: ignore[union-attr]
        (100, 30), (130, 30)]
    assert not table.ack(("t-a", 1), 50)  # acks are cumulative; an older one changes nothing


def test_finished_goes_after_the_last_output_only() -> None:
    table = TaskTable(window_bytes=10, max_frame_bytes=10)
    key = ("t-a", 1)
    table.admit(*key)
    table.output_appended(key, 15)
    table.finished(key, exit_code=0, kind=node_pb2.FINISH_KIND_EXITED, reason="")
    assert [type(s) for s in drain_sends(table)] == [SendOutput]  # window full: no Finished
    table.ack(key, 10)
    steps = drain_sends(table)
    assert [type(s) for s in steps] == [SendOutput, SendFinished]
    assert drain_sends(table) == []  # Finished once per session


def test_tasks_take_turns() -> None:
    table = TaskTable(window_bytes=1000, max_frame_bytes=10)
    for name in ("t-a", "t-b"):
        table.admit(name, 1)
        table.output_appended((name, 1), 30)
    order = [s.key[0] for s in drain_sends(table) if isinstance(s, SendOutput)]
    assert order == ["t-a", "t-b"] * 3


def test_verdicts_keep_resumes_from_hub_offset_and_missing_means_kill() -> None:
    table = TaskTable(window_bytes=1000, max_frame_bytes=1000)
    for name in ("t-a", "t-b", "t-c"):
        table.add(TaskEntry(name, 2, output_end=100, acked=80))
    table.new_session()
    assert drain_sends(table) == []  # nothing streams before the verdicts
    outcome = table.apply_verdicts([
        node_pb2.TaskVerdict(task_id="t-a", attempt=2, verdict=KEEP, resume_offset=50),
        node_pb2.TaskVerdict(task_id="t-b", attempt=2, verdict=KILL),
        node_pb2.TaskVerdict(task_id="t-x", attempt=1, verdict=KEEP),
    ])
    assert outcome.kept == [("t-a", 2)]
    assert sorted(outcome.killed) == [("t-b", 2), ("t-c", 2)]
    # Resend from the hub's offset even though the node believed 80 was acked.
    assert drain_sends(table) == [SendOutput(("t-a", 2), 50, 50)]


def test_resume_offset_beyond_the_spool_is_clamped() -> None:
    table = TaskTable(window_bytes=1000, max_frame_bytes=1000)
    table.add(TaskEntry("t-a", 1, output_end=10))
    outcome = table.apply_verdicts([node_pb2.TaskVerdict(
        task_id="t-a", attempt=1, verdict=KEEP, resume_offset=99)])
    assert outcome.clamped == [(("t-a", 1), 99, 10)]
    assert drain_sends(table) == []


def test_reports_carry_what_hello_needs() -> None:
    table = TaskTable(window_bytes=10, max_frame_bytes=10)
    table.add(TaskEntry("t-a", 3, output_end=7, acked=5))
    table.finished(("t-a", 3), exit_code=-9, kind=node_pb2.FINISH_KIND_CANCELLED, reason="x")
    (report,) = table.reports()
    assert (report.task_id, report.attempt, report.acked_offset, report.output_end,
            report.finished, report.exit_code) == ("t-a", 3, 5, 7, True, -9)


# ---- admission --------------------------------------------------------------

@pytest.fixture
def keys() -> tuple[EnvelopeSigner, EnvelopeVerifier]:
    key = Ed25519PrivateKey.generate()
    return EnvelopeSigner(key), EnvelopeVerifier(key.public_key(), "n1")


def _sign(signer: EnvelopeSigner, command: str = "true", **kw: object) -> node_pb2.SignedEnvelope:
    args: dict[str, object] = {"task_id": new_task_id(), "attempt": 1, "node_id": "n1",
                               "session_epoch": 5}
    args.update(kw)
    return signer.sign(spec=node_pb2.TaskSpec(command=command), **args)  # type: ignore[arg-type]


def _admit(verifier: EnvelopeVerifier, signed: node_pb2.SignedEnvelope, **kw: object
           ) -> node_pb2.TaskEnvelope | Rejection:
    args: dict[str, object] = {"session_epoch": 5, "ran": set(), "running": 0, "capacity": 2,
                               "draining": False}
    args.update(kw)
    return admit(verifier, signed, **args)  # type: ignore[arg-type]


def test_admission_codes(keys: tuple[EnvelopeSigner, EnvelopeVerifier]) -> None:
    signer, verifier = keys
    ok = _sign(signer)
    assert isinstance(_admit(verifier, ok), node_pb2.TaskEnvelope)
    replay = _admit(verifier, ok)
    assert isinstance(replay, Rejection) and replay.code == "replay"
    body = node_pb2.TaskEnvelope.FromString(ok.body)
    assert replay.task_id == body.task_id and replay.attempt == 1

    tampered = _sign(signer)
    tampered.body = tampered.body.replace(b"true", b"hush")
    cases = {
        "bad_signature": _admit(verifier, tampered),
        "wrong_node": _admit(verifier, _sign(signer, node_id="n2")),
        "stale_epoch": _admit(verifier, _sign(signer, session_epoch=4)),
        "expired": _admit(verifier, _sign(signer, now_ms=int(time.time() * 1000) - 120_000)),
        "malformed": _admit(verifier, _sign(signer, task_id="../../etc")),
        "draining": _admit(verifier, _sign(signer), draining=True),
        "capacity": _admit(verifier, _sign(signer), running=2),
    }
    for code, result in cases.items():
        assert isinstance(result, Rejection) and result.code == code, (code, result)
    assert cases["malformed"].task_id == ""  # type: ignore[union-attr]

    again = _sign(signer, task_id=body.task_id)
    ran = _admit(verifier, again, ran={(body.task_id, 1)}, draining=True)
    assert isinstance(ran, Rejection) and ran.code == "already_ran"


def test_unparseable_envelope_rejects_with_empty_task_id(
        keys: tuple[EnvelopeSigner, EnvelopeVerifier]) -> None:
    _, verifier = keys
    result = _admit(verifier, node_pb2.SignedEnvelope(body=b"\xff\xff", signature=b"x" * 64))
    assert isinstance(result, Rejection)
    assert (result.task_id, result.code) == ("", "bad_signature")


def test_bad_env_name_is_malformed(keys: tuple[EnvelopeSigner, EnvelopeVerifier]) -> None:
    signer, verifier = keys
    signed = signer.sign(task_id=new_task_id(), attempt=1, node_id="n1", session_epoch=5,
                         spec=node_pb2.TaskSpec(command="true", env={"A=B": "x"}))
    result = _admit(verifier, signed)
    assert isinstance(result, Rejection) and result.code == "malformed"


# ---- spool ------------------------------------------------------------------

def test_spool_read_ranges_and_reopen(tmp_path: Path) -> None:
    meta = SpoolMeta(task_id="t-" + "0" * 20, attempt=2, command="x", started_at=1.0)
    spool = TaskSpool.create(tmp_path, meta)
    assert spool.append(b"hello ") == 6
    assert spool.append(b"world") == 11
    assert spool.read(0, 5) == b"hello"
    assert spool.read(6, 100) == b"world"
    assert spool.read(11, 10) == b""
    assert spool.read(20, 10) == b""
    spool.finish(exit_code=3, kind="EXITED", reason="")
    spool.close()
    (again,), bad = scan(tmp_path)
    assert bad == []
    assert again.end == 11 and again.read(3, 4) == b"lo w"
    assert (again.meta.exit_code, again.meta.kind, again.meta.finished) == (3, "EXITED", True)
    again.delete()
    assert scan(tmp_path) == ([], [])


def test_spool_scan_reports_debris(tmp_path: Path) -> None:
    (tmp_path / "t-x.1").mkdir()
    spools, bad = scan(tmp_path)
    assert spools == [] and len(bad) == 1


# ---- ran log ----------------------------------------------------------------

def test_ran_log_survives_restart_and_torn_lines(tmp_path: Path) -> None:
    log = RanLog(tmp_path)
    log.load()
    log.record("t-a", 1)
    log.close()
    with open(tmp_path / "ran.log", "a") as f:
        f.write("t-torn")  # a crash mid-append
    again = RanLog(tmp_path)
    again.load()
    again.record("t-b", 2)
    assert ("t-a", 1) in again and ("t-b", 2) in again and ("t-a", 2) not in again
    again.close()
    assert (tmp_path / "ran.log").read_text().splitlines()[-1] == "t-b 2"


def test_ran_log_compacts_to_newest(tmp_path: Path) -> None:
    (tmp_path / "ran.log").write_text("".join(f"t-{i} 1\n" for i in range(10)))
    log = RanLog(tmp_path, max_entries=4)
    log.load()
    assert ("t-9", 1) in log and ("t-5", 1) not in log
    log.close()


# ---- backoff ----------------------------------------------------------------

def test_backoff_full_jitter_grows_caps_and_resets() -> None:
    b = Backoff(base_s=0.2, cap_s=10.0, rng=random.Random(1))
    bounds = []
    for _ in range(10):
        b.session_ended(None)
        bounds.append(min(10.0, 0.2 * 2 ** (b.failures - 1)))
        assert 0 <= b.next_delay() <= bounds[-1]
    assert bounds[-1] == 10.0
    b.session_ended(12.0)  # a good session resets the exponent
    assert b.failures == 0 and b.next_delay() <= 0.2
    b.retry_after(3.0)
    assert 3.0 <= b.next_delay() <= 3.6
    assert 9.0 <= b.at_cap() <= 10.0


# ---- recovery ---------------------------------------------------------------

def _unfinished_spool(root: Path, pid: int, ticks: int) -> None:
    meta = SpoolMeta(task_id="t-" + "a" * 20, attempt=1, command="x", started_at=1.0,
                     pid=pid, pid_start_ticks=ticks)
    spool = TaskSpool.create(root, meta)
    spool.append(b"partial")
    spool.close()


def test_recovery_finishes_lost_attempts_and_kills_their_leftovers(tmp_path: Path) -> None:
    leftover = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        st = procgroup.proc_stat(leftover.pid)
        assert st is not None
        _unfinished_spool(tmp_path, leftover.pid, st.start_ticks)
        (tmp_path / "junk.1").mkdir()
        (spool,) = recover(tmp_path, structlog.get_logger())
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert (spool.meta.kind, spool.meta.exit_code, spool.end) == ("FINISH_KIND_LOST", -1, 7)
        assert not (tmp_path / "junk.1").exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_recovery_never_signals_a_reused_pid(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        st = procgroup.proc_stat(bystander.pid)
        assert st is not None
        _unfinished_spool(tmp_path, bystander.pid, st.start_ticks + 1)  # another process
        (spool,) = recover(tmp_path, structlog.get_logger())
        assert spool.meta.kind == "FINISH_KIND_LOST"
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# ---- orphan reaper ----------------------------------------------------------

def test_orphan_reaper_never_takes_a_protected_status() -> None:
    task_main = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 7"], dict(os.environ))
    orphan = os.posix_spawn("/bin/true", ["true"], dict(os.environ))
    assert asyncio.run(procgroup.wait_gone([task_main, orphan], 10.0))  # both are zombies now
    reaper = OrphanReaper(lambda: {task_main}, structlog.get_logger())
    assert reaper.reap() >= 1
    assert procgroup.proc_stat(orphan) is None  # reaped
    pid, status = os.waitpid(task_main, 0)  # the runner still gets its child's status
    assert (pid, os.waitstatus_to_exitcode(status)) == (task_main, 7)


def test_folding_holds_a_new_task_and_puts_its_output_inside_finished() -> None:
    from nodeagent.tasktable import SendFinished, SendOutput, TaskTable
    table = TaskTable(window_bytes=1 << 20, max_frame_bytes=64 << 10)
    entry = table.admit("t-00000000000000000001", 1)
    entry.holding = True
    table.output_appended(entry.key, 100)
    assert table.next_send(fold_bytes=1024) is None  # held: it may still end and fold
    table.finished(entry.key, exit_code=0, kind=1, reason="")
    step = table.next_send(fold_bytes=1024)
    assert step == SendFinished(entry, 0) and entry.sent == 100 and entry.finish_sent
    assert table.next_send(fold_bytes=1024) is None

    big = table.admit("t-00000000000000000002", 1)
    table.output_appended(big.key, 5000)
    table.finished(big.key, exit_code=0, kind=1, reason="")
    first = table.next_send(fold_bytes=1024)  # more than folds: output frames first
    assert isinstance(first, SendOutput) and first.length == 5000
    assert table.next_send(fold_bytes=1024) == SendFinished(big)  # then a plain Finished

"""The kernel layer offline: recorded /proc facts go through the live layer's own rule.

``nodeagent detect --kernel FILE.json`` gives a transcript's replay what /proc showed of
the terminal's foreground group when it ended (nodeagent/detect/kernel.py:
``facts_from_record`` -> ``decide``, the function ``read_facts`` uses live). The kernel
corpus (tests/corpus/kernel/) is real programs cut where they waited, with the snapshot
``capture.py --kernel-cuts`` took then.
"""

import io
import json
import os
import select
import signal
import time
from contextlib import redirect_stdout
from pathlib import Path

from nodeagent.detect.kernel import READ_NRS, facts_from_record, snapshot
from nodeagent.detect.transcript import replay
from nodeagent.detect_cli import run
from nodeagent.ptyspawn import spawn_in_pty
from tests.corpus.score import KERNEL_CORPUS, score_corpus

READ = next(iter(READ_NRS))
PTS = {"0": "/dev/pts/3", "1": "/dev/pts/3", "2": "/dev/pts/3"}


def member(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"comm": "prog", "state": "S", "wchan": "wait_woken",
                               "syscall": f"{READ} 0x0 0x7ffd 0x1 0 0", "fds": PTS}
    return {**base, **kw}


def test_recorded_members_decide_like_the_live_layer() -> None:
    assert facts_from_record({"members": [member()]}).waiting == "read"
    assert facts_from_record({"members": [member(syscall=str(READ))]}).waiting == "read"
    # Reading a pipe, running, or asleep elsewhere: not waiting on the terminal.
    assert facts_from_record({"members": [member(fds={"0": "pipe:[12]"})]}).waiting == ""
    assert facts_from_record({"members": [member(state="R")]}).waiting == ""
    assert facts_from_record({"members": [member(syscall="61 0xffffffff 0x7ffd 0")]}
                             ).waiting == ""
    # syscall unreadable: the wchan of a tty read still says so.
    assert facts_from_record({"members": [member(syscall=None, wchan="n_tty_read")]}
                             ).waiting == "read"
    # A reader wins over a poller, whichever comes first.
    poller = member(comm="srv", syscall="7 0x1 0x1 0x0 0", fds=PTS)
    facts = facts_from_record({"members": [poller, member(comm="cat")]})
    assert (facts.waiting, facts.comm) == ("read", "cat")
    assert facts_from_record({"members": [poller]}).waiting == "poll"
    assert facts_from_record({}).waiting == ""


def _capture_until_waiting(command: str, timeout_s: float = 30.0) -> tuple[bytes, dict]:
    pid, fd = spawn_in_pty(command, {"PATH": os.environ["PATH"], "TERM": "xterm"})
    data = bytearray()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snap = snapshot(pid)
            if facts_from_record(snap).waiting == "read":
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    return bytes(data), snap
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data += os.read(fd, 65536)
        raise AssertionError(f"{command!r} never waited on its terminal: {data!r}")
    finally:
        os.close(fd)
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_real_program_waiting_is_seen_only_with_its_kernel_record() -> None:
    data, record = _capture_until_waiting("python3 -c \"input('Total so far: ')\"")
    assert data.endswith(b"Total so far: ")
    assert replay(data) == []  # a weak ': ' prompt: the patterns alone stay silent
    got = replay(data, kernel=facts_from_record(record))
    assert [(d.kind, d.detector) for d in got] == [("input_required", "kernel")]
    assert got[0].offset == len(data)


def test_a_descendant_that_left_the_session_still_reads_the_terminal() -> None:
    # setsid (and su -c) start a new session: not the terminal's foreground group, yet the
    # read is on the inherited terminal, so a person is being waited for.
    data, record = _capture_until_waiting("setsid -w sh -c 'printf \"Reply: \"; read x'")
    assert data.endswith(b"Reply: ")
    facts = facts_from_record(record)
    assert (facts.waiting, facts.comm) == ("read", "sh")


def test_cli_takes_a_kernel_file(tmp_path: Path) -> None:
    raw = tmp_path / "quiet.raw"
    raw.write_bytes(b"Total so far: ")
    kernel = tmp_path / "k.json"
    kernel.write_text(json.dumps({"quiet.raw": {"members": [member()]}}))
    out = io.StringIO()
    with redirect_stdout(out):
        assert run([str(raw), "--kernel", str(kernel)]) == 0
        assert run([str(raw)]) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["note"] == "kernel layer at the end: read"
    assert [x["kind"] for x in lines[1:] if "kind" in x][:1] == ["input_required"]
    assert sum(1 for x in lines if "kind" in x) == 1  # without the file: nothing
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    assert run([str(raw), "--kernel", str(bad)]) == 2


def test_kernel_corpus_figures() -> None:
    without = score_corpus(KERNEL_CORPUS)
    with_kernel = score_corpus(KERNEL_CORPUS, kernel=True)
    assert without.files >= 28 and without.expected == 0  # every wait there is kernel-only
    assert with_kernel.precision >= 0.98
    assert with_kernel.recall >= 0.85  # measured 0.875 (python -m tests.corpus.score -v)


def test_quiet_programs_that_wait_for_nobody_raise_nothing_with_the_kernel() -> None:
    from nodeagent.detect.transcript import replay_file
    from tests.corpus.capture import NONCE
    from tests.corpus.score import kernel_records

    records = kernel_records()
    negatives = sorted(KERNEL_CORPUS.glob("neg-*.raw"))
    assert len(negatives) >= 5
    for raw in negatives:
        facts = facts_from_record(records[raw.name])
        assert replay_file(raw, NONCE, kernel=facts)[0] == [], raw.name


def test_only_a_shell_polling_its_terminal_is_a_prompt() -> None:
    from nodeagent.detect.detector import PromptDetector
    from nodeagent.detect.events import KernelFacts

    # "box ~ \u276f " is no shape the pattern layer knows; "root@box:~# " it does.
    fancy = "box ~ \u276f ".encode()
    for comm, kinds in (("bash", ["input_required"]), ("node", []), ("", [])):
        det = PromptDetector(None)
        assert det.feed(fancy, len(fancy)) == []
        assert [d.kind for d in det.on_quiet(KernelFacts("poll", 1, comm))] == kinds, comm
    det = PromptDetector(None)
    assert det.feed(b"root@box:~# ", 12) == []  # a shaped pattern: the quiet tick decides
    assert [d.rule for d in det.on_quiet(KernelFacts("poll", 1, "bash"))] == [
        "shell_prompt+kernel"]
    assert det.on_quiet(KernelFacts("poll", 1, "bash")) == []  # one event per prompt

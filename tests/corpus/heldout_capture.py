"""Capture the held-out corpus (``tests/corpus/heldout/``): real programs, cut where they stop.

``python -m tests.corpus.heldout_capture [NAME...]`` runs each scenario of
:mod:`tests.corpus.heldout_scenarios` in a real PTY through the agent's own spawn path
(:func:`nodeagent.ptyspawn.spawn_in_pty`). A scenario is a list of *cuts*: points where the
program has gone quiet, each labelled by how the scenario was made — the program is
waiting for a person there (``waits``: a prompt, a REPL, a TUI, a bare ``read``) or it is
not (a sleep, a quiet server, work in progress, a program that ended). At each cut the
capture records where the transcript is and what /proc shows of the terminal's foreground
group (:func:`nodeagent.detect.kernel.snapshot`), then types the cut's keystrokes and goes
on. Each cut becomes one transcript ending there:

- ``NAME.kI.raw`` / ``NAME.kI.reads``: the bytes up to the cut and the reads that gave them;
- ``NAME.kI.expected.jsonl``: a meta line (command, how it was made, ``waits``), then the
  earlier waits of the same run (``prior``: they absorb a detection there, never scored),
  then, for a waiting cut, the wait at the end (``any_wait``: any waiting kind counts,
  scored with and without the kernel layer). A cut that does not wait expects nothing:
  anything the detector raises at or before it that no wait absorbs is a false alarm;
- ``kernel.json``: the /proc snapshot at each cut (the shape of ``nodeagent detect --kernel``).

Labels come from the scenario, never from the detector. The kernel's word is used only to
choose *when* to cut a waiting program (once it sleeps on the terminal, so a loaded machine
does not cut before the prompt is out); a program the kernel never sees waiting is cut at
the deadline all the same and scored as a wait (``kernel_saw`` false in the meta line).
Detector code was not changed between capturing this set and its first scoring (see
tests/corpus/README).
"""

import json
import os
import select
import signal
import sys
import time
from pathlib import Path

from nodeagent.detect.kernel import facts_from_record, snapshot
from nodeagent.ptyspawn import spawn_in_pty
from tests.corpus.heldout_scenarios import SCENARIOS, Cut, Scenario

OUT = Path(__file__).parent / "heldout"
HOME = "/tmp/cc-heldout-home"
WAIT_DEADLINE_S = 12.0
END_TIMEOUT_S = 8.0

Taken = tuple[Cut, int, int, dict[str, object], bool]  # cut, bytes, reads, /proc, kernel saw


class Run:
    """One scenario's process on its PTY and everything read from it."""

    def __init__(self, sc: Scenario) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CORTEX_", "PROMPT_", "VIRTUAL_ENV"))}
        env.update({"TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": HOME})
        env.pop("SUDO_PROMPT", None)
        env.update(sc.env)
        os.makedirs(HOME, exist_ok=True)
        self.pid, self.fd = spawn_in_pty(sc.command, env, rows=sc.rows, cols=sc.cols)
        self.data = bytearray()
        self.reads: list[int] = []
        self.eof = False
        self.last_output = time.monotonic()

    def pump(self, timeout: float) -> bool:
        if self.eof:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.data.extend(chunk)
        self.reads.append(len(chunk))
        self.last_output = time.monotonic()
        return True

    def cut(self, cut: Cut, since: int) -> Taken:
        """Wait for the cut's bytes, then for quiet (and, for a wait, for the kernel to
        see the program asleep on the terminal, up to the deadline)."""
        deadline = time.monotonic() + (WAIT_DEADLINE_S if cut.waits else cut.quiet_s + 10.0)
        while cut.wait_for and cut.wait_for not in self.data[since:] and not self.eof:
            self.pump(0.1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cut.wait_for!r} never came: {bytes(self.data[-200:])!r}")
        saw = False
        while time.monotonic() < deadline:
            if self.pump(0.1):
                continue
            if time.monotonic() - self.last_output < cut.quiet_s:
                continue
            snap = snapshot(self.pid)
            saw = bool(facts_from_record(snap).waiting)
            if not cut.waits or saw or self.eof:
                break
        snap = snapshot(self.pid)
        return cut, len(self.data), len(self.reads), snap, saw

    def send(self, data: bytes) -> None:
        if data and not self.eof:
            os.write(self.fd, data)
            self.last_output = time.monotonic()  # the answer's echo and what follows come next

    def close(self) -> None:
        deadline = time.monotonic() + END_TIMEOUT_S
        while not self.eof and time.monotonic() < deadline:
            self.pump(0.2)
        os.close(self.fd)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def capture(sc: Scenario) -> tuple[bytes, list[int], list[Taken]]:
    if sc.setup:
        os.system(sc.setup)  # noqa: S605 - the scenario's own scratch files under /tmp
    run = Run(sc)
    taken: list[Taken] = []
    try:
        since = 0
        for cut in sc.cuts:
            taken.append(run.cut(cut, since))
            since = len(run.data)
            run.send(cut.send)
    finally:
        run.close()
    return bytes(run.data), run.reads, taken


def write(sc: Scenario, raw: bytes, reads: list[int], taken: list[Taken],
          records: dict[str, object]) -> None:
    for i, (cut, end, nreads, snap, saw) in enumerate(taken):
        name = f"{sc.name}.k{i}"
        (OUT / f"{name}.raw").write_bytes(raw[:end])
        (OUT / f"{name}.reads").write_text(f"# cols {sc.cols}\n"
                                           + "".join(f"{n}\n" for n in reads[:nreads]))
        meta = {"scenario": sc.name, "command": sc.command, "cut": i, "cut_at": end,
                "waits": cut.waits, "label": cut.kind or "not waiting", "made": sc.made,
                "kernel_saw": saw, "meta": True}
        lines = [json.dumps(meta)]
        lines += [json.dumps({"offset": e, "kind": c.kind, "prior": True})
                  for c, e, *_ in taken[:i] if c.waits]
        if cut.waits:
            lines.append(json.dumps({"offset": end, "kind": cut.kind, "any_wait": True}))
        (OUT / f"{name}.expected.jsonl").write_text("\n".join(lines) + "\n")
        records[f"{name}.raw"] = snap
        print(f"{name}: {end} bytes, {'waits' if cut.waits else 'does not wait'}"
              f" (kernel: {facts_from_record(snap).waiting or '-'})")


def main(argv: list[str]) -> int:
    OUT.mkdir(exist_ok=True)
    index = OUT / "kernel.json"
    records: dict[str, object] = json.loads(index.read_text()) if index.exists() else {}
    chosen = [s for s in SCENARIOS if not argv or s.name in argv]
    failed = []
    for sc in chosen:
        for old in OUT.glob(f"{sc.name}.k*"):
            old.unlink()
            records.pop(old.name, None)
        try:
            write(sc, *capture(sc), records)
        except (TimeoutError, OSError) as e:
            failed.append(sc.name)
            print(f"{sc.name}: FAILED {e}", file=sys.stderr)
    index.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

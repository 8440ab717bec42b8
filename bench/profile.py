"""Where the hub's time goes: py-spy on every hub process during a scenario phase.

:class:`HubProfile` starts one ``py-spy record --format raw`` per hub process (pids we
learnt from the hub we started), stops them by pid with SIGINT when the phase ends (py-spy
then writes its collapsed stacks), and :func:`summarise` turns the stacks into the top
functions by inclusive and by own samples per process. py-spy is optional: without it
(``pip install py-spy``) or without ptrace rights the profile is skipped and says so.
"""

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _label(path: Path) -> str:
    """Which hub process a profile is of, from its stacks (spawned children's command
    lines all look alike)."""
    text = path.read_text(errors="replace")
    for entry, label in (("control_main", "control"), ("shard_main", "shard")):
        if entry in text:
            return label
    return "supervisor"


class HubProfile:
    def __init__(self, out_dir: Path, pids: list[int], rate_hz: int = 100) -> None:
        self.out_dir = out_dir
        self.pids = pids
        self.rate_hz = rate_hz
        self.procs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.error: str | None = None

    def __enter__(self) -> "HubProfile":
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            self.error = "py-spy is not installed"
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid in self.pids:
            label = str(pid)
            out = self.out_dir / f"{pid}.txt"
            self.procs.append((label, out, subprocess.Popen(
                [exe, "record", "--format", "raw", "--rate", str(self.rate_hz), "--nonblocking",
                 "--pid", str(pid), "--output", str(out), "--duration", "600"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.out_dir / f"{label}.log", "ab"))))
        return self

    def __exit__(self, *exc: object) -> None:
        for _, _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, _, proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def summary(self, top: int = 12) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {f"{_label(out)}-{label}": summarise(out, top) for label, out, _ in self.procs
                if out.exists()}


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def summarise(path: Path, top: int) -> dict[str, Any]:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = (lambda c: round(c / total * 100, 1)) if total else (lambda c: 0.0)
    return {"samples": total,
            "own_pct": {f: pct(c) for f, c in own.most_common(top)},
            "inclusive_pct": {f: pct(c) for f, c in incl.most_common(top * 2)
                              if not f.startswith(("<module>", "run (", "_run_once",
                                                   "run_forever", "run_until_complete"))}}

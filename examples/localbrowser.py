"""A real browserd on a Unix socket in a temporary directory, for tests, demo and bench.

:func:`chromium_or_skip` is the one place that decides what a missing Chromium means:
skip on a laptop, fail when ``CI`` is set (the brief: Chromium tests never skip in CI).
"""

import os
import subprocess
import time
from pathlib import Path

from examples.localfleet import FleetError, binary, log_events, stop_process, tail

CHROMIUM = Path("/usr/bin/chromium")


def chromium_missing_reason() -> str | None:
    if CHROMIUM.exists():
        return None
    return f"{CHROMIUM} is missing (make browserd-setup installs Debian's chromium)"


class LocalBrowserd:
    def __init__(self, base_dir: Path, *flags: str) -> None:
        self.base = base_dir
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket = self.base / "browserd.sock"
        self.state_dir = self.base / "state"
        self.log_path = self.base / "browserd.log"
        self.flags = list(flags)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        return [*binary("browserd"), "--socket", str(self.socket), "--state-dir",
                str(self.state_dir), *self.flags]

    def start(self, timeout_s: float = 60.0) -> "LocalBrowserd":
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env={**os.environ})
        deadline = time.monotonic() + timeout_s
        while len(log_events(self.log_path, "browserd_ready")) < self.starts:
            if self.proc.poll() is not None:
                raise FleetError(f"browserd exited {self.proc.returncode}:\n"
                                 f"{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise FleetError(f"browserd not ready in {timeout_s:g}s:\n{tail(self.log_path)}")
            time.sleep(0.05)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

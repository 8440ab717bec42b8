"""Traps of issue 13 already fixed, each held by a test here: one write per log line (no
``…}{…`` when processes share stderr), readable logs on a terminal and JSON elsewhere,
``--version`` on every program."""

import json
import os
import pty
import subprocess
import sys

import pytest

LOGGER = """
import sys
from cortex import logs
logs.configure("t", json=logs.wants_json(sys.argv[1]), worker=sys.argv[2])
log = logs.get()
for i in range(int(sys.argv[3])):
    log.info("line", i=i, pad="x" * 300)
"""


def test_processes_sharing_one_stderr_never_interleave_inside_a_line():
    r, w = os.pipe()
    procs = [subprocess.Popen([sys.executable, "-c", LOGGER, "json", str(n), "3000"],
                              stderr=w, stdout=subprocess.DEVNULL) for n in range(4)]
    os.close(w)
    with os.fdopen(r, "rb") as f:
        lines = f.read().splitlines()
    for p in procs:
        assert p.wait(timeout=120) == 0
    events = [json.loads(line) for line in lines]  # a `…}{…` line would not parse
    assert len(events) == 4 * 3000
    assert {e["worker"] for e in events} == {"0", "1", "2", "3"}


def test_logs_are_readable_on_a_terminal_and_json_elsewhere():
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", LOGGER, "auto", "tty", "1"], stderr=slave,
                            stdout=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = out.decode()
    assert "line" in text and not text.lstrip().startswith("{")
    piped = subprocess.run([sys.executable, "-c", LOGGER, "auto", "pipe", "1"],
                           capture_output=True, timeout=60)
    assert json.loads(piped.stderr)["event"] == "line"


@pytest.mark.parametrize("main", ["cortexctl.cli:main", "cortexd.cli:main",
                                  "nodeagent.cli:run", "browserd.cli:main"])
def test_every_program_has_version(main):
    module, func = main.split(":")
    done = subprocess.run([sys.executable, "-c", f"import sys; from {module} import {func}; "
                           f"sys.exit({func}(['--version']))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] in ("cortexctl", "cortexd", "nodeagent", "browserd")

"""Test 1: a task end to end through cortexctl, and 1 MiB of output arriving byte-exact."""

import base64
import hashlib
import os
import re

import pytest

pytestmark = pytest.mark.system


def test_echo_through_cortexctl(ctl, nodes):
    result = ctl("submit", "--follow", "--", "echo hello from cortex")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello from cortex\r\n"  # the PTY turns \n into \r\n
    match = re.search(rb"task (t-[0-9a-f]{20}) submitted", result.stderr)
    assert match, result.stderr
    task_id = match.group(1).decode()

    task = ctl.task(task_id)
    assert (task["state"], task["attempt"], task["exit_code"]) == ("SUCCEEDED", 1, 0)
    assert task["output_bytes"] == len(result.stdout)
    assert task["node_id"] in {n.node_id for n in nodes}
    assert task_id in {t["task_id"] for t in ctl.json("tasks")}
    assert ctl.watch(task_id) == (result.stdout, 0)  # watching a finished task replays it


@pytest.mark.timeout(240)
def test_one_mib_of_output_arrives_byte_exact(ctl, nodes, tmp_path):
    # Random bytes as base64 text in 76-column lines, cut to exactly 1 MiB.
    content = base64.encodebytes(os.urandom(800 * 1024))[: 1024 * 1024]
    payload = tmp_path / "payload.b64"
    payload.write_bytes(content)
    expected = content.replace(b"\n", b"\r\n")  # the PTY's ONLCR

    task_id = ctl.submit(f"cat {payload}")
    out, status = ctl.watch(task_id, timeout_s=200)

    assert status == 0
    assert len(out) == len(expected)
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(expected).hexdigest()
    task = ctl.task(task_id)
    assert task["state"] == "SUCCEEDED" and task["output_bytes"] == len(expected)

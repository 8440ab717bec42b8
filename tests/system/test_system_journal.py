"""The journal through the real hub and cortexctl: head, omitted marker, tail."""

import base64

import pytest

pytestmark = pytest.mark.system


def test_journal_of_a_long_output(ctl, nodes):
    # 2,000 numbered lines of 48 digits and the PTY's \r\n: 100,000 bytes.
    task_id = ctl.submit("seq -f '%048g' 1 2000")
    out, status = ctl.watch(task_id)
    assert status == 0 and len(out) == 100_000

    j = ctl.json("journal", task_id)[0]
    head, tail = base64.b64decode(j["head_b64"]), base64.b64decode(j["tail_b64"])
    assert (j["total_bytes"], j["omitted_bytes"]) == (100_000, 60_000)
    assert (j["omitted_from"], j["omitted_to"]) == (10_000, 70_000)
    assert head == out[:10_000] and tail == out[70_000:]

    text = ctl.ok("journal", task_id)
    marker = "[… 60000 bytes omitted (offsets 10000–70000) …]\n".encode()
    assert text == out[:10_000] + marker + out[70_000:]


def test_journal_of_a_short_output_has_no_marker(ctl, nodes):
    task_id = ctl.submit("echo short")
    assert ctl.watch(task_id) == (b"short\r\n", 0)
    assert ctl.ok("journal", task_id) == b"short\r\n"

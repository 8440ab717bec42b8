"""SubmitMany and Run through the real hub, nodes and cortexctl (issue 9).

- ``submit --from FILE``: every line gets its own outcome (submitted, deduplicated,
  refused with the reason) and the summary counts them; the tasks run.
- A SubmitMany over the limit is refused whole, with the limit in the message.
- ``run -- CMD``: the journal on stdout and the task's status; a task that outlives
  ``--wait`` goes on (or is cancelled with ``--cancel-on-drop``).
"""

import json

import grpc
import pytest

from cortex.v1 import control_pb2 as pb
from cortexd.control.intake import MAX_SUBMIT_MANY
from cortexd.journal import HEAD_BYTES, TAIL_BYTES
from examples.localfleet import wait_until
from tests.hubkit import admin_client

pytestmark = pytest.mark.system


@pytest.mark.timeout(120)
def test_submit_from_file_reports_each_line(fleet, hub, ctl, tmp_path):
    fleet.nodes(hub, 2)
    lines = [json.dumps({"command": f"echo line-{i}", "idempotency_key": f"k-{i}"})
             for i in range(20)]
    lines += [json.dumps({"command": "echo line-3", "idempotency_key": "k-3"})]  # dedup
    lines += ["{not json", json.dumps({"command": "  "}), json.dumps({"comand": "x"}),
              "", json.dumps({"command": "echo other", "idempotency_key": "k-4"})]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = ctl("submit", "--from", str(path), "--batch", "7", "--json")
    assert result.returncode == 1, result.stderr
    rows = [json.loads(x) for x in result.stdout.decode().splitlines()]
    by_line = {r["line"]: r for r in rows}
    assert sorted(by_line) == [n for n in range(1, 27) if n != 25]  # the blank line is skipped
    ids = [by_line[n]["task_id"] for n in range(1, 21)]
    assert len(set(ids)) == 20 and not any(by_line[n]["deduplicated"] for n in range(1, 21))
    assert by_line[21] == {"line": 21, "task_id": ids[3], "deduplicated": True}
    assert by_line[22]["error"]["code"] == "INVALID_ARGUMENT"
    assert by_line[23]["error"] == {"code": "INVALID_ARGUMENT",
                                    "message": "command is required"}
    assert "comand" in by_line[24]["error"]["message"]
    assert by_line[26]["error"]["code"] == "ALREADY_EXISTS"
    summary = result.stderr.decode()
    assert "submitted 20, deduplicated 1, refused 4" in summary, summary
    assert "command is required" in summary

    for i, task_id in enumerate(ids):
        out, status = ctl.watch(task_id)
        assert (status, out) == (0, f"line-{i}\r\n".encode())


@pytest.mark.timeout(60)
def test_submit_many_over_the_limit_is_refused_whole(fleet, hub):
    with admin_client(hub, timeout_s=30) as c:
        requests = [pb.SubmitRequest(command="true")] * (MAX_SUBMIT_MANY + 1)
        with pytest.raises(grpc.RpcError) as raised:
            c._stub.SubmitMany(pb.SubmitManyRequest(tasks=requests), timeout=30,
                               metadata=c._metadata)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"at most {MAX_SUBMIT_MANY} tasks" in raised.value.details()
        assert c.list_tasks() == []  # nothing of it was submitted


@pytest.mark.timeout(120)
def test_run_returns_the_journal_and_the_status(fleet, hub, ctl):
    fleet.nodes(hub, 1)
    result = ctl("run", "--", "echo hello; echo world; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"hello\r\nworld\r\n"

    result = ctl("run", "--json", "--", "head -c 100000 /dev/zero | tr '\\0' a")
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["task"]["state"] == "SUCCEEDED"
    assert obj["journal"]["total_bytes"] == 100_000
    assert obj["journal"]["omitted_bytes"] == 100_000 - HEAD_BYTES - TAIL_BYTES


@pytest.mark.timeout(120)
def test_run_past_its_wait_goes_on_or_is_cancelled_when_asked(fleet, hub, ctl):
    fleet.nodes(hub, 1)
    result = ctl("run", "--wait", "1.5", "--", "sleep 3; echo done")
    assert result.returncode == 125
    message = result.stderr.decode()
    assert "goes on" in message, message
    task_id = next(w for w in message.replace("(", " ").replace(")", " ").split()
                   if w.startswith("t-"))
    out, status = ctl.watch(task_id)
    assert (status, out) == (0, b"done\r\n")

    result = ctl("run", "--wait", "1.5", "--cancel-on-drop", "--", "sleep 30")
    assert result.returncode == 125
    [task] = [t for t in ctl.json("tasks") if t["command"] == "sleep 30"]
    ended = wait_until(lambda: (t := ctl.task(task["task_id"]))["state"] == "CANCELLED" and t,
                       30, "the dropped Run's task to be cancelled")
    assert ended["state"] == "CANCELLED"

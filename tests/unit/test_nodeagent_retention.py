"""Spool retention (nodeagent/retention.py) and answering log reads (spoolreads.py)."""

from pathlib import Path

from cortex.v1 import node_pb2
from nodeagent.retention import RetainedSpool, RetainedSpools
from nodeagent.spool import SpoolMeta, TaskSpool
from nodeagent.spoolreads import CHUNK_BYTES, MAX_READ_BYTES, answer


def spool(name: str, size: int, finished_at: float) -> RetainedSpool:
    return RetainedSpool((name, 1), Path("/nonexistent") / name, size, finished_at)


def test_age_limit_prunes_the_old_ones_only():
    r = RetainedSpools(max_age_s=100, max_bytes=10**9)
    for i, name in enumerate("abc"):
        r.add(spool(name, 10, finished_at=1000 + 50 * i))
    assert [s.key[0] for s in r.due(now=1160)] == ["a", "b"]  # 160 and 110 s old
    assert [s.key[0] for s in r] == ["c"] and r.total_bytes == 10


def test_size_limit_prunes_oldest_finished_first_until_under():
    r = RetainedSpools(max_age_s=10**9, max_bytes=250)
    r.add(spool("new", 100, finished_at=3))
    r.add(spool("old", 100, finished_at=1))
    r.add(spool("mid", 100, finished_at=2))
    assert [s.key[0] for s in r.due(now=4)] == ["old"]
    assert r.total_bytes == 200 and r.due(now=4) == []
    r.max_bytes = 0
    assert [s.key[0] for s in r.due(now=4)] == ["mid", "new"]


def test_readding_a_spool_does_not_count_it_twice():
    r = RetainedSpools(max_age_s=10, max_bytes=100)
    r.add(spool("a", 60, 1))
    r.add(spool("a", 60, 1))
    assert r.total_bytes == 60 and r.due(now=2) == []


def make_spool(tmp_path: Path, data: bytes) -> TaskSpool:
    s = TaskSpool.create(tmp_path, SpoolMeta(task_id="t-00000000000000000001", attempt=1,
                                             command="x", started_at=0.0))
    s.append(data)
    return s


def request(offset: int, length: int) -> node_pb2.LogRequest:
    return node_pb2.LogRequest(request_id=7, task_id="t-00000000000000000001", attempt=1,
                               offset=offset, length=length)


def test_answer_from_a_live_and_a_retained_spool(tmp_path: Path):
    data = bytes(range(256)) * 8192  # 2 MiB
    live = make_spool(tmp_path, data)
    frames = [f.log_chunk for f in answer(request(100, 0), live, None)]
    assert len(frames) == MAX_READ_BYTES // CHUNK_BYTES  # one request: at most 1 MiB
    assert b"".join(f.data for f in frames) == data[100:100 + MAX_READ_BYTES]
    assert [f.eof for f in frames] == [False] * (len(frames) - 1) + [True]
    assert {f.request_id for f in frames} == {7} and frames[0].spooled_bytes == len(data)
    live.close()
    kept = RetainedSpool(("t-00000000000000000001", 1), live.path, len(data), 0.0)
    frames = [f.log_chunk for f in answer(request(len(data) - 10, 100), None, kept)]
    assert [(f.offset, f.data, f.eof) for f in frames] == [(len(data) - 10, data[-10:], True)]


def test_answer_past_the_end_and_for_an_unknown_task(tmp_path: Path):
    live = make_spool(tmp_path, b"abc")
    [past] = answer(request(10, 5), live, None)
    assert past.log_chunk.eof and not past.log_chunk.data and not past.log_chunk.error
    [unknown] = answer(request(0, 0), None, None)
    assert unknown.log_chunk.eof and "pruned" in unknown.log_chunk.error
    live.close()

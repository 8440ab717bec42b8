"""The live stream's rate limit (nodeagent/ratelimit.py, pacing.py) with a fake clock."""

import asyncio

import pytest

from cortex.v1 import node_pb2
from nodeagent.pacing import MIN_SEND_BYTES, StreamPacer
from nodeagent.ratelimit import TokenBucket
from nodeagent.tasktable import SendFinished, SendOutput, TaskTable

KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_refills_at_rate_and_caps_at_burst():
    b = TokenBucket.full(15_000, 65_536, now=0.0)
    assert b.available(0.0) == 65_536
    b.take(65_536, 0.0)
    assert b.available(0.0) == 0
    assert b.available(1.0) == 15_000
    assert b.wait_s(30_000, 1.0) == pytest.approx(1.0)
    assert b.available(100.0) == 65_536  # never above the burst
    b.take(10, 50.0)  # the clock going back adds nothing
    assert b.available(40.0) == 65_526


def test_unlimited_bucket():
    b = TokenBucket.full(0, 1, now=0.0)
    assert b.available(0.0) >= 1 << 40 and b.wait_s(10**9, 0.0) == 0.0
    with pytest.raises(ValueError):
        TokenBucket.full(10, 0, now=0.0)


def table_and_pacer(clock: Clock, rate: int = 15_000, burst: int = 64 * KIB,
                    catchup: int = 1 << 20) -> tuple[TaskTable, StreamPacer]:
    table = TaskTable(window_bytes=1 << 20, max_frame_bytes=64 * KIB)
    pacer = StreamPacer(rate_bytes_s=rate, burst_bytes=burst, catchup_rate_bytes_s=catchup,
                        catchup_burst_bytes=1 << 20, wake=asyncio.Event(), clock=clock)
    return table, pacer


def drain(table: TaskTable, pacer: StreamPacer) -> dict[str, int]:
    """Send everything allowed now; bytes per task."""
    sent: dict[str, int] = {}
    while (step := table.next_send(pacer.budget)) is not None:
        if isinstance(step, SendOutput):
            pacer.sent(step.key, step.length)
            sent[step.key[0]] = sent.get(step.key[0], 0) + step.length
    return sent


def test_noisy_task_is_capped_and_a_quiet_task_still_goes_at_once():
    clock = Clock()
    table, pacer = table_and_pacer(clock)
    table.admit("noisy", 1)
    table.output_appended(("noisy", 1), 10 << 20)  # 10 MiB spooled
    assert drain(table, pacer) == {"noisy": 64 * KIB}  # the burst
    table.admit("quiet", 1)
    table.output_appended(("quiet", 1), 12)
    assert drain(table, pacer) == {"quiet": 12}  # not behind the noisy one
    total = 0
    for _ in range(100):  # 10 s in steps of 0.1 s
        clock.now += 0.1
        total += drain(table, pacer).get("noisy", 0)
    assert 140_000 <= total <= 150_000 + MIN_SEND_BYTES  # ~15,000 B/s
    entry = table.get(("noisy", 1))
    assert entry is not None
    frame = pacer.progress([entry])[0].progress
    assert frame.held_back_bytes == (10 << 20) - 64 * KIB - total
    assert pacer.progress([entry]) == []  # unchanged: not reported again


def test_no_dribbles_a_throttled_task_waits_for_min_send_bytes():
    clock = Clock()
    table, pacer = table_and_pacer(clock, rate=1000, burst=MIN_SEND_BYTES)
    table.admit("t", 1)
    table.output_appended(("t", 1), 100_000)
    assert drain(table, pacer) == {"t": MIN_SEND_BYTES}
    clock.now += 1.0  # 1000 tokens: fewer than MIN_SEND_BYTES
    assert drain(table, pacer) == {}
    clock.now += 3.1
    assert drain(table, pacer) == {"t": MIN_SEND_BYTES}


def test_after_exit_the_rest_drains_at_the_catchup_rate_then_finished():
    clock = Clock()
    table, pacer = table_and_pacer(clock)
    key = ("t", 1)
    table.admit(*key)
    table.output_appended(key, 3 << 20)
    drain(table, pacer)
    table.finished(key, exit_code=0, kind=node_pb2.FINISH_KIND_EXITED, reason="")
    steps = []
    for _ in range(40):
        clock.now += 0.1
        while (step := table.next_send(pacer.budget)) is not None:
            if isinstance(step, SendOutput):
                pacer.sent(step.key, step.length)
                table.ack(key, step.offset + step.length)
            steps.append(step)
        if steps and isinstance(steps[-1], SendFinished):
            break
    assert isinstance(steps[-1], SendFinished)
    assert clock.now - 100.0 < 3.5  # 3 MiB at 1 MiB/s with a 1 MiB burst: ~2 s, not 200 s

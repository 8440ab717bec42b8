"""Attach admission (cortexd/shards/admission.py): the token bucket and the retry schedule;
an attach that gave up before its Welcome (cortexd/shards/session.py)."""

import asyncio
import random

import pytest

from cortexd.config import load
from cortexd.shards.admission import REASON_PENDING, REASON_RATE, AttachAdmission
from cortexd.shards.session import SessionTable


def bucket(rate: float = 100.0, pending: int = 0, now: float = 0.0) -> AttachAdmission:
    return AttachAdmission.for_shard(rate, pending, 1, now, rng=random.Random(7))


def test_a_host_budget_is_split_over_the_shards() -> None:
    a = AttachAdmission.for_shard(500, 1_000, 4, 0.0)
    assert (a.rate_per_s, a.burst, a.max_pending, a.tokens) == (125.0, 125.0, 250, 125.0)
    b = AttachAdmission.for_shard(3, 5, 4, 0.0)  # tiny budgets never round to "nothing"
    assert b.burst == 1.0 and b.max_pending == 2


def test_burst_then_the_rate() -> None:
    a = bucket(rate=100.0)
    results = [a.decide(0.0, 0) for _ in range(150)]
    assert sum(r is None for r in results) == 100  # one second's worth at once
    assert all(r is not None and r.reason == REASON_RATE for r in results[100:])
    # With the burst spent, about `rate` a second get in however many try.
    admitted = sum(a.decide((i + 1) / 1000, 0) is None for i in range(1000))
    assert 99 <= admitted <= 101
    assert (a.admitted, a.refused) == (100 + admitted, 50 + 1000 - admitted)


def test_the_clock_going_back_adds_nothing() -> None:
    a = bucket(rate=10.0)
    for _ in range(10):
        assert a.decide(5.0, 0) is None
    assert a.decide(4.0, 0) is not None


def test_retry_after_grows_with_the_backlog_and_spreads_at_the_rate() -> None:
    a = bucket(rate=500.0)
    for _ in range(500):
        assert a.decide(0.0, 0) is None
    waits = [a.decide(0.0, 0) for _ in range(9_500)]
    ms = [w.retry_after_ms for w in waits if w is not None]
    assert len(ms) == 9_500
    # The k-th refused node is told about k / rate (late jitter up to 10 %, floor 0.2 s).
    assert 200 <= ms[0] <= 220
    assert 19_000 <= ms[-1] <= 20_900
    assert ms[4_999] == pytest.approx(10_000, rel=0.11)
    # Spread, not a cliff: every second of the 19 s window gets some of them.
    assert len({m // 1000 for m in ms}) >= 19


def test_the_schedule_drains_as_time_passes() -> None:
    a = bucket(rate=100.0)
    for _ in range(100 + 1_000):
        a.decide(0.0, 0)
    assert a.horizon == pytest.approx(10.0)
    # 30 s later the backlog is gone: a refusal is short again.
    for _ in range(100):
        a.decide(30.0, 0)
    r = a.decide(30.0, 0)
    assert r is not None and r.retry_after_ms <= 220


def test_retry_after_is_capped() -> None:
    a = bucket(rate=1.0)
    a.decide(0.0, 0)
    last = [a.decide(0.0, 0) for _ in range(500)][-1]
    assert last is not None and last.retry_after_ms <= 60_000


def test_too_many_in_flight_is_refused_even_with_tokens() -> None:
    a = bucket(rate=1_000.0, pending=10)
    assert a.decide(0.0, 9) is None
    r = a.decide(0.0, 10)
    assert r is not None and r.reason == REASON_PENDING and r.retry_after_ms >= 200
    assert a.tokens == 999.0  # a refusal takes no token


def test_zero_means_unlimited() -> None:
    a = AttachAdmission.for_shard(0, 0, 2, 0.0)
    assert all(a.decide(0.0, 10**6) is None for _ in range(100_000))


def test_settings_defaults_and_validation(tmp_path) -> None:
    s = load(None, {"state_dir": tmp_path, "insecure_loopback": True}, environ={})
    assert (s.admit_per_s, s.max_pending_attaches) == (1_000, 1_000)
    s = load(None, {"state_dir": tmp_path, "insecure_loopback": True},
             environ={"CORTEX_ADMIT_PER_S": "40", "CORTEX_MAX_PENDING_ATTACHES": "0"})
    assert (s.admit_per_s, s.max_pending_attaches) == (40, 0)
    with pytest.raises(Exception, match="admit_per_s must be between"):
        load(None, {"state_dir": tmp_path, "insecure_loopback": True, "admit_per_s": -1},
             environ={})


def test_a_welcome_nobody_waits_for_any_more_is_reported() -> None:
    # The attach gave up (RetryLater after attach_timeout_s, or the node left) before
    # control's Welcome came: the shard must tell control (a DETACH), not keep a session
    # nobody serves.
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table = SessionTable()
        late = table.begin("n1", loop)
        table.end(late)
        assert table.welcomed(late.conn_id, 3, b"w3", 5.0) is False
        assert table.route("n1", 3) is None and not table.active
        fresh = table.begin("n1", loop)
        assert table.welcomed(fresh.conn_id, 4, b"w4", 5.0) is True
        assert table.route("n1", 4) is fresh

    asyncio.run(scenario())


def test_when_control_is_behind_the_schedule_follows_its_welcome_rate() -> None:
    a = bucket(rate=500.0, pending=10)
    # Control answers 50 attaches a second (far below the 500/s budget).
    for i in range(101):
        a.welcomed(i / 50)
    assert a.welcomed_per_s == pytest.approx(50, rel=0.05)
    waits = [a.decide(2.0, 10) for _ in range(100)]  # in-flight bound reached
    ms = [w.retry_after_ms for w in waits if w is not None]
    assert len(ms) == 100 and all(w.reason == REASON_PENDING for w in waits if w)
    # Slots 1/50 s apart: the 100th refused comes back after ~2 s, not ~0.2 s.
    assert 2_000 <= ms[-1] <= 2_200
    # A refusal by the rate itself still uses the rate's slots.
    b = bucket(rate=500.0)
    for i in range(101):
        b.welcomed(i / 50)
    for _ in range(500):
        b.decide(2.0, 0)
    assert [b.decide(2.0, 0) for _ in range(100)][-1].retry_after_ms <= 220


def test_a_stall_does_not_push_every_answer_to_the_cap() -> None:
    a = bucket(rate=500.0, pending=10)
    a.welcomed(0.0)
    a.welcomed(30.0)  # one Welcome in 30 s: believed as 5/s at worst
    assert a.welcomed_per_s == pytest.approx(1 / 30)
    first = a.decide(30.0, 10)
    assert first is not None and first.retry_after_ms <= 220


def test_no_answer_outlasts_half_the_node_grace() -> None:
    # A node kept out past node_grace_s would find its running tasks LOST.
    a = AttachAdmission.for_shard(10, 0, 1, 0.0, rng=random.Random(1), node_grace_s=20.0)
    assert a.max_retry_s == 10.0
    waits = [a.decide(0.0, 0) for _ in range(1_000)]
    assert max(w.retry_after_ms for w in waits if w is not None) <= 10_000
    assert AttachAdmission.for_shard(10, 0, 1, 0.0, node_grace_s=600.0).max_retry_s == 60.0
    assert AttachAdmission.for_shard(10, 0, 1, 0.0, node_grace_s=0.1).max_retry_s == 0.2

"""Several hub addresses: parsing, and the failover policy (nodeagent/hubs.py)."""

import random
from collections import Counter

import pytest

from cortex.errors import ConfigError
from nodeagent.backoff import Backoff
from nodeagent.config import parse
from nodeagent.hubs import HubRotation, Outcome, parse_hub_list

DEAD = Outcome()  # dial failed / UNAVAILABLE / closed before Welcome
A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7003"


def rotation(addresses: list[str], seed: int = 1, base_s: float = 1.0,
             cap_s: float = 8.0) -> HubRotation:
    return HubRotation(addresses, Backoff(base_s, cap_s, 10.0, rng=random.Random(seed)),
                       rng=random.Random(seed))


def test_parse_hub_list_accepts_one_or_several() -> None:
    assert parse_hub_list(A) == (A,)
    assert parse_hub_list(f"{A}, {B},{C}") == (A, B, C)


@pytest.mark.parametrize("text, message", [
    ("", "no empty entry"),
    (f"{A},", "no empty entry"),
    (f"{A},,{B}", "no empty entry"),
    (f"{A},localhost", "must be HOST:PORT"),
    (f"{A},host:x", "must be HOST:PORT"),
    (f"{A},host:0", "port must be 1..65535"),
    (f"{A},host:70000", "port must be 1..65535"),
    (f"{A},{A}", "twice"),
])
def test_parse_hub_list_refuses(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_hub_list(text)


def test_flag_and_env_take_a_list_and_check_plaintext_per_address(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name, value in {"CORTEX_NODE_ID": "n1", "CORTEX_NODE_TOKEN_FILE": str(tmp_path / "t"),
                        "CORTEX_HUB_KEY": str(tmp_path / "k"),
                        "CORTEX_STATE_DIR": str(tmp_path / "s")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CORTEX_NODE_PORT", f"{A},{B}")
    config, _ = parse(["--insecure-loopback"])
    assert config.hub_addresses == (A, B)
    config, _ = parse(["--insecure-loopback", "--node-port", f"localhost:1, {C}"])
    assert config.hub_addresses == ("localhost:1", C)
    with pytest.raises(ConfigError, match="10.0.0.5:7000: plaintext is allowed only on"):
        parse(["--insecure-loopback", "--node-port", f"{A},10.0.0.5:7000"])


def test_each_node_has_its_own_order_so_a_fleet_spreads() -> None:
    addresses = [A, B, C]
    firsts = Counter(rotation(addresses, seed=s).current for s in range(3000))
    assert set(firsts) == set(addresses)
    assert all(800 < n < 1200 for n in firsts.values()), firsts
    # When A dies, its nodes do not all fail over to the same next hub.
    after_a = Counter()
    for s in range(3000):
        r = rotation(addresses, seed=s)
        while r.current != A:
            r.next_delay(Outcome(welcomed_for_s=100.0))
        r.next_delay(Outcome(welcomed_for_s=100.0))
        after_a[r.current] += 1
    assert set(after_a) == {B, C} and min(after_a.values()) > 1200, after_a


def test_dead_addresses_are_skipped_at_once_and_backoff_grows_per_rotation() -> None:
    r = rotation([A, B, C], base_s=1.0, cap_s=64.0)
    seen, delays = [], []
    for _ in range(9):
        seen.append(r.current)
        delays.append(r.next_delay(DEAD))
    # Round robin over all three, in the node's own order, again and again.
    assert seen[:3] == seen[3:6] == seen[6:9] and set(seen[:3]) == {A, B, C}
    # Within a rotation: immediately; after each full rotation: the jittered backoff.
    assert [d == 0 for d in delays] == [True, True, False] * 3
    assert r.backoff.failures == 3  # counted per rotation, not per address


def test_a_single_address_backs_off_on_every_failure_as_before() -> None:
    r = rotation([A], seed=3, base_s=1.0, cap_s=64.0)
    delays = [r.next_delay(DEAD) for _ in range(6)]
    assert r.current == A and all(d > 0 for d in delays)
    assert r.backoff.failures == 6
    assert max(delays[3:]) > 1.0  # the window doubled (uniform in [0, 2**n])


def test_after_a_welcomed_session_the_next_hub_is_not_dialled_at_once() -> None:
    # Many nodes lose the same hub: each waits a jittered delay before its next hub.
    delays = []
    for s in range(500):
        r = rotation([A, B], seed=s, base_s=1.0)
        first = r.current
        delays.append(r.next_delay(Outcome(welcomed_for_s=3600.0)))
        assert r.current != first
    assert all(0 <= d <= 1.0 for d in delays)
    assert min(delays) < 0.1 and max(delays) > 0.9  # spread over the window


def test_a_short_session_counts_as_a_failure() -> None:
    r = rotation([A, B], base_s=1.0)
    r.next_delay(Outcome(welcomed_for_s=0.5))
    r.next_delay(Outcome(welcomed_for_s=0.5))
    assert r.backoff.failures == 2
    r.next_delay(Outcome(welcomed_for_s=30.0))
    assert r.backoff.failures == 0


def test_retry_later_stays_with_the_hub_and_waits_what_it_said() -> None:
    r = rotation([A, B, C])
    first = r.current
    delay = r.next_delay(Outcome(retry_after_s=5.0))
    assert r.current == first and 5.0 <= delay <= 6.0
    # A dead address after that is still skipped at once: the rotation count restarted.
    assert r.next_delay(DEAD) == 0.0 and r.current != first


def test_bad_credentials_move_on_and_a_refused_rotation_waits_near_the_cap() -> None:
    r = rotation([A, B], base_s=1.0, cap_s=8.0)
    first = r.current
    # Another hub may know the token: it is tried at once.
    assert r.next_delay(Outcome(auth_failed=True)) == 0.0 and r.current != first
    # Every hub refused or failed: wait near the cap, retrying sooner would not help.
    assert 7.2 <= r.next_delay(DEAD) <= 8.0 and r.current == first
    # A rotation without a refusal is back to the ordinary backoff.
    assert r.next_delay(DEAD) == 0.0
    assert r.next_delay(DEAD) <= 2.0 and r.backoff.failures == 2  # uniform(0, base * 2)
    # One address: every refusal waits near the cap, as with a single hub before.
    one = rotation([A], cap_s=8.0)
    assert all(7.2 <= one.next_delay(Outcome(auth_failed=True)) <= 8.0 for _ in range(3))

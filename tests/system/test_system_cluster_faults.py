"""Fault tests of a two-host cluster on real PostgreSQL and Redis, with simulated nodes
(bench/fleet.py: the real node protocol, each node keeping its own record of what it
ran). Each test prints its figures, then checks the recorded history
(cortexd/history.py): every accepted task ends in exactly one terminal state, no
attempt wrote after it was superseded."""

import json
import os
import signal
import time

import pytest

from examples.cluster import (
    SimFleet,
    Submitter,
    executed_per_task,
    history,
    start_cluster,
    store_tasks,
    wait_for,
)
from examples.localfleet import Ctl, LocalHub
from tests.pg import ServerReturn, pg_schema, server_down
from tests.rediskit import client as redis_client
from tests.rediskit import redis_down, redis_prefix

pytestmark = pytest.mark.system

FAST = ("--lease-ttl-ms", "1500", "--queue-scan-s", "2")


def finish_and_check(url: str, fleets: list[SimFleet], submitter: Submitter,
                     what: str) -> dict[str, object]:
    """Stop submitting, let every task end, stop the fleets; check nothing was lost
    or run twice, against the store and the nodes' own records."""
    submitter.stop()

    def all_ended() -> bool:
        return all(s in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST")
                   for s, _ in store_tasks(url).values())

    wait_for(all_ended, 60, f"every task to end after {what}", interval_s=0.5)
    reports = [f.stop() for f in fleets]
    tasks = store_tasks(url)
    runs = executed_per_task(reports)
    states: dict[str, int] = {}
    for state, _ in tasks.values():
        states[state] = states.get(state, 0) + 1
    twice = sorted(t for t, n in runs.items() if n > 1)
    not_run = sorted(t for t, (s, _) in tasks.items() if s == "SUCCEEDED" and t not in runs)
    report = history(url)
    figures = {"tasks": len(tasks), "states": states, "submit_failed": submitter.failed,
               "kept_by_verdict": sum(r["kept_by_verdict"] for r in reports),
               "killed_by_verdict": sum(r["killed_by_verdict"] for r in reports),
               "executed_twice": len(twice), "succeeded_not_run": len(not_run),
               "history": {k: report[k] for k in ("transitions", "accepted", "refused")},
               "violations": len(report["violations"])}
    print(f"\n{what}: {figures}")
    assert set(submitter.accepted) <= set(tasks), "an acknowledged submit is not in the store"
    assert states.get("SUCCEEDED") == len(tasks), f"not every task succeeded: {states}"
    assert not twice, f"executed twice: {twice[:5]}"
    assert not not_run, f"SUCCEEDED but no node ran it: {not_run[:5]}"
    assert report["exit"] == 0 and not report["violations"], report["violations"][:5]
    return figures


def two_hubs_two_fleets(fleet, url: str, coordination: str, per_fleet: int,
                        task_s: float) -> tuple[LocalHub, LocalHub, list[SimFleet]]:
    """Hubs A and B, and two fleets of simulated nodes listing both hubs (fa: A first,
    fb: B first; each node shuffles its list, so both hubs get about half)."""
    fa = SimFleet(fleet.base, "fa", [], per_fleet, task_s=task_s)
    fb = SimFleet(fleet.base, "fb", [], per_fleet, task_s=task_s)
    for f in (fa, fb):
        f.enroll(fleet.base / "hub0" / "hub" / "tokens")
    a, b = start_cluster(fleet, url, coordination, extra=FAST)
    fa.hubs, fb.hubs = [a, b], [b, a]
    return a, b, [fa.start(), fb.start()]


def test_kill_9_hub_b_loses_nothing_and_runs_nothing_twice(fleet):
    with pg_schema() as url, redis_prefix() as (coordination, _):
        # 200 simulated nodes, half preferring A, half B; both hubs take submissions.
        # Tasks take 0.5 s, so that B's nodes hold some when B dies: they re-attach to A
        # with them (Hello), A keeps them (KEEP verdict) and takes their results.
        a, b, fleets = two_hubs_two_fleets(fleet, url, coordination, 100, task_s=0.5)
        fa, fb = fleets
        submitter = Submitter([a, b], rate=60)
        try:
            wait_for(lambda: fa.attached() + fb.attached() == 200, 60, "200 nodes attached")
            submitter.start()
            wait_for(lambda: len(submitter.accepted) >= 150, 60, "150 tasks submitted")
            on_b = sum(1 for n in Ctl(b).json("nodes") if n["attached"]
                       and n["hub_id"] == "hub-b")
            dropped_before = fa.status()["dropped"] + fb.status()["dropped"]
            b.kill()  # SIGKILL the supervisor and every child of hub B
            killed = time.monotonic()
            submitter.skip.add(str(b.state_dir))
            # B's nodes saw their streams drop and attached again (to A); the fleets
            # stamp each attach with the same monotonic clock as ours.
            wait_for(lambda: fa.status()["dropped"] + fb.status()["dropped"]
                     >= dropped_before + on_b and fa.attached() + fb.attached() == 200, 15,
                     "every node re-attached to a live hub")
            reattach_s = max(fa.status()["last_attach"], fb.status()["last_attach"]) - killed
            assert on_b > 0 and 0 < reattach_s <= 15
            wait_for(lambda: len(submitter.accepted) >= 300, 60, "150 more tasks")
            figures = finish_and_check(url, fleets, submitter, "kill -9 hub B")
            assert figures["kept_by_verdict"], "no task was running on B's nodes (too weak)"
            print(f"kill -9 hub B: its {on_b} nodes all re-attached {reattach_s:.2f} s after "
                  f"the kill "
                  f"(t+{time.monotonic() - killed:.1f} s now); {figures['tasks']} tasks")
        finally:
            submitter.halt.set()
            for f in fleets:
                f.kill()


def transitions_since(url: str, epochs: set[int], since_ms: int) -> list[tuple[bool, str]]:
    """(accepted, to_state) of every write recorded for these node epochs after since_ms."""
    import psycopg

    with psycopg.connect(url) as conn:
        return [(bool(a), s) for a, s in conn.execute(
            "SELECT accepted, to_state FROM transitions WHERE node_epoch = ANY(%s) "
            "AND at_ms >= %s", (sorted(epochs), since_ms)).fetchall()]


def assignments_per_task(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {t: n for t, n in conn.execute(
            "SELECT task_id, count(*) FROM transitions WHERE accepted AND "
            "to_state = 'ASSIGNED' GROUP BY task_id").fetchall()}


def test_sigstop_a_shard_past_its_lease_fences_what_it_writes_after(fleet):
    """SIGSTOP hub B's shard for 3x the lease TTL: B's control sees its ring heartbeat
    stop, declares the shard's lease lost and fences its sessions; after SIGCONT every
    write the shard's sessions attempt is refused, and no task is assigned twice."""
    ttl_ms = 1500
    with pg_schema() as url, redis_prefix() as (coordination, _):
        sim = SimFleet(fleet.base, "fs", [], 60, task_s=1.0)
        sim.enroll(fleet.base / "hub0" / "hub" / "tokens")
        a, b = start_cluster(fleet, url, coordination,
                             extra=("--lease-ttl-ms", str(ttl_ms), "--queue-scan-s", "2"))
        sim.hubs = [b, a]
        sim.start()
        submitter = Submitter([a, b], rate=40)
        shard = b.shard_pid(0)
        try:
            wait_for(lambda: sim.attached() == 60, 60, "60 nodes attached")
            b_ctl = Ctl(b)
            epochs = {n["session_epoch"] for n in b_ctl.json("nodes")
                      if n["attached"] and n["hub_id"] == "hub-b"}
            assert epochs, "no node attached to hub B (nodes spread over their hub lists)"
            submitter.start()
            wait_for(lambda: len(submitter.accepted) >= 80, 60, "80 tasks submitted")
            os.kill(shard, signal.SIGSTOP)
            try:
                wait_for(lambda: "shard_lease_lost" in b.log_path.read_text(), 3 * ttl_ms / 1000,
                         "hub B to declare the shard's lease lost")
                time.sleep(3 * ttl_ms / 1000)  # the pause itself is what is under test
            finally:
                resumed_ms = int(time.time() * 1000)
                os.kill(shard, signal.SIGCONT)
            wait_for(lambda: sim.attached() == 60, 30, "every node re-attached after the pause")
            wait_for(lambda: len(submitter.accepted) >= 160, 60, "80 more tasks")
            figures = finish_and_check(url, [sim], submitter, "SIGSTOP shard")
            after = transitions_since(url, epochs, resumed_ms)
            accepted_after = [s for ok, s in after if ok]
            print(f"SIGSTOP shard {3 * ttl_ms} ms (lease {ttl_ms} ms): {len(after)} writes of "
                  f"the fenced sessions after SIGCONT, {len(accepted_after)} accepted; "
                  f"{figures['tasks']} tasks")
            assert after, "the paused shard attempted no write after resuming (test too weak)"
            assert not accepted_after, f"fenced sessions wrote after resuming: {accepted_after}"
            twice = {t: n for t, n in assignments_per_task(url).items() if n > 1}
            assert not twice, f"assigned twice: {list(twice.items())[:5]}"
        finally:
            submitter.halt.set()
            sim.kill()


def test_flushall_mid_run_rebuilds_the_directory_and_loses_nothing(fleet):
    with pg_schema() as url, redis_prefix() as (coordination, prefix):
        a, b, fleets = two_hubs_two_fleets(fleet, url, coordination, 50, task_s=0.05)
        fa, fb = fleets
        submitter = Submitter([a, b], rate=40)
        r = redis_client()
        try:
            wait_for(lambda: fa.attached() + fb.attached() == 100, 60, "100 nodes attached")
            wait_for(lambda: r.hlen(f"{prefix}:dir") == 100, 10, "the directory to fill")
            submitter.start()
            wait_for(lambda: len(submitter.accepted) >= 100, 60, "100 tasks submitted")
            r.flushall()
            rebuilt_s = wait_for(lambda: r.hlen(f"{prefix}:dir") == 100, 30,
                                 "the directory rebuilt after FLUSHALL")
            wait_for(lambda: len(submitter.accepted) >= 200, 60, "100 more tasks")
            figures = finish_and_check(url, fleets, submitter, "FLUSHALL")
            print(f"FLUSHALL: directory rebuilt (100 of 100 nodes) in {rebuilt_s:.2f} s; "
                  f"{figures['tasks']} tasks")
        finally:
            r.close()
            submitter.halt.set()
            for f in fleets:
                f.kill()


def test_postgresql_restart_under_a_cluster_keeps_node_streams_and_resumes(fleet):
    """Both hubs ride out PostgreSQL going away: no node stream drops (the shards answer
    heartbeats, the leases are renewed without the store), writes wait and retry, and
    the cluster commits again soon after the server returns. One-hub variant with real
    nodeagents: tests/system/test_system_pg_restart.py."""
    with pg_schema() as url, redis_prefix() as (coordination, _):
        a, b, fleets = two_hubs_two_fleets(fleet, url, coordination, 50, task_s=0.2)
        fa, fb = fleets
        submitter = Submitter([a, b], rate=30)
        try:
            wait_for(lambda: fa.attached() + fb.attached() == 100, 60, "100 nodes attached")
            submitter.start()
            wait_for(lambda: len(submitter.accepted) >= 60, 60, "60 tasks submitted")
            dropped = fa.status()["dropped"] + fb.status()["dropped"]
            with server_down():
                time.sleep(6.0)  # the outage itself is what is under test
                # Watched from here: pg_ctlcluster start returns a while after the server
                # already accepts connections (and the hubs use it).
                back = ServerReturn(url)
                back.start()
            back.join(90)
            assert back.error is None, back.error
            resumed, t_up = back.t_resumed - back.t_up, back.t_up
            n = len(submitter.accepted)
            wait_for(lambda: len(submitter.accepted) >= n + 60, 60, "60 more tasks")
            gone = [h for h in (a, b) if '"node_gone"' in h.log_path.read_text()]
            figures = finish_and_check(url, fleets, submitter, "PostgreSQL restart")
            after = sum(json.loads(f.report_file.read_text())["dropped"] for f in fleets)
            print(f"PostgreSQL restart under 2 hubs: first commit {resumed:.2f} s after the "
                  f"server accepted again ({time.monotonic() - t_up:.1f} s ago); node streams "
                  f"dropped: {after - dropped}; {figures['tasks']} tasks")
            assert after == dropped, "a node stream dropped during the outage"
            assert not gone, "a hub logged node_gone during the outage"
        finally:
            submitter.halt.set()
            for f in fleets:
                f.kill()


def test_redis_stopped_and_restarted_costs_nothing(fleet):
    """Redis is a hint and a transport: with it gone for a while (and back empty), each hub
    keeps placing tasks on its own nodes, what was offered across is adopted from the
    store, the directory is rebuilt, and nothing is lost or run twice."""
    with pg_schema() as url, redis_prefix() as (coordination, prefix):
        a, b, fleets = two_hubs_two_fleets(fleet, url, coordination, 50, task_s=0.05)
        fa, fb = fleets
        submitter = Submitter([a, b], rate=40)
        try:
            wait_for(lambda: fa.attached() + fb.attached() == 100, 60, "100 nodes attached")
            submitter.start()
            wait_for(lambda: len(submitter.accepted) >= 80, 60, "80 tasks submitted")
            with redis_down():
                n = len(submitter.accepted)
                wait_for(lambda: len(submitter.accepted) >= n + 80, 60,
                         "80 tasks submitted while Redis is down")
            r = redis_client()
            try:
                rebuilt_s = wait_for(lambda: r.hlen(f"{prefix}:dir") == 100, 30,
                                     "the directory rebuilt after Redis came back")
            finally:
                r.close()
            n = len(submitter.accepted)
            wait_for(lambda: len(submitter.accepted) >= n + 40, 60, "40 more tasks")
            dropped = sum(f.status()["dropped"] for f in fleets)
            figures = finish_and_check(url, fleets, submitter, "Redis restart")
            print(f"Redis stopped and restarted empty: directory rebuilt {rebuilt_s:.2f} s "
                  f"after it answered again; node streams dropped: {dropped}; "
                  f"{figures['tasks']} tasks")
            assert dropped == 0, "a node stream dropped because Redis went away"
        finally:
            submitter.halt.set()
            for f in fleets:
                f.kill()

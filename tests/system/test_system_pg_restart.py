"""Fault test: PostgreSQL goes down and comes back while tasks stream through a hub.

A real cortexd on a fresh PostgreSQL schema, four real nodeagents, and a client
submitting short tasks through the Control API without pause. Mid-run the
server is stopped (fast shutdown: every connection is cut), held down for a few
seconds, and started again. Then:

- no node stream dropped: no ``node_gone`` in the hub's log, every node still
  attached with the session epoch it had before;
- the hub resumed writing within 30 s of the server accepting connections again
  (figure printed: the first transition committed after it, and the hub's
  ``store_recovered`` line);
- every task reached exactly one terminal state (SUCCEEDED), with all of its
  output;
- the history checker finds no violation in the recorded transitions.

It stops the shared server for ~5 s: other tests on it see an outage too.
"""

import asyncio
import threading
import time
from datetime import datetime

import psycopg
import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubClient, HubSettings, client_tls
from cortexctl.errors import CtlError
from cortexd.history import check_url
from examples.localfleet import log_events, wait_until
from tests.pg import ServerReturn, pg_schema, server_down

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

NODES = 4
DOWN_S = 5.0
SUBMIT_EVERY_S = 0.1


class Submitter(threading.Thread):
    """Submits ``echo`` tasks one after another (each call waits as long as the hub
    does) until stopped; a call that fails is sent again with the same idempotency key."""

    def __init__(self, client: HubClient) -> None:
        super().__init__(daemon=True, name="submitter")
        self.client = client
        self.stop = threading.Event()
        self.tasks: dict[str, int] = {}  # task id -> n (its output is "task n")
        self.retried = 0
        self.slowest_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                req = pb.SubmitRequest(command=f"echo task {n}", idempotency_key=f"pg-{n}")
                t0 = time.monotonic()
                while True:
                    try:
                        resp = self.client.submit(req)
                        break
                    except CtlError:
                        self.retried += 1
                        time.sleep(0.2)
                self.slowest_s = max(self.slowest_s, time.monotonic() - t0)
                self.tasks[resp.task.task_id] = n
                self.stop.wait(SUBMIT_EVERY_S)
        except BaseException as e:  # surfaced by the test
            self.error = e




def test_postgresql_restart_mid_run(fleet, tmp_path):
    with pg_schema() as url:
        hub = fleet.hub(extra_args=["--store", url])
        nodes = fleet.nodes(hub, NODES, capacity=4)
        settings = HubSettings(address=hub.control_address,
                               token=hub.admin_token_file.read_text().strip(),
                               tls=client_tls(None, None, None, False), insecure_loopback=True,
                               timeout_s=60.0)
        with HubClient(settings) as client:
            before = {n.node_id: n.session_epoch for n in client.list_nodes()}
            assert set(before) == {n.node_id for n in nodes}
            submitter = Submitter(client)
            submitter.start()
            wait_until(lambda: len(submitter.tasks) >= 20, 60, "20 tasks submitted")
            n_before = len(submitter.tasks)
            with server_down():
                t_down = time.monotonic()
                time.sleep(DOWN_S)
                # Watch for the server's return from here: pg_ctlcluster start returns a
                # while after the server already accepts connections (and the hub uses it).
                back = ServerReturn(url)
                back.start()
            back.join(90)
            assert back.error is None, back.error
            t_up, t_up_wall = back.t_up, back.t_up_wall
            down_s = t_up - t_down
            resume_s = back.t_resumed - t_up
            wait_until(lambda: len(submitter.tasks) >= n_before + 30, 60,
                       "30 more tasks submitted after the outage")
            submitter.stop.set()
            submitter.join(60)
            assert submitter.error is None, submitter.error
            ids = dict(submitter.tasks)

            def all_ended() -> bool:
                return all(client.get_task(t).state >= pb.SUCCEEDED for t in ids)

            wait_until(all_ended, 60, f"{len(ids)} tasks to end", 0.2)
            after = {n.node_id: (n.session_epoch, n.attached) for n in client.list_nodes()}
        log = hub.log_path
        recovered = log_events(log, "store_recovered")
        unavailable = log_events(log, "store_unavailable")
        gone = log_events(log, "node_gone")
        assert hub.stop() == 0

        # Node streams stayed up: same sessions, nobody left.
        assert after == {k: (v, True) for k, v in before.items()}, (before, after)
        assert not gone, gone
        assert unavailable and recovered, "the hub never noticed the outage"
        # Resumed within 30 s of the server's return.
        assert resume_s < 30.0, resume_s

        # Every task ended once, successfully, with all of its output.
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT t.task_id, t.state, coalesce(string_agg(o.data, ''::bytea "
                "ORDER BY o.off), ''::bytea) FROM tasks t LEFT JOIN output o ON "
                "o.task_id = t.task_id AND o.attempt = t.attempt GROUP BY t.task_id, "
                "t.state").fetchall()
        got = {r[0]: (r[1], bytes(r[2])) for r in rows}
        assert set(got) == set(ids)
        bad = {t: got[t] for t, n in ids.items()
               if got[t] != ("SUCCEEDED", f"task {n}\r\n".encode())}
        assert not bad, bad

        report = asyncio.run(check_url(url))
        assert report.ok, report.violations[:20]
        assert report.ended == len(ids) and not report.active

        def at(event: dict[str, object]) -> float:
            return datetime.fromisoformat(str(event["timestamp"])).timestamp()

        # The outage the hub rode out is the last one it logged (a first short one may
        # come from the fast shutdown cutting connections while it still answered).
        last_down, last_up = unavailable[-1], recovered[-1]
        hub_resume_s = at(last_up) - t_up_wall
        assert hub_resume_s < 30.0, hub_resume_s
        outages = "; ".join(f"{e.get('call')} {e.get('duration_s')} s / {e.get('retries')} "
                            "retries" for e in recovered)
        print(f"\nPostgreSQL restart mid-run: {len(ids)} tasks on {NODES} nodes "
              f"({n_before} submitted before the outage)\n"
              f"  server down (stop done → first connection accepted): {down_s:.1f} s\n"
              f"  hub: store_unavailable logged {len(unavailable)}x, store_recovered "
              f"{hub_resume_s:+.2f} s from the server's return (outages as the hub "
              f"saw them: {outages}; last noticed {t_up_wall - at(last_down):.1f} s before "
              "the server returned)\n"
              f"  first transition committed {resume_s:.2f} s after the server returned\n"
              f"  slowest submit {submitter.slowest_s:.1f} s (callers wait), "
              f"{submitter.retried} submit calls retried; nodes detached: {len(gone)}; "
              f"epochs unchanged: {len(before)}/{len(before)}\n"
              f"  history: {report.summary()}")

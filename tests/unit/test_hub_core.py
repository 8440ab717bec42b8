"""Pure parts of the hub: lifecycle, scheduler, settings, wire messages, shard sessions."""

import asyncio
import importlib
import pkgutil
from pathlib import Path

import pytest

import cortex
import cortexd
from cortex.errors import ConfigError
from cortexd import config
from cortexd.ipc import messages as m
from cortexd.lifecycle import ALLOWED, TERMINAL, State, finished_state, sources
from cortexd.scheduler import Candidate, pick
from cortexd.shards.session import CLOSE, MAX_OUTBOUND, RefusedAttach, SessionTable


def test_every_module_imports() -> None:
    # Type checking does not run annotations; importing does (grpc's runtime
    # classes are not generic, for one).
    for pkg in (cortex, cortexd):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(info.name)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()
    assert State.QUEUED in sources(State.ASSIGNED)
    assert State.RUNNING not in sources(State.ASSIGNED)
    assert sources(State.RUNNING) == {State.ASSIGNED}


@pytest.mark.parametrize(("kind", "code", "cancel", "state"), [
    (1, 0, False, State.SUCCEEDED),
    (1, 3, False, State.FAILED),
    (2, -2, False, State.CANCELLED),
    (1, -15, True, State.CANCELLED),
    (1, 0, True, State.SUCCEEDED),  # finished on its own before the cancel landed
    (3, -9, False, State.TIMED_OUT),
    (4, -1, False, State.LOST),
])
def test_finished_state(kind: int, code: int, cancel: bool, state: State) -> None:
    assert finished_state(kind, code, cancel) is state


def test_scheduler_matches_labels_capacity_and_spreads() -> None:
    nodes = [Candidate("a", {"os": "linux"}, 2, 0), Candidate("b", {"os": "linux"}, 2, 0),
             Candidate("c", {"os": "mac"}, 2, 0), Candidate("d", {"os": "linux"}, 2, 0,
                                                             attached=False)]
    picked = []
    for turn in range(4):
        node = pick(nodes, {"os": "linux"})
        assert node is not None
        node.running += 1
        node.last_picked = turn + 1
        picked.append(node.node_id)
    assert sorted(picked) == ["a", "a", "b", "b"]  # spread, and never the detached d
    assert pick(nodes, {"os": "linux"}) is None  # all full
    assert pick(nodes, {"os": "mac"}, pin="c") is not None
    assert pick(nodes, {}, pin="zz") is None


def test_settings_precedence_and_errors(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('shards = 3\nnode_grace_s = 5\ninsecure_loopback = true\n')
    env = {"CORTEX_SHARDS": "4"}
    s = config.load(toml, {}, environ=env)
    assert (s.shards, s.node_grace_s, s.insecure_loopback) == (4, 5.0, True)
    s = config.load(toml, {"shards": 2}, environ=env)
    assert s.shards == 2
    assert config.Settings.from_dict(s.to_dict()) == s
    toml.write_text("bogus = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        config.load(toml, {}, environ={})
    with pytest.raises(ConfigError, match="no TLS configured"):
        config.load(None, {}, environ={})
    with pytest.raises(ConfigError, match="only on loopback"):
        config.load(None, {"insecure_loopback": True, "node_listen": "0.0.0.0:7700"},
                    environ={})
    with pytest.raises(ConfigError, match="shards must be"):
        config.load(None, {"insecure_loopback": True, "shards": 0}, environ={})
    with pytest.raises(ConfigError, match="setting shards: cannot use"):
        config.load(None, {}, environ={"CORTEX_SHARDS": "many"})



def test_cluster_settings_are_checked() -> None:
    base = {"insecure_loopback": True, "node_listen": "127.0.0.1:7700"}
    s = config.load(None, base, environ={})
    assert (s.coordination, s.host_id.endswith(":7700")) == ("local", True)
    pg = {**base, "store": "postgresql://postgres@127.0.0.1/test", "hub_id": "hub-a",
          "coordination": "redis://127.0.0.1:6379/0?prefix=c1"}
    assert config.load(None, pg, environ={}).host_id == "hub-a"
    with pytest.raises(ConfigError, match="must share one store"):
        config.load(None, {**base, "coordination": "redis://127.0.0.1:6379/0"}, environ={})
    with pytest.raises(ConfigError, match="expected 'local' or redis://"):
        config.load(None, {**pg, "coordination": "redis-cluster"}, environ={})
    with pytest.raises(ConfigError, match="hub_id"):
        config.load(None, {**pg, "hub_id": "a b"}, environ={})
    with pytest.raises(ConfigError, match="lease_ttl_ms"):
        config.load(None, {**pg, "lease_ttl_ms": 10}, environ={})


def test_ring_messages_round_trip_and_reject_garbage() -> None:
    rec = m.pack(m.FRAME, "n1", 7, b"\x00\x01raw")
    assert m.unpack(rec) == [m.FRAME, "n1", 7, b"\x00\x01raw"]
    with pytest.raises(ValueError):
        m.unpack(m.pack())
    with pytest.raises(ValueError):
        m.unpack(b"\xa3abc")  # a msgpack string, not an array


def test_session_table_routes_by_epoch_and_supersedes() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table = SessionTable()
        first = table.begin("n1", loop)
        table.welcomed(first.conn_id, 5, b"welcome-5", 5.0)
        assert first.welcome is not None and first.welcome.result() == (5, b"welcome-5")
        assert table.route("n1", 5) is first
        assert table.route("n1", 4) is None  # a message for an older session is dropped
        second = table.begin("n1", loop)
        table.welcomed(second.conn_id, 6, b"welcome-6", 2.0)
        assert first.close_reason.startswith("superseded")
        assert await first.outbound.get() == CLOSE
        assert table.route("n1", 6) is second
        assert table.silent(second.last_seen + 5.9) == []  # within 3 of its 2 s intervals
        assert table.silent(second.last_seen + 6.1) == [second]
        table.end(first)  # the old stream ending must not remove the new session
        assert table.route("n1", 6) is second
        third = table.begin("n2", loop)
        table.refused(third.conn_id, "UNAVAILABLE", "busy")
        assert third.welcome is not None
        with pytest.raises(RefusedAttach, match="busy"):
            third.welcome.result()

    asyncio.run(scenario())


def test_slow_node_is_closed_not_buffered_forever() -> None:
    async def scenario() -> None:
        table = SessionTable()
        s = table.begin("n1", asyncio.get_running_loop())
        for _ in range(MAX_OUTBOUND):
            assert s.push(b"f")
        assert not s.push(b"f")
        assert "outbound queue full" in s.close_reason
        assert s.outbound.qsize() == MAX_OUTBOUND + 1  # frames + the CLOSE sentinel

    asyncio.run(scenario())


def test_supervisor_does_not_load_grpc() -> None:
    # Nothing that owns threads or gRPC state may exist in the process that spawns
    # the children (DESIGN §1); importing grpcio is where that would start.
    import subprocess
    import sys

    probe = "import sys, cortexd.supervisor, cortexd.cli; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_heartbeat_interval_grows_with_the_fleet(tmp_path: Path) -> None:
    from cortexd.control.hub import Hub
    from cortexd.control.state import NodeState

    settings = config.load(None, {"insecure_loopback": True, "heartbeat_interval_ms": 5000,
                                  "max_heartbeats_per_s": 200}, environ={})
    hub = Hub(settings, store=None, encoder=None, hub_id="h")  # type: ignore[arg-type]
    assert hub.sessions.heartbeat_interval_ms() == 5000
    for i in range(10_000):
        hub.state.nodes[f"n{i}"] = NodeState(f"n{i}", i, 0, {}, 1, attached=True)
    assert hub.sessions.heartbeat_interval_ms() == 5000  # counted at most once a second (storms)
    hub.sessions._interval_at -= 1.0
    assert hub.sessions.heartbeat_interval_ms() == 50_000  # 10,000 nodes / 200 per s


def test_print_config_hides_the_store_password(capsys: pytest.CaptureFixture[str]) -> None:
    from cortexd.cli import main
    from cortexd.store.pgschema import redact

    assert redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"
    assert main(["--print-config", "--insecure-loopback",
                 "--store", "postgresql://u:s3cret@127.0.0.1:5432/db"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "u:***@127.0.0.1" in out

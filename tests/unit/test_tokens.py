"""The token table (cortex/tokens.py): a replaced or revoked token stops working in a
process that already loaded the table, within REFRESH_S (issue 13)."""

import threading
from pathlib import Path

import pytest

from cortex import tokens
from cortex.tokens import TokenTable, token_hash


@pytest.fixture(autouse=True)
def _no_refresh_delay(monkeypatch):
    monkeypatch.setattr(tokens, "REFRESH_S", 0.0)


def test_a_re_enrolled_token_stops_working_in_a_running_table(tmp_path: Path):
    path = tmp_path / "tokens"
    old = TokenTable(path).add("node-1", "node")
    running = TokenTable(path)  # another process's table, loaded before the re-enroll
    assert running.lookup(old) is not None
    new = TokenTable(path).add("node-1", "node")  # cortexd enroll node-1, again
    assert running.lookup(old) is None
    assert running.lookup(new) == tokens.Principal("node-1", "node")
    assert not running.holds(token_hash(old)) and running.holds(token_hash(new))


def test_revoke_by_name_role_and_fingerprint(tmp_path: Path):
    table = TokenTable(tmp_path / "tokens")
    node = table.add("n1", "node")
    client = table.add("n1", "client")
    admin = table.add("admin", "admin")
    assert [c.name for c in table.revoke("n1", "node", "f" * 12 + "0")] == []
    [gone] = table.revoke("n1", "node", token_hash(node)[:8])
    assert (gone.name, gone.role, gone.fingerprint) == ("n1", "node", token_hash(node)[:12])
    assert table.lookup(node) is None and table.lookup(client) is not None
    assert [c.role for c in table.revoke("n1")] == ["client"]
    assert [c.name for c in table.credentials()] == ["admin"]
    assert table.lookup(admin) is not None


def test_concurrent_enrolls_lose_no_credential(tmp_path: Path):
    path = tmp_path / "tokens"
    minted: dict[str, str] = {}

    def enroll(i: int) -> None:
        minted[f"n{i}"] = TokenTable(path).add(f"n{i}", "node")

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = TokenTable(path)
    assert all(table.lookup(token) is not None for token in minted.values())

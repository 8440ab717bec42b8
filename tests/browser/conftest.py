"""Fixtures for browserd's tests: a real browserd on a Unix socket, pages on loopback.

Without Chromium these tests skip on a laptop and FAIL when ``CI`` is set.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from browserd import chromium
from examples.localbrowser import LocalBrowserd
from examples.localfleet import tail
from examples.testpages import PageServer
from tests.chromiumkit import need_chromium


@pytest.fixture
def pages() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


class Browserds:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[LocalBrowserd] = []

    def __call__(self, *flags: str, name: str = "bd") -> LocalBrowserd:
        need_chromium()
        b = LocalBrowserd(self.base / name, *flags)
        self.started.append(b)
        return b.start()


@pytest.fixture
def browserds(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browserds]:
    made = Browserds(tmp_path)
    yield made
    failed = getattr(request.node, "report_call", None)
    for b in made.started:
        b.kill()
        chromium.kill_orphans(b.state_dir / "sessions")  # ours: profiles under our tmp dir
        if failed is not None and failed.failed:
            print(f"--- {b.log_path}\n{tail(b.log_path, 60)}")

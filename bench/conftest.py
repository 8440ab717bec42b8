"""Fixtures shared by the micro-benchmarks: a signing key and a uvloop loop.

These run only when asked for (``python -m bench.run_micro`` or ``pytest bench``);
``make test`` runs ``pytest tests`` and never collects this folder.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import machine

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    if not (ROOT / "cortex" / "v1" / "node_pb2.py").exists():
        pytest.exit("cortex/v1 is not generated: run `make proto` first", returncode=2)


def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    machine_info["cortex"] = machine.describe()


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A uvloop loop, as every cortexd process runs (DESIGN.md §1)."""
    ev = uvloop.new_event_loop()
    try:
        yield ev
    finally:
        ev.close()


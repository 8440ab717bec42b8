"""Shared by every test tier.

The repository root is put on ``sys.path`` so the system tests can use
``examples.localfleet`` however pytest was started (``make test`` runs
``python -m pytest``, which does this already; a bare ``pytest`` does not).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config: pytest.Config) -> None:
    if not (ROOT / "cortex" / "v1" / "control_pb2.py").exists():
        pytest.exit("cortex/v1 is not generated: run `make proto` first", returncode=2)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item, so fixtures can tell in teardown whether
    # the test failed (the system fixtures then print the processes' logs).
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# The real LLM (SmolLM2 behind llama-cpp-python's server), one per session, for any tier.
from tests.llmserver import llm_server  # noqa: E402,F401

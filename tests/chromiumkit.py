"""What a missing Chromium means to a test: skip on a laptop, FAIL when ``CI`` is set."""

import os

import pytest

from examples.localbrowser import chromium_missing_reason


def need_chromium() -> None:
    reason = chromium_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)

"""The Redis server the coordination tests use: 127.0.0.1:6379.

Each test gets its own key prefix (``?prefix=`` in the coordination URL), whose
keys are deleted afterwards. Unreachable server: the test skips on a laptop, and
fails when ``CI`` is set (a service-backed test never skips in CI).
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

REDIS_URL = os.environ.get("CORTEX_TEST_REDIS", "redis://127.0.0.1:6379/0")


def client() -> "redis.Redis[bytes]":
    r: redis.Redis[bytes] = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        r.ping()
    except redis.RedisError as e:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {e}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {e}")
    return r


@contextmanager
def redis_prefix() -> Iterator[tuple[str, str]]:
    """A fresh key prefix; yields (coordination URL, prefix)."""
    r = client()
    prefix = f"cortex-test-{uuid.uuid4().hex[:12]}"
    try:
        yield f"{REDIS_URL}?prefix={prefix}", prefix
    finally:
        try:
            keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                r.delete(*keys)
        finally:
            r.close()


REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port",
               "6379", "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]


@contextmanager
def redis_down() -> Iterator[None]:
    """Stop the Redis server (SHUTDOWN NOSAVE: it keeps nothing) for the body of the
    ``with``, then start it again the way this machine starts it, whatever happens."""
    import shutil
    import subprocess
    import time

    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI to stop and restart Redis")
        pytest.skip("redis-server is not installed here")
    r = client()
    try:
        r.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # it is gone: what SHUTDOWN does
    finally:
        r.close()
    try:
        yield
    finally:
        subprocess.run(REDIS_START, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                client().ping()
                break
            except (redis.RedisError, pytest.skip.Exception):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

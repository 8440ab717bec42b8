"""The ``browserd`` console script: settings, Playwright, the session table, the socket.

Signals only set an event; the main coroutine stops the server, closes every browser
(profiles kept: the sessions are ``stored`` for the next start) and exits 0. A second
signal exits at once (the orphan sweep of the next start ends any browser left).
Exit codes: 0 stopped, 2 configuration, 4 another browserd serves the socket, 3 the
browser could not be started.
"""

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence

import uvloop
from playwright.async_api import async_playwright

from browserd.config import BrowserdSettings, parse
from browserd.server import BrowserdServer, SocketInUse
from browserd.table import SessionTable
from cortex import logs
from cortex.errors import ConfigError

OK, BOOT, CONFIG, IN_USE = 0, 3, 2, 4


async def serve(settings: BrowserdSettings) -> int:
    log = logs.get("browserd")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(OK)  # second signal: skip the ladder
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with async_playwright() as pw:
        table = SessionTable(settings, pw, log)
        server = BrowserdServer(settings, table, log)
        try:
            await server.start()
        except SocketInUse as e:
            print(f"browserd: {e}", file=sys.stderr)
            return IN_USE
        await table.start()
        log.info("browserd_ready", socket=str(settings.socket_path),
                 sessions=len(table.sessions), max_sessions=settings.max_sessions)
        await stop.wait()
        log.info("browserd_stopping")
        await server.stop()
        await table.stop()
        log.info("browserd_stopped", requests=server.requests, errors=server.errors,
                 **table.counts)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, ns = parse(argv)
    except ConfigError as e:
        print(f"browserd: {e}", file=sys.stderr)
        return CONFIG
    if ns.print_config:
        print(json.dumps(settings.redacted(), indent=2, sort_keys=True))
        return OK
    if ns.check_config:
        print("browserd: configuration OK")
        return OK
    logs.configure("browserd", json=settings.log_format == "json", level=settings.log_level)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP adapter: aiohttp routes over a :class:`Figures` source.

``/metrics`` is prometheus_client's exposition of every hub process (its
multiprocess collector over ``PROMETHEUS_MULTIPROC_DIR``, or this process's
registry when there is none); the figures the control process owns are
refreshed just before. ``/healthz`` answers 200 while the loop runs.
``/readyz`` is 200 or 503 with the reasons as JSON. Read-only: every route is
a GET.
"""

import os
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from cortex.tls import split_host_port
from cortexd.metrics.procdir import ENV
from cortexd.web.health import Readiness


class Figures(Protocol):
    async def refresh(self) -> None: ...

    async def readiness(self) -> Readiness: ...


def _registry() -> CollectorRegistry:
    if directory := os.environ.get(ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def build_app(figures: Figures) -> web.Application:
    registry = _registry()

    async def metrics(_request: web.Request) -> web.Response:
        await figures.refresh()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(_request: web.Request) -> web.Response:
        state = await figures.readiness()
        return web.json_response(state.to_dict(), status=200 if state.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start(address: str, app: web.Application) -> tuple[web.AppRunner, int]:
    """Listen on ``address`` (a concrete port: the supervisor probed it); return the
    runner (``cleanup()`` stops it) and the port."""
    host, port = split_host_port(address)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner, port

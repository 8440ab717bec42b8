"""browserd through the hub against raw in-process Playwright, in the same run (issue 11).

Raw: Playwright in this process on Debian's Chromium (one browser; each "new session" is a
new context and page). Hub: a real cortexd and nodeagent on loopback, the agent running
its browserd (``--browserd-start``, 2 warm browsers), called with the Browse gRPC stub in
this process (so a cortexctl process start is not counted): client → control process →
ring → shard → node stream → nodeagent → browserd's socket → Chromium, and back. The page
is ``/rows?n=300`` served on loopback. Each figure is the median of ``--rounds`` runs;
target per call: hub ≤ raw × 1.2 + 5 ms; a new session ≤ 50 ms.

    .venv/bin/python -m bench.browserd_speed [--rounds 5] [--out bench/results/browserd_speed.json]
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from playwright.async_api import async_playwright

from bench import machine
from browserd.config import CHROMIUM, CHROMIUM_ARGS
from cortex.tokens import bearer
from cortex.v1 import browse_pb2 as bpb
from cortex.v1 import browse_pb2_grpc
from examples.localfleet import Ctl, LocalHub, LocalNode, log_events, wait_until
from examples.testpages import PageServer

STEPS = ("new_session", "goto", "snapshot", "screenshot", "full_screenshot", "evaluate",
         "fill_click", "ten_pages")


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t = time.perf_counter()
    value = await fn()
    return (time.perf_counter() - t) * 1000, value


def ref_of(snapshot: str, needle: str) -> str:
    for line in snapshot.splitlines():
        if needle in line and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise ValueError(needle)


async def raw_round(browser: Any, url: str) -> dict[str, float]:
    out: dict[str, float] = {}

    async def new() -> Any:
        ctx = await browser.new_context()
        return ctx, await ctx.new_page()
    out["new_session"], (ctx, page) = await timed(new)
    out["goto"], _ = await timed(lambda: page.goto(url))
    out["snapshot"], snap = await timed(lambda: page.aria_snapshot(mode="ai"))
    out["snapshot_bytes"] = len(snap.encode())
    out["screenshot"], shot = await timed(lambda: page.screenshot())
    out["full_screenshot"], full = await timed(lambda: page.screenshot(full_page=True))
    out["full_screenshot_bytes"] = len(full)
    out["evaluate"], _ = await timed(lambda: page.evaluate("1 + 1"))

    box, go = ref_of(snap, 'textbox "search"'), ref_of(snap, 'button "Go"')

    async def fill_click() -> None:
        await page.locator(f"aria-ref={box}").fill("x")
        await page.locator(f"aria-ref={go}").click()
    out["fill_click"], _ = await timed(fill_click)
    await ctx.close()

    async def ten() -> None:
        async def one() -> None:
            c = await browser.new_context()
            p = await c.new_page()
            await p.goto(url, timeout=120_000)
            await p.aria_snapshot(mode="ai", timeout=120_000)
            await c.close()
        await asyncio.gather(*(one() for _ in range(10)))
    out["ten_pages"], _ = await timed(ten)
    return out


class HubBrowse:
    def __init__(self, address: str, token: str) -> None:
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub: Any = browse_pb2_grpc.BrowseStub(self.channel)  # type: ignore[no-untyped-call]
        self.md = bearer(token)

    async def open(self) -> str:
        got = await self.stub.Open(bpb.BrowseOpenRequest(), metadata=self.md, timeout=120)
        return str(got.session)

    async def call(self, session: str, op: str, **args: Any) -> tuple[dict[str, Any], bytes]:
        result: dict[str, Any] = {}
        data = bytearray()
        async for piece in self.stub.Call(bpb.BrowseCallRequest(
                session=session, op=op, args_json=json.dumps(args)), metadata=self.md,
                timeout=120):
            if piece.result_json:
                result = json.loads(piece.result_json)
            data += piece.data
        return result, bytes(data)


async def hub_round(hub: HubBrowse, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    out["new_session"], sid = await timed(hub.open)
    out["goto"], _ = await timed(lambda: hub.call(sid, "navigate", url=url))
    out["snapshot"], (snap, _) = await timed(lambda: hub.call(sid, "snapshot"))
    out["snapshot_bytes"] = snap["full_bytes"]
    out["screenshot"], _ = await timed(lambda: hub.call(sid, "screenshot"))
    out["full_screenshot"], (_, full) = await timed(
        lambda: hub.call(sid, "screenshot", full_page=True))
    out["full_screenshot_bytes"] = len(full)
    out["evaluate"], _ = await timed(lambda: hub.call(sid, "eval", js="1 + 1"))
    text = snap["text"]

    async def fill_click() -> None:
        await hub.call(sid, "type", ref=ref_of(text, 'textbox "search"'), text="x")
        await hub.call(sid, "click", ref=ref_of(text, 'button "Go"'))
    out["fill_click"], _ = await timed(fill_click)
    await hub.call(sid, "session.close")
    sessions = [await hub.open() for _ in range(10)]  # opening is not part of this figure

    async def ten() -> None:
        async def one(s: str) -> None:
            await hub.call(s, "navigate", url=url)
            await hub.call(s, "snapshot")
        await asyncio.gather(*(one(s) for s in sessions))
    out["ten_pages"], _ = await timed(ten)
    for s in sessions:
        await hub.call(s, "session.close")
    return out


async def diff_figures(hub: HubBrowse, base: str) -> dict[str, Any]:
    sid = await hub.open()
    await hub.call(sid, "navigate", url=base + "/counter")
    full, _ = await hub.call(sid, "snapshot")
    await hub.call(sid, "click", ref=ref_of(full["text"], 'button "Add"'))
    diff, _ = await hub.call(sid, "snapshot", diff=True)
    await hub.call(sid, "session.close")
    size = len(diff["diff"].encode())
    return {"full_bytes": full["full_bytes"], "diff_bytes": size,
            "diff_fraction": round(size / full["full_bytes"], 4)}


def summarize(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 2) for k in rounds[0]}


async def run(ns: argparse.Namespace, hub_address: str, token: str, base: str) -> dict[str, Any]:
    url = base + "/rows?n=300"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                           args=list(CHROMIUM_ARGS), timeout=120_000)
        await raw_round(browser, url)  # warm-up
        raw = [await raw_round(browser, url) for _ in range(ns.rounds)]
        await browser.close()
    hub = HubBrowse(hub_address, token)
    await hub_round(hub, url)  # warm-up
    through = [await hub_round(hub, url) for _ in range(ns.rounds)]
    diff = await diff_figures(hub, base)
    await hub.channel.close()
    r, h = summarize(raw), summarize(through)
    targets = {}
    for step in STEPS:
        ceiling = 50.0 if step == "new_session" else r[step] * 1.2 + 5
        targets[step] = {"raw_ms": r[step], "hub_ms": h[step], "ceiling_ms": round(ceiling, 2),
                         "ratio": round(h[step] / r[step], 3), "met": h[step] <= ceiling}
    return {"raw": r, "hub": h, "targets": targets, "snapshot_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench/results/browserd_speed.json")
    ns = p.parse_args()
    ns.rounds = max(1, min(ns.rounds, 50))
    base_dir = Path(tempfile.mkdtemp(prefix="bench-browserd-"))
    hub = LocalHub(base_dir, shards=1)
    node = LocalNode(hub, "web-1", extra_args=["--browserd-start",
                                               "--browserd-arg=--warm-sessions=2",
                                               "--browserd-arg=--max-sessions=16"])
    try:
        hub.start()
        node.start()
        Ctl(hub).wait_nodes(["web-1"])
        wait_until(lambda: log_events(node.log_path, "browserd_connected"), 60, "browserd")
        token = hub.admin_token_file.read_text().strip()
        with PageServer() as pages:
            figures = asyncio.run(run(ns, hub.control_address, token, pages.base))
    finally:
        node.kill()
        hub.kill()
    result = {"bench": "browserd_speed", "rounds": ns.rounds, "machine": machine.describe(),
              "load_average": os.getloadavg(), **figures}
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()

"""browserd through the hub against raw in-process Playwright, in the same run (issue 11).

Raw: Playwright in this process on Debian's Chromium (one browser; each "new session" is a
new context and page). Hub: a real cortexd and nodeagent on loopback, the agent running
its browserd (``--browserd-start``, 2 warm browsers), called with the Browse gRPC stub in
this process (so a cortexctl process start is not counted): client → control process →
ring → shard → node stream → nodeagent → browserd's socket → Chromium, and back. The page
is ``/rows?n=300`` served on loopback. Raw and hub rounds alternate (raw, hub, hub, raw,
…) so both see the same load; each figure is the median of ``--rounds`` rounds, with the
load average of each round; target per call: hub ≤ raw × 1.2 + 5 ms; a new session ≤ 50 ms.
Each round pair starts once browserd's pool holds its 2 warm browsers *settled* (their
start done, browserd/table.py; the wait is recorded): the previous round's ten sessions
emptied it. Fill + click through the hub is one ``steps`` call (type, then click): like
raw's, the page's first interaction (a second one costs about half, on both sides).

Also measured: the fixed cost of the path (``evaluate 1+1`` through the hub against the
same call on browserd's socket, same session, alternating: hub − direct), and
``cortexctl`` end to end (the process started → the file on disk) for a snapshot and a
full-page screenshot, beside a bare ``cortexctl --version`` (the interpreter's start).

    .venv/bin/python -m bench.browserd_speed [--rounds 5] [--out bench/results/browserd_speed.json]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from playwright.async_api import async_playwright

from bench import machine
from browserd.client import BrowserdClient
from browserd.config import CHROMIUM, CHROMIUM_ARGS
from cortex.tokens import bearer
from cortex.v1 import browse_pb2 as bpb
from cortex.v1 import browse_pb2_grpc
from examples.localfleet import Ctl, LocalHub, LocalNode, binary, log_events, wait_until
from examples.testpages import PageServer

WARM = 2
STEPS = ("new_session", "goto", "snapshot", "screenshot", "full_screenshot", "evaluate",
         "fill_click", "ten_pages")


PAGE_TIMING = "() => [performance.timing.navigationStart, performance.timing.loadEventEnd]"


def goto_parts(began_ms: float, ended_ms: float, timing: list[float]) -> dict[str, float]:
    """A goto's wall time cut by the page's own clock (same host, same epoch clock): the
    call until the navigation started, the navigation until the load event ended, and
    from there until the answer was back (Playwright's and, through the hub, the path's)."""
    start, load_end = timing
    return {"goto_to_start": round(start - began_ms, 1),
            "goto_in_page": round(load_end - start, 1),
            "goto_after_load": round(ended_ms - load_end, 1)}


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
    began = time.time() * 1000
    out["goto"], _ = await timed(lambda: page.goto(url))
    out.update(goto_parts(began, time.time() * 1000, await page.evaluate(PAGE_TIMING)))
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


async def pool_ready(socket_path: Path, warm: int, timeout_s: float = 60.0) -> float:
    """Wait (bounded) until browserd's pool holds ``warm`` settled browsers; the ms waited."""
    c = BrowserdClient(socket_path)
    await c.connect()
    began = time.perf_counter()
    try:
        while time.perf_counter() - began < timeout_s:
            if (await c.call("ping")).get("warm_settled", 0) >= warm:
                break
            await asyncio.sleep(0.1)  # polling a counter browserd has no event for
    finally:
        await c.close()
    return (time.perf_counter() - began) * 1000


async def hub_round(hub: HubBrowse, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    out["new_session"], sid = await timed(hub.open)
    began = time.time() * 1000
    out["goto"], _ = await timed(lambda: hub.call(sid, "navigate", url=url))
    ended = time.time() * 1000
    got, _ = await hub.call(sid, "eval", js=f"({PAGE_TIMING})()")
    out.update(goto_parts(began, ended, got["value"]))
    out["snapshot"], (snap, _) = await timed(lambda: hub.call(sid, "snapshot"))
    out["snapshot_bytes"] = snap["full_bytes"]
    out["screenshot"], _ = await timed(lambda: hub.call(sid, "screenshot"))
    out["full_screenshot"], (_, full) = await timed(
        lambda: hub.call(sid, "screenshot", full_page=True))
    out["full_screenshot_bytes"] = len(full)
    out["evaluate"], _ = await timed(lambda: hub.call(sid, "eval", js="1 + 1"))
    text = snap["text"]

    box, go = ref_of(text, 'textbox "search"'), ref_of(text, 'button "Go"')
    out["fill_click"], _ = await timed(lambda: hub.call(sid, "steps", steps=[
        {"op": "type", "ref": box, "text": "x"}, {"op": "click", "ref": go}]))
    await hub.call(sid, "session.close")
    sessions = [await hub.open() for _ in range(10)]  # opening is not part of this figure

    async def ten() -> None:
        async def one(s: str) -> None:  # raw's timeouts: ten pages at once under load
            await hub.call(s, "navigate", url=url, timeout_ms=120_000)
            await hub.call(s, "snapshot", timeout_ms=120_000)
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


async def fixed_cost(hub: HubBrowse, socket_path: Path, calls: int) -> dict[str, float]:
    """``evaluate 1+1`` through the hub and on browserd's socket, alternating, one session."""
    handle = await hub.open()
    direct = BrowserdClient(socket_path)
    await direct.connect()
    through, local = [], []
    try:
        for _ in range(calls):
            ms, _ = await timed(lambda: hub.call(handle, "eval", js="1 + 1"))
            through.append(ms)
            ms, _ = await timed(lambda: direct.call("eval", session=handle.split("@")[0],
                                                    js="1 + 1"))
            local.append(ms)
    finally:
        await direct.close()
        await hub.call(handle, "session.close")
    h, d = statistics.median(through), statistics.median(local)
    return {"hub_ms": round(h, 2), "direct_ms": round(d, 2), "path_ms": round(h - d, 2),
            "calls": calls}


def cortexctl_e2e(ctl_args: list[str], handle: str, out_dir: Path, rounds: int,
                  ) -> dict[str, Any]:
    """cortexctl as a process: started → exited with the file on disk (median ms)."""
    def once(*args: str, out: Path | None = None) -> float:
        t = time.perf_counter()
        if out is None:
            subprocess.run([*binary("cortexctl"), *args], check=True, capture_output=True)
        else:
            with open(out, "wb") as f:
                subprocess.run([*binary("cortexctl"), *ctl_args, *args], check=True, stdout=f)
        return (time.perf_counter() - t) * 1000

    shot, snap = out_dir / "full.png", out_dir / "snapshot.txt"
    figures: dict[str, list[float]] = {"version": [], "snapshot": [], "screenshot": []}
    for _ in range(rounds):
        figures["version"].append(once("--version"))
        figures["snapshot"].append(once("browse", "snapshot", "-s", handle, out=snap))
        t = time.perf_counter()
        subprocess.run([*binary("cortexctl"), *ctl_args, "browse", "screenshot", "-s", handle,
                        "--full-page", "-o", str(shot)], check=True, capture_output=True)
        figures["screenshot"].append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    out["snapshot_file_bytes"] = snap.stat().st_size
    out["screenshot_file_bytes"] = shot.stat().st_size
    return out


async def run(ns: argparse.Namespace, hub_address: str, token: str, base: str,
              socket_path: Path) -> dict[str, Any]:
    url = base + "/rows?n=300"
    hub = HubBrowse(hub_address, token)
    raw: list[dict[str, float]] = []
    through: list[dict[str, float]] = []
    loads: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                           args=list(CHROMIUM_ARGS), timeout=120_000)
        await raw_round(browser, url)  # warm-up
        await hub_round(hub, url)
        pool_waits: list[float] = []
        for i in range(ns.rounds):
            pool_waits.append(round(await pool_ready(socket_path, WARM), 1))
            pair = (raw_round(browser, url), hub_round(hub, url))
            if i % 2:  # raw, hub, hub, raw, …: neither side always goes first
                through.append(await pair[1])
                raw.append(await pair[0])
            else:
                raw.append(await pair[0])
                through.append(await pair[1])
            loads.append(round(os.getloadavg()[0], 2))
        await browser.close()
    counts = BrowserdClient(socket_path)
    await counts.connect()
    pool = {k: v for k, v in (await counts.call("ping")).items()
            if k in ("warm_hits", "warm_unsettled", "cold_launches")}
    await counts.close()
    diff = await diff_figures(hub, base)
    fixed = await fixed_cost(hub, socket_path, 40)
    handle = await hub.open()
    await hub.call(handle, "navigate", url=url)
    await hub.channel.close(None)
    r, h = summarize(raw), summarize(through)
    targets = {}
    for step in STEPS:
        ceiling = 50.0 if step == "new_session" else r[step] * 1.2 + 5
        targets[step] = {"raw_ms": r[step], "hub_ms": h[step], "ceiling_ms": round(ceiling, 2),
                         "ratio": round(h[step] / r[step], 3), "met": h[step] <= ceiling}
    return {"raw": r, "hub": h, "targets": targets, "snapshot_diff": diff,
            "path_fixed_cost": fixed, "round_load_averages": loads,
            "pool_ready_wait_ms": pool_waits, "browserd_pool": pool, "_handle": handle,
            "rounds_raw": raw, "rounds_hub": through}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench/results/browserd_speed.json")
    ns = p.parse_args()
    ns.rounds = max(1, min(ns.rounds, 50))
    base_dir = Path(tempfile.mkdtemp(prefix="bench-browserd-"))
    hub = LocalHub(base_dir, shards=1)
    node = LocalNode(hub, "web-1", extra_args=["--browserd-start",
                                               f"--browserd-arg=--warm-sessions={WARM}",
                                               "--browserd-arg=--max-sessions=16"])
    try:
        hub.start()
        node.start()
        Ctl(hub).wait_nodes(["web-1"])
        wait_until(lambda: log_events(node.log_path, "browserd_connected"), 60, "browserd")
        token = hub.admin_token_file.read_text().strip()
        socket_path = node.dir / "state" / "browserd.sock"
        with PageServer() as pages:
            figures = asyncio.run(run(ns, hub.control_address, token, pages.base, socket_path))
            ctl_args = ["--hub", hub.control_address, "--token-file",
                        str(hub.admin_token_file), "--insecure-loopback"]
            figures["cortexctl_e2e"] = cortexctl_e2e(ctl_args, figures.pop("_handle"),
                                                     base_dir, max(3, ns.rounds))
    finally:
        node.kill()
        hub.kill()
    result = {"bench": "browserd_speed", "rounds": ns.rounds, "machine": machine.describe(),
              "load_average": os.getloadavg(), **figures}
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()

"""Where a new session's first goto goes (issue 11, item 6): in-process Playwright, no hub.

Kinds, alternating round by round on one machine so all see the same load:

- ``raw``: what bench/browserd_speed's raw column does: one long-lived browser that has
  served every earlier navigation; a new context and page, then goto.
- ``fresh``: what a browserd session is: its own persistent context on a new profile
  (browserd's flags and viewport), settled (its tree quiet, browserd/table.py's rule),
  then its first goto.
- ``warmed``: as ``fresh``, but given one navigation to a page of another site
  (``localhost``) before it settled, so the goto is not its browser's first.

Each goto is followed by a second goto of the same URL. Per goto: wall ms, the page's own
timing (``performance.timing``: goto call → navigationStart, → responseStart, → load
event end), the run / run-queue ms of the browser's process tree (/proc schedstat), and
then what reading the title costs right after it: ``page.title()`` (a script in the page:
it waits for the renderer's main thread, busy with the page's first layout and paint
after the load event) against CDP ``Target.getTargetInfo`` (answered by the browser
process). browserd's navigate did the former until this bench showed it.

    .venv/bin/python -m bench.browserd_goto [--rounds 6] [--out bench/results/browserd_goto.json]
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from bench import machine
from browserd import chromium
from browserd.config import CHROMIUM, CHROMIUM_ARGS
from examples.testpages import PageServer

KINDS = ("raw", "fresh", "warmed")
TIMING = """() => { const t = performance.timing; return {
  start: t.navigationStart, response: t.responseStart, dcl: t.domContentLoadedEventEnd,
  load: t.loadEventEnd}; }"""


async def settle(root: int | None) -> float:
    """Wait until the tree ran or waited < 20 ms in a 250 ms window (≤ 10 s); ms waited."""
    began = time.perf_counter()
    if root is None:
        return 0.0
    used = chromium.tree_busy_ms(root)
    while time.perf_counter() - began < 10:
        await asyncio.sleep(0.25)  # the measuring window
        now = chromium.tree_busy_ms(root)
        if now - used < 20:
            break
        used = now
    return (time.perf_counter() - began) * 1000


async def timed_goto(page: Page, url: str, root: int | None) -> dict[str, float]:
    r0, w0 = chromium.tree_schedstat_ms(root) if root else (0.0, 0.0)
    began_ms = time.time() * 1000
    t = time.perf_counter()
    await page.goto(url)
    wall = (time.perf_counter() - t) * 1000
    r1, w1 = chromium.tree_schedstat_ms(root) if root else (0.0, 0.0)
    cdp = await page.context.new_cdp_session(page)
    t = time.perf_counter()
    await cdp.send("Target.getTargetInfo")
    info_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    await page.title()
    title_ms = (time.perf_counter() - t) * 1000
    await cdp.detach()
    pt = await page.evaluate(TIMING)
    return {"target_info_ms": round(info_ms, 1), "title_ms": round(title_ms, 1),
            "wall_ms": round(wall, 1), "to_start_ms": round(pt["start"] - began_ms, 1),
            "to_response_ms": round(pt["response"] - began_ms, 1),
            "to_load_end_ms": round(pt["load"] - began_ms, 1),
            "run_ms": round(r1 - r0, 1), "wait_ms": round(w1 - w0, 1)}


async def one_round(pw: Any, browser: Any, kind: str, url: str, warm_urls: dict[str, str],
                    tmp: Path) -> dict[str, Any]:
    if kind == "raw":
        ctx = await browser.new_context()
        page = await ctx.new_page()
        root = None
        waited = 0.0
    else:
        profile = Path(tempfile.mkdtemp(dir=tmp)) / "profile"
        ctx = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True,
            args=list(CHROMIUM_ARGS), accept_downloads=True,
            viewport={"width": 1280, "height": 720})
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        if kind != "fresh":
            await page.goto(warm_urls[kind])
        root = chromium.browser_pid(chromium.processes(), profile)
        waited = await settle(root)
    first = await timed_goto(page, url, root)
    second = await timed_goto(page, url, root)
    await ctx.close()
    return {"first": first, "second": second, "settle_ms": round(waited),
            "load": round(os.getloadavg()[0], 2)}


def medians(rows: list[dict[str, Any]], which: str) -> dict[str, float]:
    keys = rows[0][which].keys()
    return {k: round(statistics.median(r[which][k] for r in rows), 1) for k in keys}


async def run(rounds: int, base: str) -> dict[str, Any]:
    url = base + "/rows?n=300"
    warm_urls = {"warmed": base.replace("127.0.0.1", "localhost") + "/counter"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-goto-"))
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                           args=list(CHROMIUM_ARGS))
        for kind in KINDS:  # warm-up, not counted (raw's browser serves its first here)
            await one_round(pw, browser, kind, url, warm_urls, tmp)
        for i in range(rounds):
            order = KINDS if i % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                out[kind].append(await one_round(pw, browser, kind, url, warm_urls, tmp))
        await browser.close()
    return {kind: {"first": medians(rows, "first"), "second": medians(rows, "second"),
                   "rounds": rows} for kind, rows in out.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", default="bench/results/browserd_goto.json")
    ns = p.parse_args()
    load_before = os.getloadavg()
    with PageServer() as pages:
        figures = asyncio.run(run(max(1, min(ns.rounds, 50)), pages.base))
    result = {"bench": "browserd_goto", "rounds": ns.rounds, "machine": machine.describe(),
              "load_average_before": load_before, "load_average": os.getloadavg(), **figures}
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {w: v[w] for w in ("first", "second")} for k, v in figures.items()},
                     indent=2))


if __name__ == "__main__":
    main()

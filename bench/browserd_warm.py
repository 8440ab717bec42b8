"""Why a new session's first goto was slow (issue 11, item 6): measured, not guessed.

Two measurements on a real browserd (``--warm-sessions 2``) and Debian's Chromium:

1. **A browser's start after Playwright's launch returns**: a persistent context is
   launched (niced 10 on its autogroup like the pool's, and not), then the CPU its tree
   uses (run + run-queue ms from ``/proc/*/task/*/schedstat``) is sampled every 0.5 s.
2. **The first goto right after an open**, on browserd's socket (no hub): rounds
   alternate between an open from a *settled* pool (``ping`` says ``warm_settled`` = 2)
   and an open right after the pool was drained (two sessions opened and closed just
   before: the session gets a browser that is still starting, or a cold launch), each
   followed by a second goto in the same session (is the *first* navigation special?).
   Per goto: wall ms, and the run and run-queue ms of the session's browser tree.

    .venv/bin/python -m bench.browserd_warm [--rounds 8] [--skip-launch]
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

from playwright.async_api import async_playwright

from bench import machine
from browserd import chromium
from browserd.client import BrowserdClient
from browserd.config import CHROMIUM, CHROMIUM_ARGS
from examples.localbrowser import LocalBrowserd
from examples.testpages import PageServer


async def after_launch(nice: int, samples: int = 12) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    exe = chromium.nice_wrapper(d, CHROMIUM, nice) if nice else CHROMIUM
    async with async_playwright() as pw:
        t = time.perf_counter()
        ctx = await pw.chromium.launch_persistent_context(
            str(d / "profile"), executable_path=str(exe), headless=True,
            args=list(CHROMIUM_ARGS))
        launch_ms = (time.perf_counter() - t) * 1000
        root = chromium.browser_pid(chromium.processes(), d / "profile")
        assert root is not None
        last = chromium.tree_schedstat_ms(root)[0]
        at_return, steps = last, []
        for _ in range(samples):
            await asyncio.sleep(0.5)  # the sampling period
            now = chromium.tree_schedstat_ms(root)[0]
            steps.append(round(max(0.0, now - last), 1))
            last = now
        await ctx.close()
    return {"nice": nice, "launch_ms": round(launch_ms), "cpu_at_return_ms": round(at_return),
            "cpu_ms_per_half_second_after": steps, "cpu_after_return_ms": round(sum(steps)),
            "load": round(os.getloadavg()[0], 2)}


async def goto(c: BrowserdClient, b: LocalBrowserd, sid: str, url: str) -> dict[str, float]:
    root = chromium.browser_pid(chromium.processes(), b.state_dir / "sessions" / sid / "profile")
    assert root is not None
    r0, w0 = chromium.tree_schedstat_ms(root)
    t = time.perf_counter()
    await c.call("navigate", session=sid, url=url)
    wall = (time.perf_counter() - t) * 1000
    r1, w1 = chromium.tree_schedstat_ms(root)
    return {"wall_ms": round(wall, 1), "run_ms": round(r1 - r0, 1), "wait_ms": round(w1 - w0, 1)}


async def first_gotos(b: LocalBrowserd, url: str, rounds: int) -> dict[str, Any]:
    c = BrowserdClient(b.socket)
    await c.connect()
    out: dict[str, list[dict[str, float]]] = {k: [] for k in (
        "settled_first", "settled_second", "drained_first", "drained_second")}
    try:
        for i in range(2 * rounds):
            kind = "drained" if i % 2 else "settled"
            if kind == "settled":
                began = time.monotonic()
                while (await c.call("ping"))["warm_settled"] < 2 and \
                        time.monotonic() - began < 60:
                    await asyncio.sleep(0.1)  # a counter browserd has no event for
            else:
                for _ in range(2):
                    gone = await c.call("session.create", owner="bench")
                    await c.call("session.close", session=gone["session"])
            sid = (await c.call("session.create", owner="bench"))["session"]
            out[f"{kind}_first"].append(await goto(c, b, sid, url))
            out[f"{kind}_second"].append(await goto(c, b, sid, url + "&again=1"))
            await c.call("session.close", session=sid)
        pool = {k: v for k, v in (await c.call("ping")).items()
                if k in ("warm_hits", "warm_unsettled", "cold_launches")}
    finally:
        await c.close()
    medians = {k: {m: round(statistics.median(x[m] for x in v), 1) for m in v[0]}
               for k, v in out.items()}
    return {"medians": medians, "rounds": out, "pool": pool}


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    launches = [] if ns.skip_launch else [await after_launch(n) for n in (10, 0, 10, 0)]
    b = LocalBrowserd(Path(tempfile.mkdtemp(prefix="bench-warm-bd-")), "--warm-sessions", "2",
                      "--max-sessions", "8").start()
    try:
        with PageServer() as pages:
            gotos = await first_gotos(b, pages.base + "/rows?n=300", ns.rounds)
    finally:
        b.stop()
    return {"after_launch": launches, "first_goto": gotos}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out", default="bench/results/browserd_warm.json")
    p.add_argument("--skip-launch", action="store_true", help="only the first-goto rounds")
    ns = p.parse_args()
    ns.rounds = max(1, min(ns.rounds, 50))
    load_before = os.getloadavg()
    figures = asyncio.run(run(ns))
    result = {"bench": "browserd_warm", "rounds": ns.rounds, "machine": machine.describe(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              **figures}
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"after_launch": figures["after_launch"],
                      "first_goto": figures["first_goto"]["medians"],
                      "pool": figures["first_goto"]["pool"]}, indent=2))


if __name__ == "__main__":
    main()

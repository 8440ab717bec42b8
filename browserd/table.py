"""The session table: every session browserd knows, the warm pool, and the watchers.

Invariants:
- At most ``max_sessions`` sessions are open at once (warm browsers are not counted);
  one more is :class:`SessionLimit`.
- A new session is a warm browser taken from the pool when there is one (no launch on
  the caller's path; the pool refills behind it, one launch at a time), else launched.
- Every session directory under ``STATE/sessions`` with a ``session.json`` is a session:
  after a restart they are listed as ``stored`` and reopened by id with their profile
  (cookies, local storage). A directory without one (a warm browser's) is removed at
  start, and Chromium processes left on our profiles by a killed browserd are SIGKILLed.
- The memory watcher reads each open session's renderers' RSS every
  ``memory_check_interval_s``; one over ``session_memory_max_bytes`` is SIGKILLed and the
  session becomes ``crashed`` with reason "over the session memory cap". The idle
  sweeper closes (``expired``, profile kept) sessions unused for ``idle_ttl_s``.
- Warm browsers launch at ``warm_nice`` (their autogroup; browserd/chromium.py says why)
  and the session that takes one sets it to 0 before the open answers (one write to
  /proc: the pool learnt the browser's pid when it launched it).
- A warm browser is *settled* once its tree ran or waited to run less than
  ``SETTLE_QUIET_MS`` in a ``SETTLE_WINDOW_S`` window (at most ``SETTLE_MAX_S`` after
  its launch; the start goes on after Playwright's launch returns, browserd/chromium.py);
  an open takes a settled one first, else the oldest. The pool launches and settles one at a time.
"""

import asyncio
import json
import secrets
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from playwright.async_api import Playwright

from browserd import chromium, shm
from browserd.config import BrowserdSettings
from browserd.errors import BrowserdError, SessionLimit, SessionNotFound
from browserd.session import BrowserSession, check_session_id

SETTLE_WINDOW_S = 0.25
SETTLE_QUIET_MS = 20.0  # in one window: 8 % of a core
SETTLE_MAX_S = 10.0


class SessionTable:
    def __init__(self, settings: BrowserdSettings, pw: Playwright, log: Any) -> None:
        self.settings = settings
        self.pw = pw
        self.log = log
        self.sessions: dict[str, BrowserSession] = {}
        self.warm: deque[BrowserSession] = deque()
        self.counts = {"opened": 0, "closed": 0, "crashed": 0, "memory_killed": 0,
                       "expired": 0, "warm_hits": 0, "warm_unsettled": 0, "cold_launches": 0}
        self._refill = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._renicing: set[asyncio.Task[None]] = set()
        self.root = settings.state_dir / "sessions"
        self.warm_executable: Path | None = None

    # ---- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.settings.warm_nice and self.settings.warm_sessions:
            if chromium.can_unnice():
                self.warm_executable = chromium.nice_wrapper(
                    self.settings.state_dir, self.settings.chromium_path, self.settings.warm_nice)
            else:
                self.log.warning("warm_nice_off", why="no scheduler autogroups, or no "
                                 "CAP_SYS_NICE / RLIMIT_NICE to set a taken browser back to 0")
        killed = await asyncio.to_thread(chromium.kill_orphans, self.root)
        if killed:
            self.log.warning("orphan_browsers_killed", pids=killed)
        for d in sorted(self.root.iterdir()):
            meta = d / "session.json"
            if not meta.exists():
                shutil.rmtree(d, ignore_errors=True)
                continue
            try:
                info = json.loads(meta.read_text())
                sid = check_session_id(info["session"])
            except (ValueError, KeyError, BrowserdError):
                continue
            self.sessions[sid] = BrowserSession(sid, d, self.settings, owner=str(
                info.get("owner", "")), state="stored", created_at=float(
                info.get("created_at", 0)))
        self._tasks = [asyncio.create_task(self._fill_pool()),
                       asyncio.create_task(self._watch_memory()),
                       asyncio.create_task(self._sweep_idle())]
        self._refill.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closing = [s.close("stored") for s in self.sessions.values() if s.context is not None]
        while self.warm:
            w = self.warm.popleft()
            closing.append(w.close("closed"))
            shutil.rmtree(w.directory, ignore_errors=True)
        await asyncio.gather(*closing, return_exceptions=True)

    # ---- sessions -------------------------------------------------------------------

    def open_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.state == "open")

    async def _launch(self, sid: str | None = None, warm: bool = False) -> BrowserSession:
        sid = sid or f"s-{secrets.token_hex(8)}"
        s = BrowserSession(sid, self.root / sid, self.settings)
        try:
            await s.launch(self.pw, self.warm_executable if warm else None)
        except Exception:
            await s.close("closed")
            raise
        return s

    async def create(self, owner: str, session_id: str | None = None) -> BrowserSession:
        if self.open_count() >= self.settings.max_sessions:
            raise SessionLimit(f"{self.settings.max_sessions} sessions are open already",
                               {"max_sessions": self.settings.max_sessions})
        if session_id is not None:
            return await self._reopen(owner, check_session_id(session_id))
        if self.warm:
            s = next((w for w in self.warm if w.settled), self.warm[0])
            self.warm.remove(s)
            self.counts["warm_hits"] += 1
            self.counts["warm_unsettled"] += not s.settled
            if self.warm_executable is not None:
                if s.browser_pid is None or not chromium.set_pid_autogroup_nice(
                        s.browser_pid, 0):
                    t = asyncio.create_task(self._unnice(s))
                    self._renicing.add(t)
                    t.add_done_callback(self._renicing.discard)
        else:
            s = await self._launch()
            self.counts["cold_launches"] += 1
        self._refill.set()
        if s.state != "warm":  # its browser died while it waited in the pool
            await s.close("closed")
            shutil.rmtree(s.directory, ignore_errors=True)
            return await self.create(owner)
        s.owner, s.state, s.created_at = owner, "open", time.time()
        s.save_meta()
        self.sessions[s.id] = s
        self.counts["opened"] += 1
        self.log.info("session_opened", session=s.id, owner=owner)
        return s

    async def _reopen(self, owner: str, sid: str) -> BrowserSession:
        old = self.sessions.get(sid)
        if old is None:
            raise SessionNotFound(f"no session {sid}")
        if old.state == "open":
            return old
        if old.context is not None:
            await old.close("stored")
        s = await self._launch(sid)
        s.owner, s.state, s.created_at = owner or old.owner, "open", old.created_at
        s.save_meta()
        self.sessions[sid] = s
        self.counts["opened"] += 1
        self.log.info("session_reopened", session=sid)
        return s

    def get(self, sid: Any) -> BrowserSession:
        s = self.sessions.get(check_session_id(sid))
        if s is None:
            raise SessionNotFound(f"no session {sid}", {"session": sid})
        return s

    async def close(self, sid: Any) -> dict[str, Any]:
        s = self.get(sid)
        self.sessions.pop(s.id)
        async with s.lock:
            rec = s.stop_recording()
            await s.close("closed")
        artifacts = [str(p) for p in sorted(s.recordings_dir.glob("*"))] + [
            d["path"] for d in s.downloads if "path" in d]
        if not artifacts:
            shutil.rmtree(s.directory, ignore_errors=True)
        self.counts["closed"] += 1
        self.log.info("session_closed", session=s.id, artifacts=len(artifacts))
        return {"session": s.id, "state": "closed", "artifacts": artifacts,
                "recording": str(rec[0]) if rec else None}

    async def _unnice(self, s: BrowserSession) -> None:
        pid = await asyncio.to_thread(chromium.set_autogroup_nice, s.profile, 0)
        if pid is None:
            self.log.warning("warm_unnice_failed", session=s.id)
        elif s.browser_pid is None:
            s.browser_pid = pid

    # ---- watchers -------------------------------------------------------------------

    async def _fill_pool(self) -> None:
        while True:
            await self._refill.wait()
            self._refill.clear()
            while len(self.warm) < self.settings.warm_sessions:
                try:
                    w = await self._launch(warm=True)
                except Exception as e:  # noqa: BLE001 - retried on the next refill
                    self.log.error("warm_launch_failed", error=str(e)[:500])
                    await asyncio.sleep(2)
                    break
                self.warm.append(w)  # takeable at once; preferred once settled
                await self._settle(w)

    async def _settle(self, w: BrowserSession) -> None:
        """Watch the new browser's CPU until its start is over (bounded in time)."""
        procs = await asyncio.to_thread(chromium.processes)
        w.browser_pid = chromium.browser_pid(procs, w.profile)
        if w.browser_pid is None:
            w.settled = True
            return
        began = time.monotonic()
        used = await asyncio.to_thread(chromium.tree_busy_ms, w.browser_pid)
        while w in self.warm and time.monotonic() - began < SETTLE_MAX_S:
            await asyncio.sleep(SETTLE_WINDOW_S)  # a measuring window, not a wait for an event
            now = await asyncio.to_thread(chromium.tree_busy_ms, w.browser_pid)
            if now - used < SETTLE_QUIET_MS:
                break
            used = now
        w.settled = True
        self.log.info("warm_settled", session=w.id,
                      ms=round((time.monotonic() - began) * 1000), busy_ms=round(used))

    def _check_memory(self, live: list[BrowserSession]) -> list[tuple[BrowserSession, int, int]]:
        procs = chromium.processes()
        over = []
        for s in live:
            if s.browser_pid is None:
                s.browser_pid = chromium.browser_pid(procs, s.profile)
            if s.browser_pid is None:
                continue
            for pid in chromium.renderers(procs, s.browser_pid):
                rss = chromium.rss_bytes(pid)
                if rss > self.settings.session_memory_max_bytes:
                    over.append((s, pid, rss))
        return over

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self.settings.memory_check_interval_s)
            live = [s for s in self.sessions.values() if s.state == "open"]
            for s in list(self.sessions.values()):
                if s.state == "crashed" and s.context is not None:
                    self.counts["crashed"] += 1
                    self.log.warning("session_crashed", session=s.id, reason=s.reason)
                    await s.close("crashed")
            if not live:
                continue
            for s, pid, rss in await asyncio.to_thread(self._check_memory, live):
                s.memory_killed = True
                if chromium.kill(pid):
                    self.counts["memory_killed"] += 1
                    self.log.warning("renderer_over_memory_cap", session=s.id, pid=pid,
                                     rss_bytes=rss, cap=self.settings.session_memory_max_bytes)

    async def _sweep_idle(self) -> None:
        period = max(1.0, min(self.settings.idle_ttl_s / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            await asyncio.to_thread(shm.sweep, self.settings.shm_dir)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.state == "open" and now - s.last_used > self.settings.idle_ttl_s \
                        and not s.lock.locked():
                    self.counts["expired"] += 1
                    self.log.info("session_expired", session=s.id)
                    await s.close("expired")

    def stats(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for s in self.sessions.values():
            states[s.state] = states.get(s.state, 0) + 1
        return {"states": states, "warm": len(self.warm),
                "warm_settled": sum(w.settled for w in self.warm), **self.counts}


"""One browser session: its own Chromium (a persistent context on its own profile
directory), one current page, and what the page did (console, network, downloads).

Lifecycle (``state``): ``warm`` (launched ahead by the pool, no owner) → ``open`` →
``closed``; or ``crashed`` (the renderer or the browser died: ``reason`` says which,
``memory`` when browserd killed it over the cap) and ``expired`` (idle TTL). A crashed or
expired session keeps its profile and can be reopened by id; ``closed`` removes it.
Invariants: every buffer is bounded (console, network, downloads); a download is saved
only inside ``DIR/downloads`` under a sanitised name; the session directory is
``STATE/sessions/<id>`` and nothing is written outside it.
"""

import asyncio
import json
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from playwright._impl._api_structures import ScreencastFrame
from playwright.async_api import (
    BrowserContext,
    CDPSession,
    ConsoleMessage,
    Download,
    Page,
    Playwright,
    Request,
    Response,
)

from browserd.config import CHROMIUM_ARGS, BrowserdSettings
from browserd.errors import BadRequest, SessionCrashed

SESSION_ID = re.compile(r"^s-[0-9a-f]{16}$")
MAX_DOWNLOADS = 100


def check_session_id(value: Any) -> str:
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise BadRequest(f"bad session id {value!r:.80}")
    return value


def safe_filename(name: str) -> str:
    base = Path(name.replace("\\", "/")).name.lstrip(".")
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base)[:120]
    return base or "download"


@dataclass(eq=False)
class BrowserSession:
    id: str
    directory: Path
    settings: BrowserdSettings
    owner: str = ""
    state: str = "warm"
    reason: str = ""
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    context: BrowserContext | None = None
    page: Page | None = None
    cdp: CDPSession | None = None
    browser_pid: int | None = None
    settled: bool = False  # warm: its browser's start has finished using CPU (table.py)
    memory_killed: bool = False
    console: deque[dict[str, Any]] = field(default_factory=deque)
    network: deque[dict[str, Any]] = field(default_factory=deque)
    downloads: list[dict[str, Any]] = field(default_factory=list)
    last_snapshot: str = ""
    recording: IO[bytes] | None = None
    recording_path: Path | None = None
    recording_frames: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closing: bool = False

    @property
    def profile(self) -> Path:
        return self.directory / "profile"

    @property
    def downloads_dir(self) -> Path:
        return self.directory / "downloads"

    @property
    def recordings_dir(self) -> Path:
        return self.directory / "recordings"

    def describe(self) -> dict[str, Any]:
        url = self.page.url if self.page is not None and self.state == "open" else ""
        return {"session": self.id, "state": self.state, "reason": self.reason,
                "owner": self.owner, "url": url, "created_at": self.created_at,
                "recording": self.recording is not None, "downloads": len(self.downloads)}

    def live_page(self) -> Page:
        if self.state != "open" or self.page is None:
            raise SessionCrashed(f"session {self.id} is {self.state}"
                                 + (f": {self.reason}" if self.reason else ""),
                                 {"session": self.id, "state": self.state, "reason": self.reason})
        self.last_used = time.monotonic()
        return self.page

    def save_meta(self) -> None:
        meta = {"session": self.id, "owner": self.owner, "created_at": self.created_at}
        tmp = self.directory / "session.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.directory / "session.json")

    async def launch(self, pw: Playwright, executable: Path | None = None) -> None:
        """Start this session's Chromium (``executable``: a wrapper that runs it niced)."""
        for d in (self.profile, self.downloads_dir, self.recordings_dir):
            d.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self.context = await pw.chromium.launch_persistent_context(
            str(self.profile), executable_path=str(executable or s.chromium_path), headless=True,
            args=[*CHROMIUM_ARGS, *s.extra_args], accept_downloads=True,
            viewport={"width": s.viewport_width, "height": s.viewport_height})
        self.context.set_default_timeout(s.action_timeout_ms)
        self.context.set_default_navigation_timeout(s.navigation_timeout_ms)
        self.context.on("close", self._on_context_close)
        self.context.on("page", self._adopt)
        page = self.context.pages[0] if self.context.pages else await self.context.new_page()
        self._adopt(page)
        self.cdp = await self.context.new_cdp_session(page)

    def _adopt(self, page: Page) -> None:
        """The newest page (a popup too) becomes the session's page."""
        self.page = page
        page.on("crash", self._on_crash)
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self._push(self.console, {
            "type": "pageerror", "text": str(err)[:4000], "at": time.time()},
            self.settings.console_buffer))
        page.on("request", self._on_request)
        page.on("response", self._on_response)
        page.on("requestfailed", lambda r: self._request_entry(r).update(
            failure=r.failure or "failed"))
        page.on("download", lambda d: asyncio.ensure_future(self._on_download(d)))

    @staticmethod
    def _push(buf: deque[dict[str, Any]], item: dict[str, Any], cap: int) -> None:
        buf.append(item)
        while len(buf) > cap:
            buf.popleft()

    def _on_console(self, msg: ConsoleMessage) -> None:
        self._push(self.console, {"type": msg.type, "text": msg.text[:4000], "at": time.time()},
                   self.settings.console_buffer)

    def _on_request(self, req: Request) -> None:
        self._push(self.network, {"id": id(req), "method": req.method, "url": req.url[:2000],
                                  "resource_type": req.resource_type, "status": None,
                                  "failure": None, "at": time.time()},
                   self.settings.network_buffer)

    def _request_entry(self, req: Request) -> dict[str, Any]:
        entry: dict[str, Any]
        for entry in reversed(self.network):
            if entry["id"] == id(req):
                return entry
        return {"id": None}

    def _on_response(self, resp: Response) -> None:
        self._request_entry(resp.request).update(status=resp.status)

    async def _on_download(self, download: Download) -> None:
        if len(self.downloads) >= MAX_DOWNLOADS:
            await download.cancel()
            return
        name = safe_filename(download.suggested_filename)
        target = (self.downloads_dir / name).resolve()
        n = 1
        while target.exists():
            target = (self.downloads_dir / f"{n}-{name}").resolve()
            n += 1
        if target.parent != self.downloads_dir.resolve():  # confined: never outside
            await download.cancel()
            return
        try:
            await download.save_as(target)
        except Exception as e:  # noqa: BLE001 - a failed download is recorded, not fatal
            self.downloads.append({"name": name, "error": str(e)[:500]})
            return
        self.downloads.append({"name": target.name, "path": str(target),
                               "size": target.stat().st_size, "url": download.url[:2000]})

    def _on_crash(self, _page: Page) -> None:
        if self.state == "open":
            self.state = "crashed"
            self.reason = ("renderer killed: over the session memory cap" if self.memory_killed
                           else "renderer crashed")

    def _on_context_close(self, _ctx: BrowserContext) -> None:
        if not self._closing and self.state in ("open", "warm"):
            self.state = "crashed"
            self.reason = self.reason or "browser exited"

    async def close(self, state: str = "closed") -> None:
        self._closing = True
        self.stop_recording()
        if self.context is not None:
            try:
                await asyncio.wait_for(self.context.close(), 10)
            except Exception:  # noqa: BLE001 - a dead browser is closed already
                pass
        self.context = self.page = self.cdp = None
        if self.state not in ("crashed",) or state == "closed":
            self.state = state
        if state == "closed":
            shutil.rmtree(self.profile, ignore_errors=True)

    def start_recording(self) -> Path:
        if self.recording is not None:
            raise BadRequest(f"session {self.id} is already recording")
        path = self.recordings_dir / f"{int(time.time() * 1000)}.mjpeg"
        self.recording = open(path, "wb")  # noqa: SIM115 - held until stop_recording
        self.recording_path, self.recording_frames = path, 0
        return path

    def on_frame(self, frame: ScreencastFrame) -> None:
        if self.recording is not None:
            self.recording.write(frame["data"])
            self.recording_frames += 1

    def stop_recording(self) -> tuple[Path, int] | None:
        if self.recording is None or self.recording_path is None:
            return None
        self.recording.close()
        self.recording = None
        return self.recording_path, self.recording_frames

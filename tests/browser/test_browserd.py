"""browserd with a real headless Chromium: sessions, perception, action, limits, restarts."""

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from browserd import chromium, errors, shm
from browserd.client import BrowserdClient
from examples.localbrowser import LocalBrowserd
from examples.testpages import PageServer

pytestmark = pytest.mark.browser


def run(b: LocalBrowserd, body: Callable[[BrowserdClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = BrowserdClient(b.socket)
        await client.connect()
        try:
            return await body(client)
        finally:
            await client.close()
    return asyncio.run(main())


def ref_of(snapshot: str, needle: str) -> str:
    for line in snapshot.splitlines():
        if needle in line and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise AssertionError(f"no element with {needle!r} in:\n{snapshot}")


def test_form_filled_and_submitted_by_reference(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        s = await c.call("session.create", url=pages.base + "/form", owner="t1")
        sid = s["session"]
        snap = (await c.call("snapshot", session=sid))["text"]
        await c.call("type", session=sid, ref=ref_of(snap, 'textbox "Name"'), text="Ada")
        await c.call("select", session=sid, ref=ref_of(snap, "combobox"), values=["blue"])
        await c.call("click", session=sid, ref=ref_of(snap, 'button "Send"'))
        await c.call("navigate", session=sid, url=pages.base + "/done?name=Ada&colour=blue",
                     wait_until="domcontentloaded")
        done = (await c.call("snapshot", session=sid))["text"]
        assert 'heading "Hello Ada"' in done and "colour blue" in done
        net = (await c.call("network", session=sid))["requests"]
        assert any("/done?name=Ada&colour=blue" in r["url"] and r["status"] == 200
                   for r in net)
        listed = (await c.call("session.list"))["sessions"]
        assert [x["owner"] for x in listed if x["session"] == sid] == ["t1"]
        closed = await c.call("session.close", session=sid)
        assert closed["state"] == "closed"
        with pytest.raises(errors.SessionNotFound):
            await c.call("snapshot", session=sid)
    run(b, body)


def test_snapshot_diff_is_what_changed(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/counter"))["session"]
        full = await c.call("snapshot", session=sid)
        same = await c.call("snapshot", session=sid, diff=True)
        assert same["diff"] == "" and not same["changed"]
        await c.call("click", session=sid, ref=ref_of(full["text"], 'button "Add"'))
        changed = await c.call("snapshot", session=sid, diff=True)
        assert "-" in changed["diff"] and "+ " in changed["diff"].replace("+  ", "+ ")
        assert "count 1" in changed["diff"] and "count 0" in changed["diff"]
        assert len(changed["diff"]) < full["full_bytes"] / 5
        # navigation: a new page is all new lines
        await c.call("navigate", session=sid, url=pages.base + "/form")
        nav = await c.call("snapshot", session=sid, diff=True)
        assert 'heading "Sign up"' in nav["diff"]
    run(b, body)


def test_js_error_is_an_error_and_console_is_kept(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/console"))["session"]
        assert (await c.call("eval", session=sid, js="1 + 2"))["value"] == 3
        assert (await c.call("eval", session=sid, js="({a: [1, 'x'], b: null})"))["value"] == \
            {"a": [1, "x"], "b": None}
        with pytest.raises(errors.PageError, match="nope"):
            await c.call("eval", session=sid, js="() => { throw new Error('nope') }")
        msgs = (await c.call("console", session=sid))["messages"]
        texts = [(m["type"], m["text"]) for m in msgs]
        assert ("log", "hello from the page") in texts
        assert any(t == "pageerror" and "boom in a timer" in x for t, x in texts)
        # the session still works after the error
        assert (await c.call("eval", session=sid, js="document.title"))["value"] == "Console"
    run(b, body)


def test_hung_script_is_cut_by_its_timeout(browserds, pages: PageServer) -> None:
    b = browserds("--eval-timeout-ms", "1500")

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/hang"))["session"]
        other = (await c.call("session.create", url=pages.base + "/form"))["session"]
        with pytest.raises(errors.OpTimeout, match="evaluate timed out after 1500 ms"):
            await c.call("eval", session=sid, js="() => { while (true) {} }")
        # the looping page answers again, and browserd still serves the others
        assert (await c.call("eval", session=sid, js="40 + 2"))["value"] == 42
        assert (await c.call("eval", session=other, js="document.title"))["value"] == "Form"
        with pytest.raises(errors.OpTimeout):
            await c.call("navigate", session=sid, url=pages.base + "/form", timeout_ms=1,
                         wait_until="load")
    run(b, body)


def test_memory_hog_is_killed_at_its_cap(browserds, pages: PageServer) -> None:
    b = browserds("--session-memory-max-mib", "300")

    async def body(c: BrowserdClient) -> None:
        other = (await c.call("session.create", url=pages.base + "/form"))["session"]
        sid = (await c.call("session.create"))["session"]
        try:
            await c.call("navigate", session=sid, url=pages.base + "/hog", timeout_ms=60_000)
        except errors.BrowserdError:
            pass  # the renderer may die during the navigation
        for _ in range(600):
            state = {x["session"]: x for x in (await c.call("session.list"))["sessions"]}
            if state[sid]["state"] == "crashed":
                break
            await asyncio.sleep(0.1)
        assert state[sid]["state"] == "crashed"
        assert "memory cap" in state[sid]["reason"]
        with pytest.raises(errors.SessionCrashed, match="memory cap"):
            await c.call("snapshot", session=sid)
        assert state[other]["state"] == "open"
        assert (await c.call("eval", session=other, js="document.title"))["value"] == "Form"
        assert (await c.call("ping"))["memory_killed"] >= 1
    run(b, body)


def test_cookies_survive_a_browserd_restart(browserds, pages: PageServer) -> None:
    b = browserds()

    async def first(c: BrowserdClient) -> str:
        sid = (await c.call("session.create", url=pages.base + "/cookie?v=mint"))["session"]
        await c.call("eval", session=sid, js="localStorage.setItem('k', 'kept')")
        return str(sid)
    sid = run(b, first)
    assert b.stop() == 0
    b.start()

    async def second(c: BrowserdClient) -> None:
        listed = {x["session"]: x["state"] for x in (await c.call("session.list"))["sessions"]}
        assert listed[sid] == "stored"
        await c.call("session.create", session=sid, url=pages.base + "/whoami")
        snap = (await c.call("snapshot", session=sid))["text"]
        assert "flavour=mint" in snap
        assert (await c.call("eval", session=sid, js="localStorage.getItem('k')"))["value"] \
            == "kept"
    run(b, second)


def test_ten_sessions_at_once(browserds, pages: PageServer) -> None:
    b = browserds("--max-sessions", "10", "--warm-sessions", "2")

    async def body(c: BrowserdClient) -> None:
        async def one(i: int) -> tuple[str, str]:
            sid = (await c.call("session.create", url=pages.base + f"/done?name=n{i}"))["session"]
            snap = (await c.call("snapshot", session=sid))["text"]
            return sid, snap
        got = await asyncio.gather(*(one(i) for i in range(10)))
        assert len({sid for sid, _ in got}) == 10
        for i, (_, snap) in enumerate(got):
            assert f'heading "Hello n{i}"' in snap
        with pytest.raises(errors.SessionLimit):
            await c.call("session.create")
        await c.call("session.close", session=got[0][0])
        await c.call("session.create")  # room again
    run(b, body)


def test_screenshots_handoff_and_inline_agree(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/rows?n=300"))["session"]
        full = await c.call("screenshot", session=sid, full_page=True)
        assert full["data"][:8] == b"\x89PNG\r\n\x1a\n"
        assert full["handoff"]["sha256"] == hashlib.sha256(full["data"]).hexdigest()
        inline = await c.call("screenshot", session=sid, full_page=True, inline=True)
        assert "handoff" not in inline and inline["data"] == full["data"]
        view = await c.call("screenshot", session=sid)
        assert len(view["data"]) < len(full["data"])
        snap = (await c.call("snapshot", session=sid))["text"]
        elem = await c.call("screenshot", session=sid, ref=ref_of(snap, 'button "Go"'))
        assert elem["data"][:4] == b"\x89PNG" and len(elem["data"]) < len(view["data"])
        page = await c.call("html", session=sid)
        assert b"300 rows" in page["data"]
        assert not list(Path("/dev/shm").glob(f"{shm.PREFIX}{os.getpid()}-*"))
    run(b, body)


def test_local_schemes_refused_and_downloads_confined(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/form"))["session"]
        for url in ("file:///etc/passwd", "chrome://version", "javascript:alert(1)",
                    "data:text/html,hi"):
            with pytest.raises(errors.UrlRefused):
                await c.call("navigate", session=sid, url=url)
        with pytest.raises(errors.PageError):  # a page cannot reach it either
            await c.call("eval", session=sid,
                         js="() => fetch('file:///etc/passwd').then(r => r.text())")
        await c.call("eval", session=sid, js=f"() => {{ location.href = "
                                               f"'{pages.base}/download'; }}")
        for _ in range(200):
            dl = (await c.call("downloads", session=sid))["downloads"]
            if dl:
                break
            await asyncio.sleep(0.05)
        # the server suggested "../../evil.txt": the name kept is a plain file name
        assert dl and dl[0]["name"].endswith("evil.txt") and "/" not in dl[0]["name"]
        assert dl[0]["size"] == 1000
        assert Path(dl[0]["path"]).parent == b.state_dir / "sessions" / sid / "downloads"
    run(b, body)


def test_recording_is_collected(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/counter"))["session"]
        await c.call("record.start", session=sid)
        snap = (await c.call("snapshot", session=sid))["text"]
        for _ in range(3):
            await c.call("click", session=sid, ref=ref_of(snap, 'button "Add"'))
        for _ in range(100):
            await c.call("eval", session=sid, js="new Promise(r => requestAnimationFrame(r))")
        rec = await c.call("record.stop", session=sid)
        assert rec["frames"] >= 1 and rec["data"][:2] == b"\xff\xd8"  # JPEG frames
        closed = await c.call("session.close", session=sid)
        assert rec["path"] in closed["artifacts"] and Path(rec["path"]).exists()
    run(b, body)


def _autogroup_nice(profile: Path) -> int | None:
    pid = chromium.browser_pid(chromium.processes(), profile)
    if pid is None:
        return None
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def test_warm_browser_launched_niced_settled_and_taken_at_nice_0(browserds) -> None:
    if not chromium.can_unnice():
        pytest.skip("no scheduler autogroups or no right to renice here")
    b = browserds("--warm-sessions", "1", "--warm-nice", "12")

    async def body(c: BrowserdClient) -> None:
        for _ in range(600):  # the pool fills and settles behind the ready line
            if (await c.call("ping"))["warm_settled"] == 1:
                break
            await asyncio.sleep(0.05)
        warm = [d / "profile" for d in (b.state_dir / "sessions").iterdir()]
        assert len(warm) == 1 and _autogroup_nice(warm[0]) == 12
        sid = (await c.call("session.create"))["session"]
        assert b.state_dir / "sessions" / sid / "profile" == warm[0]
        assert _autogroup_nice(warm[0]) == 0  # set back before the open answered
        stats = await c.call("ping")
        assert (stats["warm_hits"], stats["warm_unsettled"]) == (1, 0)
    run(b, body)


def test_steps_run_in_order_in_one_call(browserds, pages: PageServer) -> None:
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create", url=pages.base + "/shop"))["session"]
        snap = (await c.call("snapshot", session=sid))["text"]
        note, place = ref_of(snap, 'textbox "note"'), ref_of(snap, 'button "Place order"')
        got = await c.call("steps", session=sid, steps=[
            {"op": "type", "ref": note, "text": "fast"}, {"op": "click", "ref": place}])
        assert len(got["results"]) == 2
        after = (await c.call("snapshot", session=sid))["text"]
        assert 'heading "Order placed"' in after and "fast" in after
        with pytest.raises(errors.RefNotFound) as e:  # the second step fails: named
            await c.call("steps", session=sid, steps=[
                {"op": "type", "ref": note, "text": "again"}, {"op": "click", "ref": "e999"}])
        assert e.value.details["step"] == 1 and len(e.value.details["done"]) == 1
        with pytest.raises(errors.BadRequest):
            await c.call("steps", session=sid, steps=[{"op": "eval", "js": "1"}])
        # both refs counted at once before the type, whose input then removes the button
        await c.call("navigate", session=sid, url=pages.base + "/vanish")
        snap = (await c.call("snapshot", session=sid))["text"]
        note, gone = ref_of(snap, 'textbox "note"'), ref_of(snap, 'button "Gone soon"')
        with pytest.raises(errors.RefNotFound) as e:
            await c.call("steps", session=sid, steps=[
                {"op": "type", "ref": note, "text": "x"},
                {"op": "click", "ref": gone, "timeout_ms": 1000}])
        assert e.value.details["step"] == 1 and len(e.value.details["done"]) == 1
    run(b, body)


def test_navigate_answers_at_load_with_the_title(browserds, pages: PageServer) -> None:
    """The title comes from the browser process: a page whose main thread is busy right
    after its load event (a script in it would wait 20 s) is answered at once."""
    b = browserds()

    async def body(c: BrowserdClient) -> None:
        sid = (await c.call("session.create"))["session"]
        got = await c.call("navigate", session=sid, url=pages.base + "/rows?n=5")
        assert (got["title"], got["status"]) == ("Rows", 200)
        got = await c.call("navigate", session=sid, url=pages.base + "/untitled")
        assert got["title"] == ""  # not the URL the browser shows for it
        got = await c.call("navigate", session=sid, url=pages.base + "/busy")
        assert got["title"] == "Busy" and got["url"].endswith("/busy")
        await c.call("session.close", session=sid)
    run(b, body)

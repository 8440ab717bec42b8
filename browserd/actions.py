"""Perception and action on a session's page: the operations behind browserd's ops.

Each function takes the session and the request's ``args`` and returns the result map.
Playwright's errors become browserd's at this boundary: its ``TimeoutError`` is
:class:`OpTimeout`, any other Playwright ``Error`` (a throwing script, a detached
element) is :class:`PageError`. A timeout also stops whatever script the page is running
(CDP ``Runtime.terminateExecution``), so a page stuck in a loop answers the next call.
Element references are those of the last snapshot (``[ref=eN]``), resolved by
Playwright's ``aria-ref`` selector.

navigate answers when the load event has fired, as Playwright's goto returns: the title
is the browser process's (CDP ``Target.getTargetInfo``, ~2 ms), not ``page.title()``, a
script in the page that waits for the renderer's main thread, which after the load event
is busy with the page's first layout and paint (a 300-row table: 128-134 ms on a quiet
machine; bench/browserd_goto.py). Through the hub that wait was 149-187 ms of navigate
(1,112 ms in one round at load 46) while raw Playwright's goto answered 2-12 ms after the
load event; the excess of earlier runs (118-212 ms over raw, 1.7-2.4x) is the size of
that wait, not the path's (5-9 ms) nor a fresh browser's (issue 11; bench/README.md).
The browser shows the URL as the title of a page without one, so a title that could be
the URL (it holds the page's host, or is part of the URL) is read from the page after all.
"""

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from browserd import snapshot as snap
from browserd.errors import BadRequest, BrowserdError, OpTimeout, PageError, RefNotFound
from browserd.session import BrowserSession
from browserd.urls import check_url

REF = re.compile(r"^(f\d+)?e\d{1,7}$")
WAIT_UNTIL = ("load", "domcontentloaded", "networkidle", "commit")
MAX_TEXT = 1024 * 1024
T = TypeVar("T")


def _arg(args: dict[str, Any], name: str, kind: type[T], default: T | None = None) -> T:
    value = args.get(name, default)
    if value is None or not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise BadRequest(f"argument {name!r} must be a {kind.__name__}")
    return value


def _timeout_ms(args: dict[str, Any], default: int) -> int:
    value = args.get("timeout_ms") or default
    if not isinstance(value, int) or not 0 < value <= 600_000:
        raise BadRequest("timeout_ms must be an integer in (0, 600000]")
    return value


async def _stop_scripts(s: BrowserSession) -> None:
    if s.cdp is not None:
        try:
            await asyncio.wait_for(s.cdp.send("Runtime.terminateExecution"), 5)
        except Exception:  # noqa: BLE001 - best effort: the renderer may be gone
            pass


async def guarded(s: BrowserSession, what: str, timeout_ms: int,
                  call: Callable[[], Awaitable[T]]) -> T:
    """Run one Playwright call under browserd's timeout and error mapping."""
    try:
        return await asyncio.wait_for(call(), timeout_ms / 1000 + 1)
    except (TimeoutError, PlaywrightTimeout) as e:
        await _stop_scripts(s)
        raise OpTimeout(f"{what} timed out after {timeout_ms} ms", {"timeout_ms": timeout_ms}) \
            from e
    except PlaywrightError as e:
        s.live_page()  # a crash during the call is reported as the crash
        raise PageError(f"{what}: {e.message.splitlines()[0] if e.message else e}"[:4000],
                        {"name": e.name or ""}) from e


def _ref(args: dict[str, Any]) -> str:
    ref = _arg(args, "ref", str)
    if not REF.match(ref):
        raise BadRequest(f"bad element reference {ref!r:.40} (want eN from a snapshot)")
    return ref


async def _locate(s: BrowserSession, args: dict[str, Any], checked: bool = False) -> Locator:
    """The element of ``args["ref"]``; a ref the page does not hold is :class:`RefNotFound`
    at once (Playwright's action would wait for it until its timeout). ``checked``: its
    presence was just counted (``steps``)."""
    ref = _ref(args)
    loc = s.live_page().locator(f"aria-ref={ref}")
    if not checked:
        await _present(s, ref, loc)
    return loc


async def _present(s: BrowserSession, ref: str, loc: Locator) -> None:
    count = await guarded(s, f"resolve {ref}", 5000, loc.count)
    if count == 0:
        raise RefNotFound(f"no element {ref} on the page (take a new snapshot)", {"ref": ref})


async def navigate(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    url = _arg(args, "url", str)
    check_url(url, s.settings.allow_schemes, s.settings.allowed_origins)
    wait = args.get("wait_until", "load")
    if wait not in WAIT_UNTIL:
        raise BadRequest(f"wait_until must be one of {', '.join(WAIT_UNTIL)}")
    timeout = _timeout_ms(args, s.settings.navigation_timeout_ms)
    page = s.live_page()
    resp = await guarded(s, f"navigate to {url}", timeout,
                         lambda: page.goto(url, wait_until=wait, timeout=timeout))
    return {"url": page.url, "status": resp.status if resp is not None else None,
            "title": await title(s, page)}


async def title(s: BrowserSession, page: Page) -> str:
    """The page's title without waiting for its renderer (the module docstring says why)."""
    shown = ""
    if s.cdp is not None:
        try:
            info = (await asyncio.wait_for(s.cdp.send("Target.getTargetInfo"), 5))["targetInfo"]
            # the CDP session is the first page's; a popup since is the session's page
            shown = str(info["title"]) if info["url"] == page.url else ""
        except Exception:  # noqa: BLE001 - read from the page below
            shown = ""
    # Chromium shows the URL (its host, unescaped) as the title of a page without one
    host = (urlsplit(page.url).hostname or "").lower()
    if shown and shown not in page.url and not (host and host in shown.lower()):
        return shown
    return await guarded(s, "title", 5000, page.title)


async def snapshot(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    page = s.live_page()
    text = await guarded(s, "snapshot", _timeout_ms(args, s.settings.action_timeout_ms),
                         lambda: page.aria_snapshot(mode="ai"))
    before = s.last_snapshot
    if not args.get("peek"):  # a monitor's look leaves the caller's diff baseline alone
        s.last_snapshot = text
    out: dict[str, Any] = {"url": page.url, "full_bytes": len(text.encode()),
                           "refs": len(snap.refs(text))}
    if args.get("diff") and before:
        out["diff"] = snap.diff(before, text)
        out["changed"] = bool(out["diff"])
    else:
        out["text"] = text
    return out


async def act(s: BrowserSession, op: str, args: dict[str, Any],
              checked: bool = False) -> dict[str, Any]:
    """click, type, select, hover, press, scroll — by element reference (``checked``:
    :func:`_locate`'s; an action on it that times out asks once whether the ref is gone)."""
    if not checked:
        return await _act(s, op, args, False)
    try:
        return await _act(s, op, args, True)
    except OpTimeout:
        ref = _ref(args)
        await _present(s, ref, s.live_page().locator(f"aria-ref={ref}"))
        raise


async def _act(s: BrowserSession, op: str, args: dict[str, Any],
               checked: bool) -> dict[str, Any]:
    timeout = _timeout_ms(args, s.settings.action_timeout_ms)
    page = s.live_page()
    if op == "press" and "ref" not in args:
        key = _arg(args, "key", str)
        await guarded(s, f"press {key}", timeout, lambda: page.keyboard.press(key))
        return {"url": page.url}
    if op == "scroll" and "ref" not in args:
        dx, dy = int(args.get("dx", 0)), int(args.get("dy", 0))
        await guarded(s, "scroll", timeout, lambda: page.mouse.wheel(dx, dy))
        return {"url": page.url}
    loc = await _locate(s, args, checked)
    ref = args["ref"]
    if op == "click":
        await guarded(s, f"click {ref}", timeout, lambda: loc.click(timeout=timeout))
    elif op == "type":
        text = _arg(args, "text", str)
        if len(text) > MAX_TEXT:
            raise BadRequest("text is over 1 MiB")
        await guarded(s, f"type into {ref}", timeout, lambda: loc.fill(text, timeout=timeout))
        if args.get("submit"):
            await guarded(s, f"submit {ref}", timeout, lambda: loc.press("Enter"))
    elif op == "select":
        values = args.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BadRequest("values must be a list of strings")
        await guarded(s, f"select in {ref}", timeout,
                      lambda: loc.select_option(values, timeout=timeout))
    elif op == "hover":
        await guarded(s, f"hover {ref}", timeout, lambda: loc.hover(timeout=timeout))
    elif op == "press":
        key = _arg(args, "key", str)
        await guarded(s, f"press {key} on {ref}", timeout, lambda: loc.press(key, timeout=timeout))
    elif op == "scroll":
        await guarded(s, f"scroll to {ref}", timeout,
                      lambda: loc.scroll_into_view_if_needed(timeout=timeout))
    else:
        raise BadRequest(f"unknown action {op!r}")
    return {"url": page.url}


STEP_OPS = ("click", "type", "select", "hover", "press", "scroll")
MAX_STEPS = 32
CHANGES_PAGE = ("click", "press", "select")


async def _present_ahead(s: BrowserSession, todo: list[dict[str, Any]]) -> int:
    """Count the refs of the leading steps up to the first that may change the page (a
    click, press or select, or a type that submits) in one call instead of one each (a
    round trip to the page: 3-30 ms at load 20); how many leading steps are so checked
    (0 when one is missing: then each step checks its own and that one fails at its turn).
    An element an earlier step removed is found gone when its action times out."""
    lead: list[str] = []
    for step in todo:
        if not isinstance(step.get("ref"), str) or not REF.match(step["ref"]):
            break  # none, or a bad one: that step says so at its turn
        lead.append(step["ref"])
        if step["op"] in CHANGES_PAGE or (step["op"] == "type" and step.get("submit")):
            break
    refs = list(dict.fromkeys(lead))
    if len(lead) < 2:
        return 0
    page = s.live_page()
    union = page.locator(f"aria-ref={refs[0]}")
    for ref in refs[1:]:
        union = union.or_(page.locator(f"aria-ref={ref}"))
    found = await guarded(s, "resolve " + ", ".join(refs), 5000, union.count)
    return len(lead) if found == len(refs) else 0


async def steps(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    """Several actions in one call, in order (one round trip instead of one each; the
    leading refs counted at once, :func:`_present_ahead`); the first that fails is the
    call's error, its ``details`` naming the step and the results of those before it."""
    todo = args.get("steps")
    if not isinstance(todo, list) or not 0 < len(todo) <= MAX_STEPS or not all(
            isinstance(t, dict) and t.get("op") in STEP_OPS for t in todo):
        raise BadRequest(f"steps must be a list of 1..{MAX_STEPS} maps, each with an op in "
                         f"{', '.join(STEP_OPS)}")
    checked = await _present_ahead(s, todo)
    done: list[dict[str, Any]] = []
    for i, step in enumerate(todo):
        try:
            done.append(await act(s, step["op"], step, i < checked))
        except BrowserdError as e:
            e.details = {**e.details, "step": i, "done": done}
            raise
    return {"results": done, "url": s.live_page().url}


async def evaluate(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    js = _arg(args, "js", str)
    if len(js) > MAX_TEXT:
        raise BadRequest("script is over 1 MiB")
    timeout = _timeout_ms(args, s.settings.eval_timeout_ms)
    page = s.live_page()
    value = await guarded(s, "evaluate", timeout, lambda: page.evaluate(js, args.get("arg")))
    # JSON-able: a Date or other rich value Playwright hands back becomes its string
    return {"value": json.loads(json.dumps(value, default=str))}


async def screenshot(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    timeout = _timeout_ms(args, s.settings.action_timeout_ms)
    if args.get("ref"):
        loc = await _locate(s, args)
        data = await guarded(s, "element screenshot", timeout,
                             lambda: loc.screenshot(type="png", timeout=timeout))
    else:
        page = s.live_page()
        full = bool(args.get("full_page"))
        data = await guarded(s, "screenshot", timeout, lambda: page.screenshot(
            type="png", full_page=full, timeout=timeout))
    return {"data": data, "mime": "image/png"}


async def html(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    page = s.live_page()
    text = await guarded(s, "html", _timeout_ms(args, s.settings.action_timeout_ms),
                         page.content)
    return {"data": text.encode(), "mime": "text/html", "url": page.url}


def console(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    s.live_page()
    out = {"messages": list(s.console)}
    if args.get("clear"):
        s.console.clear()
    return out


def network(s: BrowserSession, args: dict[str, Any]) -> dict[str, Any]:
    s.live_page()
    out = {"requests": [{k: v for k, v in e.items() if k != "id"} for e in s.network]}
    if args.get("clear"):
        s.network.clear()
    return out


async def record(s: BrowserSession, op: str) -> dict[str, Any]:
    page = s.live_page()
    if op == "record.start":
        path = s.start_recording()
        await guarded(s, "record start", 10_000,
                      lambda: page.screencast.start(on_frame=s.on_frame))
        return {"path": str(path)}
    try:
        await guarded(s, "record stop", 10_000, page.screencast.stop)
    finally:
        done = s.stop_recording()
    if done is None:
        raise BadRequest(f"session {s.id} is not recording")
    path, frames = done
    return {"path": str(path), "frames": frames, "data": path.read_bytes(),
            "mime": "video/x-motion-jpeg"}

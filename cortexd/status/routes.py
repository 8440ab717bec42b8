"""The status page's routes and their authentication.

The page is behind the Control API's credentials: an admin bearer token (the one
``cortexctl`` uses). A program sends ``Authorization: Bearer TOKEN``. A browser
gets a cookie: ``/status?token=TOKEN`` (or the login form ``/status/login``, which
posts it) checks the token, sets ``cortex_status`` (HttpOnly, SameSite=Strict,
Path=/status) and redirects to ``/status``, so the token leaves the address bar.
The cookie holds the token itself: the credential table is re-read on SIGHUP, and
a revoked token stops opening the page at once. Read-only: the only POST is the
login, which changes nothing on the hub.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cortex.tokens import METADATA_KEY
from cortexd.ingress.auth import Authenticator
from cortexd.status.collect import StatusSource
from cortexd.status.page import LOGIN_HTML, PAGE_HTML

COOKIE = "cortex_status"
ROLES = frozenset({"admin"})  # as ListNodes/ListShards
MAX_TOKEN_CHARS = 4096


def _token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE, "")


def _check(auth: Authenticator, token: str) -> str | None:
    """None when ``token`` opens the page, else why not."""
    if not token:
        return "no credential"
    if len(token) > MAX_TOKEN_CHARS:
        return "credential too long"
    principal = auth.identify([(METADATA_KEY, f"Bearer {token}")])
    if principal is None:
        return "unknown credential"
    if principal.role not in ROLES:
        return f"a {principal.role} credential cannot see the status page (admin only)"
    return None


def _login(message: str = "", status: int = 401) -> web.Response:
    body = LOGIN_HTML.replace("{message}", message.replace("<", "&lt;"))
    return web.Response(text=body, status=status, content_type="text/html")


def _signed_in(token: str, secure: bool) -> web.Response:
    response = web.HTTPSeeOther("/status")
    response.set_cookie(COOKIE, token, path="/status", httponly=True, samesite="Strict",
                        secure=secure)
    return response


def add_routes(app: web.Application, source: StatusSource, auth: Authenticator) -> None:
    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    def guarded(handler: Handler, page: bool) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            if (why := _check(auth, _token(request))) is not None:
                if page:
                    return _login("" if why == "no credential" else why)
                return web.json_response({"error": why}, status=401)
            return await handler(request)
        return run

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE_HTML, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def data(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=json.dumps(await source.snapshot()),
                            content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def status(request: web.Request) -> web.StreamResponse:
        if (token := request.query.get("token")) is not None:
            if (why := _check(auth, token)) is not None:
                return _login(why)
            return _signed_in(token, request.secure)
        return await guarded(page, page=True)(request)

    async def login_form(_request: web.Request) -> web.StreamResponse:
        return _login(status=200)

    async def login(request: web.Request) -> web.StreamResponse:
        form: Any = await request.post()
        token = str(form.get("token", "")).strip()
        if (why := _check(auth, token)) is not None:
            return _login(why)
        return _signed_in(token, request.secure)

    async def logout(_request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/status/login")
        response.del_cookie(COOKIE, path="/status")
        return response

    app.router.add_get("/status", status)
    app.router.add_get("/status/data.json", guarded(data, page=False))
    app.router.add_get("/status/login", login_form)
    app.router.add_post("/status/login", login)
    app.router.add_get("/status/logout", logout)


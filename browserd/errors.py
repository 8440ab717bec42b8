"""browserd's errors and their wire form.

An error crosses the socket as ``{"type", "message", "details"}`` and is rebuilt on the
other side from the closed registry :data:`ERRORS` (never pickled). An unknown ``type``
becomes :class:`BrowserdError` with the type kept in ``details``.
"""

from typing import Any

from cortex.errors import CortexError


class BrowserdError(CortexError):
    """Root of browserd's errors; ``code`` names the type on the wire."""

    code = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.code, "message": str(self), "details": self.details}


class BadRequest(BrowserdError):
    code = "bad_request"


class FrameTooLarge(BrowserdError):
    code = "frame_too_large"


class SessionNotFound(BrowserdError):
    code = "session_not_found"


class SessionLimit(BrowserdError):
    code = "session_limit"


class SessionCrashed(BrowserdError):
    """The session's browser or renderer is gone (crash, or killed over its memory cap)."""

    code = "session_crashed"


class RefNotFound(BrowserdError):
    code = "ref_not_found"


class PageError(BrowserdError):
    """The page's JavaScript threw, or Playwright refused the action."""

    code = "page_error"


class OpTimeout(BrowserdError):
    code = "timeout"


class UrlRefused(BrowserdError):
    code = "url_refused"


class HandoffError(BrowserdError):
    """A /dev/shm handoff file is missing, short, or its sha256 does not match."""

    code = "handoff"


class Unavailable(BrowserdError):
    """browserd is not reachable, or went away during a call."""

    code = "unavailable"


ERRORS: dict[str, type[BrowserdError]] = {
    cls.code: cls for cls in (BrowserdError, BadRequest, FrameTooLarge, SessionNotFound,
                              SessionLimit, SessionCrashed, RefNotFound, PageError, OpTimeout,
                              UrlRefused, HandoffError, Unavailable)
}


def from_wire(err: Any) -> BrowserdError:
    if not isinstance(err, dict):
        return BrowserdError(f"malformed error from browserd: {err!r:.200}")
    code = str(err.get("type", "internal"))
    raw = err.get("details")
    details: dict[str, Any] = raw if isinstance(raw, dict) else {}
    cls = ERRORS.get(code)
    if cls is None:
        return BrowserdError(str(err.get("message", "")), {**details, "type": code})
    return cls(str(err.get("message", "")), details)

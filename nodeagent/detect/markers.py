"""Nonce'd markers and OSC marks: the exact layer (detector ``marker`` and ``osc133``).

A task gets a random nonce (:func:`new_nonce`). :func:`marker_env` makes

- an interactive bash print, before each prompt, the private OSC sequence
  ``ESC ] 1337 ; CortexPrompt=<nonce>;<exit code>;<cwd> BEL`` (via ``PROMPT_COMMAND``,
  which bash imports from the environment), and
- sudo print ``ESC ] 1337 ; CortexSudo=<nonce> BEL`` before its password prompt (via
  ``SUDO_PROMPT``; the visible text stays ``[sudo] password for USER:``).

A terminal ignores OSC sequences it does not know, so nothing shows. :class:`OscScanner`
finds OSC sequences in a byte stream split anywhere across reads. Invariants: a private
marker counts only when its nonce equals the task's (a transcript ``cat``-ed inside the
task, or another task's nonce, never fires); each OSC sequence is reported once, at the
spool offset just past its terminator; an unterminated sequence is carried at most
:data:`MAX_OSC_BYTES` and then dropped.
"""

import re
import secrets
from dataclasses import dataclass

MAX_OSC_BYTES = 1024
PROMPT_KEY = b"1337;CortexPrompt="
SUDO_KEY = b"1337;CortexSudo="
_OSC_RE = re.compile(rb"\x1b\]([^\x07\x1b]{0,%d})(?:\x07|\x1b\\)" % MAX_OSC_BYTES)
_NONCE_RE = re.compile(r"[0-9a-f]{16,64}")


def new_nonce() -> str:
    return secrets.token_hex(8)


def prompt_marker(nonce: str, exit_code: int, cwd: str) -> bytes:
    return b"\x1b]" + PROMPT_KEY + f"{nonce};{exit_code};{cwd}".encode() + b"\x07"


def sudo_marker(nonce: str) -> bytes:
    return b"\x1b]" + SUDO_KEY + nonce.encode() + b"\x07"


def marker_env(nonce: str, *, sudo: bool = True) -> dict[str, str]:
    """Environment that makes a bash prompt and sudo's password prompt carry the nonce."""
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError("nonce must be 16-64 lowercase hex digits")
    env = {"PROMPT_COMMAND": (r"printf '\033]1337;CortexPrompt=%s;%s;%s\007' "
                              f'{nonce} "$?" "$PWD"')}
    if sudo:
        env["SUDO_PROMPT"] = sudo_marker(nonce).decode() + "[sudo] password for %p: "
    return env


@dataclass(frozen=True, slots=True)
class Osc:
    body: bytes  # between ``ESC ]`` and the terminator
    end: int  # absolute stream offset just past the terminator


class OscScanner:
    """Finds complete OSC sequences in a stream fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._carry = b""  # an unterminated ``ESC ]...`` from the previous piece
        self._carry_start = 0

    def feed(self, data: bytes, end: int) -> list[Osc]:
        """``data`` is the stream's bytes ``[end - len(data), end)``."""
        if self._carry:
            buf, base = self._carry + data, self._carry_start
        else:
            if b"\x1b" not in data:
                return []
            buf, base = data, end - len(data)
        found = [Osc(m.group(1), base + m.end()) for m in _OSC_RE.finditer(buf)]
        tail_from = found[-1].end - base if found else 0
        open_at = buf.rfind(b"\x1b]", tail_from)
        if open_at < 0 and buf.endswith(b"\x1b"):
            open_at = len(buf) - 1
        if open_at >= 0 and len(buf) - open_at <= MAX_OSC_BYTES:
            self._carry, self._carry_start = buf[open_at:], base + open_at
        else:
            self._carry = b""
        return found


@dataclass(frozen=True, slots=True)
class Mark:
    what: str  # "prompt", "sudo", "133A", "133B", "133C", "133D"
    end: int
    exit_code: int = 0
    cwd: str = ""
    raw: bytes = b""


def parse_mark(osc: Osc, nonce: str | None) -> Mark | None:
    """A mark we act on, or None (unknown OSC, or a private marker with another nonce)."""
    body = osc.body
    if body.startswith(PROMPT_KEY):
        parts = body[len(PROMPT_KEY):].decode("utf-8", "replace").split(";", 2)
        if nonce is None or len(parts) != 3 or not secrets.compare_digest(parts[0], nonce):
            return None
        try:
            code = int(parts[1])
        except ValueError:
            code = 0
        return Mark("prompt", osc.end, code, parts[2], body)
    if body.startswith(SUDO_KEY):
        got = body[len(SUDO_KEY):].decode("utf-8", "replace")
        if nonce is None or not secrets.compare_digest(got, nonce):
            return None
        return Mark("sudo", osc.end, raw=body)
    if body.startswith(b"133;") and len(body) >= 5 and body[4:5] in b"ABCD":
        letter = body[4:5].decode()
        code = 0
        if letter == "D":
            arg = body[6:].split(b";", 1)[0] if body[5:6] == b";" else b""
            code = int(arg) if arg.lstrip(b"-").isdigit() else 0
        return Mark("133" + letter, osc.end, code, raw=body)
    return None

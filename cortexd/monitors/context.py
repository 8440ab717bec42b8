"""What a monitor reads and what it sends to an LLM (pure).

- :func:`last_lines` renders the end of a terminal's output the way a person reads
  it: escape sequences removed, ``\\r`` returns to the line start and later text
  overwrites, backspace steps back. Rules match their regex on it.
- :func:`screen_end` joins the journal's tail with the prompt event's excerpt when
  the prompt's bytes are not durable in the hub yet (the node sends the event at
  once; its output may still be held back by the stream's rate limit).
- :func:`llm_messages` builds the chat messages of one LLM call from the task's
  journal (10 KB head, the omitted-bytes marker, 30 KB tail) and never more than
  ``max_bytes`` in all (the tail is cut from its start, then the head from its end);
  :func:`digest` names exactly what was sent (sha256 of the messages' JSON). When the
  task's policy names a browser session, its accessibility snapshot (as the hub sent
  it, secrets replaced) comes before the journal, at most :data:`SNAPSHOT_CONTEXT_BYTES`
  of it (cut at the end, marked), within the same ``max_bytes``.
"""

import hashlib
import json
import re
from dataclasses import dataclass

from cortexd.monitors.actions import ACTION_NAMES
from cortexd.monitors.policy import Situation

MAX_CONTEXT_BYTES = 40_000
SNAPSHOT_CONTEXT_BYTES = 12_000
LAST_LINES = 12
_ESC_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?")
_CTRL_RE = re.compile(r"[\x00-\x07\x0b-\x1f\x7f]")


def _line(raw: str) -> str:
    raw = raw.rstrip("\r")  # a CRLF's return overwrites nothing
    if "\r" not in raw and "\b" not in raw:  # most lines: nothing to replay
        return _CTRL_RE.sub("", raw).rstrip()
    cells: list[str] = []
    col = 0
    for ch in raw:
        if ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        else:
            if col < len(cells):
                cells[col] = ch
            else:
                cells.append(ch)
            col += 1
    return _CTRL_RE.sub("", "".join(cells)).rstrip()


def render_text(data: bytes) -> str:
    """Terminal bytes as plain text lines (escapes removed, ``\\r``/backspace applied)."""
    text = _ESC_RE.sub("", data.decode("utf-8", errors="replace"))
    return "\n".join(_line(raw) for raw in text.split("\n"))


def last_lines(data: bytes, n: int = LAST_LINES) -> str:
    """The last ``n`` non-blank rendered lines of ``data`` (rendered from the end: a
    wake-up reads a 16 KB tail for 12 lines)."""
    text = _ESC_RE.sub("", data[-16_384:].decode("utf-8", errors="replace"))
    out: list[str] = []
    for raw in reversed(text.split("\n")):
        if (ln := _line(raw)).strip():
            out.append(ln)
            if len(out) == n:
                break
    return "\n".join(reversed(out))


def screen_end(tail: bytes, total: int, excerpt: bytes, prompt_offset: int) -> bytes:
    """The journal's tail, extended by the part of the prompt's excerpt past ``total``.

    The excerpt covers ``[prompt_offset - len(excerpt), prompt_offset)`` of the spool;
    the tail ends at ``total``.
    """
    if not excerpt or prompt_offset <= total:
        return tail
    start = prompt_offset - len(excerpt)
    return tail + excerpt[max(0, total - start):]


@dataclass(frozen=True, slots=True)
class JournalText:
    head: bytes
    tail: bytes
    marker: str  # "" when nothing is omitted


@dataclass(frozen=True, slots=True)
class PageSnapshot:
    """A browser session's accessibility snapshot as the hub returned it."""

    session: str
    url: str
    text: str
    full_bytes: int
    sha256: str
    truncated: bool = False


def cut_utf8(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")


def _snapshot_text(snap: PageSnapshot | None, limit: int) -> str:
    if snap is None or limit <= 0:
        return ""
    body = cut_utf8(snap.text, limit)
    more = len(snap.text.encode()) - len(body.encode()) if body != snap.text else 0
    cut = (f"\n[… {more + snap.full_bytes - len(snap.text.encode())} more bytes of the "
           "snapshot not shown …]" if more or snap.truncated else "")
    return (f"\n\nThe browser page the task works in (session {snap.session}, "
            f"{snap.url[:500]}), its accessibility snapshot:\n{body}{cut}\n")


SYSTEM = (
    "You watch one shell task running in a terminal on a remote machine and decide the "
    "single next action. Answer with one JSON object only, no prose. Actions: "
    + ", ".join(ACTION_NAMES) + ". "
    "WAIT {next_check_seconds}: nothing to do now, look again later. "
    "SEND_INPUT {text}: type text into the terminal (end it with \\n to press Enter). "
    "COMPLETE {verdict}: the task's work is done. KILL {reason}: stop the task. "
    "EXECUTE {command, selector or node}: start a follow-up shell command on a node. "
    "ESCALATE {reason}: a person must decide. Never guess passwords or secrets.")


def _situation_text(s: Situation, goal: str) -> str:
    parts = [f"Goal: {goal}" if goal else "Goal: (none given)",
             f"Event: {s.trigger}", f"Task state: {s.state}"]
    if s.prompt_kind:
        parts.append(f"The terminal waits for input ({s.prompt_kind} prompt).")
    if s.exit_code is not None:
        parts.append(f"Exit code: {s.exit_code}")
    parts.append(f"Running for {s.elapsed_s:.0f} s; last output {s.idle_s:.0f} s ago.")
    return "\n".join(parts)


def llm_messages(s: Situation, goal: str, instructions: str, journal: JournalText,
                 max_bytes: int = MAX_CONTEXT_BYTES,
                 snapshot: PageSnapshot | None = None) -> list[dict[str, str]]:
    """The messages of one call; their JSON is at most ``max_bytes`` (UTF-8)."""
    system = SYSTEM + (f"\nInstructions for this task: {instructions}" if instructions else "")
    intro = _situation_text(s, goal)[:4000]
    page = _snapshot_text(snapshot, min(SNAPSHOT_CONTEXT_BYTES, max_bytes // 3))
    intro += page + "\n\nThe task's output (its journal):\n"
    head = render_text(journal.head)
    tail = render_text(journal.tail)
    marker = f"\n{journal.marker}\n" if journal.marker else ""

    def build(h: str, t: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system},
                {"role": "user", "content": intro + h + marker + t
                 + "\n\nAnswer with the JSON object of your action."}]

    messages = build(head, tail)
    over = _size(messages) - max_bytes
    if over > 0:  # cut the tail's oldest part first, then the head's end
        cut = min(len(tail), over)
        tail = tail[cut:]
        messages = build(head, tail)
        over = _size(messages) - max_bytes
        while over > 0 and head:
            head = head[:max(0, len(head) - over)]
            messages = build(head, tail)
            over = _size(messages) - max_bytes
    return messages


def _size(messages: list[dict[str, str]]) -> int:
    return len(json.dumps(messages, ensure_ascii=False).encode())


def digest(messages: list[dict[str, str]]) -> tuple[str, int]:
    """(sha256 hex of the messages' canonical JSON, its size in bytes)."""
    blob = json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest(), len(blob)

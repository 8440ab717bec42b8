"""The terminal's current last line, as a person looking at the screen would read it.

Prompts sit at the end of the output, on a line not yet ended by a newline. So the
pattern layer looks only at that partial line: a line that was followed by a newline
(a log line ending in ``:``, a dev server's "press h for help") is history, not a prompt.

:class:`LastLine` keeps the raw bytes after the last ``\\n`` (at most
:data:`MAX_LINE_BYTES`, the most recent) and renders them: escape sequences removed,
``\\r`` returns to column 0 and later text overwrites (progress bars), backspace steps
back, erase-in-line truncates, and an absolute cursor move (``CSI H``/``f``/``d``: a
full-screen program drawing its prompt row) starts a new segment, as do wiping the line
from column 0 and switching screens; a line longer than the terminal's width wraps (the
cursor's row is what is examined). Invariants: rendering
depends only on the bytes of the current line; ``segment_start`` (the stream offset where
the visible segment began) identifies one prompt occurrence; alternate-screen entries are
each reported once, at their stream offset.
"""

import re
from dataclasses import dataclass

MAX_LINE_BYTES = 4096
DEFAULT_COLS = 80
_TOKEN_RE = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    rb"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC
    rb"|\x1b[ -/]*[0-~]?"  # other escapes (charset selection, keypad modes, ...)
    rb"|\r|\x08"
    rb"|[^\x1b\r\x08]+")
_ALT_ENTER_RE = re.compile(rb"\x1b\[\?(?:1049|1047|47)h")
_ALT_LEAVE_RE = re.compile(rb"\x1b\[\?(?:1049|1047|47)l")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ALT_CARRY = 8  # len(b"\x1b[?1049h") - 1


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    segment_start: int  # stream offset where the visible segment began


def render(raw: bytes, cols: int = DEFAULT_COLS) -> tuple[str, int]:
    """(visible text of the cursor's row, index in ``raw`` where its segment starts)."""
    if b"\x1b" not in raw and b"\r" not in raw and b"\x08" not in raw:
        text = _CTRL_RE.sub("", raw.decode("utf-8", "replace"))
        return _last_row(text, cols), 0
    cells: list[str] = []
    col = 0
    seg = 0
    for m in _TOKEN_RE.finditer(raw):
        tok = m.group()
        if tok == b"\r":
            col = 0
        elif tok == b"\x08":
            col = max(0, col - 1)
        elif tok[:1] != b"\x1b":
            text = _CTRL_RE.sub("", tok.decode("utf-8", "replace"))
            cells[col:col + len(text)] = text
            col += len(text)
        elif tok[:2] == b"\x1b[":
            cells, col, reset = _csi(tok, cells, col)
            if reset:
                seg = m.end()
    return _last_row("".join(cells), cols), seg


def _csi(tok: bytes, cells: list[str], col: int) -> tuple[list[str], int, bool]:
    """Apply one CSI sequence to the line; True when what follows is a new segment."""
    final, arg = tok[-1:], tok[2:-1]
    if final in b"Hfd" and arg[:1] != b"?":
        return [], 0, True
    if final in b"hl" and _ALT_ENTER_RE.fullmatch(tok[:-1] + b"h"):
        return [], 0, True  # the other screen: another occurrence
    if final == b"K":
        if arg in (b"", b"0"):
            del cells[col:]
            return cells, col, col == 0  # the line was wiped from its start: new segment
        if arg == b"2":
            return [" "] * col, col, True
        if arg == b"1":
            cells[:col] = [" "] * min(col, len(cells))
    elif final == b"G":
        return cells, (max(0, int(arg) - 1) if arg.isdigit() else 0), False
    elif final == b"J" and arg == b"2":
        return [], 0, True
    return cells, col, False


def _last_row(text: str, cols: int) -> str:
    """A line longer than the terminal wraps; the cursor is on its last row."""
    if cols > 0 and len(text) > cols:
        return text[(len(text) - 1) // cols * cols:]
    return text


class LastLine:
    def __init__(self, cols: int = DEFAULT_COLS) -> None:
        self.cols = cols
        self.raw = b""
        self.line_start = 0  # stream offset of the first byte after the last newline
        self.alt_screen = False
        self._tail = b""  # last few bytes, so an alt-screen switch split across reads is seen
        self._rendered: Rendered | None = None

    def feed(self, data: bytes, end: int) -> list[int]:
        """Take the stream's bytes ``[end - len(data), end)``; returns the offsets just past
        each alternate-screen entry in them."""
        begin = end - len(data)
        entries: list[int] = []
        if b"\x1b" in data or self._tail:
            buf = self._tail + data
            base = begin - len(self._tail)
            for m in sorted([*_ALT_ENTER_RE.finditer(buf), *_ALT_LEAVE_RE.finditer(buf)],
                            key=lambda m: m.start()):
                if base + m.end() <= begin:
                    continue  # seen in the previous piece
                entering = m.group().endswith(b"h")
                if entering:
                    entries.append(base + m.end())
                self.alt_screen = entering
            self._tail = buf[-_ALT_CARRY:] if b"\x1b" in buf[-_ALT_CARRY:] else b""
        nl = data.rfind(b"\n")
        if nl >= 0:
            self.raw = data[nl + 1:]
            self.line_start = begin + nl + 1
        else:
            self.raw += data
        if len(self.raw) > MAX_LINE_BYTES:
            cut = len(self.raw) - MAX_LINE_BYTES
            self.raw = self.raw[cut:]
            self.line_start += cut
        self._rendered = None
        return entries

    def rendered(self) -> Rendered:
        if self._rendered is None:
            text, seg = render(self.raw, self.cols)
            self._rendered = Rendered(text, self.line_start + seg)
        return self._rendered

"""The prompt detector: sans-IO, one per task attempt.

Events in: :meth:`PromptDetector.feed` (output bytes with the spool offset just past
them), :meth:`PromptDetector.on_quiet` (output has been quiet for the debounce; carries
what the kernel says, or None where the kernel cannot be asked). Events out: lists of
:class:`Detection`. No clock, no file, no process: the adapter (:mod:`.live`) and the
transcript replay (:mod:`.transcript`) supply those.

Order of layers on each piece of output: marks found in it (nonce'd markers, OSC 133),
then alternate-screen entries, then the pattern table on the current last line.

Invariants:
- One event per prompt occurrence. An occurrence is the visible segment of the last line
  (see :mod:`.screen`); once something fired for it, nothing else does until output
  starts a new segment. Each OSC mark fires at most once.
- Weak patterns never fire on their own: only :meth:`on_quiet` with a kernel that says
  the foreground process is asleep on the terminal can turn them into an event.
- Shaped patterns (:data:`patterns.SHAPED`) fire only at :meth:`on_quiet`: with no kernel
  (a transcript) on their shape, with one only if it says someone reads or polls the
  terminal; "nobody reads it" vetoes them for that tick (the adapter asks again).
- The kernel alone fires only for a blocking ``read`` on the terminal, never for
  poll/select (a dev server polling stdin is not waiting for a person) — except on the
  alternate screen, where a full-screen program (pager, editor, ``top``) waiting on the
  terminal in any way is a pager-like prompt, and for an interactive shell
  (:data:`INTERACTIVE_SHELLS`), whose line editor polls the terminal only at a prompt.
  Entering the alternate screen is not an event by itself.
- A ``133;D`` (command finished) counts only after a prompt was marked.
- Offsets are the caller's spool offsets; a detection's ``offset`` is just past the bytes
  that triggered it (for a pattern: the end of the piece in which the line matched).
"""

import re
from dataclasses import dataclass

from nodeagent.detect import patterns
from nodeagent.detect.events import (
    FINISHED,
    INPUT_REQUIRED,
    KERNEL,
    MARKER,
    MAX_EXCERPT_BYTES,
    OSC133,
    PAGER,
    PASSWORD,
    PATTERN,
    SHELL_READY,
    Detection,
    KernelFacts,
)
from nodeagent.detect.markers import Mark, OscScanner, parse_mark
from nodeagent.detect.screen import DEFAULT_COLS, LastLine

ALT_SCREEN_CONFIDENCE = 0.8
STANDOUT_CONFIDENCE = 0.8
_STANDOUT_LINE = re.compile(rb"\x1b\[7m[^\x1b\r\n]{1,200}\x1b\[(?:27|0)?m(?:\x1b\[K)?")
KERNEL_READ_CONFIDENCE = 0.7
KERNEL_WEAK_CONFIDENCE = 0.85
INTERACTIVE_SHELLS = frozenset({"bash", "zsh", "fish", "ksh", "mksh", "dash", "sh", "tcsh"})


def excerpt_of(text: str) -> bytes:
    raw = text.strip().encode("utf-8", "replace")
    return raw[-MAX_EXCERPT_BYTES:]


@dataclass(slots=True)
class _Weak:
    pattern: patterns.Pattern
    text: str
    offset: int
    shaped: bool = False  # a shaped pattern: fires without a kernel, vetoed by "not waiting"


class PromptDetector:
    def __init__(self, nonce: str | None = None, cols: int = DEFAULT_COLS) -> None:
        self.nonce = nonce
        self._osc = OscScanner()
        self._line = LastLine(cols)
        self._end = 0
        self._fired_segment = -1  # segment_start of the occurrence that already fired
        self._prompt_open = False  # a shell_ready fired and no command started since
        self._seen_prompt = False  # a shell prompt was marked: a 133;D can end a command
        self._weak: _Weak | None = None
        self._kernel_due = False  # output arrived since the kernel was last asked

    @property
    def end(self) -> int:
        return self._end

    @property
    def wants_kernel(self) -> bool:
        """Would :meth:`on_quiet` with kernel facts be able to add anything now?"""
        return self._kernel_due and self._line.rendered().segment_start != self._fired_segment

    def want_kernel_again(self) -> None:
        """The kernel said "not waiting"; a later quiet tick may ask it again."""
        self._kernel_due = True

    def feed(self, data: bytes, end: int) -> list[Detection]:
        """Output bytes ``[end - len(data), end)`` of the task's stream, in order."""
        if not data:
            return []
        self._end = end
        self._kernel_due = True
        out: list[Detection] = []
        marks = [m for osc in self._osc.feed(data, end)
                 if (m := parse_mark(osc, self.nonce)) is not None]
        self._line.feed(data, end)
        line = self._line.rendered()
        for mark in marks:
            det = self._on_mark(mark, line.text)
            if det is not None:
                out.append(det)
                if det.kind != FINISHED and mark.end >= line.segment_start:
                    self._fired_segment = line.segment_start
        self._weak = None
        if line.segment_start != self._fired_segment:
            strong = patterns.match(line.text, patterns.STRONG, self._line.alt_screen)
            if strong is not None and line.text.strip():
                out.append(Detection(strong.kind, PATTERN, strong.confidence,
                                     excerpt_of(line.text), end, rule=strong.name))
                self._fired_segment = line.segment_start
            elif self._line.alt_screen and _STANDOUT_LINE.fullmatch(self._line.raw):
                # less's first screen: the file name in reverse video as the prompt
                out.append(Detection(PAGER, PATTERN, STANDOUT_CONFIDENCE, excerpt_of(line.text),
                                     end, rule="pager_standout"))
                self._fired_segment = line.segment_start
            elif line.text.strip() and (shaped := patterns.match(
                    line.text, patterns.SHAPED, self._line.alt_screen)) is not None:
                self._weak = _Weak(shaped, line.text, end, shaped=True)
            else:
                weak = patterns.match(line.text, patterns.WEAK, self._line.alt_screen)
                if weak is not None:
                    self._weak = _Weak(weak, line.text, end)
        return out

    def _on_mark(self, mark: Mark, text: str) -> Detection | None:
        if mark.what == "prompt":
            self._prompt_open = self._seen_prompt = True
            return Detection(SHELL_READY, MARKER, 1.0, mark.raw[:MAX_EXCERPT_BYTES], mark.end,
                             exit_code=mark.exit_code, cwd=mark.cwd, rule="cortex_prompt")
        if mark.what == "sudo":
            return Detection(PASSWORD, MARKER, 1.0, excerpt_of(text) or b"[sudo] password",
                             mark.end, rule="sudo_prompt")
        if mark.what == "133D":
            self._prompt_open = False
            if not self._seen_prompt:
                return None  # a shell's first prompt: no command has run yet
            return Detection(FINISHED, OSC133, 0.9, mark.raw, mark.end,
                             exit_code=mark.exit_code, rule="osc133_D")
        if mark.what == "133C":
            self._prompt_open = False
            return None
        if self._prompt_open:  # 133;B after 133;A, or after our own marker: same prompt
            return None
        self._prompt_open = self._seen_prompt = True
        return Detection(SHELL_READY, OSC133, 0.9, mark.raw, mark.end,
                         rule="osc133_" + mark.what[-1])

    def on_quiet(self, facts: KernelFacts | None) -> list[Detection]:
        """Output has been quiet for the debounce; ``facts`` is the kernel's word (None:
        not available, e.g. a transcript)."""
        self._kernel_due = False
        line = self._line.rendered()
        if line.segment_start == self._fired_segment:
            return []
        if self._weak is not None and self._weak.shaped and (facts is None or facts.waiting):
            w = self._weak
            kind = PASSWORD if facts is not None and facts.echo is False else w.pattern.kind
            self._fired_segment = line.segment_start
            return [Detection(kind, PATTERN, w.pattern.confidence, excerpt_of(w.text), w.offset,
                              rule=w.pattern.name + ("" if facts is None else "+kernel"))]
        if facts is None or not facts.waiting:
            return []
        det: Detection | None = None
        if self._weak is not None and not self._weak.shaped:
            kind = PASSWORD if facts.echo is False else self._weak.pattern.kind
            det = Detection(kind, KERNEL, KERNEL_WEAK_CONFIDENCE, excerpt_of(self._weak.text),
                            self._weak.offset, rule=self._weak.pattern.name + "+kernel")
        elif self._line.alt_screen:  # a full-screen program (pager, editor, top) waits
            det = Detection(PAGER, KERNEL, ALT_SCREEN_CONFIDENCE, excerpt_of(line.text),
                            self._end, rule=f"alt_screen+kernel:{facts.comm}")
        elif facts.waiting == "read":
            kind = PASSWORD if facts.echo is False else INPUT_REQUIRED
            det = Detection(kind, KERNEL, KERNEL_READ_CONFIDENCE, excerpt_of(line.text),
                            self._end, rule=f"kernel_read:{facts.comm}")
        elif facts.waiting == "poll" and facts.comm in INTERACTIVE_SHELLS:
            # An interactive shell polls its terminal only in its line editor, at a prompt
            # (bash's readline waits in pselect6); a server polling stdin is no shell.
            det = Detection(INPUT_REQUIRED, KERNEL, KERNEL_READ_CONFIDENCE,
                            excerpt_of(line.text), self._end, rule=f"kernel_poll:{facts.comm}")
        if det is not None:
            self._fired_segment = line.segment_start
            return [det]
        return []

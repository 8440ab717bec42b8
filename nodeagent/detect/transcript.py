"""Offline replay of raw terminal transcripts (``nodeagent detect FILE...``).

A transcript is the bytes a PTY delivered (``NAME.raw``). Live, the detector looks at the
last line at the end of every read, so where the reads ended matters: a prompt is the end
of a read (the program then blocks). When ``NAME.reads`` exists beside the file (one read
size per line, after an optional ``# cols N`` line; written by
``tests/corpus/capture.py``), the replay feeds exactly those
reads. Otherwise it assumes a read may have ended at any *candidate end*: before a
``\\r`` or ``\\n``, after a space or one of ``:?>)]-``, and at the end of the file. That is
at least as eager as any real chunking, so it can only find more, never fewer.

There is no process to ask in a replay, so weak patterns never fire — unless the caller
gives what /proc showed of the foreground process group when the transcript ended
(``nodeagent detect --kernel FILE.json``, :func:`nodeagent.detect.kernel.facts_from_record`):
the last quiet tick then gets those facts, through the same decision the live layer uses.
"""

import re
from collections.abc import Iterator
from pathlib import Path

from nodeagent.detect.detector import PromptDetector
from nodeagent.detect.events import Detection, KernelFacts
from nodeagent.detect.screen import DEFAULT_COLS

KERNEL_NOTE = "kernel layer not applicable to a transcript; weak patterns need it, so none fire"
_CANDIDATE_END = re.compile(rb"[ :?>)\]\-](?=[^\r\n]|$)|(?=[\r\n])")


def reads_of(path: Path) -> tuple[list[int] | None, int]:
    """(read sizes, terminal columns) from ``NAME.reads``; its optional first line is
    ``# cols N``."""
    side = path.with_suffix(".reads")
    if not side.exists():
        return None, DEFAULT_COLS
    cols, reads = DEFAULT_COLS, []
    for line in side.read_text().splitlines():
        if line.startswith("# cols "):
            cols = int(line.split()[2])
        elif line.strip():
            reads.append(int(line))
    return reads, cols


def pieces(data: bytes, reads: list[int] | None) -> Iterator[tuple[bytes, int]]:
    """(piece, stream offset just past it), in order, covering ``data``."""
    if reads is not None and sum(reads) == len(data):
        pos = 0
        for n in reads:
            if n:
                yield data[pos:pos + n], pos + n
                pos += n
        return
    pos = 0
    for m in _CANDIDATE_END.finditer(data):
        if m.end() > pos:
            yield data[pos:m.end()], m.end()
            pos = m.end()
    if pos < len(data):
        yield data[pos:], len(data)


def replay(data: bytes, reads: list[int] | None = None, nonce: str | None = None,
           cols: int = DEFAULT_COLS, kernel: KernelFacts | None = None) -> list[Detection]:
    """The detections of a transcript; ``kernel`` is what /proc showed at its end (the
    last quiet tick gets it, as the live adapter's would)."""
    det = PromptDetector(nonce, cols)
    out: list[Detection] = []
    chunks = list(pieces(data, reads))
    for i, (piece, end) in enumerate(chunks):
        out.extend(det.feed(piece, end))
        out.extend(det.on_quiet(kernel if i == len(chunks) - 1 else None))
    if not chunks and kernel is not None:  # a program that waits before printing (cat)
        out.extend(det.on_quiet(kernel))
    return out


def replay_file(path: Path, nonce: str | None = None, cols: int | None = None,
                kernel: KernelFacts | None = None) -> tuple[list[Detection], str]:
    """The detections for one transcript file and how its reads were chosen."""
    reads, side_cols = reads_of(path)
    data = path.read_bytes()
    how = "reads-file" if reads is not None and sum(reads) == len(data) else "candidate-ends"
    return replay(data, reads, nonce, cols or side_cols, kernel), how

"""What the detector emits and what the kernel layer reports; plain frozen records.

Invariants: ``kind`` is one of :data:`KINDS`, ``detector`` one of :data:`LAYERS`,
``confidence`` in [0, 1], ``excerpt`` at most :data:`MAX_EXCERPT_BYTES` bytes, and
``offset`` is the spool offset just past the bytes that triggered the detection.
"""

from dataclasses import dataclass

INPUT_REQUIRED = "input_required"
PASSWORD = "password"
CONFIRM = "confirm"
PAGER = "pager"
REPL = "repl"
SHELL_READY = "shell_ready"
FINISHED = "finished"
KINDS = (INPUT_REQUIRED, PASSWORD, CONFIRM, PAGER, REPL, SHELL_READY, FINISHED)

MARKER = "marker"  # our nonce'd markers (shell prompt, sudo)
OSC133 = "osc133"
PATTERN = "pattern"
KERNEL = "kernel"
LAYERS = (MARKER, OSC133, PATTERN, KERNEL)

MAX_EXCERPT_BYTES = 512


@dataclass(frozen=True, slots=True)
class Detection:
    kind: str
    detector: str
    confidence: float
    excerpt: bytes
    offset: int
    exit_code: int = 0
    cwd: str = ""
    rule: str = ""  # which table entry or mark fired (for debugging; not on the wire)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "offset": self.offset, "kind": self.kind, "detector": self.detector,
            "confidence": round(self.confidence, 3),
            "excerpt": self.excerpt.decode("utf-8", "replace"),
        }
        if self.kind in (SHELL_READY, FINISHED) and self.detector in (MARKER, OSC133):
            out["exit_code"] = self.exit_code
        if self.cwd:
            out["cwd"] = self.cwd
        if self.rule:
            out["rule"] = self.rule
        return out


@dataclass(frozen=True, slots=True)
class KernelFacts:
    """What ``/proc`` says about the PTY's foreground process group at one instant.

    ``waiting`` is ``"read"`` when a member is asleep in ``read(2)`` on the terminal,
    ``"poll"`` when it is asleep in poll/select with the terminal as its stdin (REPLs,
    full-screen programs), ``""`` when nobody waits on the terminal. ``echo`` is the
    terminal's ECHO flag (off: a password is being typed), None when unknown.
    """

    waiting: str
    pid: int = 0
    comm: str = ""
    wchan: str = ""
    echo: bool | None = None

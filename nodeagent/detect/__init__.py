"""Edge prompt detection (DESIGN.md §5 "Edge intelligence"; issue 3, items 7–8).

Layers, each a module:

- :mod:`.markers` — the per-task nonce, the environment that makes shells and sudo emit
  nonce'd markers, and the parser of OSC sequences (our markers and OSC 133).
- :mod:`.screen` — the current last line of the terminal as a reader would see it
  (escape sequences removed, ``\\r`` and backspace applied), bounded.
- :mod:`.patterns` — the table of input-required patterns, strong and weak.
- :mod:`.kernel` — the kernel's word, read from ``/proc``: is the PTY's foreground
  process group asleep reading the terminal?
- :mod:`.detector` — the sans-IO state machine that combines them: bytes, quiet ticks and
  kernel facts in, :class:`.events.Detection` records out, one per prompt occurrence.
- :mod:`.live` — the thin adapter that runs a detector beside a task process on the
  event loop (quiet timer, kernel check, emit).
- :mod:`.transcript` — the offline replay behind ``nodeagent detect FILE...``.
"""

from nodeagent.detect.detector import PromptDetector
from nodeagent.detect.events import Detection, KernelFacts

__all__ = ["Detection", "KernelFacts", "PromptDetector"]

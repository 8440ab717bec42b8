"""What changed between two accessibility snapshots (pure).

A snapshot is Playwright's AI-mode aria snapshot: one YAML-like line per node, element
references as ``[ref=eN]``. References are stable while the element lives (Playwright
keeps them on the element), so an element that did not change gives an identical line
and the diff is only the lines that did: a unified diff with no context lines.
"""

import difflib
import re

REF = re.compile(r"\[ref=(e\d+)\]")


def diff(before: str, after: str) -> str:
    """Unified diff (zero context) from ``before`` to ``after``; empty when equal."""
    if before == after:
        return ""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after",
                                 n=0, lineterm="")
    return "\n".join(list(lines)[2:])  # the two file header lines say nothing here


def refs(snapshot: str) -> list[str]:
    return REF.findall(snapshot)

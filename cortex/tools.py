"""Tool names and how the hub routes by them (shared by nodeagent and cortexd).

A task names the tool that runs it (``""`` is the shell, which every node has). A node
advertises the tools it loaded in ``Hello.tools``; the hub turns each into a label
``cortex.tool/NAME = VERSION`` (:func:`node_labels`), so placement, the cluster directory
and ``cortexctl nodes`` see a node's tools the way they see its other labels, and a
selector may ask for a version (``--selector cortex.tool/browser=1.2.0``). Labels under
that prefix come only from ``Hello.tools``: a node's own label with it is dropped, so a
label cannot claim a tool the node did not load.
"""

import re
from collections.abc import Iterable, Mapping

SHELL = "shell"
TOOL_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
LABEL_PREFIX = "cortex.tool/"
_VERSION_BAD_RE = re.compile(r"[^A-Za-z0-9._:/-]")
MAX_VERSION_CHARS = 64


def is_tool_name(value: str) -> bool:
    return bool(TOOL_NAME_RE.fullmatch(value))


def label_key(tool: str) -> str:
    return LABEL_PREFIX + tool


def label_value(version: str) -> str:
    """A version as a label value (the label grammar has no ``+`` or spaces)."""
    return _VERSION_BAD_RE.sub("_", version)[:MAX_VERSION_CHARS]


def node_labels(labels: Mapping[str, str], tools: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The node's labels without any it set under the tool prefix, plus one per tool."""
    out = {k: v for k, v in labels.items() if not k.startswith(LABEL_PREFIX)}
    for name, version in tools:
        if is_tool_name(name):
            out[label_key(name)] = label_value(version)
    return out


def requires(tool: str) -> str | None:
    """The label a node must have to run ``tool``; None for the shell (every node)."""
    return None if tool in ("", SHELL) else label_key(tool)

"""Finding the node's tools: entry points of the group ``cortex.tools``, checked one by one.

Each entry point names a tool class (built with no arguments) or a tool object
(:class:`nodeagent.tools.base.Tool`). Loading one runs third-party code, so anything it
raises — an import error, a failing constructor, a bad declaration (name outside
``cortex.tools.TOOL_NAME_RE``, no version, an input schema that is not a valid JSON
Schema, no ``runner``) — makes it a :class:`ToolProblem`: logged, advertised in Hello, and
skipped; the agent carries on with the rest. Invariants:

- The shell is always there: Cortex's own entry point, or the built-in
  :class:`~nodeagent.tools.shell.ShellTool` when the package metadata has none (a source
  tree run without installing).
- A name is taken once: Cortex's own distribution first, then by distribution and entry
  point name; a later tool with a taken name is a problem, not a replacement.
- :meth:`ToolSet.parse_input` is the only way a task's input reaches a runner: the command
  text itself for a tool with a string schema, else the text parsed as JSON, validated.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from cortex.tools import SHELL, is_tool_name
from cortex.v1 import tool_pb2
from nodeagent.tools.base import Tool, ToolError
from nodeagent.tools.shell import ShellTool

GROUP = "cortex.tools"
OWN_DIST = "cortex"
MAX_SCHEMA_BYTES = 16 << 10
MAX_ERROR_CHARS = 300


class ToolInputError(ToolError):
    """The task's input is not what the tool's schema asks for."""


@dataclass(frozen=True, slots=True)
class ToolProblem:
    name: str  # the entry point's name
    error: str


@dataclass
class ToolSet:
    tools: dict[str, Tool] = field(default_factory=dict)
    problems: list[ToolProblem] = field(default_factory=list)
    _validators: dict[str, Any] = field(default_factory=dict)
    _schemas: dict[str, str] = field(default_factory=dict)

    def add(self, tool: Tool) -> None:
        schema = dict(tool.input_schema)
        self._validators[tool.name] = jsonschema.validators.validator_for(schema)(schema)
        self._schemas[tool.name] = json.dumps(schema, sort_keys=True)
        self.tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name or SHELL)

    def parse_input(self, name: str, text: str) -> Any:
        """The task's input for tool ``name``; :class:`ToolInputError` says what is wrong."""
        name = name or SHELL
        validator = self._validators[name]
        if validator.schema.get("type") == "string":
            value: Any = text
        else:
            try:
                value = json.loads(text)
            except ValueError as e:
                raise ToolInputError(f"tool {name} takes JSON input: {e}") from e
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "input"
            raise ToolInputError(f"tool {name}: {where}: {error.message}"[:MAX_ERROR_CHARS])
        return value

    def hello(self) -> tuple[list[tool_pb2.ToolInfo], list[tool_pb2.ToolProblem]]:
        infos = [tool_pb2.ToolInfo(name=t.name, version=t.version,
                                   input_schema_json=self._schemas[t.name])
                 for t in sorted(self.tools.values(), key=lambda t: t.name)]
        return infos, [tool_pb2.ToolProblem(name=p.name, error=p.error) for p in self.problems]


def check_tool(tool: Any) -> str | None:
    """Why ``tool`` is not usable, or None."""
    name = getattr(tool, "name", None)
    if not isinstance(name, str) or not is_tool_name(name):
        return f"name {name!r} is not a tool name (^[a-z][a-z0-9_-]{{0,31}}$)"
    version = getattr(tool, "version", None)
    if not isinstance(version, str) or not version.strip():
        return "version must be a non-empty string"
    schema = getattr(tool, "input_schema", None)
    if not isinstance(schema, Mapping):
        return "input_schema must be a mapping (a JSON Schema)"
    try:
        if len(json.dumps(dict(schema))) > MAX_SCHEMA_BYTES:
            return f"input_schema is larger than {MAX_SCHEMA_BYTES} bytes"
        jsonschema.validators.validator_for(dict(schema)).check_schema(dict(schema))
    except (TypeError, ValueError) as e:
        return f"input_schema is not JSON: {e}"
    except jsonschema.exceptions.SchemaError as e:
        return f"input_schema is not a valid JSON Schema: {e.message}"
    if not callable(getattr(tool, "runner", None)):
        return "runner(task, events) is missing"
    return None


def _order(ep: importlib.metadata.EntryPoint) -> tuple[int, str, str]:
    dist = ep.dist.name if ep.dist is not None else ""
    return (0 if dist == OWN_DIST else 1, dist, ep.name)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]


def load_tools(entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
               log: Any = None) -> ToolSet:
    eps = importlib.metadata.entry_points(group=GROUP) if entry_points is None else entry_points
    found = ToolSet()
    for ep in sorted(eps, key=_order):
        try:
            obj = ep.load()
            tool = obj() if isinstance(obj, type) else obj
            problem = check_tool(tool)
        except (Exception, SystemExit) as e:  # third-party code: nothing it does is fatal
            problem = f"cannot load {ep.value}: {_short(e)}"
        if problem is None and tool.name in found.tools:
            problem = f"tool name {tool.name!r} is taken by an earlier entry point"
        if problem is None:
            try:
                found.add(tool)
            except Exception as e:
                problem = f"unusable declaration: {_short(e)}"
        if problem is not None:
            found.problems.append(ToolProblem(ep.name, problem))
            if log is not None:
                log.warning("tool_skipped", entry_point=ep.name, value=ep.value, error=problem)
        elif log is not None:
            log.info("tool_loaded", tool=tool.name, version=tool.version, value=ep.value)
    if SHELL not in found.tools:
        found.add(ShellTool())
    return found

"""Tools as plugins, the pure parts: loading and checking entry points, inputs, routing,
and the coroutine runner's contract (nodeagent/tools/, cortex/tools.py, scheduler)."""

import asyncio
import importlib.metadata
import sys
import types
from typing import Any

import pytest

from cortex.tools import node_labels, requires
from cortex.v1 import node_pb2
from cortexd.scheduler import Candidate, Placer, pick
from nodeagent.runner import RunSpec, TaskExit
from nodeagent.tools.asynctool import AsyncTool, ToolIO
from nodeagent.tools.base import ToolTask
from nodeagent.tools.registry import ToolInputError, load_tools
from nodeagent.tools.shell import ShellTool

MOD = "cortex_tools_unit_fixture"


class Echo(AsyncTool):
    name = "echo"
    version = "1.0+local"
    input_schema = {"type": "object", "properties": {"text": {"type": "string"}},
                    "required": ["text"]}

    async def run(self, task: ToolTask, io: ToolIO) -> int:
        io.write(task.input["text"])
        return 0


class Raises:
    def __init__(self) -> None:
        raise RuntimeError("constructor failed")


class BadSchema(Echo):
    name = "badschema"
    input_schema = {"type": "no-such-type"}


class BadName(Echo):
    name = "Bad Name"


@pytest.fixture
def module() -> Any:
    mod = types.ModuleType(MOD)
    mod.Echo, mod.Raises, mod.BadSchema, mod.BadName = Echo, Raises, BadSchema, BadName
    mod.ShellTool = ShellTool
    sys.modules[MOD] = mod
    yield mod
    del sys.modules[MOD]


def ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, "cortex.tools")


def test_good_tools_load_and_bad_ones_are_reported(module: Any) -> None:
    tools = load_tools([ep("echo", f"{MOD}:Echo"), ep("raises", f"{MOD}:Raises"),
                        ep("missing", "no_such_module_at_all:Tool"),
                        ep("badschema", f"{MOD}:BadSchema"), ep("badname", f"{MOD}:BadName"),
                        ep("echo2", f"{MOD}:Echo")])
    assert sorted(tools.tools) == ["echo", "shell"]  # the shell is always there
    problems = {p.name: p.error for p in tools.problems}
    assert set(problems) == {"raises", "missing", "badschema", "badname", "echo2"}
    assert "constructor failed" in problems["raises"]
    assert "ModuleNotFoundError" in problems["missing"]
    assert "not a valid JSON Schema" in problems["badschema"]
    assert "not a tool name" in problems["badname"]
    assert "taken" in problems["echo2"]
    infos, bad = tools.hello()
    assert [i.name for i in infos] == ["echo", "shell"] and len(bad) == 5


def test_inputs_are_parsed_and_validated(module: Any) -> None:
    tools = load_tools([ep("echo", f"{MOD}:Echo")])
    assert tools.parse_input("echo", '{"text": "hi"}') == {"text": "hi"}
    assert tools.parse_input("", "ls -l") == "ls -l"  # the shell takes the text itself
    with pytest.raises(ToolInputError, match="takes JSON input"):
        tools.parse_input("echo", "not json")
    with pytest.raises(ToolInputError, match="text.*is not of type 'string'"):
        tools.parse_input("echo", '{"text": 3}')
    with pytest.raises(ToolInputError, match="'text' is a required property"):
        tools.parse_input("echo", "{}")
    with pytest.raises(ToolInputError):
        tools.parse_input("shell", "")  # minLength 1


def test_tool_labels_come_only_from_hello() -> None:
    labels = node_labels({"zone": "a", "cortex.tool/fake": "1"},
                         [("shell", "0.1.0"), ("echo", "1.0+local"), ("Bad", "1")])
    assert labels == {"zone": "a", "cortex.tool/shell": "0.1.0", "cortex.tool/echo": "1.0_local"}
    assert requires("") is None and requires("shell") is None
    assert requires("echo") == "cortex.tool/echo"


def test_scheduler_routes_by_tool() -> None:
    idle = Candidate("idle", {"cortex.tool/shell": "1"}, 4, 0)
    busy = Candidate("busy", {"cortex.tool/shell": "1", "cortex.tool/echo": "1"}, 4, 3)
    assert pick([idle, busy], {}) is idle
    assert pick([idle, busy], {}, tool="echo") is busy
    assert pick([idle, busy], {}, tool="nosuch") is None
    placer = Placer([idle, busy], lambda n: n.running)
    assert placer.pick({}, tool="echo") is busy
    assert placer.pick({}, tool="shell") is idle
    assert placer.pick({"cortex.tool/echo": "2"}, tool="echo") is None


class Waits(AsyncTool):
    name = "waits"

    def __init__(self) -> None:
        self.cleaned = asyncio.Event()

    async def run(self, task: ToolTask, io: ToolIO) -> int:
        io.write("ready\n")
        try:
            data = await io.read()
            if data == b"boom":
                raise ValueError("asked to fail")
            io.write(b"got " + data)
            return 4
        finally:
            self.cleaned.set()


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def started(self, pid: int) -> None:
        self.log.append(("started", pid))

    def start_failed(self, message: str) -> None:
        self.log.append(("start_failed", message))

    def output(self, data: bytes) -> None:
        self.log.append(("output", data))


def _task(**run: Any) -> ToolTask:
    return ToolTask("t-00000000000000000000", 1, "default", None, RunSpec("x", **run),
                    cancel_grace_s=0.05)


async def _run(tool: Waits, events: Events, act: Any, **run: Any) -> TaskExit:
    runner = tool.runner(_task(**run), events)
    runner.start()
    await asyncio.sleep(0)
    act(runner)
    return await asyncio.wait_for(runner.done, 10)


def test_async_runner_contract() -> None:
    async def main() -> None:
        tool, ev = Waits(), Events()
        got = await _run(tool, ev, lambda r: r.write_input(b"abc"))
        assert got == TaskExit(4, node_pb2.FINISH_KIND_EXITED)
        assert ev.log == [("started", 0), ("output", b"ready\n"), ("output", b"got abc")]

        tool, ev = Waits(), Events()
        got = await _run(tool, ev, lambda r: r.cancel(node_pb2.FINISH_KIND_CANCELLED, "stop"))
        assert (got.kind, got.reason) == (node_pb2.FINISH_KIND_CANCELLED, "stop")
        assert tool.cleaned.is_set()

        tool, ev = Waits(), Events()
        got = await _run(tool, ev, lambda r: r.write_input(b"boom"))
        assert got.exit_code == 70 and "ValueError: asked to fail" in got.reason
        assert b"asked to fail" in ev.log[-1][1]

        tool, ev = Waits(), Events()
        got = await _run(tool, ev, lambda r: None, timeout_s=0.2)
        assert got.kind == node_pb2.FINISH_KIND_TIMED_OUT and "hard timeout" in got.reason

    asyncio.run(main())

"""Edge prompt detection with real programs in real PTYs (issue 3, "Tests and figures").

The runner tests drive :class:`nodeagent.runner.TaskProcess` with the same wiring the
task host uses (:class:`nodeagent.detect.live.TaskPrompts`: marker environment, detector,
quiet-timer kernel check) and measure, for each event, the time from the read that
delivered the prompt's last byte to the event's emission; each must be < 200 ms. The
fleet test follows one prompt through nodeagent → cortexd → ``cortexctl watch --json``.
"""

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvloop

from cortex.v1 import node_pb2
from examples.localfleet import binary, wait_until
from nodeagent.detect.live import TaskPrompts
from nodeagent.runner import RunSpec, TaskProcess

pytestmark = pytest.mark.system
T = TypeVar("T")
MAX_LATENCY_S = 0.2
KEY = ("t-prompt", 1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@dataclass
class Seen:
    reads: list[tuple[int, float]] = field(default_factory=list)  # (end offset, read time)
    events: list[tuple[node_pb2.PromptEvent, float]] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)

    def latency(self, ev: node_pb2.PromptEvent, emitted: float) -> float:
        """From the read that delivered the byte just before ``ev.offset`` to the event."""
        read_at = next(t for end, t in self.reads if end >= ev.offset)
        return emitted - read_at


async def until_event(command: str, kind: str, *, answer: bytes = b"",
                      allow_prompts: bool = False, timeout_s: float = 10.0,
                      ) -> tuple[node_pb2.PromptEvent, float, Seen]:
    """Run ``command`` until a ``kind`` event; answer it (or kill); return it, its latency."""
    seen = Seen()
    got = asyncio.Event()
    prompts = TaskPrompts(lambda frame: (seen.events.append((frame.prompt, time.monotonic())),
                                         got.set()))
    spec = RunSpec(command, cols=100, rows=30, allow_prompts=allow_prompts,
                   prompt_env=prompts.env(KEY, allow_prompts))

    def on_output(data: bytes) -> None:
        seen.reads.append((len(seen.output) + len(data), time.monotonic()))
        seen.output.extend(data)
        prompts.feed(KEY, data, len(seen.output))

    proc = TaskProcess(spec, on_output, cancel_grace_s=0.2)
    pid = proc.start()
    prompts.start(KEY, pid, lambda: proc.pty_fd, spec.cols)
    try:
        async with asyncio.timeout(timeout_s):
            while not any(ev.kind == kind for ev, _ in seen.events):
                got.clear()
                await got.wait()
    finally:
        ev, emitted = next(((e, t) for e, t in seen.events if e.kind == kind), (None, 0.0))
        if answer and ev is not None:
            proc.write_input(answer)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill_now()
        else:
            proc.kill_now()
        await proc.wait()
        prompts.stop(KEY)
    assert ev is not None
    return ev, seen.latency(ev, emitted), seen


def check(command: str, kind: str, detector: str, **kw: Any) -> node_pb2.PromptEvent:
    ev, latency, seen = run(until_event(command, kind, **kw))
    assert ev.detector == detector, seen.events
    assert latency < MAX_LATENCY_S, f"{kind} took {latency * 1000:.1f} ms"
    kinds = [e.kind for e, _ in seen.events]
    assert kinds.count(kind) == 1, kinds  # one event per prompt occurrence
    print(f"{command!r}: {kind}/{detector} in {latency * 1000:.2f} ms")
    return ev


def test_bash_read_prompt_is_input_required_from_the_kernel() -> None:
    # "Total so far: " is only a weak pattern: the kernel (bash asleep in read on the tty)
    # agrees.
    ev = check("bash -c 'read -p \"Total so far: \" x; echo hi $x'", "input_required",
               "kernel", answer=b"bob\n")
    assert ev.excerpt == b"Total so far:"


def test_a_field_label_is_a_pattern_the_kernel_confirms() -> None:
    # "Your name: " is a form field's shape: it fires at the quiet tick once the kernel
    # says someone reads the terminal.
    ev = check("bash -c 'read -p \"Your name: \" x; echo hi $x'", "input_required",
               "pattern", answer=b"bob\n")
    assert ev.excerpt == b"Your name:"


def test_password_prompt_getpass() -> None:
    check("python3 -c 'import getpass; getpass.getpass()'", "password", "pattern",
          answer=b"x\n")


def test_silent_read_is_a_password_by_the_terminal_echo_flag() -> None:
    check("bash -c 'read -s -p \"Secret? \" x'", "password", "kernel", answer=b"x\n")


def test_sudo_prompt_from_the_agents_nonced_sudo_prompt() -> None:
    # sudo is not installed here (and root would not be asked): print SUDO_PROMPT as sudo
    # would, from the environment the agent gave the task, then read like sudo.
    ev = check("printf '%s' \"$SUDO_PROMPT\"; read -s x", "password", "marker", answer=b"x\n")
    assert ev.confidence == pytest.approx(1.0)


def test_python_repl() -> None:
    check("python3 -q", "repl", "pattern", answer=b"exit()\n")


def test_less_on_a_long_file() -> None:
    check("less /etc/services", "pager", "pattern", answer=b"q")


def test_interactive_shell_marker_carries_exit_code_and_cwd() -> None:
    async def main() -> list[node_pb2.PromptEvent]:
        ev, _, seen = await until_event("bash --norc --noprofile -i", "shell_ready",
                                        answer=b"cd /tmp; false\nexit\n", allow_prompts=True)
        return [e for e, _ in seen.events]

    first, second = run(main())
    assert (first.kind, first.detector, first.exit_code) == ("shell_ready", "marker", 0)
    assert first.cwd == os.getcwd()
    assert (second.kind, second.exit_code, second.cwd) == ("shell_ready", 1, "/tmp")


def test_prompt_event_reaches_cortexctl_watch(ctl, nodes) -> None:  # type: ignore[no-untyped-def]
    task_id = ctl.submit("python3 -q")
    command = [*binary("cortexctl"), "--hub", ctl.hub.control_address, "--token-file",
               str(ctl.hub.admin_token_file), "--insecure-loopback", "watch", "--json", task_id]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert watch.stdout is not None
        prompt = None
        for line in watch.stdout:
            event = json.loads(line)
            if event["event"] == "prompt":
                prompt = event["prompt"]
                break
        assert prompt is not None and prompt["kind"] == "repl", prompt
        assert prompt["detector"] == "pattern" and prompt["excerpt"] == ">>>"
        assert ctl.task(task_id)["last_prompt"]["kind"] == "repl"
        assert ctl("input", task_id, "exit()").returncode == 0
        assert watch.wait(timeout=30) == 0
    finally:
        # On a failure (or the per-test timeout) the watch would wait for a task that
        # waits for input: end it, or the with-less Popen would hang the run.
        if watch.poll() is None:
            watch.kill()
        watch.wait()
        if watch.stdout is not None:
            watch.stdout.close()


def test_a_watch_started_after_the_prompt_still_gets_it(ctl, nodes) -> None:  # type: ignore[no-untyped-def]
    task_id = ctl.submit("python3 -q")
    wait_until(lambda: (ctl.task(task_id).get("last_prompt") or {}).get("kind") == "repl", 30,
               "the REPL prompt to reach the hub")
    command = [*binary("cortexctl"), "--hub", ctl.hub.control_address, "--token-file",
               str(ctl.hub.admin_token_file), "--insecure-loopback", "watch", "--json", task_id]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert watch.stdout is not None
        kinds = []
        for line in watch.stdout:
            event = json.loads(line)
            kinds.append(event["event"])
            if event["event"] == "prompt":
                assert event["prompt"]["kind"] == "repl"
                break
        assert "prompt" in kinds, kinds
        assert ctl("input", task_id, "exit()").returncode == 0
        assert watch.wait(timeout=30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait()
        if watch.stdout is not None:
            watch.stdout.close()

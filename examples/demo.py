"""The guided tour: a hub, three nodes and four tasks on this machine, then a clean stop.

``make demo`` (or ``python -m examples.demo``) needs nothing installed beyond the
project: cortexd runs with its embedded defaults (SQLite, no Redis/PostgreSQL)
in a temporary state directory, on free loopback ports. Everything the demo does
to the fleet goes through the real ``cortexctl``:

1. ``seq 1 20000`` — a lot of output, shown abbreviated and checked line by line;
2. ``read x; echo got $x`` — waits for input, answered with ``cortexctl input``;
3. ``sleep 1000`` — cancelled with ``cortexctl cancel``;
4. ``ls /nonexistent`` — fails, with its exit code recorded;
5. a browser session on node-1 (its agent starts browserd): a local page, a field filled
   by its element reference, the accessibility snapshot shown.

Then it stops the nodes and cortexd with SIGTERM and checks that they exited 0
and left nothing behind: no child process, no listening port, no shared-memory
segment, no task process. It exits 0 only if every check passed; on failure it
prints the logs' tails and keeps the state directory for a look.
"""

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cortexctl.render import table
from examples.demobrowse import BROWSER_ARGS, BROWSER_NODE, browse_tour
from examples.demomonitor import monitor_tour
from examples.localfleet import Ctl, FleetError, LocalHub, LocalNode, tail

NODES = {"node-1": "a", "node-2": "b", "node-3": "c"}
BIG_LINES = 20_000
ANSWER = "hello from the demo"


@dataclass
class Check:
    what: str
    expected: str
    got: str
    ok: bool


class Demo:
    def __init__(self, base: Path) -> None:
        self.hub = LocalHub(base, shards=2)
        self.nodes = [LocalNode(self.hub, node_id, labels={"zone": zone}, capacity=2,
                                extra_args=BROWSER_ARGS if node_id == BROWSER_NODE else ())
                      for node_id, zone in NODES.items()]
        self.ctl = Ctl(self.hub)
        self.checks: list[Check] = []

    def check(self, what: str, expected: str, got: str, ok: bool | None = None) -> bool:
        passed = (expected == got) if ok is None else ok
        self.checks.append(Check(what, expected, got, passed))
        return passed

    # -- the tour ------------------------------------------------------------

    def start(self) -> None:
        step("Starting cortexd (2 shards, embedded SQLite store, loopback, free ports)")
        self.hub.start()
        print(f"  node port {self.hub.node_address}, control port {self.hub.control_address}, "
              f"state in {self.hub.state_dir}")
        step("Enrolling and starting 3 nodeagents")
        for node in self.nodes:
            node.start()
        self.ctl.wait_nodes(NODES)
        print(indent(self.ctl.ok("nodes").decode()))
        print(indent(self.ctl.ok("shards").decode()))

    def submit(self, command: str, what: str) -> str:
        task_id = self.ctl.submit(command)
        print(f"  {task_id}  {what}: {command}")
        return task_id

    def run_tasks(self) -> None:
        step("Submitting four tasks through cortexctl")
        big = self.submit(f"seq 1 {BIG_LINES}", "prints a lot")
        ask = self.submit("read x; echo got $x", "waits for input")
        sleeper = self.submit("sleep 1000", "will be cancelled")
        failing = self.submit("echo looking for /nonexistent; ls /nonexistent", "fails")

        step(f"Answering {ask} with cortexctl input")
        self.ctl.wait_state(ask, ["RUNNING"])
        self.ctl.ok("input", ask, ANSWER)
        out, status = self.ctl.watch(ask)
        show(out)
        self.check("input answered", f"got {ANSWER}", last_line(out), f"got {ANSWER}" in
                   text_lines(out))
        self.check("input task status", "0", str(status))

        step(f"Cancelling {sleeper} with cortexctl cancel")
        self.ctl.wait_state(sleeper, ["RUNNING"])
        print(indent(self.ctl.ok("cancel", sleeper).decode()))
        _, status = self.ctl.watch(sleeper)
        self.check("cancelled task state", "CANCELLED", self.ctl.task(sleeper)["state"])
        self.check("cancelled task status", "130", str(status))

        step(f"Output of {failing}")
        out, status = self.ctl.watch(failing)
        show(out)
        task = self.ctl.task(failing)
        self.check("failing task state", "FAILED", task["state"])
        self.check("failing task exit code", "non-zero", str(task["exit_code"]),
                   task["exit_code"] not in (None, 0))

        step(f"Output of {big} (abbreviated)")
        out, status = self.ctl.watch(big)
        lines = text_lines(out)
        show(out, head=3, tail=3)
        expected = [str(i) for i in range(1, BIG_LINES + 1)]
        got = f"{len(lines)} lines, {lines[0]}..{lines[-1]}" if lines else "no lines"
        self.check("big output", f"{BIG_LINES} lines, 1..{BIG_LINES}", got, lines == expected)
        self.check("big output bytes", str(len(out)),
                   str(self.ctl.task(big)["output_bytes"]))

        step("cortexctl tasks")
        print(indent(self.ctl.ok("tasks").decode()))

    def shutdown(self) -> None:
        step("Stopping: SIGTERM to the nodeagents, then to cortexd")
        strays = {node.node_id: node for node in self.nodes}
        for node in self.nodes:
            self.check(f"{node.node_id} exit code", "0", str(node.stop()))
        for node_id, node in strays.items():
            pids = ", ".join(str(pid) for pid in node.stray_processes())
            self.check(f"{node_id} task processes left", "none", pids or "none")
        self.check("cortexd exit code", "0", str(self.hub.stop()))
        left = self.hub.leftovers()
        self.check("cortexd left behind", "nothing", "; ".join(left) or "nothing")

    def kill_everything(self) -> None:
        for node in self.nodes:
            node.kill()
        self.hub.kill()

    def logs(self) -> None:
        print(f"\n--- cortexd log ({self.hub.log_path}) ---\n{tail(self.hub.log_path)}")
        for node in self.nodes:
            print(f"\n--- {node.node_id} log ({node.log_path}) ---\n{node.log_tail()}")


# -- printing ---------------------------------------------------------------------

def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip("\n").splitlines())


def text_lines(out: bytes) -> list[str]:
    """Lines of a PTY's output (the terminal turns each \\n into \\r\\n)."""
    return out.decode(errors="replace").replace("\r\n", "\n").splitlines()


def last_line(out: bytes) -> str:
    lines = text_lines(out)
    return lines[-1] if lines else ""


def show(out: bytes, head: int = 10, tail: int = 10) -> None:
    lines = text_lines(out)
    if len(lines) > head + tail:
        lines = [*lines[:head], f"… {len(lines) - head - tail} lines omitted …", *lines[-tail:]]
    print(indent("\n".join(f"| {line}" for line in lines)) if lines else "  (no output)",
          flush=True)


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="cortex-demo-"))
    demo = Demo(base)
    error = ""
    try:
        demo.start()
        demo.run_tasks()
        monitor_tour(demo, step, indent)
        browse_tour(demo, step, indent)
        demo.shutdown()
    except (FleetError, TimeoutError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        demo.kill_everything()  # a no-op after a clean shutdown

    step("Summary")
    rows = [[c.what, c.expected, c.got, "ok" if c.ok else "FAILED"] for c in demo.checks]
    print(indent(table(["CHECK", "EXPECTED", "GOT", "RESULT"], rows)))
    passed = not error and demo.checks and all(c.ok for c in demo.checks)
    if passed:
        shutil.rmtree(base, ignore_errors=True)
        print("\nAll checks passed; everything stopped cleanly.")
        return 0
    if error:
        print(f"\nThe demo stopped early: {error}")
    demo.logs()
    print(f"\nSome checks failed; state and logs kept in {base}")
    return 1


if __name__ == "__main__":
    sys.exit(main())

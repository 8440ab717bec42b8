"""Monitors under load (issue 10): prompt on the node → the monitor's decision applied.

A real cortexd (SQLite, its monitor process) and simulated nodes in this process
(``bench/simnode.py``, with the hub's TaskInput frames timed). Each phase submits
``--tasks`` long-running tasks (default 1,000) on ``--nodes`` nodes, lets them run, makes
them prompt, and cancels them; hub CPU is read from /proc for every hub process
(supervisor, control, shards, monitor) from before the submission to after the
cancellations settled — a task's whole life — and for the prompts' window alone:

1. **unmonitored**: the tasks prompt and nobody answers;
2. **burst**: monitored tasks whose rule answers the prompt, all 1,000 prompting within
   about a second: latency from the node sending the PromptEvent to the node receiving
   the TaskInput (p50/p99), and what the hub sustains;
3. **steady**: the same with the prompts spread at ``--rate`` per second (1,000
   monitored tasks, each prompting once in ``tasks / rate`` seconds);
4. **mixed** (``--mixed``): a realistic mix of 1,000 monitored tasks — confirm prompts
   a rule answers, password prompts (ESCALATE, never an LLM), exits (a rule completes),
   idle tasks (a policy that re-checks them after 5 s: the rule WAITs), and prompts no
   rule covers, which go to an LLM (the scripted OpenAI-compatible server
   ``tests/llmscript.py``, answering at once). The share of decisions made without an
   LLM is counted from the decisions the hub recorded before the cancellations.

``python -m bench.monitors [--tasks 1000 --nodes 50 --rate 100 --mixed]``; the result
goes to ``bench/results/monitors.json`` with the machine's metadata and load average.
"""

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc

from bench.fleet import enroll
from bench.harness import RESULTS, Bench, cpu_ticks, loadavg, pct, running_hub, save
from bench.simnode import EOF, FleetStats, SimNode, Workload
from cortex.envelope import EnvelopeVerifier, load_public_key
from cortex.tokens import bearer
from cortex.v1 import control_pb2, control_pb2_grpc, monitor_pb2, monitor_pb2_grpc, node_pb2
from tests.llmscript import Reply, scripted_llm

RULES = r'''
check_every_s = 0
[[rule]]
id = "proceed"
on = "prompt"
match = 'Proceed\? \[y/N\]'
action = "SEND_INPUT"
text = "y\n"
[[rule]]
id = "password"
on = "prompt"
kind = "password"
action = "ESCALATE"
reason = "a person types the password"
[[rule]]
id = "done"
on = "end"
exit_code = 0
action = "COMPLETE"
verdict = "exited 0"
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
'''
IDLE = r'''
check_every_s = 5
[[rule]]
id = "quiet"
on = "idle"
idle_over_s = 3
action = "WAIT"
next_check_seconds = 600
[[rule]]
id = "end"
on = "end"
action = "COMPLETE"
'''
CONFIRM = b"Proceed? [y/N] "
UNCOVERED = b"Really overwrite the release tag? (yes/no) "
PASSWORD = b"[sudo] password for build: "
# The mixed phase: (share of the tasks, what each does)
MIX = (("confirm", 0.50), ("password", 0.10), ("exit", 0.15), ("idle", 0.15),
       ("uncovered", 0.10))


class TimedNode(SimNode):
    """A simulated node that records when each task's first input arrives."""

    inputs: dict[str, float]

    async def _serve(self, call: Any, stop: asyncio.Event) -> None:
        original = call.read

        async def read() -> Any:
            while True:
                frame = await original()
                if frame is not EOF and frame.WhichOneof("kind") == "input":
                    self.inputs.setdefault(frame.input.task_id, time.perf_counter())
                    continue
                return frame
        call.read = read
        await super()._serve(call, stop)

    def _held(self, task_id: str) -> Any:
        return self.held[next(k for k in self.held if k[0] == task_id)]

    async def prompt(self, task_id: str, text: bytes, kind: str = "confirm") -> float:
        h = self._held(task_id)
        at = time.perf_counter()
        async with self.lock:
            await self._write(node_pb2.NodeFrame(prompt=node_pb2.PromptEvent(
                task_id=task_id, attempt=h.attempt, kind=kind, detector="pattern",
                confidence=0.9, excerpt=text, offset=h.produced + len(text),
                at_ms=int(time.time() * 1000))))
        return at

    async def exit(self, task_id: str) -> float:
        """The task's program exits 0 now."""
        h = self._held(task_id)
        at = time.perf_counter()
        if h.runner is not None:
            h.runner.cancel()
        h.finished = True
        await self._pump(h)
        return at


def role_pids(bench: Bench) -> dict[str, list[int]]:
    info = json.loads((bench.hub.state_dir / "cortexd.json").read_text())
    roles = {"supervisor": [info["pid"]], "control": [info["control_pid"]],
             "shards": [s["pid"] for s in info["shards"]],
             "monitor": [m["pid"] for m in info["monitors"]]}
    named = {p for ps in roles.values() for p in ps}
    roles["other"] = [p for p in bench.hub_pids() if p not in named]
    return roles


class CPU:
    """Hub CPU seconds per role since it was made."""

    def __init__(self, bench: Bench) -> None:
        self.roles = role_pids(bench)
        self.t0 = time.monotonic()
        self.ticks0 = {r: cpu_ticks(ps) for r, ps in self.roles.items()}

    def since(self) -> dict[str, float]:
        out = {r: round((cpu_ticks(ps) - self.ticks0[r]) / 100, 2)
               for r, ps in self.roles.items()}
        out["total"] = round(sum(out.values()), 2)
        out["window_s"] = round(time.monotonic() - self.t0, 2)
        return out


def per_task_ms(cpu: dict[str, float], tasks: int) -> dict[str, float]:
    return {k: round(v * 1000 / tasks, 3) for k, v in cpu.items() if k != "window_s"}


async def submit(control: Any, token: Any, reqs: list[Any]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(reqs), 500):
        resp = await control.SubmitMany(control_pb2.SubmitManyRequest(tasks=reqs[i:i + 500]),
                                        metadata=token, timeout=120)
        ids += [r.submitted.task.task_id for r in resp.results]
    return ids


async def placed(nodes: list[TimedNode], ids: list[str]) -> dict[str, TimedNode]:
    where: dict[str, TimedNode] = {}
    deadline = time.monotonic() + 120
    while len(where) < len(ids) and time.monotonic() < deadline:
        for n in nodes:
            for (tid, _a) in list(n.held):
                where[tid] = n
        await asyncio.sleep(0.1)
    return where


async def cancel_all(control: Any, token: Any, ids: list[str]) -> None:
    sem = asyncio.Semaphore(32)

    async def one(tid: str) -> None:
        async with sem:
            await control.Cancel(control_pb2.CancelRequest(task_id=tid), metadata=token,
                                 timeout=60)
    await asyncio.gather(*(one(t) for t in ids))


async def settle(bench: Bench, quiet_ticks: int = 5) -> None:
    """Wait until the hub's CPU use has been quiet for a moment (the cancellations and
    their end decisions are done), at most 60 s."""
    pids = bench.hub_pids()
    last, quiet = cpu_ticks(pids), 0
    deadline = time.monotonic() + 60
    while quiet < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = cpu_ticks(pids)
        quiet = quiet + 1 if now - last <= quiet_ticks else 0
        last = now


def latency(nodes: list[TimedNode], sent: dict[str, float]) -> list[float]:
    return [(n.inputs[t] - sent[t]) * 1000 for n in nodes for t in n.inputs if t in sent]


async def wait_answered(nodes: list[TimedNode], sent: dict[str, float],
                        timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(1 for n in nodes for t in n.inputs if t in sent) >= len(sent):
            return
        await asyncio.sleep(0.02)


async def phase(bench: Bench, nodes: list[TimedNode], tasks: int, policy: str | None,
                rate: float) -> dict[str, Any]:
    """``rate`` prompts per second (0: all at once)."""
    token = bearer(bench.token)
    async with grpc.aio.insecure_channel(bench.hub.control_address) as ch:
        control: Any = control_pb2_grpc.ControlStub(ch)  # type: ignore[no-untyped-call]
        life = CPU(bench)
        load0 = loadavg()
        ids = await submit(control, token, [control_pb2.SubmitRequest(
            command=f"sim {i}", policy_toml=policy or "",
            monitor_policy="inline" if policy else "") for i in range(tasks)])
        where = await placed(nodes, ids)
        await asyncio.sleep(2.0)  # the monitors see RUNNING
        window = CPU(bench)
        sent: dict[str, float] = {}
        step = 10 / rate if rate else 0.0
        t0 = time.perf_counter()
        for k, tid in enumerate(ids):
            sent[tid] = await where[tid].prompt(tid, CONFIRM)
            if step and k % 10 == 9:
                await asyncio.sleep(max(0.0, t0 + (k + 1) / rate - time.perf_counter()))
        spread_s = time.perf_counter() - t0
        if policy:
            await wait_answered(nodes, sent, 120)
        else:
            await asyncio.sleep(3.0)
        in_window = window.since()
        lat = latency(nodes, sent)
        await cancel_all(control, token, ids)
        await settle(bench)
        whole = life.since()
    return {"tasks": tasks, "prompts_spread_s": round(spread_s, 2), "answered": len(lat),
            "p50_ms": pct(lat, 0.5), "p90_ms": pct(lat, 0.9), "p99_ms": pct(lat, 0.99),
            "max_ms": round(max(lat), 2) if lat else None,
            "cpu_prompt_window_s": in_window, "cpu_whole_life_s": whole,
            "cpu_ms_per_task_whole_life": per_task_ms(whole, tasks),
            "loadavg_before": load0, "loadavg_after": loadavg()}


def kind_of(d: Any) -> str:
    if d.rule_id == "builtin:llm-failed":
        return "llm_failed"
    if d.model:
        return "llm"
    return "builtin" if d.rule_id.startswith("builtin:") else "rule"


async def mixed(bench: Bench, nodes: list[TimedNode], tasks: int) -> dict[str, Any]:
    token = bearer(bench.token)
    plan: list[str] = []
    for what, share in MIX:
        plan += [what] * round(share * tasks)
    plan = (plan + ["confirm"] * tasks)[:tasks]
    async with grpc.aio.insecure_channel(bench.hub.control_address) as ch:
        control: Any = control_pb2_grpc.ControlStub(ch)  # type: ignore[no-untyped-call]
        monitors: Any = monitor_pb2_grpc.MonitorsStub(ch)  # type: ignore[no-untyped-call]
        load0 = loadavg()
        ids = await submit(control, token, [control_pb2.SubmitRequest(
            command=f"sim {what} {i}", policy_toml=IDLE if what == "idle" else RULES,
            monitor_policy="inline") for i, what in enumerate(plan)])
        where = await placed(nodes, ids)
        await asyncio.sleep(2.0)
        t0 = time.perf_counter()
        sent: dict[str, tuple[str, float]] = {}
        for k, (tid, what) in enumerate(zip(ids, plan, strict=True)):
            n = where[tid]
            if what == "confirm":
                sent[tid] = (what, await n.prompt(tid, CONFIRM))
            elif what == "uncovered":
                sent[tid] = (what, await n.prompt(tid, UNCOVERED))
            elif what == "password":
                sent[tid] = (what, await n.prompt(tid, PASSWORD, kind="password"))
            elif what == "exit":
                sent[tid] = (what, await n.exit(tid))
            if k % 10 == 9:  # 100 events a second
                await asyncio.sleep(max(0.0, t0 + (k + 1) / 100 - time.perf_counter()))
        answerable = {t: at for t, (what, at) in sent.items()
                      if what in ("confirm", "uncovered")}
        await wait_answered(nodes, answerable, 120)
        await asyncio.sleep(max(0.0, 8.0 - (time.perf_counter() - t0)))  # idle re-checks
        cut_ms = int(time.time() * 1000)
        counts: dict[str, int] = {}
        by_trigger: dict[str, dict[str, int]] = {}
        for tid in ids:
            ds = await monitors.ListDecisions(monitor_pb2.ListDecisionsRequest(task_id=tid),
                                              metadata=token, timeout=30)
            for d in ds.decisions:
                if d.at_ms > cut_ms:
                    continue
                k = kind_of(d)
                counts[k] = counts.get(k, 0) + 1
                by_trigger.setdefault(d.wake, {}).setdefault(k, 0)
                by_trigger[d.wake][k] += 1
        lat = {w: [] for w in ("confirm", "uncovered")}  # type: dict[str, list[float]]
        for n in nodes:
            for t, at in n.inputs.items():
                if t in sent and sent[t][0] in lat:
                    lat[sent[t][0]].append((at - sent[t][1]) * 1000)
        await cancel_all(control, token, [t for t, w in zip(ids, plan, strict=True)
                                          if w != "exit"])
        await settle(bench)
    total = sum(counts.values())
    without = counts.get("rule", 0) + counts.get("builtin", 0)
    return {"tasks": tasks, "mix": dict(MIX), "decisions": counts, "by_trigger": by_trigger,
            "share_without_llm": round(without / total, 3) if total else None,
            "confirm_answered": len(lat["confirm"]), "confirm_p50_ms": pct(lat["confirm"], 0.5),
            "confirm_p99_ms": pct(lat["confirm"], 0.99),
            "llm_answered": len(lat["uncovered"]), "llm_p50_ms": pct(lat["uncovered"], 0.5),
            "llm_p99_ms": pct(lat["uncovered"], 0.99),
            "loadavg_before": load0, "loadavg_after": loadavg()}


async def run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    key = load_public_key(bench.hub.hub_key_file)
    tokens = bench.base / "sim.tokens"
    enroll(bench.hub.state_dir / "tokens", [f"sim-{i}" for i in range(args.nodes)], tokens)
    stats = FleetStats()
    # No output while prompts wait: simulated output is not the prompt's bytes, and output
    # past a prompt means it was answered.
    work = Workload(stream_bps=10, stream_s=3600, stream_tick_s=600.0)
    nodes = []
    for line in tokens.read_text().splitlines():
        node_id, token = line.split()
        n = TimedNode(node_id, token, [bench.hub.node_address], EnvelopeVerifier(key, node_id),
                      stats, work)
        n.inputs = {}
        nodes.append(n)
    stop = asyncio.Event()
    runs = [asyncio.create_task(n.run(stop)) for n in nodes]
    out: dict[str, Any] = {}
    try:
        while stats.attached < args.nodes:
            await asyncio.sleep(0.1)
        for name in args.phases.split(","):
            if name == "unmonitored":
                out[name] = await phase(bench, nodes, args.tasks, None, 0)
            elif name == "burst":
                out[name] = await phase(bench, nodes, args.tasks, RULES, 0)
            elif name == "steady":
                out[name] = await phase(bench, nodes, args.tasks, RULES, args.rate)
            elif name == "mixed":
                out[name] = await mixed(bench, nodes, args.tasks)
            print(name, json.dumps(out[name]), flush=True)
    finally:
        stop.set()
        for r in runs:
            r.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
    if "unmonitored" in out and "steady" in out:
        u = out["unmonitored"]["cpu_ms_per_task_whole_life"]["total"]
        m = out["steady"]["cpu_ms_per_task_whole_life"]["total"]
        out["cpu_ms_per_task"] = {"unmonitored": u, "monitored": m,
                                  "monitor_costs": round(m - u, 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--rate", type=float, default=100.0,
                   help="prompts per second in the steady phase")
    p.add_argument("--phases", default="unmonitored,steady,burst")
    p.add_argument("--mixed", action="store_true", help="also the mixed rules/LLM phase")
    args = p.parse_args()
    if args.mixed and "mixed" not in args.phases:
        args.phases += ",mixed"
    answer = json.dumps({"action": "SEND_INPUT", "text": "yes\n"})
    with scripted_llm([Reply(answer)]) as (url, script):
        cfg = Path(f"/tmp/cortex-bench-monitors-{int(time.time())}.toml")
        cfg.write_text(f'llm_url = "{url}"\nllm_model = "scripted"\nmax_queued_tasks = 100000\n'
                       "llm_calls_per_task_per_min = 600\nllm_max_concurrent = 16\n")
        with running_hub(shards=2, extra_args=["--config", str(cfg)]) as bench:
            result = asyncio.run(run(args, bench))
        result["llm_requests"] = len(script.requests)
    result["goals"] = {"p99_ms": 50, "share_without_llm": 0.8}
    result["command"] = "python -m bench.monitors " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "mixed")
    save("monitors", result, RESULTS.parent / "monitors.json")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Artifacts against the real binaries: throughput against a raw grpc.aio stream of the same
chunks, RSS growth of node agent, hub and cortexctl while a large artifact moves, and an
upload's resume after kill -9 of the hub.

``python -m bench.artifacts [--size-mib 1024] [--rss-size-mib 2048] [--kill-size-mib 512]
[--rounds N] [--label KEY]`` writes ``bench/results/artifacts.json`` (``--rounds``: the
throughput pairs, ours and raw alternating). In one run, on one machine:

- **upload node → hub**: a task on a real nodeagent collects a ``--output`` file
  (hard-linked into its directory, so making it costs nothing); the figure is the
  node's own ``artifact_uploaded`` duration (QueryWriteStatus, Write, the hub's sha256
  check and commit; the node's hashing before it is not counted, nor is the raw peer's).
- **download hub → cortexctl**: ``cortexctl artifacts get`` (the sha256 is checked as
  bytes arrive), its own ``download_s``.
- **raw**: ``bench.rawstream``: the same WriteRequest/ReadResponse messages of 1 MiB over a
  bare grpc.aio stream between two processes, file to file, nothing else.
- **RSS**: VmHWM (peak) after minus VmRSS before, for the node agent and the hub's
  control process across the ``--rss-size-mib`` transfers; cortexctl's peak (``wait4``
  ru_maxrss) of a get against that of an ``artifacts ls``.
- **resume**: ``cortexctl artifacts put`` of ``--kill-size-mib``; the hub is killed -9
  once a quarter is committed and started again; cortexctl resumes from the offset the
  hub reports. Figures: committed at the kill, where it resumed, seconds from the kill to
  the upload's end, and whether the blob is whole.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import rawstream
from bench.harness import save
from examples.localfleet import Ctl, LocalHub, LocalNode, binary, log_events, wait_until

RESULTS = Path(__file__).resolve().parent / "results" / "artifacts.json"
MiB = 1 << 20


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def make_file(path: Path, size_mib: int) -> Path:
    block = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        for i in range(0, size_mib, 16):
            n = min(16, size_mib - i) * MiB
            f.write(block[:n - 8] + i.to_bytes(8, "big"))  # every file, every block differs
    return path


def ctl_peak_mib(ctl: Ctl, *args: str) -> tuple[dict[str, Any], float]:
    """Like ctl_child, measuring the child's peak RSS by polling VmHWM while it runs."""
    command = [*binary("cortexctl"), "--hub", ctl.hub.control_address, "--token-file",
               str(ctl.hub.admin_token_file), "--insecure-loopback", *args, "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, status_kib(proc.pid, "VmHWM"))
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"cortexctl {' '.join(args)}: {err.decode()}")
    lines = [line for line in out.decode().splitlines() if line.strip()]
    return (json.loads(lines[-1]) if lines else {}), peak / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_upload(ctl: Ctl, node: LocalNode, src: Path) -> dict[str, Any]:
    before = len(log_events(node.log_path, "artifact_uploaded"))
    hub_cpu0, node_cpu0 = cpu_s(int(ctl.hub.info["control_pid"])), cpu_s(node.proc.pid)  # type: ignore[union-attr]
    tid = ctl.submit(f"ln -f {src} out.bin", "--node", node.node_id, "--output", "out.bin")
    _, status = ctl.watch(tid, timeout_s=900)
    assert status == 0, f"task {tid} exited {status}"
    events = log_events(node.log_path, "artifact_uploaded")
    assert len(events) == before + 1, "the node did not upload the output"
    stored = log_events(ctl.hub.log_path, "artifact_stored")
    stages = {k: v for k, v in stored[-1].items() if k.endswith("_s")} if stored else {}
    # CPU of the whole task (the node also hashes the file before the upload, ~0.7 s/GiB).
    return {"task": tid, "sha256": events[-1]["sha256"], "seconds": events[-1]["duration_s"],
            "hub_cpu_s": round(cpu_s(int(ctl.hub.info["control_pid"])) - hub_cpu0, 2),
            "node_cpu_s": round(cpu_s(node.proc.pid) - node_cpu0, 2),  # type: ignore[union-attr]
            "hub_stages": stages}


def transfer_round(ctl: Ctl, node: LocalNode, src: Path, dest: Path) -> dict[str, Any]:
    size = src.stat().st_size
    up = node_upload(ctl, node, src)
    got, peak = ctl_peak_mib(ctl, "artifacts", "get", up["sha256"], "-o", str(dest))
    assert got["size_bytes"] == size
    dest.unlink()
    return {"bytes": size, "upload_s": up["seconds"], "download_s": got["download_s"],
            "hub_cpu_s": up["hub_cpu_s"], "node_cpu_s": up["node_cpu_s"],
            "hub_stages": up["hub_stages"], "load": os.getloadavg()[0],
            "upload_mib_s": round(size / MiB / up["seconds"], 1),
            "download_mib_s": round(size / MiB / got["download_s"], 1),
            "cortexctl_peak_mib": round(peak, 1)}


def raw_round(base: Path, src: Path) -> dict[str, Any]:
    root = base / "raw"
    root.mkdir()
    os.link(src, root / "down.bin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bench.rawstream", "serve", str(port),
                               str(root)], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        address = f"127.0.0.1:{port}"
        cpu: dict[str, float] = {}

        def timed(name: str, run: Any) -> float:
            server0, client0 = cpu_s(server.pid), sum(os.times()[:2])
            seconds: float = asyncio.run(run)
            cpu[f"{name}_server_cpu_s"] = round(cpu_s(server.pid) - server0, 2)
            cpu[f"{name}_client_cpu_s"] = round(sum(os.times()[:2]) - client0, 2)
            return seconds
        up = timed("upload", rawstream.upload(address, src))
        up_durable = timed("upload_fsync", rawstream.upload(address, src, durable=True))
        down = timed("download", rawstream.download(address, base / "raw-dl.bin"))
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(root)
        (base / "raw-dl.bin").unlink(missing_ok=True)
    size = src.stat().st_size
    return {"upload_s": round(up, 3), "download_s": round(down, 3),
            "upload_fsync_s": round(up_durable, 3), **cpu, "load": os.getloadavg()[0],
            "upload_mib_s": round(size / MiB / up, 1),
            "download_mib_s": round(size / MiB / down, 1)}


def resume_round(hub: LocalHub, ctl: Ctl, src: Path) -> dict[str, Any]:
    size = src.stat().st_size
    command = [*binary("cortexctl"), "--hub", hub.control_address, "--token-file",
               str(hub.admin_token_file), "--insecure-loopback", "artifacts", "put",
               str(src), "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial_dir = hub.state_dir / "artifacts" / "partial" / "default"

    def committed() -> int | None:
        sizes = [p.stat().st_size for p in partial_dir.glob("*")] if partial_dir.exists() else []
        return max(sizes) if sizes and max(sizes) >= size // 4 else None

    at_kill = wait_until(committed, 300, "a quarter of the upload committed", interval_s=0.01)
    hub.kill()
    killed = time.monotonic()
    hub.start()
    restarted = time.monotonic() - killed
    out, err = proc.communicate(timeout=600)
    done = time.monotonic() - killed
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().splitlines()[-1])
    info = json.loads(Ctl(hub).ok("artifacts", "ls", "--json").decode().splitlines()[0])
    return {"bytes": size, "committed_at_kill": at_kill, "resumed_from": result["resumed_from"],
            "hub_restart_s": round(restarted, 2), "kill_to_done_s": round(done, 2),
            "whole": info["sha256"] == result["sha256"] and info["size_bytes"] == size}


def throughput(ctl: Ctl, node: LocalNode, base: Path, size_mib: int,
               rounds: int) -> dict[str, Any]:
    """``rounds`` of ours and raw, alternating (ours, raw, raw, ours, ...): each 1 GiB file
    is new (no dedup); ratios per pair and their median (noise moves both sides)."""
    pairs = []
    for i in range(rounds):
        src = make_file(base / f"tp{i}.bin", size_mib)
        if i % 2 == 0:
            ours = transfer_round(ctl, node, src, base / "dl.bin")
            raw = raw_round(base, src)
        else:
            raw = raw_round(base, src)
            ours = transfer_round(ctl, node, src, base / "dl.bin")
        src.unlink()
        pairs.append({"ours": ours, "raw_grpc_aio": raw,
                      "upload_ratio": round(raw["upload_s"] / ours["upload_s"], 2),
                      "upload_ratio_vs_raw_fsync": round(raw["upload_fsync_s"]
                                                         / ours["upload_s"], 2),
                      "download_ratio": round(raw["download_s"] / ours["download_s"], 2)})

    def median(key: str) -> float:
        return float(statistics.median(p[key] for p in pairs))
    out: dict[str, Any] = pairs[0] if rounds == 1 else {"rounds": pairs}
    return out | {"median_upload_ratio": median("upload_ratio"),
                  "median_upload_ratio_vs_raw_fsync": median("upload_ratio_vs_raw_fsync"),
                  "median_download_ratio": median("download_ratio"), "goal_ratio": 0.7}


def run(base: Path, size_mib: int, rss_size_mib: int, kill_size_mib: int,
        rounds: int = 1) -> dict[str, Any]:
    hub = LocalHub(base / "fleet", shards=1).start()
    node = LocalNode(hub, "bench-node", capacity=2).start()
    ctl = Ctl(hub)
    try:
        ctl.wait_nodes([node.node_id])
        control_pid, agent_pid = int(hub.info["control_pid"]), node.proc.pid  # type: ignore[union-attr]
        rss0 = {"hub": status_kib(control_pid, "VmRSS"), "node": status_kib(agent_pid, "VmRSS")}
        _, ls_peak = ctl_peak_mib(ctl, "artifacts", "ls")
        result: dict[str, Any] = {}
        if rss_size_mib:
            result["rss"] = rss_figures(ctl, node, base, rss_size_mib, rss0, ls_peak,
                                        control_pid, agent_pid)
        result["throughput"] = throughput(ctl, node, base, size_mib, rounds)
        if kill_size_mib:
            result["resume_after_kill9"] = resume_round(
                hub, ctl, make_file(base / "kill.bin", kill_size_mib))
        return result
    finally:
        node.kill()
        hub.kill()


def rss_figures(ctl: Ctl, node: LocalNode, base: Path, size_mib: int, rss0: dict[str, int],
                ls_peak: float, control_pid: int, agent_pid: int) -> dict[str, Any]:
    big = make_file(base / "rss.bin", size_mib)
    rss_round = transfer_round(ctl, node, big, base / "dl.bin")
    growth = {
        "node_agent_mib": round((status_kib(agent_pid, "VmHWM") - rss0["node"]) / 1024, 1),
        "hub_control_mib": round((status_kib(control_pid, "VmHWM") - rss0["hub"]) / 1024, 1),
        "cortexctl_mib": round(rss_round["cortexctl_peak_mib"] - ls_peak, 1)}
    big.unlink()
    return {"artifact_bytes": size_mib * MiB, "growth": growth, "limit_mib": 64,
            "transfer": rss_round}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rss-size-mib", type=int, default=2048)
    p.add_argument("--kill-size-mib", type=int, default=512)
    p.add_argument("--rounds", type=int, default=1,
                   help="throughput rounds, ours and raw alternating (default 1)")
    p.add_argument("--label", default="", help="the key in the result file (default: "
                   "artifacts, or artifacts_partial without the RSS and kill rounds)")
    p.add_argument("--dir", type=Path, default=None, help="scratch directory (default: /tmp)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cortex-bench-artifacts-", dir=args.dir) as tmp:
        result = run(Path(tmp), args.size_mib, args.rss_size_mib, args.kill_size_mib,
                     args.rounds)
    result["args"] = vars(args) | {"dir": str(args.dir)}
    full = args.rss_size_mib and args.kill_size_mib
    save(args.label or ("artifacts" if full else "artifacts_partial"), result, RESULTS)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

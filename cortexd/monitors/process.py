"""The monitor process: spawned by the supervisor, fed by the control process.

It holds no task data of its own. It opens a gRPC channel to the control process
(its Unix socket, with its own admin credential, ``monitor.token``), subscribes to the
event feed for its share of the monitored tasks (``index`` of ``count``), and acts through the
Control and Monitors APIs (``runner.py``). So an LLM's latency never stalls task
dispatch or node streams: those run in other processes, and the feed is bounded
(a monitor that falls behind is cut off and resyncs from a snapshot).

Liveness: it advances its heartbeat counter every 0.5 s (the supervisor kills one
that stops, and respawns it with backoff) and exits when its parent is gone. A
lost feed (the control process restarting) is reconnected with backoff; every
reconnect rebuilds the monitors from the snapshot, and decisions already recorded
are found again in the store, so nothing is decided or done twice.
"""

import asyncio
import gc
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import uvloop

from cortex import logs
from cortex.tokens import bearer, read_token_file
from cortex.v1 import control_pb2_grpc, monitor_pb2, monitor_pb2_grpc
from cortexd import exitcodes
from cortexd.childproc import install_stop_signals, report, watch_parent
from cortexd.config import Settings
from cortexd.control.localport import local_address
from cortexd.monitors.credentials import monitor_token_file
from cortexd.monitors.heartbeat import BEAT_S, Heartbeat
from cortexd.monitors.llm import LLMClient, LLMSettings
from cortexd.monitors.runner import Runner

TICK_S = 0.05
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 3.0


def llm_settings(s: Settings) -> LLMSettings | None:
    if not s.llm_url:
        return None
    return LLMSettings(url=s.llm_url, model=s.llm_model, api_key_file=s.llm_api_key_file,
                       max_concurrent=s.llm_max_concurrent, timeout_s=s.llm_timeout_s,
                       calls_per_task_per_min=s.llm_calls_per_task_per_min,
                       max_invalid_answers=s.llm_max_invalid_answers,
                       response_format=s.llm_response_format)


def open_channel(s: Settings) -> grpc.aio.Channel:
    """The control process's Unix socket (cortexd/control/localport.py): the TCP port may
    demand a client certificate a monitor cannot present."""
    return grpc.aio.insecure_channel(local_address(s.state_dir))


class MonitorProcess:
    def __init__(self, settings: Settings, index: int, count: int, beat: Path,
                 conn: Connection, parent_pid: int) -> None:
        self.s = settings
        self.index, self.count = index, count
        self.beat_path = beat
        self.conn = conn
        self.parent_pid = parent_pid
        self.stop = asyncio.Event()
        self.log = logs.get()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        beat = Heartbeat(self.beat_path)
        token = read_token_file(monitor_token_file(self.s.state_dir))
        channel = open_channel(self.s)
        cfg = llm_settings(self.s)
        llm = LLMClient(cfg) if cfg is not None else None
        runner = Runner(control_pb2_grpc.ControlStub(channel),  # type: ignore[no-untyped-call]
                        monitor_pb2_grpc.MonitorsStub(channel),  # type: ignore[no-untyped-call]
                        bearer(token), llm, self.s.monitor_hold_before_apply_ms)
        install_stop_signals(loop, lambda sig: self.stop.set())
        tasks = [loop.create_task(self._beat(beat)), loop.create_task(self._ticks(runner)),
                 loop.create_task(self._feed(runner)),
                 loop.create_task(watch_parent(self.parent_pid, self.stop.set))]
        # What was made at start (the openai client's modules above all) never goes away:
        # keep it out of the collector's full scans, which paused this loop ~100 ms under
        # load (measured with gc.callbacks in bench/monitors.py runs).
        gc.freeze()
        report(self.conn, "ready", pid=os.getpid())
        self.log.info("monitor_ready", index=self.index, count=self.count,
                      llm=cfg.model if cfg else None)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.close()
        if llm is not None:
            await llm.close()
        await channel.close(None)
        beat.close()
        self.log.info("monitor_stopped", monitored=len(runner.tasks),
                      decisions=runner.decisions, by_rule=runner.by_rule, by_llm=runner.by_llm)
        return exitcodes.OK

    async def _beat(self, beat: Heartbeat) -> None:
        while True:
            beat.beat()
            await asyncio.sleep(BEAT_S)

    async def _ticks(self, runner: Runner) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            runner.tick()

    async def _feed(self, runner: Runner) -> None:
        delay = RECONNECT_MIN_S
        request = monitor_pb2.FeedRequest(index=self.index, count=self.count)
        while True:
            try:
                stream = runner.monitors.Feed(request, metadata=runner.metadata)
                runner.reset()
                async for ev in stream:
                    if ev.WhichOneof("kind") == "synced":
                        delay = RECONNECT_MIN_S
                        self.log.info("monitor_feed_synced", monitored=len(runner.tasks))
                    runner.on_event(ev)
                self.log.warning("monitor_feed_ended")
            except grpc.aio.AioRpcError as e:
                self.log.warning("monitor_feed_lost", code=e.code().name, message=e.details())
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)


def main(settings_dict: dict[str, Any], index: int, count: int, beat: str, conn: Connection,
         parent_pid: int) -> None:
    """Entry point of a spawned monitor process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.from_dict(settings_dict)
    logs.configure(f"monitor-{index}", json=logs.wants_json(settings.log_format),
                   level=settings.log_level)
    try:
        code = uvloop.run(MonitorProcess(settings, index, count, Path(beat), conn,
                                         parent_pid).run())
    except Exception as e:
        logs.get().exception("monitor_crashed")
        report(conn, "boot_error", message=f"monitor: {type(e).__name__}: {e}",
               exit_code=exitcodes.BOOT_ERROR)
        code = exitcodes.ERROR
    os._exit(code)

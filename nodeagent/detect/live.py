"""A detector beside a running task: the event-loop adapter (no detection logic here).

The task host calls :meth:`PromptWatch.feed` with every output piece right after it is
spooled; detections go to ``emit`` synchronously, so a prompt event can be queued before
the reader returns to the loop. The quiet timer asks the kernel only after output has
been quiet for ``debounce_s`` and only while the detector has a use for the answer
(:attr:`PromptDetector.wants_kernel`); if the kernel says "not waiting", it asks again a
few times with growing gaps (:data:`RECHECK_S`), then stops until new output. One timer
handle per task at most; :meth:`close` cancels it.
"""

import asyncio
import time
from collections.abc import Callable

from cortex.v1 import node_pb2
from nodeagent.detect.detector import PromptDetector
from nodeagent.detect.events import Detection, KernelFacts
from nodeagent.detect.kernel import read_facts
from nodeagent.detect.markers import marker_env, new_nonce

DEBOUNCE_S = 0.04
RECHECK_S = (0.2, 1.0, 5.0)


class PromptWatch:
    def __init__(self, detector: PromptDetector, emit: Callable[[Detection, float], None], *,
                 session_pid: Callable[[], int], master_fd: Callable[[], int] = lambda: -1,
                 debounce_s: float = DEBOUNCE_S,
                 kernel: Callable[[int, int], KernelFacts] = read_facts) -> None:
        self.detector = detector
        self._emit = emit  # (detection, time.time() when detected)
        self._session_pid = session_pid
        self._master_fd = master_fd
        self._debounce_s = debounce_s
        self._kernel = kernel
        self._loop = asyncio.get_running_loop()
        self._last_output = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._rechecks = 0
        self._closed = False
        self.kernel_checks = 0

    def feed(self, data: bytes, end: int) -> None:
        if self._closed:
            return
        for det in self.detector.feed(data, end):
            self._emit(det, time.time())
        self._last_output = self._loop.time()
        self._rechecks = 0
        if self._timer is not None and self._timer.when() > self._last_output + self._debounce_s:
            self._timer.cancel()  # a long re-check was pending: new output restarts the short one
            self._timer = None
        if self._timer is None and self.detector.wants_kernel:
            self._timer = self._loop.call_later(self._debounce_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        quiet_for = self._loop.time() - self._last_output
        if quiet_for < self._debounce_s:  # output came meanwhile: wait for the rest
            self._timer = self._loop.call_later(self._debounce_s - quiet_for, self._on_timer)
            return
        if not self.detector.wants_kernel:
            return
        pid = self._session_pid()
        if pid <= 0:
            return
        self.kernel_checks += 1
        facts = self._kernel(pid, self._master_fd())
        dets = self.detector.on_quiet(facts)
        for det in dets:
            self._emit(det, time.time())
        if not dets and not facts.waiting and self._rechecks < len(RECHECK_S):
            # Nobody reads the terminal yet (the program may still be thinking); ask
            # again later, unless new output re-arms the short timer first.
            self.detector.want_kernel_again()
            self._timer = self._loop.call_later(RECHECK_S[self._rechecks], self._on_timer)
            self._rechecks += 1

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TaskPrompts:
    """The prompt watches of one host's running tasks, keyed by (task id, attempt).

    :meth:`env` mints the attempt's nonce before the process starts (the marker
    environment must be in its environment); :meth:`start` attaches a watch to the
    started process; :meth:`feed` is called with every spooled piece; :meth:`stop` when the
    attempt ends or is dropped. ``send`` gets a ready ``NodeFrame(prompt=...)``.
    """

    def __init__(self, send: Callable[[node_pb2.NodeFrame], None]) -> None:
        self._send = send
        self._nonces: dict[tuple[str, int], str] = {}
        self._watches: dict[tuple[str, int], PromptWatch] = {}
        self.sent = 0

    def env(self, key: tuple[str, int], allow_prompts: bool) -> dict[str, str]:
        nonce = self._nonces[key] = new_nonce()
        return marker_env(nonce, sudo=not allow_prompts)

    def start(self, key: tuple[str, int], session_pid: int, master_fd: Callable[[], int],
              cols: int) -> None:
        detector = PromptDetector(self._nonces.pop(key, None), cols)
        self._watches[key] = PromptWatch(
            detector, lambda det, at: self._emit(key, det, at),
            session_pid=lambda: session_pid, master_fd=master_fd)

    def feed(self, key: tuple[str, int], data: bytes, end: int) -> None:
        watch = self._watches.get(key)
        if watch is not None:
            watch.feed(data, end)

    def stop(self, key: tuple[str, int]) -> None:
        self._nonces.pop(key, None)
        watch = self._watches.pop(key, None)
        if watch is not None:
            watch.close()

    def _emit(self, key: tuple[str, int], det: Detection, at: float) -> None:
        self.sent += 1
        self._send(node_pb2.NodeFrame(prompt=prompt_event(key, det, at)))


def prompt_event(key: tuple[str, int], det: Detection, at: float) -> node_pb2.PromptEvent:
    return node_pb2.PromptEvent(
        task_id=key[0], attempt=key[1], kind=det.kind, detector=det.detector,
        confidence=det.confidence, excerpt=det.excerpt, offset=det.offset,
        at_ms=int(at * 1000), exit_code=det.exit_code, cwd=det.cwd)

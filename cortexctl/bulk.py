"""``cortexctl submit --from FILE``: many tasks from JSON lines, in SubmitMany calls.

Each non-blank line is one task: a JSON object with the fields of ``SubmitRequest``
(``command``, ``selector``, ``node_id``, ``idempotency_key``, ``env``, ``cwd``,
``timeout_s``, ``idle_timeout_s``, ``memory_max_bytes``, ``pids_max``); ``-`` reads
standard input. The file is read as it is sent (never held whole), in calls of at
most ``--batch`` tasks and ``CALL_BYTES`` bytes (under the hub's frame limit).

stdout gets one line per task in file order: the task id, or with ``--json`` an
object ``{"line", "task_id", "deduplicated"}`` or ``{"line", "error": {"code",
"message"}}``. stderr gets a progress line (when it is a terminal) and a summary:
submitted, deduplicated, refused with the reasons counted. The status is 0 when
nothing was refused, 1 otherwise.

A call that fails as a whole (hub unreachable or restarting) is sent again for up
to ``--reconnect-s`` when every task in it has an idempotency key — the hub then
answers with the same tasks, never new ones. Otherwise its tasks are reported as
refused with the outcome unknown: a resend could create them twice.
"""

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from google.protobuf import json_format

from cortex.v1 import control_pb2 as pb
from cortexctl import exitcodes
from cortexctl.client import HubClient
from cortexctl.commands import connect
from cortexctl.errors import CtlError, UsageError

CALL_BYTES = 512 << 10
MAX_BATCH = 1000  # the hub's limit of tasks in one SubmitMany
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 2.0
MAX_LINE_BYTES = 1 << 20


@dataclass
class Tally:
    """What happened to the tasks so far (the summary and the progress line)."""

    total: int | None
    done: int = 0
    submitted: int = 0
    deduplicated: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    first_line: dict[str, int] = field(default_factory=dict)

    def refuse(self, line: int, why: str) -> None:
        self.refused[why] += 1
        self.first_line.setdefault(why, line)

    def summary(self) -> str:
        text = (f"submitted {self.submitted}, deduplicated {self.deduplicated}, "
                f"refused {sum(self.refused.values())}")
        for why, count in self.refused.most_common(10):
            text += f"\n  {count} refused ({why}), first at line {self.first_line[why]}"
        if len(self.refused) > 10:
            text += f"\n  … and {len(self.refused) - 10} other reasons"
        return text


def parse_line(text: str) -> pb.SubmitRequest:
    """One line's task; ValueError says what is wrong with it."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    try:
        return json_format.ParseDict(obj, pb.SubmitRequest())
    except json_format.ParseError as e:
        raise ValueError(str(e)) from e


def batches(lines: Iterator[tuple[int, str]], tally: Tally, batch: int,
            emit: "Emitter") -> Iterator[list[tuple[int, pb.SubmitRequest]]]:
    """Calls' worth of parsed tasks; a line that does not parse is refused here."""
    group: list[tuple[int, pb.SubmitRequest]] = []
    size = 0
    for number, text in lines:
        if not text.strip():
            continue
        if len(text) > MAX_LINE_BYTES:
            emit.refused(tally, number, "INVALID_ARGUMENT", f"line longer than {MAX_LINE_BYTES}")
            continue
        try:
            request = parse_line(text)
        except ValueError as e:
            emit.refused(tally, number, "INVALID_ARGUMENT", str(e))
            continue
        n = request.ByteSize() + 8
        if group and (len(group) >= batch or size + n > CALL_BYTES):
            yield group
            group, size = [], 0
        group.append((number, request))
        size += n
    if group:
        yield group


class Emitter:
    """stdout lines, in file order, and the progress line on stderr."""

    def __init__(self, as_json: bool, progress: bool) -> None:
        self.as_json = as_json
        self.progress = progress
        self._drawn = 0.0

    def submitted(self, tally: Tally, line: int, result: pb.SubmitResponse) -> None:
        tally.done += 1
        if result.deduplicated:
            tally.deduplicated += 1
        else:
            tally.submitted += 1
        print(json.dumps({"line": line, "task_id": result.task.task_id,
                          "deduplicated": result.deduplicated})
              if self.as_json else result.task.task_id)

    def refused(self, tally: Tally, line: int, code: str, message: str) -> None:
        tally.done += 1
        tally.refuse(line, f"{code}: {message}")
        if self.as_json:
            print(json.dumps({"line": line, "error": {"code": code, "message": message}}))

    def draw(self, tally: Tally, final: bool = False) -> None:
        now = time.monotonic()
        if not self.progress or (not final and now - self._drawn < 0.1):
            return
        self._drawn = now
        if tally.total:
            filled = 30 * tally.done // max(tally.total, 1)
            bar = f"[{'#' * filled}{' ' * (30 - filled)}] {tally.done}/{tally.total}"
        else:
            bar = f"{tally.done} tasks"
        end = "\n" if final else ""
        print(f"\r{bar} submitted {tally.submitted} deduplicated {tally.deduplicated} "
              f"refused {sum(tally.refused.values())}", end=end, file=sys.stderr, flush=True)


def send(client: HubClient, group: list[tuple[int, pb.SubmitRequest]],
         reconnect_s: float) -> list[pb.SubmitResult] | CtlError:
    """One SubmitMany, sent again while the hub is unreachable if that is safe."""
    keyed = all(r.idempotency_key for _, r in group)
    deadline = time.monotonic() + reconnect_s
    pause = BACKOFF_FIRST_S
    while True:
        try:
            return client.submit_many([r for _, r in group])
        except CtlError as e:
            if not keyed or e.exit_code != exitcodes.UNREACHABLE or time.monotonic() > deadline:
                return e
        time.sleep(pause)
        pause = min(pause * 2, BACKOFF_CAP_S)


def open_lines(path: str) -> tuple[IO[str], int | None]:
    if path == "-":
        return sys.stdin, None
    try:
        with open(path, "rb") as f:
            total = sum(1 for raw in f if raw.strip())
        return open(path, encoding="utf-8"), total
    except OSError as e:
        raise UsageError(f"--from {path}: {e.strerror or e}") from e


def cmd_submit_from(args: argparse.Namespace) -> int:
    if not 1 <= args.batch <= MAX_BATCH:
        raise UsageError(f"--batch must be 1 to {MAX_BATCH}")
    if args.command and args.command != ["--"]:
        raise UsageError("submit --from FILE takes its tasks from FILE, not a command")
    if args.follow:
        raise UsageError("submit --from does not --follow (watch the tasks one by one)")
    source, total = open_lines(args.from_file)
    tally = Tally(total)
    emit = Emitter(args.json, sys.stderr.isatty())
    try:
        with connect(args) as client:
            for group in batches(enumerate(source, start=1), tally, args.batch, emit):
                outcome = send(client, group, args.reconnect_s)
                for i, (line, _) in enumerate(group):
                    if isinstance(outcome, CtlError):
                        code, why = (("UNKNOWN", "call failed, outcome unknown")
                                     if outcome.exit_code == exitcodes.UNREACHABLE
                                     else ("REFUSED", "call refused"))
                        emit.refused(tally, line, code, f"{why}: {outcome}")
                    elif outcome[i].HasField("submitted"):
                        emit.submitted(tally, line, outcome[i].submitted)
                    else:
                        emit.refused(tally, line, outcome[i].error.code,
                                     outcome[i].error.message)
                emit.draw(tally)
    finally:
        if source is not sys.stdin:
            source.close()
    emit.draw(tally, final=True)
    print(f"cortexctl: {tally.summary()}", file=sys.stderr, flush=True)
    return exitcodes.ERROR if tally.refused else exitcodes.OK

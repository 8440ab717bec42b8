"""The at-most-once record: every attempt this node has ever started (DESIGN.md §4).

``<state_dir>/ran.log`` holds one ``<task_id> <attempt>`` line per started attempt. A line
is appended and fsynced *before* the attempt's process is spawned, so after any crash an
attempt either is in the log or never ran; an envelope for a logged attempt is refused
(``already_ran``), whatever its nonce. The log is loaded at start and compacted then to its
newest ``max_entries`` lines, which bounds memory and disk; an attempt that old cannot be
re-dispatched with a live envelope.
"""

import os
from pathlib import Path

from nodeagent.errors import NodeAgentError

RAN_LOG = "ran.log"


class RanLog:
    def __init__(self, state_dir: Path, max_entries: int = 200_000) -> None:
        self.path = state_dir / RAN_LOG
        self._max = max_entries
        self._ran: dict[tuple[str, int], None] = {}  # insertion-ordered set
        self._fd = -1

    def load(self) -> None:
        lines: list[str] = []
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise NodeAgentError(f"cannot read {self.path}: {e.strerror}") from e
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():  # a torn last line is skipped
                self._ran[(parts[0], int(parts[1]))] = None
        if len(self._ran) > self._max:
            self._compact()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
            if lines and not self.path.read_bytes().endswith(b"\n"):
                os.write(self._fd, b"\n")  # end a torn line so the next record stands alone
        except OSError as e:
            raise NodeAgentError(f"cannot open {self.path}: {e.strerror}") from e

    def _compact(self) -> None:
        keep = list(self._ran)[-self._max:]
        self._ran = dict.fromkeys(keep)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(f"{task_id} {attempt}\n" for task_id, attempt in keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def __contains__(self, key: object) -> bool:
        return key in self._ran

    def record(self, task_id: str, attempt: int) -> None:
        """Durably record that ``(task_id, attempt)`` starts now; call before spawning."""
        if self._fd < 0:
            raise NodeAgentError("ran.log is not loaded")
        try:
            os.write(self._fd, f"{task_id} {attempt}\n".encode())
            os.fsync(self._fd)
        except OSError as e:
            raise NodeAgentError(f"cannot record run in {self.path}: {e.strerror}") from e
        self._ran[(task_id, attempt)] = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

"""The supervisor's files: locks, ring segments, the key pair, the ready file.

Everything here happens before any child exists, in the supervisor, and its
failures are boot failures with documented exit codes.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from cortex.envelope import load_or_create_private_key, public_key_pem
from cortex.errors import CortexError
from cortex.tls import split_host_port
from cortex.tokens import TokenTable
from cortexd import exitcodes

SHM_DIR = Path("/dev/shm")


class BootError(CortexError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def take_lock(path: Path, what: str) -> int:
    """Hold an exclusive flock on ``path`` for the life of the process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise BootError(f"another cortexd (pid {holder}) already holds {what}; "
                        f"lock {path}", exitcodes.ALREADY_RUNNING) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def port_lock_path(port: int) -> Path:
    # Keyed by port, not by state dir: gRPC sets SO_REUSEPORT, so without this
    # a second cortexd would silently share the node port with the first.
    return Path(tempfile.gettempdir()) / f"cortexd-node-port-{port}.lock"


def probe_port(address: str, what: str) -> int:
    """Bind without SO_REUSEPORT to learn whether anything holds the port; return it."""
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise BootError(f"{what} {address} is in use by another program",
                                exitcodes.PORT_IN_USE) from e
            raise BootError(f"cannot bind {what} {address}: {e.strerror}",
                            exitcodes.CONFIG_ERROR) from e
        return int(sock.getsockname()[1])


def prepare_keys(state_dir: Path, key_file: Path, tokens_file: Path) -> None:
    """Create the signing key, its public half for nodes, and an admin token, once."""
    key = load_or_create_private_key(key_file)
    pub = state_dir / "hub.pub"
    if not pub.exists():
        pub.write_bytes(public_key_pem(key))
    admin = state_dir / "admin.token"
    if not admin.exists():
        token = TokenTable(tokens_file).add("admin", "admin")
        fd = os.open(admin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")


def ring_prefix() -> Path:
    return SHM_DIR / f"cortex-{os.getpid()}"


def remove_stale_segments() -> list[str]:
    """Unlink ring files left by a cortexd that died without cleaning up."""
    removed = []
    for path in SHM_DIR.glob("cortex-*-s*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    return removed


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


def stop_resource_tracker() -> None:
    """Reap multiprocessing's resource tracker before we exit.

    The ``spawn`` start method starts a tracker process as our child; it would
    otherwise outlive the supervisor by a moment (it exits on EOF of its pipe),
    so "nothing left behind after exit" would be racy. ``_stop`` closes the
    pipe and waits for it (CPython 3.11+).
    """
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        with contextlib.suppress(Exception):
            stop()


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness, stopping and watchdog pings."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        # Never block the supervisor's loop on a notify socket nobody reads (a full
        # datagram queue blocks sendto): the message is dropped instead.
        s.sendto(message.encode(), socket.MSG_DONTWAIT, addr)

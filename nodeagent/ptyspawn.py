"""Start a command in a new PTY, as the leader of a new session, without fork().

Why not ``ptyprocess.PtyProcess.spawn`` (fork, then Python code in the child, then
exec): the agent is a multi-threaded gRPC process. gRPC's at-fork handlers restart its
event-engine poller in the child, ptyprocess then closes every descriptor, and the
child aborts before exec ("epoll_wait error: Bad file descriptor", SIGABRT), seen in our
tests whenever gRPC was initialised with fork support. ``os.posix_spawn`` (glibc:
``clone(CLONE_VM|CLONE_VFORK)``) runs no at-fork handler and no Python in the child.

How the child gets its terminal: ``POSIX_SPAWN_SETSID`` makes it a session leader with
no controlling terminal, then the file actions open the slave by path as fd 0 *without*
``O_NOCTTY`` (Linux makes it the session's controlling terminal), dup it to 1 and 2.
The master is non-inheritable (closed at exec). The parent closes its slave fd, so once
the session's processes close theirs, reading the master gives EIO. There is no chdir
file action in Python 3.11, so a working directory is entered by a tiny ``sh`` that then
``exec``s the real one: same pid, same session. The same tiny ``sh`` first moves itself
into the task's cgroups (``cgroup_procs``), so the task's first instruction already runs
inside them: no window in which it could fork outside (:mod:`nodeagent.cgroup`).
"""

import fcntl
import os
import signal
import struct
import termios
from collections.abc import Mapping, Sequence

SHELL = "/bin/sh"
# The agent ignores these (Python does) and an ignored disposition survives exec.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                 signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT)
CD_THEN_EXEC = 'cd -- "$0" || exit 126; exec /bin/sh -c "$1"'
# argv: cwd command cgroup.procs-file... ; 125: the cgroup could not be entered.
ENTER_THEN_EXEC = ('d=$1 c=$2; shift 2; for f do echo $$ >"$f" || exit 125; done; '
                   '[ -z "$d" ] || cd -- "$d" || exit 126; exec /bin/sh -c "$c"')


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn_in_pty(command: str, env: Mapping[str, str], *, cwd: str = "", rows: int = 50,
                 cols: int = 200, cgroup_procs: Sequence[str] = ()) -> tuple[int, int]:
    """Start ``/bin/sh -c command`` in a new session on a new PTY; returns (pid, master fd).

    Raises OSError when the PTY cannot be allocated or the shell cannot be started.
    """
    master, slave = os.openpty()  # both non-inheritable (PEP 446)
    try:
        set_winsize(slave, rows, cols)
        slave_path = os.ttyname(slave)
        if cgroup_procs:
            argv = [SHELL, "-c", ENTER_THEN_EXEC, "cortex-task", cwd, command, *cgroup_procs]
        else:
            argv = ([SHELL, "-c", CD_THEN_EXEC, cwd, command] if cwd
                    else [SHELL, "-c", command])
        pid = os.posix_spawn(
            SHELL, argv, dict(env),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, slave_path, os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1),
                (os.POSIX_SPAWN_DUP2, 0, 2),
            ],
            setsid=True,
            setsigmask=(),
            setsigdef=RESET_SIGNALS,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return pid, master

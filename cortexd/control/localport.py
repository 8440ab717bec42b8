"""The Control API on a Unix socket, for the hub's own children (the monitor processes).

The TCP Control port may demand a client certificate (``tls_client_ca_file``), which a
monitor process has no way to present: the hub holds no key of that CA. So the control
process also serves the same services, behind the same bearer-token interceptor, on
``unix:PATH``, where PATH is in a directory only the hub's user can enter (the state
directory, or, when that path is longer than a socket address allows, a 0700 directory
under the temporary directory named by a digest of the state directory, so both sides
find it without being told). Nothing off the host can reach it, and on the host only
the hub's user and root; a caller still needs a token.
"""

import hashlib
import os
import tempfile
from pathlib import Path

from cortexd.artifacts.rules import MAX_CHUNK_BYTES

SOCKET_NAME = "control.sock"
# sockaddr_un.sun_path is 108 bytes with its NUL; keep a margin.
MAX_SOCKET_PATH = 100


def local_socket_path(state_dir: Path) -> Path:
    path = state_dir.resolve() / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cortexd-{digest}" / SOCKET_NAME


def prepare_local_socket(state_dir: Path) -> str:
    """Make the socket's directory (0700, ours) and return the gRPC address to bind."""
    path = local_socket_path(state_dir)
    parent = path.parent
    if parent != state_dir.resolve():
        parent.mkdir(mode=0o700, exist_ok=True)
        st = parent.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(f"{parent} is not a private directory of this user; "
                                  "remove it or give the hub a shorter state_dir")
    path.unlink(missing_ok=True)  # a socket left by a hub that was killed
    return f"unix:{path}"


def local_address(state_dir: Path) -> str:
    return f"unix:{local_socket_path(state_dir)}"


def control_frame_bytes(max_frame_bytes: int) -> int:
    """The Control API's message limit (on the port and the socket): an artifact chunk
    is up to 1 MiB plus its header (artifacts.proto)."""
    return max(max_frame_bytes, MAX_CHUNK_BYTES + (64 << 10))

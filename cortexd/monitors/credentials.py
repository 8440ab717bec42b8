"""The monitor process's credential: an admin token of its own, made once at boot.

Its hash joins the hub's token table under the name ``cortex-monitor``; the token is
``STATE_DIR/monitor.token`` (0600). The monitor process reads it and calls the
Control and Monitors services like any client: it acts through the API, never
around it.
"""

import os
from pathlib import Path

from cortex.tokens import TokenTable

NAME = "cortex-monitor"


def monitor_token_file(state_dir: Path) -> Path:
    return state_dir / "monitor.token"


def ensure_monitor_token(state_dir: Path, tokens_file: Path) -> Path:
    path = monitor_token_file(state_dir)
    if not path.exists():
        token = TokenTable(tokens_file).add(NAME, "admin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return path

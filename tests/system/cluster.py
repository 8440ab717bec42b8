"""Two or more cortexd hosts sharing PostgreSQL and Redis, on this machine.

A cluster's hubs share their signing key and credentials: the first hub creates
them, each later hub starts from a copy (as an operator would copy ``hub.key``
and ``tokens`` to every hub host). Each hub has its own state directory, ports
and ``--hub-id``.
"""

import shutil
from pathlib import Path
from typing import Any

from examples.localfleet import LocalHub

SHARED = ("hub.key", "hub.pub", "tokens", "admin.token")


def start_cluster(fleet: Any, store: str, coordination: str, hubs: int = 2,
                  shards: int = 1, extra: tuple[str, ...] = ()) -> list[LocalHub]:
    out: list[LocalHub] = []
    for i in range(hubs):
        hub = LocalHub(fleet.base / f"hub{len(fleet.hubs)}", shards=shards, extra_args=[
            "--store", store, "--coordination", coordination, "--hub-id", f"hub-{'abcdef'[i]}",
            *extra])
        fleet.hubs.append(hub)
        if out:
            hub.state_dir.mkdir(parents=True, exist_ok=True)
            for name in SHARED:
                src: Path = out[0].state_dir / name
                shutil.copy2(src, hub.state_dir / name)
        out.append(hub.start())
    return out

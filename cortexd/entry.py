"""Entry points of the supervisor's children, importable without gRPC.

The supervisor must not own gRPC state (or anything else that spawns threads)
when it starts children; importing the shard or control modules would import
grpcio into it. These trampolines are what ``spawn`` pickles by name; the heavy
imports happen in the child.
"""

from typing import Any


def control_main(*args: Any) -> None:
    from cortexd.control.process import main

    main(*args)


def shard_main(*args: Any) -> None:
    from cortexd.shards.process import main

    main(*args)


def monitor_main(*args: Any) -> None:
    from cortexd.monitors.process import main

    main(*args)

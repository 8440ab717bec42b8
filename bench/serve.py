"""A hub and a simulated fleet that stay up, for Locust or by hand (bench/README.md).

    python -m bench.serve --nodes 100 [--seconds 600]

Starts cortexd (as the scenarios do) and ``--nodes`` simulated nodes, waits until they are
attached, prints the environment a client needs (``CORTEX_CONTROL``,
``CORTEX_TOKEN_FILE``) as shell lines and writes them to ``--env-file``, then runs until
SIGINT/SIGTERM or ``--seconds``, and stops what it started.
"""

import argparse
import signal
import threading
from pathlib import Path

from bench.harness import running_hub


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--fleets", type=int, default=1)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--seconds", type=float, default=600.0, help="bound on the run")
    p.add_argument("--env-file", type=Path, default=Path("/tmp/cortex-bench-serve.env"))
    args = p.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with running_hub(args.shards) as b:
        b.start_fleets(args.nodes, args.fleets, args.seconds + 60)
        b.wait_attached(120)
        env = (f"export CORTEX_CONTROL={b.hub.control_address}\n"
               f"export CORTEX_TOKEN_FILE={b.hub.admin_token_file}\n")
        args.env_file.write_text(env)
        print(env + f"# {b.nodes} nodes attached; also in {args.env_file}", flush=True)
        stop.wait(args.seconds)
        b.stop_fleets()


if __name__ == "__main__":
    main()

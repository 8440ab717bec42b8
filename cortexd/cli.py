"""``cortexd``: run the hub, check or print its configuration, enroll nodes.

    cortexd [--config FILE] [--state-dir DIR] [--shards K] ...   run the hub
    cortexd --check-config | --print-config                      and exit
    cortexd enroll NAME [--role node|client|admin]               print a new token

Exit codes are in :mod:`cortexd.exitcodes` (documented in docs/architecture.md).
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from cortex import logs
from cortex.cliargs import Parser
from cortex.errors import ConfigError
from cortex.tokens import TokenTable
from cortex.version import line
from cortexd import config, exitcodes

FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--state-dir", {"help": "where the key, tokens, store and ready file live"}),
    ("--node-listen", {"help": "HOST:PORT for nodes (port 0 = pick one)"}),
    ("--control-listen", {"help": "HOST:PORT for the Control API (port 0 = pick one)"}),
    ("--shards", {"type": int, "help": "shard processes (default: number of CPUs)"}),
    ("--tls-cert-file", {}),
    ("--tls-key-file", {}),
    ("--tls-client-ca-file", {"help": "require client certificates from this CA"}),
    ("--store", {"help": "sqlite:///PATH (default: STATE_DIR/cortex.db) or "
                          "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB"}),
    ("--coordination", {"help": "local (one hub host alone) or redis://HOST:PORT/DB"
                                 "[?prefix=NAME] (several hub hosts)"}),
    ("--hub-id", {"help": "this hub host's name in the cluster (default HOSTNAME:NODE_PORT)"}),
    ("--lease-ttl-ms", {"type": int, "help": "host and shard leases in Redis"}),
    ("--queue-scan-s", {"type": float,
                        "help": "clustered: adopt tasks left QUEUED this long (seconds)"}),
    ("--admit-per-s", {"type": int, "help": "node attaches admitted per second per host "
                                              "(0 = unlimited); the rest get RetryLater"}),
    ("--max-pending-attaches", {"type": int}),
    ("--max-heartbeats-per-s", {"type": int, "help": "fleet-wide heartbeat budget; the "
                                                     "interval grows to keep within it"}),
    ("--heartbeat-interval-ms", {"type": int}),
    ("--node-grace-s", {"type": float}),
    ("--max-frame-bytes", {"type": int}),
    ("--signer", {"choices": ["adaptive", "inline", "pool"]}),
    ("--shutdown-grace-s", {"type": float}),
    ("--metrics-listen", {"help": "HOST:PORT (or PORT, on loopback) for /metrics, /healthz "
                                  "and /readyz; off when not set"}),
    ("--log-format", {"choices": ["auto", "json", "console"],
                      "help": "auto (default): JSON lines unless stderr is a terminal"}),
    ("--log-level", {"choices": ["debug", "info", "warning", "error"]}),
]


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="cortexd", description="The Cortex hub daemon.")
    p.add_argument("--version", action="version", version=line("cortexd"))
    p.add_argument("--config", type=Path, help="TOML settings file (or CORTEX_CONFIG)")
    for flag, kw in FLAGS:
        p.add_argument(flag, **kw)
    p.add_argument("--insecure-loopback", action="store_true", default=None,
                   help="allow plaintext gRPC, only on loopback addresses")
    p.add_argument("--check-config", action="store_true",
                   help="validate settings, connect to the store, check its schema, and exit")
    p.add_argument("--print-config", action="store_true", help="print effective settings")
    sub = p.add_subparsers(dest="command")
    enroll = sub.add_parser("enroll", help="mint a credential and print its token")
    enroll.add_argument("name", help="node id (or client name)")
    enroll.add_argument("--role", choices=["node", "client", "admin"], default="node")
    enroll.add_argument("--state-dir", default=argparse.SUPPRESS)
    enroll.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    return p


def _check_config(settings: config.Settings) -> int:
    """Settings are valid; now reach the store and compare its schema with ours."""
    from cortexd.store import StoreError, check_store

    try:
        line = asyncio.run(check_store(settings.store_url))
    except StoreError as e:
        print(f"cortexd: configuration is valid, but {e}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    if settings.coordination != "local":
        from cortexd.coord.redis import check

        try:
            line += "; " + asyncio.run(check(settings.coordination))
        except ConfigError as e:
            print(f"cortexd: configuration is valid, but {e}", file=sys.stderr)
            return exitcodes.CONFIG_ERROR
    print(f"cortexd: configuration is valid; {line}")
    return exitcodes.OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
                 for flag, _ in FLAGS}
    overrides["insecure_loopback"] = args.insecure_loopback
    try:
        settings = config.load(args.config, overrides, validate=args.command != "enroll")
    except ConfigError as e:
        print(f"cortexd: {e}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    if args.print_config:
        shown = settings.to_dict()
        from cortexd.coord.redis import redact as redact_coordination
        from cortexd.store.pgschema import redact

        shown["store"] = redact(shown["store"])
        shown["coordination"] = redact_coordination(shown["coordination"])
        print(json.dumps(shown, indent=2))
        return exitcodes.OK
    if args.check_config:
        return _check_config(settings)
    if args.command == "enroll":
        try:
            print(TokenTable(settings.tokens_file).add(args.name, args.role))
        except (ConfigError, OSError) as e:
            print(f"cortexd: {e}", file=sys.stderr)
            return exitcodes.CONFIG_ERROR
        return exitcodes.OK
    logs.configure("supervisor", json=logs.wants_json(settings.log_format),
                   level=settings.log_level)
    from cortexd.supervisor import Supervisor

    return Supervisor(settings, lambda: config.load(args.config, overrides)).run()


if __name__ == "__main__":
    sys.exit(main())

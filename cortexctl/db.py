"""``cortexctl db migrate --store URL``: bring a store's schema up to this release's.

It talks to the database directly (not through a hub), so it can run before
any hub starts and while older hubs still run. Migrations are serialized by an
advisory lock (PostgreSQL) or ``BEGIN IMMEDIATE`` (SQLite); running it twice is
harmless. Exit status: 0 done (or nothing to do), 1 the schema is ahead of this
release or a migration failed, 2 no store given, 3 the database is unreachable.
"""

import argparse
import asyncio
import os

from cortexctl import exitcodes
from cortexctl.errors import CtlError, UsageError


def cmd_migrate(args: argparse.Namespace) -> int:
    from cortexd.store import SchemaError, StoreError, is_store_url, migrate_store
    from cortexd.store.postgres import redact

    url = args.store or os.environ.get("CORTEX_STORE", "")
    if not url:
        raise UsageError("db migrate needs --store URL (or CORTEX_STORE)")
    if not is_store_url(url):
        raise UsageError(f"--store {url!r}: expected sqlite:///PATH or postgresql://…")
    try:
        before, after = asyncio.run(migrate_store(url))
    except SchemaError as e:
        raise CtlError(str(e), exitcodes.ERROR) from e
    except StoreError as e:
        unreachable = str(e).startswith("cannot connect")
        raise CtlError(str(e), exitcodes.UNREACHABLE if unreachable else exitcodes.ERROR) from e
    if before == after:
        print(f"store {redact(url)}: schema version {after} is current; nothing to do")
    else:
        print(f"store {redact(url)}: migrated from schema version {before} to {after}")
    return exitcodes.OK


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("db", help="manage the hub's database (directly, not via a hub)",
                       description="Manage the hub's database directly, not through a hub.")
    actions = p.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    m = actions.add_parser("migrate", help="apply pending schema migrations",
                           description="Apply this release's pending schema migrations.")
    m.add_argument("--store", metavar="URL",
                   help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (env CORTEX_STORE)")
    m.set_defaults(run=cmd_migrate)

"""``cortexctl tokens ls`` and ``tokens revoke``: a running hub's credentials (admin).

A revocation takes effect in the running hub without a restart: the token stops working
within a second, and a node attached with it is dropped at its next heartbeat. Each hub
host holds its own tokens file, so in a cluster revoke on every hub.
"""

import argparse
from collections.abc import Callable

import grpc

from cortex import ids
from cortex.tokens import ROLES, bearer
from cortex.v1 import credentials_pb2 as pb
from cortex.v1 import credentials_pb2_grpc
from cortexctl import commands, exitcodes, render
from cortexctl.client import open_channel
from cortexctl.errors import UsageError, from_rpc


def _call(args: argparse.Namespace, method: str, request: object, subject: str = "") -> object:
    settings = commands.settings(args)
    channel = open_channel(settings)
    try:
        stub = credentials_pb2_grpc.CredentialsStub(channel)  # type: ignore[no-untyped-call]
        return getattr(stub, method)(request, timeout=settings.timeout_s,
                                     metadata=bearer(settings.token))
    except grpc.RpcError as e:
        raise from_rpc(e, settings.address, subject) from e
    finally:
        channel.close()


def _dict(c: pb.Credential) -> dict[str, object]:
    return {"name": c.name, "role": c.role, "fingerprint": c.fingerprint,
            "attached": c.attached}


def cmd_ls(args: argparse.Namespace) -> int:
    response = _call(args, "ListCredentials", pb.ListCredentialsRequest())
    assert isinstance(response, pb.ListCredentialsResponse)
    found = list(response.credentials)
    if args.json:
        text = render.json_lines([_dict(c) for c in found])
    else:
        text = render.table(["NAME", "ROLE", "FINGERPRINT", "ATTACHED"],
                            [[c.name, c.role, c.fingerprint, "yes" if c.attached else "-"]
                             for c in found])
    if text:
        print(text)
    return exitcodes.OK


def cmd_revoke(args: argparse.Namespace) -> int:
    if not ids.is_node_id(args.name):
        raise UsageError(f"{args.name!r} is not a credential name")
    request = pb.RevokeCredentialRequest(name=args.name, role=args.role or "",
                                         fingerprint=args.fingerprint or "")
    response = _call(args, "RevokeCredential", request, f"credential {args.name!r}")
    assert isinstance(response, pb.RevokeCredentialResponse)
    if args.json:
        print(render.json_lines([_dict(c) for c in response.revoked]))
    else:
        for c in response.revoked:
            dropped = " (its stream is dropped at its next heartbeat)" if c.attached else ""
            print(f"revoked {c.role} {c.name} {c.fingerprint}{dropped}")
    return exitcodes.OK


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
               global_flags: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    p = sub.add_parser("tokens", help="list and revoke the hub's credentials (admin)",
                       description="List and revoke the running hub's credentials. A "
                       "revoked token stops working at once; a node attached with it is "
                       "dropped at its next heartbeat. New ones: cortexd enroll NAME.")
    actions = p.add_subparsers(dest="tokens_action", metavar="ACTION", required=True)

    def action(name: str, run: Callable[[argparse.Namespace], int],
               help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        global_flags(a, True)
        a.add_argument("--json", action="store_true", help="JSON lines, one per credential")
        a.set_defaults(run=run)
        return a

    action("ls", cmd_ls, "list credentials: name, role, fingerprint (never the token)")
    a = action("revoke", cmd_revoke, "revoke NAME's credentials (every role, or --role)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", choices=ROLES, help="only this role's credential")
    a.add_argument("--fingerprint", metavar="HEX",
                   help="only the credential whose fingerprint starts with HEX")

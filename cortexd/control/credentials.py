"""The Credentials service (credentials.proto): list and revoke a running hub's tokens.

The tokens file is the truth; this edits it with :meth:`TokenTable.revoke` (atomic, under
the file's lock). Nothing else is needed for the revocation to take effect: every
process of the hub re-checks the file at most a second after a change on its next
lookup, and a shard ends the stream of a node whose credential is gone at that node's
next heartbeat (cortexd/ingress/nodelink.py). ``cortexd enroll`` of a node again
replaces its token the same way, so the old one stops working too (issue 13).
"""

from __future__ import annotations

from typing import Any

import grpc

from cortex.errors import ConfigError
from cortex.ids import is_node_id
from cortex.tokens import ROLES, Credential, TokenTable, token_hash
from cortex.v1 import credentials_pb2 as pb
from cortex.v1 import credentials_pb2_grpc
from cortexd.control.state import HubState
from cortexd.ingress.auth import bearer_token

Ctx = grpc.aio.ServicerContext[Any, Any]


class CredentialsService(credentials_pb2_grpc.CredentialsServicer):
    def __init__(self, table: TokenTable, state: HubState) -> None:
        self.table = table
        self.state = state

    def _pb(self, c: Credential) -> pb.Credential:
        node = self.state.nodes.get(c.name) if c.role == "node" else None
        return pb.Credential(name=c.name, role=c.role, fingerprint=c.fingerprint,
                             attached=bool(node is not None and node.attached))

    async def ListCredentials(self, request: pb.ListCredentialsRequest,  # noqa: N802
                              context: Ctx) -> pb.ListCredentialsResponse:
        try:
            found = self.table.credentials()
        except (ConfigError, OSError) as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return pb.ListCredentialsResponse(credentials=[self._pb(c) for c in found])

    async def RevokeCredential(self, request: pb.RevokeCredentialRequest,  # noqa: N802
                               context: Ctx) -> pb.RevokeCredentialResponse:
        if not is_node_id(request.name):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"name {request.name!r} is not a valid identifier")
        if request.role and request.role not in ROLES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"role must be one of {', '.join(ROLES)}")
        fingerprint = request.fingerprint.lower()
        if fingerprint and not all(ch in "0123456789abcdef" for ch in fingerprint):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "fingerprint must be hex digits (cortexctl tokens ls)")
        try:
            own = token_hash(bearer_token(context.invocation_metadata()) or "")
            if any(c.sha256 == own and c.name == request.name
                   and request.role in ("", c.role) and c.sha256.startswith(fingerprint)
                   for c in self.table.credentials()):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    "that is the credential this call is made with: revoke it "
                                    "with another admin credential (cortexd enroll NAME "
                                    "--role admin), so that someone can still list and revoke")
            removed = self.table.revoke(request.name, request.role, fingerprint)
        except (ConfigError, OSError) as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        if not removed:
            what = f"{request.role} " if request.role else ""
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no {what}credential of {request.name!r}"
                                + (f" with fingerprint {fingerprint}" if fingerprint else ""))
        return pb.RevokeCredentialResponse(revoked=[self._pb(c) for c in removed])

"""One interceptor authenticates and authorizes every RPC before any handler runs.

The method allowlist is explicit: a method not named here is refused, whatever
the credential. Handlers that need the caller's identity ask
:meth:`Authenticator.identify` again (cheap: a hash lookup), because the
identity must come from the credential, never from the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from cortex.tokens import METADATA_KEY, Principal, TokenTable
from cortexd.ingress.grpchealth import PUBLIC_METHODS

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

NODE_METHODS = {"/cortex.v1.NodeLink/Attach": frozenset({"node"})}
_CLIENT = frozenset({"client", "admin"})
_ADMIN = frozenset({"admin"})
CONTROL_METHODS = {
    "/cortex.v1.Control/Submit": _CLIENT,
    "/cortex.v1.Control/GetTask": _CLIENT,
    "/cortex.v1.Control/Watch": _CLIENT,
    "/cortex.v1.Control/Cancel": _CLIENT,
    "/cortex.v1.Control/SendInput": _CLIENT,
    "/cortex.v1.Control/ListTasks": _CLIENT,
    "/cortex.v1.Control/ReadLogs": _CLIENT,
    "/cortex.v1.Control/GetJournal": _CLIENT,
    "/cortex.v1.Control/SubmitMany": _CLIENT,
    "/cortex.v1.Control/Run": _CLIENT,
    "/cortex.v1.Browse/Open": _CLIENT,
    "/cortex.v1.Browse/Call": _CLIENT,
    "/cortex.v1.Browse/List": _CLIENT,
    "/cortex.v1.Control/ListNodes": _ADMIN,
    "/cortex.v1.Control/ListShards": _ADMIN,
    # Operating the host (operate.proto): shards and the hub-side drain of nodes.
    **{f"/cortex.v1.Operate/{m}": _ADMIN for m in (
        "DrainShard", "RestartShard", "ScaleShards", "Rebalance", "DrainNode", "UndrainNode",
        "ShowNode")},
    "/cortex.v1.Credentials/ListCredentials": _ADMIN,
    "/cortex.v1.Credentials/RevokeCredential": _ADMIN,
    # Monitors (monitor.proto): operators, then the monitor process (admin).
    **{f"/cortex.v1.Monitors/{m}": _CLIENT for m in (
        "PutPolicy", "GetPolicy", "ListPolicies", "ListDecisions", "GetTree", "ListSessions",
        "GetSession", "Nudge")},
    **{f"/cortex.v1.Monitors/{m}": _ADMIN for m in (
        "Feed", "RecordDecision", "Act", "DecisionApplied", "SetMonitorState", "GetContext")},
}
# Nodes call Artifacts on the Control port for their tasks' inputs and outputs
# (cortexd/artifacts/access.py checks the task); clients for their own artifacts.
_ANY = frozenset({"node", "client", "admin"})
# Interactive shells (shell.proto): what a client may do with tasks.
CONTROL_METHODS |= {f"/cortex.v1.Shell/{m}": _CLIENT for m in ("Open", "Exec", "Close")}
CONTROL_METHODS |= {
    "/cortex.v1.Artifacts/Write": _ANY,
    "/cortex.v1.Artifacts/Read": _ANY,
    "/cortex.v1.Artifacts/QueryWriteStatus": _ANY,
    "/cortex.v1.Artifacts/Stat": _CLIENT,
    "/cortex.v1.Artifacts/List": _CLIENT,
    "/cortex.v1.Artifacts/Remove": _CLIENT,
    "/cortex.v1.Artifacts/Collect": _ADMIN,
    "/cortex.v1.Artifacts/AttachOutputs": frozenset({"node"}),
}
# Workspaces (workspace.proto): operators manage them; nodes run the sync rounds of the
# workspaces attached to them (cortexd/workspaces/service.py checks the attachment).
CONTROL_METHODS |= {f"/cortex.v1.Workspaces/{m}": _CLIENT for m in (
    "Create", "Seed", "Attach", "Detach", "Status", "SyncNow", "Conflicts", "Resolve")}
CONTROL_METHODS |= {f"/cortex.v1.Workspaces/{m}": _ANY for m in ("Missing", "Push", "Pull")}
CONTROL_METHODS |= {f"/cortex.v1.Workspaces/{m}": frozenset({"node"})
                    for m in ("Follow", "Plan", "Commit")}


class Authenticator:
    def __init__(self, table: TokenTable) -> None:
        self.table = table

    def identify(self, metadata: Iterable[Any] | None) -> Principal | None:
        token = bearer_token(metadata)
        return None if token is None else self.table.lookup(token)


def bearer_token(metadata: Iterable[Any] | None) -> str | None:
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == METADATA_KEY and isinstance(value, str) and value.startswith("Bearer "):
            return value[7:].strip()
    return None


def _refusal(handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode,
             message: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    return grpc.unary_unary_rpc_method_handler(refuse, **kw)


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # grpcio's runtime class is not generic; only the stubs are
    _Interceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_Interceptor):
    def __init__(self, auth: Authenticator, allow: dict[str, frozenset[str]]) -> None:
        self._auth = auth
        self._allow = allow

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        if details.method in PUBLIC_METHODS:  # health probes and reflection: no credential
            return handler
        roles = self._allow.get(details.method)
        if roles is None:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                            f"method {details.method} is not allowed here")
        principal = self._auth.identify(details.invocation_metadata)
        if principal is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "missing or unknown credential (authorization: Bearer <token>)")
        if principal.role not in roles:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                            f"{principal.role} {principal.name!r} may not call {details.method}")
        return handler

"""cortexctl's errors: each carries the one line shown to the operator and an exit status.

gRPC errors are translated here, at the boundary, so no command ever prints a
traceback for something the operator can fix.
"""

import grpc

from cortex.errors import CortexError
from cortex.tlsdiag import Probe, explain
from cortexctl import exitcodes

#: address -> how this process dialled it, for a diagnosis of a failed connection.
_PROBES: dict[str, Probe] = {}


def remember_probe(probe: Probe) -> None:
    _PROBES[probe.address] = probe


class CtlError(CortexError):
    """A failure to report as ``cortexctl: <message>`` and exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = exitcodes.ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CtlError):
    """A bad argument or local configuration; exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exitcodes.USAGE)


def _details(e: grpc.RpcError) -> str:
    details = e.details() if isinstance(e, grpc.Call) else None
    return (details or "").strip() or "no details"


def _code(e: grpc.RpcError) -> grpc.StatusCode:
    code = e.code() if isinstance(e, grpc.Call) else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def from_rpc(e: grpc.RpcError, hub: str, subject: str = "") -> CtlError:
    """Turn an RPC failure into a one-line CtlError.

    ``subject`` names what the call was about ("task t-..."), so NOT_FOUND reads
    as "task t-... not found" whatever words the hub chose.
    """
    code, details = _code(e), _details(e)
    if code is grpc.StatusCode.UNAVAILABLE:
        probe = _PROBES.get(hub)
        why = explain(probe) if probe is not None else None  # which TLS mistake, if one
        return CtlError(f"cannot reach hub at {hub}: {why or details}", exitcodes.UNREACHABLE)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return CtlError(f"hub at {hub} did not answer in time (--timeout)", exitcodes.UNREACHABLE)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return CtlError(f"hub at {hub} refused the credential: {details}", exitcodes.AUTH)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return CtlError(f"not allowed: {details}", exitcodes.AUTH)
    if code is grpc.StatusCode.NOT_FOUND:
        return CtlError(f"{subject} not found" if subject else details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return CtlError(f"hub refused the request: {details}")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return CtlError(f"{subject}: {details}" if subject and subject not in details else details)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return CtlError(f"hub is over a limit: {details}")
    if code is grpc.StatusCode.UNIMPLEMENTED:
        if details == "Method not found!":  # grpc's words: no such service on that port
            return CtlError(f"{hub} answers gRPC but not this call: is it the hub's node "
                            "port? cortexctl --hub (CORTEX_HUB) is the Control port (cortexd "
                            "--control-listen, 7701 by default); or an older cortexd")
        return CtlError(f"hub at {hub} does not implement this call (older cortexd?): {details}")
    return CtlError(f"hub error ({code.name}): {details}")

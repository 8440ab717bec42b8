"""Building a grpc.aio server: options, bound port, TLS or explicit loopback plaintext."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from cortex.errors import CortexError
from cortex.tls import ServerTLS, server_credentials


class BindError(CortexError):
    """The port could not be bound (in use, or not allowed)."""


def server_options(max_frame_bytes: int, reuse_port: bool,
                   bdp_probe: bool = False) -> list[tuple[str, Any]]:
    return [
        # Shards share the node port; the Control port must not be shared.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", max_frame_bytes),
        ("grpc.max_send_message_length", max_frame_bytes),
        # The application heartbeat is the liveness check (a shard drops a node silent
        # for 3 intervals); HTTP/2 keepalive only finds dead TCP connections, rarely.
        # Bandwidth-delay probing answered every heartbeat with a ping: off, it halved
        # the shards' idle CPU at 10,000 nodes (bench hold, 18 % -> 10 % of a core).
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # The Control port turns it on (bdp_probe): without it the receive window stays
        # at 64 KiB and an artifact upload crawls (55 MiB/s against 240, bench.artifacts).
        ("grpc.http2.bdp_probe", 1 if bdp_probe else 0),
        # 10,000 simultaneous stream opens need more than the default (issue 5).
        ("grpc.server.max_pending_requests", 20_000),
        ("grpc.server.max_pending_requests_hard_limit", 40_000),
    ]


def build_server(
    address: str,
    tls: ServerTLS,
    *,
    max_frame_bytes: int,
    reuse_port: bool,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    bdp_probe: bool = False,
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=list(interceptors),
                             options=server_options(max_frame_bytes, reuse_port, bdp_probe))
    try:
        if tls.enabled:
            port = server.add_secure_port(address, server_credentials(tls))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio raises RuntimeError when it cannot bind
        raise BindError(f"cannot bind {address}: {e}") from e
    if port == 0:
        raise BindError(f"cannot bind {address}: address in use or not available")
    return server, port

"""The standard gRPC health-checking service and server reflection on a hub port.

Both come from their well-kept packages (grpcio-health-checking,
grpcio-reflection), so ``grpcurl`` or any client lists and calls the services
without our .proto files. Their methods need no credential
(:data:`PUBLIC_METHODS`, honoured by the auth interceptor): a health probe
carries none, and reflection describes only the public schema.
"""

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

PUBLIC_METHODS = frozenset({
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
})

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PortHealth:
    """The health servicer of one server and the services it vouches for."""

    def __init__(self, server: grpc.aio.Server, services: Iterable[str]) -> None:
        self.services = ("", *services)  # "" = the server as a whole
        self.servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        names = (*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)

    async def set(self, status: "health_pb2.HealthCheckResponse.ServingStatus.ValueType") -> None:
        for name in self.services:
            await self.servicer.set(name, status)

    async def stopping(self) -> None:
        await self.servicer.enter_graceful_shutdown()

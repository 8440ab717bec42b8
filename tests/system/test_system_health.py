"""Health: /healthz and /readyz on the metrics port, gRPC health and reflection on both ports.

- /readyz fails while the PostgreSQL store is unreachable and recovers after. The
  shared server is not stopped: the hub reaches it through a TCP proxy the test cuts.
- A client with none of our .proto files lists the services by reflection, builds the
  request types from the descriptors the hub returns, calls the standard health check
  on the Control port and the node port, and calls Control.ListShards.
"""

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from examples.localfleet import Ctl, wait_until
from tests.pg import PG_ADMIN_URL, pg_schema
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.system


def _get(address: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.timeout(180)
def test_readyz_fails_while_the_store_is_unreachable_and_recovers(fleet):
    target = urlsplit(PG_ADMIN_URL)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 5432)).start()
    try:
        with pg_schema() as url:
            via_proxy = url.replace(target.netloc.split("@")[-1], f"127.0.0.1:{proxy.port}", 1)
            hub = fleet.hub(shards=2, extra_args=["--store", via_proxy,
                                                  "--metrics-listen", "127.0.0.1:0"])
            address = hub.info["metrics_address"]
            assert _get(address, "/healthz") == (200, {"alive": True})
            status, body = _get(address, "/readyz")
            assert (status, body["ready"], body["shards"]) == (200, True, {"0": True, "1": True})

            proxy.stop()
            status, body = wait_until(lambda: (r := _get(address, "/readyz"))[0] == 503 and r,
                                      30, "/readyz to fail with the store unreachable")
            assert body["store_reachable"] is False
            assert any("store unreachable" in p for p in body["problems"]), body
            assert _get(address, "/healthz")[0] == 200  # alive, only not ready

            proxy.start()
            wait_until(lambda: _get(address, "/readyz")[0] == 200, 60,
                       "/readyz to recover once the store answers")
            hub.stop()
    finally:
        proxy.stop()


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
             ) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))


def _pool_for(channel: grpc.Channel, service: str) -> descriptor_pool.DescriptorPool:
    """A fresh descriptor pool holding ``service``'s file and its dependencies."""
    pool = descriptor_pool.DescriptorPool()
    pending = [_reflect(channel, reflection_pb2.ServerReflectionRequest(
        file_containing_symbol=service))]
    seen: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    while pending:
        for raw in pending.pop().file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            seen.setdefault(proto.name, proto)
        for proto in list(seen.values()):
            for dep in proto.dependency:
                if dep not in seen:
                    pending.append(_reflect(channel, reflection_pb2.ServerReflectionRequest(
                        file_by_filename=dep)))
    added: set[str] = set()
    while len(added) < len(seen):  # dependencies first
        for name, proto in seen.items():
            if name not in added and all(d in added for d in proto.dependency):
                pool.Add(proto)
                added.add(name)
    return pool


def _call(channel: grpc.Channel, pool: descriptor_pool.DescriptorPool, service: str,
          method: str, fields: dict, metadata: tuple = ()) -> object:
    desc = pool.FindServiceByName(service).FindMethodByName(method)
    request_cls = message_factory.GetMessageClass(desc.input_type)
    response_cls = message_factory.GetMessageClass(desc.output_type)
    call = channel.unary_unary(f"/{service}/{method}",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_cls.FromString)
    return call(request_cls(**fields), timeout=10, metadata=metadata)


@pytest.mark.timeout(120)
def test_grpc_health_and_reflection_without_our_protos(fleet):
    hub = fleet.hub(shards=2)
    Ctl(hub).ok("shards")
    token = hub.admin_token_file.read_text().strip()
    for address, service in ((hub.control_address, "cortex.v1.Control"),
                             (hub.node_address, "cortex.v1.NodeLink")):
        with grpc.insecure_channel(address) as channel:
            listed = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
            names = {s.name for s in listed.list_services_response.service}
            assert {service, "grpc.health.v1.Health"} <= names, names
            health = _pool_for(channel, "grpc.health.v1.Health")
            for name in ("", service):
                reply = _call(channel, health, "grpc.health.v1.Health", "Check",
                              {"service": name})
                assert type(reply).DESCRIPTOR.fields_by_name["status"].enum_type \
                    .values_by_number[reply.status].name == "SERVING", (address, name)
            with pytest.raises(grpc.RpcError) as unknown:
                _call(channel, health, "grpc.health.v1.Health", "Check", {"service": "nope"})
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            if service == "cortex.v1.Control":
                control = _pool_for(channel, service)
                reply = _call(channel, control, service, "ListShards", {},
                              metadata=(("authorization", f"Bearer {token}"),))
                assert len(reply.shards) == 2

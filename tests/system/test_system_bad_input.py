"""Test 6: bad input is refused with a clear gRPC status, and other nodes keep being served.

Raw NodeLink streams are driven through a generic ``stream_stream`` with identity
serializers, so the bytes on the wire are exactly the test's.
"""

import threading

import grpc
import pytest

from cortex.tokens import bearer
from cortex.v1 import control_pb2 as cpb
from cortex.v1 import node_pb2 as npb

pytestmark = pytest.mark.system

ATTACH = "/cortex.v1.NodeLink/Attach"
UNKNOWN_TASK = "t-" + "0" * 20
MIB = 1024 * 1024


def hello(node_id: str) -> bytes:
    frame = npb.NodeFrame(hello=npb.Hello(node_id=node_id, capacity=1, agent_version="test/0",
                                          boot_id=42))
    return frame.SerializeToString()


def attach(address: str, token: str, frames: list[bytes],
           timeout_s: float = 15.0) -> tuple[grpc.StatusCode, str, list[bytes]]:
    """Send ``frames`` on one Attach stream, keep it open, and return how the hub ended it."""
    done = threading.Event()

    def requests():
        yield from frames
        done.wait(timeout_s)  # our side stays open: the hub must be the one to end it

    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(ATTACH, request_serializer=None,
                                     response_deserializer=None)(
            requests(), metadata=bearer(token), timeout=timeout_s)
        received: list[bytes] = []
        try:
            for frame in call:
                received.append(frame)
            return grpc.StatusCode.OK, "", received
        except grpc.RpcError as e:
            return e.code(), e.details() or "", received
        finally:
            done.set()


def control_call(hub, method: str, request, response_type):
    token = hub.admin_token_file.read_text().strip()
    with grpc.insecure_channel(hub.control_address) as channel:
        rpc = channel.unary_unary(f"/cortex.v1.Control/{method}",
                                  request_serializer=type(request).SerializeToString,
                                  response_deserializer=response_type.FromString)
        try:
            return grpc.StatusCode.OK, "", rpc(request, metadata=bearer(token), timeout=10)
        except grpc.RpcError as e:
            return e.code(), e.details() or "", None


@pytest.fixture
def rogue(hub):
    """A valid credential for a node that will misbehave."""
    return hub.enroll("rogue-1")


def assert_served(ctl, node_id: str, words: str) -> None:
    result = ctl("submit", "--follow", "--node", node_id, "--", f"echo {words}")
    assert (result.returncode, result.stdout) == (0, f"{words}\r\n".encode()), result.stderr


def test_bad_input_is_refused_while_others_are_served(hub, ctl, fleet, rogue):
    node = fleet.node(hub, "node-1")
    ctl.wait_nodes(["node-1"])
    epoch = {n["node_id"]: n["session_epoch"] for n in ctl.json("nodes")}["node-1"]
    slow = ctl.submit("sleep 2; echo still here", "--node", "node-1")
    assert_served(ctl, "node-1", "before")

    # Bytes that are not a NodeFrame, as the first frame and after a valid Hello.
    code, details, _ = attach(hub.node_address, rogue, [b"\xff\xff\xff\xff\x0f"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details, details
    code, details, got = attach(hub.node_address, rogue, [hello("rogue-1"), b"\x0a\xff\xff"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details, (details, got)

    # A frame over the 1 MiB limit.
    big = npb.NodeFrame(output=npb.TaskOutput(task_id=UNKNOWN_TASK, attempt=1, offset=0,
                                              data=b"x" * (MIB + 1024)))
    code, details, _ = attach(hub.node_address, rogue, [hello("rogue-1"),
                                                         big.SerializeToString()])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details, details

    # An unknown credential, and a known one claiming another node's name.
    code, details, got = attach(hub.node_address, "ctk_not-a-real-token", [hello("rogue-1")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and details and not got, details
    code, details, _ = attach(hub.node_address, rogue, [hello("node-1")])
    assert code == grpc.StatusCode.PERMISSION_DENIED and details, details

    # Control API: a submit with missing or bad fields, input for an unknown task.
    code, details, _ = control_call(hub, "Submit", cpb.SubmitRequest(), cpb.SubmitResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "command" in details, details
    bad_selector = cpb.SubmitRequest(command="true", selector={"Bad Key": "x"})
    code, details, _ = control_call(hub, "Submit", bad_selector, cpb.SubmitResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details, details
    code, details, _ = control_call(hub, "SendInput",
                                    cpb.SendInputRequest(task_id=UNKNOWN_TASK, data=b"x\n"),
                                    cpb.SendInputResponse)
    assert code == grpc.StatusCode.NOT_FOUND and details, details
    result = ctl("input", UNKNOWN_TASK, "hello")
    assert result.returncode == 1
    assert result.stderr == f"cortexctl: task {UNKNOWN_TASK} not found\n".encode()

    # Meanwhile the real node was served all along, on the same session.
    assert_served(ctl, "node-1", "after")
    out, status = ctl.watch(slow)
    assert (status, out) == (0, b"still here\r\n")
    now = {n["node_id"]: n for n in ctl.json("nodes")}["node-1"]
    assert now["attached"] and now["session_epoch"] == epoch
    assert node.running()


def raw_control_call(hub, method: str, data: bytes) -> tuple[grpc.StatusCode, str]:
    token = hub.admin_token_file.read_text().strip()
    with grpc.insecure_channel(hub.control_address) as channel:
        rpc = channel.unary_unary(f"/cortex.v1.Control/{method}", request_serializer=None,
                                  response_deserializer=None)
        try:
            rpc(data, metadata=bearer(token), timeout=10)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""


def test_bad_control_requests_are_refused_at_the_edge_with_a_message(hub):
    """Issue 13: each was UNKNOWN with a Python exception name, an overflow in the store,
    or a task that failed on the node."""
    for method in ("GetTask", "Submit", "ListTasks"):
        code, details = raw_control_call(hub, method, b"\x0a\xff\xff")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, details)
        assert details.startswith("the request is not a valid cortex.v1.") and (
            "Unexpected <class" not in details), details

    code, details, _ = control_call(hub, "ListTasks", cpb.ListTasksRequest(state=99),
                                    cpb.ListTasksResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "ListTasksRequest.state: 99 is not a TaskState" in details

    code, details, _ = control_call(hub, "Submit", cpb.SubmitRequest(
        command="true", pids_max=(1 << 32) - 1), cpb.SubmitResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "pids_max must be at most" in details

    for bad in ({"node_id": "node-1\n"}, {"idempotency_key": "k\n"},
                {"selector": {"os": "linux\n"}}):
        code, details, _ = control_call(hub, "Submit", cpb.SubmitRequest(command="true", **bad),
                                        cpb.SubmitResponse)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details, (bad, details)

    code, _, submitted = control_call(hub, "Submit", cpb.SubmitRequest(command="true"),
                                      cpb.SubmitResponse)
    assert code == grpc.StatusCode.OK
    token = hub.admin_token_file.read_text().strip()
    with grpc.insecure_channel(hub.control_address) as channel:
        watch = channel.unary_stream("/cortex.v1.Control/Watch",
                                     request_serializer=cpb.WatchRequest.SerializeToString,
                                     response_deserializer=cpb.WatchEvent.FromString)
        with pytest.raises(grpc.RpcError) as e:
            list(watch(cpb.WatchRequest(task_id=submitted.task.task_id, from_offset=1 << 63),
                       metadata=bearer(token), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "WatchRequest.from_offset: 9223372036854775808 is beyond" in e.value.details()

    # and the hub still answers
    code, _, _ = control_call(hub, "ListTasks", cpb.ListTasksRequest(), cpb.ListTasksResponse)
    assert code == grpc.StatusCode.OK

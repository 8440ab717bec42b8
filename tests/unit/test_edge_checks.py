"""The Control port's generic request checks (cortexd/ingress/edge.py), without a server."""

from cortex.v1 import control_pb2 as pb
from cortexd.ingress.edge import Refused, check_message, checked_deserializer


def test_undecodable_bytes_are_refused_with_the_type_named():
    decode = checked_deserializer(pb.GetTaskRequest.FromString)
    refused = decode(b"\x0a\xff\xff")
    assert isinstance(refused, Refused)
    assert refused.message.startswith("the request is not a valid cortex.v1.GetTaskRequest")
    assert decode(pb.GetTaskRequest(task_id="t-1").SerializeToString()).task_id == "t-1"


def test_enums_and_uint64_are_checked_at_any_depth():
    assert check_message(pb.ListTasksRequest(state=pb.RUNNING)) is None
    assert "state: 42 is not a TaskState" in (check_message(pb.ListTasksRequest(state=42)) or "")
    assert "from_offset" in (check_message(pb.WatchRequest(from_offset=1 << 63)) or "")
    assert check_message(pb.WatchRequest(from_offset=(1 << 63) - 1)) is None
    nested = pb.SubmitManyRequest(tasks=[pb.SubmitRequest(command="x"),
                                         pb.SubmitRequest(memory_max_bytes=1 << 64 - 1)])
    assert (check_message(nested) or "").startswith("tasks.memory_max_bytes")

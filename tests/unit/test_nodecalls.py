"""NodeCalls (cortexd/control/nodecalls.py): a call's replies collected, checked, passed on."""

import asyncio
import hashlib
import json

import pytest

from cortex.v1 import node_pb2, nodecall_pb2
from cortexd.control.nodecalls import CallError, CallResult, NodeCalls


def replies(call_id: int, data: bytes, chunk: int, digest: str | None = None,
            ) -> list[node_pb2.NodeFrame]:
    out = []
    for i, off in enumerate(range(0, len(data), chunk)):
        r = nodecall_pb2.NodeCallReply(call_id=call_id, data=data[off:off + chunk],
                                       data_offset=off, eof=off + chunk >= len(data))
        if i == 0:
            r.ok = True
            r.result_json = json.dumps({"mime": "image/png"}).encode()
            r.data_size = len(data)
            r.data_sha256 = digest or hashlib.sha256(data).hexdigest()
        out.append(node_pb2.NodeFrame(call_reply=r))
    return out


def call(data: bytes, chunk: int = 4, digest: str | None = None,
         shuffle: bool = False) -> CallResult:
    calls = NodeCalls()

    async def send(frame: node_pb2.HubFrame) -> None:
        got = replies(frame.call.call_id, data, chunk, digest)
        if shuffle:
            got[1], got[2] = got[2], got[1]
        for f in got:
            calls.deliver("n1", f)

    return asyncio.run(calls.call("n1", "browser", "screenshot", {}, "me", 1000, send))


def test_pieces_and_json_pass_through_unjoined() -> None:
    got = call(b"0123456789abcdef", chunk=5)
    assert got.pieces == (b"01234", b"56789", b"abcde", b"f")
    assert got.result_json == b'{"mime": "image/png"}' and got.result == {"mime": "image/png"}
    assert got.size == 16 and got.data == b"0123456789abcdef"
    assert got.sha256 == hashlib.sha256(b"0123456789abcdef").hexdigest()


def test_a_wrong_digest_or_an_out_of_order_piece_is_refused() -> None:
    with pytest.raises(CallError) as e:
        call(b"0123456789abcdef", digest="00" * 32)
    assert e.value.code == "DATA_LOSS"
    with pytest.raises(CallError) as e:
        call(b"0123456789abcdef", shuffle=True)
    assert e.value.code == "INTERNAL" and "out of order" in str(e.value)


def test_a_result_that_is_not_a_map_parses_as_empty() -> None:
    assert CallResult(b"[1, 2]").result == {} and CallResult(b"{bad").result == {}
    assert CallResult(b"").result == {} and CallResult(b"").data is None

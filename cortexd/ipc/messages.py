"""Messages between the control process and the shards, framed with msgpack.

A message is a msgpack array whose first element is its kind. Protobuf frames
travel inside as raw bytes, exactly as they arrived from (or will be written to)
a node: the control process never re-encodes a node's frame and the shard never
re-encodes an envelope. Nothing is pickled.

shard -> control::

    [ATTACH, conn_id, node_id, hello_bytes]
    [FRAME, node_id, epoch, node_frame_bytes]   output/started/finished/rejected/draining
    [DETACH, node_id, epoch, reason]
    [STATS, nodes, frames_in, frames_out]
    [WROTE, node_id, epoch, node_frame_bytes, *what]
                                                 a frame its shard wrote to the store
                                                 (cortexd/shards/writes.py); what: started
                                                 [row], output [[before, after]], finished
                                                 [appended, ended] with appended None,
                                                 [before, after] or a refusal, and ended a
                                                 row (durable, acked by the shard), None
                                                 (control decides) or a refusal
    [RESERVE, req_id, [[task_id, selector, pin, tool, held_bytes], ...]]
                                                 submissions a shard took in on the
                                                 Control port (cortexd/shards/intake.py):
                                                 a node or queue room for each, please
    [CREATED, req_id, [[task_id, row|None, created, error, size, sent], ...]]
                                                 what the shard's inserts did (row: the
                                                 stored task; error "": none; sent: the
                                                 shard sends its envelope, its node's
                                                 stream being there)

control -> shard::

    [WELCOME, conn_id, node_id, epoch, hub_frame_bytes, heartbeat_interval_ms]
    [REFUSE, conn_id, grpc_status_name, message]
    [SEND, node_id, epoch, hub_frame_bytes]
    [CLOSE, node_id, epoch, reason]
    [INTERVAL, heartbeat_interval_ms]            the interval every node is asked for now
    [ADMIT, accepting]                           false: answer new attaches RetryLater
                                                 (a rebalance keeps full shards from
                                                 taking back the nodes it moves)
    [RESERVED, req_id, [["node", node_id, epoch] | ["queue"] | ["refused", code, message], ...]]
                                                 per task of a RESERVE: insert it placed
                                                 on that node's session, queued, or
                                                 refuse it (grpc status code name)
"""

from typing import Any

import msgpack

ATTACH = 1
FRAME = 2
DETACH = 3
STATS = 4
WROTE = 5
RESERVE = 6
CREATED = 7
WELCOME = 10
REFUSE = 11
SEND = 12
CLOSE = 13
INTERVAL = 14
ADMIT = 15
RESERVED = 16


def pack(*fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def unpack(record: bytes) -> list[Any]:
    msg = msgpack.unpackb(record, raw=False, use_list=True)
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], int):
        raise ValueError("ring record is not a cortex message")
    return msg

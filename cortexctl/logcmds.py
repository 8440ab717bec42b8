"""``cortexctl logs`` and ``cortexctl journal``: a task's output as the node spooled it,
and the monitor's bounded view of it.

``logs`` asks the hub for a byte range of the attempt's spool (``--from``, ``--length``;
0 = to the end); the hub reads it from the node, or from its own copy once the task has
ended and the node no longer holds it (docs/protocol.md, "Reading a spool"). Bytes go to
stdout unchanged; ``--json`` prints one line per chunk with base64 data.

``journal`` prints the head, a marker line ``[… N bytes omitted (offsets A–B) …]`` when
something was left out, and the tail; ``--json`` prints one object.
"""

import argparse
import base64
import json
import sys

import grpc

from cortex.v1 import control_pb2 as pb
from cortexctl import exitcodes
from cortexctl.commands import connect, task_id
from cortexctl.errors import CtlError, UsageError, from_rpc

#: Codes whose details the hub wrote for this read (UNAVAILABLE only when they name the
#: node: otherwise it is the hub itself that cannot be reached).
HUB_ANSWERS = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                         grpc.StatusCode.UNAVAILABLE})


def cmd_logs(args: argparse.Namespace) -> int:
    tid = task_id(args.task)
    if args.from_offset < 0 or args.length < 0 or args.attempt < 0:
        raise UsageError("--from, --length and --attempt must not be negative")
    with connect(args) as client:
        stream = client.read_logs(tid, args.attempt, args.from_offset, args.length)
        try:
            for chunk in stream:
                if args.json:
                    print(json.dumps({"offset": chunk.offset, "bytes": len(chunk.data),
                                      "data_b64": base64.b64encode(chunk.data).decode()}),
                          flush=True)
                else:
                    sys.stdout.buffer.write(chunk.data)
                    sys.stdout.buffer.flush()
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            details = (e.details() if isinstance(e, grpc.Call) else "") or ""
            if code in HUB_ANSWERS and (code is not grpc.StatusCode.UNAVAILABLE
                                        or details.startswith("node ")):
                # The hub's own words: which node, which attempt, pruned or not attached.
                raise CtlError(details, exitcodes.ERROR) from e
            raise from_rpc(e, client.settings.address, f"task {tid}") from e
    return exitcodes.OK


def journal_dict(journal: pb.Journal) -> dict[str, object]:
    return {
        "task_id": journal.task_id, "attempt": journal.attempt,
        "total_bytes": journal.total_bytes, "omitted_bytes": journal.omitted_bytes,
        "omitted_from": journal.omitted_from, "omitted_to": journal.omitted_to,
        "head_b64": base64.b64encode(journal.head).decode(),
        "tail_b64": base64.b64encode(journal.tail).decode(),
    }


def journal_marker(journal: pb.Journal) -> bytes:
    return (f"[… {journal.omitted_bytes} bytes omitted "
            f"(offsets {journal.omitted_from}–{journal.omitted_to}) …]").encode()


def cmd_journal(args: argparse.Namespace) -> int:
    tid = task_id(args.task)
    with connect(args) as client:
        journal = client.journal(tid)
    if args.json:
        print(json.dumps(journal_dict(journal)))
        return exitcodes.OK
    write_journal(journal)
    return exitcodes.OK


def write_journal(journal: pb.Journal) -> None:
    """The head, the omitted marker when something was left out, the tail; to stdout."""
    out = sys.stdout.buffer
    out.write(journal.head)
    if journal.omitted_bytes:
        sep = b"" if not journal.head or journal.head.endswith(b"\n") else b"\n"
        out.write(sep + journal_marker(journal) + b"\n")
    out.write(journal.tail)
    out.flush()

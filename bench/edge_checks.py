"""The Control port's edge checks (cortexd/ingress/edge.py): what decoding and checking a
SubmitMany of 1,000 tasks costs, against decoding alone.

    .venv/bin/python -m bench.edge_checks [--tasks 1000] [--rounds 200]
"""

import argparse
import time

from cortex.cliargs import Parser
from cortex.v1 import control_pb2 as pb
from cortexd.ingress.edge import checked_deserializer


def main() -> None:
    p: argparse.ArgumentParser = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    request = pb.SubmitManyRequest(tasks=[
        pb.SubmitRequest(command=f"echo {i}", selector={"zone": "z1"}, env={"A": "1"},
                         timeout_s=30, memory_max_bytes=1 << 30) for i in range(args.tasks)])
    data = request.SerializeToString()
    for name, decode in (("decode", pb.SubmitManyRequest.FromString),
                         ("decode+check", checked_deserializer(pb.SubmitManyRequest.FromString))):
        start = time.process_time()
        for _ in range(args.rounds):
            decode(data)
        per_task_us = (time.process_time() - start) / args.rounds / args.tasks * 1e6
        print(f"{name:>13}: {per_task_us:.2f} µs CPU per task")


if __name__ == "__main__":
    main()

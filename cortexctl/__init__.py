"""cortexctl: the operator's command line for a Cortex hub (DESIGN.md §8).

It speaks only the ``cortex.v1.Control`` gRPC API. ``cli`` parses arguments,
``commands`` runs them, ``client`` wraps the gRPC channel and turns RPC errors
into one-line messages, ``follow`` streams a task's output, ``render`` draws
tables and JSON lines, and ``exitcodes`` lists every status cortexctl exits with.
"""

import os as _os

# gRPC core reads GRPC_VERBOSITY when it is first imported, and otherwise writes its own
# unstructured lines ("I1202 … Handshake failed") into our stderr and logs: set the
# default before anything here imports grpc (an operator's setting wins; issue 13).
_os.environ.setdefault("GRPC_VERBOSITY", "NONE")

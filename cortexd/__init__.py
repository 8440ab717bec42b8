"""cortexd: the Cortex hub daemon (supervisor, control process, shard processes)."""

import os as _os

# gRPC core reads GRPC_VERBOSITY when it is first imported, and otherwise writes its own
# unstructured lines ("I1202 … Handshake failed") into our stderr and logs: set the
# default before anything here imports grpc (an operator's setting wins; issue 13).
_os.environ.setdefault("GRPC_VERBOSITY", "NONE")

"""nodeagent: the process that runs on every node (DESIGN.md §5, docs/protocol.md).

It holds one ``NodeLink.Attach`` stream to the hub, verifies every signed task envelope
before running anything, runs each task in a PTY in its own session and process group,
spools every output byte to disk before streaming it, and replays unacknowledged output
after a reconnect. Module map:

- ``config``: the frozen settings object and its parsing (flags < env fallbacks).
- ``cli``: the ``nodeagent`` console script.
- ``agent``: process lifecycle: connect loop with backoff, signals, shutdown ladder.
- ``link``: one Attach stream: Hello/Welcome, heartbeats, hub silence, the writer.
- ``host``: the tasks this node holds: admission, processes, spools, hub task frames.
- ``tasktable``: the pure task table (reports, verdicts, acks, what to send next).
- ``admission``: envelope verification and the admission rules, pure.
- ``runner``: one task process in a PTY: read, drain, exit, cancel ladder.
- ``procgroup``: signalling and inspecting a task's process group and session.
- ``spool``: the per-attempt output file and its metadata on disk.
- ``ranlog``: the at-most-once record of attempts this node has started.
- ``recovery``: taking back the spools an earlier agent process left.
- ``ptyspawn``: starting a command on a new PTY in a new session, without fork().
- ``backoff``: jittered exponential reconnect backoff.
- ``reaper``: child-subreaper set-up and reaping of re-parented orphans.
"""

import os as _os

# gRPC core reads GRPC_VERBOSITY when it is first imported, and otherwise writes its own
# unstructured lines ("I1202 … Handshake failed") into our stderr and logs: set the
# default before anything here imports grpc (an operator's setting wins; issue 13).
_os.environ.setdefault("GRPC_VERBOSITY", "NONE")

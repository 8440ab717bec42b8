"""Whether a task envelope from the hub may run here: pure, no I/O.

Order of the checks (docs/protocol.md, "Running"): the envelope first
(:class:`cortex.envelope.EnvelopeVerifier`: signature, node id, current session epoch,
expiry, nonce never seen), then the spec's grammar (it will become a path, an argv and
an environment), then at-most-once (``already_ran``), then ``draining`` and
``capacity``. Anything but an accepted envelope is a :class:`Rejection`, and a rejected
envelope runs nothing. ``task_id`` and ``attempt`` in a rejection are read from the body
when it parses at all, so the hub can match even a forged or stale envelope to its task.
"""

from collections.abc import Container
from dataclasses import dataclass

from cortex.envelope import EnvelopeVerifier
from cortex.errors import EnvelopeError
from cortex.ids import ENV_NAME_RE, is_task_id
from cortex.v1 import node_pb2

MAX_REASON_CHARS = 1024
MAX_DIMENSION = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    task_id: str
    attempt: int
    code: str
    reason: str

    def frame(self) -> node_pb2.NodeFrame:
        return node_pb2.NodeFrame(rejected=node_pb2.TaskRejected(
            task_id=self.task_id, attempt=self.attempt, code=self.code,
            reason=self.reason[:MAX_REASON_CHARS]))


def _ids_of(body: bytes) -> tuple[str, int]:
    env = node_pb2.TaskEnvelope()
    try:
        env.ParseFromString(body)
    except Exception:  # DecodeError; an unreadable body names no task
        return "", 0
    return (env.task_id if is_task_id(env.task_id) else ""), env.attempt


def spec_problem(env: node_pb2.TaskEnvelope) -> str | None:
    """Why this envelope's contents cannot be run safely, or None."""
    if not is_task_id(env.task_id):
        return f"task id {env.task_id[:80]!r} is not a valid task id"
    spec = env.spec
    if not spec.command or "\0" in spec.command:
        return "command is empty or contains NUL"
    for name, value in spec.env.items():
        if not ENV_NAME_RE.fullmatch(name) or "\0" in value:
            return f"environment variable {name[:80]!r} is not a valid name or value"
    if spec.cwd and "\0" in spec.cwd:
        return "cwd has a NUL byte"
    if spec.cwd and not spec.workspace and not spec.cwd.startswith("/"):
        return "cwd must be an absolute path"  # in a workspace: inside its copy (taskfiles.py)
    if spec.cols > MAX_DIMENSION or spec.rows > MAX_DIMENSION:
        return f"terminal size {spec.cols}x{spec.rows} exceeds {MAX_DIMENSION}"
    return None


def admit(
    verifier: EnvelopeVerifier,
    signed: node_pb2.SignedEnvelope,
    *,
    session_epoch: int,
    ran: Container[tuple[str, int]],
    running: int,
    capacity: int,
    draining: bool,
    now_ms: int | None = None,
) -> node_pb2.TaskEnvelope | Rejection:
    try:
        env = verifier.verify(signed, session_epoch, now_ms=now_ms)
    except EnvelopeError as e:
        task_id, attempt = _ids_of(signed.body)
        return Rejection(task_id, attempt, e.code, str(e))
    task_id = env.task_id if is_task_id(env.task_id) else ""
    problem = spec_problem(env)
    if problem:
        return Rejection(task_id, env.attempt, "malformed", problem)
    if (env.task_id, env.attempt) in ran:
        return Rejection(task_id, env.attempt, "already_ran",
                         f"attempt {env.attempt} of {env.task_id} already ran on this node")
    if draining:
        return Rejection(task_id, env.attempt, "draining", "node is draining")
    if running >= capacity:
        return Rejection(task_id, env.attempt, "capacity",
                         f"node runs {running} tasks, its capacity is {capacity}")
    return env

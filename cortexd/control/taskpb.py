"""Task messages of the Control API, pure: a SubmitRequest into a new task's row, a
row into the API's Task, a submission's outcome into a SubmitResult. Shared by the
control process's servicer (service.py) and the shards' intake (cortexd/shards/intake.py).
"""

import time

from cortex.ids import new_task_id
from cortex.tools import SHELL
from cortex.v1 import artifacts_pb2, control_pb2, node_pb2
from cortexd.control.intake import Outcome, Refused
from cortexd.store import TaskRow


def prompt_pb(ev: node_pb2.PromptEvent) -> control_pb2.Prompt:
    return control_pb2.Prompt(kind=ev.kind, detector=ev.detector, confidence=ev.confidence,
                              excerpt=ev.excerpt, offset=ev.offset, at_ms=ev.at_ms,
                              exit_code=ev.exit_code, cwd=ev.cwd)


def task_pb(t: TaskRow, progress: tuple[int, int] = (0, 0),
            prompt: node_pb2.PromptEvent | None = None, attention: str = "") -> control_pb2.Task:
    """The API's Task; ``progress`` is the node's last (spooled, held back) report,
    ``prompt`` the last prompt event of this attempt."""
    return control_pb2.Task(
        last_prompt=prompt_pb(prompt) if prompt is not None else None,
        spooled_bytes=progress[0], held_back_bytes=progress[1],
        task_id=t.task_id, state=t.state.value, attempt=t.attempt,
        node_id=t.node_id, command=t.command, has_exit_code=t.exit_code is not None,
        exit_code=t.exit_code or 0, reason=t.reason, output_bytes=t.output_bytes,
        created_ms=t.created_ms, updated_ms=t.updated_ms, idempotency_key=t.idempotency_key,
        selector=t.selector, tenant=t.tenant, attention=attention, output_paths=t.outputs,
        inputs=[artifacts_pb2.ArtifactInput(
            digest=artifacts_pb2.Digest(sha256=sha, size_bytes=size), path=path)
            for sha, size, path in t.inputs], tool=t.tool, queue_timeout_s=t.queue_timeout_s,
        workspace=t.workspace)


def row_of(request: control_pb2.SubmitRequest) -> TaskRow:
    now = int(time.time() * 1000)
    return TaskRow(task_id=new_task_id(), command=request.command, env=dict(request.env),
                   cwd=request.cwd, timeout_s=request.timeout_s,
                   idle_timeout_s=request.idle_timeout_s,
                   memory_max_bytes=request.memory_max_bytes, pids_max=request.pids_max,
                   selector=dict(request.selector), node_pin=request.node_id,
                   idempotency_key=request.idempotency_key, created_ms=now, updated_ms=now,
                   queue_timeout_s=request.queue_timeout_s,
                   tool="" if request.tool == SHELL else request.tool,
                   workspace=request.workspace)


def submit_result(request: control_pb2.SubmitRequest,
                   outcome: Outcome) -> control_pb2.SubmitResult:
    if isinstance(outcome, Refused):
        return control_pb2.SubmitResult(error=control_pb2.SubmitError(
            code=outcome.code, message=outcome.message))
    task, dedup = outcome
    if dedup and task.command != request.command:
        return control_pb2.SubmitResult(error=control_pb2.SubmitError(
            code="ALREADY_EXISTS", message=f"idempotency key {request.idempotency_key!r} "
            f"names task {task.task_id} with a different command"))
    return control_pb2.SubmitResult(submitted=control_pb2.SubmitResponse(
        task=task_pb(task), deduplicated=dedup))

"""The Control port served by the shards (``shard_intake``, issue 9: no serial stage).

Every shard binds the Control port too (SO_REUSEPORT, as the node port is), so the
kernel spreads client connections over the shards. A shard takes in a plain
``Submit`` or ``SubmitMany`` itself — what most of the hub's calls are — and relays
every other call, bytes as they are, to the control process's Unix socket
(cortexd/ingress/proxy.py). "Plain": no monitor (policy, goal, parent, browse
session), no workspace, no input or output files; those need the control process's
state (workspaces, artifacts, monitors) and go there whole.

A plain submission here:

1. is validated as the control process would (the same ``check_submit``, the same
   deliverability bound: what the hub accepts it must be able to send);
2. asks control for a place, ``RESERVE`` → ``RESERVED`` over the shard's rings
   (cortexd/control/submits.py): a node's slot (nothing queued ahead), queue room,
   or a refusal with the limit — control holds the decision's state, one process
   for the host's view of its nodes, and does no store write and no RPC for it;
3. is inserted on this shard's own store connection (placed on the node's session,
   the same fenced write as control's, or queued; concurrent inserts share group
   commits), or found by its idempotency key;
4. is told to control, ``CREATED``, which publishes it and sends its envelope — unless
   its node's stream is on this shard: then the shard signs the envelope and sends it
   itself, *after* the ``CREATED`` (so control, reading the ring in order, knows the
   task before any frame of it: the node's Started or Finished comes after), and
   control does not send it again (saves two ring hops and control's signature);
5. is answered — after the commit that makes it durable.

If control does not answer within ``RESERVE_WAIT_S`` (it is restarting), the call is
answered UNAVAILABLE and nothing is stored; a store error is answered UNAVAILABLE
"retry with the same idempotency key" (the commit's outcome may be unknown) and
control settles the task from the store. A shard killed between 3 and 4 leaves holds
that control settles from the store when the supervisor reports the shard down.
"""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cortex.v1 import control_pb2
from cortexd.config import Settings
from cortexd.control.intake import MAX_SUBMIT_MANY, Outcome, Refused
from cortexd.control.placement import spec_of, undeliverable
from cortexd.control.state import held_bytes
from cortexd.control.submitcheck import check_submit
from cortexd.control.taskpb import row_of, submit_result, task_pb
from cortexd.ingress.auth import CONTROL_METHODS
from cortexd.ingress.edge import guarded
from cortexd.ingress.grpchealth import PUBLIC_METHODS
from cortexd.ingress.proxy import Relay, relay_metadata
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink
from cortexd.lifecycle import State
from cortexd.serializers.envelope import EnvelopeRequest, InlineEncoder
from cortexd.shards.session import NodeSession, SessionTable
from cortexd.store import StoreError, TaskRow
from cortexd.store.base import pack_row

Ctx = grpc.aio.ServicerContext[Any, Any]
SUBMIT = "/cortex.v1.Control/Submit"
SUBMIT_MANY = "/cortex.v1.Control/SubmitMany"
#: How long a submission waits for control's answer to its RESERVE.
RESERVE_WAIT_S = 10.0
#: CREATED records are cut at about this many bytes of rows (a row is at most about
#: one max_frame_bytes: the ring holds two).
CREATED_RECORD_BYTES = 256 << 10


def plain(req: control_pb2.SubmitRequest) -> bool:
    """A submission a shard takes in itself (the module docstring says which)."""
    return not (req.monitor_policy or req.policy_toml or req.goal or req.parent_task_id
                or req.browse_session or req.workspace or req.inputs or req.outputs)


class ShardIntake:
    def __init__(self, settings: Settings, link: RingLink, store: Any, relay: Relay,
                 encoder: InlineEncoder | None = None,
                 sessions: SessionTable | None = None) -> None:
        self.settings = settings
        self.link = link
        self.store = store
        self.relay = relay
        self.encoder = encoder  # with sessions: envelopes for this shard's nodes signed here
        self.sessions = sessions
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[list[Any]]] = {}
        self._counts = {"taken": 0, "relayed": 0}

    @property
    def counts(self) -> dict[str, int]:
        return {"taken": self._counts["taken"],
                "relayed": self._counts["relayed"] + self.relay.calls}

    # -- the port --------------------------------------------------------------------

    def handler(self) -> "grpc.GenericRpcHandler[Any, Any]":
        intake = self

        class Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
            def service(self, details: grpc.HandlerCallDetails) -> Any:
                method = details.method
                if method == SUBMIT:
                    return guarded(grpc.unary_unary_rpc_method_handler(
                        intake.submit, request_deserializer=control_pb2.SubmitRequest.FromString,
                        response_serializer=control_pb2.SubmitResponse.SerializeToString))
                if method == SUBMIT_MANY:
                    return guarded(grpc.unary_unary_rpc_method_handler(
                        intake.submit_many,
                        request_deserializer=control_pb2.SubmitManyRequest.FromString,
                        response_serializer=control_pb2.SubmitManyResponse.SerializeToString))
                if method in CONTROL_METHODS or method in PUBLIC_METHODS:
                    return intake.relay.handler(method)
                return None  # UNIMPLEMENTED, as the control process answers it (a node
                # agent pointed at this port says so and stops: nodeagent/link.py)

        return Handler()

    async def _relayed(self, method: str, request: Any, context: Ctx,
                       response_type: Any) -> Any:
        """A call this shard does not take in, sent to control whole."""
        self._counts["relayed"] += 1
        call: Callable[..., Awaitable[bytes]] = self.relay.channel.unary_unary(
            method, request_serializer=None, response_deserializer=None)
        remaining = context.time_remaining()
        try:
            raw = await call(request.SerializeToString(), metadata=relay_metadata(context),
                             timeout=remaining if remaining is not None and remaining < 1e9
                             else None)
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")
        return response_type.FromString(raw)

    async def submit(self, request: control_pb2.SubmitRequest,
                     context: Ctx) -> control_pb2.SubmitResponse:
        if not plain(request):
            out: control_pb2.SubmitResponse = await self._relayed(
                SUBMIT, request, context, control_pb2.SubmitResponse)
            return out
        if (err := check_submit(request)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        row = row_of(request)
        if (why := undeliverable(row, self.settings.max_frame_bytes)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
        (outcome,) = await self.take([row])
        if isinstance(outcome, Refused):
            await context.abort(getattr(grpc.StatusCode, outcome.code), outcome.message)
            raise AssertionError("abort returned")
        task, dedup = outcome
        if dedup and task.command != request.command:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"idempotency key {request.idempotency_key!r} names task "
                                f"{task.task_id} with a different command")
        return control_pb2.SubmitResponse(task=task_pb(task), deduplicated=dedup)

    async def submit_many(self, request: control_pb2.SubmitManyRequest,
                          context: Ctx) -> control_pb2.SubmitManyResponse:
        if len(request.tasks) > MAX_SUBMIT_MANY:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"at most {MAX_SUBMIT_MANY} tasks in one SubmitMany "
                                f"(this one has {len(request.tasks)}); nothing was submitted")
        if not all(plain(r) for r in request.tasks):
            many: control_pb2.SubmitManyResponse = await self._relayed(
                SUBMIT_MANY, request, context, control_pb2.SubmitManyResponse)
            return many
        items: list[TaskRow | Refused] = []
        for r in request.tasks:  # all plain: inputs and outputs went to control (above)
            if (err := check_submit(r)) is not None:
                items.append(Refused("INVALID_ARGUMENT", err))
            else:
                row = row_of(r)
                why = undeliverable(row, self.settings.max_frame_bytes)
                items.append(row if why is None else Refused("INVALID_ARGUMENT", why))
        rows = [i for i in items if isinstance(i, TaskRow)]
        taken = iter(await self.take(rows)) if rows else iter(())
        outcomes = [i if isinstance(i, Refused) else next(taken) for i in items]
        return control_pb2.SubmitManyResponse(results=[
            submit_result(req, outcome)
            for req, outcome in zip(request.tasks, outcomes, strict=True)])

    # -- reserve, insert, tell -------------------------------------------------------

    async def take(self, rows: list[TaskRow]) -> list[Outcome]:
        """Reserve, insert and report ``rows``: one outcome each, in order."""
        self._counts["taken"] += len(rows)
        req = next(self._ids)
        answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req] = answer
        wanted = [[r.task_id, r.selector, r.node_pin, r.tool, held_bytes(r)] for r in rows]
        try:
            await self.link.send(m.pack(m.RESERVE, req, wanted))
            answers = await asyncio.wait_for(answer, RESERVE_WAIT_S)
        except TimeoutError:
            # Let control go of what it may still hold for them (nothing was stored).
            await self._tell(req, [[r.task_id, None, False, "abandoned", 256, False]
                                   for r in rows])
            return [Refused("UNAVAILABLE", "the hub's control process did not answer in "
                            f"{RESERVE_WAIT_S:g} s; nothing was stored, retry")] * len(rows)
        finally:
            self._waiting.pop(req, None)
        calls: list[Any] = []
        for row, ans in zip(rows, answers, strict=True):
            if ans[0] == "refused":
                calls.append(Refused(str(ans[1]), str(ans[2])))
            else:
                place = (str(ans[1]), int(ans[2])) if ans[0] == "node" else None
                calls.append(asyncio.ensure_future(self.store.create_task(row, place)))
        await asyncio.gather(*(c for c in calls if not isinstance(c, Refused)),
                             return_exceptions=True)
        told: list[list[Any]] = []
        outcomes: list[Outcome] = []
        for row, call in zip(rows, calls, strict=True):
            if isinstance(call, Refused):
                outcomes.append(call)
                continue
            e = call.exception()
            if e is None:
                stored, created = call.result()
                told.append([row.task_id, pack_row(stored), created, "", held_bytes(stored),
                             False])
                outcomes.append((stored, not created))
                continue
            told.append([row.task_id, None, False, f"{type(e).__name__}: {e}", 256, False])
            outcomes.append(Refused("UNAVAILABLE", f"store: {e}; retry with the same "
                                    "idempotency key (the task may have been stored)")
                            if isinstance(e, StoreError) else
                            Refused("INTERNAL", f"{type(e).__name__}: {e}"))
        local = await self._local_envelopes(told, outcomes)
        await self._tell(req, told)
        for session, frame in local:  # after CREATED: control knows the task first
            session.push(frame)
        return outcomes

    async def _local_envelopes(self, told: list[list[Any]], outcomes: list[Outcome],
                               ) -> list[tuple[NodeSession, bytes]]:
        """The signed envelopes of the new tasks placed on this shard's own nodes; their
        entries in ``told`` are marked sent (control sends the others)."""
        if self.encoder is None or self.sessions is None:
            return []
        mine: list[tuple[list[Any], TaskRow, NodeSession]] = []
        stored_rows = {o[0].task_id: o[0] for o in outcomes if not isinstance(o, Refused)}
        for entry in told:
            row = stored_rows.get(entry[0])
            if row is None or not entry[2] or row.state is not State.ASSIGNED:
                continue
            if (session := self.sessions.route(row.node_id, row.node_epoch)) is not None:
                mine.append((entry, row, session))
        if not mine:
            return []
        frames = await self.encoder.encode([
            EnvelopeRequest(r.task_id, r.attempt, r.node_id, r.node_epoch, r.tenant, spec_of(r))
            for _, r, _ in mine])
        local = []
        for (entry, _, session), frame in zip(mine, frames, strict=True):
            if len(frame) <= self.settings.max_frame_bytes:  # else control fails it, alone
                entry[5] = True
                local.append((session, frame))
        return local

    async def _tell(self, req: int, told: list[list[Any]]) -> None:
        """CREATED, cut into records of about ``CREATED_RECORD_BYTES``."""
        batch: list[list[Any]] = []
        size = 0
        for entry in told:
            batch.append(entry)
            size += entry[4]
            if size >= CREATED_RECORD_BYTES:
                await self.link.send(m.pack(m.CREATED, req, batch))
                batch, size = [], 0
        if batch:
            await self.link.send(m.pack(m.CREATED, req, batch))

    def reserved(self, msg: list[Any]) -> None:
        """Control's RESERVED: wake the submission waiting for it (gone: it gave up and
        told control to let go)."""
        answer = self._waiting.get(int(msg[1]))
        if answer is not None and not answer.done():
            answer.set_result(list(msg[2]))

"""``cortex.v1.Operate`` (operate.proto): the gRPC adapter over operate.py.

It validates, converts, and streams the operations' :class:`Progress` as
``OpProgress`` messages (the last has ``done``). Admin credentials only
(cortexd/ingress/auth.py).
"""

from collections.abc import AsyncIterator
from typing import Any

import grpc

from cortex.ids import is_node_id
from cortex.v1 import operate_pb2, operate_pb2_grpc
from cortexd.control.errors import RequestError
from cortexd.control.operate import Operations, Progress
from cortexd.control.service import node_pb

Ctx = grpc.aio.ServicerContext[Any, Any]
OPERATE_SERVICE = "cortex.v1.Operate"
MAX_DEADLINE_S = 7 * 86400.0


def progress_pb(p: Progress) -> operate_pb2.OpProgress:
    return operate_pb2.OpProgress(operation=p.operation, phase=p.phase, message=p.message,
                                  done=p.done, ok=p.ok, elapsed_s=round(p.elapsed_s, 3),
                                  counts=p.counts)


class OperateService(operate_pb2_grpc.OperateServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    async def _stream(self, ops: AsyncIterator[Progress],
                      context: Ctx) -> AsyncIterator[operate_pb2.OpProgress]:
        try:
            async for p in ops:
                yield progress_pb(p)
        except RequestError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))

    def _shard(self, shard: int) -> None:
        if shard not in self.ops.state.links:
            known = ", ".join(map(str, sorted(self.ops.state.links))) or "none"
            raise RequestError("NOT_FOUND", f"no shard {shard} on this host (shards: {known})")

    async def DrainShard(self, request: operate_pb2.ShardRequest,  # noqa: N802
                         context: Ctx) -> AsyncIterator[operate_pb2.OpProgress]:
        try:
            self._shard(request.shard)
        except RequestError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
        async for p in self._stream(self.ops.drain_shard(request.shard), context):
            yield p

    async def RestartShard(self, request: operate_pb2.ShardRequest,  # noqa: N802
                           context: Ctx) -> AsyncIterator[operate_pb2.OpProgress]:
        try:
            self._shard(request.shard)
        except RequestError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
        async for p in self._stream(self.ops.restart_shard(request.shard), context):
            yield p

    async def ScaleShards(self, request: operate_pb2.ScaleRequest,  # noqa: N802
                          context: Ctx) -> AsyncIterator[operate_pb2.OpProgress]:
        if not 1 <= request.count <= 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"a host runs 1 to 64 shards, not {request.count}")
        async for p in self._stream(self.ops.scale(request.count), context):
            yield p

    async def Rebalance(self, request: operate_pb2.RebalanceRequest,  # noqa: N802
                        context: Ctx) -> AsyncIterator[operate_pb2.OpProgress]:
        if request.max_rounds > 100:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_rounds is at most 100")
        async for p in self._stream(self.ops.rebalance(request.max_rounds), context):
            yield p

    async def _check_node(self, node_id: str, context: Ctx) -> None:
        if not is_node_id(node_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"node id {node_id!r} is not valid")

    async def DrainNode(self, request: operate_pb2.DrainNodeRequest,  # noqa: N802
                        context: Ctx) -> AsyncIterator[operate_pb2.OpProgress]:
        await self._check_node(request.node_id, context)
        if not 0 <= request.deadline_s <= MAX_DEADLINE_S:  # also refuses NaN
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"deadline_s must be between 0 and {MAX_DEADLINE_S:g}")
        async for p in self._stream(self.ops.drain_node(request.node_id, request.deadline_s),
                                    context):
            yield p

    async def UndrainNode(self, request: operate_pb2.NodeRequest,  # noqa: N802
                          context: Ctx) -> operate_pb2.OpProgress:
        await self._check_node(request.node_id, context)
        try:
            return progress_pb(self.ops.undrain_node(request.node_id))
        except RequestError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
            raise

    async def ShowNode(self, request: operate_pb2.NodeRequest,  # noqa: N802
                       context: Ctx) -> operate_pb2.NodeDetail:
        await self._check_node(request.node_id, context)
        views = {v.node_id: v for v in await self.ops.hub.nodes.list()}
        view = views.get(request.node_id)
        if view is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node {request.node_id}")
            raise AssertionError
        node = self.ops.state.nodes.get(request.node_id)
        return operate_pb2.NodeDetail(
            node=node_pb(view), running_tasks=sorted(node.running) if node else [],
            held=request.node_id in self.ops.state.held_nodes)

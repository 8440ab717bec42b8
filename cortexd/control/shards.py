"""The shard service: this host's shard processes and, clustered, the other hosts'
as they report them (``ListShards``)."""

from dataclasses import dataclass

from cortexd.control.state import HubState


@dataclass(frozen=True, slots=True)
class ShardView:
    shard: int
    pid: int
    alive: bool
    nodes: int
    restarts: int
    frames_in: int
    frames_out: int
    hub_id: str
    ring_in_used_bytes: int = 0
    ring_out_used_bytes: int = 0
    draining: bool = False


class ShardService:
    def __init__(self, state: HubState) -> None:
        self.state = state
        #: This host's drained shards (cortexd/control/operate.py): alive, taking no node.
        self.drained: set[int] = set()

    async def list(self) -> list[ShardView]:
        st = self.state
        me = st.coord.host_id
        out = []
        for index in sorted(set(st.shards) | set(st.links)):
            info = st.shards.get(index)
            link = st.links.get(index)
            out.append(ShardView(
                shard=index, pid=info.pid if info else 0, alive=bool(info and info.alive),
                nodes=sum(1 for n in st.nodes.values() if n.attached and n.shard == index),
                restarts=info.restarts if info else 0,
                frames_in=info.frames_in if info else 0, frames_out=info.frames_out if info else 0,
                ring_in_used_bytes=link.rx.used_bytes if link else 0,
                ring_out_used_bytes=link.tx.used_bytes if link else 0, hub_id=me,
                draining=index in self.drained))
        for r in await st.coord.shard_reports():  # other hosts' (clustered)
            if r.host != me:
                out.append(ShardView(shard=r.shard, pid=r.pid, alive=r.alive, nodes=r.nodes,
                                     restarts=r.restarts, frames_in=r.frames_in,
                                     frames_out=r.frames_out, hub_id=r.host))
        return out

"""The node service: the fleet as the Control API shows it (``ListNodes``).

Alone, the nodes this host knows. Clustered, the whole cluster: the store knows
every node, the directory (cortexd/coord) at which live host each is attached.
"""

from dataclasses import dataclass, field

from cortexd.control.state import HubState


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    attached: bool
    session_epoch: int
    capacity: int
    running: int
    agent_version: str
    shard: int
    last_seen_ms: int
    draining: bool
    hub_id: str
    labels: dict[str, str] = field(default_factory=dict)
    isolation: str = ""


class NodeService:
    def __init__(self, state: HubState) -> None:
        self.state = state

    async def list(self) -> list[NodeView]:
        """Every node, sorted by id."""
        st = self.state
        me = st.coord.host_id
        nodes = {n.node_id: NodeView(
            node_id=n.node_id, attached=n.attached, session_epoch=n.epoch, labels=n.labels,
            capacity=n.capacity, running=len(n.running), agent_version=n.agent_version,
            shard=n.shard, last_seen_ms=n.last_seen_ms, draining=n.draining,
            isolation=n.isolation, hub_id=me if n.attached else "")
            for n in st.nodes.values()}
        if st.coord.clustered:
            directory = await st.coord.directory(max_age_s=0)
            live = await st.coord.live_hosts()
            for row in await st.store.list_nodes():
                if (mine := nodes.get(row.node_id)) is not None and mine.attached:
                    continue
                entry = directory.get(row.node_id)
                here = entry is not None and entry.host in live and entry.host != me
                nodes[row.node_id] = NodeView(
                    node_id=row.node_id, attached=here, labels=row.labels,
                    session_epoch=entry.epoch if here and entry else row.session_epoch,
                    capacity=row.capacity, running=entry.running if here and entry else 0,
                    agent_version=row.agent_version, shard=entry.shard if entry else row.shard,
                    last_seen_ms=row.last_seen_ms, hub_id=entry.host if here and entry else "",
                    draining=bool(entry and entry.draining))
        return [nodes[k] for k in sorted(nodes)]

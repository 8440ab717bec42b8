"""The control process's hub: the layers built once, bottom up, and their loops.

The layers import one way only (each imports those listed before it, never after):

- ``state``      the in-memory view and the links out (send to a node or shard,
                 publish, kick the scheduler, end a task) — every layer shares it;
- ``offers``, ``placement``  queued tasks onto nodes here, or offered to other hosts;
- ``attempts``   the frames of a node's session about its task attempts;
- ``reconcile`` (pure), ``sessions``  attach, detach, the grace after it;
- ``janitor``, ``cluster``   other hosts: their messages, shard leases and fencing,
                 orphaned nodes and queued tasks;
- ``submits``    the submissions the shards took in: a node or queue room for each,
                 then what their inserts did (placement's ``admitted``);
- ``inbox``      the shards' rings, routed in order per node to sessions/attempts;
- ``tasks``, ``intake``, ``nodes``, ``shards``, then ``runs``, ``watching``  the
                 services the Control API calls (service.py is the gRPC servicer:
                 it validates and converts).

Inputs are ring messages from the shards and Control API calls; outputs are store
writes, HubFrame bytes sent to a node's shard, and events for watchers. Messages
of one node are handled in order; different nodes interleave only at store
awaits, and the conditional writes on (task, attempt, epoch) keep that safe.
"""

from cortexd.config import Settings
from cortexd.control.attempts import Attempts
from cortexd.control.cluster import Cluster
from cortexd.control.inbox import ShardInbox
from cortexd.control.intake import Intake
from cortexd.control.nodes import NodeService
from cortexd.control.offers import Offers
from cortexd.control.placement import Placement
from cortexd.control.sessions import NodeSessions
from cortexd.control.shards import ShardService
from cortexd.control.state import HubState
from cortexd.control.submits import ShardSubmits
from cortexd.control.tasks import TaskService
from cortexd.control.watching import WatchService
from cortexd.serializers.envelope import Encoder
from cortexd.store import Store


class Hub:
    def __init__(self, settings: Settings, store: Store, encoder: Encoder, hub_id: str) -> None:
        self.state = state = HubState(settings, store, encoder, hub_id)
        self.placement = Placement(state, Offers(state))
        self.attempts = Attempts(state)
        self.sessions = NodeSessions(state, self.placement)
        self.cluster = Cluster(state, self.sessions)
        self.submits = ShardSubmits(state, self.placement)
        self.inbox = ShardInbox(state, self.sessions, self.attempts, self.submits)
        self.tasks = TaskService(state, self.placement)
        self.intake = Intake(state, self.placement)
        self.nodes = NodeService(state)
        self.shards = ShardService(state)
        self.watch = WatchService(state, self.tasks, self.cluster)

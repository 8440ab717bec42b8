"""Placement across hosts (clustered): offer tasks no local node can take to a host
whose node can, by the directory's hint.

The receiving host re-reads the task and schedules it onto its own node with the
usual conditional write (cluster.py, ``offer``); if the offer is lost, the task is
still QUEUED in the store and a queue scan adopts it again. A task is offered on at
most ``MAX_OFFER_HOPS`` times in a row. Offering runs in the background, one round
at a time, so a slow or hung Redis never holds up placing tasks on local nodes.
"""

import asyncio

from cortexd.control.state import HubState
from cortexd.coord import Message
from cortexd.scheduler import Candidate, pick
from cortexd.store import TaskRow

MAX_OFFER_HOPS = 3
MAX_OFFERS_PER_PASS = 512
OFFER_RETRY_MIN_S = 0.1
OFFER_RETRY_MAX_S = 2.0


class Offers:
    def __init__(self, state: HubState) -> None:
        self.state = state
        self._offering: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_s = OFFER_RETRY_MIN_S

    def offer_soon(self, tasks: list[TaskRow]) -> None:
        if self._offering is None or self._offering.done():
            self._offering = asyncio.get_running_loop().create_task(
                self._offer(tasks[:MAX_OFFERS_PER_PASS]))

    async def _offer(self, tasks: list[TaskRow]) -> None:
        """One round; tasks nobody could take are tried again soon (a node may just
        have attached elsewhere), backing off to ``OFFER_RETRY_MAX_S`` while nothing
        can be offered."""
        offered = await self._round(tasks)
        self._retry_s = (OFFER_RETRY_MIN_S if offered
                         else min(self._retry_s * 2, OFFER_RETRY_MAX_S))
        waiting = any(t.task_id in self.state.queue for t in tasks)
        loop = asyncio.get_running_loop()
        if waiting and (self._retry is None or self._retry.cancelled()
                        or self._retry.when() <= loop.time()):
            self._retry = loop.call_later(self._retry_s, self.state.kick)

    async def _round(self, tasks: list[TaskRow]) -> int:
        st = self.state
        directory = await st.coord.directory(max_age_s=self._retry_s / 2)
        if not directory:
            return 0
        live = await st.coord.live_hosts()
        me = st.coord.host_id
        remote = {nid: (e, Candidate(nid, e.labels, max(e.capacity, 1), e.running, True,
                                     e.draining))
                  for nid, e in directory.items() if e.host != me and e.host in live}
        cands = [c for _, c in remote.values()]
        offers: list[tuple[str, Message]] = []
        for task in tasks if cands else ():
            hops = st.hops.get(task.task_id, 0)
            if hops >= MAX_OFFER_HOPS or task.task_id not in st.queue:
                continue
            if task.workspace:  # a workspace's attachments are this host's (workspaces/)
                continue
            cand = pick(cands, task.selector, task.node_pin, task.tool)
            if cand is None:
                continue
            cand.running += 1
            offers.append((remote[cand.node_id][0].host, ["offer", task.task_id, hops + 1]))
        if offers and await st.coord.send_many(offers):
            for _, msg in offers:
                st.queue.pop(msg[1], None)
                st.hops.pop(msg[1], None)
        return len(offers)

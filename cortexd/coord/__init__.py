"""Coordination between hub hosts: ``local`` (one host alone) or Redis.

``make_coordinator`` builds the one named by the ``coordination`` setting; key
names are in :mod:`cortexd.coord.keys`.
"""

from cortexd.coord.base import Coordinator, DirEntry, LocalCoordinator, Message, ShardReport


def make_coordinator(url: str, host_id: str, lease_ttl_ms: int,
                     control_address: str = "") -> Coordinator:
    if url == "local":
        return LocalCoordinator(host_id)
    from cortexd.coord.redis import RedisCoordinator

    return RedisCoordinator(url, host_id, lease_ttl_ms, control_address)


__all__ = ["Coordinator", "DirEntry", "LocalCoordinator", "Message", "ShardReport",
           "make_coordinator"]

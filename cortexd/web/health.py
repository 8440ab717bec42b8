"""Readiness, as a pure rule: the hub is ready when its store answers, every shard
is alive and it is not stopping. ``/healthz`` only says the control process's
loop answers (alive); ``/readyz`` says whether to send it work."""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Readiness:
    store_reachable: bool
    shards_alive: dict[int, bool] = field(default_factory=dict)
    stopping: bool = False
    store_error: str = ""

    @property
    def ready(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        found = []
        if self.stopping:
            found.append("stopping")
        if not self.store_reachable:
            found.append(f"store unreachable{': ' + self.store_error if self.store_error else ''}")
        dead = sorted(i for i, alive in self.shards_alive.items() if not alive)
        if dead:
            found.append("shard " + ", ".join(map(str, dead)) + " not alive")
        if not self.shards_alive:
            found.append("no shard")
        return found

    def to_dict(self) -> dict[str, object]:
        return {"ready": self.ready, "problems": self.problems(),
                "store_reachable": self.store_reachable, "stopping": self.stopping,
                "shards": {str(i): alive for i, alive in sorted(self.shards_alive.items())}}

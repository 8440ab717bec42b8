"""The node agent's Prometheus figures (``--metrics-listen HOST:PORT``).

A collector reads the agent's own counts when scraped (prometheus_client renders
them), served by prometheus_client's HTTP server on a thread of its own; nothing
is labelled by task. Off unless the flag is given.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cortex.tls import split_host_port

if TYPE_CHECKING:
    from nodeagent.agent import NodeAgent


class AgentCollector(Collector):
    def __init__(self, agent: "NodeAgent") -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent, host = self.agent, self.agent.host
        node = agent.config.node_id
        counts = host.counts

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["node"])
            family.add_metric([node], value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["node"])
            family.add_metric([node], value)
            return family

        yield counter("cortexnode_tasks_started", "Task attempts started", counts["started"])
        yield counter("cortexnode_tasks_finished", "Task attempts finished", counts["finished"])
        yield counter("cortexnode_tasks_rejected", "Envelopes refused", counts["rejected"])
        yield counter("cortexnode_output_bytes", "Output bytes spooled",
                      counts["output_bytes"])
        yield counter("cortexnode_sessions", "Hub sessions begun", agent.sessions)
        yield counter("cortexnode_retry_later", "RetryLater answers", agent.retry_laters)
        yield gauge("cortexnode_tasks_running", "Tasks running", host.table.running)
        yield gauge("cortexnode_capacity", "Tasks this node takes at once",
                    agent.config.capacity)
        yield gauge("cortexnode_unsent_bytes", "Spooled output not yet sent to the hub "
                    "(held back by the rate limit or the window)",
                    sum(max(0, e.output_end - e.sent) for e in host.table))


def serve(address: str, agent: "NodeAgent") -> int:
    """Start the HTTP server for the agent's figures; return the bound port."""
    host, port = split_host_port(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)

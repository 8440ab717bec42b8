"""Scrape a Prometheus endpoint and add up its samples (for the tests)."""

import json
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "cortex-hub.json"


def scrape(address: str, timeout_s: float = 10.0) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    """Every metric name a dashboard's queries use."""
    exprs = [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]
    return {m for e in exprs for m in re.findall(r"\b(cortex(?:node)?_[a-z0-9_]+)", e)}

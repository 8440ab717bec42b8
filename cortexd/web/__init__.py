"""The hub host's HTTP port (``metrics_listen``): ``/metrics``, ``/healthz``, ``/readyz``.

Served by the control process with aiohttp (``server.py``); what it reports is
read from the control process's state by ``cortexd/control/figures.py``; the
readiness rule is pure (``health.py``).
"""

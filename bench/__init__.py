"""Cortex benchmarks (DESIGN.md §9); not part of ``make test``.

``python -m bench.run_micro`` runs the micro-benchmarks (signing, rings) and
writes ``bench/results/micro.json``. See ``bench/README.md``.
"""

"""Runnable examples of Cortex; ``python -m examples.demo`` is the guided tour."""

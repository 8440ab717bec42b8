"""cortexd: the Cortex hub daemon (supervisor, control process, shard processes)."""

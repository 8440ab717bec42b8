"""Shard processes: each holds the node streams the kernel gave it on the shared port."""

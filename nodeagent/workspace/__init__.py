"""The node\x27s workspace copies (issue 12): mirror.py follows the hub, rounds.py syncs."""

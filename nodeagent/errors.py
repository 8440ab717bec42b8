"""Errors raised by nodeagent on purpose, all under :class:`cortex.errors.CortexError`."""

from cortex.errors import CortexError


class NodeAgentError(CortexError):
    """Base of the node agent's errors."""


class SpoolError(NodeAgentError):
    """A task spool on disk is unreadable, or could not be written."""


class SpawnError(NodeAgentError):
    """A task's process could not be started (fork, exec or chdir failed)."""

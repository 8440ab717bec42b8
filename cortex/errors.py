"""The root of every Cortex error hierarchy.

Each subsystem defines its own subclasses; third-party errors are wrapped at the
boundary with ``raise ... from e``.
"""


class CortexError(Exception):
    """Base class of every error Cortex raises on purpose."""


class ConfigError(CortexError):
    """The configuration is invalid; the message says which setting and why."""


class EnvelopeError(CortexError):
    """A task envelope failed verification; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

"""The control process's request error: what a Control call gets when it cannot be served."""

from cortex.errors import CortexError


class RequestError(CortexError):
    """A Control request that cannot be served; ``code`` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

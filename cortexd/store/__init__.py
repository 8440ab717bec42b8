"""Persistence behind one interface: SQLite (WAL) embedded by default."""

from cortexd.store.base import NodeRow, StaleWrite, Store, StoreError, TaskRow, TransitionRow


def open_store(url: str) -> Store:
    """Create the store named by ``url`` (``sqlite:///PATH``); call ``open()`` on it."""
    from cortexd.store.sqlite import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite:///"))


__all__ = ["NodeRow", "StaleWrite", "Store", "StoreError", "TaskRow", "TransitionRow",
           "open_store"]

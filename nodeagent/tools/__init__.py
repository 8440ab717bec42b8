"""Tools: the kinds of work a node can do, found through entry points (``cortex.tools``).

``base`` is the seam (a Tool makes one TaskRunner per task; one contract for all),
``registry`` loads and checks the installed tools, ``shell`` is the PTY shell, and
``asynctool`` the base for a tool whose task is a coroutine.
"""

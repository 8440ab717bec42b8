"""Code shared by the hub (cortexd), the node (nodeagent) and the CLI (cortexctl).

``cortex.v1`` is generated from ``proto/cortex/v1`` by ``make proto`` and is not committed.
"""

__version__ = "0.1.0"

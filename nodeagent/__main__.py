"""``python -m nodeagent``: the same as the ``nodeagent`` console script."""

from nodeagent.cli import main

main()

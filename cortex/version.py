"""The installed distribution's version, for every program's ``--version``."""

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("cortex")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "0+unknown"


def line(program: str) -> str:
    return f"{program} {version()}"

"""argparse as every Cortex program uses it: no abbreviated options, and integer flags
that say their range.

argparse by default takes any unique prefix of a long option (``--fol`` for
``--follow``), so a typo or a prefix meant for the command runs something else, and an
option added later silently changes what an old prefix means: :class:`Parser` turns
that off, and its subparsers inherit the class (``add_subparsers`` defaults
``parser_class`` to the parent's type). A flag that ends in a protobuf integer field is
checked here, so an out-of-range value is a usage line, not a ``ValueError`` traceback
from the message constructor (issue 13).
"""

import argparse
from collections.abc import Callable, Iterator
from typing import Any

UINT32_MAX = (1 << 32) - 1
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
#: The kernel refuses a larger pids.max (PID_MAX_LIMIT, include/linux/threads.h).
PIDS_MAX_LIMIT = 1 << 22


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never expands an abbreviated option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({lo} to {hi})")
        return value

    parse.__name__ = "integer"  # argparse names the type in its "invalid … value" line
    return parse


def float_range(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number in ``[lo, hi]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range ({lo:g} to {hi:g})")
        return value

    parse.__name__ = "number"
    return parse


UINT32 = int_range(0, UINT32_MAX)
OFFSET = int_range(0, INT64_MAX)  # a byte offset: the store keeps it as a signed 64-bit
SECONDS = float_range(0.0, 1e9)


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every parser below it (subcommands, their subcommands)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from walk(child)

"""Value parsers and the one-line-error argument parser shared by every command.

They live below the command line because the USB link's ``open_emulated``
(the seam ``python -m hostside --emulate`` goes through) parses emulator
options too; the CLI package imports them from here, never the other way.
"""

from __future__ import annotations

import argparse
import re

_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "µs": 1_000, "ns": 1}


class UsageError(Exception):
    """A bad command-line value: reported as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_duration(text: str) -> int:
    """'2s', '500ms', '1.5s', '250us', '100ns' -> nanoseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|ms|us|µs|ns)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 2s, 500ms, 250us)")
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return int(value)


def parse_int(text: str) -> int:
    """A positive integer in any base Python accepts ('0x08008000', '4096', '64_000')."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def parse_level(text: str) -> bool:
    """A pin level: high/1/h or low/0/l."""
    t = text.lower()
    if t in ("high", "1", "h"):
        return True
    if t in ("low", "0", "l"):
        return False
    raise argparse.ArgumentTypeError(f"pin level must be high or low, not {text!r}")

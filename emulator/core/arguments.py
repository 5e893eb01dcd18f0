"""Value parsers and the one-line-error argument parser shared by every command.

They live below the command line because the USB link's ``open_emulated``
(the seam ``python -m hostside --emulate`` goes through) parses emulator
options too; the CLI package imports them from here, never the other way.
"""

from __future__ import annotations

import argparse
import math
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


def parse_pin_setting(text: str) -> tuple[str, int, bool]:
    """'PA0=high', 'pb2=low' -> ('A', 0, True): an external level driven on a GPIO pin.

    Ports A..E exist on every STM32F103 package the emulator models (RM0008 §9);
    pins are 0..15.
    """
    m = re.fullmatch(r"\s*P([A-E])(\d{1,2})\s*=\s*(\w+)\s*", text, re.IGNORECASE)
    if not m or int(m.group(2)) > 15:
        raise argparse.ArgumentTypeError(f"not a pin setting: {text!r} (use e.g. PA0=high, PB2=low)")
    return m.group(1).upper(), int(m.group(2)), parse_level(m.group(3))


def parse_bkp_setting(text: str) -> tuple[int, int]:
    """'DR1=0x4F42' -> (1, 0x4F42): a backup data register and the 16-bit value it holds (RM0008 §6.4.1)."""
    m = re.fullmatch(r"\s*(?:BKP_)?DR(\d{1,2})\s*=\s*(\S+)\s*", text, re.IGNORECASE)
    if not m or not 1 <= int(m.group(1)) <= 42:
        raise argparse.ArgumentTypeError(f"not a backup-register setting: {text!r} (use e.g. DR1=0x4F42; "
                                         "DR1..DR10 on medium-density parts, DR1..DR42 on high-density)")
    try:
        value = int(m.group(2).replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {m.group(2)!r} in {text!r}") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"backup registers hold 16 bits: {text!r}")
    return int(m.group(1)), value


def parse_scale(text: str) -> float:
    """A finite factor of 0 or more ('0', '0.5', '1')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of 0 or more: {text!r}")
    return value


def parse_port(text: str) -> int:
    """A TCP port: 0 (any free port) to 65535."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"TCP ports are 0..65535 (0 = any free port): {text!r}")
    return value

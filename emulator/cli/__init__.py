"""``python -m emulator``: run a real STM32F103 image on the emulated board.

Exit codes: 0 clean end (budget spent, or the CPU idles with nothing left to
happen), 1 the firmware faulted, locked up or hangs for good, 2 bad input.

One module per command; each gives ``add_parser(subparsers)`` and sets the
parser's ``func``.  This package is the top layer: nothing below imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import usb.core

from emulator.cli import check, conformance, flash, run, serve, sweep_merge, usb_info
from emulator.cli.common import EXIT_FAILED, EXIT_USAGE
from emulator.core.arguments import OneLineParser, UsageError
from emulator.core.machine import EmulatorError
from emulator.core.port import StrictModeError
from emulator.usb.host import UsbError
from hostside.dfu import DfuException

COMMANDS = (run, flash, check, conformance, serve, usb_info, sweep_merge)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m emulator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not getattr(args, "verbose", False):
        logging.getLogger("emulator.unmodelled").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except EmulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DfuException, UsbError, usb.core.USBError) as e:
        # A transport failure outside a flow that reports it (the flows catch their own): one line.
        print(f"error: USB/DFU: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except StrictModeError as e:
        print(f"error: --strict: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What several commands share: exit codes and the options that describe a board."""

from __future__ import annotations

import argparse

from emulator.core.arguments import parse_int, parse_level
from emulator.core.session import BoardOptions

EXIT_CLEAN, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_board_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="bootloader or application image (.elf, .hex or .bin)")
    p.add_argument("--base", type=parse_int, help="load address of a .bin image (default 0x08000000)")
    p.add_argument("--app", action="append", default=[], metavar="APP[@ADDR]",
                   help="an application image to put in flash beside the main image")
    p.add_argument("--chip", default=None, help="STM32F103RC (default) or STM32F103C8")
    p.add_argument("--boot0", type=parse_level, default=False, help="BOOT0 pin (high is not emulated)")
    p.add_argument("--boot1", type=parse_level, default=False, help="BOOT1 pin PB2: high or low (default low)")
    p.add_argument("--strict", action="store_true", help="fail on the first unmodelled register access")
    p.add_argument("--flash", dest="flash_file", metavar="FILE",
                   help="board state file: flash, option bytes and backup registers, loaded and saved")
    p.add_argument("--flash-timing", choices=("typical", "worst"), default="typical",
                   help="datasheet flash program/erase times to use")


def board_options(args: argparse.Namespace, **extra: object) -> BoardOptions:
    """The board that :func:`add_board_arguments`' options describe."""
    return BoardOptions(image=args.image, base=args.base, apps=args.app, chip=args.chip, boot0=args.boot0,
                        boot1=args.boot1, strict=args.strict, flash_file=args.flash_file,
                        flash_timing=args.flash_timing, **extra)  # type: ignore[arg-type]

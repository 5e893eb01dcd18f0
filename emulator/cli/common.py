"""What several commands share: exit codes and the options that describe a board."""

from __future__ import annotations

import argparse

from emulator.core.arguments import (
    parse_bkp_setting,
    parse_duration,
    parse_int,
    parse_level,
    parse_pin_setting,
)
from emulator.core.session import BoardOptions
from hostside.selection import DfuSelector, parse_alt, parse_device_ids

EXIT_CLEAN, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_board_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="bootloader or application image (.elf, .hex or .bin)")
    p.add_argument("--base", type=parse_int, help="load address of a .bin image (default 0x08000000)")
    p.add_argument("--app", action="append", default=[], metavar="APP[@ADDR]",
                   help="an application image to put in flash beside the main image")
    add_chip_argument(p)
    p.add_argument("--boot0", type=parse_level, default=False, help="BOOT0 pin (high is not emulated)")
    p.add_argument("--boot1", type=parse_level, default=False, help="BOOT1 pin PB2: high or low (default low)")
    add_trigger_arguments(p)
    p.add_argument("--strict", action="store_true", help="fail on the first unmodelled register access")
    p.add_argument("--flash", dest="flash_file", metavar="FILE",
                   help="board state file: flash, option bytes and backup registers, loaded and saved")
    add_flash_timing_argument(p)


CHIP_HELP = "the chip: STM32F103RC (default: 256 KiB flash, 48 KiB SRAM) or STM32F103C8 (64 KiB, 20 KiB)"
FLASH_TIMING_HELP = ("datasheet flash busy times: typical (default: 52.5 us per half-word, 20 ms per page "
                     "erase) or worst (70 us, 40 ms)")


def add_chip_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chip", default=None, metavar="NAME", help=CHIP_HELP)


def add_flash_timing_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flash-timing", choices=("typical", "worst"), default="typical", help=FLASH_TIMING_HELP)


def add_flow_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the flash-and-boot flow shared by flash, check (and the sweep): where the
    application goes, the boot triggers before the download and after it, how DFU mode ends."""
    p.add_argument("--address", type=parse_int, default=None,
                   help="where the application lives: the load address of a .bin (DfuSe: default the "
                        "layout's first writable segment; plain DFU: checked against where the bootloader "
                        "writes it, found from the flash journal when not given)")
    p.add_argument("--boot1", type=parse_level, default=False,
                   help="BOOT1 (PB2) at power-on, before the download (default low)")
    p.add_argument("--boot1-after", type=parse_level, default=True,
                   help="BOOT1 when the bootloader resets the chip after the download (default high)")
    p.add_argument("--leave", choices=("auto", "reset", "none"), default="auto",
                   help="how DFU mode ends: auto (DfuSe leave request; plain DFU manifestation, then a USB "
                        "reset if the device waits for one), reset (a USB reset, as dfu-util -R), none "
                        "(nothing: a bootloader with a DFU timeout jumps by itself within --max-time)")


def flow_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments :func:`emulator.bootflow.scenario.flash_and_boot` takes from
    :func:`add_flow_arguments`, :func:`add_selection_arguments` and :func:`add_trigger_arguments`."""
    return {"selector": selector_from(args), "boot1": args.boot1, "boot1_after": args.boot1_after,
            "pins": args.pin, "bkp": args.bkp, "pins_after": args.pin_after, "bkp_after": args.bkp_after,
            "leave": args.leave, "nrst": args.nrst}


def add_trigger_arguments(p: argparse.ArgumentParser, *, after: bool = False, nrst: bool = True) -> None:
    """Boot triggers: pins held and backup registers set before power-on (and, with ``after``,
    before the reboot that follows a download); with ``nrst``, reset-button presses."""
    p.add_argument("--pin", action="append", default=[], type=parse_pin_setting, metavar="PXn=high|low",
                   help="drive a GPIO pin from outside before power-on, e.g. PA0=high (a held button); "
                        "repeatable; --boot1 X is PB2=X")
    p.add_argument("--bkp", action="append", default=[], type=parse_bkp_setting, metavar="DRn=VALUE",
                   help="a backup data register's value at power-on, e.g. DR1=0x4F42 (what an application "
                        "writes before resetting into its bootloader); repeatable")
    if nrst:
        p.add_argument("--nrst", action="append", default=[], type=parse_duration, metavar="TIME",
                       help="press the reset button (pull NRST low) at this emulated time after power-on, "
                            "e.g. 50ms: a pin reset, RCC_CSR.PINRSTF alone; repeatable (a double tap)")
    if not after:
        return
    p.add_argument("--pin-after", action="append", default=[], type=parse_pin_setting, metavar="PXn=high|low",
                   help="drive a pin before the reboot that follows the download (e.g. release a button)")
    p.add_argument("--bkp-after", action="append", default=[], type=parse_bkp_setting, metavar="DRn=VALUE",
                   help="set a backup register before the reboot that follows the download")


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no report: only what failed (the exit code says the rest)")


def board_options(args: argparse.Namespace, **extra: object) -> BoardOptions:
    """The board that :func:`add_board_arguments`' options describe."""
    return BoardOptions(image=args.image, base=args.base, apps=args.app, chip=args.chip, boot0=args.boot0,
                        boot1=args.boot1, strict=args.strict, flash_file=args.flash_file,
                        flash_timing=args.flash_timing, pins=args.pin, bkp=args.bkp, nrst=args.nrst,
                        **extra)  # type: ignore[arg-type]


def _device_ids(text: str):  # noqa: ANN202 - hostside.transport.UsbFilter
    try:
        return parse_device_ids(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _interface_number(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an interface number: {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"interface numbers are 0..255: {text!r}")
    return value


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """-d/-a/--intf/--serial: which DFU device, interface and alternate setting (hostside.selection)."""
    p.add_argument("-d", "--device", type=_device_ids, default=None, metavar="VID:PID[,VID:PID]",
                   help="the DFU device's vendor:product ids in hex (default: the first DFU device, "
                        "found by its interface class 0xFE/0x01)")
    p.add_argument("-a", "--alt", type=parse_alt, default=None, metavar="ALT|NAME",
                   help="alternate setting by number or by its exact name (default: the first)")
    p.add_argument("--intf", type=_interface_number, default=None, metavar="N", help="DFU interface number")
    p.add_argument("--serial", default=None, help="the device's serial-number string")


def selector_from(args: argparse.Namespace) -> DfuSelector | None:
    """The selection the options name, or None when none was given."""
    if args.device is None and args.alt is None and args.intf is None and args.serial is None:
        return None
    return DfuSelector(ids=args.device or DfuSelector().ids, serial=args.serial, interface=args.intf,
                       alt=args.alt)

"""The emulated board as a USB device for host-side tools (``python -m hostside --emulate``).

Boots the bootloader with BOOT1 low (DFU mode), plugs it into the virtual
host, enumerates it, and hands out a pyusb device whose waits advance
emulated time instead of sleeping.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import usb.core

from emulator.core.arguments import OneLineParser, UsageError, parse_duration, parse_level
from emulator.core.machine import EmulatorError
from emulator.core.session import Board, BoardOptions, build_board
from emulator.usb.link import UsbLink, connect

DFU_VID, DFU_PID = 0x0483, 0xDF11


class DeviceNotAttached(EmulatorError):
    """The firmware never connected to USB: a property of the firmware, not bad input."""


@dataclass
class EmulatedTarget:
    board: Board
    link: UsbLink
    device: usb.core.Device

    def wait_ms(self, ms: float) -> None:
        self.link.host.wait_ms(ms)

    def now_ns(self) -> int:
        return self.board.machine.now_ns

    def close(self) -> None:
        self.link.close()
        self.board.save()


def _options_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="--emulate options", add_help=False)
    p.add_argument("--chip")
    p.add_argument("--boot1", type=parse_level, default=False)
    p.add_argument("--app", action="append", default=[])
    p.add_argument("--flash", dest="flash_file")
    p.add_argument("--flash-timing", choices=("typical", "worst"), default="typical")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--usb-pcap")
    p.add_argument("--attach-timeout", type=parse_duration, default=parse_duration("2s"))
    return p


def open_emulated(boot_image: str, options: Sequence[str] = ()) -> EmulatedTarget:
    """Boot ``boot_image`` and return its enumerated DFU device."""
    try:
        args = _options_parser().parse_args(list(options))
    except UsageError as e:
        raise EmulatorError(f"bad emulator option: {e}") from None
    board = build_board(BoardOptions(image=boot_image, apps=args.app, chip=args.chip, boot1=args.boot1,
                                     strict=args.strict, flash_file=args.flash_file,
                                     flash_timing=args.flash_timing))
    return attach(board, pcap_path=args.usb_pcap, attach_timeout_ns=args.attach_timeout)


def attach(board: Board, *, pcap_path: str | None = None, attach_timeout_ns: int = 2_000_000_000,
           timed_bus: bool = True) -> EmulatedTarget:
    """Plug an already built board into a virtual host and enumerate it."""
    link = connect(board.machine, pcap_path=pcap_path, timed=timed_bus)
    host = link.host
    deadline = board.machine.now_ns + attach_timeout_ns
    while not host.wire.attached() and board.machine.now_ns < deadline:
        host.advance(1_000_000)
    if not host.wire.attached():
        stop = board.machine.last_stop
        why = f" (the firmware {stop.kind}: {stop.detail})" if stop else ""
        raise DeviceNotAttached(f"{board.layout.images[0].path.name} never attached to USB within "
                            f"{attach_timeout_ns / 1e9:g} s of emulated time{why}")
    device = usb.core.find(idVendor=DFU_VID, idProduct=DFU_PID, backend=link.backend)
    if device is None:
        raise EmulatorError("the emulated device enumerated but is not a DFU device (0483:DF11)")
    return EmulatedTarget(board, link, device)

"""``python -m emulator usb-info``: boot in DFU mode, enumerate, print the device like ``lsusb -v``."""

from __future__ import annotations

import argparse
import sys

from emulator.cli.common import (
    EXIT_CLEAN,
    add_board_arguments,
    add_selection_arguments,
    board_options,
    selector_from,
)
from emulator.core.arguments import parse_duration
from emulator.core.machine import EmulatorError
from emulator.core.session import build_board
from emulator.usb.host import UsbError
from emulator.usb.target import attach
from hostside.bos import read_bos, render_bos
from hostside.descriptors import render_lsusb


def add_parser(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("usb-info", help="boot with BOOT1 low, enumerate the USB device, print it like lsusb -v")
    add_board_arguments(info)
    add_selection_arguments(info)
    info.set_defaults(boot1=False)
    info.add_argument("--usb-pcap", metavar="FILE", help="write the enumeration traffic as a usbmon pcap")
    info.add_argument("--attach-timeout", type=parse_duration, default=parse_duration("2s"),
                      help="emulated time the firmware has to connect to USB (default 2s)")
    info.set_defaults(func=cmd_usb_info)


def cmd_usb_info(args: argparse.Namespace) -> int:
    board = build_board(board_options(args))
    try:
        target = attach(board, pcap_path=args.usb_pcap, attach_timeout_ns=args.attach_timeout)
    except UsbError as e:
        raise EmulatorError(f"USB enumeration failed: {e}") from None
    m = board.machine
    enumerated_ns, transactions = m.now_ns, target.link.host.transactions
    selector = selector_from(args)
    if selector is not None:
        alt = target.select(selector)
        print(f"selected interface {alt.interface} alt {alt.alt} \"{alt.name}\"", file=sys.stderr)
    host = target.link.host
    info = host.device
    assert info is not None
    bos_lines: list[str] = []
    if info.device.bcdUSB >= 0x0201:
        # A host reads the BOS only from devices that declare USB 2.01 or later (USB 2.0 LPM ECN);
        # then the WebUSB landing page and MS OS 2.0 descriptor sets its capabilities announce.
        report = read_bos(lambda bm, req, value, index, length: host.control_transfer(
            info.address, bm, req, value, index, length, 5000))
        bos_lines = render_bos(report)
    print(render_lsusb(info.device, info.configurations, info.strings, bus=host.bus_number,
                       address=info.address, string_errors=info.string_errors, extra_lines=bos_lines))
    target.close()
    print(f"enumerated after {enumerated_ns / 1e6:.3f} ms of emulated time, {transactions} "
          f"USB transactions", file=sys.stderr)
    return EXIT_CLEAN

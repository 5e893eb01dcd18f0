"""The emulated board as a USB device for host-side tools (``python -m hostside --emulate``).

Boots the bootloader (BOOT1 low unless told otherwise), plugs it into the
virtual host, enumerates it, and hands out a pyusb device whose waits advance
emulated time instead of sleeping.  Which device counts as a DFU target, and
which interface and alternate setting to use, is :mod:`hostside.selection`'s
rule (interface class 0xFE/0x01, whatever the VID:PID), the same as for real
boards through pyusb.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import usb.core

from emulator.core.arguments import (
    OneLineParser,
    UsageError,
    parse_bkp_setting,
    parse_duration,
    parse_level,
    parse_pin_setting,
)
from emulator.core.machine import EmulatorError
from emulator.core.outputs import OutputPathError, check_output_path
from emulator.core.session import BadImage, Board, BoardOptions, build_board
from emulator.usb.host import UsbError
from emulator.usb.link import UsbLink, connect
from hostside.selection import DfuSelector, SelectionError, select_alt, select_transport
from hostside.transport import DfuAltSetting, PyUsbTransport


class DeviceNotAttached(EmulatorError):
    """The firmware never connected to USB: a property of the firmware, not bad input."""


class NotTheDeviceAsked(EmulatorError):
    """The emulated device enumerated, but it is not the DFU device ``-d/-a/--intf/--serial`` name."""


@dataclass
class EmulatedTarget:
    board: Board
    link: UsbLink
    device: usb.core.Device
    transport: PyUsbTransport | None = None

    def __post_init__(self) -> None:
        if self.transport is None:
            self.transport = PyUsbTransport(self.device, wait_ms=self.wait_ms, now_ns=self.now_ns)

    def wait_ms(self, ms: float) -> None:
        self.link.host.wait_ms(ms)

    def now_ns(self) -> int:
        return self.board.machine.now_ns

    def attached(self) -> bool:
        return self.link.host.wire.attached()

    def select(self, selector: DfuSelector | None = None) -> DfuAltSetting:
        """The DFU alternate setting ``selector`` asks for on this device (the first DFU one by
        default); :class:`NotTheDeviceAsked` in one line when there is none."""
        selector = selector or DfuSelector()
        assert self.transport is not None
        try:
            select_transport([self.transport], selector)
            return select_alt(self.transport.device_info(), selector)
        except SelectionError as e:
            raise NotTheDeviceAsked(f"the emulated device: {e}") from None
        except usb.core.USBError as e:
            raise EmulatorError(f"reading the emulated device's descriptors failed: {e}") from None

    def bus_reset(self) -> None:
        """A USB reset from the host (DFU 1.1 §5.1 run-time → DFU mode, §7 manifestation)."""
        if self.attached():
            self.link.host.bus_reset()

    def reattach(self, *, detach_wait_ns: int = 0, attach_timeout_ns: int = 2_000_000_000) -> None:
        """After the device left the bus (or was reset): let it run up to ``detach_wait_ns`` for a
        detach of its own, wait for it to attach, enumerate it again and take the new pyusb device."""
        host, m = self.link.host, self.board.machine
        deadline = m.now_ns + detach_wait_ns
        while host.wire.attached() and m.now_ns < deadline:
            host.advance(min(1_000_000, deadline - m.now_ns))
        _wait_attached(self.board, host, attach_timeout_ns)
        host.device = None
        self.device = _find_device(self.link)
        self.transport = PyUsbTransport(self.device, wait_ms=self.wait_ms, now_ns=self.now_ns)

    def close(self) -> None:
        self.link.close()
        self.board.save()


def _options_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="--emulate options", add_help=False)
    p.add_argument("--chip")
    p.add_argument("--boot1", type=parse_level, default=False)
    p.add_argument("--pin", action="append", default=[], type=parse_pin_setting)
    p.add_argument("--bkp", action="append", default=[], type=parse_bkp_setting)
    p.add_argument("--nrst", action="append", default=[], type=parse_duration)
    p.add_argument("--app", action="append", default=[])
    p.add_argument("--flash", dest="flash_file")
    p.add_argument("--flash-timing", choices=("typical", "worst"), default="typical")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--usb-pcap")
    p.add_argument("--attach-timeout", type=parse_duration, default=parse_duration("2s"))
    return p


def open_emulated(boot_image: str, options: Sequence[str] = ()) -> EmulatedTarget:
    """Boot ``boot_image`` and return its enumerated USB device (the host tool picks the DFU
    interface: ``python -m hostside --emulate`` applies its own -d/-S/--intf/-a).

    Failures are :class:`EmulatorError` in one line, with an ``exit_code`` attribute from
    sysexits.h that ``python -m hostside --emulate`` exits with (:data:`EXIT_CODES`)."""
    try:
        return _open_emulated(boot_image, options)
    except EmulatorError as e:
        e.exit_code = next(code for kind, code in EXIT_CODES if isinstance(e, kind))  # type: ignore[attr-defined]
        raise


class BadEmulatorOption(EmulatorError):
    """An option after ``--emulate BOOT`` the emulator does not take, or a bad value."""


class MissingImage(EmulatorError):
    """The bootloader image named after ``--emulate`` does not exist."""


# The exit status each failure of open_emulated carries (os.EX_*: sysexits.h, as dfu-util uses them).
EXIT_CODES: tuple[tuple[type[EmulatorError], int], ...] = (
    (MissingImage, 66),  # EX_NOINPUT
    (OutputPathError, 73),  # EX_CANTCREAT: --flash or --usb-pcap cannot be written
    (BadImage, 65),  # EX_DATAERR: corrupt, foreign, oversized image or state file
    (DeviceNotAttached, 74),  # EX_IOERR: no device
    (EmulatorError, 64),  # EX_USAGE: a bad option value, a chip or pin that does not exist
)


def _open_emulated(boot_image: str, options: Sequence[str]) -> EmulatedTarget:
    try:
        args = _options_parser().parse_args(list(options))
    except UsageError as e:
        raise BadEmulatorOption(f"bad emulator option: {e}") from None
    if not Path(boot_image).exists():
        raise MissingImage(f"{boot_image}: no such file")
    if args.usb_pcap is not None:
        check_output_path(args.usb_pcap, "--usb-pcap")
    board = build_board(BoardOptions(image=boot_image, apps=args.app, chip=args.chip, boot1=args.boot1,
                                     strict=args.strict, flash_file=args.flash_file,
                                     flash_timing=args.flash_timing, pins=args.pin, bkp=args.bkp, nrst=args.nrst))
    return attach(board, pcap_path=args.usb_pcap, attach_timeout_ns=args.attach_timeout)


def _wait_attached(board: Board, host, timeout_ns: int) -> None:  # noqa: ANN001 - VirtualHost
    deadline = board.machine.now_ns + timeout_ns
    while not host.wire.attached() and board.machine.now_ns < deadline:
        host.advance(1_000_000)
    if not host.wire.attached():
        stop = board.machine.last_stop
        why = f" (the firmware {stop.kind}: {stop.detail})" if stop else ""
        raise DeviceNotAttached(f"{board.layout.images[0].path.name} never attached to USB within "
                                f"{timeout_ns / 1e9:g} s of emulated time{why}")


def _find_device(link: UsbLink) -> usb.core.Device:
    """Enumerate (through pyusb's find, as a host program would) and return the one device."""
    try:
        device = usb.core.find(backend=link.backend)
    except usb.core.USBError as e:
        raise EmulatorError(f"USB enumeration failed: {e}") from None
    except UsbError as e:
        raise EmulatorError(f"USB enumeration failed: {e}") from None
    if device is None:
        raise EmulatorError("the emulated board attached to USB but no device enumerated")
    return device


def attach(board: Board, *, pcap_path: str | None = None, attach_timeout_ns: int = 2_000_000_000,
           timed_bus: bool = True, selector: DfuSelector | None = None) -> EmulatedTarget:
    """Plug an already built board into a virtual host and enumerate it.

    Any device is accepted; with ``selector`` it must have the DFU interface and
    alternate setting asked for (:meth:`EmulatedTarget.select`)."""
    link = connect(board.machine, pcap_path=pcap_path, timed=timed_bus)
    _wait_attached(board, link.host, attach_timeout_ns)
    target = EmulatedTarget(board, link, _find_device(link))
    if selector is not None:
        target.select(selector)
    return target

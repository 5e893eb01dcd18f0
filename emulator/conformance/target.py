"""The bootloader under test, the options it needs, and what enumerating it once tells.

A :class:`ConformanceTarget` travels from the command line to the test modules as JSON
(a pytest option, so ``-n`` workers receive it too).  :func:`profile` boots and
enumerates the device once per process: protocol, functional descriptor, layout,
where the application goes.  The suite is parametrized from it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator.bootflow.harness import SimBoard
from emulator.bootflow.scenario import Triggers, first_writable, read_application
from emulator.bootflow.testapp import build_test_application
from emulator.core.chips import Chip, get_chip
from emulator.core.flashcheck import landing_address
from emulator.core.loader import ImageError
from emulator.core.machine import EmulatorError
from emulator.core.session import BoardOptions, load_images
from emulator.usb.host import UsbDeviceInfo
from hostside.dfu import DfuState
from hostside.dfuse_layout import LayoutError, MemoryLayout, parse_layout
from hostside.selection import DfuSelector
from hostside.transport import DFU_PROTOCOL_RUNTIME, DfuAltSetting, DfuFunctionalDescriptor, UsbFilter

DEFAULT_MAX_TIME_NS = 2_000_000_000


@dataclass
class ConformanceTarget:
    """The bootloader image, an application (None: the built-in test application) and the
    options of ``flash``/``check`` that say how to drive it."""

    boot: str
    app: str | None = None
    chip: str | None = None
    address: int | None = None
    device_ids: list[tuple[int | None, int | None]] = field(default_factory=list)
    alt: int | str | None = None
    interface: int | None = None
    serial: str | None = None
    boot1: bool = False
    boot1_after: bool = True
    pins: list[tuple[str, int, bool]] = field(default_factory=list)
    bkp: list[tuple[int, int]] = field(default_factory=list)
    pins_after: list[tuple[str, int, bool]] = field(default_factory=list)
    bkp_after: list[tuple[int, int]] = field(default_factory=list)
    leave: str = "auto"
    max_time_ns: int = DEFAULT_MAX_TIME_NS
    sweep_points: str = "default"

    # -- travelling as JSON ----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConformanceTarget:
        data = json.loads(text)
        for key in ("device_ids", "pins", "bkp", "pins_after", "bkp_after"):
            data[key] = [tuple(item) for item in data.get(key, [])]
        return cls(**data)

    # -- what the flows take -----------------------------------------------------------------
    @property
    def the_chip(self) -> Chip:
        return get_chip(self.chip)

    @property
    def selector(self) -> DfuSelector | None:
        if not self.device_ids and self.alt is None and self.interface is None and self.serial is None:
            return None
        return DfuSelector(ids=UsbFilter(list(self.device_ids)), serial=self.serial, interface=self.interface,
                           alt=self.alt)

    @property
    def after(self) -> Triggers:
        """The triggers before the reboot that follows a download (BOOT1 high by default)."""
        return Triggers(self.boot1_after, self.pins_after, self.bkp_after)

    def flow_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`emulator.bootflow.checks.check` and the power-cut sweep."""
        return {"chip": self.chip, "app_address": self.address, "selector": self.selector, "boot1": self.boot1,
                "boot1_after": self.boot1_after, "pins": self.pins, "bkp": self.bkp,
                "pins_after": self.pins_after, "bkp_after": self.bkp_after}

    def board(self, *, after: bool = False) -> SimBoard:
        """A fresh board with the bootloader alone: the DFU-mode triggers, or with ``after`` the ones of
        the reboot after a download."""
        if after:
            return SimBoard.build(self.boot, chip=self.chip, boot1=self.boot1_after, pins=self.pins_after,
                                  bkp=self.bkp_after)
        return SimBoard.build(self.boot, chip=self.chip, boot1=self.boot1, pins=self.pins, bkp=self.bkp)

    def validate(self) -> None:
        """Bad input as one-line ``EmulatorError``: the chip, the images, the application file."""
        try:
            chip = get_chip(self.chip)
        except ValueError as e:
            raise EmulatorError(str(e)) from None
        if not Path(self.boot).is_file():
            raise EmulatorError(f"{self.boot}: no such file")
        try:
            load_images(BoardOptions(image=self.boot, chip=self.chip), chip)
        except ImageError as e:
            raise EmulatorError(str(e)) from None
        if self.app is not None:
            read_application(self.app, self.address)
        elif self.address is not None:
            try:
                build_test_application(self.address, chip)
            except ValueError as e:
                raise EmulatorError(f"--address 0x{self.address:08X}: {e}") from None
        if self.leave not in ("auto", "reset", "none"):
            raise EmulatorError(f"unknown leave mode {self.leave!r}")


@dataclass
class DeviceProfile:
    """What one enumeration of the bootloader in DFU mode shows."""

    usb: UsbDeviceInfo
    alt: DfuAltSetting
    functional: DfuFunctionalDescriptor
    protocol: str  # "dfuse" or "dfu"
    boot_end: int  # the end of the bootloader image's bytes in flash
    layout: MemoryLayout | None = None
    layout_error: str | None = None
    app_start: int | None = None  # where the application goes (None: unknown)
    app_start_source: str = ""

    @property
    def is_dfuse(self) -> bool:
        return self.protocol == "dfuse"


@functools.lru_cache(maxsize=4)
def profile(target_json: str) -> DeviceProfile:
    """Boot with the DFU-mode triggers, enumerate, read the DFU interface (cached per process)."""
    target = ConformanceTarget.from_json(target_json)
    board = target.board()
    try:
        dfu = board.attach_dfu(target.selector, start=False)
        usb = dfu.target.link.host.device
        assert usb is not None
        alt = dfu.alt
        if alt.protocol == DFU_PROTOCOL_RUNTIME:
            raise EmulatorError("the device enumerates in run-time mode (DFU interface protocol 1): give the "
                                "boot triggers that start the bootloader in DFU mode (--boot1, --pin, --bkp)")
        functional = dfu.functional
        boot_end = max(i.end for i in board.board.layout.images)
        found = DeviceProfile(usb, alt, functional, "dfuse" if dfu.is_dfuse else "dfu", boot_end)
        if found.is_dfuse:
            try:
                found.layout = parse_layout(alt.name)
            except LayoutError as e:
                found.layout_error = str(e)
    finally:
        board.close()
    if target.address is not None:
        found.app_start, found.app_start_source = target.address, "--address"
    elif found.layout is not None and first_writable(found.layout) is not None:
        found.app_start, found.app_start_source = first_writable(found.layout), "the layout's first writable segment"
    elif not found.is_dfuse:
        found.app_start = _plain_landing(target)
        found.app_start_source = "where the bootloader wrote a first block (flash journal)"
    return found


def _plain_landing(target: ConformanceTarget) -> int | None:
    """Plain DFU names no address: send block 0 on a throwaway board and see where it lands."""
    board = target.board()
    try:
        dfu = board.attach_dfu(target.selector)
        m = board.machine
        t0 = m.now_ns
        dfu.client.dnload(0, bytes(range(64)))
        for _ in range(16):
            st = dfu.status()
            if st.is_error or st.state != DfuState.dfuDNBUSY:
                break
        return landing_address(m, t0, m.now_ns)
    finally:
        board.close()

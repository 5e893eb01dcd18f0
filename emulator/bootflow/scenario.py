"""The end-to-end boot flow users gate CI on: flash an application through the
bootloader over emulated USB DFU, leave, reset into the application.

``python -m emulator flash boot.elf app.bin`` and :func:`flash_and_boot` for
users' own pytest suites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import usb.core
from unicorn import UC_HOOK_CODE

from emulator.core import progress
from emulator.core.chips import get_chip
from emulator.core.flashcheck import compare_flash, landing_address
from emulator.core.loader import Image, ImageError, load_image, place_images
from emulator.core.machine import EmulatorError, StopReason
from emulator.core.session import (
    BOOT1_PIN,
    BadImage,
    BkpSetting,
    Board,
    BoardOptions,
    PinSetting,
    apply_backup_registers,
    apply_pins,
    build_board,
)
from emulator.core.symbols import SymbolTable
from emulator.usb.host import UsbError
from emulator.usb.target import EmulatedTarget, attach
from firmware_models.nvic import exception_name
from hostside.dfu import DfuClient, DfuException, DfuVerifyError, ProgressEvent
from hostside.dfuse_layout import LayoutError, MemoryLayout, RegionError, parse_layout
from hostside.files import FileFormatError, FirmwareImage, LoadedFile, load_file
from hostside.selection import DfuSelector
from hostside.transport import DFU_PROTOCOL_RUNTIME, DfuAltSetting

DEFAULT_APP_ADDRESS = 0x0800_8000  # where a .bin goes when nothing else says (the ST fixtures' application)
LEAVE_MODES = ("auto", "reset", "none")


@dataclass
class Jump:
    time_ns: int
    address: int
    msp: int
    state: dict[str, Any] = field(default_factory=dict)  # what the bootloader left running


@dataclass
class FirstInterrupt:
    time_ns: int
    exception: str
    handler: int
    vtor: int


@dataclass
class FlashOutcome:
    board: Board
    app_address: int
    app_size: int
    erase_order: str
    download_ok: bool = False
    verify: dict[str, Any] | None = None
    erase_busy_ms: list[float] = field(default_factory=list)
    download_emulated_ns: int = 0
    error: str | None = None
    jump: Jump | None = None
    stop: StopReason | None = None
    app_uart: str = ""
    first_interrupt: FirstInterrupt | None = None
    layout_string: str | None = None  # the DfuSe alt-setting name the device presents
    image_bytes: bytes = b""  # the first segment of the application file
    protocol: str | None = None  # "dfuse" (bcdDFUVersion 0x011A) or "dfu" (plain DFU 1.1)
    alt: DfuAltSetting | None = None  # the DFU interface/alt setting used
    functional: dict[str, Any] | None = None  # the DFU functional descriptor, decoded
    verify_method: str | None = None  # "upload", or "flash" when the device cannot upload
    flash_check: dict[str, Any] | None = None  # the flash model against the image sent
    landed_at: int | None = None  # plain DFU: where the bootloader wrote the download (flash journal)
    left: str | None = None  # how DFU mode ended: leave-request, vanished, reset, detached, none
    notes: list[str] = field(default_factory=list)  # conventions followed, said once each
    uart_after_leave: str = ""  # everything USART1 printed from the leave on (bootloader lines too)
    expected_image: FirmwareImage | None = None  # what the flash must hold after the download
    flash_at_jump: bytes | None = None  # the whole flash at the jump, for the comparison
    jump_uart: int = 0  # USART1 bytes printed before the jump
    download_started_ns: int | None = None  # plain DFU: the journal window that finds the landing place
    leave_uart: int = 0
    watching: bool = field(default=False, repr=False)

    @property
    def ok(self) -> bool:
        verified = self.verify is None or self.verify["ok"]
        in_flash = self.flash_check is None or self.flash_check["ok"]
        return (self.download_ok and verified and in_flash and self.jump is not None and self.stop is not None
                and self.stop.clean)


def load_application(app_file: str, app_address: int | None = None) -> LoadedFile:
    """Read an application file (.bin at ``app_address``, default 0x0800_8000; .hex, ELF, .dfu).

    Raises EmulatorError with one line for a missing, unreadable, malformed or empty file.
    """
    loaded = read_application(app_file, app_address if app_address is not None else DEFAULT_APP_ADDRESS)
    if loaded.image is None or not loaded.image.segments:
        raise EmulatorError(f"{app_file}: nothing to download")
    return loaded


def read_application(app_file: str, app_address: int | None) -> LoadedFile:
    """Like :func:`load_application`, but a .bin without ``app_address`` keeps no address (its
    place is decided by the bootloader: the DfuSe layout, or where a plain DFU bootloader writes)."""
    try:
        loaded = load_file(app_file, app_address)
    except FileNotFoundError as e:
        raise EmulatorError(str(e)) from None
    except FileFormatError as e:
        raise EmulatorError(f"{app_file}: {e}") from None
    if (loaded.image is not None and not loaded.image.segments) or (loaded.image is None and not loaded.raw):
        raise EmulatorError(f"{app_file}: nothing to download")
    return loaded


def check_application(app_file: str, loaded: LoadedFile, *, boot_image: str, chip: str | None,
                      app_address: int | None) -> None:
    """Refuse, in one line (:class:`BadImage`, exit 2), an application no host would send: it passes
    the checks every image passes (:mod:`emulator.core.loader`: an ELF for ARM, little-endian,
    32-bit; its data inside the chip's flash, no larger than it), and an ``--address`` given must be
    word-aligned, inside flash and clear of the bootloader image.

    An application file whose own addresses lie over the bootloader is not refused here: that is
    the application's defect, which ``check`` names (``application-linked-over-bootloader``)."""
    try:
        the_chip = get_chip(chip)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    where = f"--address 0x{app_address:08X}" if app_address is not None else ""
    if app_address is not None and not the_chip.in_flash(app_address, 1):
        raise EmulatorError(f"{where} is outside {the_chip.name} flash "
                            f"0x{the_chip.flash_base:08X}-0x{the_chip.flash_end - 1:08X}")
    if app_address is not None and app_address % 4:
        raise EmulatorError(f"{where} is not word-aligned: an application starts with its vector table")
    try:
        if loaded.kind == "elf":
            load_image(app_file)  # machine, class, byte order, corrupt program headers
        if loaded.image is not None:
            place_images([Image(Path(app_file), loaded.kind,
                                [(s.address, bytes(s.data)) for s in loaded.image.segments])], the_chip)
        elif len(loaded.raw) > the_chip.flash_size:
            raise ImageError(f"{app_file} holds {len(loaded.raw)} bytes, more than the "
                             f"{the_chip.flash_size_kib} KiB ({the_chip.flash_size} bytes) of {the_chip.name} flash")
    except ImageError as e:
        raise BadImage(str(e)) from None
    if app_address is None:
        return
    try:
        boot = load_image(boot_image)
    except ImageError:
        return  # build_board reports it
    if boot.start <= app_address < boot.end:
        raise EmulatorError(f"{where} is inside the bootloader image (0x{boot.start:08X}-0x{boot.end - 1:08X}): "
                            "the application would overwrite it")


class HostRefusal(EmulatorError):
    """What a DfuSe host refuses before sending anything (an address outside the device's writable
    segments, an image past their end) for a place the user chose: bad input, exit 2."""


def first_writable(layout: MemoryLayout) -> int | None:
    """The DfuSe application address: the first writable segment (UM0424 §4.3.2 letters e/f/g)."""
    return next((seg.start for seg in layout.segments if seg.writable), None)


@dataclass(frozen=True)
class Triggers:
    """What the user does to the board before a boot: BOOT1, other pins, backup registers."""

    boot1: bool | None = None
    pins: Sequence[PinSetting] = ()
    bkp: Sequence[BkpSetting] = ()

    def apply(self, board: Board) -> None:
        m = board.machine
        if self.boot1 is not None:
            m.drive_pin(*BOOT1_PIN, self.boot1)
        apply_pins(m, self.pins)
        apply_backup_registers(m, self.bkp)


def flash_and_boot(boot_image: str, app_file: str, *, app_address: int | None = None,
                   erase_order: str = "all-first", verify: bool = True, boot1_after: bool = True,
                   chip: str | None = None, flash_file: str | None = None, flash_timing: str = "typical",
                   run_ns: int = 2_000_000_000, selector: DfuSelector | None = None, boot1: bool = False,
                   pins: Sequence[PinSetting] = (), bkp: Sequence[BkpSetting] = (),
                   pins_after: Sequence[PinSetting] = (), bkp_after: Sequence[BkpSetting] = (),
                   leave: str = "auto", nrst: Sequence[int] = (),
                   on_outcome: Callable[[FlashOutcome], None] | None = None) -> FlashOutcome:
    """Boot with the given triggers (BOOT1 low by default), download ``app_file`` through the
    firmware's own DFU (DfuSe or plain DFU 1.1, each by its conventions), leave, then run what boots.

    ``leave``: ``auto`` (DfuSe: the leave request; plain DFU: manifestation, then a USB reset if the
    device waits for one), ``reset`` (a USB reset after the download, as ``dfu-util -R``), ``none``
    (nothing after the download: a bootloader that jumps after a timeout does so within ``run_ns``).
    ``nrst``: emulated times after power-on at which the reset button is pressed.
    ``on_outcome`` sees the outcome (and its board) before anything runs, e.g. to attach a debugger.
    """
    if leave not in LEAVE_MODES:
        raise EmulatorError(f"unknown leave mode {leave!r}: choose {', '.join(LEAVE_MODES)}")
    loaded = read_application(app_file, app_address)
    check_application(app_file, loaded, boot_image=boot_image, chip=chip, app_address=app_address)
    board = build_board(BoardOptions(image=boot_image, chip=chip, boot1=boot1, flash_file=flash_file,
                                     flash_timing=flash_timing, pins=pins, bkp=bkp, nrst=nrst))
    m = board.machine
    if loaded.kind == "elf":
        tables = [t for t in (m.symbols, SymbolTable.from_elf(app_file, origin="app")) if t is not None]
        m.symbols = SymbolTable.merge(tables)
    first = loaded.image.segments[0] if loaded.image is not None else None
    payload = bytes(first.data) if first is not None else loaded.raw
    outcome = FlashOutcome(board, first.address if first is not None else 0,
                           loaded.image.size if loaded.image is not None else len(payload), erase_order,
                           image_bytes=payload)
    if on_outcome is not None:
        on_outcome(outcome)
    target = attach(board)
    t0 = m.now_ns
    after = Triggers(boot1_after, pins_after, bkp_after)
    shown = DfuProgress(f" ({erase_order})" if erase_order != "all-first" else "")
    try:
        client = open_dfu(target, selector, outcome)
        client.progress = shown
        if client.is_dfuse:
            _dfuse_session(client, target, outcome, loaded, erase_order, verify, after, leave, t0)
        else:
            _plain_session(client, target, outcome, loaded, verify, after, leave, t0,
                           address_given=app_address is not None)
    except (DfuException, LayoutError, RegionError, UsbError, usb.core.USBError) as e:
        outcome.error = f"{type(e).__name__}: {e}"
        outcome.download_emulated_ns = outcome.download_emulated_ns or m.now_ns - t0
        target.close()
        if outcome.download_ok:  # the data went out: what the flash holds still counts
            record_results(outcome, len(m.uart_output.get(1, b"")))
        return outcome
    finally:
        shown.close()
    target.close()
    _watch_jump(outcome, payload)  # already watching since the leave, unless the session ended early
    uart_before = len(m.uart_output.get(1, b""))
    with progress.task(f"running what booted ({run_ns / 1e9:g} s emulated)"):
        outcome.stop = m.run(max_ns=run_ns)
    record_results(outcome, uart_before)
    board.save()
    return outcome


class DfuProgress:
    """The DFU client's progress events as tasks: the erases, the download, the verify upload."""

    UNITS = {"erase": "pages", "download": "bytes", "upload": "bytes", "verify": "bytes"}

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.tasks: dict[str, progress.Task] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        unit = self.UNITS.get(ev.phase)
        if unit is None:
            return
        task = self.tasks.get(ev.phase)
        if task is None:
            task = self.tasks[ev.phase] = progress.task(f"{ev.phase}{self.suffix}", ev.total or None, unit)
        task.update(completed=ev.done, total=ev.total or None)
        if ev.total and ev.done >= ev.total:
            self.tasks.pop(ev.phase).close()

    def close(self) -> None:
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()


def run_session(target: EmulatedTarget, outcome: FlashOutcome, loaded: LoadedFile, *, selector: DfuSelector | None,
                erase_order: str, verify: bool, after: Triggers, leave: str, address_given: bool,
                watch: bool = True) -> None:
    """One DFU session on an attached target: select (detaching a run-time device), download by the
    device's protocol, verify, apply the after-download triggers and leave.  DFU errors propagate."""
    t0 = outcome.board.machine.now_ns
    client = open_dfu(target, selector, outcome)
    if client.is_dfuse:
        _dfuse_session(client, target, outcome, loaded, erase_order, verify, after, leave, t0, watch=watch)
    else:
        _plain_session(client, target, outcome, loaded, verify, after, leave, t0, address_given=address_given,
                       watch=watch)


def open_dfu(target: EmulatedTarget, selector: DfuSelector | None, outcome: FlashOutcome) -> DfuClient:
    """The DFU client on the alt setting asked for, after DFU_DETACH when the device is in run-time
    mode (DFU 1.1 §5.1: appIDLE → DETACH → appDETACH → USB reset or the device's own detach-attach →
    DFU mode, enumerated again)."""
    selector = selector or DfuSelector()
    alt = target.select(_ignoring_alt(selector) if _runtime_only(target, selector) else selector)
    if alt.protocol == DFU_PROTOCOL_RUNTIME:
        runtime = DfuClient(target.transport, alt)
        functional = runtime.functional
        runtime.detach(functional.detach_timeout_ms)  # wValue = wDetachTimeOut (§5.1)
        if functional.will_detach:
            # bitWillDetach: the device detaches and re-attaches by itself; the host must not reset it.
            target.reattach(detach_wait_ns=functional.detach_timeout_ms * 1_000_000)
            outcome.notes.append("run-time mode: DFU_DETACH, the device re-attached itself in DFU mode "
                                 "(bitWillDetach = 1, DFU 1.1 §5.1)")
        else:
            target.reattach()  # enumeration starts with the USB reset that ends appDETACH
            outcome.notes.append("run-time mode: DFU_DETACH, then a USB reset within wDetachTimeOut "
                                 f"({functional.detach_timeout_ms} ms) brought up DFU mode (DFU 1.1 §5.1)")
        alt = target.select(DfuSelector(ids=selector.ids, serial=selector.serial, alt=selector.alt))
        if alt.protocol == DFU_PROTOCOL_RUNTIME:
            raise EmulatorError("the device is still in run-time mode after DFU_DETACH and a USB reset")
    client = DfuClient(target.transport, alt)
    outcome.alt = alt
    f = client.functional
    outcome.functional = {"can_download": f.can_download, "can_upload": f.can_upload,
                          "manifestation_tolerant": f.manifestation_tolerant, "will_detach": f.will_detach,
                          "detach_timeout_ms": f.detach_timeout_ms, "transfer_size": f.transfer_size,
                          "dfu_version": f"0x{f.dfu_version:04X}"}
    outcome.protocol = "dfuse" if client.is_dfuse else "dfu"
    return client


def _runtime_only(target: EmulatedTarget, selector: DfuSelector) -> bool:
    assert target.transport is not None
    alts = DfuSelector(ids=selector.ids, serial=selector.serial, interface=selector.interface).alt_settings(
        target.transport.device_info())
    return bool(alts) and all(a.protocol == DFU_PROTOCOL_RUNTIME for a in alts)


def _ignoring_alt(selector: DfuSelector) -> DfuSelector:
    # -a names a DFU-mode alt setting; a run-time interface has its own single one.
    return DfuSelector(ids=selector.ids, serial=selector.serial, interface=selector.interface)


def _dfuse_session(client: DfuClient, target: EmulatedTarget, outcome: FlashOutcome, loaded: LoadedFile,
                   erase_order: str, verify: bool, after: Triggers, leave: str, t0: int, *,
                   watch: bool = True) -> None:
    m = outcome.board.machine
    client.start()
    outcome.layout_string = client.alt_setting.name
    layout = parse_layout(client.alt_setting.name)
    image = loaded.image
    if image is None:  # a .bin: the layout says where the application goes
        address = first_writable(layout)
        if address is None:
            raise RegionError("write", f"the layout {client.alt_setting.name!r} has no writable segment",
                              layout.regions[0].address if layout.regions else 0)
        image = FirmwareImage.from_segments([(address, loaded.raw)])
        outcome.app_address = address
        outcome.notes.append(f"the .bin goes to 0x{address:08X}, the layout's first writable segment")
    outcome.expected_image = image
    if loaded.kind in ("bin", "dfu-suffix"):
        # The place came from --address or the layout, not from the file: a layout that refuses it is
        # bad input, refused before anything is sent (a file's own addresses are its defect: a finding).
        try:
            client.check_layout_fits(layout, image)
        except RegionError as e:
            raise HostRefusal(f"{e}; nothing was sent") from None
    report = client.download_dfuse(image, layout, erase_order=erase_order)
    outcome.erase_busy_ms = [t.elapsed_ns / 1e6 for t in report.erases]
    outcome.download_ok = True
    if verify:
        _verify_by_upload(client, outcome, image)
    outcome.download_emulated_ns = m.now_ns - t0
    # The user moves the jumper (or lets go of the button) before the bootloader resets the chip.
    after.apply(outcome.board)
    if watch:
        _watch_jump(outcome, outcome.image_bytes)
    outcome.leave_uart = len(m.uart_output.get(1, b""))
    if leave == "auto":
        client.leave(image.start)
        outcome.left = "leave-request"
    elif leave == "reset":
        target.bus_reset()
        outcome.left = "reset"
    else:
        outcome.left = "none"


def _plain_session(client: DfuClient, target: EmulatedTarget, outcome: FlashOutcome, loaded: LoadedFile,
                   verify: bool, after: Triggers, leave: str, t0: int, *, address_given: bool,
                   watch: bool = True) -> None:
    """Plain DFU 1.1 (§6.1, §7): blocks 0, 1, 2… of wTransferSize go where the bootloader puts them;
    a zero-length DNLOAD starts manifestation; the functional descriptor says what follows."""
    m = outcome.board.machine
    image = loaded.image
    payload = image.to_bin() if image is not None else loaded.raw
    known = image is not None and (address_given or loaded.kind in ("elf", "hex", "dfuse"))
    outcome.app_size = len(payload)
    client.start()
    report = client.download_plain(payload, manifest=False)
    outcome.download_ok = True
    outcome.download_started_ns = t0
    if known:
        assert image is not None
        outcome.app_address = image.start
        outcome.expected_image = FirmwareImage.from_segments([(image.start, payload)])
    # else the place is found from the flash journal once the bootloader is done (record_results)
    f = client.functional
    can_verify_by_upload = f.can_upload and f.manifestation_tolerant
    if verify and not can_verify_by_upload:
        outcome.verify_method = "flash"
        outcome.notes.append("verified from the flash contents: the device " + (
            "cannot upload (bitCanUpload = 0)" if not f.can_upload else
            "is not manifestation tolerant, so it cannot upload after the download (DFU 1.1 §7)"))
    after.apply(outcome.board)
    if watch:
        _watch_jump(outcome, payload)
    outcome.leave_uart = len(m.uart_output.get(1, b""))
    result = client.manifest(report.chunks)
    outcome.download_emulated_ns = m.now_ns - t0
    if result.vanished or not target.attached():
        outcome.left = "vanished"
    elif f.manifestation_tolerant:
        client.idle_after_manifest()
        if verify:
            _verify_by_upload(client, outcome, FirmwareImage.from_segments([(0, payload)]), plain=True)
        if leave != "none":
            target.bus_reset()  # back to the application: dfu-util -R (DFU 1.1 §7)
            outcome.left = "reset"
        else:
            outcome.left = "none"
    else:
        # dfuMANIFEST-WAIT-RESET (DFU 1.1 appendix A, state 8): a bitWillDetach device leaves the bus itself,
        # otherwise the host ends it with a USB reset.
        if f.will_detach:
            _wait_detached(target, f.detach_timeout_ms)
        if not target.attached():
            outcome.left = "detached"
        elif leave != "none":
            target.bus_reset()
            outcome.left = "reset"
            outcome.notes.append("the device waited in dfuMANIFEST-WAIT-RESET: the host reset it (DFU 1.1 §7)")
        else:
            outcome.left = "none"


def _wait_detached(target: EmulatedTarget, timeout_ms: int) -> None:
    host, m = target.link.host, target.board.machine
    deadline = m.now_ns + timeout_ms * 1_000_000
    while target.attached() and m.now_ns < deadline:
        host.advance(min(1_000_000, deadline - m.now_ns))


def _verify_by_upload(client: DfuClient, outcome: FlashOutcome, image: FirmwareImage, *,
                      plain: bool = False) -> None:
    f = client.functional
    if not f.can_upload:
        outcome.verify_method = "flash"
        outcome.notes.append("verified from the flash contents: the device cannot upload (bitCanUpload = 0)")
        return
    outcome.verify_method = "upload"
    try:
        result = client.verify(image)
        outcome.verify = {"ok": True, "compared": result.compared}
    except DfuVerifyError as e:
        first = e.first_address + (outcome.app_address if plain else 0)
        outcome.verify = {"ok": False, "compared": e.compared, "first_difference": first,
                          "differing_bytes": e.differing}


def record_results(outcome: FlashOutcome, uart_before: int) -> None:
    """After the run: what the application printed, and the flash model against what was sent."""
    m = outcome.board.machine
    uart = bytes(m.uart_output.get(1, b""))
    start = outcome.jump_uart if outcome.jump is not None else uart_before
    outcome.app_uart = uart[start:].decode("latin-1")
    outcome.uart_after_leave = uart[outcome.leave_uart:].decode("latin-1") if outcome.left else ""
    if not outcome.download_ok:
        return
    flash = outcome.flash_at_jump if outcome.flash_at_jump is not None else bytes(m.flash_storage)
    started = outcome.download_started_ns
    if started is not None:  # plain DFU: where did the bootloader put it?
        until = outcome.jump.time_ns if outcome.jump is not None else m.now_ns
        outcome.landed_at = landing_address(m, started, until)
        if outcome.expected_image is None:
            if outcome.landed_at is None:
                outcome.flash_check = {"ok": False, "compared": 0, "differing_bytes": outcome.app_size,
                                       "first_difference": None, "differences": [],
                                       "problem": "the bootloader wrote nothing to flash during the download"}
                _flash_verify(outcome)
                return
            outcome.app_address = outcome.landed_at
            outcome.expected_image = FirmwareImage.from_segments([(outcome.landed_at, outcome.image_bytes)])
            outcome.notes.append(f"the download landed at 0x{outcome.landed_at:08X} (where the bootloader "
                                 "wrote it, from the flash journal; --address checks a fixed place)")
    assert outcome.expected_image is not None
    outcome.flash_check = compare_flash(flash, m.chip.flash_base,
                                       [(g.address, g.data) for g in outcome.expected_image.segments])
    if outcome.landed_at is not None:
        outcome.flash_check["landed_at"] = outcome.landed_at
    _flash_verify(outcome)


def _flash_verify(outcome: FlashOutcome) -> None:
    if outcome.verify_method == "flash" and outcome.flash_check is not None:
        c = outcome.flash_check
        outcome.verify = {"ok": c["ok"], "compared": c["compared"]}
        if not c["ok"]:
            outcome.verify.update(first_difference=c["first_difference"], differing_bytes=c["differing_bytes"])


def _watch_jump(outcome: FlashOutcome, first_bytes: bytes) -> None:
    """Record the first time the CPU reaches the application's reset handler (once per outcome),
    with the flash as it was at that instant."""
    if len(first_bytes) < 8 or outcome.watching:
        return
    outcome.watching = True
    m = outcome.board.machine
    reset_handler = int.from_bytes(first_bytes[4:8], "little") & ~1

    def hook(uc, address, size, _ud):  # noqa: ANN001 - Unicorn callback
        if outcome.jump is None:
            outcome.jump = Jump(m.now_ns, address, m.reg("msp"), _state_at_jump(outcome.board))
            outcome.jump_uart = len(m.uart_output.get(1, b""))
            outcome.flash_at_jump = bytes(m.flash_storage)
            m.port.event("jump", address=address, msp=outcome.jump.msp)

    def taken(exc: int, handler: int) -> None:
        if outcome.jump is not None and outcome.first_interrupt is None:
            outcome.first_interrupt = FirstInterrupt(m.now_ns, exception_name(exc), handler & ~1, m.nvic.vtor)
            m.port.event("first_interrupt_after_jump", exception=exception_name(exc), handler=handler,
                         vtor=m.nvic.vtor)

    m.uc.hook_add(UC_HOOK_CODE, hook, begin=reset_handler, end=reset_handler)
    m.uc.ctl_remove_cache(reset_handler, reset_handler + 4)
    m.exc.on_taken.append(taken)


def _state_at_jump(board: Board) -> dict[str, Any]:
    """What the bootloader left behind for the application (docs/SEED_BOOTLOADER.md defect 4)."""
    m = board.machine
    ctl = m.nvic
    irqs = range(16, ctl.count)
    return {
        "systick_enabled": bool(m.systick["CTRL"] & 1),
        "systick_interrupt": bool(m.systick["CTRL"] & 2),
        "nvic_enabled": [e - 16 for e in irqs if ctl.enabled[e]],
        "nvic_pending": [exception_name(e) for e in range(1, ctl.count) if ctl.pending[e]],
        "primask": bool(m.reg("primask") & 1),
        "pll_on": bool(m.rcc["CR"] >> 24 & 1),
        "sysclk_hz": m.port.clocks.sysclk,
        "vtor": ctl.vtor,
        "usb_powered": not m.usb["CNTR"] >> 1 & 1,
    }


def outcome_summary(outcome: FlashOutcome) -> dict[str, Any]:
    m = outcome.board.machine
    return {
        "app_address": outcome.app_address,
        "app_size": outcome.app_size,
        "erase_order": outcome.erase_order,
        "download_ok": outcome.download_ok,
        "verify": outcome.verify,
        "erase_busy_ms": outcome.erase_busy_ms,
        "download_emulated_ms": outcome.download_emulated_ns / 1e6,
        "error": outcome.error,
        "jump": None if outcome.jump is None else {
            "time_ns": outcome.jump.time_ns, "address": outcome.jump.address, "msp": outcome.jump.msp,
            "symbol": m.symbol(outcome.jump.address), "state": outcome.jump.state},
        "first_interrupt_after_jump": None if outcome.first_interrupt is None else {
            "time_ns": outcome.first_interrupt.time_ns, "exception": outcome.first_interrupt.exception,
            "handler": outcome.first_interrupt.handler, "handler_symbol": m.symbol(outcome.first_interrupt.handler),
            "vtor": outcome.first_interrupt.vtor},
        "stop": None if outcome.stop is None else {"reason": outcome.stop.kind, "detail": outcome.stop.detail},
        "app_uart": outcome.app_uart,
        "ok": outcome.ok,
        "protocol": outcome.protocol,
        "dfu_interface": None if outcome.alt is None else {
            "interface": outcome.alt.interface, "alt": outcome.alt.alt, "name": outcome.alt.name},
        "functional": outcome.functional,
        "verify_method": outcome.verify_method,
        "flash_check": outcome.flash_check,
        "landed_at": outcome.landed_at,
        "left": outcome.left,
        "notes": outcome.notes,
        "uart_after_leave": outcome.uart_after_leave,
    }

"""The end-to-end boot flow users gate CI on: flash an application through the
bootloader over emulated USB DFU, leave, reset into the application.

``python -m emulator flash boot.elf app.bin`` and :func:`flash_and_boot` for
users' own pytest suites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unicorn import UC_HOOK_CODE

from emulator.core.machine import EmulatorError, StopReason
from emulator.core.session import BOOT1_PIN, Board, BoardOptions, build_board
from emulator.core.symbols import SymbolTable
from emulator.usb.target import attach
from firmware_models.nvic import exception_name
from hostside.dfu import DfuClient, DfuException, DfuVerifyError
from hostside.dfuse_layout import LayoutError, RegionError, parse_layout
from hostside.files import FileFormatError, LoadedFile, load_file
from hostside.transport import PyUsbTransport

DEFAULT_APP_ADDRESS = 0x0800_8000


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

    @property
    def ok(self) -> bool:
        verified = self.verify is None or self.verify["ok"]
        return (self.download_ok and verified and self.jump is not None and self.stop is not None
                and self.stop.clean)


def load_application(app_file: str, app_address: int | None = None) -> LoadedFile:
    """Read an application file (.bin at ``app_address``, default 0x0800_8000; .hex, ELF, .dfu).

    Raises EmulatorError with one line for a missing, unreadable, malformed or empty file.
    """
    try:
        loaded = load_file(app_file, app_address if app_address is not None else DEFAULT_APP_ADDRESS)
    except FileNotFoundError as e:
        raise EmulatorError(str(e)) from None
    except FileFormatError as e:
        raise EmulatorError(f"{app_file}: {e}") from None
    if loaded.image is None or not loaded.image.segments:
        raise EmulatorError(f"{app_file}: nothing to download")
    return loaded


def flash_and_boot(boot_image: str, app_file: str, *, app_address: int | None = None,
                   erase_order: str = "all-first", verify: bool = True, boot1_after: bool = True,
                   chip: str | None = None, flash_file: str | None = None, flash_timing: str = "typical",
                   run_ns: int = 2_000_000_000) -> FlashOutcome:
    """Boot with BOOT1 low, download ``app_file`` through the firmware's own DFU,
    leave (the bootloader resets the chip), then run what boots."""
    loaded = load_application(app_file, app_address)
    image = loaded.image
    assert image is not None
    board = build_board(BoardOptions(image=boot_image, chip=chip, boot1=False, flash_file=flash_file,
                                     flash_timing=flash_timing))
    m = board.machine
    if loaded.kind == "elf":
        tables = [t for t in (m.symbols, SymbolTable.from_elf(app_file, origin="app")) if t is not None]
        m.symbols = SymbolTable.merge(tables)
    start = image.segments[0].address
    outcome = FlashOutcome(board, start, image.size, erase_order, image_bytes=bytes(image.segments[0].data))
    target = attach(board)
    transport = PyUsbTransport(target.device, wait_ms=target.wait_ms, now_ns=target.now_ns)
    t0 = m.now_ns
    try:
        client = DfuClient(transport, 0)
        client.start()
        outcome.layout_string = client.alt_setting.name
        layout = parse_layout(client.alt_setting.name)
        report = client.download_dfuse(image, layout, erase_order=erase_order)
        outcome.erase_busy_ms = [t.elapsed_ns / 1e6 for t in report.erases]
        outcome.download_ok = True
        if verify:
            try:
                result = client.verify(image)
                outcome.verify = {"ok": True, "compared": result.compared}
            except DfuVerifyError as e:
                outcome.verify = {"ok": False, "compared": e.compared, "first_difference": e.first_address,
                                  "differing_bytes": e.differing}
        outcome.download_emulated_ns = m.now_ns - t0
        # The user moves the BOOT1 jumper before the bootloader resets the chip.
        m.drive_pin(*BOOT1_PIN, boot1_after)
        client.leave(start)
    except (DfuException, LayoutError, RegionError) as e:
        outcome.error = f"{type(e).__name__}: {e}"
        outcome.download_emulated_ns = m.now_ns - t0
        target.close()
        return outcome
    target.close()
    _watch_jump(outcome, image.segments[0].data)
    uart_before = len(m.uart_output.get(1, b""))
    outcome.stop = m.run(max_ns=run_ns)
    outcome.app_uart = bytes(m.uart_output.get(1, b""))[uart_before:].decode("latin-1")
    board.save()
    return outcome


def _watch_jump(outcome: FlashOutcome, first_bytes: bytes) -> None:
    """Record the first time the CPU reaches the application's reset handler."""
    if len(first_bytes) < 8:
        return
    m = outcome.board.machine
    reset_handler = int.from_bytes(first_bytes[4:8], "little") & ~1

    def hook(uc, address, size, _ud):  # noqa: ANN001 - Unicorn callback
        if outcome.jump is None:
            outcome.jump = Jump(m.now_ns, address, m.reg("msp"), _state_at_jump(outcome.board))
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
    }

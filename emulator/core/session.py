"""Build a ready-to-run machine from what a user names: images, chip, pins, state file.

Shared by ``python -m emulator run``, the USB tools and the Python API that
users' own tests call, so all of them boot a board the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.core.chips import Chip, get_chip
from emulator.core.flash_state import BoardNvState, FlashStateError, load_state, save_state
from emulator.core.loader import FlashLayout, Image, ImageError, load_app_spec, load_image, place_images
from emulator.core.machine import EmulatorError, Machine
from emulator.core.outputs import OutputPathError, check_replaceable
from firmware_models.flash import TIMINGS

BOOT1_PIN = ("B", 2)  # BOOT1 is PB2 on every STM32F103 (RM0008 §3.4)

PinSetting = tuple[str, int, bool]  # ("A", 0, True): PA0 driven high
BkpSetting = tuple[int, int]  # (1, 0x4F42): BKP_DR1 holds 0x4F42


class BadImage(EmulatorError):
    """An image or state file that is corrupt, foreign, empty or does not fit the chip (one line)."""


@dataclass
class BoardOptions:
    image: str
    base: int | None = None
    apps: Sequence[str] = ()
    chip: str | None = None
    boot0: bool = False
    boot1: bool | None = False
    strict: bool = False
    flash_file: str | None = None
    flash_timing: str = "typical"
    pins: Sequence[PinSetting] = ()  # driven before power-on, after BOOT1 (so PB2 here wins)
    bkp: Sequence[BkpSetting] = ()  # backup registers as a battery kept them, over the state file's
    nrst: Sequence[int] = ()  # emulated times after power-on at which the reset button is pressed
    uart_sinks: dict[int, Callable[[bytes], None]] = field(default_factory=dict)
    on_built: Callable[[Board], None] | None = None  # sees the powered board before it runs (a debugger)


@dataclass
class Board:
    machine: Machine
    layout: FlashLayout
    options: BoardOptions
    started_from_image_table: int | None = None  # vector table address used instead of a reset

    def save(self) -> None:
        """Write flash, option bytes and backup registers back to ``--flash FILE``."""
        if self.options.flash_file is None:
            return
        m = self.machine
        state = BoardNvState(m.chip.name, bytes(m.flash_storage), m.flash.read_option_bytes(),
                             m.bkp.snapshot())
        try:
            save_state(self.options.flash_file, state)
        except OSError as e:  # checked before the run; this is a directory removed during it
            raise OutputPathError(f"--flash {self.options.flash_file}: cannot save the board state "
                                  f"({e.strerror})") from None


def load_images(options: BoardOptions, chip: Chip) -> FlashLayout:
    images: list[Image] = [load_image(options.image, options.base, label="bootloader" if options.apps else "")]
    images += [load_app_spec(spec, label="app" if len(options.apps) == 1 else "") for spec in options.apps]
    return place_images(images, chip)


def build_board(options: BoardOptions) -> Board:
    """Load images, apply the state file, power on.  Raises EmulatorError for bad input."""
    try:
        chip = get_chip(options.chip)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    try:
        layout = load_images(options, chip)
    except ImageError as e:
        raise BadImage(str(e)) from None
    if options.flash_timing not in TIMINGS:
        raise EmulatorError(f"unknown flash timing {options.flash_timing!r}: choose {', '.join(TIMINGS)}")
    if options.flash_file is not None:
        # It is saved after the run: a path that cannot take it fails now, not after the work.
        check_replaceable(options.flash_file, "--flash")
    machine = Machine(chip, strict=options.strict, boot0=options.boot0,
                      flash_timings=TIMINGS[options.flash_timing], uart_sinks=options.uart_sinks,
                      symbols=layout.symbols)
    if options.flash_file is not None:
        try:
            state = load_state(options.flash_file, chip=chip.name, flash_size=chip.flash_size,
                               backup_register_count=len(machine.bkp.snapshot()))
        except FlashStateError as e:
            raise BadImage(str(e)) from None
        machine.load_flash(state.flash)
        machine.flash.option_bytes = state.option_bytes
    # Images are programmed over whatever the state file held, as a programmer would.
    for image in layout.images:
        for address, chunk in image.segments:
            machine.load_flash(chunk, address - chip.flash_base)
    if options.boot1 is not None:
        machine.drive_pin(*BOOT1_PIN, options.boot1)
    apply_pins(machine, options.pins)
    machine.power_on()
    if options.flash_file is not None:
        machine.bkp.restore(state.backup_registers)
    apply_backup_registers(machine, options.bkp)
    for at_ns in options.nrst:
        machine.press_reset_button(at_ns)
    board = Board(machine, layout, options)
    _start_like_a_debugger(board)
    if options.on_built is not None:
        options.on_built(board)
    return board


def apply_pins(machine: Machine, pins: Sequence[PinSetting]) -> None:
    """Drive each pin from outside the chip (a jumper, a button held down)."""
    for port, pin, level in pins:
        if port not in machine.gpio or not 0 <= pin <= 15:
            raise EmulatorError(f"P{port}{pin}: no such pin on the {machine.chip.name}")
        machine.drive_pin(port, pin, level)
        # Record the firmware's first read of the pin after each reset (a gpio_read event), as for BOOT1.
        machine.gpio[port].labels.setdefault(pin, f"P{port}{pin}")


def apply_backup_registers(machine: Machine, values: Sequence[BkpSetting]) -> None:
    """Set backup data registers as an application would have left them before a reset.

    They live in the backup domain, which a system reset keeps (RM0008 §6.1), so a
    value set here is what the bootloader reads at its next boot.
    """
    count = machine.bkp.data_registers  # RM0008 §6.1: 10 on low/medium density, 42 on high density
    for n, value in values:
        if not 1 <= n <= count:
            raise EmulatorError(f"BKP_DR{n}: the {machine.chip.name} has DR1..DR{count}")
        machine.bkp[f"DR{n}"] = value & 0xFFFF


def _start_like_a_debugger(board: Board) -> None:
    """An image linked above the flash base, run on its own, starts from its own table.

    A debugger that loads such an image sets MSP and PC from the image's vector
    table; VTOR keeps its reset value, so an image that forgets to relocate it
    still shows the mistake.
    """
    m, layout = board.machine, board.layout
    if m.read_word(m.chip.flash_base) != 0xFFFFFFFF or not layout.images:
        return
    first = layout.images[0]
    table = first.vector_table_address
    if table == m.chip.flash_base:
        return
    msp, pc = first.word(table), first.word(table + 4)
    if msp is None or pc is None:
        return
    m.start_from_table(msp, pc, source=f"{Path(first.path).name}'s own vector table at 0x{table:08X} "
                                        "(nothing at the flash base; started as a debugger would)")
    board.started_from_image_table = table

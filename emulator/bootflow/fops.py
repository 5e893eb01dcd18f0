"""``--transport fops``: the DFU session done by calling the bootloader's own
media interface, ``USBD_DFU_fops_FS``, with its USB stack bypassed.

For bootloaders whose USB hardware is not modelled, and to test the media
interface on its own.  The table has ST's layout (USBD_DFU_MediaTypeDef):
the layout string, then Init, DeInit, Erase(Add), Write(src, dest, Len),
Read(src, dest, Len), GetStatus(Add, Cmd, buffer).  The session erases pages
in the order a host would (all-first or interleaved, pages from the layout
string, as hostside does), writes in transfer-size chunks through a buffer in
free SRAM, reads back for verify, calls DeInit, then resets the chip with
BOOT1 high like the DFU class's leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emulator.bootflow.scenario import (
    FlashOutcome,
    Triggers,
    _watch_jump,
    check_application,
    load_application,
    record_results,
)
from emulator.core.machine import EmulatorError, Machine
from emulator.core.session import BkpSetting, BoardOptions, PinSetting, build_board
from hostside.dfuse_layout import LayoutError, RegionError, parse_layout

FOPS_SYMBOL = "USBD_DFU_fops_FS"
CHUNK = 1024  # the smallest transfer size the seed allows; any size exercises the same calls
STACK_MARGIN = 2048  # bytes kept free below the initial MSP for the calls' own stack


@dataclass
class FopsTable:
    address: int
    layout: str
    init: int
    deinit: int
    erase: int
    write: int
    read: int
    get_status: int


def find_fops(m: Machine, address: int | None = None) -> FopsTable:
    if address is None:
        address = m.symbols.address_of(FOPS_SYMBOL) if m.symbols is not None else None
        if address is None:
            raise EmulatorError(f"no {FOPS_SYMBOL} symbol in the bootloader: give its address with --fops ADDR")
    chip = m.chip
    where = f"--fops 0x{address:08X}"
    if address % 4 or not (chip.in_flash(address, 28) or chip.in_sram(address, 28)):
        raise EmulatorError(f"{where}: a USBD_DFU_MediaTypeDef is a word-aligned table in flash or SRAM")
    words = [m.read_word(address + 4 * i) for i in range(7)]
    text = words[0]
    readable = min(128, max(0, chip.flash_end - text) if chip.in_flash(text) else
                   max(0, chip.sram_end - text) if chip.in_sram(text) else 0)
    raw = bytes(m.uc.mem_read(text, readable)).split(b"\0", 1)[0] if readable else b""
    if not raw.startswith(b"@") or not all(0x20 <= b < 0x7F for b in raw):
        raise EmulatorError(f"{where}: no USBD_DFU_MediaTypeDef there: its first word (0x{text:08X}) does not "
                            "point to a DfuSe layout string ('@Internal Flash /0x08000000/...')")
    functions = words[1:]
    bad = next((w for w in functions if not (w & 1 and chip.in_flash(w & ~1))), None)
    if bad is not None:
        raise EmulatorError(f"{where}: no USBD_DFU_MediaTypeDef there: 0x{bad:08X} is not a Thumb function in flash")
    return FopsTable(address, raw.decode("ascii"), *(w & ~1 for w in functions))


def _scratch(m: Machine, size: int) -> int:
    end_of_bss = m.symbols.address_of("_ebss") if m.symbols is not None else None
    if end_of_bss is None:
        raise EmulatorError("cannot find free SRAM for the data buffer (no _ebss symbol)")
    start = (end_of_bss + 7) & ~7
    if start + size > m.reset_msp - STACK_MARGIN:
        raise EmulatorError("not enough free SRAM between .bss and the stack for a data buffer")
    return start


def fops_flash_and_boot(boot_image: str, app_file: str, *, fops_address: int | None = None,
                        app_address: int | None = None, erase_order: str = "all-first", verify: bool = True,
                        boot1_after: bool = True, chip: str | None = None, flash_file: str | None = None,
                        flash_timing: str = "typical", run_ns: int = 2_000_000_000, boot1: bool = False,
                        pins: Sequence[PinSetting] = (), bkp: Sequence[BkpSetting] = (),
                        pins_after: Sequence[PinSetting] = (),
                        bkp_after: Sequence[BkpSetting] = ()) -> FlashOutcome:
    loaded = load_application(app_file, app_address)
    check_application(app_file, loaded, boot_image=boot_image, chip=chip, app_address=app_address)
    image = loaded.image
    assert image is not None
    board = build_board(BoardOptions(image=boot_image, chip=chip, boot1=boot1, flash_file=flash_file,
                                     flash_timing=flash_timing, pins=pins, bkp=bkp))
    m = board.machine
    # Let the bootloader come up (clocks, its own init) and settle in its idle loop.
    m.run(max_ns=200_000_000)
    fops = find_fops(m, fops_address)
    outcome = FlashOutcome(board, image.segments[0].address, image.size, erase_order,
                           image_bytes=bytes(image.segments[0].data), layout_string=fops.layout,
                           protocol="fops", expected_image=image)
    buffer = _scratch(m, CHUNK)
    t0 = m.now_ns
    try:
        layout = parse_layout(fops.layout)
        for seg in image.segments:
            layout.check_write(seg.address, len(seg.data))
        if m.call_function(fops.init) != 0:
            raise EmulatorError("MEM_If_Init_FS failed")
        erased: set[int] = set()

        def erase_pages(address: int, length: int) -> None:
            for page in layout.pages_touched(address, length):
                if page.start in erased:
                    continue
                start = m.now_ns
                if m.call_function(fops.erase, (page.start,)) != 0:
                    raise EmulatorError(f"Erase(0x{page.start:08X}) failed")
                erased.add(page.start)
                outcome.erase_busy_ms.append((m.now_ns - start) / 1e6)

        chunks = [(seg.address + off, bytes(seg.data[off:off + CHUNK]))
                  for seg in image.segments for off in range(0, len(seg.data), CHUNK)]
        if erase_order == "all-first":
            for seg in image.segments:
                erase_pages(seg.address, len(seg.data))
        for address, data in chunks:
            if erase_order == "interleaved":
                erase_pages(address, len(data))
            m.uc.mem_write(buffer, data)
            if m.call_function(fops.write, (buffer, address, len(data))) != 0:
                raise EmulatorError(f"Write(0x{address:08X}, {len(data)}) failed")
        outcome.download_ok = True
        if verify:
            differing, first = 0, None
            for address, data in chunks:
                src = m.call_function(fops.read, (address, buffer, len(data)))
                got = bytes(m.uc.mem_read(src, len(data)))
                for i, (a, b) in enumerate(zip(data, got, strict=True)):
                    if a != b:
                        differing += 1
                        first = address + i if first is None else first
            outcome.verify = {"ok": differing == 0, "compared": image.size}
            if differing:
                outcome.verify.update(first_difference=first, differing_bytes=differing)
        m.call_function(fops.deinit)
    except (LayoutError, RegionError, EmulatorError) as e:
        outcome.error = f"{type(e).__name__}: {e}"
        outcome.download_emulated_ns = m.now_ns - t0
        return outcome
    outcome.download_emulated_ns = m.now_ns - t0
    # Leave as ST's DFU class does: a system reset, with BOOT1 where the user put it.
    Triggers(boot1_after, pins_after, bkp_after).apply(board)
    outcome.left = "reset"
    outcome.leave_uart = len(m.uart_output.get(1, b""))
    m.system_reset("software")
    _watch_jump(outcome, outcome.image_bytes)
    uart_before = len(m.uart_output.get(1, b""))
    outcome.stop = m.run(max_ns=run_ns)
    record_results(outcome, uart_before)
    board.save()
    return outcome

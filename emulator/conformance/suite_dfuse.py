"""DfuSe commands (ST UM0424 §5, AN3156 §6), on devices that declare bcdDFUVersion 0x011A.

Block 0 of a DNLOAD carries a command: SET_ADDRESS_POINTER (0x21), ERASE (0x41 with a
page address; alone, a mass erase) and READ_UNPROTECT (0x92).  Data blocks n ≥ 2 go to
pointer + (n - 2) × wTransferSize.  Each test starts from a fresh board.  Flash contents
are put in place as a programmer would, and judged from the flash model itself.
"""

from __future__ import annotations

import pytest

from emulator.bootflow.harness import DfuSession
from emulator.conformance.helpers import PROBE, describe, dfuse_command, expect_state, settle
from emulator.conformance.target import ConformanceTarget, DeviceProfile
from firmware_models import flash_journal as fj
from hostside.dfu import DfuDeviceGone, DfuException, DfuState

ERASES = (fj.PAGE_ERASE, fj.MASS_ERASE, fj.OUT_OF_RANGE_ERASE)


@pytest.fixture
def dfuse(device: DeviceProfile) -> DeviceProfile:
    if not device.is_dfuse:
        pytest.skip(f"plain DFU 1.1 (bcdDFUVersion 0x{device.functional.dfu_version:04X}): no DfuSe commands")
    if device.layout is None or device.app_start is None:
        pytest.fail("the DfuSe memory layout names no writable segment: nowhere to send commands to")
    return device


def unit_at(device: DeviceProfile, address: int) -> int:
    """The layout's erase unit at ``address`` (a page, or a sector on an F4-style layout)."""
    assert device.layout is not None
    return next((seg.size for seg in device.layout.segments if seg.contains(address)), 0) or 1024


def pattern(length: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(length))


def fill(dfu: DfuSession, start: int, length: int) -> bytes:
    """Program a pattern at ``start`` as a programmer would (not through DFU); returns it."""
    m = dfu.board.machine
    data = pattern(length)
    m.load_flash(data, start - m.chip.flash_base)
    return data


def changed_ranges(before: bytes, after: bytes, base: int, page: int) -> list[str]:
    pages = [i for i in range(0, len(before), page) if before[i:i + page] != after[i:i + page]]
    out: list[tuple[int, int]] = []
    for i in pages:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + page)
        else:
            out.append((i, i + page))
    return [f"0x{base + a:08X}-0x{base + b - 1:08X}" for a, b in out]


def erases_since(dfu: DfuSession, since_ns: int) -> tuple[int, str]:
    m = dfu.board.machine
    entries = [e for e in m.flash.journal.entries if e.kind in ERASES and e.time_ns >= since_ns]
    return len(entries), (m.symbol(entries[0].pc) if entries else "")


def test_get_commands_lists_set_address_pointer_and_erase(dfu: DfuSession, dfuse: DeviceProfile) -> None:
    try:
        commands = dfu.client.get_commands()
    except DfuException as e:
        pytest.fail(f"GET_COMMANDS (UPLOAD block 0) failed: {e}")
    missing = [f"0x{c:02X}" for c in (0x21, 0x41) if c not in commands]
    assert not missing, f"GET_COMMANDS lists {[hex(c) for c in commands]}, without {', '.join(missing)}"


def test_set_address_pointer_to_the_application_is_accepted(dfu: DfuSession, dfuse: DeviceProfile) -> None:
    assert dfuse.app_start is not None
    ok, said = dfuse_command(dfu, lambda: dfu.client.set_address(dfuse.app_start))
    assert ok, f"SET_ADDRESS_POINTER 0x{dfuse.app_start:08X} was refused: {said}"
    expect_state(dfu, DfuState.dfuDNLOAD_IDLE, "SET_ADDRESS_POINTER")


def test_written_block_reads_back_by_upload(dfu: DfuSession, dfuse: DeviceProfile) -> None:
    start = dfuse.app_start
    assert start is not None
    try:
        dfu.client.set_address(start)
        dfu.client.dnload(2, PROBE)
        st = settle(dfu)
    except DfuException as e:
        pytest.fail(f"writing 16 bytes at 0x{start:08X} failed: {e}")
    assert st.state == DfuState.dfuDNLOAD_IDLE and not st.is_error, f"after the block: {describe(st)}"
    assert dfu.board.machine.read_flash(start, len(PROBE)) == PROBE, f"the flash at 0x{start:08X} does not hold " \
                                                                     "the block the device accepted"
    if not dfuse.functional.can_upload:
        return
    dfu.client.abort_to_idle()
    back = dfu.client.upload_dfuse(start, len(PROBE))
    assert back == PROBE, f"UPLOAD from 0x{start:08X} returned {back.hex()}, written {PROBE.hex()}"


def test_erase_clears_exactly_the_page_it_names(dfu: DfuSession, dfuse: DeviceProfile,
                                                target: ConformanceTarget) -> None:
    chip = target.the_chip
    start = dfuse.app_start
    assert start is not None
    unit = unit_at(dfuse, start)
    span = min(3 * unit, chip.flash_end - start)
    if span < 2 * unit:
        pytest.skip("the application region holds fewer than two erase units")
    fill(dfu, start, span)
    m = dfu.board.machine
    before = bytes(m.flash_storage)
    named = start + unit
    t0 = m.now_ns
    ok, said = dfuse_command(dfu, lambda: dfu.client.erase_page(named))
    assert ok, f"ERASE 0x{named:08X} (in the writable region) was refused: {said}"
    after = bytes(m.flash_storage)
    off = named - chip.flash_base
    assert after[off:off + unit] == b"\xff" * unit, f"ERASE 0x{named:08X} left the page not blank"
    expected = before[:off] + b"\xff" * unit + before[off + unit:]
    if after != expected:
        other = changed_ranges(expected, after, chip.flash_base, chip.page_size)
        count, code = erases_since(dfu, t0)
        pytest.fail(f"erase-destroys-written-data: ERASE 0x{named:08X} ({unit // 1024} KiB) also erased "
                    f"{', '.join(other[:4])}{' ...' if len(other) > 4 else ''}: {count} erases by {code}")


def test_mass_erase_blanks_the_application_and_keeps_the_bootloader(dfu: DfuSession, dfuse: DeviceProfile,
                                                                    target: ConformanceTarget) -> None:
    chip = target.the_chip
    start = dfuse.app_start
    assert start is not None
    span = min(2 * unit_at(dfuse, start), chip.flash_end - start)
    fill(dfu, start, span)
    m = dfu.board.machine
    boot_before = m.read_flash(chip.flash_base, dfuse.boot_end - chip.flash_base)
    ok, said = dfuse_command(dfu, dfu.client.mass_erase)
    if not ok:
        pytest.skip(f"mass erase (ERASE without an address) is refused: {said}")
    assert m.read_flash(start, span) == b"\xff" * span, \
        f"after a mass erase 0x{start:08X}-0x{start + span - 1:08X} is not blank"
    assert m.read_flash(chip.flash_base, len(boot_before)) == boot_before, \
        "a mass erase through DFU erased the bootloader itself: the board is bricked"


def test_read_unprotect_is_refused_or_honoured(dfu: DfuSession, dfuse: DeviceProfile,
                                               target: ConformanceTarget) -> None:
    """On a chip without read protection: refused (a stall or an error status, then CLRSTATUS), or
    honoured (the device answers, or resets and comes back in DFU mode); never a wedged device
    or a damaged bootloader."""
    chip = target.the_chip
    m = dfu.board.machine
    boot_before = m.read_flash(chip.flash_base, dfuse.boot_end - chip.flash_base)
    result = dfu.attempt(lambda: dfu.client.dnload(0, bytes([0x92])))
    if not result.stalled:
        try:
            settle(dfu)
        except DfuDeviceGone:
            pass  # honoured: the device resets
        except DfuException as e:
            pytest.fail(f"after READ_UNPROTECT the device stops answering GETSTATUS: {e}")
    if dfu.target.attached():
        try:
            dfu.client.ensure_idle()
        except DfuException as e:
            pytest.fail(f"after READ_UNPROTECT the device does not return to dfuIDLE: {e}")
    else:
        try:
            dfu.target.reattach()
        except Exception as e:  # noqa: BLE001 - the device not coming back is the finding
            pytest.fail(f"after READ_UNPROTECT the device left the bus and never came back: {e}")
    assert m.read_flash(chip.flash_base, len(boot_before)) == boot_before, \
        "READ_UNPROTECT on an unprotected chip damaged the bootloader's flash"

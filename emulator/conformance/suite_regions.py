"""The bootloader keeps its own flash and refuses addresses outside the chip's flash.

A host may name any address in a DfuSe command (UM0424 §5), and any block number in a plain
DFU download (DFU 1.1 §6.1.1).  The bootloader's media routines must refuse what is not
the application region.  An erase or a write past the end of flash must not touch
anything, the bootloader's own pages must be neither writable nor erasable, and UPLOAD
must not read the bootloader out.  The bootloader region runs from the flash base to the
application: ``--address``, the layout's first writable segment, or where a plain DFU
bootloader writes block 0.
"""

from __future__ import annotations

import pytest

from emulator.bootflow.harness import DfuSession
from emulator.conformance.helpers import PROBE, dfuse_command, firmware_trouble, recover, settle
from emulator.conformance.suite_dfuse import erases_since
from emulator.conformance.target import ConformanceTarget, DeviceProfile
from emulator.core.machine import Machine
from firmware_models import flash_journal as fj
from hostside.dfu import DfuException

WRITES = (fj.PROGRAM, fj.PAGE_ERASE, fj.MASS_ERASE)


def _dfuse_only(device: DeviceProfile) -> None:
    if not device.is_dfuse:
        pytest.skip("plain DFU 1.1 names block numbers, not addresses (see the block tests)")


def _plain_only(device: DeviceProfile) -> None:
    if device.is_dfuse:
        pytest.skip("DfuSe names addresses (see the address tests)")


def _app_start(device: DeviceProfile) -> int:
    if device.app_start is None:
        pytest.fail("where the application goes is unknown: give --address")
    return device.app_start


def _writer(m: Machine, since_ns: int, low: int, high: int) -> str:
    for e in m.flash.journal.entries:
        if e.kind in WRITES and e.time_ns >= since_ns and e.address is not None and low <= e.address < high:
            return m.symbol(e.pc)
    return "unknown code"


def _erased_spot(m: Machine, low: int, high: int) -> int | None:
    address = (high - 16) & ~15
    while address >= low:
        if m.read_flash(address, 16) == b"\xff" * 16:
            return address
        address -= 16
    return None


def test_erase_past_the_end_of_flash_is_refused(dfu: DfuSession, device: DeviceProfile,
                                                target: ConformanceTarget) -> None:
    _dfuse_only(device)
    chip = target.the_chip
    m = dfu.board.machine
    before = bytes(m.flash_storage)
    t0 = m.now_ns
    ok, said = dfuse_command(dfu, lambda: dfu.client.erase_page(chip.flash_end))
    count, code = erases_since(dfu, t0)
    beyond = sum(1 for e in m.flash.journal.entries if e.kind == fj.OUT_OF_RANGE_ERASE and e.time_ns >= t0)
    touched = bytes(m.flash_storage) != before
    assert not ok and not touched and not beyond, (
        f"erase-beyond-end-of-flash: ERASE 0x{chip.flash_end:08X} (past the end of the {chip.flash_size // 1024} KiB "
        f"flash) was {'accepted' if ok else 'refused (' + said + ')'}; the bootloader started {count} erases "
        f"({beyond} past the end of flash) in {code or 'its erase routine'}"
        + ("; flash changed" if touched else ""))


def test_write_past_the_end_of_flash_is_refused(dfu: DfuSession, device: DeviceProfile,
                                                target: ConformanceTarget) -> None:
    _dfuse_only(device)
    chip = target.the_chip
    m = dfu.board.machine
    before = bytes(m.flash_storage)
    try:
        dfu.client.set_address(chip.flash_end)
        dfu.client.dnload(2, PROBE)
        st = settle(dfu)
        accepted = not st.is_error
    except DfuException:
        accepted = False
    touched = bytes(m.flash_storage) != before
    assert not accepted and not touched, (
        f"a write of 16 bytes at 0x{chip.flash_end:08X} (past the end of flash) was "
        f"{'accepted' if accepted else 'refused'}" + (" and changed the flash" if touched else ""))


def test_upload_past_the_end_of_flash_is_refused(dfu: DfuSession, device: DeviceProfile,
                                                 target: ConformanceTarget) -> None:
    _dfuse_only(device)
    if not device.functional.can_upload:
        pytest.skip("the device cannot upload (bitCanUpload = 0)")
    chip = target.the_chip
    try:
        dfu.client.set_address(chip.flash_end)
        dfu.client.abort_to_idle()
    except DfuException:
        return  # the address itself was refused
    result = dfu.attempt(lambda: dfu.client.upload(2, 16))
    assert not result.ok, f"UPLOAD at 0x{chip.flash_end:08X} (past the end of flash) returned " \
                          f"{result.data.hex() or 'an empty block'}"
    assert result.stalled, f"UPLOAD at 0x{chip.flash_end:08X} (past the end of flash) was not refused: " \
                           f"{result.error}{firmware_trouble(dfu)}"
    recover(dfu)


def test_erase_of_the_bootloader_region_is_refused(dfu: DfuSession, device: DeviceProfile,
                                                   target: ConformanceTarget) -> None:
    _dfuse_only(device)
    chip = target.the_chip
    m = dfu.board.machine
    before = bytes(m.flash_storage)
    t0 = m.now_ns
    ok, said = dfuse_command(dfu, lambda: dfu.client.erase_page(chip.flash_base))
    count, code = erases_since(dfu, t0)
    boot_len = device.boot_end - chip.flash_base
    boot_damaged = bytes(m.flash_storage)[:boot_len] != before[:boot_len]
    if ok:
        what = "the bootloader erased its own flash" if boot_damaged else f"{count} erases elsewhere by {code}"
        pytest.fail(f"ERASE 0x{chip.flash_base:08X} (the bootloader's first page) was accepted (bStatus OK): {what}")
    assert count == 0, f"ERASE 0x{chip.flash_base:08X} was refused ({said}) but {count} erases ran ({code})"


def test_write_into_the_bootloader_region_is_refused(dfu: DfuSession, device: DeviceProfile,
                                                     target: ConformanceTarget) -> None:
    _dfuse_only(device)
    chip = target.the_chip
    m = dfu.board.machine
    app_start = _app_start(device)
    spot = _erased_spot(m, device.boot_end, app_start)
    if spot is None:
        spot = chip.flash_base  # no blank flash between the bootloader and the application: its vector table
    before = m.read_flash(spot, 16)
    t0 = m.now_ns
    try:
        dfu.client.set_address(spot)
        dfu.client.dnload(2, PROBE)
        st = settle(dfu)
        accepted = not st.is_error
    except DfuException:
        accepted = False
    changed = m.read_flash(spot, 16) != before
    assert not accepted and not changed, (
        f"bootloader-region-writable: a write of 16 bytes at 0x{spot:08X} (bootloader region "
        f"0x{chip.flash_base:08X}-0x{app_start - 1:08X}) was {'accepted' if accepted else 'refused'}"
        + (f" and programmed by {_writer(m, t0, spot, spot + 16)}" if changed else ""))


def test_bootloader_cannot_be_read_out_by_upload(dfu: DfuSession, device: DeviceProfile,
                                                 target: ConformanceTarget) -> None:
    if not device.functional.can_upload:
        pytest.skip("the device cannot upload (bitCanUpload = 0)")
    chip = target.the_chip
    m = dfu.board.machine
    head = m.read_flash(chip.flash_base, 8)
    try:
        got = dfu.client.upload_dfuse(chip.flash_base, 8) if device.is_dfuse else dfu.client.upload(0, 8)
    except DfuException:
        return  # refused
    where = f"from 0x{chip.flash_base:08X} " if device.is_dfuse else "of block 0 "
    assert got != head, f"bootloader-readable: UPLOAD {where}returned the bootloader's first words ({got.hex()})"


def test_blocks_past_the_application_region_are_refused(dfu: DfuSession, device: DeviceProfile,
                                                        target: ConformanceTarget) -> None:
    _plain_only(device)
    chip = target.the_chip
    m = dfu.board.machine
    app_start = _app_start(device)
    size = dfu.client.transfer_size
    before = bytes(m.flash_storage)
    answers = []
    for block in sorted({(chip.flash_end - app_start + size - 1) // size, 0xFFFF}):
        result = dfu.attempt(lambda b=block: dfu.client.dnload(b, PROBE))
        st = settle(dfu) if result.ok else dfu.status()
        refused = result.stalled or st.is_error
        answers.append((block, refused))
        recover(dfu)
    after = bytes(m.flash_storage)
    outside = [chip.flash_base + i for i in range(len(before))
               if before[i] != after[i] and not app_start <= chip.flash_base + i < chip.flash_end]
    assert not outside, f"bootloader-region-writable: blocks {[b for b, _ in answers]} changed flash outside the " \
                        f"application region, first at 0x{outside[0]:08X}"
    accepted = [b for b, refused in answers if not refused]
    assert not accepted, f"blocks {accepted} (past the end of flash) were accepted"


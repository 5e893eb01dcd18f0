"""The flash journal (firmware_models/flash_journal.py) as filled by the FPEC model."""

from __future__ import annotations

import json
import zlib

import pytest

from emulator.core.port import SimPort
from firmware_models import flash_journal as fj
from firmware_models.flash import FLASH_BASE, KEY1, KEY2, OPTION_BYTES_BASE, FlashInterface
from firmware_models.regs import BusError

KEYR, OPTKEYR, SR, CR, AR = 0x04, 0x08, 0x0C, 0x10, 0x14
PG, PER, MER, OPTER, STRT, LOCK = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7
PAGE = 2048


def make() -> tuple[FlashInterface, SimPort]:
    port = SimPort()
    pc = {"value": 0x0800_1234}
    port.pc_provider = lambda: pc["value"]
    flash = FlashInterface(port, flash_size=16 * PAGE, page_size=PAGE)
    flash.pc = pc  # type: ignore[attr-defined]
    flash.write(KEYR, 4, KEY1)
    flash.write(KEYR, 4, KEY2)
    return flash, port


def set_cr(f: FlashInterface, bits: int) -> None:
    f.write(CR, 4, f.read(CR, 4) | bits)


def clear_cr(f: FlashInterface, bits: int) -> None:
    f.write(CR, 4, f.read(CR, 4) & ~bits)


def program(f: FlashInterface, port: SimPort, address: int, value: int) -> None:
    set_cr(f, PG)
    f.cpu_store(address, 2, value)
    port.advance(f.timings.program_halfword_ns)
    clear_cr(f, PG)


def program_block(f: FlashInterface, port: SimPort, address: int, length: int, value: int = 0x1234) -> None:
    for a in range(address, address + length, 2):
        program(f, port, a, value)


def page_erase(f: FlashInterface, port: SimPort, address: int) -> None:
    set_cr(f, PER)
    f.write(AR, 4, address)
    set_cr(f, STRT)
    port.advance(f.timings.page_erase_ns)
    clear_cr(f, PER)


def mass_erase(f: FlashInterface, port: SimPort) -> None:
    set_cr(f, MER)
    set_cr(f, STRT)
    port.advance(f.timings.mass_erase_ns)
    clear_cr(f, MER)


def kinds(f: FlashInterface) -> list[str]:
    return [e.kind for e in f.journal.entries]


# -- entries ----------------------------------------------------------------------------------------
def test_unlock_is_journaled_with_time_and_pc() -> None:
    f, _ = make()
    (entry,) = f.journal.entries
    assert (entry.kind, entry.time_ns, entry.pc) == (fj.UNLOCK, 0, 0x0800_1234)


def test_lock_is_journaled() -> None:
    f, _ = make()
    set_cr(f, LOCK)
    assert kinds(f)[-1] == fj.LOCK


def test_wrong_key_lockout_is_journaled() -> None:
    f, _ = make()
    with pytest.raises(BusError):
        f.write(KEYR, 4, 0x1111_1111)
    assert kinds(f)[-1] == fj.LOCKOUT
    assert f.journal.entries[-1].detail["value"] == 0x1111_1111


def test_program_entry_has_range_times_values_and_crc_digests() -> None:
    f, port = make()
    port.advance(500)
    f.pc["value"] = 0x0800_2000  # type: ignore[attr-defined]
    program(f, port, FLASH_BASE + 6, 0xBEEF)
    e = f.journal.of_kind(fj.PROGRAM)[0]
    assert (e.address, e.length, e.time_ns, e.end_ns, e.pc) == (FLASH_BASE + 6, 2, 500, 500 + 52_500, 0x0800_2000)
    assert e.old_digest == format(zlib.crc32(bytes([0xFF, 0xFF])), "08x")
    assert e.new_digest == format(zlib.crc32(bytes([0xEF, 0xBE])), "08x")
    assert (e.detail["old_value"], e.detail["new_value"]) == (0xFFFF, 0xBEEF)


def test_page_erase_entry_covers_the_whole_page_with_digests_of_old_and_new_contents() -> None:
    f, port = make()
    f.storage[PAGE:2 * PAGE] = b"\x00" * PAGE
    page_erase(f, port, FLASH_BASE + PAGE + 100)
    e = f.journal.of_kind(fj.PAGE_ERASE)[0]
    assert (e.address, e.length) == (FLASH_BASE + PAGE, PAGE)
    assert e.old_digest == fj.digest(b"\x00" * PAGE)
    assert e.new_digest == fj.digest(b"\xff" * PAGE)


def test_mass_erase_is_journaled() -> None:
    f, port = make()
    mass_erase(f, port)
    assert kinds(f)[-1] == fj.MASS_ERASE


def test_program_error_is_journaled_with_its_flag() -> None:
    f, port = make()
    program(f, port, FLASH_BASE, 1)
    program(f, port, FLASH_BASE, 2)
    e = f.journal.entries[-1]
    assert (e.kind, e.detail["error"]) == (fj.ERROR, "PGERR")


def test_option_unlock_erase_and_program_are_journaled() -> None:
    f, port = make()
    f.write(OPTKEYR, 4, KEY1)
    f.write(OPTKEYR, 4, KEY2)
    set_cr(f, OPTER)
    set_cr(f, STRT)
    port.advance(f.timings.option_erase_ns)
    clear_cr(f, OPTER)
    set_cr(f, 1 << 4)  # OPTPG
    f.cpu_store(OPTION_BYTES_BASE, 2, 0xA5)
    port.advance(f.timings.program_halfword_ns)
    assert kinds(f)[1:] == [fj.OPTION_UNLOCK, fj.OPTION_ERASE, fj.OPTION_PROGRAM]


def test_power_cut_is_journaled_with_the_interrupted_operation() -> None:
    f, port = make()
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0)
    f.power_cut()
    e = f.journal.entries[-1]
    assert (e.kind, e.detail["operation"]) == (fj.POWER_CUT, fj.PROGRAM)


def test_journal_serialises_to_json() -> None:
    f, port = make()
    program(f, port, FLASH_BASE, 0x55AA)
    page_erase(f, port, FLASH_BASE)
    doc = json.loads(f.journal.to_json())
    assert [e["kind"] for e in doc["entries"]] == [fj.UNLOCK, fj.PROGRAM, fj.PAGE_ERASE]
    assert doc["page_size"] == PAGE
    assert doc["entries"][2]["new_crc32"] == fj.digest(b"\xff" * PAGE)


def test_a_symbolizer_attached_later_names_every_entry() -> None:
    f, port = make()
    program(f, port, FLASH_BASE, 1)
    f.journal.set_symbolizer(lambda pc: "HAL_FLASH_Program" if pc == 0x0800_1234 else None)
    doc = json.loads(f.journal.to_json())
    assert {e["symbol"] for e in doc["entries"]} == {"HAL_FLASH_Program"}


def test_entries_have_no_symbol_without_a_symbolizer() -> None:
    f, _ = make()
    assert "symbol" not in f.journal.as_dicts()[0]


# -- destroyed data detector -------------------------------------------------------------------
def test_erasing_a_page_with_data_programmed_earlier_is_reported() -> None:
    f, port = make()
    program_block(f, port, FLASH_BASE + PAGE + 16, 8)
    page_erase(f, port, FLASH_BASE + PAGE)
    (finding,) = f.journal.destroyed_data()
    assert finding.destroyed == ((FLASH_BASE + PAGE + 16, FLASH_BASE + PAGE + 24),)
    assert finding.bytes_destroyed == 8
    assert (finding.erase_start, finding.erase_end) == (FLASH_BASE + PAGE, FLASH_BASE + 2 * PAGE)
    programs = [e.seq for e in f.journal.of_kind(fj.PROGRAM)]
    assert finding.program_seqs == tuple(programs)


def test_destroyed_data_finding_says_when_the_data_was_programmed_and_erased() -> None:
    f, port = make()
    port.advance(1000)
    program_block(f, port, FLASH_BASE, 4)
    port.advance(5000)
    t_erase = port.now_ns()
    page_erase(f, port, FLASH_BASE)
    (finding,) = f.journal.destroyed_data()
    assert finding.first_program_ns == 1000
    assert finding.last_program_ns == 1000 + f.timings.program_halfword_ns
    assert finding.erase_time_ns == t_erase
    assert "page_erase" in finding.describe()


def test_erasing_before_programming_is_not_reported() -> None:
    f, port = make()
    page_erase(f, port, FLASH_BASE)
    program_block(f, port, FLASH_BASE, 64)
    assert f.journal.destroyed_data() == []


def test_erasing_a_page_other_than_the_programmed_one_is_not_reported() -> None:
    f, port = make()
    program_block(f, port, FLASH_BASE, 64)
    page_erase(f, port, FLASH_BASE + PAGE)
    assert f.journal.destroyed_data() == []


def test_data_is_reported_only_by_the_first_erase_that_destroys_it() -> None:
    f, port = make()
    program_block(f, port, FLASH_BASE, 4)
    page_erase(f, port, FLASH_BASE)
    page_erase(f, port, FLASH_BASE)
    assert len(f.journal.destroyed_data()) == 1


def test_mass_erase_over_programmed_pages_reports_every_destroyed_range() -> None:
    f, port = make()
    program_block(f, port, FLASH_BASE, 4)
    program_block(f, port, FLASH_BASE + 3 * PAGE, 2)
    mass_erase(f, port)
    (finding,) = f.journal.destroyed_data()
    assert finding.erase_kind == fj.MASS_ERASE
    assert finding.destroyed == ((FLASH_BASE, FLASH_BASE + 4), (FLASH_BASE + 3 * PAGE, FLASH_BASE + 3 * PAGE + 2))


def test_chunk_by_chunk_host_with_an_erase_everything_bootloader_is_reported() -> None:
    # docs/SEED_BOOTLOADER.md defect 2(a): each "erase" request wipes every page from the start,
    # so the second chunk's erase destroys the first chunk.
    f, port = make()
    for chunk in range(2):
        for page in range(4):
            page_erase(f, port, FLASH_BASE + page * PAGE)
        program_block(f, port, FLASH_BASE + chunk * PAGE, 16)
    findings = f.journal.destroyed_data()
    assert [fd.destroyed for fd in findings] == [((FLASH_BASE, FLASH_BASE + 16),)]


def test_programming_ffff_leaves_nothing_to_destroy() -> None:
    f, port = make()
    program(f, port, FLASH_BASE, 0xFFFF)
    page_erase(f, port, FLASH_BASE)
    assert f.journal.destroyed_data() == []


def test_data_programmed_before_a_power_cut_is_not_reported_when_erased_after_it() -> None:
    f, port = make()
    program_block(f, port, FLASH_BASE, 4)
    f.power_cut()
    f.write(KEYR, 4, KEY1)
    f.write(KEYR, 4, KEY2)
    page_erase(f, port, FLASH_BASE)
    assert f.journal.destroyed_data() == []


def test_out_of_range_erase_destroys_nothing() -> None:
    f, port = make()
    program_block(f, port, FLASH_BASE, 4)
    page_erase(f, port, FLASH_BASE + 64 * PAGE)
    assert f.journal.destroyed_data() == []


# -- erase counts ------------------------------------------------------------------------------
def test_page_erase_counts_count_each_page() -> None:
    f, port = make()
    page_erase(f, port, FLASH_BASE)
    page_erase(f, port, FLASH_BASE + 10)
    page_erase(f, port, FLASH_BASE + 2 * PAGE)
    counts = {c.page_index: c.count for c in f.journal.erase_counts()}
    assert counts == {0: 2, 2: 1}


def test_a_mass_erase_counts_once_for_every_page() -> None:
    f, port = make()
    mass_erase(f, port)
    counts = f.journal.erase_counts()
    assert [c.count for c in counts] == [1] * 16
    assert counts[3].page_address == FLASH_BASE + 3 * PAGE


def test_erase_counts_ignore_out_of_range_erases() -> None:
    f, port = make()
    page_erase(f, port, FLASH_BASE + 20 * PAGE)
    assert f.journal.erase_counts() == []


def test_erase_counts_record_first_and_last_erase_time() -> None:
    f, port = make()
    page_erase(f, port, FLASH_BASE)
    t2 = port.now_ns()
    page_erase(f, port, FLASH_BASE)
    (c,) = f.journal.erase_counts()
    assert (c.first_ns, c.last_ns) == (0, t2)

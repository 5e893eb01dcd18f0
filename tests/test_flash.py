"""Behaviour of the FPEC model (firmware_models/flash.py) against RM0008 §3.3 and PM0075."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from emulator.core.port import SimPort
from firmware_models import flash_journal as fj
from firmware_models.flash import (
    FACTORY_OPTION_BYTES,
    FLASH_BASE,
    FLASH_IRQ,
    KEY1,
    KEY2,
    OPTION_BYTES_BASE,
    TYPICAL_TIMINGS,
    WORST_CASE_TIMINGS,
    FlashInterface,
    option_halfword,
)
from firmware_models.regs import BusError
from tests.thumb import B_SELF, image, with_pool

ACR, KEYR, OPTKEYR, SR, CR, AR, OBR, WRPR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20
BSY, PGERR, WRPRTERR, EOP = 1 << 0, 1 << 2, 1 << 4, 1 << 5
PG, PER, MER, OPTPG, OPTER, STRT, LOCK, OPTWRE, ERRIE, EOPIE = (
    1 << 0, 1 << 1, 1 << 2, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 9, 1 << 10, 1 << 12)

RC = {"flash_size": 256 * 1024, "page_size": 2048}
C8 = {"flash_size": 64 * 1024, "page_size": 1024}
T_PROG = TYPICAL_TIMINGS.program_halfword_ns
T_PAGE = TYPICAL_TIMINGS.page_erase_ns
T_MASS = TYPICAL_TIMINGS.mass_erase_ns


def make(chip: dict[str, int] = RC, **kw: object) -> tuple[FlashInterface, SimPort]:
    port = SimPort()
    changes: list[tuple[int, int]] = []
    flash = FlashInterface(port, on_change=lambda o, n: changes.append((o, n)), **chip, **kw)  # type: ignore[arg-type]
    flash.changes = changes  # type: ignore[attr-defined]
    return flash, port


def unlock(f: FlashInterface) -> None:
    f.write(KEYR, 4, KEY1)
    f.write(KEYR, 4, KEY2)


def unlock_options(f: FlashInterface) -> None:
    unlock(f)
    f.write(OPTKEYR, 4, KEY1)
    f.write(OPTKEYR, 4, KEY2)


def set_cr(f: FlashInterface, bits: int) -> None:
    f.write(CR, 4, f.read(CR, 4) | bits)


def clear_cr(f: FlashInterface, bits: int) -> None:
    f.write(CR, 4, f.read(CR, 4) & ~bits)


def program(f: FlashInterface, port: SimPort, address: int, value: int) -> None:
    set_cr(f, PG)
    f.cpu_store(address, 2, value)
    port.advance(T_PROG)
    clear_cr(f, PG)


def page_erase(f: FlashInterface, port: SimPort, ar: int, wait: bool = True) -> None:
    set_cr(f, PER)
    f.write(AR, 4, ar)
    set_cr(f, STRT)
    if wait:
        port.advance(f.timings.page_erase_ns)
        clear_cr(f, PER)


def mass_erase(f: FlashInterface, port: SimPort) -> None:
    set_cr(f, MER)
    set_cr(f, STRT)
    port.advance(f.timings.mass_erase_ns)
    clear_cr(f, MER)


def halfword(f: FlashInterface, address: int) -> int:
    o = address - FLASH_BASE
    return int.from_bytes(f.storage[o:o + 2], "little")


def program_option(f: FlashInterface, port: SimPort, address: int, value: int) -> None:
    set_cr(f, OPTPG)
    f.cpu_store(address, 2, value)
    port.advance(T_PROG)
    clear_cr(f, OPTPG)


def erase_options(f: FlashInterface, port: SimPort) -> None:
    set_cr(f, OPTER)
    set_cr(f, STRT)
    port.advance(f.timings.option_erase_ns)
    clear_cr(f, OPTER)


def with_options(**bytes_at: int) -> bytes:
    ob = bytearray(FACTORY_OPTION_BYTES)
    names = ["RDP", "USER", "DATA0", "DATA1", "WRP0", "WRP1", "WRP2", "WRP3"]
    for name, value in bytes_at.items():
        i = 2 * names.index(name)
        ob[i:i + 2] = option_halfword(value).to_bytes(2, "little")
    return bytes(ob)


# -- register reset values ------------------------------------------------------------------
def test_fpec_is_locked_after_reset() -> None:
    f, _ = make()
    assert f.read(CR, 4) == LOCK


def test_acr_resets_with_prefetch_enabled() -> None:
    f, _ = make()
    assert f.read(ACR, 4) == 0x30


def test_prftbs_follows_prftbe() -> None:
    f, _ = make()
    f.write(ACR, 4, 0x02)  # LATENCY=2, prefetch off
    assert f.read(ACR, 4) == 0x02
    f.write(ACR, 4, 0x12)
    assert f.read(ACR, 4) == 0x32


def test_key_registers_read_as_zero() -> None:
    f, _ = make()
    f.write(KEYR, 4, KEY1)
    assert f.read(KEYR, 4) == 0


def test_storage_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError):
        FlashInterface(SimPort(), flash_size=4096, page_size=1024, storage=bytearray(100))


# -- unlock / lock --------------------------------------------------------------------------------
def test_correct_key_sequence_unlocks_fpec() -> None:
    f, _ = make()
    unlock(f)
    assert f.read(CR, 4) & LOCK == 0


def test_first_key_alone_does_not_unlock() -> None:
    f, _ = make()
    f.write(KEYR, 4, KEY1)
    assert f.read(CR, 4) & LOCK


def test_wrong_first_key_raises_bus_error() -> None:
    f, _ = make()
    with pytest.raises(BusError):
        f.write(KEYR, 4, 0x12345678)
    assert f.read(CR, 4) & LOCK


def test_wrong_second_key_raises_bus_error() -> None:
    f, _ = make()
    f.write(KEYR, 4, KEY1)
    with pytest.raises(BusError):
        f.write(KEYR, 4, KEY1)
    assert f.read(CR, 4) & LOCK


def test_wrong_key_locks_fpec_until_reset() -> None:
    f, _ = make()
    with pytest.raises(BusError):
        f.write(KEYR, 4, 0)
    with pytest.raises(BusError):
        f.write(KEYR, 4, KEY1)
    assert f.read(CR, 4) & LOCK
    f.reset()
    unlock(f)
    assert f.read(CR, 4) & LOCK == 0


def test_wrong_key_while_unlocked_relocks_fpec_with_bus_error() -> None:
    f, _ = make()
    unlock(f)
    with pytest.raises(BusError):
        f.write(KEYR, 4, 0xDEADBEEF)
    assert f.read(CR, 4) & LOCK


def test_repeating_the_key_sequence_while_unlocked_keeps_fpec_unlocked() -> None:
    f, _ = make()
    unlock(f)
    unlock(f)
    assert f.read(CR, 4) & LOCK == 0


def test_cr_writes_are_ignored_while_locked() -> None:
    f, port = make()
    f.write(CR, 4, PG | EOPIE)
    assert f.read(CR, 4) == LOCK
    assert port.guest_errors


def test_writing_lock_relocks_fpec() -> None:
    f, _ = make()
    unlock(f)
    set_cr(f, LOCK)
    assert f.read(CR, 4) & LOCK
    f.write(CR, 4, 0)
    assert f.read(CR, 4) & LOCK


def test_system_reset_relocks_fpec() -> None:
    f, _ = make()
    unlock(f)
    f.reset()
    assert f.read(CR, 4) == LOCK


# -- programming ------------------------------------------------------------------------------------
def test_halfword_store_with_pg_programs_flash_and_sets_eop() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE + 0x100, 0xBEEF)
    assert halfword(f, FLASH_BASE + 0x100) == 0xBEEF
    assert f.read(SR, 4) == EOP


def test_program_changes_data_only_at_completion() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0x1234)
    port.advance(T_PROG - 1)
    assert f.read(SR, 4) & BSY
    assert halfword(f, FLASH_BASE) == 0xFFFF
    port.advance(1)
    assert f.read(SR, 4) & BSY == 0
    assert halfword(f, FLASH_BASE) == 0x1234


def test_worst_case_timings_lengthen_program_busy_time() -> None:
    f, port = make(timings=WORST_CASE_TIMINGS)
    unlock(f)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0)
    port.advance(T_PROG)
    assert f.read(SR, 4) & BSY
    port.advance(WORST_CASE_TIMINGS.program_halfword_ns - T_PROG)
    assert f.read(SR, 4) & BSY == 0


def test_program_asks_the_machine_to_stall_until_completion() -> None:
    f, port = make()
    unlock(f)
    port.advance(1000)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0x1234)
    assert port.stalled_until_ns == 1000 + T_PROG


def test_program_reports_the_changed_range_to_the_machine() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE + 0x802, 0x0001)
    assert f.changes == [(0x802, 2)]  # type: ignore[attr-defined]


def test_program_modifies_a_caller_supplied_memoryview_in_place() -> None:
    backing = bytearray(b"\xff" * RC["flash_size"])
    f, port = make(storage=memoryview(backing))
    unlock(f)
    program(f, port, FLASH_BASE + 4, 0xA55A)
    assert backing[4:6] == b"\x5a\xa5"


@pytest.mark.parametrize("size", [1, 4])
def test_store_that_is_not_a_halfword_while_pg_is_set_raises_bus_error(size: int) -> None:
    f, _ = make()
    unlock(f)
    set_cr(f, PG)
    with pytest.raises(BusError):
        f.cpu_store(FLASH_BASE, size, 0)
    assert f.storage[:4] == b"\xff" * 4


def test_halfword_store_to_an_odd_address_while_pg_is_set_raises_bus_error() -> None:
    f, _ = make()
    unlock(f)
    set_cr(f, PG)
    with pytest.raises(BusError):
        f.cpu_store(FLASH_BASE + 1, 2, 0)


def test_store_with_pg_clear_is_ignored_and_reported_as_guest_error() -> None:
    f, port = make()
    unlock(f)
    f.cpu_store(FLASH_BASE, 4, 0)
    assert f.storage[:4] == b"\xff" * 4
    assert port.guest_errors
    assert f.journal.entries[-1].kind == fj.IGNORED_STORE


def test_store_after_relocking_with_pg_still_set_is_ignored() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, PG)
    set_cr(f, LOCK)
    f.cpu_store(FLASH_BASE, 2, 0)
    assert halfword(f, FLASH_BASE) == 0xFFFF
    assert f.read(SR, 4) & BSY == 0


def test_store_outside_flash_and_option_bytes_raises_bus_error() -> None:
    f, _ = make()
    with pytest.raises(BusError):
        f.cpu_store(FLASH_BASE + RC["flash_size"], 2, 0)


def test_programming_a_non_erased_halfword_sets_pgerr_and_keeps_the_old_value() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 0x00FF)
    f.write(SR, 4, EOP)
    program(f, port, FLASH_BASE, 0x000F)
    assert halfword(f, FLASH_BASE) == 0x00FF
    assert f.read(SR, 4) == PGERR


def test_rejected_program_sets_neither_bsy_nor_eop() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 0x1111)
    f.write(SR, 4, EOP)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0x2222)
    assert f.read(SR, 4) == PGERR


def test_programming_zero_over_a_non_erased_halfword_succeeds_without_pgerr() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 0x1234)
    program(f, port, FLASH_BASE, 0x0000)
    assert halfword(f, FLASH_BASE) == 0x0000
    assert f.read(SR, 4) & PGERR == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=64), st.integers(0, 100))
def test_programming_any_sequence_of_halfwords_into_erased_flash_reads_back_exactly(
        values: list[int], start_halfword: int) -> None:
    f, port = make(C8)
    unlock(f)
    set_cr(f, PG)
    base = FLASH_BASE + 2 * start_halfword
    for i, v in enumerate(values):
        f.cpu_store(base + 2 * i, 2, v)
        port.advance(T_PROG)
    o = base - FLASH_BASE
    data = bytes(f.storage[o:o + 2 * len(values)])
    assert [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)] == values
    assert f.read(SR, 4) & PGERR == 0


# -- stalls while busy ----------------------------------------------------------------------------
def test_store_during_busy_is_performed_after_the_running_program_completes() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0x1111)
    f.cpu_store(FLASH_BASE + 2, 2, 0x2222)
    assert port.stalled_until_ns == T_PROG
    port.advance(T_PROG)
    assert halfword(f, FLASH_BASE) == 0x1111
    assert halfword(f, FLASH_BASE + 2) == 0xFFFF
    assert f.read(SR, 4) & BSY
    port.advance(T_PROG)
    assert halfword(f, FLASH_BASE + 2) == 0x2222


def test_register_write_during_busy_takes_effect_after_completion() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0x1111)
    f.write(CR, 4, 0)  # clear PG while busy: held until BSY falls
    assert f.read(CR, 4) & PG
    port.advance(T_PROG)
    assert f.read(CR, 4) & PG == 0


# -- erase -------------------------------------------------------------------------------------------
def fill(f: FlashInterface, byte: int = 0x00) -> None:
    f.storage[:] = bytes([byte]) * f.flash_size


@pytest.mark.parametrize("chip", [RC, C8], ids=["RC-2KiB", "C8-1KiB"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_page_erase_erases_the_page_containing_ar_wherever_ar_points(chip: dict[str, int], where: str) -> None:
    f, port = make(chip)
    fill(f)
    unlock(f)
    size = chip["page_size"]
    page_start = FLASH_BASE + 5 * size
    ar = {"first": page_start, "middle": page_start + size // 2 + 6, "last": page_start + size - 1}[where]
    page_erase(f, port, ar)
    o = 5 * size
    assert f.storage[o:o + size] == b"\xff" * size
    assert f.storage[o - 1] == 0 and f.storage[o + size] == 0
    assert f.read(SR, 4) == EOP


def test_page_erase_keeps_bsy_for_the_page_erase_time_and_changes_data_at_completion() -> None:
    f, port = make()
    fill(f)
    unlock(f)
    page_erase(f, port, FLASH_BASE, wait=False)
    port.advance(T_PAGE - 1)
    assert f.read(SR, 4) & BSY and f.read(CR, 4) & STRT
    assert f.storage[0] == 0
    port.advance(1)
    assert f.read(SR, 4) == EOP
    assert f.read(CR, 4) & STRT == 0
    assert f.storage[0] == 0xFF


def test_page_erase_reports_the_page_to_the_machine() -> None:
    f, port = make()
    unlock(f)
    page_erase(f, port, FLASH_BASE + 0x1000)
    assert f.changes == [(0x1000, 2048)]  # type: ignore[attr-defined]


def test_mass_erase_erases_all_main_flash_after_the_mass_erase_time() -> None:
    f, port = make()
    fill(f, 0x12)
    unlock(f)
    set_cr(f, MER)
    set_cr(f, STRT)
    port.advance(T_MASS - 1)
    assert f.storage[0] == 0x12
    port.advance(1)
    assert bytes(f.storage) == b"\xff" * f.flash_size


def test_page_erase_beyond_the_end_of_flash_changes_nothing_and_reports_guest_error() -> None:
    f, port = make()
    fill(f)
    unlock(f)
    page_erase(f, port, FLASH_BASE + RC["flash_size"] + 0x800, wait=False)
    assert port.guest_errors
    assert f.read(SR, 4) & BSY  # still takes a page-erase time
    port.advance(T_PAGE)
    assert f.read(SR, 4) == EOP
    assert bytes(f.storage) == b"\x00" * f.flash_size
    assert [e.kind for e in f.journal.entries][-1] == fj.OUT_OF_RANGE_ERASE


def test_strt_without_an_erase_mode_starts_nothing() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, STRT)
    assert f.read(SR, 4) == 0
    assert f.read(CR, 4) & STRT == 0
    assert port.guest_errors


# -- interrupts and write-1-to-clear ------------------------------------------------------------------
def test_eop_raises_the_flash_interrupt_when_eopie_is_set() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, EOPIE)
    program(f, port, FLASH_BASE, 0)
    assert port.irq_levels[FLASH_IRQ] is True


def test_eop_without_eopie_raises_no_interrupt() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 0)
    assert not port.irq_levels.get(FLASH_IRQ, False)


def test_pgerr_raises_the_flash_interrupt_when_errie_is_set() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 0x1)
    f.write(SR, 4, EOP)
    set_cr(f, ERRIE)
    program(f, port, FLASH_BASE, 0x2)
    assert port.irq_levels[FLASH_IRQ] is True


def test_writing_one_to_eop_clears_it_and_drops_the_interrupt() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, EOPIE)
    program(f, port, FLASH_BASE, 0)
    f.write(SR, 4, EOP)
    assert f.read(SR, 4) == 0
    assert port.irq_levels[FLASH_IRQ] is False


def test_writing_one_to_pgerr_clears_it() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 1)
    program(f, port, FLASH_BASE, 2)
    f.write(SR, 4, PGERR)
    assert f.read(SR, 4) & PGERR == 0


def test_writing_zero_to_sr_flags_leaves_them_set() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 1)
    program(f, port, FLASH_BASE, 2)
    f.write(SR, 4, 0)
    assert f.read(SR, 4) == EOP | PGERR


def test_clearing_eopie_drops_a_pending_eop_interrupt() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, EOPIE)
    program(f, port, FLASH_BASE, 0)
    clear_cr(f, EOPIE)
    assert port.irq_levels[FLASH_IRQ] is False


# -- option bytes --------------------------------------------------------------------------------------
def test_factory_option_bytes_give_no_read_or_write_protection() -> None:
    f, _ = make()
    assert f.read(OBR, 4) == 0x03FF_FFFC
    assert f.read(WRPR, 4) == 0xFFFF_FFFF
    assert f.external_read_allowed()


def test_optkeyr_sequence_sets_optwre() -> None:
    f, _ = make()
    unlock_options(f)
    assert f.read(CR, 4) & OPTWRE


def test_optkeyr_is_ignored_while_the_fpec_is_locked() -> None:
    f, _ = make()
    f.write(OPTKEYR, 4, KEY1)
    f.write(OPTKEYR, 4, KEY2)
    assert f.read(CR, 4) & OPTWRE == 0


def test_software_can_clear_optwre_but_not_set_it() -> None:
    f, _ = make()
    unlock(f)
    set_cr(f, OPTWRE)
    assert f.read(CR, 4) & OPTWRE == 0
    f.write(OPTKEYR, 4, KEY1)
    f.write(OPTKEYR, 4, KEY2)
    clear_cr(f, OPTWRE)
    assert f.read(CR, 4) & OPTWRE == 0


def test_option_erase_sets_every_option_byte_to_ff() -> None:
    f, port = make()
    unlock_options(f)
    erase_options(f, port)
    assert f.read_option_bytes() == b"\xff" * 16
    assert f.read(SR, 4) == EOP


def test_option_erase_without_optwre_does_nothing() -> None:
    f, port = make()
    unlock(f)
    erase_options(f, port)
    assert f.read_option_bytes() == FACTORY_OPTION_BYTES


def test_option_program_writes_the_byte_and_its_complement() -> None:
    f, port = make()
    unlock_options(f)
    erase_options(f, port)
    program_option(f, port, OPTION_BYTES_BASE + 4, 0x00_42)  # Data0
    assert f.read_option_bytes()[4:6] == bytes([0x42, 0xBD])


def test_option_program_over_a_programmed_byte_sets_pgerr() -> None:
    f, port = make()
    unlock_options(f)
    program_option(f, port, OPTION_BYTES_BASE + 8, 0x00)  # WRP0 is 0xFF/0x00 from the factory
    assert f.read(SR, 4) & PGERR
    assert f.read_option_bytes() == FACTORY_OPTION_BYTES


def test_option_changes_take_effect_only_after_a_system_reset() -> None:
    f, port = make()
    unlock_options(f)
    erase_options(f, port)
    program_option(f, port, OPTION_BYTES_BASE + 0, 0xA5)
    program_option(f, port, OPTION_BYTES_BASE + 4, 0x42)
    assert f.read(OBR, 4) >> 10 & 0xFF == 0xFF
    f.reset()
    assert f.read(OBR, 4) >> 10 & 0xFF == 0x42


def test_erased_rdp_byte_activates_read_protection_after_reset() -> None:
    f, port = make()
    unlock_options(f)
    erase_options(f, port)
    assert f.external_read_allowed()
    f.reset()
    assert f.read(OBR, 4) & 0b10
    assert not f.external_read_allowed()


def test_option_byte_with_a_wrong_complement_sets_opterr_and_reads_as_ff() -> None:
    f, _ = make()
    ob = bytearray(FACTORY_OPTION_BYTES)
    ob[0:2] = bytes([0xA5, 0x00])  # RDP with a broken complement
    f.option_bytes = bytes(ob)
    f.reset()
    assert f.read(OBR, 4) & 0b11 == 0b11  # OPTERR and RDPRT
    assert not f.external_read_allowed()


def test_option_bytes_setter_takes_effect_at_the_next_reset() -> None:
    f, _ = make()
    f.option_bytes = with_options(DATA1=0x5C)
    assert f.read(OBR, 4) >> 18 & 0xFF == 0xFF
    f.power_on_reset()
    assert f.read(OBR, 4) >> 18 & 0xFF == 0x5C


def test_user_option_byte_loads_into_obr() -> None:
    f, _ = make()
    f.option_bytes = with_options(USER=0xFA)  # WDG_SW=0 (hardware watchdog), nRST_STDBY=0
    f.reset()
    obr = f.read(OBR, 4)
    assert (obr >> 2) & 0b111 == 0b010


def test_programming_rdp_a5_while_read_protected_mass_erases_main_flash() -> None:
    f, port = make()
    f.option_bytes = with_options(RDP=0x00)
    f.reset()
    fill(f, 0x77)
    unlock_options(f)
    erase_options(f, port)
    set_cr(f, OPTPG)
    f.cpu_store(OPTION_BYTES_BASE, 2, 0x00A5)
    port.advance(T_MASS + T_PROG - 1)
    assert f.read(SR, 4) & BSY
    port.advance(1)
    assert bytes(f.storage) == b"\xff" * f.flash_size
    assert f.read_option_bytes()[0:2] == bytes([0xA5, 0x5A])
    f.reset()
    assert f.external_read_allowed()


def test_programming_rdp_a5_without_active_read_protection_keeps_main_flash() -> None:
    f, port = make()
    fill(f, 0x77)
    unlock_options(f)
    erase_options(f, port)
    program_option(f, port, OPTION_BYTES_BASE, 0xA5)
    assert f.storage[0] == 0x77


@pytest.mark.parametrize(("chip", "last_protected_page"), [(RC, 1), (C8, 3)], ids=["RC", "C8"])
def test_read_protection_write_protects_the_first_4_kib(chip: dict[str, int], last_protected_page: int) -> None:
    f, port = make(chip)
    f.option_bytes = with_options(RDP=0x00)
    f.reset()
    unlock(f)
    size = chip["page_size"]
    program(f, port, FLASH_BASE + last_protected_page * size, 0)
    assert f.read(SR, 4) & WRPRTERR
    f.write(SR, 4, WRPRTERR)
    program(f, port, FLASH_BASE + (last_protected_page + 1) * size, 0)
    assert f.read(SR, 4) == EOP


def test_read_protection_does_not_block_mass_erase() -> None:
    f, port = make()
    f.option_bytes = with_options(RDP=0x00)
    f.reset()
    fill(f)
    unlock(f)
    mass_erase(f, port)
    assert bytes(f.storage) == b"\xff" * f.flash_size


def test_a_wrp_bit_protects_two_pages_on_high_density() -> None:
    f, port = make(RC)
    f.option_bytes = with_options(WRP0=0xFD)  # bit 1: pages 2-3
    f.reset()
    unlock(f)
    assert [f.page_write_protected(p) for p in range(1, 5)] == [False, True, True, False]


def test_a_wrp_bit_protects_four_pages_on_medium_density() -> None:
    f, _ = make(C8)
    f.option_bytes = with_options(WRP0=0xFD)  # bit 1: pages 4-7
    f.reset()
    assert [f.page_write_protected(p) for p in (3, 4, 7, 8)] == [False, True, True, False]


def test_wrp3_bit7_protects_page_62_to_the_end_on_high_density() -> None:
    f, _ = make(RC)
    f.option_bytes = with_options(WRP3=0x7F)
    f.reset()
    assert [f.page_write_protected(p) for p in (61, 62, 127)] == [False, True, True]


def test_wrp3_bit7_protects_pages_124_to_127_on_medium_density() -> None:
    f, _ = make({"flash_size": 128 * 1024, "page_size": 1024})
    f.option_bytes = with_options(WRP3=0x7F)
    f.reset()
    assert [f.page_write_protected(p) for p in (123, 124, 127)] == [False, True, True]


def test_program_into_a_write_protected_page_sets_wrprterr_and_changes_nothing() -> None:
    f, port = make()
    f.option_bytes = with_options(WRP0=0xFE)
    f.reset()
    unlock(f)
    program(f, port, FLASH_BASE + 2, 0x1234)
    assert halfword(f, FLASH_BASE + 2) == 0xFFFF
    assert f.read(SR, 4) == WRPRTERR


def test_page_erase_of_a_write_protected_page_sets_wrprterr_and_erases_nothing() -> None:
    f, port = make()
    f.option_bytes = with_options(WRP0=0xFE)
    f.reset()
    fill(f)
    unlock(f)
    page_erase(f, port, FLASH_BASE + 0x900)
    assert f.storage[0x900] == 0
    assert f.read(SR, 4) == WRPRTERR


def test_mass_erase_with_write_protected_pages_is_refused() -> None:
    f, port = make()
    f.option_bytes = with_options(WRP2=0xEF)
    f.reset()
    fill(f)
    unlock(f)
    mass_erase(f, port)
    assert bytes(f.storage) == b"\x00" * f.flash_size
    assert f.read(SR, 4) == WRPRTERR


def test_wrprterr_raises_the_flash_interrupt_when_errie_is_set() -> None:
    f, port = make()
    f.option_bytes = with_options(WRP0=0xFE)
    f.reset()
    unlock(f)
    set_cr(f, ERRIE)
    program(f, port, FLASH_BASE, 0)
    assert port.irq_levels[FLASH_IRQ] is True


# -- reset and power cuts --------------------------------------------------------------------------------
def test_system_reset_keeps_flash_and_option_bytes() -> None:
    f, port = make()
    unlock_options(f)
    program(f, port, FLASH_BASE, 0x1234)
    erase_options(f, port)
    f.reset()
    assert halfword(f, FLASH_BASE) == 0x1234
    assert f.read_option_bytes() == b"\xff" * 16


def test_power_cut_midway_through_a_program_clears_the_lowest_half_of_the_bits() -> None:
    f, port = make()
    unlock(f)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, 0x0000)  # 16 bits to clear
    port.advance(T_PROG // 2)
    f.power_cut()
    assert halfword(f, FLASH_BASE) == 0xFF00


def test_power_cut_midway_through_a_page_erase_erases_the_first_half_of_the_page() -> None:
    f, port = make()
    fill(f)
    unlock(f)
    page_erase(f, port, FLASH_BASE + 0x800, wait=False)
    port.advance(T_PAGE // 2)
    f.power_cut()
    assert f.storage[0x800:0xC00] == b"\xff" * 0x400
    assert f.storage[0xC00:0x1000] == b"\x00" * 0x400


@settings(max_examples=30, deadline=None)
@given(st.integers(0, T_PAGE))
def test_power_cut_at_any_time_in_a_page_erase_leaves_an_erased_prefix_and_old_rest(cut_ns: int) -> None:
    f, port = make(C8)
    fill(f, 0x3C)
    unlock(f)
    page_erase(f, port, FLASH_BASE, wait=False)
    port.advance(cut_ns)
    f.power_cut()
    page = bytes(f.storage[:1024])
    n = len(page) - len(page.lstrip(b"\xff"))
    assert page[n:] == b"\x3c" * (1024 - n)
    assert n == (1024 * cut_ns // T_PAGE) & ~1


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, T_PROG))
def test_power_cut_during_a_program_only_clears_bits_the_program_clears(old: int, new: int, cut_ns: int) -> None:
    f, port = make(C8)
    f.storage[0:2] = old.to_bytes(2, "little")
    unlock(f)
    set_cr(f, PG)
    f.cpu_store(FLASH_BASE, 2, new if old == 0xFFFF else 0)
    target = new if old == 0xFFFF else 0
    port.advance(cut_ns)
    f.power_cut()
    value = halfword(f, FLASH_BASE)
    assert value & ~old == 0  # nothing set
    assert value & target == old & target  # bits the program leaves at 1 are untouched


def test_power_cut_stops_the_completion_from_happening_later() -> None:
    f, port = make()
    fill(f)
    unlock(f)
    page_erase(f, port, FLASH_BASE, wait=False)
    f.power_cut()
    port.advance(T_PAGE * 2)
    assert f.storage[0] == 0
    assert f.read(SR, 4) == 0


def test_power_cut_between_operations_changes_no_flash() -> None:
    f, port = make()
    unlock(f)
    program(f, port, FLASH_BASE, 0x1234)
    before = bytes(f.storage)
    f.power_cut()
    assert bytes(f.storage) == before
    assert f.read(CR, 4) == LOCK


def test_power_cut_during_an_option_erase_erases_a_prefix_of_the_option_bytes() -> None:
    f, port = make()
    unlock_options(f)
    set_cr(f, OPTER)
    set_cr(f, STRT)
    port.advance(f.timings.option_erase_ns // 2)
    f.power_cut()
    assert f.read_option_bytes() == b"\xff" * 8 + FACTORY_OPTION_BYTES[8:]


def test_power_cut_during_rdp_unprotection_leaves_main_flash_partly_erased() -> None:
    f, port = make(C8)
    f.option_bytes = with_options(RDP=0x00)
    f.reset()
    fill(f)
    unlock_options(f)
    erase_options(f, port)
    set_cr(f, OPTPG)
    f.cpu_store(OPTION_BYTES_BASE, 2, 0xA5)
    port.advance(T_MASS // 4)
    f.power_cut()
    assert f.storage[: C8["flash_size"] // 4] == b"\xff" * (C8["flash_size"] // 4)
    assert f.storage[C8["flash_size"] // 4] == 0
    assert f.read_option_bytes()[0:2] == b"\xff\xff"


def test_system_reset_during_a_page_erase_interrupts_it_like_a_power_cut() -> None:
    f, port = make(C8)
    fill(f)
    unlock(f)
    page_erase(f, port, FLASH_BASE, wait=False)
    port.advance(T_PAGE // 4)
    f.reset()
    assert f.storage[:256] == b"\xff" * 256
    assert f.storage[256] == 0
    assert f.read(SR, 4) == 0
    assert f.read(CR, 4) == LOCK


# -- the CPU's view of flash (the model's buffer mapped into Unicorn read-only) ------------------


def test_a_store_the_fpec_ignores_leaves_the_cpus_view_of_flash_unchanged_at_both_addresses() -> None:
    strh_r1_r0, ldrh_r2_r0, str_r2_r3, ldrh_r2_r4, str_r2_r3_4 = (
        struct.pack("<H", h) for h in (0x8001, 0x8802, 0x601A, 0x8822, 0x605A))
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 1), ("ldr", 3, 2), ("ldr", 4, 3),
                      strh_r1_r0,  # PG clear: the FPEC drops the store (PM0075 §2.3.3)
                      ldrh_r2_r0, str_r2_r3, ldrh_r2_r4, str_r2_r3_4, B_SELF],
                     [0x0800_1000, 0x1234, 0x2000_0000, 0x0000_1000])
    m = Machine(get_chip("rc"))
    m.load_flash(image(code))
    m.power_on()
    m.run(max_ns=1_000_000)
    assert m.read_word(0x2000_0000) == 0xFFFF  # read back at 0x0800_1000
    assert m.read_word(0x2000_0004) == 0xFFFF  # and at the boot alias
    assert m.read_flash(0x0800_1000, 2) == b"\xff\xff"
    m.load_flash(b"\x34\x12", 0x1000)  # a change of the model's array reaches both views at once
    assert bytes(m.uc.mem_read(0x0800_1000, 2)) == bytes(m.uc.mem_read(0x0000_1000, 2)) == b"\x34\x12"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x0C, 0x10, 0x11, 0x12]), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFF_FFFF)), max_size=12), st.booleans())
def test_register_writes_match_the_framework_arithmetic(writes: list[tuple[int, int, int]], options: bool) -> None:
    # FlashInterface.write stores whole CR words inline and the framework compiles its merges:
    # both must leave what Peripheral's plain arithmetic (its unaligned path) leaves.
    fast, _ = make()
    (unlock_options if options else unlock)(fast)
    for offset, size, value in writes:
        value &= (1 << (8 * size)) - 1
        if offset == CR:
            value &= ~STRT  # STRT starts an operation (or an error): tested on its own above
        before = dict(fast.values)
        old = before["SR" if offset == 0x0C else "CR"]
        try:
            fast.write(offset, size, value)
        except BusError:
            continue
        if before["CR"] & 0x80 or fast.busy or offset != 0x10 and offset != 0x0C:
            continue  # locked CR, a started operation: not a plain register store
        name = "SR" if offset == 0x0C else "CR"
        c = fast._by_name[name]
        raw = value << 8 * (offset - c.reg.offset)
        mask = ((1 << (8 * size)) - 1) << 8 * (offset - c.reg.offset)
        raw = (raw & mask) | (((old & ~c.neutral_zero) | c.neutral_one) & ~mask)
        want = ((old & ~c.rw_wo) | (raw & c.rw_wo)) & ~(raw & c.w1c) & ~(~raw & c.w0c)
        if name == "CR":  # _cr_written: STRT kept once set, LOCK only set
            want = (want | (old & 0x40)) & ~0x80 | ((old | raw) & 0x80)
        assert fast.values[name] == want

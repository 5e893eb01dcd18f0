"""BKP (RM0008 §6) and PWR (RM0008 §5) models."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from emulator.core.port import SimPort
from firmware_models.bkp import BKP, dr_offset
from firmware_models.pwr import PWR
from tests.thumb import B_SELF, image, with_pool

RTCCR, BKP_CR, BKP_CSR = 0x2C, 0x30, 0x34
PWR_CR, PWR_CSR = 0x00, 0x04
DBP, CWUF, CSBF, PVDE = 1 << 8, 1 << 2, 1 << 3, 1 << 4
WUF, SBF, PVDO = 1, 2, 4


def make(dbp: bool = True, **options: object) -> tuple[SimPort, PWR, BKP]:
    port = SimPort()
    pwr = PWR(port)
    bkp = BKP(port, write_enabled=pwr.backup_write_enabled, **options)
    if dbp:
        pwr.write(PWR_CR, 4, DBP)
    return port, pwr, bkp


# -- BKP ----------------------------------------------------------------------------------------------


def test_data_registers_reset_to_zero() -> None:
    _, _, bkp = make()
    assert bkp.snapshot() == [0] * 42


@pytest.mark.parametrize(("n", "offset"), [(1, 0x04), (10, 0x28), (11, 0x40), (42, 0xBC)])
def test_data_register_offsets_have_the_gap_after_dr10(n: int, offset: int) -> None:
    assert dr_offset(n) == offset


def test_data_register_holds_16_bits() -> None:
    _, _, bkp = make()
    bkp.write(dr_offset(1), 4, 0xDEAD_BEEF)
    assert bkp.read(dr_offset(1), 4) == 0xBEEF


def test_write_without_dbp_is_ignored() -> None:
    _, _, bkp = make(dbp=False)
    bkp.write(dr_offset(1), 4, 0x1234)
    assert bkp.read(dr_offset(1), 4) == 0


def test_write_without_dbp_is_reported() -> None:
    port, _, bkp = make(dbp=False)
    bkp.write(dr_offset(1), 4, 0x1234)
    assert len(port.guest_errors) == 1


def test_bkp_without_a_wired_pwr_is_write_protected() -> None:
    port = SimPort()
    bkp = BKP(port)
    bkp.write(dr_offset(2), 4, 1)
    assert bkp.read(dr_offset(2), 4) == 0


def test_data_registers_survive_a_system_reset() -> None:
    _, pwr, bkp = make()
    bkp.write(dr_offset(1), 4, 0x424C)  # the magic word many bootloaders keep here
    bkp.write(dr_offset(42), 4, 0x0042)
    pwr.reset()
    bkp.reset()
    assert (bkp.read(dr_offset(1), 4), bkp.read(dr_offset(42), 4)) == (0x424C, 0x0042)


def test_data_registers_are_cleared_by_a_power_on_reset() -> None:
    _, _, bkp = make()
    bkp.write(dr_offset(1), 4, 0x424C)
    bkp.power_on_reset()
    assert bkp.read(dr_offset(1), 4) == 0


def test_rtc_calibration_survives_a_system_reset() -> None:
    _, _, bkp = make()
    bkp.write(RTCCR, 4, 0x7F)
    bkp.reset()
    assert bkp.read(RTCCR, 4) == 0x7F


def test_tamper_control_is_cleared_by_a_system_reset() -> None:
    _, _, bkp = make()
    bkp.write(BKP_CR, 4, 0b11)
    bkp.reset()
    assert bkp.read(BKP_CR, 4) == 0


def test_backup_domain_reset_clears_the_data_registers() -> None:
    _, _, bkp = make()
    bkp.write(dr_offset(5), 4, 5)
    bkp.backup_domain_reset()
    assert bkp.read(dr_offset(5), 4) == 0


@given(st.lists(st.integers(0, 0xFFFF), min_size=42, max_size=42))
def test_snapshot_restores_every_data_register(values: list[int]) -> None:
    _, _, bkp = make()
    bkp.restore(values)
    again = BKP(SimPort())
    again.restore(bkp.snapshot())
    assert again.snapshot() == values


def test_restore_rejects_more_values_than_registers() -> None:
    _, _, bkp = make(data_registers=10)
    with pytest.raises(ValueError):
        bkp.restore([0] * 11)


def test_medium_density_part_has_ten_data_registers() -> None:
    _, _, bkp = make(data_registers=10)
    assert len(bkp.snapshot()) == 10


def test_medium_density_part_has_no_dr11() -> None:
    port, _, bkp = make(data_registers=10)
    bkp.write(dr_offset(11), 4, 1)
    assert (bkp.read(dr_offset(11), 4), len(port.guest_errors)) == (0, 2)


@pytest.mark.parametrize(("chip", "count"), [("c8", 10), ("rc", 42)])
def test_the_machine_gives_each_part_the_data_registers_of_its_density(chip: str, count: int) -> None:
    # RM0008 §6.1: DR1..DR10 on low/medium-density parts, DR1..DR42 on high density.
    assert Machine(get_chip(chip)).bkp.data_registers == count


def test_tamper_event_clears_data_and_sets_tef() -> None:
    _, _, bkp = make()
    bkp.write(dr_offset(3), 4, 3)
    bkp.write(BKP_CR, 4, 1)  # TPE
    bkp.tamper_event()
    assert (bkp.read(dr_offset(3), 4), bkp.read(BKP_CSR, 4)) == (0, 1 << 8)


def test_tamper_event_is_ignored_while_the_tamper_pin_is_disabled() -> None:
    _, _, bkp = make()
    bkp.write(dr_offset(3), 4, 3)
    bkp.tamper_event()
    assert bkp.read(dr_offset(3), 4) == 3


def test_tamper_interrupt_raises_and_cti_clears_it() -> None:
    port, _, bkp = make()
    bkp.write(BKP_CR, 4, 1)
    bkp.write(BKP_CSR, 4, 1 << 2)  # TPIE
    bkp.tamper_event()
    raised = port.irq_levels[2]
    bkp.write(BKP_CSR, 4, 1 << 2 | 1 << 1)  # CTI
    assert (raised, port.irq_levels[2], bkp.read(BKP_CSR, 4)) == (True, False, 1 << 2 | 1 << 8)


def test_cte_clears_the_tamper_event_flag() -> None:
    _, _, bkp = make()
    bkp.write(BKP_CR, 4, 1)
    bkp.tamper_event()
    bkp.write(BKP_CSR, 4, 1)
    assert bkp.read(BKP_CSR, 4) == 0


# -- PWR --------------------------------------------------------------------------------------------------


def test_pwr_registers_reset_to_zero() -> None:
    port = SimPort()
    pwr = PWR(port)
    assert (pwr.read(PWR_CR, 4), pwr.read(PWR_CSR, 4)) == (0, 0)


def test_dbp_is_cleared_by_a_system_reset() -> None:
    _, pwr, _ = make()
    pwr.reset()
    assert not pwr.backup_write_enabled()


def test_dbp_gates_the_backup_domain() -> None:
    _, pwr, _ = make(dbp=False)
    before = pwr.backup_write_enabled()
    pwr.write(PWR_CR, 4, DBP)
    assert (before, pwr.backup_write_enabled()) == (False, True)


def test_cwuf_and_csbf_read_as_zero() -> None:
    _, pwr, _ = make(dbp=False)
    pwr.write(PWR_CR, 4, CWUF | CSBF)
    assert pwr.read(PWR_CR, 4) == 0


def test_cwuf_clears_the_wakeup_flag() -> None:
    _, pwr, _ = make()
    pwr.note_wakeup()
    pwr.write(PWR_CR, 4, DBP | CWUF)
    assert pwr.read(PWR_CSR, 4) == 0


def test_csbf_clears_the_standby_flag() -> None:
    _, pwr, _ = make()
    pwr.note_standby()
    pwr.write(PWR_CR, 4, CSBF)
    assert pwr.read(PWR_CSR, 4) == 0


def test_standby_flag_survives_a_system_reset() -> None:
    _, pwr, _ = make()
    pwr.note_standby()
    pwr.reset()
    assert pwr.read(PWR_CSR, 4) == SBF


def test_standby_flag_is_cleared_by_a_power_on_reset() -> None:
    _, pwr, _ = make()
    pwr.note_standby()
    pwr.power_on_reset()
    assert pwr.read(PWR_CSR, 4) == 0


def test_wakeup_flag_is_cleared_by_a_system_reset() -> None:
    _, pwr, _ = make()
    pwr.note_wakeup()
    pwr.reset()
    assert pwr.read(PWR_CSR, 4) == 0


def test_csr_status_flags_are_read_only() -> None:
    _, pwr, _ = make()
    pwr.write(PWR_CSR, 4, 0xFFFF)
    assert pwr.read(PWR_CSR, 4) == 1 << 8  # only EWUP is writable


def test_pvdo_sets_when_vdd_is_below_the_selected_threshold() -> None:
    _, pwr, _ = make()
    pwr.set_vdd(2_650)
    pwr.write(PWR_CR, 4, PVDE | 0b101 << 5)  # 2.7 V
    assert pwr.read(PWR_CSR, 4) & PVDO


def test_pvdo_stays_clear_with_the_pvd_disabled() -> None:
    _, pwr, _ = make()
    pwr.set_vdd(2_000)
    assert not pwr.read(PWR_CSR, 4) & PVDO


def test_data_registers_are_readable_without_the_bkp_clock() -> None:
    _, _, bkp = make()
    assert bkp.readable_without_clock(dr_offset(1)) and bkp.readable_without_clock(dr_offset(42))


@pytest.mark.parametrize("offset", [RTCCR, BKP_CR, BKP_CSR])
def test_control_registers_are_not_readable_without_the_bkp_clock(offset: int) -> None:
    _, _, bkp = make()
    assert not bkp.readable_without_clock(offset)


# -- on the machine: firmware with the RCC clock gates (RM0008 §6.1, §7.3.8) -----------------------

RCC_APB1ENR, PWR_CR_ADDR, BKP_BASE, AIRCR = 0x4002_101C, 0x4000_7000, 0x4000_6C00, 0xE000_ED0C
PWREN, BKPEN = 1 << 28, 1 << 27
BOOT_MAGIC = 0x4F42  # dapboot's CMD_BOOT in BKP_DR1
LDR_R1_R0, STR_R2_R0, STR_R4_R3, CMP_R1_R2 = (struct.pack("<H", w) for w in (0x6801, 0x6002, 0x601C, 0x4291))


def machine_run(code: bytes, *, bkp: list[int] | None = None, ns: int = 2_000_000) -> Machine:
    m = Machine(get_chip("rc"))
    m.load_flash(image(code))
    m.power_on()
    if bkp is not None:
        m.bkp.restore(bkp)  # as the state file does: VBAT kept them (emulator.core.session)
    m.run(max_ns=ns)
    return m


def store(address_index: int, value_index: int) -> list:
    return [("ldr", 3, address_index), ("ldr", 4, value_index), STR_R4_R3]


def test_firmware_reading_bkp_dr1_right_after_reset_with_clocks_off_sees_what_the_app_wrote() -> None:
    # r1 = BKP_DR1 (clocks off); if it is not the magic: enable PWR+BKP, DBP, DR1 = magic,
    # SYSRESETREQ.  After the reset the same read must see the magic.
    beq_done = struct.pack("<H", 0xD00A)  # beq to the last "b ."
    code = with_pool([("ldr", 0, 0), LDR_R1_R0, ("ldr", 2, 1), CMP_R1_R2, beq_done,
                      *store(2, 3), *store(4, 5), STR_R2_R0, *store(6, 7), B_SELF, B_SELF],
                     [BKP_BASE + dr_offset(1), BOOT_MAGIC, RCC_APB1ENR, PWREN | BKPEN, PWR_CR_ADDR, DBP,
                      AIRCR, 0x05FA_0004])
    m = machine_run(code)
    assert (m.resets, m.reg("r1"), m.rcc["APB1ENR"]) == (1, BOOT_MAGIC, 0)


def test_firmware_reads_a_backup_value_kept_from_a_previous_run_with_clocks_off() -> None:
    code = with_pool([("ldr", 0, 0), LDR_R1_R0, B_SELF], [BKP_BASE + dr_offset(10)])
    m = machine_run(code, bkp=[0] * 9 + [0xBEEF])
    assert m.reg("r1") == 0xBEEF


def test_backup_control_register_still_reads_zero_with_the_bkp_clock_off() -> None:
    code = with_pool([("ldr", 0, 0), LDR_R1_R0, B_SELF], [BKP_BASE + RTCCR])
    m = Machine(get_chip("rc"))
    m.load_flash(image(code))
    m.power_on()
    m.bkp.values["RTCCR"] = 0x7F
    m.run(max_ns=1_000_000)
    assert m.reg("r1") == 0


def write_dr1_and_read_back(apb1enr: int, dbp: bool) -> Machine:
    setup = [*store(1, 2), *(store(3, 4) if dbp else [])]
    code = with_pool([*setup, ("ldr", 0, 0), ("ldr", 2, 5), STR_R2_R0, LDR_R1_R0, B_SELF],
                     [BKP_BASE + dr_offset(1), RCC_APB1ENR, apb1enr, PWR_CR_ADDR, DBP, 0x1234])
    return machine_run(code)


def test_firmware_write_to_bkp_dr1_without_dbp_is_ignored() -> None:
    m = write_dr1_and_read_back(PWREN | BKPEN, dbp=False)
    assert (m.reg("r1"), m.bkp["DR1"]) == (0, 0)


def test_firmware_write_to_bkp_dr1_with_dbp_but_the_bkp_clock_off_is_ignored() -> None:
    m = write_dr1_and_read_back(PWREN, dbp=True)
    assert (m.reg("r1"), m.bkp["DR1"]) == (0, 0)


def test_firmware_write_to_bkp_dr1_with_both_clocks_and_dbp_is_kept() -> None:
    m = write_dr1_and_read_back(PWREN | BKPEN, dbp=True)
    assert (m.reg("r1"), m.bkp["DR1"]) == (0x1234, 0x1234)

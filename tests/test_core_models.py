"""NVIC, SCB, SysTick and DWT register models against the ARMv7-M ARM and PM0056."""

from __future__ import annotations

from emulator.core.port import SimPort
from firmware_models.dwt import DWT
from firmware_models.nvic import IRQ0, NVIC, PENDSV, SYSTICK, ExceptionController, SoftwareTriggerInterrupt
from firmware_models.scb import SCB, SCnSCB
from firmware_models.systick import SysTick


def rig(n_irq: int = 60):
    port = SimPort()
    ctl = ExceptionController(n_irq)
    return port, ctl, NVIC(port, ctl), SCB(port, ctl, ipsr=lambda: 0)


def test_iser_sets_and_icer_clears_enables():
    _, ctl, nvic, _ = rig()
    nvic.write(0x000, 4, 1 << 5)
    assert nvic.read(0x000, 4) == 1 << 5 and ctl.enabled[IRQ0 + 5]
    nvic.write(0x080, 4, 1 << 5)
    assert nvic.read(0x000, 4) == 0


def test_unimplemented_nvic_words_read_zero_and_ignore_writes():
    port, _, nvic, _ = rig(60)
    nvic.write(0x09C, 4, 0xFFFFFFFF)  # ICER7
    assert nvic.read(0x01C, 4) == 0
    assert not port.unmodelled_seen


def test_priority_keeps_only_the_four_implemented_bits():
    _, ctl, nvic, _ = rig()
    nvic.write(0x300 + 3, 1, 0x5F)
    assert nvic.read(0x300, 4) >> 24 == 0x50
    assert ctl.priority[IRQ0 + 3] == 0x50


def test_level_interrupt_stays_pending_while_its_line_is_high():
    _, ctl, nvic, _ = rig()
    ctl.set_line(7, True)
    nvic.write(0x180, 4, 1 << 7)  # ICPR
    assert ctl.pending[IRQ0 + 7]
    ctl.set_line(7, False)
    nvic.write(0x180, 4, 1 << 7)
    assert not ctl.pending[IRQ0 + 7]


def test_higher_priority_wins_and_ties_go_to_the_lower_exception_number():
    _, ctl, nvic, _ = rig()
    nvic.write(0x000, 4, 0b1110)
    nvic.write(0x300, 4, 0x40_40_80_00)  # IRQ1 0x80, IRQ2 0x40, IRQ3 0x40
    nvic.write(0x100, 4, 0b1110)  # ISPR
    assert ctl.highest_pending() == IRQ0 + 2


def test_prigroup_makes_subpriority_bits_unable_to_preempt():
    _, ctl, _, scb = rig()
    scb.write(0x0C, 4, 0x05FA0000 | 5 << 8)  # PRIGROUP=5: 2 bits of group priority
    ctl.set_priority(IRQ0 + 1, 0x40)
    ctl.set_priority(IRQ0 + 2, 0x60)  # same group (0x40), lower subpriority
    ctl.active[IRQ0 + 1] = True
    assert not ctl.can_preempt(IRQ0 + 2, False, False, 0)


def test_aircr_reads_back_vectkeystat_and_prigroup():
    _, _, _, scb = rig()
    scb.write(0x0C, 4, 0x05FA0300)
    assert scb.read(0x0C, 4) == 0xFA050300


def test_sysresetreq_with_key_requests_a_reset():
    port, _, _, scb = rig()
    scb.write(0x0C, 4, 0x05FA0004)
    assert port.reset_requests == ["software"]


def test_icsr_pendsvset_pends_pendsv_and_pendsvclr_clears_it():
    _, ctl, _, scb = rig()
    scb.write(0x04, 4, 1 << 28)
    assert ctl.pending[PENDSV] and scb.read(0x04, 4) >> 28 & 1
    scb.write(0x04, 4, 1 << 27)
    assert not ctl.pending[PENDSV]


def test_icsr_vectpending_names_the_highest_pending_exception():
    _, ctl, _, scb = rig()
    ctl.set_pending(SYSTICK)
    assert scb.read(0x04, 4) >> 12 & 0x3FF == SYSTICK


def test_shcsr_enables_the_configurable_faults():
    _, ctl, _, scb = rig()
    scb.write(0x24, 4, 0b111 << 16)
    assert ctl.enabled[4] and ctl.enabled[5] and ctl.enabled[6]


def test_cfsr_bits_clear_when_written_one():
    _, _, _, scb = rig()
    scb.record_cfsr("PRECISERR")
    scb.write(0x28, 4, 1 << 9)
    assert scb.read(0x28, 4) == 0


def test_cpuid_reads_cortex_m3_r1p1():
    _, _, _, scb = rig()
    assert scb.read(0x00, 4) == 0x411FC231


def test_ccr_resets_to_zero_on_the_r1p1_core_so_stkalign_is_clear():
    _, _, _, scb = rig()
    assert scb.read(0x14, 4) == 0


def test_ccr_stkalign_can_be_set_by_software():
    _, _, _, scb = rig()
    scb.write(0x14, 4, 1 << 9)
    assert scb.ccr("STKALIGN") and scb.read(0x14, 4) == 0x200


def test_aircr_resets_to_vectkeystat_little_endian_and_prigroup_zero():
    _, _, _, scb = rig()
    assert scb.read(0x0C, 4) == 0xFA050000


def test_system_handler_priorities_keep_only_bits_7_to_4():
    _, ctl, _, scb = rig()
    scb.write(0x20, 4, 0xFFFF_0000)  # SHPR3: PendSV and SysTick
    assert scb.read(0x20, 4) == 0xF0F0_0000 and ctl.priority[SYSTICK] == 0xF0


def test_reserved_system_handler_priority_bytes_read_zero():
    _, _, _, scb = rig()
    scb.write(0x1C, 4, 0xFFFF_FFFF)  # SHPR2: only byte 3 (SVCall) exists
    assert scb.read(0x1C, 4) == 0xF000_0000


def test_afsr_reads_zero_and_keeps_nothing_written():
    _, _, _, scb = rig()
    scb.write(0x3C, 4, 0xFFFF_FFFF)
    assert scb.read(0x3C, 4) == 0


def test_ictr_reports_up_to_64_interrupt_lines():
    assert SCnSCB(SimPort()).read(0x04, 4) == 1


def test_actlr_resets_to_zero_and_keeps_its_three_control_bits():
    actlr = SCnSCB(SimPort())
    before = actlr.read(0x08, 4)
    actlr.write(0x08, 4, 0xFFFF_FFFF)
    assert (before, actlr.read(0x08, 4)) == (0, 0b111)


def test_stir_pends_the_written_irq():
    port, ctl, _, _ = rig()
    SoftwareTriggerInterrupt(port, ctl).write(0, 4, 9)
    assert ctl.pending[IRQ0 + 9]


def systick(hclk: int = 72_000_000):
    port = SimPort()
    port.clocks.hclk = hclk
    fired: list[int] = []
    return port, SysTick(port, pend=lambda: fired.append(port.now_ns())), fired


def test_systick_counts_down_at_hclk_and_fires_every_reload_plus_one_ticks():
    port, st, fired = systick()
    st.write(0x4, 4, 71_999)
    st.write(0x8, 4, 0)
    st.write(0x0, 4, 0b111)
    port.advance(500_000)
    assert 35_000 <= st.read(0x8, 4) <= 37_000
    port.advance(2_600_000)
    assert fired == [1_000_000, 2_000_000, 3_000_000]


def test_systick_external_clock_is_hclk_divided_by_eight():
    port, st, fired = systick()
    st.write(0x4, 4, 8_999)
    st.write(0x0, 4, 0b011)  # CLKSOURCE=0
    port.advance(1_000_000)
    assert fired == [1_000_000]


def test_reading_ctrl_clears_countflag():
    port, st, _ = systick()
    st.write(0x4, 4, 99)
    st.write(0x0, 4, 0b101)  # no TICKINT
    port.advance(10_000)
    assert st.read(0x0, 4) >> 16 & 1
    assert not st.read(0x0, 4) >> 16 & 1


def test_writing_val_clears_the_counter():
    port, st, _ = systick()
    st.write(0x4, 4, 71_999)
    st.write(0x0, 4, 0b101)
    port.advance(100_000)
    st.write(0x8, 4, 1234)
    assert st.read(0x8, 4) == 0


def test_calib_reports_9000_for_one_millisecond():
    _, st, _ = systick()
    assert st.read(0xC, 4) & 0xFFFFFF == 9000


def test_calib_reads_0x00002328_with_a_reference_clock_and_no_skew():
    _, st, _ = systick()
    assert st.read(0xC, 4) == 0x0000_2328


def test_dwt_cycle_counter_counts_only_while_enabled():
    cycles = [0]
    dwt = DWT(SimPort(), cycles=lambda: cycles[0])
    cycles[0] = 100
    assert dwt.read(0x4, 4) == 0
    dwt.write(0x0, 4, 1)
    cycles[0] = 350
    assert dwt.read(0x4, 4) == 250
    dwt.write(0x0, 4, 0)
    cycles[0] = 1000
    assert dwt.read(0x4, 4) == 250


def test_the_controllers_loop_state_covers_every_attribute_but_its_listeners():
    # emulator.core.loops compares loop_state() instead of the attributes: a new attribute
    # must be added to it (and to STATE_ATTRS).
    c = ExceptionController(60)
    assert set(vars(c)) == set(ExceptionController.STATE_ATTRS) | {"listeners"}
    before = c.loop_state()
    for change in (lambda: c.set_pending(20), lambda: c.activate(20), lambda: c.set_priority(20, 0x30),
                   lambda: c.set_line(5, True)):
        change()
        assert c.loop_state() != before
        before = c.loop_state()
    c.enabled[30] = True
    assert c.loop_state() != before

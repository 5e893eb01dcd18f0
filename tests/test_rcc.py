"""RCC model against RM0008 §7."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.core.port import SimPort
from firmware_models.rcc import PERIPHERAL_CLOCKS, RCC, ClockGate

US = 1_000
MS = 1_000_000

CR_HSEON, CR_HSERDY, CR_HSEBYP, CR_PLLON, CR_PLLRDY = 1 << 16, 1 << 17, 1 << 18, 1 << 24, 1 << 25
CFGR_PLLSRC_HSE = 1 << 16


def make(**options: object) -> tuple[SimPort, RCC]:
    port = SimPort()
    return port, RCC(port, **options)


def rd(rcc: RCC, reg: str) -> int:
    return rcc.read(rcc.register(reg).offset, 4)


def wr(rcc: RCC, reg: str, value: int) -> None:
    rcc.write(rcc.register(reg).offset, 4, value)


def setbits(rcc: RCC, reg: str, mask: int) -> None:
    wr(rcc, reg, rd(rcc, reg) | mask)


def cubemx_72mhz(port: SimPort, rcc: RCC) -> None:
    """What HAL_RCC_OscConfig/ClockConfig do for the seed's CubeMX set-up."""
    setbits(rcc, "CR", CR_HSEON)
    port.advance(5 * MS)
    # PLLSRC=HSE, PLLMUL=x9 (0111), USBPRE=0 (/1.5); APB1 /2.
    wr(rcc, "CFGR", CFGR_PLLSRC_HSE | (0b0111 << 18) | (0b100 << 8))
    setbits(rcc, "CR", CR_PLLON)
    port.advance(1 * MS)
    wr(rcc, "CFGR", rd(rcc, "CFGR") | 0b10)


# -- reset values ---------------------------------------------------------------------------------


def test_cr_resets_with_hsi_on_ready_and_trim_16() -> None:
    _, rcc = make(hsi_cal=0x5A)
    assert rd(rcc, "CR") == 0x5A83


def test_cfgr_resets_to_zero_with_hsi_as_system_clock() -> None:
    _, rcc = make()
    assert rd(rcc, "CFGR") == 0


def test_ahbenr_resets_with_sram_and_flitf_clocks_enabled() -> None:
    _, rcc = make()
    assert rd(rcc, "AHBENR") == 0x14


def test_csr_resets_with_porrstf_and_pinrstf() -> None:
    _, rcc = make()
    assert rd(rcc, "CSR") == 0x0C00_0000


def test_reset_publishes_hsi_8mhz_everywhere_and_no_usb_clock() -> None:
    port, _ = make()
    c = port.clocks
    assert (c.sysclk, c.hclk, c.pclk1, c.pclk2, c.usbclk) == (8_000_000,) * 4 + (0,)


# -- ready flags ------------------------------------------------------------------------------------


def test_hserdy_is_clear_just_before_the_startup_delay() -> None:
    port, rcc = make(hse_startup_ns=2 * MS)
    setbits(rcc, "CR", CR_HSEON)
    port.advance(2 * MS - 1)
    assert not rd(rcc, "CR") & CR_HSERDY


def test_hserdy_sets_at_the_startup_delay() -> None:
    port, rcc = make(hse_startup_ns=2 * MS)
    setbits(rcc, "CR", CR_HSEON)
    port.advance(2 * MS)
    assert rd(rcc, "CR") & CR_HSERDY


def test_hserdy_never_sets_without_a_crystal() -> None:
    port, rcc = make(hse_hz=0)
    setbits(rcc, "CR", CR_HSEON)
    port.advance(500 * MS)
    assert not rd(rcc, "CR") & CR_HSERDY


def test_hserdy_clears_when_hse_is_switched_off() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_HSEON)
    port.advance(5 * MS)
    wr(rcc, "CR", rd(rcc, "CR") & ~CR_HSEON)
    assert not rd(rcc, "CR") & CR_HSERDY


def test_ready_flags_are_read_only() -> None:
    _, rcc = make()
    wr(rcc, "CR", 0x0000_0081 | CR_HSERDY | CR_PLLRDY)  # try to set HSERDY/PLLRDY, clear HSIRDY
    assert rd(rcc, "CR") & (CR_HSERDY | CR_PLLRDY | 0b10) == 0b10


def test_pllrdy_is_clear_before_the_lock_delay() -> None:
    port, rcc = make(pll_lock_ns=200 * US)
    setbits(rcc, "CR", CR_PLLON)
    port.advance(199 * US)
    assert not rd(rcc, "CR") & CR_PLLRDY


def test_pllrdy_sets_after_the_lock_delay() -> None:
    port, rcc = make(pll_lock_ns=200 * US)
    setbits(rcc, "CR", CR_PLLON)
    port.advance(200 * US)
    assert rd(rcc, "CR") & CR_PLLRDY


def test_pll_fed_by_hse_does_not_lock_before_hse_is_ready() -> None:
    port, rcc = make(hse_startup_ns=2 * MS, pll_lock_ns=200 * US)
    wr(rcc, "CFGR", CFGR_PLLSRC_HSE)
    setbits(rcc, "CR", CR_HSEON | CR_PLLON)
    port.advance(2 * MS + 100 * US)
    assert not rd(rcc, "CR") & CR_PLLRDY


def test_pll_fed_by_hse_locks_after_hse_ready_plus_lock_time() -> None:
    port, rcc = make(hse_startup_ns=2 * MS, pll_lock_ns=200 * US)
    wr(rcc, "CFGR", CFGR_PLLSRC_HSE)
    setbits(rcc, "CR", CR_HSEON | CR_PLLON)
    port.advance(2 * MS + 200 * US)
    assert rd(rcc, "CR") & CR_PLLRDY


def test_lsirdy_sets_after_the_lsi_startup_time() -> None:
    port, rcc = make(lsi_startup_ns=85 * US)
    wr(rcc, "CSR", 1)
    port.advance(85 * US)
    assert rd(rcc, "CSR") & 0b10


def test_lserdy_is_clear_before_the_lse_startup_time() -> None:
    port, rcc = make(lse_startup_ns=1_000 * MS)
    wr(rcc, "BDCR", 1)
    port.advance(999 * MS)
    assert not rd(rcc, "BDCR") & 0b10


def test_lserdy_sets_after_the_lse_startup_time() -> None:
    port, rcc = make(lse_startup_ns=1_000 * MS)
    wr(rcc, "BDCR", 1)
    port.advance(1_000 * MS)
    assert rd(rcc, "BDCR") & 0b10


def test_force_lsi_on_starts_lsi_without_lsion() -> None:
    port, rcc = make()
    rcc.force_lsi_on()
    port.advance(1 * MS)
    assert rcc.lsi_running and not rd(rcc, "CSR") & 1


# -- clock switching --------------------------------------------------------------------------------


def test_sws_stays_on_hsi_when_pll_is_selected_before_it_locks() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_PLLON)
    wr(rcc, "CFGR", 0b10)
    assert rd(rcc, "CFGR") >> 2 & 3 == 0


def test_sws_follows_sw_once_the_pll_locks() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_PLLON)
    wr(rcc, "CFGR", 0b10)
    port.advance(1 * MS)
    assert rd(rcc, "CFGR") >> 2 & 3 == 0b10


def test_sws_follows_sw_at_once_when_hse_is_already_ready() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_HSEON)
    port.advance(5 * MS)
    wr(rcc, "CFGR", 0b01)
    assert rd(rcc, "CFGR") >> 2 & 3 == 0b01


def test_sws_never_follows_sw_to_an_hse_that_never_starts() -> None:
    port, rcc = make(hse_hz=0)
    setbits(rcc, "CR", CR_HSEON)
    wr(rcc, "CFGR", 0b01)
    port.advance(100 * MS)
    assert rd(rcc, "CFGR") >> 2 & 3 == 0


def test_sws_is_read_only() -> None:
    _, rcc = make()
    wr(rcc, "CFGR", 0b1000)
    assert rd(rcc, "CFGR") >> 2 & 3 == 0


def test_clock_switch_is_recorded_as_an_event() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    switches = [e.data for e in port.events if e.kind == "clock_switch"]
    assert switches == [{"source": "PLL", "previous": "HSI", "sysclk": 72_000_000}]


def test_pllmul_write_is_ignored_while_the_pll_is_on() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_PLLON)
    wr(rcc, "CFGR", 0b0111 << 18)
    assert (rd(rcc, "CFGR") >> 18 & 0xF, len(port.guest_errors)) == (0, 1)


def test_pll_stays_on_while_it_is_the_system_clock() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    wr(rcc, "CR", rd(rcc, "CR") & ~CR_PLLON)
    assert rd(rcc, "CR") & (CR_PLLON | CR_PLLRDY) == CR_PLLON | CR_PLLRDY


def test_hse_stays_on_while_it_feeds_the_pll_system_clock() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    wr(rcc, "CR", rd(rcc, "CR") & ~CR_HSEON)
    assert rd(rcc, "CR") & CR_HSERDY


def test_hsi_stays_on_while_it_is_the_system_clock() -> None:
    _, rcc = make()
    wr(rcc, "CR", 0x80)
    assert rd(rcc, "CR") & 0b11 == 0b11


def test_hsi_can_be_switched_off_once_the_pll_runs_from_hse() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    wr(rcc, "CR", rd(rcc, "CR") & ~1)
    assert rd(rcc, "CR") & 0b11 == 0


def test_hsebyp_write_is_ignored_while_hse_is_on() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_HSEON)
    setbits(rcc, "CR", CR_HSEBYP)
    assert (rd(rcc, "CR") & CR_HSEBYP, len(port.guest_errors)) == (0, 1)


def test_sw_11_is_reported_and_switches_nothing() -> None:
    port, rcc = make()
    wr(rcc, "CFGR", 0b11)
    assert (rd(rcc, "CFGR") >> 2 & 3, len(port.guest_errors)) == (0, 1)


# -- clock tree ---------------------------------------------------------------------------------------


def test_cubemx_setup_gives_72_mhz_sysclk_and_hclk() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    assert (port.clocks.sysclk, port.clocks.hclk) == (72_000_000, 72_000_000)


def test_cubemx_setup_gives_36_mhz_pclk1_and_72_mhz_pclk2() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    assert (port.clocks.pclk1, port.clocks.pclk2) == (36_000_000, 72_000_000)


def test_cubemx_setup_gives_48_mhz_usb_clock() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    assert port.clocks.usbclk == 48_000_000


def test_hsi_half_through_pll_x9_gives_36_mhz() -> None:
    port, rcc = make()
    wr(rcc, "CFGR", 0b0111 << 18)  # PLLSRC=HSI/2, x9
    setbits(rcc, "CR", CR_PLLON)
    port.advance(1 * MS)
    wr(rcc, "CFGR", rd(rcc, "CFGR") | 0b10)
    assert (port.clocks.sysclk, port.clocks.usbclk) == (36_000_000, 24_000_000)


def test_usbpre_set_passes_a_48_mhz_pll_straight_to_usb() -> None:
    port, rcc = make()
    wr(rcc, "CFGR", (0b1010 << 18) | (1 << 22))  # HSI/2 x12 = 48 MHz, USB = PLL/1
    setbits(rcc, "CR", CR_PLLON)
    port.advance(1 * MS)
    assert port.clocks.usbclk == 48_000_000


def test_pllxtpre_halves_hse_before_the_pll() -> None:
    _, rcc = make()
    wr(rcc, "CFGR", CFGR_PLLSRC_HSE | (1 << 17) | (0b0111 << 18))
    assert rcc.pll_output_hz() == 36_000_000


def test_pllmul_1111_multiplies_by_16() -> None:
    _, rcc = make()
    wr(rcc, "CFGR", 0b1111 << 18)
    assert rcc.pll_output_hz() == 64_000_000


def test_usb_clock_is_zero_while_the_pll_does_not_run() -> None:
    port, rcc = make()
    wr(rcc, "CFGR", 0b0111 << 18)
    assert port.clocks.usbclk == 0


@pytest.mark.parametrize(("hpre", "divider"), [
    (0b0000, 1), (0b1000, 2), (0b1001, 4), (0b1010, 8), (0b1011, 16),
    (0b1100, 64), (0b1101, 128), (0b1110, 256), (0b1111, 512),
])
def test_ahb_prescaler_divides_sysclk_as_rm0008_table(hpre: int, divider: int) -> None:
    port, rcc = make()
    wr(rcc, "CFGR", hpre << 4)
    assert port.clocks.hclk == 8_000_000 // divider


@pytest.mark.parametrize(("ppre", "divider"), [(0b000, 1), (0b011, 1), (0b100, 2), (0b101, 4), (0b110, 8), (0b111, 16)])
def test_apb2_prescaler_divides_hclk(ppre: int, divider: int) -> None:
    port, rcc = make()
    wr(rcc, "CFGR", ppre << 11)
    assert port.clocks.pclk2 == 8_000_000 // divider


@given(st.integers(0, 15), st.integers(0, 7), st.integers(0, 7))
def test_apb_clocks_never_exceed_hclk(hpre: int, ppre1: int, ppre2: int) -> None:
    port, rcc = make()
    wr(rcc, "CFGR", hpre << 4 | ppre1 << 8 | ppre2 << 11)
    c = port.clocks
    assert c.pclk1 <= c.hclk <= c.sysclk and c.pclk2 <= c.hclk


def test_adc_prescaler_divides_pclk2() -> None:
    _, rcc = make()
    wr(rcc, "CFGR", 0b11 << 14)
    assert rcc.adcclk == 1_000_000


def test_a_frequency_change_notifies_the_machine() -> None:
    port, rcc = make()
    calls: list[int] = []
    port.clock_listeners.append(lambda: calls.append(port.clocks.hclk))
    wr(rcc, "CFGR", 0b1000 << 4)
    assert calls == [4_000_000]


def test_a_write_that_changes_no_frequency_does_not_notify() -> None:
    port, rcc = make()
    calls: list[int] = []
    port.clock_listeners.append(lambda: calls.append(1))
    wr(rcc, "CFGR", 0b0111 << 18)  # PLL multiplier only: the PLL is off
    assert calls == []


def test_pll_above_72_mhz_is_reported() -> None:
    port, rcc = make()
    wr(rcc, "CFGR", CFGR_PLLSRC_HSE | (0b1000 << 18))  # 8 MHz x10
    setbits(rcc, "CR", CR_HSEON | CR_PLLON)
    port.advance(5 * MS)
    assert any("72 MHz" in msg for _, msg in port.guest_errors)


def test_usbpre_cannot_be_cleared_while_the_usb_clock_is_enabled() -> None:
    port, rcc = make()
    wr(rcc, "CFGR", 1 << 22)
    wr(rcc, "APB1ENR", 1 << 23)
    wr(rcc, "CFGR", 0)
    assert rd(rcc, "CFGR") & (1 << 22)


def test_enabling_usb_without_a_48_mhz_clock_is_reported() -> None:
    port, rcc = make()
    wr(rcc, "APB1ENR", 1 << 23)
    assert any("48 MHz" in msg for _, msg in port.guest_errors)


# -- interrupts -------------------------------------------------------------------------------------------


def test_ready_interrupt_raises_irq_5_when_enabled() -> None:
    port, rcc = make()
    wr(rcc, "CIR", 1 << 11)  # HSERDYIE
    setbits(rcc, "CR", CR_HSEON)
    port.advance(5 * MS)
    assert port.irq_levels.get(5) is True


def test_ready_flag_is_not_set_without_its_interrupt_enable() -> None:
    port, rcc = make()
    setbits(rcc, "CR", CR_HSEON)
    port.advance(5 * MS)
    assert rd(rcc, "CIR") & 0x1F == 0


def test_clear_bit_clears_the_ready_flag_and_the_irq() -> None:
    port, rcc = make()
    wr(rcc, "CIR", 1 << 12)  # PLLRDYIE
    setbits(rcc, "CR", CR_PLLON)
    port.advance(1 * MS)
    wr(rcc, "CIR", (1 << 12) | (1 << 20))  # PLLRDYC
    assert (rd(rcc, "CIR") & 0x1F, port.irq_levels[5]) == (0, False)


def test_cir_clear_bits_read_as_zero() -> None:
    _, rcc = make()
    wr(rcc, "CIR", 0x009F_0000)
    assert rd(rcc, "CIR") == 0


def test_ready_flags_in_cir_are_read_only() -> None:
    _, rcc = make()
    wr(rcc, "CIR", 0x9F)
    assert rd(rcc, "CIR") == 0


# -- clock gating and peripheral resets ----------------------------------------------------------------------


def test_gpioa_clock_gate_is_apb2_bit_2() -> None:
    assert PERIPHERAL_CLOCKS["GPIOA"] == ClockGate("APB2", 2)


def test_usb_clock_gate_is_apb1_bit_23() -> None:
    assert PERIPHERAL_CLOCKS["USB"] == ClockGate("APB1", 23)


@pytest.mark.parametrize(("name", "gate"), [
    ("AFIO", ClockGate("APB2", 0)), ("GPIOE", ClockGate("APB2", 6)), ("USART1", ClockGate("APB2", 14)),
    ("USART2", ClockGate("APB1", 17)), ("USART3", ClockGate("APB1", 18)), ("BKP", ClockGate("APB1", 27)),
    ("PWR", ClockGate("APB1", 28)),
])
def test_peripheral_clock_gates_follow_rm0008(name: str, gate: ClockGate) -> None:
    assert PERIPHERAL_CLOCKS[name] == gate


@pytest.mark.parametrize("name", ["IWDG", "FLASH", "DBGMCU"])
def test_some_peripherals_are_always_clocked(name: str) -> None:
    _, rcc = make()
    assert rcc.peripheral_clock_enabled(name)


def test_clock_enabled_follows_the_enable_register() -> None:
    _, rcc = make()
    wr(rcc, "APB2ENR", 1 << 3)
    assert (rcc.clock_enabled("APB2", 3), rcc.clock_enabled("APB2", 2)) == (True, False)


def test_peripheral_clock_is_off_after_reset() -> None:
    _, rcc = make()
    assert not rcc.peripheral_clock_enabled("USART1")


def test_setting_a_reset_bit_reports_that_peripheral() -> None:
    _, rcc = make()
    seen: list[str] = []
    rcc.on_peripheral_reset = seen.append  # type: ignore[method-assign]
    wr(rcc, "APB2RSTR", (1 << 2) | (1 << 14))
    assert seen == ["GPIOA", "USART1"]


def test_a_reset_bit_held_at_one_is_reported_once() -> None:
    _, rcc = make()
    seen: list[str] = []
    rcc.on_peripheral_reset = seen.append  # type: ignore[method-assign]
    wr(rcc, "APB1RSTR", 1 << 23)
    wr(rcc, "APB1RSTR", 1 << 23)
    assert seen == ["USB"]


# -- backup domain -------------------------------------------------------------------------------------------


def test_bdcr_survives_a_system_reset() -> None:
    port, rcc = make()
    wr(rcc, "BDCR", 1 | (0b01 << 8) | (1 << 15))
    port.advance(4_000 * MS)
    rcc.reset()
    assert rd(rcc, "BDCR") == 0b11 | (0b01 << 8) | (1 << 15)


def test_bdcr_is_cleared_by_a_power_on_reset() -> None:
    _, rcc = make()
    wr(rcc, "BDCR", 1 | (1 << 15))
    rcc.power_on_reset()
    assert rd(rcc, "BDCR") == 0


def test_bdcr_lse_bits_ignore_writes_without_dbp() -> None:
    port, rcc = make(backup_write_enabled=lambda: False)
    wr(rcc, "BDCR", 1 | (0b01 << 8))
    assert (rd(rcc, "BDCR"), len(port.guest_errors)) == (0, 1)


def test_bdrst_resets_the_backup_domain_and_tells_the_machine() -> None:
    port, rcc = make()
    called: list[bool] = []
    rcc.on_backup_domain_reset = lambda: called.append(True)  # type: ignore[method-assign]
    wr(rcc, "BDCR", 1 | (0b10 << 8) | (1 << 15))
    wr(rcc, "BDCR", rd(rcc, "BDCR") | (1 << 16))
    wr(rcc, "BDCR", 0)
    assert (rd(rcc, "BDCR"), called) == (0, [True])


def test_rtcsel_cannot_change_once_selected() -> None:
    port, rcc = make()
    wr(rcc, "BDCR", 0b01 << 8)
    wr(rcc, "BDCR", 0b10 << 8)
    assert rd(rcc, "BDCR") >> 8 & 3 == 0b01


# -- reset flags ---------------------------------------------------------------------------------------------


def test_software_reset_sets_sftrstf_and_pinrstf() -> None:
    _, rcc = make()
    wr(rcc, "CSR", 1 << 24)  # RMVF
    rcc.note_reset("software")
    assert rd(rcc, "CSR") >> 24 == 0b0001_0100


def test_iwdg_reset_sets_iwdgrstf_and_pinrstf() -> None:
    _, rcc = make()
    wr(rcc, "CSR", 1 << 24)
    rcc.note_reset("iwdg")
    assert rd(rcc, "CSR") >> 24 == 0b0010_0100


def test_power_on_reset_flags_are_porrstf_and_pinrstf_only() -> None:
    _, rcc = make()
    rcc.note_reset("iwdg")
    rcc.note_reset("power_on")
    assert rd(rcc, "CSR") == 0x0C00_0000


def test_rmvf_clears_every_reset_flag() -> None:
    _, rcc = make()
    rcc.note_reset("wwdg")
    wr(rcc, "CSR", 1 << 24)
    assert rd(rcc, "CSR") == 0


def test_reset_flags_survive_a_system_reset() -> None:
    _, rcc = make()
    rcc.note_reset("low_power")
    rcc.reset()
    assert rd(rcc, "CSR") >> 24 == 0b1000_1100


def test_unknown_reset_cause_is_rejected() -> None:
    _, rcc = make()
    with pytest.raises(ValueError):
        rcc.note_reset("brownout")


def test_system_reset_returns_to_hsi_at_8_mhz() -> None:
    port, rcc = make()
    cubemx_72mhz(port, rcc)
    rcc.reset()
    assert (rd(rcc, "CFGR"), port.clocks.sysclk, rd(rcc, "CR") & 0x0303_0003) == (0, 8_000_000, 0b11)


def test_system_reset_stops_lsi() -> None:
    port, rcc = make()
    wr(rcc, "CSR", 1)
    port.advance(1 * MS)
    rcc.reset()
    port.advance(1 * MS)
    assert rd(rcc, "CSR") & 0b11 == 0


def test_lse_startup_continues_through_a_system_reset_that_clears_the_scheduler() -> None:
    port, rcc = make(lse_startup_ns=1_000 * MS)
    wr(rcc, "BDCR", 1)
    port.advance(400 * MS)
    port.scheduler.clear()  # what the machine does on a system reset
    rcc.reset()
    port.advance(600 * MS)
    assert rd(rcc, "BDCR") & 0b10

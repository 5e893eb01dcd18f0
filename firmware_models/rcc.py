"""Reset and clock control (RCC) of the STM32F103, RM0008 §7.

The model keeps the oscillators' ready flags honest in emulated time (HSERDY
only after the crystal's start-up delay, PLLRDY only after lock, SWS only once
the selected source is ready), derives the clock tree from the firmware's own
register set-up and publishes it in ``port.clocks``.  It also owns the reset
flags in RCC_CSR and the peripheral clock gates the machine consults.

Options (keyword arguments of :class:`RCC`):

``hse_hz``            the board's crystal (8 MHz on the seed's board); 0 = no crystal,
                      HSERDY then never sets (HAL's HSE timeout path).
``hse_startup_ns``    crystal start-up, datasheet tSU(HSE) ≈ 2 ms typical for 8 MHz.
``pll_lock_ns``       datasheet tLOCK, 200 µs max.
``hsi_startup_ns``    datasheet tSU(HSI), 1–2 µs.
``lsi_startup_ns``    datasheet tSU(LSI), 85 µs max.
``lse_present``       a 32.768 kHz crystal is fitted; ``lse_startup_ns`` its start-up
                      (datasheet tSU(LSE) ≈ 3 s typical).
``hsi_cal``           factory HSICAL value (chip specific; any 8-bit value).
``backup_write_enabled``  callable telling whether PWR_CR.DBP is set: LSEON, LSEBYP,
                      RTCSEL and RTCEN sit in the backup domain (RM0008 §7.3.9 note).
                      ``None`` means no PWR model is wired and writes are allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware_models.regs import Access, Field, Peripheral, Register, bits, fields

if TYPE_CHECKING:
    from firmware_models.port import Port, Timer

HSI_HZ = 8_000_000
LSI_HZ = 40_000
LSE_HZ = 32_768

RCC_IRQ = 5

RESET_CAUSES = ("power_on", "software", "iwdg", "wwdg", "pin", "low_power")

# SW/SWS encodings (RM0008 §7.3.2).
SRC_HSI, SRC_HSE, SRC_PLL = 0, 1, 2
SOURCE_NAMES = {SRC_HSI: "HSI", SRC_HSE: "HSE", SRC_PLL: "PLL", 3: "invalid"}

# Datasheet limits (STM32F103x8/xB and xC/xD/xE, "general operating conditions").
MAX_SYSCLK = 72_000_000
MAX_PCLK1 = 36_000_000
USB_HZ = 48_000_000


def _rst_names(prefix: str, names: dict[int, str]) -> tuple[Field, ...]:
    return tuple(Field(f"{n}{prefix}", b) for b, n in sorted(names.items()))


# Bit positions shared by APB2RSTR/APB2ENR and APB1RSTR/APB1ENR (RM0008 §7.3.4–7.3.8),
# named by the register-bit stem (IOPA -> GPIOA is mapped below).
_APB2_BITS = {
    0: "AFIO", 2: "IOPA", 3: "IOPB", 4: "IOPC", 5: "IOPD", 6: "IOPE", 7: "IOPF", 8: "IOPG",
    9: "ADC1", 10: "ADC2", 11: "TIM1", 12: "SPI1", 13: "TIM8", 14: "USART1", 15: "ADC3",
    19: "TIM9", 20: "TIM10", 21: "TIM11",
}
_APB1_BITS = {
    0: "TIM2", 1: "TIM3", 2: "TIM4", 3: "TIM5", 4: "TIM6", 5: "TIM7", 6: "TIM12", 7: "TIM13",
    8: "TIM14", 11: "WWDG", 14: "SPI2", 15: "SPI3", 17: "USART2", 18: "USART3", 19: "UART4",
    20: "UART5", 21: "I2C1", 22: "I2C2", 23: "USB", 25: "CAN", 27: "BKP", 28: "PWR", 29: "DAC",
}
_AHB_BITS = {0: "DMA1", 1: "DMA2", 2: "SRAM", 4: "FLITF", 6: "CRC", 8: "FSMC", 10: "SDIO"}


def _periph_name(stem: str) -> str:
    return "GPIO" + stem[3] if stem.startswith("IOP") else stem


@dataclass(frozen=True)
class ClockGate:
    """Where a peripheral's clock enable lives: bus (``AHB``/``APB1``/``APB2``) and bit.

    ``reset_bit`` is the same position in APBxRSTR (AHB peripherals have no
    reset register on the F103).
    """

    bus: str
    bit: int

    @property
    def enable_register(self) -> str:
        return {"AHB": "AHBENR", "APB1": "APB1ENR", "APB2": "APB2ENR"}[self.bus]

    @property
    def reset_register(self) -> str | None:
        return {"APB1": "APB1RSTR", "APB2": "APB2RSTR"}.get(self.bus)


def _gates() -> dict[str, ClockGate | None]:
    table: dict[str, ClockGate | None] = {}
    for bit, stem in _APB2_BITS.items():
        table[_periph_name(stem)] = ClockGate("APB2", bit)
    for bit, stem in _APB1_BITS.items():
        table[_periph_name(stem)] = ClockGate("APB1", bit)
    for bit, stem in _AHB_BITS.items():
        if stem not in ("SRAM", "FLITF"):
            table[stem] = ClockGate("AHB", bit)
    # Always clocked while the CPU runs: the IWDG runs from LSI (RM0008 §19.1), the flash
    # interface and SRAM enables only gate their clocks in Sleep mode (§7.3.6, FLITFEN/SRAMEN),
    # DBGMCU sits on the PPB.
    table.update(IWDG=None, FLASH=None, SRAM=None, DBGMCU=None)
    return table


#: Peripheral name -> its clock gate (``None`` = always clocked in Run mode).
PERIPHERAL_CLOCKS: dict[str, ClockGate | None] = _gates()


class RCC(Peripheral):
    NAME = "RCC"
    SIZE = 0x400
    IRQ = RCC_IRQ
    PERIPHERAL_CLOCKS = PERIPHERAL_CLOCKS

    REGISTERS = (
        # §7.3.1.  Reset 0x0000_XX83: HSION, HSIRDY, HSITRIM=16; HSICAL is factory data.
        Register("CR", 0x00, 0x0000_0083, fields(
            ("HSION", 0), ("HSIRDY", 1, 1, Access.RO), ("HSITRIM", 3, 5), ("HSICAL", 8, 8, Access.RO),
            ("HSEON", 16), ("HSERDY", 17, 1, Access.RO), ("HSEBYP", 18), ("CSSON", 19),
            ("PLLON", 24), ("PLLRDY", 25, 1, Access.RO),
        ), on_write="_cr_written"),
        # §7.3.2
        Register("CFGR", 0x04, 0, fields(
            ("SW", 0, 2), ("SWS", 2, 2, Access.RO), ("HPRE", 4, 4), ("PPRE1", 8, 3), ("PPRE2", 11, 3),
            ("ADCPRE", 14, 2), ("PLLSRC", 16), ("PLLXTPRE", 17), ("PLLMUL", 18, 4), ("USBPRE", 22),
            ("MCO", 24, 3),
        ), on_write="_cfgr_written"),
        # §7.3.3: ready flags (r), interrupt enables (rw), clear bits (w, read as 0).
        Register("CIR", 0x08, 0, (
            *bits(("LSIRDYF", 0), ("LSERDYF", 1), ("HSIRDYF", 2), ("HSERDYF", 3), ("PLLRDYF", 4),
                  ("CSSF", 7), access=Access.RO),
            *bits(("LSIRDYIE", 8), ("LSERDYIE", 9), ("HSIRDYIE", 10), ("HSERDYIE", 11), ("PLLRDYIE", 12)),
            *bits(("LSIRDYC", 16), ("LSERDYC", 17), ("HSIRDYC", 18), ("HSERDYC", 19), ("PLLRDYC", 20),
                  ("CSSC", 23), access=Access.WO),
        ), on_write="_cir_written"),
        Register("APB2RSTR", 0x0C, 0, _rst_names("RST", _APB2_BITS), on_write="_apb2rstr_written"),
        Register("APB1RSTR", 0x10, 0, _rst_names("RST", _APB1_BITS), on_write="_apb1rstr_written"),
        # §7.3.6: SRAMEN and FLITFEN are set at reset.
        Register("AHBENR", 0x14, 0x0000_0014, _rst_names("EN", _AHB_BITS)),
        Register("APB2ENR", 0x18, 0, _rst_names("EN", _APB2_BITS)),
        Register("APB1ENR", 0x1C, 0, _rst_names("EN", _APB1_BITS), on_write="_apb1enr_written"),
        # §7.3.9: backup domain, reset only by a backup domain reset.
        Register("BDCR", 0x20, 0, fields(
            ("LSEON", 0), ("LSERDY", 1, 1, Access.RO), ("LSEBYP", 2), ("RTCSEL", 8, 2), ("RTCEN", 15),
            ("BDRST", 16),
        ), on_write="_bdcr_written"),
        # §7.3.10: reset value 0x0C00_0000 (PORRSTF and PINRSTF after power-on); the flags
        # are reset only by a power reset, LSION by any system reset.
        Register("CSR", 0x24, 0x0C00_0000, fields(
            ("LSION", 0), ("LSIRDY", 1, 1, Access.RO), ("RMVF", 24),
            ("PINRSTF", 26, 1, Access.RO), ("PORRSTF", 27, 1, Access.RO), ("SFTRSTF", 28, 1, Access.RO),
            ("IWDGRSTF", 29, 1, Access.RO), ("WWDGRSTF", 30, 1, Access.RO), ("LPWRRSTF", 31, 1, Access.RO),
        ), on_write="_csr_written"),
    )

    _CSR_FLAGS = 0xFC00_0000
    _BDCR_PROTECTED = ("LSEON", "LSEBYP", "RTCSEL", "RTCEN")

    def __init__(
        self,
        port: Port,
        *,
        name: str | None = None,
        hse_hz: int = 8_000_000,
        hse_startup_ns: int = 2_000_000,
        pll_lock_ns: int = 200_000,
        hsi_startup_ns: int = 2_000,
        lsi_startup_ns: int = 85_000,
        lse_present: bool = True,
        lse_startup_ns: int = 3_000_000_000,
        hsi_cal: int = 0x80,
        backup_write_enabled: Callable[[], bool] | None = None,
    ) -> None:
        self.hse_hz = hse_hz
        self.hse_startup_ns = hse_startup_ns
        self.pll_lock_ns = pll_lock_ns
        self.hsi_startup_ns = hsi_startup_ns
        self.lsi_startup_ns = lsi_startup_ns
        self.lse_present = lse_present
        self.lse_startup_ns = lse_startup_ns
        self.hsi_cal = hsi_cal & 0xFF
        self.backup_write_enabled = backup_write_enabled
        self._timers: dict[str, Timer] = {}
        self._lsi_forced = False
        self._irq_level = False
        self.adcclk = 0
        super().__init__(port, name)

    # -- resets ---------------------------------------------------------------------
    def reset(self) -> None:
        """System reset: everything but the backup domain (BDCR) and CSR's reset flags."""
        keep_bdcr = self.values.get("BDCR", 0)
        keep_flags = self.values.get("CSR", 0x0C00_0000) & self._CSR_FLAGS
        for key in [k for k in self._timers if k != "LSE"]:
            self._cancel(key)
        lse = self._timers.pop("LSE", None)
        if lse is not None:
            # The LSE keeps starting up through a system reset (backup domain).  Re-arm it in
            # case the machine cleared its scheduler for the reset.
            self.port.cancel(lse)
            self._schedule("LSE", max(0, lse.due_ns - self.port.now_ns()), lambda: self._became_ready("LSE"))
        super().reset()
        self.values["BDCR"] = keep_bdcr
        self.values["CSR"] = keep_flags
        self.set_field("CR", "HSICAL", self.hsi_cal)
        self._lsi_forced = False
        self._after_change()

    def power_on_reset(self) -> None:
        """Power-on with no battery: the backup domain and the reset flags start afresh."""
        self._cancel("LSE")
        self.values["BDCR"] = 0
        self.values["CSR"] = 0x0C00_0000
        self.reset()

    def note_reset(self, cause: str) -> None:
        """Set RCC_CSR's reset flags for a reset of ``cause`` (one of :data:`RESET_CAUSES`).

        Every internal reset source drives the NRST pin low through the reset pulse
        generator (RM0008 §7.1.2, Figure 8 "Simplified diagram of the reset circuit"),
        so the pin-reset detector fires too: PINRSTF accompanies each of them.  A power
        reset leaves CSR at its reset value, PORRSTF|PINRSTF (§7.3.10).
        """
        flag = {
            "power_on": "PORRSTF", "software": "SFTRSTF", "iwdg": "IWDGRSTF", "wwdg": "WWDGRSTF",
            "pin": "PINRSTF", "low_power": "LPWRRSTF",
        }.get(cause)
        if flag is None:
            raise ValueError(f"unknown reset cause {cause!r}; expected one of {RESET_CAUSES}")
        if cause == "power_on":
            self.values["CSR"] = (self.values["CSR"] & ~self._CSR_FLAGS) | 0x0C00_0000
            return
        self.set_field("CSR", flag, 1)
        self.set_field("CSR", "PINRSTF", 1)

    # -- machine-facing API -----------------------------------------------------------
    def clock_enabled(self, bus: str, bit: int) -> bool:
        """Is bit ``bit`` of the ``bus`` (``AHB``/``APB1``/``APB2``) enable register set?"""
        reg = {"AHB": "AHBENR", "APB1": "APB1ENR", "APB2": "APB2ENR"}.get(bus.upper())
        if reg is None:
            raise ValueError(f"unknown bus {bus!r}")
        return bool((self.values[reg] >> bit) & 1)

    def peripheral_clock_enabled(self, name: str) -> bool:
        """Is ``name`` (a key of :data:`PERIPHERAL_CLOCKS`) clocked?"""
        gate = PERIPHERAL_CLOCKS[name]
        return True if gate is None else self.clock_enabled(gate.bus, gate.bit)

    def on_peripheral_reset(self, name: str) -> None:
        """An APBxRSTR bit went to 1: the machine resets model ``name``.  Overridable."""

    def on_backup_domain_reset(self) -> None:
        """BDCR.BDRST went to 1: the machine resets BKP data and the RTC.  Overridable."""

    def force_lsi_on(self) -> None:
        """The IWDG was started: LSI is forced on and cannot be disabled (RM0008 §19.3)."""
        self._lsi_forced = True
        self._lsi_update()

    @property
    def lsi_running(self) -> bool:
        return bool(self.field("CSR", "LSIRDY"))

    def compute_clocks(self) -> dict[str, int]:
        """The clock tree from the current registers (RM0008 §7.2, Figure 8)."""
        cfgr = self.values["CFGR"]
        reg = self.register("CFGR")
        pll = self.pll_output_hz() if self.field("CR", "PLLRDY") else 0
        sws = reg.field("SWS").get(cfgr)
        sysclk = {SRC_HSI: HSI_HZ, SRC_HSE: self.hse_hz, SRC_PLL: pll}.get(sws, 0)
        hpre = reg.field("HPRE").get(cfgr)
        hclk = sysclk >> ((hpre & 7) + 1 + (1 if hpre >= 0b1100 else 0)) if hpre & 8 else sysclk
        pclk1 = self._apb(hclk, reg.field("PPRE1").get(cfgr))
        pclk2 = self._apb(hclk, reg.field("PPRE2").get(cfgr))
        usb = 0
        if pll:
            usb = pll if reg.field("USBPRE").get(cfgr) else pll * 2 // 3
        return {"sysclk": sysclk, "hclk": hclk, "pclk1": pclk1, "pclk2": pclk2, "usbclk": usb}

    def pll_input_hz(self) -> int:
        if not self.field("CFGR", "PLLSRC"):
            return HSI_HZ // 2
        return self.hse_hz // (2 if self.field("CFGR", "PLLXTPRE") else 1)

    def pll_output_hz(self) -> int:
        # PLLMUL 0000 = x2 ... 1110 = x16, 1111 = x16 as well (§7.3.2).
        return self.pll_input_hz() * min(self.field("CFGR", "PLLMUL") + 2, 16)

    @staticmethod
    def _apb(hclk: int, ppre: int) -> int:
        return hclk >> ((ppre & 3) + 1) if ppre & 4 else hclk

    # -- register side effects ------------------------------------------------------------
    def _cr_written(self, old: int, new: int, raw: int) -> None:
        reg = self.register("CR")
        f = reg.field
        cfgr = self.values["CFGR"]
        sw, sws = self.field("CFGR", "SW"), self.field("CFGR", "SWS")
        pllsrc = self.register("CFGR").field("PLLSRC").get(cfgr)
        pll_is_sys = SRC_PLL in (sw, sws)
        # §7.3.1: HSEBYP "can be written only if the HSE oscillator is disabled".
        if f("HSEON").get(old) and f("HSEBYP").get(new) != f("HSEBYP").get(old):
            new = f("HSEBYP").put(new, f("HSEBYP").get(old))
            self.port.guest_error(self.name, "CR.HSEBYP written while HSEON=1: ignored")
        # §7.3.1: an oscillator in use (directly or through the PLL) cannot be switched off;
        # the bit stays set.
        if not f("HSION").get(new) and (SRC_HSI in (sw, sws) or (pll_is_sys and pllsrc == 0)):
            new = f("HSION").put(new, 1)
        if not f("HSEON").get(new) and f("HSEON").get(old) and (
            sws == SRC_HSE or (sws == SRC_PLL and pllsrc == 1)
        ):
            new = f("HSEON").put(new, 1)
        if not f("PLLON").get(new) and pll_is_sys:
            new = f("PLLON").put(new, 1)
        self.values["CR"] = new

        self._oscillator("HSI", f("HSION").get(old), f("HSION").get(new))
        self._oscillator("HSE", f("HSEON").get(old), f("HSEON").get(new))
        if f("PLLON").get(new) and not f("PLLON").get(old):
            self._maybe_start_pll_lock()
        elif f("PLLON").get(old) and not f("PLLON").get(new):
            self._cancel("PLL")
            self.set_field("CR", "PLLRDY", 0)
        self._after_change()

    def _cfgr_written(self, old: int, new: int, raw: int) -> None:
        reg = self.register("CFGR")
        # §7.3.2: PLLSRC, PLLXTPRE and PLLMUL "can be written only when PLL is disabled".
        if self.field("CR", "PLLON"):
            for name in ("PLLSRC", "PLLXTPRE", "PLLMUL"):
                fld = reg.field(name)
                if fld.get(new) != fld.get(old):
                    new = fld.put(new, fld.get(old))
                    self.port.guest_error(self.name, f"CFGR.{name} written while PLLON=1: ignored")
        # §7.3.2: USBPRE "can't be reset if the USB clock is enabled".
        fld = reg.field("USBPRE")
        if fld.get(old) and not fld.get(new) and self.peripheral_clock_enabled("USB"):
            new = fld.put(new, 1)
            self.port.guest_error(self.name, "CFGR.USBPRE cleared while USBEN=1: ignored")
        if reg.field("SW").get(new) == 3:
            self.port.guest_error(self.name, "CFGR.SW=11 is not allowed: no clock switch")
        self.values["CFGR"] = new
        self._after_change()

    def _cir_written(self, old: int, new: int, raw: int) -> None:
        for src in ("LSI", "LSE", "HSI", "HSE", "PLL"):
            if self.field("CIR", f"{src}RDYC"):
                self.set_field("CIR", f"{src}RDYF", 0)
        if self.field("CIR", "CSSC"):
            self.set_field("CIR", "CSSF", 0)
        # The clear bits are commands: nothing of them is kept.
        self.values["CIR"] &= ~0x009F_0000
        self._update_irq()

    def _apb2rstr_written(self, old: int, new: int, raw: int) -> None:
        self._peripheral_resets(_APB2_BITS, old, new)

    def _apb1rstr_written(self, old: int, new: int, raw: int) -> None:
        self._peripheral_resets(_APB1_BITS, old, new)

    def _peripheral_resets(self, table: dict[int, str], old: int, new: int) -> None:
        rising = new & ~old
        for bit, stem in table.items():
            if rising >> bit & 1:
                self.port.event("peripheral_reset", periph=_periph_name(stem))
                self.on_peripheral_reset(_periph_name(stem))

    def _apb1enr_written(self, old: int, new: int, raw: int) -> None:
        usb_bit = PERIPHERAL_CLOCKS["USB"].bit  # type: ignore[union-attr]
        if new >> usb_bit & 1 and not old >> usb_bit & 1:
            usb = self.compute_clocks()["usbclk"]
            if usb != USB_HZ:
                self.port.guest_error(
                    self.name, f"USB clock enabled at {usb} Hz; the USB peripheral needs 48 MHz (RM0008 §7.2)")

    def _bdcr_written(self, old: int, new: int, raw: int) -> None:
        reg = self.register("BDCR")
        if self.backup_write_enabled is not None and not self.backup_write_enabled():
            changed = [n for n in self._BDCR_PROTECTED if reg.field(n).get(new) != reg.field(n).get(old)]
            for n in self._BDCR_PROTECTED:
                new = reg.field(n).put(new, reg.field(n).get(old))
            if changed:
                self.port.guest_error(
                    self.name, f"BDCR.{'/'.join(changed)} written with PWR_CR.DBP=0: ignored (RM0008 §7.3.9)")
        # §7.3.9: LSEBYP "can be written only when the external 32 kHz oscillator is disabled".
        if reg.field("LSEON").get(old) and reg.field("LSEBYP").get(new) != reg.field("LSEBYP").get(old):
            new = reg.field("LSEBYP").put(new, reg.field("LSEBYP").get(old))
            self.port.guest_error(self.name, "BDCR.LSEBYP written while LSEON=1: ignored")
        # §7.3.9: once RTCSEL is set it can only be changed by a backup domain reset.
        rtcsel = reg.field("RTCSEL")
        if rtcsel.get(old) and rtcsel.get(new) != rtcsel.get(old) and not reg.field("BDRST").get(new):
            new = rtcsel.put(new, rtcsel.get(old))
            self.port.guest_error(self.name, "BDCR.RTCSEL changed without a backup domain reset: ignored")
        self.values["BDCR"] = new
        if reg.field("BDRST").get(new) and not reg.field("BDRST").get(old):
            # The whole backup domain resets: LSE stops, RTC selection cleared.
            self._cancel("LSE")
            self.values["BDCR"] = reg.field("BDRST").put(0, 1)
            self.port.event("backup_domain_reset")
            self.on_backup_domain_reset()
            return
        self._oscillator("LSE", reg.field("LSEON").get(old), reg.field("LSEON").get(new))
        self._update_irq()

    def _csr_written(self, old: int, new: int, raw: int) -> None:
        if self.field("CSR", "RMVF"):
            self.values["CSR"] &= ~self._CSR_FLAGS
        self.set_field("CSR", "RMVF", 0)
        self._lsi_update()

    # -- oscillators ------------------------------------------------------------------------
    def _oscillator(self, src: str, was_on: int, is_on: int) -> None:
        reg, bit = ("BDCR", "LSERDY") if src == "LSE" else ("CR", f"{src}RDY")
        if is_on and not was_on:
            delay = self._startup_ns(src)
            if delay is not None:
                self._schedule(src, delay, lambda: self._became_ready(src))
        elif was_on and not is_on:
            self._cancel(src)
            self.set_field(reg, bit, 0)
            if src in ("HSE", "HSI") and self.field("CR", "PLLRDY") and self._pll_source() == src:
                # The PLL lost its input (it is not the system clock, or the write was refused).
                self.set_field("CR", "PLLRDY", 0)

    def _startup_ns(self, src: str) -> int | None:
        if src == "HSI":
            return self.hsi_startup_ns
        if src == "HSE":
            if self.field("CR", "HSEBYP"):
                return 1_000  # an external clock is "ready" after a few HSE cycles
            return self.hse_startup_ns if self.hse_hz else None
        if src == "LSE":
            if self.field("BDCR", "LSEBYP"):
                return 1_000_000
            return self.lse_startup_ns if self.lse_present else None
        return self.lsi_startup_ns

    def _became_ready(self, src: str) -> None:
        self._timers.pop(src, None)
        if src == "LSE":
            self.set_field("BDCR", "LSERDY", 1)
        elif src == "LSI":
            self.set_field("CSR", "LSIRDY", 1)
        else:
            self.set_field("CR", f"{src}RDY", 1)
        # §7.3.3: xxxRDYF is set when the clock becomes stable *and* xxxRDYIE is set.
        if self.field("CIR", f"{src}RDYIE"):
            self.set_field("CIR", f"{src}RDYF", 1)
        if src in ("HSE", "HSI"):
            self._maybe_start_pll_lock()
        self._after_change()

    def _pll_source(self) -> str:
        return "HSE" if self.field("CFGR", "PLLSRC") else "HSI"

    def _maybe_start_pll_lock(self) -> None:
        src = self._pll_source()
        if (self.field("CR", "PLLON") and not self.field("CR", "PLLRDY") and "PLL" not in self._timers
                and self.field("CR", f"{src}RDY")):
            self._schedule("PLL", self.pll_lock_ns, self._pll_locked)

    def _pll_locked(self) -> None:
        self._timers.pop("PLL", None)
        if not (self.field("CR", "PLLON") and self.field("CR", f"{self._pll_source()}RDY")):
            return
        out = self.pll_output_hz()
        if out > MAX_SYSCLK:
            self.port.guest_error(self.name, f"PLL output {out} Hz exceeds the 72 MHz maximum")
        self._became_ready("PLL")

    def _lsi_update(self) -> None:
        on = bool(self.field("CSR", "LSION")) or self._lsi_forced
        running = bool(self.field("CSR", "LSIRDY")) or "LSI" in self._timers
        if on and not running:
            self._schedule("LSI", self.lsi_startup_ns, lambda: self._became_ready("LSI"))
        elif running and not on:
            self._cancel("LSI")
            self.set_field("CSR", "LSIRDY", 0)
        self._update_irq()

    def _schedule(self, key: str, delay: int, callback: Callable[[], None]) -> None:
        self._cancel(key)
        self._timers[key] = self.port.schedule(delay, callback, f"{self.name}.{key}")

    def _cancel(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            self.port.cancel(timer)

    # -- clock switch, clock tree, interrupt ----------------------------------------------------
    def _source_ready(self, src: int) -> bool:
        bit = {SRC_HSI: "HSIRDY", SRC_HSE: "HSERDY", SRC_PLL: "PLLRDY"}.get(src)
        return bit is not None and bool(self.field("CR", bit))

    def _after_change(self) -> None:
        # §7.2.6: "If a clock source which is not yet ready is selected, the switch will
        # occur when the clock source will be ready."
        sw, sws = self.field("CFGR", "SW"), self.field("CFGR", "SWS")
        if sw != sws and self._source_ready(sw):
            self.set_field("CFGR", "SWS", sw)
            clocks = self.compute_clocks()
            self.port.event("clock_switch", source=SOURCE_NAMES[sw], previous=SOURCE_NAMES[sws],
                            sysclk=clocks["sysclk"])
        self._publish_clocks()
        self._update_irq()

    def _publish_clocks(self) -> None:
        new: dict[str, Any] = self.compute_clocks()
        new["hse_hz"] = self.hse_hz
        clocks = self.port.clocks
        changed = {k: v for k, v in new.items() if getattr(clocks, k) != v}
        adcpre = self.field("CFGR", "ADCPRE")
        self.adcclk = new["pclk2"] // (2 * (adcpre + 1))
        if not changed:
            return
        for k, v in changed.items():
            setattr(clocks, k, v)
        if new["sysclk"] > MAX_SYSCLK or new["hclk"] > MAX_SYSCLK or new["pclk2"] > MAX_SYSCLK:
            self.port.guest_error(self.name, f"SYSCLK/HCLK/PCLK2 above 72 MHz: {new}")
        if new["pclk1"] > MAX_PCLK1:
            self.port.guest_error(self.name, f"PCLK1 {new['pclk1']} Hz above the 36 MHz maximum")
        self.port.clocks_changed()

    def _update_irq(self) -> None:
        cir = self.values["CIR"]
        level = bool(cir & 0x1F & (cir >> 8))
        if level != self._irq_level:
            self._irq_level = level
            self.port.set_irq(self.IRQ, level)

"""Power control (PWR) of the STM32F103, RM0008 §5.

What bootloaders use is DBP (backup domain write access, which gates BKP, the
RTC and the backup-domain bits of RCC_BDCR) and the standby/wake-up flags.  The
PVD output follows a supply voltage given with ``vdd_mv`` (nominal thresholds
2.2 V + 0.1 V·PLS, datasheet "programmable voltage detector", no hysteresis).
The machine reports Standby entry and wake-up events with
:meth:`PWR.note_standby` and :meth:`PWR.note_wakeup`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_models.regs import Access, Peripheral, Register, fields

if TYPE_CHECKING:
    from firmware_models.port import Port


class PWR(Peripheral):
    NAME = "PWR"
    SIZE = 0x400

    REGISTERS = (
        # §5.4.1: CWUF and CSBF always read as 0.
        Register("CR", 0x00, 0, fields(
            ("LPDS", 0), ("PDDS", 1), ("CWUF", 2, 1, Access.WO), ("CSBF", 3, 1, Access.WO), ("PVDE", 4),
            ("PLS", 5, 3), ("DBP", 8),
        ), on_write="_cr_written"),
        # §5.4.2
        Register("CSR", 0x04, 0, fields(
            ("WUF", 0, 1, Access.RO), ("SBF", 1, 1, Access.RO), ("PVDO", 2, 1, Access.RO), ("EWUP", 8),
        )),
    )

    def __init__(self, port: Port, *, name: str | None = None, vdd_mv: int = 3300) -> None:
        self.vdd_mv = vdd_mv
        super().__init__(port, name)

    def reset(self) -> None:
        """System reset.  SBF is "cleared only by a POR/PDR reset or by setting the CSBF bit"
        (§5.4.2), so it survives; WUF is cleared by a system reset."""
        sbf = self.values.get("CSR", 0) & 0b10
        super().reset()
        self.values["CSR"] |= sbf

    def power_on_reset(self) -> None:
        self.values = {}
        self.reset()

    # -- machine side ----------------------------------------------------------------------
    def backup_write_enabled(self) -> bool:
        """PWR_CR.DBP: may the firmware write the backup domain?"""
        return bool(self.field("CR", "DBP"))

    def note_standby(self) -> None:
        """The device entered Standby mode (WFI with SLEEPDEEP and PDDS)."""
        self.set_field("CSR", "SBF", 1)

    def note_wakeup(self) -> None:
        """A wake-up event (WKUP pin rising with EWUP, RTC alarm) occurred (§5.4.2 WUF)."""
        self.set_field("CSR", "WUF", 1)

    def set_vdd(self, mv: int) -> None:
        self.vdd_mv = mv
        self._update_pvd()

    @property
    def pvd_threshold_mv(self) -> int:
        return 2200 + 100 * self.field("CR", "PLS")

    # -- register side effects ------------------------------------------------------------------
    def _cr_written(self, old: int, new: int, raw: int) -> None:
        if self.field("CR", "CWUF"):
            self.set_field("CSR", "WUF", 0)
        if self.field("CR", "CSBF"):
            self.set_field("CSR", "SBF", 0)
        self.set_field("CR", "CWUF", 0)
        self.set_field("CR", "CSBF", 0)
        self._update_pvd()

    def _update_pvd(self) -> None:
        # §5.4.2 PVDO is valid only while PVDE=1; it reads 1 when VDD is below the threshold.
        below = bool(self.field("CR", "PVDE")) and self.vdd_mv < self.pvd_threshold_mv
        self.set_field("CSR", "PVDO", int(below))

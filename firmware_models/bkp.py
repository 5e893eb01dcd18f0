"""Backup registers (BKP) of the STM32F103, RM0008 §6.

The data registers DR1..DR42 (DR1..DR10 on low/medium-density parts) and the
RTC calibration register live in the backup domain: a system reset keeps them,
:meth:`BKP.power_on_reset` (power lost with no battery) and a backup domain
reset (RCC_BDCR.BDRST, :meth:`BKP.backup_domain_reset`) clear them.  The offset
map has a gap: DR1..DR10 at 0x04..0x28, RTCCR/CR/CSR at 0x2C..0x34, DR11..DR42 at
0x40..0xBC (§6.4.5, Table 29).

Every write needs PWR_CR.DBP (§6.1, §5.4.1): the ``write_enabled`` callable of
the constructor answers that; a write without it is ignored and reported as a
guest error.  :meth:`snapshot`/:meth:`restore` let the machine keep the data
registers in the flash persistence file across runs.

Reads of the data registers work with the BKP and PWR clocks off
(:meth:`BKP.readable_without_clock`).  RM0008 §6.1 asks for PWREN, BKPEN and
DBP before "access", but what it describes is write protection ("protected
against possible parasitic write access"; DBP: "Disable backup domain write
protection", §5.4.1).  F1 silicon returns the stored value: dapboot's
``backup_read()`` (src/stm32f103/backup.c) reads BKP_DR1 right after reset with
RCC_APB1ENR = 0, and its reboot-into-bootloader command works on blue pills;
mynewt-core PR #3244 enables the BKP clock for writes only ("For read it does
not seem to be needed").  Writes still need BKPEN (the bus drops them) and DBP.
Only the data registers are exempt; other families differ (the STM32H7RS
blocks reads too), so this is an F1 fact, not a general one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.regs import Access, Field, Peripheral, Register, bits, fields

if TYPE_CHECKING:
    from firmware_models.port import Port

MAX_DATA_REGISTERS = 42
TAMPER_IRQ = 2


def dr_offset(n: int) -> int:
    """Offset of BKP_DRn (1-based)."""
    if not 1 <= n <= MAX_DATA_REGISTERS:
        raise ValueError(f"BKP has no DR{n}")
    return 0x04 * n if n <= 10 else 0x40 + 0x04 * (n - 11)


def _data_registers() -> tuple[Register, ...]:
    return tuple(Register(f"DR{n}", dr_offset(n), 0, (Field("D", 0, 16),))
                 for n in range(1, MAX_DATA_REGISTERS + 1))


class BKP(Peripheral):
    NAME = "BKP"
    SIZE = 0x400

    REGISTERS = (
        *_data_registers(),
        # §6.4.2
        Register("RTCCR", 0x2C, 0, fields(("CAL", 0, 7), ("CCO", 7), ("ASOE", 8), ("ASOS", 9))),
        # §6.4.3
        Register("CR", 0x30, 0, bits(("TPE", 0), ("TPAL", 1))),
        # §6.4.4: CTE/CTI are commands (read as 0), TEF/TIF are flags.
        Register("CSR", 0x34, 0, (
            *bits(("CTE", 0), ("CTI", 1), access=Access.WO),
            Field("TPIE", 2),
            *bits(("TEF", 8), ("TIF", 9), access=Access.RO),
        ), on_write="_csr_written"),
    )

    _BACKUP_DOMAIN = tuple(f"DR{n}" for n in range(1, MAX_DATA_REGISTERS + 1)) + ("RTCCR",)

    def __init__(
        self,
        port: Port,
        *,
        name: str | None = None,
        write_enabled: Callable[[], bool] | None = None,
        data_registers: int = MAX_DATA_REGISTERS,
        irq: int = TAMPER_IRQ,
    ) -> None:
        if data_registers not in (10, MAX_DATA_REGISTERS):
            raise ValueError("an STM32F103 has 10 (low/medium density) or 42 (high density) backup registers")
        self.data_registers = data_registers
        self.write_enabled: Callable[[], bool] = write_enabled if write_enabled is not None else (lambda: False)
        self.irq = irq
        self._irq_level = False
        # Offsets of DR11..DR42 are reserved on a 10-register part.
        self._absent = frozenset(dr_offset(n) for n in range(data_registers + 1, MAX_DATA_REGISTERS + 1))
        self._data = frozenset(dr_offset(n) for n in range(1, data_registers + 1))
        super().__init__(port, name)

    # -- resets ----------------------------------------------------------------------------
    def reset(self) -> None:
        """System reset: the backup domain (data registers, RTCCR) keeps its content."""
        kept = {k: self.values[k] for k in self._BACKUP_DOMAIN if k in self.values}
        super().reset()
        self.values.update(kept)
        self._update_irq()

    def power_on_reset(self) -> None:
        """Power-on with no battery on VBAT: everything, backup domain included, resets."""
        self.values = {}
        self.reset()

    def backup_domain_reset(self) -> None:
        """RCC_BDCR.BDRST (RM0008 §7.3.9): the data registers and RTCCR clear."""
        for k in self._BACKUP_DOMAIN:
            self.values[k] = 0

    # -- persistence ------------------------------------------------------------------------
    def snapshot(self) -> list[int]:
        """DR1..DRn, for the persistence file."""
        return [self.values[f"DR{n}"] for n in range(1, self.data_registers + 1)]

    def restore(self, values: list[int]) -> None:
        """Load DR1..DRn from :meth:`snapshot` output (a shorter list fills the first ones)."""
        if len(values) > self.data_registers:
            raise ValueError(f"{len(values)} values for {self.data_registers} backup registers")
        for n, v in enumerate(values, start=1):
            self.values[f"DR{n}"] = int(v) & 0xFFFF

    # -- tamper --------------------------------------------------------------------------------
    def tamper_event(self) -> None:
        """An active edge on the TAMPER pin (§6.3.1): with TPE set, every data register is
        reset, TEF is set, and TIF (with its interrupt) if TPIE is set."""
        if not self.field("CR", "TPE"):
            return
        for n in range(1, MAX_DATA_REGISTERS + 1):
            self.values[f"DR{n}"] = 0
        self.set_field("CSR", "TEF", 1)
        if self.field("CSR", "TPIE"):
            self.set_field("CSR", "TIF", 1)
        self.port.event("tamper")
        self._update_irq()

    # -- bus side ----------------------------------------------------------------------------------
    def readable_without_clock(self, offset: int) -> bool:
        """BKP_DRx read back whatever RCC_APB1ENR.BKPEN/PWREN say (module docstring)."""
        return (offset & ~3) in self._data

    def read(self, offset: int, size: int) -> int:
        if offset & ~3 in self._absent:
            self.port.guest_error(self.name, f"read of BKP+0x{offset:02X}: no such data register on this part")
            return 0
        return super().read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset & ~3 in self._absent:
            self.port.guest_error(self.name, f"write to BKP+0x{offset:02X}: no such data register on this part")
            return
        if not self.write_enabled():
            # §6.1: after reset the backup domain is write-protected until PWR_CR.DBP is set.
            self.port.guest_error(self.name, f"write to {self.describe(offset)} ignored: PWR_CR.DBP is 0")
            return
        super().write(offset, size, value)

    def _csr_written(self, old: int, new: int, raw: int) -> None:
        if self.field("CSR", "CTE"):
            self.set_field("CSR", "TEF", 0)
        if self.field("CSR", "CTI") or not self.field("CSR", "TPIE"):
            # §6.4.4: TIF is cleared by CTI, and also when TPIE is cleared.
            self.set_field("CSR", "TIF", 0)
        self.set_field("CSR", "CTE", 0)
        self.set_field("CSR", "CTI", 0)
        self._update_irq()

    def _update_irq(self) -> None:
        level = bool(self.field("CSR", "TIF"))
        if level != self._irq_level:
            self._irq_level = level
            self.port.set_irq(self.irq, level)

"""Data Watchpoint and Trace unit, cycle counter only (ARMv7-M C1.8).

Firmware uses DWT->CYCCNT for busy-wait delays and profiling.  CYCCNT counts
core clock cycles while DWT_CTRL.CYCCNTENA is set (and DEMCR.TRCENA, which we
do not gate on: ST's delay helpers set both).  Comparators and the trace
features are not modelled: accesses to them are logged as unmodelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.regs import Access, Peripheral, Register, fields

if TYPE_CHECKING:
    from firmware_models.port import Port


class DWT(Peripheral):
    NAME = "DWT"
    SIZE = 0x1000
    REGISTERS = (
        # NUMCOMP=4 on the Cortex-M3 (bits 31:28), read-only.
        Register("CTRL", 0x000, 0x4000_0000, fields=fields(("CYCCNTENA", 0), ("NUMCOMP", 28, 4, Access.RO)),
                 on_write="_ctrl_written"),
        Register("CYCCNT", 0x004, on_read="_read_cyccnt", on_write="_cyccnt_written"),
    )

    def __init__(self, port: Port, cycles: Callable[[], int]) -> None:
        self._cycles = cycles
        self._base = 0  # CYCCNT value at _since
        self._since = 0  # core cycle count when CYCCNT was last written or (re)started
        super().__init__(port)

    def reset(self) -> None:
        super().reset()
        self._base = 0
        self._since = self._cycles()

    def _running(self) -> bool:
        return bool(self.field("CTRL", "CYCCNTENA"))

    def _read_cyccnt(self) -> int:
        if not self._running():
            return self._base
        return (self._base + self._cycles() - self._since) & 0xFFFFFFFF

    def _ctrl_written(self, old: int, new: int, raw: int) -> None:
        if old & 1 and not new & 1:
            self._base = (self._base + self._cycles() - self._since) & 0xFFFFFFFF
        self._since = self._cycles()

    def _cyccnt_written(self, old: int, new: int, raw: int) -> None:
        self._base = new
        self._since = self._cycles()

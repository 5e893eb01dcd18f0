"""NVIC and the exception bookkeeping the Cortex-M3 core shares with it.

:class:`ExceptionController` holds the pending/active/enabled state and
priorities of every exception (system exceptions 1-15 and IRQs from 16).
The NVIC and SCB register models are two register views onto it; the core
(``emulator.core.exceptions``) asks it which exception to take.  Rules follow the
ARMv7-M Architecture Reference Manual, B1.5 (exception model) and B3.4 (NVIC).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.regs import Peripheral

if TYPE_CHECKING:
    from firmware_models.port import Port

RESET, NMI, HARDFAULT, MEMMANAGE, BUSFAULT, USAGEFAULT = 1, 2, 3, 4, 5, 6
SVCALL, DEBUGMON, PENDSV, SYSTICK = 11, 12, 14, 15
IRQ0 = 16
THREAD_PRIORITY = 256  # execution priority with nothing active (B1.5.4)

EXCEPTION_NAMES = {
    RESET: "Reset", NMI: "NMI", HARDFAULT: "HardFault", MEMMANAGE: "MemManage",
    BUSFAULT: "BusFault", USAGEFAULT: "UsageFault", SVCALL: "SVCall",
    DEBUGMON: "DebugMonitor", PENDSV: "PendSV", SYSTICK: "SysTick",
}
CONFIGURABLE_FAULTS = (MEMMANAGE, BUSFAULT, USAGEFAULT)


def exception_name(number: int) -> str:
    if number >= IRQ0:
        return f"IRQ{number - IRQ0}"
    return EXCEPTION_NAMES.get(number, f"exception {number}")


class ExceptionController:
    def __init__(self, n_irq: int, priority_bits: int = 4) -> None:
        self.n_irq = n_irq
        self.count = IRQ0 + n_irq
        self.priority_mask = (0xFF << (8 - priority_bits)) & 0xFF
        self.listeners: list[Callable[[], None]] = []
        self.reset()

    def reset(self) -> None:
        n = self.count
        self.pending = [False] * n
        self.active = [False] * n
        self.enabled = [False] * n
        self.priority = [0] * n  # raw 8-bit priority byte as written (masked)
        self.line = [False] * n  # interrupt request lines from peripherals (level)
        for exc in (NMI, HARDFAULT, SVCALL, DEBUGMON, PENDSV, SYSTICK):
            self.enabled[exc] = True  # always enabled; configurable faults via SHCSR
        self.prigroup = 0
        self.vtor = 0

    # Every attribute but the listeners (callbacks, not state): see loop_state.
    STATE_ATTRS = ("n_irq", "count", "priority_mask", "pending", "active", "enabled", "priority", "line",
                   "prigroup", "vtor")

    def loop_state(self) -> tuple:
        """The whole state as a comparable value, for emulator.core.loops (compared on every
        look at a loop): the per-exception lists hold bools and ints, so copies of them are
        values (and compare by identity of their items, at C speed)."""
        return (self.n_irq, self.count, self.priority_mask, self.pending[:], self.active[:],
                self.enabled[:], self.priority[:], self.line[:], self.prigroup, self.vtor)

    # -- priorities ---------------------------------------------------------------
    def raw_priority(self, exc: int) -> int:
        if exc == RESET:
            return -3
        if exc == NMI:
            return -2
        if exc == HARDFAULT:
            return -1
        return self.priority[exc]

    def group_priority(self, prio: int) -> int:
        """Strip the subpriority bits selected by AIRCR.PRIGROUP (B1.5.4)."""
        if prio < 0:
            return prio
        sub_bits = self.prigroup + 1
        return prio & ~((1 << sub_bits) - 1) & 0xFF

    def set_priority(self, exc: int, value: int) -> None:
        if exc in (RESET, NMI, HARDFAULT):
            return  # fixed priority
        self.priority[exc] = value & self.priority_mask
        self._changed()

    def execution_priority(self, primask: bool, faultmask: bool, basepri: int) -> int:
        """Current execution priority, boosted by the mask registers (B1.5.4)."""
        prio = THREAD_PRIORITY
        active, exc = self.active, 0
        while True:  # list.index finds the few active ones at C speed (called between every CPU slice)
            try:
                exc = active.index(True, exc + 1)
            except ValueError:
                break
            prio = min(prio, self.group_priority(self.raw_priority(exc)))
        if basepri & self.priority_mask:
            prio = min(prio, self.group_priority(basepri & self.priority_mask))
        if primask:
            prio = min(prio, 0)
        if faultmask:
            prio = min(prio, -1)
        return prio

    # -- pending / active ------------------------------------------------------------
    def set_pending(self, exc: int) -> None:
        if not self.pending[exc]:
            self.pending[exc] = True
            self._changed()

    def clear_pending(self, exc: int) -> None:
        # A level-sensitive IRQ whose line is still asserted stays pending (B3.4.1).
        if exc >= IRQ0 and self.line[exc]:
            return
        self.pending[exc] = False

    def set_line(self, irq: int, asserted: bool) -> None:
        exc = IRQ0 + irq
        self.line[exc] = asserted
        if asserted and not self.active[exc]:
            self.set_pending(exc)

    def highest_pending(self) -> int | None:
        """The pending, enabled exception that would be taken first, or None."""
        best: tuple[int, int] | None = None
        pending, enabled, exc = self.pending, self.enabled, 0
        while True:  # list.index finds the few pending ones at C speed
            try:
                exc = pending.index(True, exc + 1)
            except ValueError:
                break
            if enabled[exc]:
                key = (self.raw_priority(exc), exc)
                if best is None or key < best:
                    best = key
        return best[1] if best else None

    def can_preempt(self, exc: int, primask: bool, faultmask: bool, basepri: int) -> bool:
        prio = self.group_priority(self.raw_priority(exc))
        return prio < self.execution_priority(primask, faultmask, basepri)

    def activate(self, exc: int) -> None:
        self.pending[exc] = False
        self.active[exc] = True

    def deactivate(self, exc: int) -> None:
        self.active[exc] = False
        # Level-triggered peripheral interrupts re-pend if their line is still high.
        if exc >= IRQ0 and self.line[exc]:
            self.pending[exc] = True

    def active_exceptions(self) -> list[int]:
        return [e for e in range(1, self.count) if self.active[e]]

    def nested_active_count(self) -> int:
        return self.active.count(True)  # bools: count() runs at C speed, sum() does not

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()


class NVIC(Peripheral):
    """NVIC registers at 0xE000E100 (ARMv7-M B3.4.3): ISER, ICER, ISPR, ICPR, IABR, IPR."""

    NAME = "NVIC"
    SIZE = 0x400

    def __init__(self, port: Port, controller: ExceptionController) -> None:
        self.controller = controller
        super().__init__(port)

    def reset(self) -> None:
        super().reset()

    def read(self, offset: int, size: int) -> int:
        c = self.controller
        group, index = offset >> 7, (offset & 0x7F) >> 2
        if offset < 0x300 and (offset & 0x7F) < 0x40 and size == 4:
            # Words for interrupts this part does not implement are RAZ/WI (B3.4.3).
            table = {0: c.enabled, 1: c.enabled, 2: c.pending, 3: c.pending, 4: c.active}[group & 7]
            value = 0
            for bit in range(32):
                exc = IRQ0 + index * 32 + bit
                if exc < c.count and table[exc]:
                    value |= 1 << bit
            return value
        if 0x300 <= offset < 0x3F0:  # IPR bytes past the last IRQ read as zero
            value = 0
            for i in range(size):
                irq = offset - 0x300 + i
                if irq < c.n_irq:
                    value |= c.priority[IRQ0 + irq] << (8 * i)
            return value
        self.port.unmodelled(self.name, offset, "read", size, None)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        c = self.controller
        group, index = offset >> 7, (offset & 0x7F) >> 2
        if offset < 0x280 and (offset & 0x7F) < 0x40 and size == 4:
            bits = value & 0xFFFFFFFF
            while bits:  # the set bits only (a task loop writes ISER/ICER on every pass)
                bit = (bits & -bits).bit_length() - 1
                bits &= bits - 1
                exc = IRQ0 + index * 32 + bit
                if exc >= c.count:
                    continue
                if group == 0:
                    c.enabled[exc] = True
                elif group == 1:
                    c.enabled[exc] = False
                elif group == 2:
                    c.pending[exc] = True
                elif group == 3:
                    c.clear_pending(exc)
            c._changed()
            return
        if 0x280 <= offset < 0x300:
            return  # IABR is read-only
        if 0x300 <= offset < 0x3F0:
            for i in range(size):
                irq = offset - 0x300 + i
                if irq < c.n_irq:
                    c.set_priority(IRQ0 + irq, (value >> (8 * i)) & 0xFF)
            return
        self.port.unmodelled(self.name, offset, "write", size, value)

    def describe(self, offset: int) -> str:
        names = ["ISER", "ICER", "ISPR", "ICPR", "IABR"]
        if offset < 0x280:
            return f"NVIC.{names[offset >> 7]}{(offset & 0x7F) >> 2}"
        if 0x300 <= offset < 0x400:
            return f"NVIC.IPR{(offset - 0x300) >> 2}"
        return super().describe(offset)


class SoftwareTriggerInterrupt(Peripheral):
    """STIR at 0xE000EF00: writing an IRQ number pends it (B3.4.3)."""

    NAME = "NVIC_STIR"
    SIZE = 0x10

    def __init__(self, port: Port, controller: ExceptionController) -> None:
        self.controller = controller
        super().__init__(port)

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            irq = value & 0x1FF
            if irq < self.controller.n_irq:
                self.controller.set_pending(IRQ0 + irq)
            return
        self.port.unmodelled(self.name, offset, "write", size, value)

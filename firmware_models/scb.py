"""System Control Block (0xE000ED00) and the SCnSCB words (0xE000E000).

ARMv7-M ARM B3.2 and ST's PM0056 (STM32F10xxx Cortex-M3 programming
manual).  The STM32F103's core is a Cortex-M3 r1p1 (CPUID 0x411FC231), and the
reset values are that revision's:

- CCR resets to 0: on the Cortex-M3 STKALIGN is "optional (default off) in
  rev 1, and optional (default on) in rev 2 and later" (libopencm3, commit for
  its issue #516, which since sets it in lib/cm3/vector.c reset_handler: "Enabled
  by default on most Cortex-M parts, but not M3 r1").  PM0056's register table
  gives 0x200, the r2p0 value.  With STKALIGN=0 exception entry keeps a 4-byte
  aligned frame (ARMv7-M B1.5.7 PushStack).
- AFSR reads 0: the AUXFAULT inputs it latches are not connected on the STM32.
- AIRCR reads 0xFA05 in VECTKEYSTAT, ENDIANNESS=0 (little endian).
- The system handler priority bytes keep bits [7:4] (4 priority bits,
  PM0056 SHPRx), as the NVIC's do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.nvic import (
    BUSFAULT,
    DEBUGMON,
    IRQ0,
    MEMMANAGE,
    NMI,
    PENDSV,
    SVCALL,
    SYSTICK,
    USAGEFAULT,
    ExceptionController,
)
from firmware_models.regs import Access, Peripheral, Register, fields

if TYPE_CHECKING:
    from firmware_models.port import Port

VECTKEY = 0x05FA
CPUID_STM32F103 = 0x411FC231

# CFSR bits (B3.2.15): MMFSR byte 0, BFSR byte 1, UFSR half-word 1.
CFSR_BITS = {
    "IACCVIOL": 0, "DACCVIOL": 1, "MUNSTKERR": 3, "MSTKERR": 4, "MMARVALID": 7,
    "IBUSERR": 8, "PRECISERR": 9, "IMPRECISERR": 10, "UNSTKERR": 11, "STKERR": 12, "BFARVALID": 15,
    "UNDEFINSTR": 16, "INVSTATE": 17, "INVPC": 18, "NOCP": 19, "UNALIGNED": 24, "DIVBYZERO": 25,
}
HFSR_BITS = {"VECTTBL": 1, "FORCED": 30, "DEBUGEVT": 31}

# SHCSR active/pending bits (B3.2.13) per exception.
_SHCSR_ACTIVE = {MEMMANAGE: 0, BUSFAULT: 1, USAGEFAULT: 3, SVCALL: 7, DEBUGMON: 8, PENDSV: 10, SYSTICK: 11}
_SHCSR_PENDED = {USAGEFAULT: 12, MEMMANAGE: 13, BUSFAULT: 14, SVCALL: 15}
_SHCSR_ENABLE = {MEMMANAGE: 16, BUSFAULT: 17, USAGEFAULT: 18}


def decode_bits(value: int, table: dict[str, int]) -> list[str]:
    return [name for name, bit in table.items() if value >> bit & 1]


# CCR's single-bit fields by position (the CCR register below).
_CCR_BITS = {"NONBASETHRDENA": 0, "USERSETMPEND": 1, "UNALIGN_TRP": 3, "DIV_0_TRP": 4, "BFHFNMIGN": 8,
             "STKALIGN": 9}


class SCB(Peripheral):
    NAME = "SCB"
    SIZE = 0x100
    REGISTERS = (
        Register("CPUID", 0x00, CPUID_STM32F103, access=Access.RO),
        Register("ICSR", 0x04, on_read="_read_icsr", on_write="_write_icsr"),
        Register("VTOR", 0x08, fields=fields(("TBLOFF", 7, 23)), on_write="_write_vtor"),
        Register("AIRCR", 0x0C, 0xFA050000, on_read="_read_aircr", on_write="_write_aircr"),
        Register("SCR", 0x10, fields=fields(("SLEEPONEXIT", 1), ("SLEEPDEEP", 2), ("SEVONPEND", 4))),
        Register("CCR", 0x14, 0x0, fields=fields(  # r1p1: STKALIGN=0 at reset (module docstring)
            ("NONBASETHRDENA", 0), ("USERSETMPEND", 1), ("UNALIGN_TRP", 3), ("DIV_0_TRP", 4),
            ("BFHFNMIGN", 8), ("STKALIGN", 9)), on_write="_write_ccr"),
        Register("SHPR1", 0x18),  # bytes map onto controller priorities
        Register("SHPR2", 0x1C),  # bytes map onto controller priorities
        Register("SHPR3", 0x20),  # bytes map onto controller priorities
        Register("SHCSR", 0x24, on_read="_read_shcsr", on_write="_write_shcsr"),
        Register("CFSR", 0x28, access=Access.W1C),
        Register("HFSR", 0x2C, access=Access.W1C),
        Register("DFSR", 0x30, access=Access.W1C),
        Register("MMFAR", 0x34),
        Register("BFAR", 0x38),
        Register("AFSR", 0x3C, access=Access.W1C),  # nothing sets it: AUXFAULT is unconnected
        Register("CPACR", 0x88, access=Access.RO),  # no coprocessors on a Cortex-M3
        Register("DHCSR", 0xF0, access=Access.RO),  # no debugger attached
        Register("DCRSR", 0xF4),
        Register("DCRDR", 0xF8),
        Register("DEMCR", 0xFC, fields=fields(("VC_CORERESET", 0), ("MON_EN", 16), ("TRCENA", 24))),
    )

    def __init__(self, port: Port, controller: ExceptionController, ipsr: Callable[[], int]) -> None:
        self.controller = controller
        self.ipsr = ipsr
        # Called after every CCR write: the core changes how it traps (UNALIGN_TRP) from
        # the next instruction on.
        self.ccr_listeners: list[Callable[[], None]] = []
        super().__init__(port)

    def reset(self) -> None:
        super().reset()
        self.controller.prigroup = 0
        self.controller.vtor = 0

    # -- ICSR (B3.2.4) ---------------------------------------------------------------
    def _read_icsr(self) -> int:
        c = self.controller
        value = self.ipsr() & 0x1FF
        pending = c.highest_pending()
        if pending is not None:
            value |= (pending & 0x3FF) << 12
        if any(c.pending[IRQ0:]):
            value |= 1 << 22  # ISRPENDING
        if c.nested_active_count() <= 1:
            value |= 1 << 11  # RETTOBASE: at most the current exception is active
        if c.pending[SYSTICK]:
            value |= 1 << 26
        if c.pending[PENDSV]:
            value |= 1 << 28
        if c.pending[NMI]:
            value |= 1 << 31
        return value

    def _write_icsr(self, old: int, new: int, raw: int) -> None:
        c = self.controller
        if raw >> 31 & 1:
            c.set_pending(NMI)
        if raw >> 28 & 1:
            c.set_pending(PENDSV)
        elif raw >> 27 & 1:
            c.clear_pending(PENDSV)
        if raw >> 26 & 1:
            c.set_pending(SYSTICK)
        elif raw >> 25 & 1:
            c.clear_pending(SYSTICK)

    # -- VTOR / AIRCR --------------------------------------------------------------------
    def _write_vtor(self, old: int, new: int, raw: int) -> None:
        self.controller.vtor = new & 0x3FFFFF80
        self.port.event("vtor_write", value=self.controller.vtor)

    def _read_aircr(self) -> int:
        return 0xFA050000 | (self.controller.prigroup << 8)

    def _write_aircr(self, old: int, new: int, raw: int) -> None:
        if raw >> 16 != VECTKEY:
            self.port.guest_error(self.name, f"AIRCR write 0x{raw:08X} without VECTKEY 0x05FA ignored")
            return
        self.controller.prigroup = raw >> 8 & 7
        if raw & 1 << 1:  # VECTCLRACTIVE
            for exc in range(1, self.controller.count):
                self.controller.active[exc] = False
        if raw & (1 << 2 | 1 << 0):  # SYSRESETREQ / VECTRESET
            cause = "software" if raw & 1 << 2 else "vectreset"
            self.port.event("reset_request", source="AIRCR", cause=cause)
            self.port.request_reset(cause)

    def _write_ccr(self, old: int, new: int, raw: int) -> None:
        for listener in self.ccr_listeners:
            listener()

    # -- SHPR1-3 (B3.2.10-12): one byte per system handler, 4 to 15 --------------------
    def read(self, offset: int, size: int) -> int:
        if 0x18 <= offset < 0x24:
            value = 0
            for i in range(size):
                exc = 4 + offset - 0x18 + i
                value |= self.controller.priority[exc] << (8 * i) if exc not in (7, 8, 9, 10, 13) else 0
            return value
        return super().read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        if 0x18 <= offset < 0x24:
            for i in range(size):
                exc = 4 + offset - 0x18 + i
                if exc not in (7, 8, 9, 10, 13):  # reserved bytes
                    self.controller.set_priority(exc, value >> (8 * i) & 0xFF)
            return
        super().write(offset, size, value)

    # -- SHCSR (B3.2.13) ---------------------------------------------------------------------
    def _read_shcsr(self) -> int:
        c = self.controller
        value = 0
        for exc, bit in _SHCSR_ACTIVE.items():
            value |= c.active[exc] << bit
        for exc, bit in _SHCSR_PENDED.items():
            value |= c.pending[exc] << bit
        for exc, bit in _SHCSR_ENABLE.items():
            value |= c.enabled[exc] << bit
        return value

    def _write_shcsr(self, old: int, new: int, raw: int) -> None:
        c = self.controller
        for exc, bit in _SHCSR_ENABLE.items():
            c.enabled[exc] = bool(raw >> bit & 1)
        # Active and pended bits are writable on ARMv7-M (used by context switchers).
        for exc, bit in _SHCSR_ACTIVE.items():
            c.active[exc] = bool(raw >> bit & 1)
        for exc, bit in _SHCSR_PENDED.items():
            c.pending[exc] = bool(raw >> bit & 1)
        c._changed()

    # -- fault recording (used by the core) -------------------------------------------------
    def fault_enabled(self, exc: int) -> bool:
        return self.controller.enabled[exc]

    def record_cfsr(self, name: str) -> None:
        self.values["CFSR"] |= 1 << CFSR_BITS[name]

    def record_hfsr(self, name: str) -> None:
        self.values["HFSR"] |= 1 << HFSR_BITS[name]

    def set_bfar(self, address: int) -> None:
        self.values["BFAR"] = address & 0xFFFFFFFF
        self.record_cfsr("BFARVALID")

    def set_mmfar(self, address: int) -> None:
        self.values["MMFAR"] = address & 0xFFFFFFFF
        self.record_cfsr("MMARVALID")

    def ccr(self, name: str) -> bool:
        bit = _CCR_BITS.get(name)  # every exception entry and return asks for STKALIGN
        if bit is not None:
            return bool(self.values["CCR"] >> bit & 1)
        return bool(self.field("CCR", name))


class SCnSCB(Peripheral):
    """ICTR and ACTLR at 0xE000E000 (B3.2.2)."""

    NAME = "SCnSCB"
    SIZE = 0x10
    REGISTERS = (
        Register("ICTR", 0x04, 0x1, access=Access.RO),  # INTLINESNUM=1: up to 64 IRQ lines
        Register("ACTLR", 0x08, fields=fields(("DISMCYCINT", 0), ("DISDEFWBUF", 1), ("DISFOLD", 2))),
    )

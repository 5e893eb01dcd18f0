"""What the bootloader hands the application at the jump, as lines for the debugger's console.

The state most broken boot flows get wrong (docs/SEED_BOOTLOADER.md defect 4): the stack
pointer, where VTOR points, a SysTick still counting, interrupts still enabled or pending in
the NVIC, and the clock tree the bootloader left (PLL on, SYSCLK source).
"""

from __future__ import annotations

from emulator.core.machine import Machine
from firmware_models.nvic import exception_name

_SYSCLK_SOURCES = ("HSI", "HSE", "PLL", "?")  # RCC_CFGR.SWS (RM0008 §7.3.2)


def jump_state_text(m: Machine, address: int, why: str) -> str:
    ctl = m.nvic
    csr, rvr = m.systick["CTRL"], m.systick["LOAD"]  # stored values: reading them changes nothing
    enabled = [f"{e - 16} ({exception_name(e)})" for e in range(16, ctl.count) if ctl.enabled[e]]
    pending = [exception_name(e) for e in range(1, ctl.count) if ctl.pending[e]]
    cr, cfgr = m.rcc["CR"], m.rcc["CFGR"]
    vtor = ctl.vtor
    table = m.read_word(vtor + 4) if _readable(m, vtor + 4) else None
    lines = [
        f"halted at {_where(m, address)}: the first instruction after {why}, "
        f"{m.now_ns / 1e6:.3f} ms emulated, {m.instructions} instructions",
        f"  MSP        0x{m.reg('msp'):08X}   PRIMASK {m.reg('primask') & 1}   CONTROL {m.reg('control') & 3}",
        f"  VTOR       0x{vtor:08X}" + ("" if table is None else
                                       f"   (its reset vector: 0x{table:08X}"
                                       f"{', this application' if table & ~1 == address else ', not this application'})"),
        f"  SysTick    CSR 0x{csr:08X} ({'counting' if csr & 1 else 'stopped'}, "
        f"interrupt {'on' if csr & 2 else 'off'})   RVR 0x{rvr:06X}",
        f"  NVIC       enabled IRQs: {', '.join(enabled) or 'none'}",
        f"             pending: {', '.join(pending) or 'none'}",
        f"  clock      SYSCLK {m.port.clocks.sysclk / 1e6:g} MHz from {_SYSCLK_SOURCES[cfgr >> 2 & 3]}, "
        f"PLL {'on' if cr >> 24 & 1 else 'off'}, HSE {'on' if cr >> 16 & 1 else 'off'}",
    ]
    return "\n".join(lines)


def _readable(m: Machine, address: int) -> bool:
    return m.chip.in_flash(address, 4) or m.chip.in_sram(address, 4) or (
        not m.boot0 and 0 <= address < m.chip.flash_size - 4)


def _where(m: Machine, address: int) -> str:
    name = m.symbol(address)
    return name if name.startswith("0x") else f"{name} (0x{address:08X})"

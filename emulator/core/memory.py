"""The STM32F103 address space as Unicorn sees it (RM0008 §3.3).

Main flash is one host buffer mapped twice: at 0x0800_0000 and at the
0x0000_0000 boot alias (BOOT0 low).  Both mappings are read+execute only, so
every firmware store to flash arrives in a write-protection hook and goes
through the flash controller model.  SRAM is plain read/write/execute
memory.  Peripheral space, the Cortex-M private peripheral bus, the
bit-band aliases and the system-memory/option-byte block are MMIO regions
whose accesses the machine routes to Python models.
"""

from __future__ import annotations

SRAM_BITBAND = 0x2200_0000
PERIPH_BASE = 0x4000_0000
PERIPH_SIZE = 0x0003_0000  # APB1, APB2 and AHB up to the CRC unit and beyond (RM0008 §3.3)
PERIPH_BITBAND = 0x4200_0000
PPB_BASE = 0xE000_0000
PPB_SIZE = 0x0010_0000
# One 4 KiB MMIO block from SYSTEM_MEMORY_BASE (chips.py): system memory (ST's ROM
# loader, not emulated), the flash-size word, the unique ID and the option bytes.
SYSTEM_BLOCK_SIZE = 0x1000


def bitband_target(alias_base: int, region_base: int, address: int) -> tuple[int, int]:
    """(byte address, bit) addressed by a bit-band alias word (ARMv7-M B3.1.2)."""
    offset = address - alias_base
    word = offset >> 5
    bit = (offset >> 2) & 7
    byte = region_base + word
    return byte, bit

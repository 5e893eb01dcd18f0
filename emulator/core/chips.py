"""Chip profiles: the memory sizes and identification words of each STM32F103 part.

A :class:`Chip` is an immutable description the machine builds its memory map
from and the loader checks images against.  Only facts that differ between
parts live here; the addresses shared by the whole STM32F10x family are module
constants.

References: RM0008 §3.3.3 (flash organisation: 1 KiB pages on low/medium
density, 2 KiB on high density), §30.1 (flash size register), §30.2 (96-bit
unique ID), §31.6.1 (DBGMCU_IDCODE); the STM32F103x8/xB and xC/xD/xE
datasheets for the flash/SRAM sizes and the number of maskable interrupts
(43 on medium density, 60 on high density).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

# -- addresses common to every STM32F10x (RM0008 §3.3.1 memory map) ----------------
FLASH_BASE = 0x0800_0000
SRAM_BASE = 0x2000_0000
BOOT_ALIAS_BASE = 0x0000_0000  # main flash (BOOT0=0), system memory or SRAM, per BOOT pins
SYSTEM_MEMORY_BASE = 0x1FFF_F000  # ST's ROM loader: not present in the emulator
SYSTEM_MEMORY_SIZE = 2 * 1024
OPTION_BYTES_BASE = 0x1FFF_F800
OPTION_BYTES_SIZE = 16
FLASH_SIZE_REG = 0x1FFF_F7E0  # F_SIZE, 16 bits, flash size in KiB (RM0008 §30.1)
UNIQUE_ID_BASE = 0x1FFF_F7E8  # U_ID, 96 bits (RM0008 §30.2)
DBGMCU_IDCODE = 0xE004_2000  # REV_ID[31:16] | DEV_ID[11:0] (RM0008 §31.6.1)

UNIQUE_ID_BYTES = 12


@dataclass(frozen=True)
class Chip:
    """One STM32F103 part.  Sizes in bytes; ``*_end`` addresses are exclusive."""

    name: str
    density: str  # "medium" or "high": selects page size, DEV_ID and vector count
    flash_size: int
    page_size: int
    sram_size: int
    dev_id: int
    # The revision a current production part reports.  RM0008 §31.6.1 lists
    # 0x2003 (rev Y/1/2/X) for medium density and 0x1003 (rev Y/1/2/X) for
    # high density; firmware rarely looks at it, debuggers do.
    rev_id: int
    num_irqs: int  # external interrupt lines in the vector table, after the 16 system exceptions
    aliases: tuple[str, ...] = ()
    # The unique ID is derived from this seed so that two runs of the same
    # profile see the same 96 bits, and a test can give two "boards" of the
    # same part different IDs with :meth:`with_uid_seed`.
    uid_seed: str = ""
    flash_base: int = FLASH_BASE
    sram_base: int = SRAM_BASE

    # -- derived facts ----------------------------------------------------------------
    @property
    def flash_end(self) -> int:
        """First address past main flash (exclusive; ST's FLASH_BANK1_END is this - 1)."""
        return self.flash_base + self.flash_size

    @property
    def sram_end(self) -> int:
        """First address past SRAM (exclusive): a full-descending stack's top may equal it."""
        return self.sram_base + self.sram_size

    @property
    def num_pages(self) -> int:
        return self.flash_size // self.page_size

    @property
    def flash_size_kib(self) -> int:
        """The value of the F_SIZE word at :data:`FLASH_SIZE_REG`."""
        return self.flash_size // 1024

    @property
    def idcode(self) -> int:
        """The DBGMCU_IDCODE word."""
        return (self.rev_id << 16) | self.dev_id

    @property
    def num_vectors(self) -> int:
        """Words in a complete vector table: 16 system entries plus one per IRQ."""
        return 16 + self.num_irqs

    @property
    def unique_id(self) -> bytes:
        """The 12 bytes at :data:`UNIQUE_ID_BASE`, in memory order.

        RM0008 §30.2 defines the location and width, not the contents, so
        any deterministic value is as good as another; a hash keeps the IDs
        of different seeds unrelated.
        """
        seed = self.uid_seed or self.name
        return hashlib.sha256(f"stm32f1-uid:{seed}".encode()).digest()[:UNIQUE_ID_BYTES]

    def with_uid_seed(self, seed: str | int) -> Chip:
        """The same part with another unique ID (another physical board)."""
        return dataclasses.replace(self, uid_seed=f"{self.name}:{seed}")

    def in_flash(self, address: int, length: int = 1) -> bool:
        """True if ``length`` bytes from ``address`` all lie in main flash."""
        return self.flash_base <= address and address + length <= self.flash_end

    def in_sram(self, address: int, length: int = 1) -> bool:
        return self.sram_base <= address and address + length <= self.sram_end

    def page_of(self, address: int) -> int:
        """Index of the flash page holding ``address`` (page 0 starts at flash_base)."""
        if not self.in_flash(address):
            raise ValueError(
                f"0x{address:08X} is not in {self.name} flash "
                f"(0x{self.flash_base:08X}-0x{self.flash_end - 1:08X})"
            )
        return (address - self.flash_base) // self.page_size

    def page_address(self, page: int) -> int:
        """Start address of flash page ``page``."""
        if not 0 <= page < self.num_pages:
            raise ValueError(f"{self.name} has pages 0..{self.num_pages - 1}, not {page}")
        return self.flash_base + page * self.page_size

    def page_start(self, address: int) -> int:
        """Start address of the page holding ``address`` (what FLASH_AR erases, RM0008 §3.3.3)."""
        return self.page_address(self.page_of(address))


STM32F103RC = Chip(
    name="STM32F103RC",
    density="high",
    flash_size=256 * 1024,
    page_size=2 * 1024,
    sram_size=48 * 1024,
    dev_id=0x414,
    rev_id=0x1003,
    num_irqs=60,
    aliases=("RC", "F103RC", "STM32F103RCT6"),
)

STM32F103C8 = Chip(
    name="STM32F103C8",
    density="medium",
    flash_size=64 * 1024,
    page_size=1 * 1024,
    sram_size=20 * 1024,
    dev_id=0x410,
    rev_id=0x2003,
    num_irqs=43,
    aliases=("C8", "F103C8", "STM32F103C8T6", "BLUEPILL"),
)

CHIPS: tuple[Chip, ...] = (STM32F103RC, STM32F103C8)
DEFAULT_CHIP = STM32F103RC


def get_chip(name: str | None = None) -> Chip:
    """The profile called ``name`` (case-insensitive; "rc", "stm32f103c8", ...).

    ``None`` or "" gives the default part, the seed tutorial's STM32F103RC.
    """
    if not name:
        return DEFAULT_CHIP
    wanted = name.strip().upper().replace("-", "").replace("_", "")
    for chip in CHIPS:
        if wanted == chip.name or wanted in chip.aliases:
            return chip
    valid = ", ".join(f"{c.name} ({'/'.join(a.lower() for a in c.aliases[:2])})" for c in CHIPS)
    raise ValueError(f"unknown chip {name!r}; valid chips: {valid}")

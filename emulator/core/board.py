"""The STM32F103 board, declared once: which model sits where.

Like a Renode ``.repl`` file or QEMU's ``soc.c``: one row per peripheral
(name, base address, factory, clock gate).  The machine builds its bus from
this table; nothing else hard-codes a peripheral address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from emulator.core.chips import Chip
from emulator.core.time import Scheduler
from firmware_models.afio import AFIO
from firmware_models.bkp import BKP
from firmware_models.dbgmcu import DBGMCU
from firmware_models.dwt import DWT
from firmware_models.flash import FlashInterface
from firmware_models.gpio import GPIO
from firmware_models.iwdg import IWDG
from firmware_models.nvic import NVIC, ExceptionController, SoftwareTriggerInterrupt
from firmware_models.port import Port
from firmware_models.pwr import PWR
from firmware_models.rcc import RCC
from firmware_models.regs import Peripheral
from firmware_models.scb import SCB, SCnSCB
from firmware_models.systick import SysTick
from firmware_models.usart import USART
from firmware_models.usb import UsbDevice, UsbPacketMemory


class BoardHost(Protocol):
    """What a slot's factory needs from the machine that builds the board (no import of the machine,
    which imports this table)."""

    port: Port
    chip: Chip
    scheduler: Scheduler
    rcc: RCC
    pwr: PWR
    bkp: BKP
    flash: FlashInterface
    nvic: ExceptionController
    scb: SCB
    systick: SysTick
    usb: UsbDevice
    usb_pma: UsbPacketMemory

    def uart_sink(self, n: int) -> Callable[[bytes], None] | None: ...

    def cycle_count(self) -> int: ...


Factory = Callable[[BoardHost], Peripheral]


@dataclass(frozen=True)
class Slot:
    name: str
    base: int
    factory: Factory
    clock: str | None = None  # RCC gate name (RCC.PERIPHERAL_CLOCKS key); None = always clocked


def _gpio(letter: str) -> Factory:
    labels = {2: "BOOT1"} if letter == "B" else None  # BOOT1 is PB2 (RM0008 §3.4)
    return lambda m: GPIO(m.port, name=f"GPIO{letter}", labels=labels)


def _usart(n: int) -> Factory:
    return lambda m: USART(m.port, name=f"USART{n}", tx_sink=m.uart_sink(n))


BOARD: tuple[Slot, ...] = (
    # APB1 (RM0008 §3.3, Table 3)
    Slot("IWDG", 0x4000_3000, lambda m: IWDG(m.port, start_lsi=m.rcc.force_lsi_on)),
    Slot("USART2", 0x4000_4400, _usart(2), clock="USART2"),
    Slot("USART3", 0x4000_4800, _usart(3), clock="USART3"),
    Slot("USB", 0x4000_5C00, lambda m: m.usb, clock="USB"),
    Slot("USB_PMA", 0x4000_6000, lambda m: m.usb_pma, clock="USB"),
    Slot("BKP", 0x4000_6C00, lambda m: m.bkp, clock="BKP"),
    Slot("PWR", 0x4000_7000, lambda m: m.pwr, clock="PWR"),
    # APB2
    Slot("AFIO", 0x4001_0000, lambda m: AFIO(m.port), clock="AFIO"),
    Slot("GPIOA", 0x4001_0800, _gpio("A"), clock="GPIOA"),
    Slot("GPIOB", 0x4001_0C00, _gpio("B"), clock="GPIOB"),
    Slot("GPIOC", 0x4001_1000, _gpio("C"), clock="GPIOC"),
    Slot("GPIOD", 0x4001_1400, _gpio("D"), clock="GPIOD"),
    Slot("GPIOE", 0x4001_1800, _gpio("E"), clock="GPIOE"),
    Slot("USART1", 0x4001_3800, _usart(1), clock="USART1"),
    # AHB
    Slot("RCC", 0x4002_1000, lambda m: m.rcc),
    Slot("FLASH", 0x4002_2000, lambda m: m.flash),
    # Cortex-M3 private peripheral bus
    Slot("DWT", 0xE000_1000, lambda m: DWT(m.port, cycles=m.cycle_count)),
    Slot("SCnSCB", 0xE000_E000, lambda m: SCnSCB(m.port)),
    Slot("SysTick", 0xE000_E010, lambda m: m.systick),
    Slot("NVIC", 0xE000_E100, lambda m: NVIC(m.port, m.nvic)),
    Slot("SCB", 0xE000_ED00, lambda m: m.scb),
    Slot("NVIC_STIR", 0xE000_EF00, lambda m: SoftwareTriggerInterrupt(m.port, m.nvic)),
    Slot("DBGMCU", 0xE004_2000, lambda m: DBGMCU(m.port, dev_id=m.chip.dev_id, rev_id=m.chip.rev_id)),
)

__all__ = ["BOARD", "Slot", "BKP", "PWR", "RCC", "FlashInterface", "UsbDevice", "UsbPacketMemory",
           "SysTick", "SCB"]

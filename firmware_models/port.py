"""What a peripheral model may ask of the machine: the *port*.

Models never touch the CPU.  Everything they need from the outside world goes
through this small interface, so each model can be tested on its own with
:class:`emulator.core.port.SimPort` and no CPU at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Clocks:
    """Clock tree frequencies in Hz, published by the RCC model (RM0008 §7.2)."""

    sysclk: int = 8_000_000
    hclk: int = 8_000_000
    pclk1: int = 8_000_000
    pclk2: int = 8_000_000
    usbclk: int = 0  # 0 when the PLL does not run or the USB prescaler gives no valid clock
    hse_hz: int = 8_000_000  # the board's crystal


class Timer(Protocol):
    """Handle of a scheduled callback; ``cancelled`` is set by :meth:`Port.cancel`."""

    due_ns: int
    cancelled: bool


class Port(Protocol):
    clocks: Clocks
    strict: bool

    def now_ns(self) -> int:
        """Emulated time since power-on, in nanoseconds."""

    def schedule(self, delay_ns: int, callback: Callable[[], None], name: str = "") -> Timer:
        """Run ``callback`` once ``delay_ns`` of emulated time from now."""

    def cancel(self, timer: Timer) -> None: ...

    def set_irq(self, irq: int, asserted: bool) -> None:
        """Drive an NVIC interrupt line (level).  While asserted, the IRQ is pending."""

    def event(self, kind: str, **data: Any) -> None:
        """Record a boot-flow event (clock switch, flash op, USB state...)."""

    def unmodelled(self, periph: str, offset: int, access: str, size: int, value: int | None) -> None:
        """An access the model does not implement: logged once, an error under --strict."""

    def guest_error(self, periph: str, message: str) -> None:
        """The firmware did something the hardware forbids or leaves undefined."""

    def pc(self) -> int:
        """Address of the instruction making the current access (0 outside the CPU)."""

    def request_reset(self, cause: str) -> None:
        """Ask for a system reset (IWDG expiry, SYSRESETREQ...) at the end of this instruction."""

    def clocks_changed(self) -> None:
        """The RCC model changed ``clocks``: the machine rescales CPU time."""

    def stall_until(self, due_ns: int) -> None:
        """The CPU cannot fetch (e.g. from flash while it is busy) until ``due_ns``."""

"""Address routing from CPU accesses to peripheral models.

The bus is built from the board's declared table, sorted once, and routes
each access by bisection.  It is also the single choke point every MMIO
access passes through, so tracing (``cycle pc FLASH.CR W PER=1 STRT=1``),
clock gating and the unmodelled-access log live here and nowhere else.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from firmware_models.regs import Peripheral

log = logging.getLogger("emulator.core.bus")


@dataclass(frozen=True)
class Mapping:
    base: int
    model: Peripheral
    size: int
    # Returns None when the peripheral's clock is enabled, else a reason string.
    gate: Callable[[], str | None] | None = None


class Bus:
    def __init__(self, unmodelled: Callable[[str, int, str, int, int | None], None],
                 guest_error: Callable[[str, str], None]) -> None:
        self._mappings: list[Mapping] = []
        self._starts: list[int] = []
        self._unmodelled = unmodelled
        self._guest_error = guest_error
        self._gated_reported: set[str] = set()
        self._clockless_reported: set[str] = set()
        self.tracer: Callable[[str, int, int, int, str], None] | None = None

    def attach(self, base: int, model: Peripheral, size: int | None = None,
               gate: Callable[[], str | None] | None = None) -> None:
        mapping = Mapping(base, model, size or model.SIZE, gate)
        i = bisect.bisect_left(self._starts, base)
        if i < len(self._mappings) and self._mappings[i].base < base + mapping.size:
            raise ValueError(f"{model.name} at 0x{base:08X} overlaps {self._mappings[i].model.name}")
        if i > 0 and self._mappings[i - 1].base + self._mappings[i - 1].size > base:
            raise ValueError(f"{model.name} at 0x{base:08X} overlaps {self._mappings[i - 1].model.name}")
        self._mappings.insert(i, mapping)
        self._starts.insert(i, base)

    def find(self, address: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            m = self._mappings[i]
            if address < m.base + m.size:
                return m
        return None

    def models(self) -> list[Peripheral]:
        return [m.model for m in self._mappings]

    def _gated(self, m: Mapping, address: int, access: str) -> bool:
        if m.gate is None:
            return False
        reason = m.gate()
        if reason is None:
            return False
        if access == "read" and m.model.readable_without_clock(address - m.base):
            # A register the silicon reads back with its clock off (the model says why:
            # the BKP data registers on the F1).
            if m.model.name not in self._clockless_reported:
                self._clockless_reported.add(m.model.name)
                log.info("%s read at 0x%08X with its clock off (%s): value returned, as on F1 silicon",
                         m.model.name, address, reason)
            return False
        # RM0008 §7.3: a peripheral whose clock is off ignores writes and reads 0.
        if m.model.name not in self._gated_reported:
            self._gated_reported.add(m.model.name)
            self._guest_error(m.model.name, f"{access} at 0x{address:08X} while its clock is off ({reason})")
        return True

    def read(self, address: int, size: int) -> int:
        m = self.find(address)
        if m is None:
            self._unmodelled("bus", address, "read", size, None)
            return 0
        if self._gated(m, address, "read"):
            return 0
        value = m.model.read(address - m.base, size)
        if self.tracer is not None:
            self.tracer("R", address, size, value, m.model.describe(address - m.base))
        return value

    def write(self, address: int, size: int, value: int) -> None:
        m = self.find(address)
        if m is None:
            self._unmodelled("bus", address, "write", size, value)
            return
        if self._gated(m, address, "write"):
            return
        if self.tracer is not None:
            self.tracer("W", address, size, value, m.model.describe(address - m.base))
        m.model.write(address - m.base, size, value)

    def describe(self, address: int) -> str:
        m = self.find(address)
        return m.model.describe(address - m.base) if m else f"0x{address:08X}"

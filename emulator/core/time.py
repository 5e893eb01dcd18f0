"""Emulated time: a nanosecond clock and a heap of timed callbacks.

The CPU advances time by executed cycles at the current HCLK; peripherals
schedule callbacks in nanoseconds.  Everything is integer arithmetic with a
carried remainder, so a run is bit-for-bit deterministic.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000


@dataclass
class TimerEntry:
    due_ns: int
    seq: int
    callback: Callable[[], None] = field(compare=False)
    name: str = field(default="", compare=False)
    cancelled: bool = field(default=False, compare=False)
    external: bool = field(default=False, compare=False)  # the world outside the chip: kept by clear()


class Scheduler:
    def __init__(self) -> None:
        self.now_ns = 0
        self._remainder = 0  # cycles*1e9 not yet turned into whole nanoseconds
        # (due_ns, seq, entry): tuples compare at C speed, the dataclass's order would not.
        self._heap: list[tuple[int, int, TimerEntry]] = []
        self._seq = itertools.count()
        self.cycles = 0  # CPU cycles executed since power-on
        self.activity = 0  # timers scheduled, cancelled or run: a loop that saw this change differs

    # -- scheduling ------------------------------------------------------------
    def schedule(self, delay_ns: int, callback: Callable[[], None], name: str = "", *,
                 external: bool = False) -> TimerEntry:
        """``external``: an event from outside the chip (a button pressed at a given time), which
        the chip's own resets do not cancel."""
        entry = TimerEntry(self.now_ns + max(0, int(delay_ns)), next(self._seq), callback, name,
                           external=external)
        heapq.heappush(self._heap, (entry.due_ns, entry.seq, entry))
        self.activity += 1
        return entry

    def cancel(self, entry: TimerEntry) -> None:
        entry.cancelled = True
        self.activity += 1

    def next_due(self) -> int | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self) -> int:
        """Run every callback due at or before now; return how many ran."""
        heap = self._heap
        if not heap or heap[0][0] > self.now_ns:
            return 0  # the common case, asked between every two CPU slices
        ran = 0
        while True:
            due = self.next_due()
            if due is None or due > self.now_ns:
                return ran
            entry = heapq.heappop(heap)[2]
            self.activity += 1
            entry.callback()
            ran += 1

    # -- advancing -------------------------------------------------------------
    def advance_cycles(self, cycles: int, hz: int) -> None:
        """The CPU ran ``cycles`` at ``hz``."""
        self.cycles += cycles
        total = cycles * NS_PER_S + self._remainder
        self.now_ns += total // hz
        self._remainder = total % hz

    def advance_to(self, ns: int, hz: int) -> None:
        """Skip to ``ns`` (WFI, stalls); the CPU clock keeps counting cycles meanwhile."""
        if ns <= self.now_ns:
            return
        delta = ns - self.now_ns
        self.cycles += delta * hz // NS_PER_S
        self.now_ns = ns
        self._remainder = 0

    def cycles_until(self, ns: int, hz: int) -> int:
        """Whole CPU cycles needed to reach ``ns`` (at least 1)."""
        if ns <= self.now_ns:
            return 1
        need = (ns - self.now_ns) * hz - self._remainder
        return max(1, -(-need // NS_PER_S))

    def clear(self) -> None:
        """A reset: every timer of the chip goes; the ones from outside it stay."""
        self._heap = [t for t in self._heap if t[2].external and not t[2].cancelled]
        heapq.heapify(self._heap)
        self.activity += 1

    def power_cut(self) -> None:
        """The supply is gone: every timer of the chip with it (a press from outside stays, as
        for :meth:`clear`), and the CPU clock restarts at power-on with no sub-nanosecond carry
        from the cycles before (as at t=0), so what a board does after power-on depends only on
        what power-on gives it, not on the instant."""
        self.clear()
        self._remainder = 0

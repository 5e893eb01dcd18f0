"""Which flash code has run, learnt one translation block at a time.

Some Cortex-M3 behaviours Unicorn lacks are put back with a code hook on the
instructions concerned (:mod:`emulator.core.insn_traps`).  A code hook is not
free even where it does not fire: while Unicorn counts instructions
(``count=N``, which the machine always uses) every instruction walks the whole
code-hook list, about a nanosecond per hook (measured with Unicorn 2.1.4: 100
hooks make a tight loop 40 times slower).  Flash holds data as well as code, and
data bytes often look like the instructions wanted, so hooks must go only on
code that really runs.

A :class:`CodeWatch` keeps a block hook on every part of flash not yet run (the
*gaps*).  The first time a translation block starts in a gap, ``on_new_block``
gets its exact extent and bytes; between CPU slices :meth:`CodeWatch.apply`
takes the block out of the gaps and drops its translated code, so it runs
without the block hook from then on.  Block hooks are walked at block starts
only, and only by blocks translated inside a gap, so code that has run costs
nothing.  A flash write into code that has run puts it back under watch
(:meth:`CodeWatch.forget`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from unicorn import UC_HOOK_BLOCK, Uc


class CodeWatch:
    def __init__(self, uc: Uc, regions: list[tuple[int, int]],
                 on_new_block: Callable[[int, int], None], on_rerun: Callable[[], None]) -> None:
        self.uc = uc
        self.regions = regions  # [begin, end) of each region watched (flash and its alias)
        self.on_new_block = on_new_block  # (address, size), called from the block hook
        self.on_rerun = on_rerun  # a reported block runs again before apply(): end the slice
        self._gap_starts: list[int] = []
        self._gaps: dict[int, tuple[int, int]] = {}  # start -> (end, hook handle)
        self._covered_starts: list[int] = []
        self._covered: dict[int, int] = {}  # start -> end of each block reported
        self._new: list[tuple[int, int]] = []  # reported since the last apply()
        self._changed: list[tuple[int, int]] = []  # run code rewritten since the last apply()
        self._started = False

    # -- between slices (hooks are only added and removed here) -----------------------------
    def apply(self) -> None:
        if not self._started:
            for begin, end in self.regions:
                self._add_gap(begin, end)
            self._started = True
        for begin, end in self._new:
            self._cover(begin, end)
            self.uc.ctl_remove_cache(begin, end)  # retranslated without the block hook
        self._new.clear()
        for begin, end in self._changed:
            self._uncover(begin, end)
            self.uc.ctl_remove_cache(begin, end)  # retranslated with it
        self._changed.clear()

    def forget(self, begin: int, end: int) -> None:
        """Flash in [begin, end) changed: blocks reported there are watched again."""
        lo = bisect.bisect_left(self._covered_starts, begin - MAX_BLOCK)
        hi = bisect.bisect_left(self._covered_starts, end)
        for start in [s for s in self._covered_starts[lo:hi] if self._covered[s] > begin]:
            self._changed.append((start, self._covered.pop(start)))
            self._covered_starts.remove(start)

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """The [begin, end) ranges watched now."""
        return [(s, self._gaps[s][0]) for s in self._gap_starts]

    # -- the block hook ---------------------------------------------------------------------------
    def _hook(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        if address in self._covered:
            # Reported already: a loop.  Until apply() takes it out of the gaps each pass
            # would come here, so the machine ends the slice now.
            self.on_rerun()
            return
        self._covered[address] = address + size
        bisect.insort(self._covered_starts, address)
        self._new.append((address, address + size))
        self.on_new_block(address, size)

    # -- gaps ------------------------------------------------------------------------------------------
    def _add_gap(self, begin: int, end: int) -> None:
        if begin >= end:
            return
        handle = self.uc.hook_add(UC_HOOK_BLOCK, self._hook, begin=begin, end=end - 1)
        bisect.insort(self._gap_starts, begin)
        self._gaps[begin] = (end, handle)

    def _overlapping_gaps(self, begin: int, end: int) -> list[int]:
        i = max(0, bisect.bisect_right(self._gap_starts, begin) - 1)
        found = []
        while i < len(self._gap_starts) and self._gap_starts[i] < end:
            if self._gaps[self._gap_starts[i]][0] > begin:
                found.append(self._gap_starts[i])
            i += 1
        return found

    def _cover(self, begin: int, end: int) -> None:
        for start in self._overlapping_gaps(begin, end):
            gap_end, handle = self._gaps.pop(start)
            self._gap_starts.remove(start)
            self.uc.hook_del(handle)
            self._add_gap(start, begin)
            self._add_gap(end, gap_end)

    def _uncover(self, begin: int, end: int) -> None:
        pos = begin
        for start in self._overlapping_gaps(begin, end):  # watch only what no gap watches yet
            self._add_gap(pos, start)
            pos = max(pos, self._gaps[start][0])
        self._add_gap(pos, end)


MAX_BLOCK = 0x1000  # a translation block never crosses a 1 KiB page: generous bound

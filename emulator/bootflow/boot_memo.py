"""Boots after a power cut, reused when they read the same flash bytes.

After a cut the board powers on afresh: SRAM, the CPU, every model, the timers and
the clock's sub-nanosecond phase start as at power-on (``Machine.power_cut`` and
``power_on``).  What one cut leaves different from another is only the flash: the
bytes the download's operations touched (``varying``) and the option bytes.  The
emulator is deterministic, so the boot that follows is a function of those bytes
*as the CPU reads them*: two cuts whose flash holds the same values at every
varying byte the first boot read, with the same option bytes, boot exactly alike,
instruction for instruction, whatever the bytes it never read hold.

:class:`BootReads` watches one boot for that: every CPU data read of a varying
byte (through the flash and its boot alias at 0x0000_0000).  A boot is reusable
only when that record is the whole story, so it is not when

* the CPU fetched an instruction from a varying byte (the jump into the
  application, or code run from a page the download wrote),
* a flash operation started (programming reads its target: PGERR),
* a fault was taken or the boot jumped (their times and addresses belong to
  the trial), or
* a vector table it used (VTOR at power-on and every value written to it) lies
  on varying bytes (the exception entry reads the vector outside the CPU's
  load path).

:class:`BootMemo` keeps the reusable boots and answers, for a cut's flash,
whether one of them applies.  The verdict rule is unchanged: a reused boot *is*
the boot that cut would run, so its :class:`BootObservation` and outcome are the
same as running it.  ``flash --power-cut-sweep --sweep-boot-every-cut`` runs every boot
instead, to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ

from emulator.core.chips import BOOT_ALIAS_BASE
from emulator.core.machine import Machine

VECTOR_TABLE_BYTES = 0x200  # 128 vectors: more than any STM32F1 has (16 + 60)
MAX_ENTRIES = 64  # boots kept; distinct paths are few (blank record, half-written record...)


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open ``(lo, hi)`` ranges, sorted and merged where they touch."""
    out: list[list[int]] = []
    for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


class BootReads:
    """Watches the varying flash bytes (offsets into main flash) during one boot of ``m``.

    ``start()`` before powering on, ``finish(faulted, jumped)`` after; then ``runs`` are the
    offset ranges read, or None when the boot cannot be reused (see the module docstring)."""

    def __init__(self, m: Machine, varying: Sequence[tuple[int, int]]) -> None:
        self.m = m
        self.varying = merge_ranges(varying)
        self.mask = bytearray(m.chip.flash_size)
        self.fetched = False
        self.flash_op = False
        self.runs: list[tuple[int, int]] | None = None
        self._handles: list[Any] = []
        self._events_before = 0
        self._bases = [m.chip.flash_base] + ([] if m.boot0 else [BOOT_ALIAS_BASE])

    def start(self) -> None:
        m, uc = self.m, self.m.uc
        self._events_before = len(m.events)
        for base in self._bases:
            for lo, hi in self.varying:
                # A hook's range holds an access's first byte: a word read starting up to 3
                # bytes before the range also reads into it.
                self._handles.append(uc.hook_add(UC_HOOK_MEM_READ, self._on_read, base,
                                                 begin=base + max(0, lo - 3), end=base + hi - 1))
                # Likewise a 32-bit instruction starting a half-word before it.
                self._handles.append(uc.hook_add(UC_HOOK_CODE, self._on_fetch, begin=base + max(0, lo - 2),
                                                 end=base + hi - 1))
        m.flash.operation_listeners.append(self._on_flash_op)
        # Unicorn decides at translation whether a block's loads and instructions call hooks:
        # code translated before these hooks existed must be translated again.
        uc.ctl_flush_tb()

    def abandon(self) -> None:
        """The boot will not be reused (it jumped): stop watching, so that the application
        runs without a Python call on each instruction and flash read."""
        self._unhook()
        self.fetched = True

    def _unhook(self) -> None:
        m = self.m
        for h in self._handles:
            m.uc.hook_del(h)
        self._handles.clear()
        if self._on_flash_op in m.flash.operation_listeners:
            m.flash.operation_listeners.remove(self._on_flash_op)

    def finish(self, *, faulted: bool, jumped: bool) -> None:
        m = self.m
        self._unhook()
        tables = [0] + [e.data.get("value", 0) for e in m.events[self._events_before:] if e.kind == "vtor_write"]
        if faulted or jumped or self.fetched or self.flash_op or any(self._on_varying(t) for t in tables):
            self.runs = None
            return
        runs: list[tuple[int, int]] = []
        mask = self.mask
        for lo, hi in self.varying:
            i = mask.find(1, lo, hi)
            while i >= 0:
                j = mask.find(0, i, hi)
                j = hi if j < 0 else j
                runs.append((i, j))
                i = mask.find(1, j, hi)
        self.runs = runs

    def _on_varying(self, table: int) -> bool:
        """Whether a vector table at ``table`` overlaps a varying byte (through either alias)."""
        for base in self._bases:
            lo = table - base
            hi = lo + VECTOR_TABLE_BYTES
            if any(lo < v_hi and v_lo < hi for v_lo, v_hi in self.varying):
                return True
        return False

    def _on_read(self, uc: Any, access: int, address: int, size: int, value: int, base: int) -> None:
        off = address - base
        self.mask[off:off + size] = b"\x01" * len(self.mask[off:off + size])

    def _on_fetch(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        self.fetched = True

    def _on_flash_op(self, what: str, op: Any) -> None:
        self.flash_op = True


@dataclass
class _Entry:
    runs: list[tuple[int, int]]
    values: list[bytes]
    options: bytes
    result: Any  # what the boot gave: handed back as is
    label: str


class BootMemo:
    """Reusable boots, most recently used first."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.hits = 0

    def add(self, runs: Sequence[tuple[int, int]], flash: bytes, options: bytes, result: Any, label: str) -> None:
        """The boot of a cut whose flash was ``flash``/``options`` read ``runs`` and gave ``result``."""
        entry = _Entry(list(runs), [flash[lo:hi] for lo, hi in runs], options, result, label)
        self.entries.insert(0, entry)
        del self.entries[MAX_ENTRIES:]

    def lookup(self, flash: bytes, options: bytes) -> tuple[Any, str] | None:
        """A kept boot that a cut leaving ``flash``/``options`` would run exactly: (result, its label)."""
        for i, e in enumerate(self.entries):
            if e.options == options and all(flash[lo:hi] == v for (lo, hi), v in zip(e.runs, e.values, strict=True)):
                if i:
                    self.entries.insert(0, self.entries.pop(i))
                self.hits += 1
                return e.result, e.label
        return None

"""Exact instruction counting inside a Unicorn run.

Unicorn's ``count=N`` makes the engine count every instruction in C
(``uc->emu_counter``) and stop when the counter passes ``uc->emu_count``.
The Python binding exposes neither field, but both are plain ``uint64_t``
next to each other in the engine's struct.  Reading the counter gives the
exact instruction count at any memory access (so a peripheral sees the exact
emulated time), and lowering the limit to the counter stops the run cleanly
*after* the current instruction.  ``emu_stop()`` from a memory callback
cannot be used for that: Unicorn then re-executes the interrupted store when
the run resumes (measured with Unicorn 2.1.4).

The field offset is found once per process by running a small loop with a
known count and looking for the (counter, limit) pair in the engine struct,
then checked with a second count.  If a future Unicorn build changes the
layout, calibration fails with a clear error instead of counting wrongly.
"""

from __future__ import annotations

import ctypes
import struct

from unicorn import UC_ARCH_ARM, UC_MODE_THUMB, UC_PROT_ALL, Uc
from unicorn.arm_const import UC_CPU_ARM_CORTEX_M3

_OFFSET: int | None = None
_SCAN_BYTES = 1 << 16
# adds r0, #1 ; b.n back to the adds  (an endless two-instruction loop)
_LOOP = bytes.fromhex("0130fde7")


class CounterCalibrationError(RuntimeError):
    pass


def _run_counted(uc: Uc, count: int) -> bytes:
    uc.emu_start(0x1001, 0, count=count)
    return ctypes.string_at(uc._uch.value, _SCAN_BYTES)


def _calibrate() -> int:
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB, UC_CPU_ARM_CORTEX_M3)
    uc.mem_map(0x1000, 0x1000, UC_PROT_ALL)
    uc.mem_write(0x1000, _LOOP)
    candidates = None
    for count in (100_003, 77_777):
        raw = _run_counted(uc, count)
        found = {
            off
            for off in range(0, _SCAN_BYTES - 16, 8)
            if struct.unpack_from("<QQ", raw, off) == (count + 1, count)
        }
        candidates = found if candidates is None else candidates & found
    if not candidates or len(candidates) != 1:
        raise CounterCalibrationError(
            "cannot locate Unicorn's instruction counter; this emulator needs unicorn==2.1.4"
        )
    return candidates.pop()


class InstructionCounter:
    """Live view of one engine's instruction counter and stop limit."""

    def __init__(self, uc: Uc) -> None:
        global _OFFSET
        if _OFFSET is None:
            _OFFSET = _calibrate()
        base = uc._uch.value
        self._counter = ctypes.c_uint64.from_address(base + _OFFSET)
        self._limit = ctypes.c_uint64.from_address(base + _OFFSET + 8)

    @property
    def counted(self) -> int:
        """Instructions started in the current ``emu_start`` (the current one included)."""
        return self._counter.value

    def executed_after_run(self) -> int:
        """Instructions completed by the ``emu_start`` that just returned."""
        c = self._counter.value
        return c - 1 if c > self._limit.value else c

    def stop_after_current(self) -> None:
        """End the current ``emu_start`` right after the instruction now executing."""
        self._limit.value = self._counter.value

"""Instructions Unicorn executes differently from a Cortex-M3, found and trapped.

Unicorn runs ``SDIV``/``UDIV`` without the CCR.DIV_0_TRP check and stores all
8 bits of ``MSR BASEPRI`` although the STM32F1 implements only the top 4
priority bits.  ``DSB``/``DMB`` are trapped for the machine's imprecise bus
faults: a barrier waits for the write buffer, so a bus error of an earlier
store is taken before the barrier completes (the machine otherwise takes it
at the end of the translated block).  Hooking every instruction would cost ~100x speed, so the
flash contents are scanned for those encodings and a code hook is put on
each match only.  A match inside data is harmless: that address never
executes.  The scan is a byte pattern match, not a disassembly.
"""

from __future__ import annotations

import re

# ARMv7-M A7.7.127 SDIV T1: 1111 1011 1001 Rn | 1111 Rd 1111 Rm
# ARMv7-M A7.7.195 UDIV T1: 1111 1011 1011 Rn | 1111 Rd 1111 Rm
# ARMv7-M B5.2.3  MSR T1:  1111 0011 1000 Rn | 1000 1000 SYSm  (BASEPRI=17, BASEPRI_MAX=18)
_DIV = re.compile(rb"[\x90-\x9f\xb0-\xbf]\xfb[\xf0-\xff][\xf0-\xff]", re.DOTALL)
_MSR_BASEPRI = re.compile(rb"[\x80-\x8f]\xf3[\x11\x12]\x88", re.DOTALL)
# ARMv7-M A7.7.33 DSB T1: 1111 0011 1011 1111 | 1000 1111 0100 option; A7.7.32 DMB: ... 0101 option
_BARRIER = re.compile(rb"\xbf\xf3[\x40-\x5f]\x8f", re.DOTALL)


def _halfword_aligned(pattern: re.Pattern[bytes], data: bytes, base: int) -> list[int]:
    return [base + m.start() for m in pattern.finditer(data) if not m.start() & 1]


def find_divides(data: bytes, base: int) -> list[int]:
    """Addresses of SDIV/UDIV encodings in ``data`` loaded at ``base``."""
    hits = []
    for address in _halfword_aligned(_DIV, data, base):
        off = address - base
        second = data[off + 2] | data[off + 3] << 8
        if second & 0xF0F0 == 0xF0F0:
            hits.append(address)
    return hits


def find_msr_basepri(data: bytes, base: int) -> list[int]:
    return _halfword_aligned(_MSR_BASEPRI, data, base)


def find_barriers(data: bytes, base: int) -> list[int]:
    """Addresses of DSB/DMB encodings (ISB ends a translated block by itself)."""
    return _halfword_aligned(_BARRIER, data, base)


def decode_divide(first: int, second: int) -> tuple[bool, int, int, int]:
    """(signed, Rd, Rn, Rm) of an SDIV/UDIV encoding."""
    return (first & 0x00F0) == 0x0090, (second >> 8) & 0xF, first & 0xF, second & 0xF


def decode_msr(first: int, second: int) -> tuple[int, int]:
    """(Rn, SYSm) of an MSR encoding."""
    return first & 0xF, second & 0xFF

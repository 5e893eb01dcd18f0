"""Instructions Unicorn executes differently from a Cortex-M3, found and trapped.

Unicorn runs ``SDIV``/``UDIV`` without the CCR.DIV_0_TRP check, stores all
8 bits of ``MSR BASEPRI`` although the STM32F1 implements only the top 4
priority bits, and performs unaligned ``LDM``/``STM``/``LDRD``/``STRD``
silently although those always fault on ARMv7-M (A3.2.1: they use MemA).
Hooking every instruction would cost ~100x speed, so a code hook is put on
each such instruction only.  SDIV/UDIV and MSR BASEPRI are rare: the flash
contents are scanned for them (a byte pattern match at every half-word, not a
disassembly; a match inside data costs a hook but never fires).  LDM/STM-like
half-words are common in data, so those are decoded exactly in each block of
code as it first runs (:mod:`emulator.core.code_watch`).
"""

from __future__ import annotations

import re

# ARMv7-M A7.7.127 SDIV T1: 1111 1011 1001 Rn | 1111 Rd 1111 Rm
# ARMv7-M A7.7.195 UDIV T1: 1111 1011 1011 Rn | 1111 Rd 1111 Rm
# ARMv7-M B5.2.3  MSR T1:  1111 0011 1000 Rn | 1000 1000 SYSm  (BASEPRI=17, BASEPRI_MAX=18)
_DIV = re.compile(rb"[\x90-\x9f\xb0-\xbf]\xfb[\xf0-\xff][\xf0-\xff]", re.DOTALL)
_MSR_BASEPRI = re.compile(rb"[\x80-\x8f]\xf3[\x11\x12]\x88", re.DOTALL)


_SP, _PC = 13, 15


def _halfword_aligned(pattern: re.Pattern[bytes], data: bytes, base: int) -> list[int]:
    # A zero-width lookahead finds overlapping matches too: a match at an odd offset
    # must not hide one at the next even offset.
    overlapping = re.compile(b"(?=" + pattern.pattern + b")", pattern.flags)
    return [base + m.start() for m in overlapping.finditer(data) if not m.start() & 1]


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


def decode_divide(first: int, second: int) -> tuple[bool, int, int, int]:
    """(signed, Rd, Rn, Rm) of an SDIV/UDIV encoding."""
    return (first & 0x00F0) == 0x0090, (second >> 8) & 0xF, first & 0xF, second & 0xF


def decode_msr(first: int, second: int) -> tuple[int, int]:
    """(Rn, SYSm) of an MSR encoding."""
    return first & 0xF, second & 0xFF


def is_exclusive(first: int, second: int) -> bool:
    """LDREX/STREX, LDREXB/H, STREXB/H (A5.3.5): the only accesses Unicorn itself
    checks for alignment (it raises a data abort for them)."""
    if first & 0xFFE0 == 0xE840:  # STREX / LDREX T1
        return True
    # LDREXB/LDREXH/STREXB/STREXH T1: 1110 1000 110L Rn | ... 010x ....
    return first & 0xFFE0 == 0xE8C0 and second & 0x00E0 == 0x0040


def multiword_base(first: int) -> int | None:
    """Rn of an LDM/STM/LDRD/STRD (immediate) encoding whose base may be unaligned, else None.

    SP-based forms (PUSH/POP, LDRD [sp, #imm]) are left out: SP[1:0] is always 0 on the
    Cortex-M3, so they cannot be unaligned; PC-based forms are literal or UNPREDICTABLE.
    """
    if first & 0xF000 == 0xC000:  # LDM/STM T1: 1100 L Rn(3) list
        return first >> 8 & 7
    ldm_stm = first & 0xFFC0 in (0xE880, 0xE900)  # LDM/STM(IA) T2, LDMDB/STMDB T1
    ldrd_strd = first & 0xFE40 == 0xE840 and first & 0x0120  # 1110 100P U1WL Rn, P or W set
    if not (ldm_stm or ldrd_strd):
        return None
    rn = first & 0xF
    return None if rn in (_SP, _PC) else rn


def multiword_accesses_in_block(code: bytes, base: int) -> list[tuple[int, int]]:
    """(address, Rn) of each LDM/STM/LDRD/STRD (non-SP base) in a run of Thumb instructions
    that starts at ``base`` on an instruction boundary (a translation block: exact, no data)."""
    hits = []
    off = 0
    while off + 2 <= len(code):
        first = code[off] | code[off + 1] << 8
        rn = multiword_base(first)
        if rn is not None:
            hits.append((base + off, rn))
        off += 4 if first >> 11 in (0x1D, 0x1E, 0x1F) else 2  # 32-bit encodings (A5.1)
    return hits

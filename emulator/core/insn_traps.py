"""Instructions Unicorn executes differently from a Cortex-M3, found and trapped.

Unicorn runs ``SDIV``/``UDIV`` without the CCR.DIV_0_TRP check, stores all
8 bits of ``MSR BASEPRI`` although the STM32F1 implements only the top 4
priority bits, and performs unaligned ``LDM``/``STM``/``LDRD``/``STRD``
silently although those always fault on ARMv7-M (A3.2.1: they use MemA).
``DSB``/``DMB`` are trapped for the machine's imprecise bus faults: a barrier
waits for the write buffer, so a bus error of an earlier store is taken before
the barrier completes (the machine otherwise takes it at the end of the
translated block).  Hooking every instruction would cost ~100x speed, so a code
hook is put on each such instruction only.  SDIV/UDIV, MSR BASEPRI and the
barriers are rare: the flash contents are scanned for them (a byte pattern
match at every half-word, not a disassembly; a match inside data costs a hook
but never fires).  LDM/STM-like half-words are common in data, so those are
decoded exactly in each block of flash code as it first runs: the CPU engine's
block hook looks for them when it first counts a block
(:mod:`emulator.core.engine`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# ARMv7-M A7.7.127 SDIV T1: 1111 1011 1001 Rn | 1111 Rd 1111 Rm
# ARMv7-M A7.7.195 UDIV T1: 1111 1011 1011 Rn | 1111 Rd 1111 Rm
# ARMv7-M B5.2.3  MSR T1:  1111 0011 1000 Rn | 1000 1000 SYSm  (BASEPRI=17, BASEPRI_MAX=18)
_DIV = re.compile(rb"[\x90-\x9f\xb0-\xbf]\xfb[\xf0-\xff][\xf0-\xff]", re.DOTALL)
_MSR_BASEPRI = re.compile(rb"[\x80-\x8f]\xf3[\x11\x12]\x88", re.DOTALL)
# ARMv7-M A7.7.33 DSB T1: 1111 0011 1011 1111 | 1000 1111 0100 option; A7.7.32 DMB: ... 0101 option
_BARRIER = re.compile(rb"\xbf\xf3[\x40-\x5f]\x8f", re.DOTALL)


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


def find_barriers(data: bytes, base: int) -> list[int]:
    """Addresses of DSB/DMB encodings (ISB ends a translated block by itself)."""
    return _halfword_aligned(_BARRIER, data, base)


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


def _is_32bit(first: int) -> bool:
    return first >> 11 in (0x1D, 0x1E, 0x1F)  # A5.1


@dataclass(frozen=True)
class Store:
    """A single-register store (STR/STRH/STRB in any addressing form, STRT/STRHT/STRBT)."""

    size: int  # of the instruction, bytes
    rn: int  # base register
    offset: int  # signed immediate offset (0 in the register form)
    rm: int | None  # index register of the register form, shifted left by ``shift``
    shift: int
    indexed: bool  # the offset applies to the address (False: post-indexed)
    writeback: bool  # Rn = Rn + offset afterwards

    def address(self, reg: Callable[[int], int]) -> int:
        """The address written, from the registers before the instruction (``reg(n)``)."""
        base = reg(self.rn)
        if self.rm is not None:
            return (base + (reg(self.rm) << self.shift)) & 0xFFFFFFFF
        return (base + self.offset) & 0xFFFFFFFF if self.indexed else base


def single_store(first: int, second: int) -> Store | None:
    """The single-register store encoded by ``first``/``second``, else None (A5.2, A5.3.10)."""
    if not _is_32bit(first):
        rn, low = first >> 3 & 7, first >> 6
        if first & 0xFE00 in (0x5000, 0x5200, 0x5400):  # register offset
            return Store(2, rn, 0, low & 7, 0, True, False)
        scale = {0x6000: 4, 0x7000: 1, 0x8000: 2}.get(first & 0xF800)
        if scale is not None:  # immediate offset
            return Store(2, rn, (low & 0x1F) * scale, None, 0, True, False)
        if first & 0xF800 == 0x9000:  # SP-relative
            return Store(2, 13, (first & 0xFF) * 4, None, 0, True, False)
        return None
    rn = first & 0xF
    if first & 0xFF10 != 0xF800 or rn == 15:  # store single data item, Rn != PC
        return None
    op1 = first >> 5 & 7
    if op1 in (4, 5, 6):  # 12-bit immediate
        return Store(4, rn, second & 0xFFF, None, 0, True, False)
    if op1 == 7:
        return None
    if second & 0x0800:  # 8-bit immediate: 1 P U W imm8
        p, u, w = second >> 10 & 1, second >> 9 & 1, second >> 8 & 1
        if not (p or w):
            return None
        imm = (second & 0xFF) if u else -(second & 0xFF)
        return Store(4, rn, imm, None, 0, bool(p), bool(w))
    if second & 0x0FC0 == 0:  # register, LSL #imm2
        return Store(4, rn, 0, second & 0xF, second >> 4 & 3, True, False)
    return None


def stores_end_precisely(code: bytes) -> bool:
    """True when a run stopped inside any store of this block (a run of Thumb instructions from
    its start) stops right after that store's memory access: no IT instruction (Unicorn cannot
    stop inside an IT block) and no store of several words (STM, PUSH, STRD) or STREX."""
    off = 0
    while off + 2 <= len(code):
        first = code[off] | code[off + 1] << 8
        if _is_32bit(first):
            if first & 0xFE00 == 0xE800:  # load/store multiple, dual, exclusive, table branch
                return False
            off += 4
            continue
        if first & 0xF800 == 0xC000 or first & 0xFE00 == 0xB400:  # STM, PUSH
            return False
        if first & 0xFF00 == 0xBF00 and first & 0xF:  # IT
            return False
        off += 2
    return True

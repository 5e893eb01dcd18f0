"""Tiny hand-assembled Cortex-M3 images for tests that must not need a cross compiler.

Each image is a vector table followed by Thumb code; encodings are from the
ARMv7-M ARM (A7.7) and spelled out next to each use.
"""

from __future__ import annotations

import struct

FLASH = 0x0800_0000
SRAM_TOP = 0x2000_C000
CODE = FLASH + 0x200  # code starts after a 128-entry vector table

# Thumb encodings used by the tests.
B_SELF = bytes.fromhex("fee7")  # b .
CPSID_I = bytes.fromhex("72b6")  # cpsid i
CPSIE_I = bytes.fromhex("62b6")  # cpsie i
WFI = bytes.fromhex("30bf")  # wfi
NOP = bytes.fromhex("00bf")  # nop
BX_LR = bytes.fromhex("7047")  # bx lr
SVC0 = bytes.fromhex("00df")  # svc #0
UDF = bytes.fromhex("00de")  # udf #0 (permanently undefined)


def ldr_literal(reg: int, word_offset: int) -> bytes:
    """ldr rN, [pc, #4*word_offset] (T1)."""
    return struct.pack("<H", 0x4800 | reg << 8 | word_offset)


def str_r1_r0() -> bytes:
    return struct.pack("<H", 0x6001)  # str r1, [r0]


def ldr_r1_r0() -> bytes:
    return struct.pack("<H", 0x6801)  # ldr r1, [r0]


def image(code: bytes, handlers: dict[int, bytes] | None = None, msp: int = SRAM_TOP,
          reset_thumb: bool = True) -> bytes:
    """A flash image: vector table, code at CODE, each handler's code after it.

    ``handlers`` maps exception numbers to handler code; unlisted vectors point
    at a ``b .`` default handler.
    """
    handlers = handlers or {}
    blob = bytearray(code)
    while len(blob) % 4:
        blob += NOP
    default = CODE + len(blob)
    blob += B_SELF + NOP
    addresses = {}
    for exc, body in handlers.items():
        addresses[exc] = CODE + len(blob)
        blob += body
        while len(blob) % 4:
            blob += NOP
    vectors = [msp, CODE | (1 if reset_thumb else 0)]
    for exc in range(2, 128):
        vectors.append(addresses.get(exc, default) | 1)
    table = struct.pack("<128I", *vectors)
    return table + bytes(blob)


def with_pool(instructions: list[bytes | tuple[str, int, int]], pool: list[int]) -> bytes:
    """Lay out instructions then a word-aligned literal pool.

    Entries ``("ldr", reg, index)`` become ``ldr reg, [pc, #..]`` loading pool[index].
    """
    size = sum(2 for _ in instructions)
    pool_start = (size + 3) & ~3
    out = bytearray()
    for ins in instructions:
        if isinstance(ins, tuple):
            _, reg, index = ins
            pc = (len(out) + 4) & ~3
            offset = pool_start + 4 * index - pc
            out += ldr_literal(reg, offset // 4)
        else:
            out += ins
    while len(out) < pool_start:
        out += NOP
    for word in pool:
        out += struct.pack("<I", word)
    return bytes(out)

"""A small, real test application, generated for any application address on any STM32F103.

``python -m emulator conformance BOOT`` (no APP) downloads this application to where the
bootloader expects one.  It is a complete Cortex-M3 image, assembled here by hand, with no
cross compiler needed:

* a vector table: initial MSP at the top of the chip's SRAM, the reset handler, fault
  handlers that stop in ``b .``, and a default handler for everything else;
* a reset handler that behaves like a careful application.  It sets VTOR to its own table
  and stops and clears what a bootloader may have left running (SysTick, NVIC
  enables and pendings).  Then, as CMSIS ``SystemInit`` does, it goes back to the HSI
  8 MHz clock.  It enables USART1 on PA9 at 115200 baud and adds up every word of its own
  image;
* it prints ``bootsim test application at 0x08008000``, ``sum XXXXXXXX`` and ``done``, then
  waits in WFI.

The sum covers the whole image.  An image that was only half written (a power cut, an
erase that wiped a page) prints another sum, or none at all.  The image is padded with
deterministic filler to span several flash pages, so a download takes several blocks
and several erases.

Encodings: ARMv7-M Architecture Reference Manual, A7.7 (the 16-bit Thumb forms, and the
32-bit BL).  Registers: RM0008 §7.3 (RCC), §9.2 (GPIO), §27.6 (USART); PM0056 §4.3-4.4
(SCB, SysTick), §4.2 (NVIC).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from emulator.core.chips import Chip, get_chip

VECTORS = 76  # 16 system exceptions + 60 IRQs: the high-density table, which also serves the C8
FAULT_VECTORS = (3, 4, 5, 6)  # HardFault, MemManage, BusFault, UsageFault: stop where they can be seen
HSI_BRR_115200 = 69  # 8 MHz / 115200 = 69.4 (RM0008 §27.3.4)

# Peripheral and system registers (PM0056, RM0008).
SCB_VTOR, SCB_ICSR = 0xE000_ED08, 0xE000_ED04
SYST_CSR = 0xE000_E010
NVIC_ICER0, NVIC_ICPR0 = 0xE000_E180, 0xE000_E280
RCC = 0x4002_1000  # CR +0, CFGR +4, APB2ENR +0x18
GPIOA_CRH = 0x4001_0804
USART1 = 0x4001_3800  # SR +0, DR +4, BRR +8, CR1 +0xC

COND = {"eq": 0, "ne": 1, "hs": 2, "lo": 3, "hi": 8, "ls": 9, "ge": 10, "lt": 11}


@dataclass(frozen=True)
class BuiltinApplication:
    """The generated image, where it goes, and what it prints when it runs intact."""

    address: int
    image: bytes
    expected_uart: str
    chip: str

    @property
    def end(self) -> int:
        return self.address + len(self.image)

    def write(self, path: str | Path) -> Path:
        """Write the raw image (a .bin, to be loaded at :attr:`address`)."""
        path = Path(path)
        path.write_bytes(self.image)
        return path


class _Assembler:
    """Two passes over 16-bit Thumb instructions (and BL), labels and a literal pool at the end."""

    def __init__(self, origin: int) -> None:
        self.origin = origin
        self.items: list[tuple[str, tuple]] = []
        self.pool: list[int] = []

    def label(self, name: str) -> None:
        self.items.append(("label", (name,)))

    def op(self, name: str, *args: object) -> None:
        self.items.append((name, args))

    def literal(self, reg: int, value: int | str) -> None:
        """LDR reg, =value; a str value is the address of a label or of a data block."""
        value = value if isinstance(value, str) else value & 0xFFFF_FFFF
        if value not in self.pool:
            self.pool.append(value)
        self.items.append(("ldr=", (reg, value)))

    def assemble(self, data: dict[str, bytes]) -> tuple[bytes, dict[str, int]]:
        """Code, then the literal pool, then the ``data`` blocks; returns the bytes and every label."""
        labels: dict[str, int] = {}
        address = self.origin
        for kind, args in self.items:
            if kind == "label":
                labels[args[0]] = address
            else:
                address += 4 if kind == "bl" else 2
        pool_at = (address + 3) & ~3
        address = pool_at + 4 * len(self.pool)
        for name, block in data.items():
            labels[name] = address
            address += len(block)
        out = bytearray()
        address = self.origin
        for kind, args in self.items:
            if kind == "label":
                continue
            word = self._encode(kind, args, address, labels, pool_at)
            out += word
            address += len(word)
        while (self.origin + len(out)) % 4:
            out += struct.pack("<H", 0xBF00)  # nop
        for value in self.pool:
            out += struct.pack("<I", labels[value] if isinstance(value, str) else value)
        for block in data.values():
            out += block
        return bytes(out), labels

    def _encode(self, kind: str, args: tuple, address: int, labels: dict[str, int], pool_at: int) -> bytes:
        h = lambda v: struct.pack("<H", v)  # noqa: E731 - one halfword
        if kind == "ldr=":  # LDR Rt, [PC, #imm8*4] (T1)
            reg, value = args
            offset = pool_at + 4 * self.pool.index(value) - ((address + 4) & ~3)
            assert 0 <= offset < 1024 and offset % 4 == 0
            return h(0x4800 | reg << 8 | offset // 4)
        if kind in ("ldr", "str", "ldrb"):  # LDR/STR Rt, [Rn, #imm5*4]; LDRB Rt, [Rn, #imm5]
            rt, rn, imm = args
            base, scale = {"ldr": (0x6800, 4), "str": (0x6000, 4), "ldrb": (0x7800, 1)}[kind]
            assert imm % scale == 0 and 0 <= imm // scale < 32
            return h(base | (imm // scale) << 6 | rn << 3 | rt)
        if kind in ("movs", "cmpi", "addsi", "subsi"):  # Rd, #imm8
            rd, imm = args
            assert 0 <= imm < 256
            return h({"movs": 0x2000, "cmpi": 0x2800, "addsi": 0x3000, "subsi": 0x3800}[kind] | rd << 8 | imm)
        if kind in ("tst", "orrs", "bics", "cmp"):  # Rn, Rm (data processing, low registers)
            rn, rm = args
            return h({"tst": 0x4200, "orrs": 0x4300, "bics": 0x4380, "cmp": 0x4280}[kind] | rm << 3 | rn)
        if kind == "adds":  # ADDS Rd, Rn, Rm (T1)
            rd, rn, rm = args
            return h(0x1800 | rm << 6 | rn << 3 | rd)
        if kind in ("lsls", "lsrs"):  # Rd, Rm, #imm5
            rd, rm, imm = args
            return h((0x0000 if kind == "lsls" else 0x0800) | imm << 6 | rm << 3 | rd)
        if kind == "b":  # B<cond> (T1) or B (T2)
            cond, target = args if len(args) == 2 else (None, args[0])
            offset = labels[target] - (address + 4)
            if cond is None:
                assert -2048 <= offset < 2048
                return h(0xE000 | (offset >> 1) & 0x7FF)
            assert -256 <= offset < 256
            return h(0xD000 | COND[cond] << 8 | (offset >> 1) & 0xFF)
        if kind == "bl":  # BL (T1): S:I1:I2:imm10:imm11:0, J1 = NOT(I1) XOR S, J2 = NOT(I2) XOR S
            offset = labels[args[0]] - (address + 4)
            i = (offset >> 1) & 0xFF_FFFF
            s, i1, i2 = i >> 23 & 1, i >> 22 & 1, i >> 21 & 1
            j1, j2 = (1 - i1) ^ s, (1 - i2) ^ s
            return h(0xF000 | s << 10 | i >> 11 & 0x3FF) + h(0xD000 | j1 << 13 | j2 << 11 | i & 0x7FF)
        fixed = {"push_lr": 0xB500, "pop_pc": 0xBD00, "bx_lr": 0x4770, "wfi": 0xBF30, "nop": 0xBF00,
                 "cpsid": 0xB672, "cpsie": 0xB662, "b_self": 0xE7FE}
        return h(fixed[kind])


def _program(a: _Assembler, address: int, end: int) -> None:
    r0, r1, r2, r3, r4, r5, r6 = range(7)
    a.label("reset")
    a.op("cpsid")
    # VTOR = our table; SysTick off; every NVIC enable and pending cleared; PendSV/SysTick pend cleared.
    a.literal(r0, SCB_VTOR)
    a.literal(r1, address)
    a.op("str", r1, r0, 0)
    a.literal(r0, SYST_CSR)
    a.op("movs", r1, 0)
    a.op("str", r1, r0, 0)
    a.literal(r1, 0xFFFF_FFFF)
    a.literal(r0, NVIC_ICER0)
    for off in (0, 4, 8):
        a.op("str", r1, r0, off)
    a.literal(r0, NVIC_ICPR0)
    for off in (0, 4, 8):
        a.op("str", r1, r0, off)
    a.literal(r0, SCB_ICSR)
    a.literal(r1, 1 << 25 | 1 << 27)  # PENDSTCLR | PENDSVCLR
    a.op("str", r1, r0, 0)
    a.op("cpsie")
    # SystemInit: HSI on and ready, SYSCLK = HSI, no prescalers.
    a.literal(r0, RCC)
    a.op("ldr", r1, r0, 0)
    a.op("movs", r2, 1)
    a.op("orrs", r1, r2)
    a.op("str", r1, r0, 0)
    a.label("wait_hsi")
    a.op("ldr", r1, r0, 0)
    a.op("movs", r2, 2)
    a.op("tst", r1, r2)
    a.op("b", "eq", "wait_hsi")
    a.op("movs", r1, 0)
    a.op("str", r1, r0, 4)
    a.label("wait_sws")
    a.op("ldr", r1, r0, 4)
    a.op("movs", r2, 0x0C)
    a.op("tst", r1, r2)
    a.op("b", "ne", "wait_sws")
    # IOPAEN | USART1EN; PA9 alternate-function push-pull, 50 MHz (CRH bits 7:4 = 0xB).
    a.op("ldr", r1, r0, 0x18)
    a.literal(r2, 1 << 2 | 1 << 14)
    a.op("orrs", r1, r2)
    a.op("str", r1, r0, 0x18)
    a.literal(r0, GPIOA_CRH)
    a.op("ldr", r1, r0, 0)
    a.op("movs", r2, 0xF0)
    a.op("bics", r1, r2)
    a.op("movs", r2, 0xB0)
    a.op("orrs", r1, r2)
    a.op("str", r1, r0, 0)
    # USART1: 115200 8N1 from 8 MHz, transmitter on.
    a.literal(r0, USART1)
    a.op("movs", r1, HSI_BRR_115200)
    a.op("str", r1, r0, 8)
    a.literal(r1, 1 << 13 | 1 << 3)  # UE | TE
    a.op("str", r1, r0, 0x0C)
    # r4 = the sum of every word of the image.
    a.literal(r5, address)
    a.literal(r6, end)
    a.op("movs", r4, 0)
    a.label("sum")
    a.op("ldr", r1, r5, 0)
    a.op("adds", r4, r4, r1)
    a.op("addsi", r5, 4)
    a.op("cmp", r5, r6)
    a.op("b", "lo", "sum")
    a.literal(r5, "banner")
    a.op("bl", "puts")
    a.op("movs", r6, 8)
    a.label("hex")
    a.op("lsrs", r1, r4, 28)
    a.op("cmpi", r1, 10)
    a.op("b", "lo", "digit")
    a.op("addsi", r1, 7)  # 'A' - '0' - 10
    a.label("digit")
    a.op("addsi", r1, 0x30)
    a.op("bl", "putc")
    a.op("lsls", r4, r4, 4)
    a.op("subsi", r6, 1)
    a.op("b", "ne", "hex")
    a.literal(r5, "trailer")
    a.op("bl", "puts")
    a.label("idle")
    a.op("wfi")
    a.op("b", "idle")
    # puts: the NUL-terminated string at r5 (r0 = USART1).
    a.label("puts")
    a.op("push_lr")
    a.label("puts_next")
    a.op("ldrb", r1, r5, 0)
    a.op("cmpi", r1, 0)
    a.op("b", "eq", "puts_end")
    a.op("bl", "putc")
    a.op("addsi", r5, 1)
    a.op("b", "puts_next")
    a.label("puts_end")
    a.op("pop_pc")
    # putc: wait for TXE, write r1 to DR.
    a.label("putc")
    a.op("ldr", r2, r0, 0)
    a.op("movs", r3, 0x80)
    a.op("tst", r2, r3)
    a.op("b", "eq", "putc")
    a.op("str", r1, r0, 4)
    a.op("bx_lr")
    a.label("default_handler")
    a.op("bx_lr")
    a.label("fault_handler")
    a.op("b_self")


def _filler(length: int) -> bytes:
    out = bytearray()
    block = b"bootsim test application"
    while len(out) < length:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:length])


def default_size(chip: Chip) -> int:
    """Two pages and a bit: a download of several blocks and erases, on either chip."""
    return 2 * chip.page_size + 512


def build_test_application(address: int, chip: Chip | str | None = None, size: int | None = None) -> BuiltinApplication:
    """The test application linked for ``address`` on ``chip`` (default STM32F103RC), padded to
    ``size`` bytes (default :func:`default_size`).  ValueError when it cannot fit there."""
    the_chip = chip if isinstance(chip, Chip) else get_chip(chip)
    size = default_size(the_chip) if size is None else size
    if address % 512:
        raise ValueError(f"an application at 0x{address:08X} cannot relocate VTOR there (needs 512-byte alignment)")
    if not the_chip.flash_base <= address < the_chip.flash_end:
        raise ValueError(f"0x{address:08X} is outside the {the_chip.name}'s flash")
    size = (size + 3) & ~3
    if address + size > the_chip.flash_end:
        raise ValueError(f"a {size}-byte test application does not fit between 0x{address:08X} and the end of "
                         f"the {the_chip.name}'s flash (0x{the_chip.flash_end:08X})")
    code_at = address + VECTORS * 4
    banner = f"bootsim test application at 0x{address:08X}\r\nsum ".encode() + b"\0"
    trailer = b"\r\ndone\r\n\0"
    asm = _Assembler(code_at)
    _program(asm, address, address + size)
    body, labels = asm.assemble({"banner": banner, "trailer": trailer})
    vectors = [the_chip.sram_end, labels["reset"] | 1]
    for n in range(2, VECTORS):
        handler = labels["fault_handler"] if n in FAULT_VECTORS else labels["default_handler"]
        vectors.append(0 if n in (7, 8, 9, 10, 13) else handler | 1)  # reserved entries stay 0
    image = struct.pack(f"<{VECTORS}I", *vectors) + body
    if len(image) > size:
        raise ValueError(f"the test application needs at least {len(image)} bytes")
    image += _filler(size - len(image))
    total = sum(struct.unpack(f"<{size // 4}I", image)) & 0xFFFF_FFFF
    uart = f"bootsim test application at 0x{address:08X}\r\nsum {total:08X}\r\ndone\r\n"
    return BuiltinApplication(address, image, uart, the_chip.name)

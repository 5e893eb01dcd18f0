"""Core figures: emulated MIPS against raw Unicorn on the same code, cost of one
MMIO access, and wall versus emulated time of the fixture firmware.

    python -m bench.bench_core

Prints figures only; nothing here asserts a time (the machines are shared).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from unicorn import UC_ARCH_ARM, UC_HOOK_INTR, UC_MODE_THUMB, UC_PROT_ALL, Uc
from unicorn import arm_const as A

from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from emulator.core.session import BoardOptions, build_board

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"

# Assembled with arm-none-eabi-as from this source (bench/README would repeat it):
#   crc:   mov.w r0,#0x08000000; mov.w r1,#0x10000; mov.w r2,#-1; ldr r3,poly
#   outer: ldrb.w r4,[r0],#1; eors r2,r4; movs r5,#8
#   inner: tst.w r2,#1; lsr.w r2,r2,#1; it ne; eorne r2,r3; subs r5,#1; bne inner
#          subs r1,#1; bne outer; b .           poly: .word 0xEDB88320
#   mmio:  ldr r0,gpio;  loop: ldr r1,[r0]; adds r2,#1; b loop    gpio: .word 0x40010808 (GPIOA_IDR)
#   copy:  ldr r7,src;  outer: mov r0,r7; add.w r1,r7,#0x1000; movs r6,#64
#   inner: ldmia r0!,{r2-r5}; stmia r1!,{r2-r5}; subs r6,#1; bne inner; b outer   src: .word 0x20000000
#   copy_trp: ldr r0,ccr; movs r1,#8; str r1,[r0]; b copy    ccr: .word 0xE000ED14 (CCR.UNALIGN_TRP=1)
PROGRAMS = bytes.fromhex(
    "4ff000604ff480314ff0ff32074b10f8014b6240082512f0010f4fea520218bf5a40013df7d10139f1d1fee7"
    "2083b8ed014801680132fce708080140" "00bf00bf"
    "044f384607f5805140263cc83cc1013efbd1f6e700000020014808210160efe714ed00e0")
CRC_ENTRY, MMIO_ENTRY, COPY_ENTRY, COPY_TRP_ENTRY = 0x08000200, 0x08000230, 0x08000240, 0x08000258


def image(entry: int) -> bytes:
    return struct.pack("<2I", 0x2000C000, entry | 1) + bytes(0x200 - 8) + PROGRAMS


def raw_unicorn_seconds(image: bytes, count: int) -> float:
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB, A.UC_CPU_ARM_CORTEX_M3)
    uc.mem_map(0x08000000, 0x40000, UC_PROT_ALL)
    uc.mem_map(0x20000000, 0xC000, UC_PROT_ALL)
    uc.mem_write(0x08000000, image)
    uc.hook_add(UC_HOOK_INTR, lambda *a: uc.emu_stop())
    t = time.perf_counter()
    uc.emu_start(CRC_ENTRY | 1, 0, count=count)
    return time.perf_counter() - t


def emulated_mips() -> None:
    img = image(CRC_ENTRY)
    m = Machine(get_chip("rc"))
    m.load_flash(img)
    m.power_on()
    t = time.perf_counter()
    m.run(max_instructions=20_000_000)
    wall = time.perf_counter() - t
    n = m.instructions
    raw = raw_unicorn_seconds(img, n)
    print(f"CPU-bound CRC-32 loop, {n:,} instructions:")
    print(f"  emulator        {n / wall / 1e6:8.1f} MIPS  ({wall:.3f} s wall, {m.now_ns / 1e6:.1f} ms emulated at 8 MHz)")
    print(f"  raw Unicorn     {n / raw / 1e6:8.1f} MIPS  (count={n}, no hooks of ours)")
    print(f"  emulator / raw  {raw / wall:8.2f}")


def mmio_cost() -> None:
    # Every iteration is a real MMIO read: r2 changes, so the polling fast-forward cannot apply.
    m = Machine(get_chip("rc"))
    m.load_flash(image(MMIO_ENTRY))
    m.power_on()
    t = time.perf_counter()
    m.run(max_instructions=400_000)
    wall = time.perf_counter() - t
    reads = m.instructions // 3
    print(f"MMIO: {reads:,} peripheral reads in {wall:.3f} s wall -> {wall / reads * 1e6:.2f} us per access "
          "(Unicorn callback + bus + model)")


def copy_loop_cost() -> None:
    # A word copy with LDMIA/STMIA (half of the loop's instructions): each is a trapped
    # instruction (a code hook checks its base for the always-faulting unaligned case);
    # with CCR.UNALIGN_TRP=1 every load and store also goes through the memory hook.
    for label, entry in (("LDM/STM copy loop", COPY_ENTRY), ("same, CCR.UNALIGN_TRP=1", COPY_TRP_ENTRY)):
        m = Machine(get_chip("rc"))
        m.load_flash(image(entry))
        m.power_on()
        t = time.perf_counter()
        m.run(max_instructions=1_000_000)
        wall = time.perf_counter() - t
        print(f"{label:24} {m.instructions:>9,} instr in {wall:.3f} s wall -> "
              f"{m.instructions / wall / 1e6:6.2f} MIPS")


def fixture_runs() -> None:
    for name, budget in (("hello_base", 2_000_000_000), ("exc_test", 5_000_000_000),
                         ("flash_selftest", 5_000_000_000), ("app_big", 2_000_000_000)):
        board = build_board(BoardOptions(image=str(IMAGES / f"{name}.elf")))
        t = time.perf_counter()
        stop = board.machine.run(max_ns=budget)
        wall = time.perf_counter() - t
        m = board.machine
        print(f"{name:15} {stop.kind:6} {m.now_ns / 1e6:9.3f} ms emulated  {wall:7.3f} s wall  "
              f"emulated/wall {m.now_ns / 1e9 / wall:6.3f}  {m.instructions:>10,} instr  "
              f"{m.instructions / wall / 1e6:6.1f} MIPS")


def main() -> None:
    emulated_mips()
    mmio_cost()
    copy_loop_cost()
    fixture_runs()


if __name__ == "__main__":
    main()

"""Core figures: the CPU engine against raw Unicorn on the same bytes, the cost of one MMIO
access, an idle polling loop around a 1 kHz tick, and wall versus emulated time of the
fixture firmware.

    python -m bench.bench_core                          # the engine the installation has
    STM32_BOOTSIM_ENGINE=python python -m bench.bench_core

Prints figures only; nothing here asserts a time (the machines are shared).  Each figure is
the best of three runs, all measured in this run, in CPU time of this process (the wall time
of a quiet machine; on a busy one the wall time also counts the waits for a CPU).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from unicorn import UC_ARCH_ARM, UC_HOOK_INTR, UC_MODE_THUMB, UC_PROT_ALL, Uc
from unicorn import arm_const as A

from bench import goals
from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from emulator.core.session import BoardOptions, build_board

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
REPEAT = 3

# Assembled with arm-none-eabi-as -mcpu=cortex-m3 -mthumb at 0x08000200 from this source:
#   crc:   movs r6,#16                                   @ CRC-32 of 64 KiB of flash, 16 times
#   again: mov.w r0,#0x08000000; mov.w r1,#0x10000; mov.w r2,#-1; ldr r3,poly
#   outer: ldrb.w r4,[r0],#1; eors r2,r4; movs r5,#8
#   inner: tst.w r2,#1; lsr.w r2,r2,#1; it ne; eorne r2,r3; subs r5,#1; bne inner
#          subs r1,#1; bne outer; subs r6,#1; bne again; b .          poly: .word 0xEDB88320
#   mmio_read:  ldr r0,=RCC_CR; 1: ldr r1,[r0]; adds r2,#1; b 1b      @ r2 changes: no pass repeats
#   mmio_write: ldr r0,=RCC_APB2ENR; movs r1,#4; str r1,[r0]          @ GPIOA clock on
#               ldr r0,=GPIOA_ODR; 1: str r2,[r0]; adds r2,#1; b 1b
#   idle:  GPIOA clock on; SysTick LOAD=7999 VAL=0 CTRL=7 (1 kHz at 8 MHz, interrupt on)
#          ldr r4,=GPIOA; ldr r5,=NVIC_ISER; mov.w r6,#0x100000
#   loop:  ldr r1,[r4,#8]; str r6,[r5,#0x80]; str r6,[r5]; ldr r1,[r4,#12]; str r1,[r4,#12]; b loop
#   systick_handler: ldr r0,=0x20000000; ldr r1,[r0]; adds r1,#1; str r1,[r0]; bx lr
#   copy:  ldr r7,src;  outer: mov r0,r7; add.w r1,r7,#0x1000; movs r6,#64
#   inner: ldmia r0!,{r2-r5}; stmia r1!,{r2-r5}; subs r6,#1; bne inner; b outer   src: .word 0x20000000
#   copy_trp: ldr r0,ccr; movs r1,#8; str r1,[r0]; b copy    ccr: .word 0xE000ED14 (CCR.UNALIGN_TRP=1)
PROGRAMS = bytes.fromhex(
    "10264ff000604ff480314ff0ff32094b10f8014b6240082512f0010f4fea520218bf5a40013df7d10139f1d1"
    "013ee8d1fee700bf2083b8ed014801680132fce700100240034804210160034802600132fce700bf18100240"
    "0c0801400a48042101600a480a4941600021816007210160084c094d4ff48016a168c5f880602e60e168e160"
    "f8e700bf1810024010e000e03f1f00000008014000e100e00248016801310160704700bf00000020"
    "044f384607f5805140263cc83cc1013efbd1f6e700000020014808210160efe714ed00e0")
CRC_ENTRY, CRC_END = 0x08000200, 0x08000230
MMIO_READ_ENTRY, MMIO_WRITE_ENTRY = 0x08000238, 0x08000244
IDLE_ENTRY, SYSTICK_HANDLER = 0x0800025C, 0x0800029C
COPY_ENTRY, COPY_TRP_ENTRY = 0x080002AC, 0x080002C4


def image(entry: int) -> bytes:
    vectors = [0x2000C000, entry | 1] + [0] * 13 + [SYSTICK_HANDLER | 1]
    return struct.pack("<16I", *vectors) + bytes(0x200 - 64) + PROGRAMS


def machine(entry: int) -> Machine:
    m = Machine(get_chip("rc"))
    m.load_flash(image(entry))
    m.power_on()
    return m


def best(fn) -> float:
    times = []
    for _ in range(REPEAT):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def raw_unicorn(img: bytes, count: int = 0) -> Uc:
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB, A.UC_CPU_ARM_CORTEX_M3)
    uc.mem_map(0x08000000, 0x40000, UC_PROT_ALL)
    uc.mem_map(0x20000000, 0xC000, UC_PROT_ALL)
    uc.mem_write(0x08000000, img)
    uc.hook_add(UC_HOOK_INTR, lambda *a: uc.emu_stop())
    return uc


def cpu_bound() -> None:
    img = image(CRC_ENTRY)
    counts = []

    def emulator() -> None:
        m = machine(CRC_ENTRY)
        t = time.process_time()
        m.run(max_ns=100_000_000_000)
        times.append(time.process_time() - t)
        counts.append(m.instructions)
        names.append(m.engine.name)

    times: list[float] = []
    names: list[str] = []
    for _ in range(REPEAT):
        emulator()
    emu, n = min(times), counts[0]
    uc = raw_unicorn(img)
    raw = best(lambda: uc.emu_start(CRC_ENTRY | 1, CRC_END))  # no hooks at all: until the "b ."
    uc_count = raw_unicorn(img)
    raw_count = best(lambda: uc_count.emu_start(CRC_ENTRY | 1, CRC_END, count=1 << 40))  # count's per-insn hook
    print(f"CPU-bound CRC-32 loop, {n:,} instructions (same bytes in each):")
    print(f"  emulator, {names[0]} engine   {n / emu / 1e6:8.1f} MIPS  ({emu:.3f} s CPU)")
    print(f"  raw Unicorn, no hooks   {n / raw / 1e6:8.1f} MIPS  ({raw:.3f} s CPU)")
    print(f"  raw Unicorn, count=N    {n / raw_count / 1e6:8.1f} MIPS  (Unicorn's per-instruction counting)")
    print(f"  emulator / raw (no hooks)   {raw / emu:6.2f}")
    goals.record("CPU-bound code / raw Unicorn without hooks", raw / emu, "x", 0.5, at_least=True)


def mmio_cost() -> None:
    for what, entry, register in (("read", MMIO_READ_ENTRY, "RCC_CR"), ("write", MMIO_WRITE_ENTRY, "GPIOA_ODR")):
        m = machine(entry)
        m.run(max_instructions=3_000)
        per_access = []
        for _ in range(REPEAT):
            i0 = m.instructions
            t = time.process_time()
            m.run(max_instructions=300_000)
            per_access.append((time.process_time() - t) / ((m.instructions - i0) / 3))
        goals.record(f"one MMIO {what} ({register})", min(per_access) * 1e6, "us", 1.0, at_least=False)
        print(f"MMIO {what:5} of {register:9}: {min(per_access) * 1e6:5.2f} us per access, the whole pass "
              f"(3 instructions: Unicorn's callback, time, dispatch, model, loop detector), {m.engine.name} engine")


def idle_loop() -> None:
    walls, skipped = [], 0
    for _ in range(REPEAT):
        m = machine(IDLE_ENTRY)
        t = time.process_time()
        m.run(max_ns=2_000_000_000)
        walls.append(time.process_time() - t)
        skipped = m.loops.skipped_passes
    ticks = m.read_word(0x20000000) - 0xA5A5A5A5  # SRAM starts filled with the power-on sentinel
    m = machine(IDLE_ENTRY)
    m.loops.enabled = False
    t = time.process_time()
    m.run(max_ns=50_000_000)
    slow = (time.process_time() - t) / 0.05
    print(f"Idle polling loop (reads GPIOA_IDR, NVIC ICER+ISER, rewrites GPIOA_ODR) around a 1 kHz SysTick, "
          f"2 s emulated, {ticks} ticks:")
    print(f"  {2 / min(walls):7.1f} x real time ({min(walls):.3f} s CPU, {min(walls) / ticks * 1e6:.1f} us a tick, "
          f"{skipped:,} passes skipped)")
    goals.record("idle polling loop around a 1 kHz SysTick", 2 / min(walls), "x", 20, at_least=True)
    print(f"  {1 / slow:7.3f} x real time with the skipping off")


def copy_loop_cost() -> None:
    # A word copy with LDMIA/STMIA (half of the loop's instructions): each is a trapped
    # instruction (a code hook checks its base for the always-faulting unaligned case);
    # with CCR.UNALIGN_TRP=1 every load and store also goes through the memory hook.
    for label, entry, n in (("LDM/STM copy loop", COPY_ENTRY, 20_000_000),
                            ("same, CCR.UNALIGN_TRP=1", COPY_TRP_ENTRY, 1_000_000)):
        walls, count, name = [], 0, ""
        for _ in range(REPEAT):
            m = machine(entry)
            t = time.process_time()
            m.run(max_instructions=n)
            walls.append(time.process_time() - t)
            count, name = m.instructions, m.engine.name
        cpu = min(walls)
        print(f"{label:24} {count:>11,} instr in {cpu:.3f} s CPU -> {count / cpu / 1e6:7.2f} MIPS "
              f"({name} engine)")


def fixture_runs() -> None:
    for name, budget in (("hello_base", 2_000_000_000), ("exc_test", 5_000_000_000),
                         ("flash_selftest", 5_000_000_000), ("app_big", 2_000_000_000)):
        board = build_board(BoardOptions(image=str(IMAGES / f"{name}.elf")))
        t = time.process_time()
        stop = board.machine.run(max_ns=budget)
        wall = time.process_time() - t
        m = board.machine
        print(f"{name:15} {stop.kind:6} {m.now_ns / 1e6:9.3f} ms emulated  {wall:7.3f} s CPU  "
              f"emulated/CPU {m.now_ns / 1e9 / wall:6.3f}  {m.instructions:>10,} instr")


def main() -> None:
    cpu_bound()
    mmio_cost()
    idle_loop()
    copy_loop_cost()
    fixture_runs()


if __name__ == "__main__":
    main()

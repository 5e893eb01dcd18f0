"""Finding the instructions the machine traps (emulator.core.insn_traps) and the code they
are looked for in (emulator.core.code_watch)."""

from __future__ import annotations

import struct

import pytest
from unicorn import UC_ARCH_ARM, UC_MODE_THUMB, UC_PROT_ALL, Uc
from unicorn import arm_const as A

from emulator.core import insn_traps
from emulator.core.chips import get_chip
from emulator.core.code_watch import CodeWatch
from emulator.core.machine import Machine
from tests.thumb import B_SELF, CODE, image, with_pool


def halfwords(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}H", *words)


@pytest.mark.parametrize(("code", "rn"), [
    (halfwords(0xC03C), 0),  # stm r0!, {r2-r5}
    (halfwords(0xCC0C), 4),  # ldm r4!, {r2, r3}
    (halfwords(0xE891, 0x000C), 1),  # ldm.w r1, {r2, r3}
    (halfwords(0xE922, 0x0018), 2),  # stmdb r2!, {r3, r4}
    (halfwords(0xE9D3, 0x1200), 3),  # ldrd r1, r2, [r3]
    (halfwords(0xE8E5, 0x1202), 5),  # strd r1, r2, [r5], #8
])
def test_ldm_stm_ldrd_strd_are_found_with_their_base_register(code, rn):
    assert insn_traps.multiword_accesses_in_block(code, 0x100) == [(0x100, rn)]


@pytest.mark.parametrize("code", [
    halfwords(0xB40C),  # push {r2, r3}
    halfwords(0xBC0C),  # pop {r2, r3}
    halfwords(0xE92D, 0x4010),  # push.w {r4, lr}
    halfwords(0xE8BD, 0x8010),  # pop.w {r4, pc}
    halfwords(0xE9DD, 0x1200),  # ldrd r1, r2, [sp]
    halfwords(0xE850, 0x1F00),  # ldrex r1, [r0]: Unicorn checks it itself
    halfwords(0xE8D0, 0xF001),  # tbb [r0, r1]
])
def test_sp_based_exclusive_and_table_branch_encodings_are_not_trapped(code):
    assert insn_traps.multiword_accesses_in_block(code, 0) == []


def test_block_decoding_skips_the_second_half_of_32_bit_instructions():
    code = halfwords(0xF8D0, 0xC800)  # ldr.w ip, [r0, #2048]: its second half looks like ldm r0!
    assert insn_traps.multiword_accesses_in_block(code, 0) == []


def test_msr_basepri_scan_finds_an_encoding_right_after_a_match_at_an_odd_offset():
    data = bytes([0x00, 0x80, 0xF3, 0x11, 0x88, 0xF3, 0x11, 0x88])  # msr basepri, r8 at 4
    assert insn_traps.find_msr_basepri(data, 0) == [4]


def test_ldm_lookalike_data_in_flash_gets_no_trap():
    data = [0xC8C8C8C8] * 64  # half-words that decode as "ldm r0!, {...}"
    m = Machine(get_chip("rc"))
    m.load_flash(image(with_pool([B_SELF], data)))
    m.power_on()
    m.run(max_ns=1_000_000)
    assert m._multiword_base == {}


def test_ldm_in_code_that_runs_gets_a_trap():
    code = with_pool([("ldr", 0, 0), *[halfwords(0xC806)], B_SELF], [0x2000_0000])  # ldm r0!, {r1, r2}
    m = Machine(get_chip("rc"))
    m.load_flash(image(code))
    m.power_on()
    m.run(max_ns=1_000_000)
    assert list(m._multiword_base) == [CODE + 2]


# -- CodeWatch on a bare Unicorn ---------------------------------------------------------------------------

BASE = 0x1000


def bare(code: bytes) -> tuple[Uc, CodeWatch, list[tuple[int, int]]]:
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB, A.UC_CPU_ARM_CORTEX_M3)
    uc.mem_map(BASE, 0x1000, UC_PROT_ALL)
    uc.mem_write(BASE, code)
    blocks: list[tuple[int, int]] = []
    watch = CodeWatch(uc, [(BASE, BASE + 0x1000)], lambda a, s: blocks.append((a, s)), lambda: None)
    watch.apply()
    return uc, watch, blocks


LOOP = halfwords(0x3001, 0xE7FD)  # 1: adds r0, #1; b 1b


def test_a_block_is_reported_the_first_time_it_runs():
    uc, _, blocks = bare(LOOP)
    uc.emu_start(BASE | 1, 0, count=100)
    assert blocks == [(BASE, 4)]


def test_a_reported_block_is_no_longer_watched():
    uc, watch, _ = bare(LOOP)
    uc.emu_start(BASE | 1, 0, count=10)
    watch.apply()
    assert watch.gaps == [(BASE + 4, BASE + 0x1000)]


def test_rewritten_code_that_had_run_is_watched_again():
    uc, watch, blocks = bare(LOOP)
    uc.emu_start(BASE | 1, 0, count=10)
    watch.apply()
    watch.forget(BASE, BASE + 2)
    watch.apply()
    uc.emu_start(BASE | 1, 0, count=10)
    assert blocks == [(BASE, 4), (BASE, 4)]

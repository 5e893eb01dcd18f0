"""Finding the instructions the machine traps (emulator.core.insn_traps), the code they are
looked for in (the CPU engine's block hook, emulator.core.engine), and the stores the machine
stops inside and completes itself."""

from __future__ import annotations

import struct

import pytest

from emulator.core import engine, insn_traps
from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from tests.thumb import B_SELF, CODE, NOP, image, with_pool


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
    assert m.engine.multiword_traps == set()


def test_ldm_in_code_that_runs_gets_a_trap():
    code = with_pool([("ldr", 0, 0), *[halfwords(0xC806)], B_SELF], [0x2000_0000])  # ldm r0!, {r1, r2}
    m = Machine(get_chip("rc"))
    m.load_flash(image(code))
    m.power_on()
    m.run(max_ns=1_000_000)
    assert m.engine.multiword_traps == {CODE + 2}


# -- single-register stores (the SCS stores the machine completes itself) ------------------------------


def test_single_store_address_forms():
    regs = {0: 0x1000, 1: 7, 2: 3, 13: 0x2000}
    cases = [
        (halfwords(0xF840, 0x1B04), 0x1000, (True, 4)),  # str.w r1, [r0], #4: post-indexed
        (halfwords(0xF840, 0x1F04), 0x1004, (True, 4)),  # str.w r1, [r0, #4]!: pre-indexed
        (halfwords(0xF840, 0x1022), 0x100C, (False, 0)),  # str.w r1, [r0, r2, lsl #2]
        (halfwords(0x70C1, 0), 0x1003, (False, 3)),  # strb r1, [r0, #3]
        (halfwords(0xF820, 0x1C02), 0x0FFE, (False, -2)),  # strh.w r1, [r0, #-2]
        (halfwords(0x9102, 0), 0x2008, (False, 8)),  # str r1, [sp, #8]
    ]
    for code, address, (writeback, offset) in cases:
        store = insn_traps.single_store(*struct.unpack("<HH", code))
        assert store is not None
        assert (store.address(regs.__getitem__), store.writeback, store.offset) == (address, writeback, offset)


@pytest.mark.parametrize("code", [
    halfwords(0xC006),  # stm r0!, {r1, r2}
    halfwords(0xB406),  # push {r1, r2}
    halfwords(0xE9C0, 0x1200),  # strd r1, r2, [r0]
    halfwords(0xE840, 0x2100),  # strex r2, r1, [r0]
    halfwords(0xBF08, 0x6001),  # it eq; streq r1, [r0]
])
def test_blocks_with_multi_word_stores_or_it_are_not_stopped_inside_a_store(code):
    assert not insn_traps.stores_end_precisely(code)


def test_a_block_of_single_stores_is_stopped_inside_a_store():
    assert insn_traps.stores_end_precisely(halfwords(0x6001, 0xF840, 0x1B04, 0x9102, 0x4770))


# -- multi-word traps put in by the CPU engine (emulator/core/engine.py) ----------------------------------

ENGINES = ["c", "python"] if engine.c_engine_available() else ["python"]
LDM_R0 = halfwords(0xC806)  # ldm r0!, {r1, r2}


@pytest.fixture(params=ENGINES)
def which(request, monkeypatch):
    monkeypatch.setenv(engine.ENV_VAR, request.param)
    return request.param


def boot(code: bytes) -> Machine:
    m = Machine(get_chip("rc"))
    m.load_flash(image(code))
    m.power_on()
    return m


def test_a_block_with_an_ldm_is_stopped_once_in_front_of_it_for_its_trap(which):
    # A loop of one block (ldm, subs, bne) run 100 times: the run ends in front of it once.
    loop = [halfwords(0x2364), LDM_R0, halfwords(0x3808), halfwords(0x3B01), halfwords(0xD1FB)]
    code = with_pool([("ldr", 0, 0), *loop, B_SELF], [0x2000_0000])  # movs r3,#100; 1: ldm; subs r0,#8; subs r3,#1; bne 1b
    m = boot(code)
    stops = []
    original = m.engine.trap_new_block

    def trap_new_block() -> list[int]:
        found = original()
        stops.append(found)
        return found
    m.engine.trap_new_block = trap_new_block  # type: ignore[method-assign]
    m.run(max_ns=1_000_000)
    assert stops == [[CODE + 4]]
    assert m.reg("r3") == 0


def test_code_without_multi_word_instructions_gets_no_trap(which):
    m = boot(with_pool([("ldr", 0, 0), halfwords(0x6801), B_SELF], [0x2000_0000]))  # ldr r1, [r0]
    m.run(max_ns=1_000_000)
    assert m.engine.multiword_traps == set()


def test_rewritten_flash_code_with_an_ldm_gets_its_trap_when_it_runs(which):
    # First a nop where the ldm will be; the code is rewritten after a run (as a bootloader
    # writes an application) and started again: the new ldm, unaligned, faults.
    before = with_pool([("ldr", 0, 0), NOP, B_SELF], [0x2000_0001])
    m = boot(before)
    m.run(max_ns=1_000_000)
    assert m.engine.multiword_traps == set()
    m.load_flash(image(with_pool([("ldr", 0, 0), LDM_R0, B_SELF], [0x2000_0001])))
    m.system_reset("pin")
    m.run(max_ns=1_000_000)
    assert CODE + 2 in m.engine.multiword_traps
    assert m.faults and m.faults[0].cause == "UNALIGNED"


def test_a_trap_left_where_the_code_changed_does_nothing(which):
    m = boot(with_pool([("ldr", 0, 0), LDM_R0, B_SELF], [0x2000_0000]))
    m.run(max_ns=1_000_000)
    assert CODE + 2 in m.engine.multiword_traps
    m.load_flash(image(with_pool([("ldr", 0, 0), halfwords(0x6801), B_SELF], [0x2000_0001])))  # ldr r1, [r0]
    m.system_reset("pin")
    m.run(max_ns=1_000_000)
    assert m.faults == []

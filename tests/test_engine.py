"""The CPU engine (emulator/core/engine.py): block-boundary slices, counting rules, and the
C and pure-Python engines giving the same runs on the same fixtures."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bench.bench_core import IDLE_ENTRY
from bench.bench_core import image as bench_image
from emulator.core import engine
from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from emulator.core.session import BoardOptions, build_board
from tests.test_golden_events import GOLDEN, SCENARIOS, event_log
from tests.thumb import B_SELF, BX_LR, CPSID_I, CPSIE_I, NOP, image, with_pool

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
ENGINES = ["c", "python"] if engine.c_engine_available() else ["python"]
needs_c = pytest.mark.skipif(not engine.c_engine_available(), reason="the C engine was not built here")

MARKER = 0x2000_0100
NVIC_ISER0, NVIC_ISPR0 = 0xE000_E100, 0xE000_E200
STR_R1_R0 = struct.pack("<H", 0x6001)
STR_R2_R0 = struct.pack("<H", 0x6002)
MOVS_R2_0, MOVS_R2_1 = struct.pack("<H", 0x2200), struct.pack("<H", 0x2201)


@pytest.fixture(params=ENGINES)
def which(request, monkeypatch):
    monkeypatch.setenv(engine.ENV_VAR, request.param)
    return request.param


def boot(flash: bytes) -> Machine:
    m = Machine(get_chip("rc"))
    m.load_flash(flash)
    m.power_on()
    return m


def test_the_environment_selects_the_engine(which):
    m = Machine(get_chip("rc"))
    assert m.engine.name == {"c": "C", "python": "Python"}[which]


def test_thumb_instruction_lengths():
    # movs (16), ldr.w (32: 0xF8D0), b.w (32: 0xF000 0xB800), nop (16)
    code = bytes.fromhex("0020" "d0f80010" "00f000b8" "00bf")
    assert engine.count_thumb(code) == 4


def test_a_slice_ends_at_the_first_block_boundary_at_or_after_its_budget(which):
    # One block of five nops and a branch back to its start: six instructions a pass.
    m = boot(image(NOP * 5 + struct.pack("<H", 0xE7F9)))  # b .-10: back to the first nop
    m.run(max_instructions=3)
    assert m.instructions == 6
    m.run(max_instructions=7)
    assert m.instructions == 18


def test_conditional_instructions_of_an_it_block_count_when_skipped(which):
    # cmp r0,r0 (Z=1); itt ne; movne r1,#1; movne r2,#1; b .-8: a five-instruction block.
    code = bytes.fromhex("8042" "1cbf" "0121" "0122") + struct.pack("<H", 0xE7FA)
    m = boot(image(code))
    m.run(max_instructions=1)
    assert m.instructions == 5
    assert m.reg("r1") == 0 and m.reg("r2") == 0


def test_a_data_abort_counts_only_the_instructions_before_it(which):
    # ldr r0,=0x30000000 (unmapped); nop; nop; ldr r1,[r0] -> BusFault, escalated to HardFault (b .).
    m = boot(image(with_pool([("ldr", 0, 0), NOP, NOP, struct.pack("<H", 0x6801), NOP, B_SELF], [0x3000_0000])))
    stop = m.run(max_ns=1_000_000)
    assert stop.kind == "fault-hang" or stop.kind == "idle" or stop.kind == "hang"
    assert m.faults[0].cause == "PRECISERR"
    assert m.instructions == 3


def test_an_interrupt_held_by_primask_is_taken_right_after_cpsie(which):
    # The handler stores r2: 0 if it ran right after CPSIE, 1 if the "movs r2,#1" after it ran first.
    thread = with_pool([CPSID_I, MOVS_R2_0, ("ldr", 0, 0), ("ldr", 1, 2), STR_R1_R0, ("ldr", 0, 1), STR_R1_R0,
                        NOP, NOP, CPSIE_I, MOVS_R2_1, B_SELF], [NVIC_ISER0, NVIC_ISPR0, 1 << 3])
    handler = with_pool([("ldr", 0, 0), STR_R2_R0, BX_LR], [MARKER])
    m = boot(image(thread, {16 + 3: handler}))
    m.run(max_ns=1_000_000)
    assert m.read_word(MARKER) == 0
    assert m.exc.taken_counts == {16 + 3: 1}


def test_an_interrupt_pended_by_a_store_to_nvic_ispr_is_taken_right_after_the_store(which):
    # The handler stores r2: 0 if it ran right after the ISPR store, 1 if "movs r2,#1" ran first
    # (the store and the movs are in one translated block).
    thread = with_pool([MOVS_R2_0, ("ldr", 0, 0), ("ldr", 1, 2), STR_R1_R0, ("ldr", 0, 1), STR_R1_R0,
                        MOVS_R2_1, NOP, B_SELF], [NVIC_ISER0, NVIC_ISPR0, 1 << 3])
    handler = with_pool([("ldr", 0, 0), STR_R2_R0, BX_LR], [MARKER])
    m = boot(image(thread, {16 + 3: handler}))
    m.run(max_ns=1_000_000)
    assert (m.read_word(MARKER), m.exc.taken_counts) == (0, {16 + 3: 1})


def test_a_store_the_run_stopped_inside_is_completed_with_its_writeback(which):
    # str.w r1, [r0], #4 to NVIC_ISPR0: the interrupt is taken after it, r0 moved on by 4.
    thread = with_pool([("ldr", 0, 0), ("ldr", 1, 2), STR_R1_R0, ("ldr", 0, 1),
                        struct.pack("<HH", 0xF840, 0x1B04), MOVS_R2_1, B_SELF], [NVIC_ISER0, NVIC_ISPR0, 1 << 3])
    handler = with_pool([("ldr", 1, 0), struct.pack("<H", 0x600A), BX_LR], [MARKER])  # str r2, [r1]
    m = boot(image(thread, {16 + 3: handler}))
    m.run(max_ns=1_000_000)
    assert (m.read_word(MARKER), m.reg("r0"), m.exc.taken_counts) == (0, NVIC_ISPR0 + 4, {16 + 3: 1})


def test_a_b_self_loop_is_never_entered_the_idle_detector_skips_time(which):
    # "nop; b ." is one block (run once), then "b ." alone is a block of its own, never entered.
    m = boot(image(NOP + B_SELF))
    stop = m.run(max_ns=10_000_000)
    assert stop.kind == "idle"
    assert m.instructions == 2


def _fixture_run(name: str, budget_ns: int) -> tuple:
    board = build_board(BoardOptions(image=str(IMAGES / f"{name}.elf")))
    m = board.machine
    stop = m.run(max_ns=budget_ns)
    return (stop.kind, stop.pc, m.now_ns, m.instructions, m.scheduler.cycles,
            [e.as_dict() for e in m.events], {n: bytes(v) for n, v in m.uart_output.items()},
            dict(m.exc.taken_counts))


FIXTURE_RUNS = [("hello_base", 2_000_000_000), ("exc_test", 5_000_000_000), ("flash_selftest", 5_000_000_000)]


@needs_c
@pytest.mark.parametrize(("name", "budget"), FIXTURE_RUNS)
def test_the_c_and_python_engines_run_the_fixtures_identically(name, budget, monkeypatch):
    monkeypatch.setenv(engine.ENV_VAR, "c")
    c = _fixture_run(name, budget)
    monkeypatch.setenv(engine.ENV_VAR, "python")
    py = _fixture_run(name, budget)
    assert c == py


@pytest.mark.parametrize(("name", "budget"), FIXTURE_RUNS[:2])
def test_two_runs_are_identical(name, budget):
    assert _fixture_run(name, budget) == _fixture_run(name, budget)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_python_engine_matches_the_golden_event_logs(name, monkeypatch):
    monkeypatch.setenv(engine.ENV_VAR, "python")
    log = event_log(*SCENARIOS[name])
    assert log == json.loads((GOLDEN / f"{name}.json").read_text())


# An idle polling loop around a 1 kHz SysTick (bench/bench_core.py: IDLE): reads GPIOA_IDR, masks
# and unmasks IRQ 20 in the NVIC, rewrites GPIOA_ODR with its own value; the ISR counts in SRAM.
def _idle_machine() -> Machine:
    return boot(bench_image(IDLE_ENTRY))


def _state(m: Machine) -> tuple:
    return (m.now_ns, m.instructions, m.scheduler.cycles, [e.as_dict() for e in m.events],
            dict(m.exc.taken_counts), m.regs.snapshot_regs(),
            bytes(m.uc.mem_read(m.chip.sram_base, m.chip.sram_size)))


def test_skipping_a_periodic_loop_is_exactly_as_if_it_had_run(which):
    runs = []
    for skipping in (True, False):
        m = _idle_machine()
        m.loops.enabled = skipping
        m.run(max_ns=30_000_000)
        runs.append((_state(m), m.loops.skipped_passes))
    (with_skips, skipped), (without, _) = runs
    assert skipped > 10_000
    assert with_skips == without


def test_a_loop_resumed_after_each_tick_is_verified_over_one_period(which):
    # After the SysTick handler returns, one period is run and compared (LoopDetector.begin_verify)
    # instead of finding the loop again pass by pass; the run is the same as without skipping.
    m = _idle_machine()
    m.run(max_ns=30_000_000)
    without = _idle_machine()
    without.loops.enabled = False
    without.run(max_ns=30_000_000)
    assert m.loops.verified >= 25  # 30 ticks: the first ones find the loop by checks
    assert _state(m) == _state(without)


def test_a_wrong_period_fails_verification_and_the_loop_is_found_again(which):
    m = _idle_machine()
    m.run(max_ns=10_000_000)
    period, models = m.loops._candidate
    m.loops._candidate = (period + 1, models)  # not the loop's period: the states cannot match
    m.loops.armed = True  # as if an interrupt had just returned into the loop
    verified = m.loops.verified
    m.run(max_ns=10_000_000)
    assert m.loops.unverified == 1  # the first verify failed, the checks found the loop again
    assert m.loops._candidate is not None and m.loops._candidate[0] == period
    assert m.loops.verified >= verified + 8
    without = _idle_machine()
    without.loops.enabled = False
    without.run(max_ns=20_000_000)
    assert _state(m) == _state(without)


@pytest.fixture(params=["c", "ctypes"] if engine.c_engine_available() else ["ctypes"])
def memory_path(request, monkeypatch):
    if request.param == "ctypes":  # as installed without a C compiler
        monkeypatch.setattr(engine, "_cengine", None)
    return request.param


def test_a_verify_compares_all_of_sram(memory_path):
    # begin_verify copies SRAM aside (bs_mem_read), end_verify compares it (bs_mem_same, a
    # memcmp in C; ctypes and bytes without the extension): one byte anywhere makes a difference.
    m = _idle_machine()
    m.run(max_ns=10_000_000)
    loops = m.loops
    candidate = loops._candidate
    for offset, changed in ((0, False), (m.chip.sram_size - 1, True), (0x1234, True)):
        loops._candidate = candidate  # a failed verify drops it
        verify = loops.begin_verify(1 << 40)
        assert verify is not None
        if changed:
            old = m.uc.mem_read(m.chip.sram_base + offset, 1)
            m.uc.mem_write(m.chip.sram_base + offset, bytes([old[0] ^ 0x40]))
        m.instructions += verify[0]  # as if the period had run
        assert loops.end_verify(verify, True) == (0 if changed else verify[0])
        if changed:
            m.uc.mem_write(m.chip.sram_base + offset, bytes(old))


class _OldExtension:
    """The C engine as built before the memory helpers and the C callbacks were added."""

    NEW = frozenset({"bs_set_mem_api", "bs_mem_read", "bs_mem_same", "bs_begin", "bs_mmio_read_address",
                     "bs_mmio_write_address", "bs_intr_address"})

    def __init__(self, built) -> None:
        self.ffi, self._lib = built.ffi, built.lib

    @property
    def lib(self):
        outer = self

        class Lib:
            def __getattr__(self, name):
                if name in outer.NEW:
                    raise AttributeError(name)
                return getattr(outer._lib, name)
        return Lib()


@pytest.mark.parametrize("extension", ["current", "old", "none"] if engine.c_engine_available() else ["none"])
def test_the_callbacks_and_memory_helpers_give_the_same_run_with_any_extension(extension, monkeypatch):
    # MMIO and interrupt callbacks go through the extension's C functions when it has them,
    # else through ctypes; the SRAM comparison likewise.  The run is the same either way.
    reference = _idle_machine()
    reference.run(max_ns=20_000_000)
    if extension == "old":
        monkeypatch.setattr(engine, "_cengine", _OldExtension(engine._cengine))
    elif extension == "none":
        monkeypatch.setattr(engine, "_cengine", None)
    m = _idle_machine()
    m.run(max_ns=20_000_000)
    assert m.loops.verified >= 15
    assert (_state(m), m.loops.skipped_passes) == (_state(reference), reference.loops.skipped_passes)


def test_memory_copy_saves_and_compares(memory_path):
    m = _idle_machine()
    base, size = m.chip.sram_base + 0x100, 20000  # more than one chunk of bs_mem_same
    save, same = m.regs.memory_copy(base, size)
    save()
    assert same()
    m.uc.mem_write(base + size - 1, b"\x5a")
    assert not same()
    save()
    assert same()
    assert m.regs.mem_read(base + size - 1, 1) == bytearray(b"\x5a")


@pytest.mark.parametrize("name", ["hello_base", "exc_test"])
def test_skipping_changes_nothing_in_the_fixtures(name):
    runs = []
    for skipping in (True, False):
        board = build_board(BoardOptions(image=str(IMAGES / f"{name}.elf")))
        m = board.machine
        m.loops.enabled = skipping
        m.run(max_ns=2_000_000_000)
        runs.append(_state(m))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("budget", [{"max_instructions": 123_457}, {"max_ns": 7_654_321}])
def test_a_one_block_loop_skips_its_last_pass_too_and_stops_where_it_would(which, budget):
    # The idle loop is one translated block: the pass in which the tick falls due is skipped
    # as well (_fast_forward, one_block), and a budget ends the run where running it would.
    runs = []
    for skipping in (True, False):
        m = _idle_machine()
        m.loops.enabled = skipping
        stop = m.run(**budget)
        runs.append((stop.kind, stop.pc, _state(m)))
    assert runs[0] == runs[1]



def test_run_ns_skips_a_one_block_loop_exactly(which):
    runs = []
    for skipping in (True, False):
        m = _idle_machine()
        m.loops.enabled = skipping
        m.run_ns(7_654_321)
        runs.append(_state(m))
    assert runs[0] == runs[1]


def test_a_stop_soon_in_a_periodic_loop_ends_run_ns_where_it_would_without_skipping(which):
    # A model that asks for the CPU back (stop_soon) in the first pass after each tick, the
    # pass a resumed loop is verified over, ends run_ns at the block boundary after it: no
    # pass is skipped past that request.
    runs = []
    for skipping in (True, False):
        m = _idle_machine()
        m.loops.enabled = skipping
        m.run(max_ns=3_000_000)  # the loop found and skipped around a few ticks
        gpio = m.gpio["A"]
        read, seen = gpio._idr_read, [m.read_word(0x2000_0000)]

        def asking(read=read, m=m, seen=seen) -> int:
            ticks = m.read_word(0x2000_0000)  # the ISR's count
            if ticks != seen[0]:
                seen[0] = ticks
                m.stop_soon()
            return read()
        gpio._idr_read = asking  # type: ignore[method-assign]
        ends = []
        for _ in range(3):
            m.run_ns(2_500_000)
            ends.append(m.now_ns)
        runs.append((ends, _state(m)))
    assert runs[0] == runs[1]

"""Exception-model behaviours of the emulated Cortex-M3, on tiny hand-assembled images."""

from __future__ import annotations

import struct

import pytest

from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from tests.thumb import B_SELF, BX_LR, CPSID_I, CPSIE_I, SVC0, UDF, WFI, image, with_pool

MARKER = 0x2000_0100
NVIC_ISER0, NVIC_ISPR0 = 0xE000_E100, 0xE000_E200
STR_R1_R0 = struct.pack("<H", 0x6001)
LDR_R1_R0 = struct.pack("<H", 0x6801)
LDR_R2_R0 = struct.pack("<H", 0x6802)
ADDS_R1_1 = struct.pack("<H", 0x3101)


def boot(flash: bytes) -> Machine:
    m = Machine(get_chip("rc"))
    m.load_flash(flash)
    m.power_on()
    return m


def marker_handler(value: int = 1) -> bytes:
    return with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, BX_LR], [MARKER, value])


def word(m: Machine, address: int) -> int:
    return m.read_word(address)


def test_empty_loop_with_nothing_scheduled_is_a_clean_idle_end():
    m = boot(image(B_SELF))
    stop = m.run(max_ns=10_000_000)
    assert stop.kind == "idle" and stop.clean


def test_spinning_with_interrupts_disabled_is_reported_as_a_hang():
    m = boot(image(CPSID_I + B_SELF))
    stop = m.run(max_ns=10_000_000)
    assert stop.kind == "hang" and not stop.clean


def test_svc_runs_its_handler_and_returns_to_thread_mode():
    code = SVC0 + B_SELF
    m = boot(image(code, {11: marker_handler()}))
    stop = m.run(max_ns=1_000_000)
    assert stop.kind == "idle"
    assert word(m, MARKER) == 1
    assert m.reg("ipsr") == 0
    assert m.exc.taken_counts == {11: 1}


def test_pending_enabled_irq_is_taken_and_returns():
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 2), STR_R1_R0, ("ldr", 0, 1), STR_R1_R0, B_SELF],
                     [NVIC_ISER0, NVIC_ISPR0, 1 << 3])
    m = boot(image(code, {16 + 3: marker_handler()}))
    m.run(max_ns=1_000_000)
    assert word(m, MARKER) == 1
    assert m.reg("ipsr") == 0


def test_primask_holds_an_irq_until_the_instruction_after_cpsie():
    # cpsid i; enable+pend IRQ3; r1 = marker (handler not run yet); cpsie i; r2 = marker
    code = with_pool([CPSID_I, ("ldr", 0, 0), ("ldr", 1, 2), STR_R1_R0, ("ldr", 0, 1), STR_R1_R0,
                      ("ldr", 0, 3), LDR_R1_R0, CPSIE_I, LDR_R2_R0, B_SELF],
                     [NVIC_ISER0, NVIC_ISPR0, 1 << 3, MARKER])
    m = boot(image(code, {16 + 3: marker_handler()}))
    m.run(max_ns=1_000_000)
    assert m.reg("r1") == 0xA5A5A5A5  # the SRAM sentinel: the handler had not run
    assert m.reg("r2") == 1  # taken right after CPSIE, before the next load


def test_undefined_instruction_escalates_to_hardfault_when_usagefault_is_disabled():
    m = boot(image(UDF))
    stop = m.run(max_ns=1_000_000)
    assert stop.kind == "fault-hang"
    assert m.scb["CFSR"] >> 16 & 1  # UNDEFINSTR
    assert m.scb["HFSR"] >> 30 & 1  # FORCED
    assert m.faults[0].cause == "UNDEFINSTR" and m.faults[0].escalated


def test_reset_vector_without_thumb_bit_takes_an_invstate_hardfault():
    m = boot(image(B_SELF, reset_thumb=False))
    m.run(max_ns=1_000_000)
    assert m.faults[0].cause == "INVSTATE"
    assert m.scb["CFSR"] >> 17 & 1


def test_sysresetreq_resets_the_chip_and_sets_sftrstf():
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, B_SELF], [0xE000ED0C, 0x05FA0004])
    m = boot(image(code))
    m.run(max_instructions=20)
    assert m.resets >= 1
    assert m.rcc["CSR"] >> 28 & 1  # SFTRSTF
    assert any(e.kind == "reset" and e.data.get("cause") == "software" for e in m.events)


def test_aircr_write_without_vectkey_is_ignored():
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, B_SELF], [0xE000ED0C, 0x00000004])
    m = boot(image(code))
    m.run(max_ns=1_000_000)
    assert m.resets == 0


def test_systick_interrupts_every_millisecond_at_8_mhz_while_the_cpu_sleeps():
    # counter = 0; SysTick LOAD=7999 VAL=0 CTRL=7 (HCLK, TICKINT, ENABLE); loop: wfi; b loop
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 4), STR_R1_R0,
                      ("ldr", 0, 1), ("ldr", 1, 3), STR_R1_R0,
                      ("ldr", 0, 2), ("ldr", 1, 5), STR_R1_R0,
                      WFI, bytes.fromhex("fde7")],  # b back to wfi
                     [MARKER, 0xE000E014, 0xE000E010, 7999, 0, 7])
    handler = with_pool([("ldr", 0, 0), LDR_R1_R0, ADDS_R1_1, STR_R1_R0, BX_LR], [MARKER])
    m = boot(image(code, {15: handler}))
    m.run(max_ns=10_500_000)
    assert word(m, MARKER) == 10


def test_same_image_gives_identical_events_and_cycles_twice():
    def once():
        code = with_pool([("ldr", 0, 0), ("ldr", 1, 4), STR_R1_R0, ("ldr", 0, 1), ("ldr", 1, 3), STR_R1_R0,
                          ("ldr", 0, 2), ("ldr", 1, 5), STR_R1_R0, WFI, bytes.fromhex("fde7")],
                         [MARKER, 0xE000E014, 0xE000E010, 799, 0, 7])
        handler = with_pool([("ldr", 0, 0), LDR_R1_R0, ADDS_R1_1, STR_R1_R0, BX_LR], [MARKER])
        m = boot(image(code, {15: handler}))
        m.run(max_ns=3_000_000)
        return [e.as_dict() for e in m.events], m.scheduler.cycles, m.instructions
    assert once() == once()


@pytest.mark.parametrize("address", [0x6000_0000, 0x2001_0000])
def test_load_from_unmapped_memory_is_a_precise_busfault_with_bfar(address):
    code = with_pool([("ldr", 0, 0), LDR_R1_R0, B_SELF], [address])
    m = boot(image(code))
    m.run(max_ns=1_000_000)
    assert m.faults[0].cause == "PRECISERR"
    assert m.scb["BFAR"] == address


# -- CCR.STKALIGN on exception entry and return (ARMv7-M B1.5.7 PushStack, B1.5.8 PopStack) --------

CCR = 0xE000_ED14
MOV_R1_SP = struct.pack("<H", 0x4669)
MOV_R2_SP = struct.pack("<H", 0x466A)
LDR_R1_SP_28 = struct.pack("<H", 0x9907)  # ldr r1, [sp, #28]: the stacked xPSR
STR_R1_R0_4 = struct.pack("<H", 0x6041)  # str r1, [r0, #4]
UNALIGNED_MSP = 0x2000_BFFC  # word aligned, not double-word aligned


def sp_recording_handler() -> bytes:
    """MARKER = SP in the handler, MARKER+4 = the stacked xPSR."""
    return with_pool([("ldr", 0, 0), MOV_R1_SP, STR_R1_R0, LDR_R1_SP_28, STR_R1_R0_4, BX_LR], [MARKER])


def svc_with_ccr(ccr: int | None) -> Machine:
    setup = [] if ccr is None else [("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0]
    code = with_pool([*setup, SVC0, MOV_R2_SP, B_SELF], [CCR, ccr or 0])
    m = boot(image(code, {11: sp_recording_handler()}, msp=UNALIGNED_MSP))
    m.run(max_ns=1_000_000)
    return m


def test_exception_entry_at_reset_keeps_a_4_byte_aligned_frame_because_stkalign_is_clear():
    m = svc_with_ccr(None)
    assert word(m, MARKER) == UNALIGNED_MSP - 32


def test_exception_entry_without_padding_stacks_xpsr_bit_9_clear():
    m = svc_with_ccr(None)
    assert not word(m, MARKER + 4) >> 9 & 1


def test_exception_entry_with_stkalign_set_pads_the_frame_to_8_bytes():
    m = svc_with_ccr(1 << 9)
    assert word(m, MARKER) == UNALIGNED_MSP - 36


def test_exception_entry_with_padding_stacks_xpsr_bit_9_set():
    m = svc_with_ccr(1 << 9)
    assert word(m, MARKER + 4) >> 9 & 1


@pytest.mark.parametrize("ccr", [None, 1 << 9])
def test_exception_return_restores_the_stack_pointer_of_the_interrupted_code(ccr):
    m = svc_with_ccr(ccr)
    assert m.reg("r2") == UNALIGNED_MSP


# -- SysTick COUNTFLAG side effects (ARMv7-M B3.3.3 SYST_CSR, B3.3.5 SYST_CVR) ----------------------

SYST_CSR = 0xE000_E010
STR_R1_R0_8 = struct.pack("<H", 0x6081)  # str r1, [r0, #8]: SYST_CVR
WAIT_COUNTFLAG = bytes.fromhex("0168" "cb03" "fcd5")  # 1: ldr r1,[r0]; lsls r3,r1,#15; bpl 1b
DELAY_50 = bytes.fromhex("3223" "013b" "fdd1")  # movs r3,#50; 1: subs r3,#1; bne 1b


def systick_program(csr: int, middle: list[bytes]) -> Machine:
    """SYST_RVR=3, SYST_CSR=csr, then ``middle``, then r2 = SYST_CSR."""
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0_4, ("ldr", 1, 2), STR_R1_R0,
                      *middle, LDR_R2_R0, B_SELF], [SYST_CSR, 3, csr])
    m = boot(image(code))
    m.run(max_ns=1_000_000)
    return m


def split(code: bytes) -> list[bytes]:
    return [code[i:i + 2] for i in range(0, len(code), 2)]


def test_cpu_read_of_syst_csr_sees_countflag_once_and_clears_it():
    m = systick_program(0b001, split(WAIT_COUNTFLAG))  # HCLK/8: wraps every 32 cycles, no interrupt
    assert (m.reg("r1") >> 16 & 1, m.reg("r2") >> 16 & 1) == (1, 0)


def test_countflag_stays_set_until_syst_csr_is_read():
    m = systick_program(0b001, split(DELAY_50))  # HCLK/8: wraps every 32 cycles
    assert m.reg("r2") >> 16 & 1


def test_write_to_syst_cvr_clears_countflag():
    m = systick_program(0b001, [*split(DELAY_50), STR_R1_R0_8])
    assert not m.reg("r2") >> 16 & 1

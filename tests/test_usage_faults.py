"""UsageFault causes of the Cortex-M3 (ARMv7-M B3.2.15 UFSR, B1.5.8 ExceptionReturn), each
recorded in CFSR, escalated to HardFault with HFSR.FORCED while UsageFault is disabled
(its reset state), and taken with the stacked PC the architecture gives.  Firmware is
hand-assembled Thumb (encodings from the ARMv7-M ARM A7.7, checked with arm-none-eabi-as)."""

from __future__ import annotations

import struct

import pytest

from emulator.core.chips import get_chip
from emulator.core.machine import Machine
from firmware_models.scb import CFSR_BITS, HFSR_BITS
from tests.thumb import B_SELF, BX_LR, CODE, SVC0, UDF, image, with_pool

HARDFAULT, USAGEFAULT, SVCALL, PENDSV = 3, 6, 11, 14
PROBE = 0x2000_0100  # the fault handler's record: SP, stacked PC, stacked xPSR, LR, IPSR
SHCSR, SHPR2, ICSR = 0xE000_ED24, 0xE000_ED1C, 0xE000_ED04
USGFAULTENA = 1 << 18


def h(*words: int) -> list[bytes]:
    return [struct.pack("<H", w) for w in words]


STR_R1_R0 = h(0x6001)[0]
BX_R0 = h(0x4700)[0]
PUSH_R0 = h(0xB401)[0]
POP_PC = h(0xBD00)[0]
LDR_W_PC_R0 = h(0xF8D0, 0xF000)  # ldr.w pc, [r0]
MRC_P15 = h(0xEE10, 0x0F10)  # mrc p15, 0, r0, c0, c0, 0
VADD_F32 = h(0xEE30, 0x0A00)  # vadd.f32 s0, s0, s0 (CP10)
CDP_P1 = h(0xEE00, 0x0100)  # cdp p1, 0, c0, c0, c0, 0


def probe_handler() -> bytes:
    """Record SP, the stacked PC and xPSR, LR and IPSR at PROBE, then spin."""
    return with_pool([("ldr", 0, 0),
                      *h(0x4669), STR_R1_R0,  # mov r1, sp; str r1, [r0]
                      *h(0x9906, 0x6041),  # ldr r1, [sp, #24]; str r1, [r0, #4]
                      *h(0x9907, 0x6081),  # ldr r1, [sp, #28]; str r1, [r0, #8]
                      *h(0x4671, 0x60C1),  # mov r1, lr; str r1, [r0, #12]
                      *h(0xF3EF, 0x8105, 0x6101),  # mrs r1, ipsr; str r1, [r0, #16]
                      B_SELF], [PROBE])


def run(code: bytes, handlers: dict[int, bytes] | None = None, patch=None) -> Machine:
    handlers = {HARDFAULT: probe_handler(), USAGEFAULT: probe_handler(), **(handlers or {})}
    flash = bytearray(image(code, handlers))
    if patch is not None:
        patch(flash)
    m = Machine(get_chip("rc"))
    m.load_flash(bytes(flash))
    m.power_on()
    m.run(max_ns=1_000_000)
    return m


def probe(m: Machine) -> dict[str, int]:
    values = struct.unpack("<5I", m.uc.mem_read(PROBE, 20))
    return dict(zip(("sp", "pc", "xpsr", "lr", "ipsr"), values, strict=True))


def cfsr(m: Machine, name: str) -> bool:
    return bool(m.scb["CFSR"] >> CFSR_BITS[name] & 1)


def forced(m: Machine) -> bool:
    return bool(m.scb["HFSR"] >> HFSR_BITS["FORCED"] & 1)


def enable_usagefault() -> list:
    return [("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0]


ENABLE_POOL = [SHCSR, USGFAULTENA]

# -- UNDEFINSTR ---------------------------------------------------------------------------------------

def test_undefined_encoding_sets_undefinstr():
    m = run(UDF)
    assert cfsr(m, "UNDEFINSTR")


def test_undefined_encoding_stacks_its_own_address_as_pc():
    m = run(UDF)
    assert probe(m)["pc"] == CODE


def test_undefined_encoding_with_usagefault_enabled_runs_the_usagefault_handler():
    m = run(with_pool([*enable_usagefault(), UDF, B_SELF], ENABLE_POOL))
    assert probe(m)["ipsr"] == USAGEFAULT


def test_undefined_encoding_with_usagefault_enabled_leaves_hfsr_forced_clear():
    m = run(with_pool([*enable_usagefault(), UDF, B_SELF], ENABLE_POOL))
    assert not forced(m)


# -- INVSTATE: executing with EPSR.T = 0 --------------------------------------------------------------

EVEN_TARGET = CODE + 0x80  # mapped flash; the fault is taken before anything there runs


def bx_even() -> Machine:
    return run(with_pool([("ldr", 0, 0), BX_R0, B_SELF], [EVEN_TARGET]))


def test_bx_to_an_even_address_sets_invstate_not_undefinstr():
    m = bx_even()
    assert (cfsr(m, "INVSTATE"), cfsr(m, "UNDEFINSTR")) == (True, False)


def test_invstate_escalates_to_hardfault_with_forced_while_usagefault_is_disabled():
    m = bx_even()
    assert (probe(m)["ipsr"], forced(m)) == (HARDFAULT, True)


def test_invstate_fault_stacks_the_even_target_as_pc():
    m = bx_even()
    assert probe(m)["pc"] == EVEN_TARGET


def test_invstate_fault_stacks_xpsr_with_the_thumb_bit_clear():
    m = bx_even()
    assert not probe(m)["xpsr"] >> 24 & 1


def test_pop_of_an_even_address_into_pc_faults_invstate_at_that_address():
    m = run(with_pool([("ldr", 0, 0), PUSH_R0, POP_PC, B_SELF], [EVEN_TARGET]))
    assert (cfsr(m, "INVSTATE"), probe(m)["pc"]) == (True, EVEN_TARGET)


def test_ldr_of_an_even_address_into_pc_faults_invstate_at_that_address():
    m = run(with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, *LDR_W_PC_R0, B_SELF],
                      [0x2000_0200, EVEN_TARGET]))
    assert (cfsr(m, "INVSTATE"), probe(m)["pc"]) == (True, EVEN_TARGET)


def clear_thumb_bit_of_vector(exc: int):
    def patch(flash: bytearray) -> None:
        vector = struct.unpack_from("<I", flash, 4 * exc)[0]
        struct.pack_into("<I", flash, 4 * exc, vector & ~1)
    return patch


def svc_handler_address(m: Machine) -> int:
    return m.read_word(CODE - 0x200 + 4 * SVCALL) & ~1


def test_vector_without_the_thumb_bit_faults_invstate_at_the_handler_address():
    m = run(SVC0 + B_SELF, {SVCALL: BX_LR}, patch=clear_thumb_bit_of_vector(SVCALL))
    assert (cfsr(m, "INVSTATE"), probe(m)["pc"]) == (True, svc_handler_address(m))


def test_vector_without_the_thumb_bit_stacks_the_handlers_exception_number_with_t_clear():
    m = run(SVC0 + B_SELF, {SVCALL: BX_LR}, patch=clear_thumb_bit_of_vector(SVCALL))
    assert probe(m)["xpsr"] & 0x010001FF == SVCALL


def test_exception_return_to_a_frame_with_t_clear_faults_invstate_at_the_return_address():
    # SVC handler: clear bit 24 of the stacked xPSR, then return.
    handler = b"".join(h(0x9907, 0xF021, 0x7180, 0x9107)) + BX_LR
    m = run(SVC0 + B_SELF, {SVCALL: handler})
    assert (cfsr(m, "INVSTATE"), probe(m)["pc"]) == (True, CODE + 2)


# -- INVPC: illegal exception return (B1.5.8 ExceptionReturn) -------------------------------------------


def svc_returning_with(exc_return: int) -> Machine:
    return run(SVC0 + B_SELF, {SVCALL: with_pool([("ldr", 0, 0), BX_R0], [exc_return])})


@pytest.mark.parametrize("exc_return", [0xFFFF_FFF5, 0xFFFF_FFE9, 0xFFFF_FFF8, 0xFFFF_FFFF])
def test_illegal_exc_return_value_sets_invpc(exc_return):
    m = svc_returning_with(exc_return)
    assert cfsr(m, "INVPC")


def test_illegal_exc_return_escalates_to_hardfault_with_forced_while_usagefault_is_disabled():
    m = svc_returning_with(0xFFFF_FFF5)
    assert (probe(m)["ipsr"], forced(m)) == (HARDFAULT, True)


def test_illegal_exc_return_is_taken_on_the_frame_it_was_to_unstack():
    m = svc_returning_with(0xFFFF_FFF5)
    assert probe(m)["sp"] == 0x2000_C000 - 32


def test_illegal_exc_return_frame_still_holds_the_interrupted_pc():
    m = svc_returning_with(0xFFFF_FFF5)
    assert probe(m)["pc"] == CODE + 2


def test_illegal_exc_return_hands_its_value_to_the_fault_handler_in_lr():
    m = svc_returning_with(0xFFFF_FFF5)
    assert probe(m)["lr"] == 0xFFFF_FFF5


def test_illegal_exc_return_deactivates_the_returning_exception():
    m = svc_returning_with(0xFFFF_FFF5)
    assert not m.nvic.active[SVCALL]


def test_return_to_handler_mode_with_no_other_exception_active_is_invpc():
    m = svc_returning_with(0xFFFF_FFF1)
    assert cfsr(m, "INVPC")


def nested_return_to_thread(ccr: int) -> Machine:
    # Thread: CCR = ccr, SVCall priority 0xF0, svc.  SVC handler pends PendSV (priority 0),
    # which preempts it; PendSV returns straight to Thread mode with SVCall still active.
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, ("ldr", 0, 2), ("ldr", 1, 3), STR_R1_R0,
                      SVC0, B_SELF], [0xE000_ED14, ccr, SHPR2, 0xF000_0000])
    svc = with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, BX_LR], [ICSR, 1 << 28])
    pendsv = with_pool([("ldr", 0, 0), BX_R0], [0xFFFF_FFF9])
    return run(code, {SVCALL: svc, PENDSV: pendsv})


def test_return_to_thread_mode_with_another_exception_active_is_invpc():
    m = nested_return_to_thread(0)
    assert cfsr(m, "INVPC")


def test_return_to_thread_mode_with_another_exception_active_is_allowed_with_nonbasethrdena():
    m = nested_return_to_thread(1)
    assert not cfsr(m, "INVPC")


# -- NOCP: the Cortex-M3 has no coprocessor --------------------------------------------------------------


@pytest.mark.parametrize("insn", [MRC_P15, VADD_F32, CDP_P1], ids=["mrc", "vfp", "cdp"])
def test_coprocessor_instruction_sets_nocp(insn):
    m = run(b"".join(insn) + B_SELF)
    assert (cfsr(m, "NOCP"), cfsr(m, "UNDEFINSTR")) == (True, False)


def test_coprocessor_instruction_stacks_its_own_address_as_pc():
    m = run(b"".join(MRC_P15) + B_SELF)
    assert probe(m)["pc"] == CODE


def test_coprocessor_instruction_escalates_to_hardfault_with_forced_while_usagefault_is_disabled():
    m = run(b"".join(MRC_P15) + B_SELF)
    assert (probe(m)["ipsr"], forced(m)) == (HARDFAULT, True)


# -- UNALIGNED (A3.2.1, B3.2.8 CCR.UNALIGN_TRP) -----------------------------------------------------------

DATA = 0x2000_0200
CCR = 0xE000_ED14
UNALIGN_TRP = 1 << 3
STR_R1_R0_4 = h(0x6041)[0]  # str r1, [r0, #4]
STR_R3_R2 = h(0x6013)[0]  # str r3, [r2]
LDR, LDRH, STR, STRH, LDRB = h(0x6801), h(0x8801), h(0x6001), h(0x8001), h(0x7801)  # rt=r1, [r0]
LDM = h(0xE890, 0x0006)  # ldm.w r0, {r1, r2}
STM = h(0xC006)  # stm r0!, {r1, r2}
LDRD = h(0xE9D0, 0x1200)  # ldrd r1, r2, [r0]
STRD = h(0xE9C0, 0x1200)  # strd r1, r2, [r0]
LDREX = h(0xE850, 0x1F00)  # ldrex r1, [r0]
SENTINEL_R1, SENTINEL_R2 = 0xAAAA_AAAA, 0xBBBB_BBBB


def access(insn: list[bytes], *, trap: bool = False, address: int = DATA + 1,
           then: list[bytes] | None = None) -> Machine:
    """DATA = 11223344 55667788; CCR.UNALIGN_TRP = trap; r0 = address, r1/r2 = sentinels; insn."""
    ccr = [("ldr", 2, 3), ("ldr", 3, 4), STR_R3_R2] if trap else []
    code = with_pool([("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0, ("ldr", 1, 2), STR_R1_R0_4, *ccr,
                      ("ldr", 0, 5), ("ldr", 1, 6), ("ldr", 2, 7), *insn, *(then or []), B_SELF],
                     [DATA, 0x1122_3344, 0x5566_7788, CCR, UNALIGN_TRP, address, SENTINEL_R1, SENTINEL_R2])
    return run(code)


def insn_address(trap: bool) -> int:
    return CODE + 2 * (8 + (3 if trap else 0))


def stacked_r1(m: Machine) -> int:
    return m.read_word(probe(m)["sp"] + 4)


@pytest.mark.parametrize(("insn", "r1"), [(LDR, 0x8811_2233), (LDRH, 0x2233)], ids=["ldr", "ldrh"])
def test_unaligned_load_is_performed_while_unalign_trp_is_clear(insn, r1):
    m = access(insn)
    assert (m.reg("r1"), m.scb["CFSR"]) == (r1, 0)


@pytest.mark.parametrize(("insn", "data"), [(STR, "44aaaaaaaa776655"), (STRH, "44aaaa1188776655")],
                         ids=["str", "strh"])
def test_unaligned_store_is_performed_while_unalign_trp_is_clear(insn, data):
    m = access(insn)
    assert (bytes(m.uc.mem_read(DATA, 8)).hex(), m.scb["CFSR"]) == (data, 0)


@pytest.mark.parametrize("insn", [LDR, LDRH, STR, STRH], ids=["ldr", "ldrh", "str", "strh"])
def test_unaligned_single_access_faults_unaligned_when_unalign_trp_is_set(insn):
    m = access(insn, trap=True)
    assert cfsr(m, "UNALIGNED")


def test_unaligned_access_trap_stacks_the_pc_of_the_access():
    m = access(LDR, trap=True)
    assert probe(m)["pc"] == insn_address(trap=True)


def test_unaligned_access_trap_escalates_to_hardfault_with_forced_while_usagefault_is_disabled():
    m = access(LDR, trap=True)
    assert (probe(m)["ipsr"], forced(m)) == (HARDFAULT, True)


def test_unaligned_load_that_traps_leaves_its_destination_register_unchanged():
    m = access(LDR, trap=True)
    assert stacked_r1(m) == SENTINEL_R1


def test_unaligned_store_that_traps_leaves_memory_unchanged():
    m = access(STR, trap=True)
    assert bytes(m.uc.mem_read(DATA, 8)).hex() == "4433221188776655"


def test_aligned_word_access_does_not_trap_with_unalign_trp_set():
    m = access(LDR, trap=True, address=DATA)
    assert (m.reg("r1"), m.scb["CFSR"]) == (0x1122_3344, 0)


def test_byte_access_at_an_odd_address_does_not_trap_with_unalign_trp_set():
    m = access(LDRB, trap=True)
    assert (m.reg("r1"), m.scb["CFSR"]) == (0x33, 0)


def test_unaligned_access_does_not_trap_once_unalign_trp_is_cleared_again():
    clear = [("ldr", 2, 3), *h(0x2300), STR_R3_R2]  # movs r3, #0; str r3, [r2]: CCR = 0
    code = with_pool([("ldr", 2, 0), ("ldr", 3, 1), STR_R3_R2, *clear, ("ldr", 0, 2), *LDR, B_SELF],
                     [CCR, UNALIGN_TRP, DATA + 1, CCR])
    m = run(code)
    assert m.scb["CFSR"] == 0


@pytest.mark.parametrize("insn", [LDM, STM, LDRD, STRD, LDREX], ids=["ldm", "stm", "ldrd", "strd", "ldrex"])
def test_unaligned_multiword_or_exclusive_access_faults_unaligned_with_unalign_trp_clear(insn):
    m = access(insn)
    assert cfsr(m, "UNALIGNED")


@pytest.mark.parametrize("insn", [LDM, STM, LDRD, STRD], ids=["ldm", "stm", "ldrd", "strd"])
def test_unaligned_multiword_access_faults_unaligned_with_unalign_trp_set(insn):
    m = access(insn, trap=True)
    assert cfsr(m, "UNALIGNED")


def test_unaligned_multiword_fault_stacks_the_pc_of_the_instruction():
    m = access(LDM)
    assert probe(m)["pc"] == insn_address(trap=False)


def test_unaligned_stm_leaves_memory_unchanged():
    m = access(STM)
    assert bytes(m.uc.mem_read(DATA, 8)).hex() == "4433221188776655"


def test_unaligned_ldrd_leaves_its_destination_registers_unchanged():
    m = access(LDRD)
    frame = probe(m)["sp"]
    assert (m.read_word(frame + 4), m.read_word(frame + 8)) == (SENTINEL_R1, SENTINEL_R2)


@pytest.mark.parametrize("insn", [LDM, STRD], ids=["ldm", "strd"])
def test_word_aligned_multiword_access_does_not_fault(insn):
    m = access(insn, address=DATA + 4)
    assert m.scb["CFSR"] == 0


def test_unaligned_access_with_usagefault_enabled_runs_the_usagefault_handler():
    enable = [("ldr", 0, 0), ("ldr", 1, 1), STR_R1_R0]
    code = with_pool([*enable, ("ldr", 0, 2), *LDM, B_SELF], [SHCSR, USGFAULTENA, DATA + 2])
    m = run(code)
    assert (probe(m)["ipsr"], forced(m), cfsr(m, "UNALIGNED")) == (USAGEFAULT, False, True)


def test_unaligned_ldm_skipped_by_a_failing_it_condition_does_not_fault():
    m = access([*h(0x4289, 0xBF18), *LDM])  # cmp r1, r1; it ne; ldmne.w r0, {r1, r2}
    assert (m.scb["CFSR"], m.reg("r1")) == (0, SENTINEL_R1)

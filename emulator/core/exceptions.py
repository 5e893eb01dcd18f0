"""Cortex-M3 exception entry, return and fault escalation on a Unicorn core.

Unicorn executes instructions but has no NVIC: it never vectors an
interrupt or a fault and does not perform exception return.  This module
does both, following the ARMv7-M ARM pseudocode (B1.5.6 ExceptionTaken /
PushStack, B1.5.8 ExceptionReturn / PopStack, B1.5.9 escalation, B1.5.15
lockup).  Handlers are always fetched through the live VTOR.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn import arm_const as A

from firmware_models.nvic import (
    BUSFAULT,
    HARDFAULT,
    MEMMANAGE,
    NMI,
    SVCALL,
    USAGEFAULT,
    ExceptionController,
    exception_name,
)
from firmware_models.scb import SCB

EXC_RETURN_HANDLER_MSP = 0xFFFFFFF1
EXC_RETURN_THREAD_MSP = 0xFFFFFFF9
EXC_RETURN_THREAD_PSP = 0xFFFFFFFD
LOCKUP_ADDRESS = 0xFFFFFFFE

_FAULT_OF_CFSR = {
    "IACCVIOL": MEMMANAGE, "DACCVIOL": MEMMANAGE, "MSTKERR": MEMMANAGE, "MUNSTKERR": MEMMANAGE,
    "IBUSERR": BUSFAULT, "PRECISERR": BUSFAULT, "IMPRECISERR": BUSFAULT, "STKERR": BUSFAULT,
    "UNSTKERR": BUSFAULT,
    "UNDEFINSTR": USAGEFAULT, "INVSTATE": USAGEFAULT, "INVPC": USAGEFAULT, "NOCP": USAGEFAULT,
    "UNALIGNED": USAGEFAULT, "DIVBYZERO": USAGEFAULT,
}


# Registers moved by exception entry and return, in the order they are read or written.
_ENTRY_REGS = (A.UC_ARM_REG_IPSR, A.UC_ARM_REG_CONTROL, A.UC_ARM_REG_PSP, A.UC_ARM_REG_MSP,
               A.UC_ARM_REG_XPSR, A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2, A.UC_ARM_REG_R3,
               A.UC_ARM_REG_R12, A.UC_ARM_REG_LR)
_ENTER_REGS = (A.UC_ARM_REG_LR, A.UC_ARM_REG_XPSR, A.UC_ARM_REG_IPSR, A.UC_ARM_REG_APSR_NZCV,
               A.UC_ARM_REG_PC)
_RETURN_REGS = (A.UC_ARM_REG_PSP, A.UC_ARM_REG_MSP, A.UC_ARM_REG_CONTROL)
# What an exception-return trap reads first (the machine's interrupt hook): PC, xPSR, IPSR.
EXIT_TRAP_REGS = (A.UC_ARM_REG_PC, A.UC_ARM_REG_XPSR, A.UC_ARM_REG_IPSR)
_MASK_REGS = (A.UC_ARM_REG_PRIMASK, A.UC_ARM_REG_FAULTMASK, A.UC_ARM_REG_BASEPRI)
_FRAME_REGS = (A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2, A.UC_ARM_REG_R3, A.UC_ARM_REG_R12,
               A.UC_ARM_REG_LR, A.UC_ARM_REG_XPSR, A.UC_ARM_REG_IPSR, A.UC_ARM_REG_APSR_NZCV)


class Lockup(Exception):  # noqa: N818 - the architecture's name for the state
    """The core entered lockup (a fault while in HardFault or NMI, B1.5.15)."""

    def __init__(self, reason: str, pc: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pc = pc


@dataclass
class FaultRecord:
    exception: int  # the exception actually taken (after escalation)
    cause: str  # CFSR bit name, or HFSR reason
    pc: int
    address: int | None
    time_ns: int
    escalated: bool


class ExceptionEngine:
    def __init__(self, uc: Uc, controller: ExceptionController, scb: SCB,
                 writable: Callable[[int, int], bool], now_ns: Callable[[], int],
                 event: Callable[..., None]) -> None:
        self.uc = uc
        self.ctl = controller
        self.scb = scb
        self._writable = writable  # is [address, address+size) stackable memory?
        self._now_ns = now_ns
        self._event = event
        self.faults: list[FaultRecord] = []
        self.erased_vectors: list[tuple[int, int]] = []  # (exception, vector address) fetched as 0xFFFFFFFF
        self.taken_counts: dict[int, int] = {}
        self.first_taken_ns: dict[int, int] = {}
        self.on_taken: list[Callable[[int, int], None]] = []  # (exception, handler address)
        # Entry and return move a whole frame: the registers go through Unicorn in one call
        # each way when the register access offers it (FastRegisters.reader/writer).
        reader = getattr(uc, "reader", None)
        writer = getattr(uc, "writer", None)
        self._read_entry = reader(_ENTRY_REGS) if reader else (lambda: [uc.reg_read(r) for r in _ENTRY_REGS])
        self._read_return = reader(_RETURN_REGS) if reader else (lambda: [uc.reg_read(r) for r in _RETURN_REGS])
        self._read_masks = reader(_MASK_REGS) if reader else (lambda: [uc.reg_read(r) for r in _MASK_REGS])
        self._write_enter = writer(_ENTER_REGS) if writer else self._one_by_one(_ENTER_REGS)
        msp_enter, psp_enter = (A.UC_ARM_REG_MSP,) + _ENTER_REGS, (A.UC_ARM_REG_PSP, A.UC_ARM_REG_CONTROL) + _ENTER_REGS
        self._write_enter_msp = writer(msp_enter) if writer else self._one_by_one(msp_enter)
        self._write_enter_psp = writer(psp_enter) if writer else self._one_by_one(psp_enter)
        self._return_writers: dict[tuple[bool, int], Callable[[list[int]], None]] = {}
        self._writer = writer
        self._read32_fn = getattr(uc, "read32", None)
        self._memo: tuple | None = None  # see _decide

    def _return_writer(self, clear_faultmask: bool, exc_return: int) -> Callable[[list[int]], None]:
        """The registers exception_return writes for this EXC_RETURN, in its order."""
        key = (clear_faultmask, exc_return)
        write = self._return_writers.get(key)
        if write is None:
            regs = (A.UC_ARM_REG_FAULTMASK,) if clear_faultmask else ()
            regs += _FRAME_REGS
            if exc_return == EXC_RETURN_THREAD_PSP:
                regs += (A.UC_ARM_REG_PSP, A.UC_ARM_REG_CONTROL)
            elif exc_return == EXC_RETURN_THREAD_MSP:
                regs += (A.UC_ARM_REG_MSP, A.UC_ARM_REG_CONTROL)
            else:
                regs += (A.UC_ARM_REG_MSP,)
            regs += (A.UC_ARM_REG_PC,)
            write = self._writer(regs) if self._writer else self._one_by_one(regs)
            self._return_writers[key] = write
        return write

    def _one_by_one(self, regs: tuple[int, ...]) -> Callable[[list[int]], None]:
        def write(values: list[int]) -> None:
            for reg, value in zip(regs, values, strict=True):
                self.uc.reg_write(reg, value)
        return write

    # -- register access --------------------------------------------------------------
    def ipsr(self) -> int:
        return self.uc.reg_read(A.UC_ARM_REG_IPSR) & 0x1FF

    def masks(self) -> tuple[bool, bool, int]:
        primask, faultmask, basepri = self._read_masks()
        return bool(primask & 1), bool(faultmask & 1), basepri & 0xFF

    def execution_priority(self) -> int:
        return self.ctl.execution_priority(*self.masks())

    def deliverable(self) -> int | None:
        """The pending exception that preempts the current context now, if any."""
        return self._decide()[0]

    def pending_but_masked(self) -> bool:
        """An enabled exception is pending but held off only by PRIMASK/FAULTMASK/BASEPRI."""
        return self._decide()[1] is not None

    def masks_holding_off(self) -> tuple[int, int, int] | None:
        """PRIMASK, FAULTMASK, BASEPRI as read when they alone hold off a pending exception."""
        return self._decide()[1]

    def _decide(self) -> tuple[int | None, tuple[int, int, int] | None]:
        """(deliverable exception, the raw masks when a pending one is held off only by them).

        The run loop asks between every two CPU slices, and an interrupt handler that runs
        with SysTick pending but masked asks the same question many times over: the answer
        is kept with every input it depends on (the masks, the pending, active and enabled
        exceptions, the priorities and PRIGROUP) and reused while they compare equal.  The
        lists hold bools and small ints, so comparing them runs at C speed.
        """
        ctl = self.ctl
        primask, faultmask, basepri = masks = tuple(self._read_masks())
        memo = self._memo
        if (memo is not None and memo[0] == masks and memo[1] == ctl.pending and memo[2] == ctl.active
                and memo[3] == ctl.enabled and memo[4] == ctl.priority and memo[5] == ctl.prigroup):
            return memo[6]
        exc = ctl.highest_pending()
        result: tuple[int | None, tuple[int, int, int] | None] = (None, None)
        if exc is not None:
            prio = ctl.group_priority(ctl.raw_priority(exc))
            if prio < ctl.execution_priority(bool(primask & 1), bool(faultmask & 1), basepri & 0xFF):
                result = (exc, None)
            elif prio < ctl.execution_priority(False, False, 0):
                result = (None, masks)
        self._memo = (masks, ctl.pending[:], ctl.active[:], ctl.enabled[:], ctl.priority[:],
                      ctl.prigroup, result)
        return result

    def _read32(self, address: int) -> int:
        if self._read32_fn is not None:
            return self._read32_fn(address)
        return struct.unpack("<I", self.uc.mem_read(address, 4))[0]

    def _set_xpsr(self, value: int) -> None:
        self.uc.reg_write(A.UC_ARM_REG_XPSR, value)
        self.uc.reg_write(A.UC_ARM_REG_IPSR, value & 0x1FF)
        # Writing APSR rebuilds Unicorn's cached hflags, so handler mode is seen by the
        # translator and EXC_RETURN branches trap (docs/ARCHITECTURE.md, Unicorn notes).
        self.uc.reg_write(A.UC_ARM_REG_APSR_NZCV, value & 0xF0000000)

    # -- entry (B1.5.6) -------------------------------------------------------------------
    def take(self, exc: int, return_address: int, *, thumb: bool | None = None) -> None:
        """Stack the context and vector to ``exc``; ``return_address`` is the stacked PC.

        ``thumb`` overrides the EPSR.T bit of the stacked xPSR (False for a fault taken
        while executing with T=0, which Unicorn does not keep once we move the PC).
        """
        uc = self.uc
        ipsr, control, psp, msp, xpsr, r0, r1, r2, r3, r12, lr = self._read_entry()
        in_handler = (ipsr & 0x1FF) != 0
        use_psp = not in_handler and bool(control & 2)
        sp = psp if use_psp else msp
        if thumb is not None:
            xpsr = (xpsr & ~(1 << 24)) | (int(thumb) << 24)
        frame_sp = (sp - 32) & 0xFFFFFFFF
        # PushStack (B1.5.7): the frame is 8-byte aligned only when CCR.STKALIGN is set,
        # which a Cortex-M3 r1p1 does not do at reset; bit 9 of the stacked xPSR is
        # the padding flag (frameptralign), 0 when no word was inserted.
        if self.scb.ccr("STKALIGN") and frame_sp & 4:
            frame_sp -= 4
            xpsr |= 1 << 9
        else:
            xpsr &= ~(1 << 9)
        frame = struct.pack("<8I", r0, r1, r2, r3, r12, lr, return_address & 0xFFFFFFFE, xpsr & 0xFFFFFFFF)
        stack_ok = self._writable(frame_sp, 32)
        exc_return = EXC_RETURN_HANDLER_MSP if in_handler else (
            EXC_RETURN_THREAD_PSP if use_psp else EXC_RETURN_THREAD_MSP)
        handler: int | None = None
        if stack_ok:
            uc.mem_write(frame_sp, frame)
            try:
                handler = self._read32(self.ctl.vtor + 4 * exc)
            except UcError:
                handler = None  # VECTTBL: _vector below
            if handler is not None and handler != 0xFFFFFFFF:
                # The common case: the new stack pointer goes with the handler's registers in
                # one write (the vector fetch has no effect on the registers).
                self.ctl.activate(exc)
                self._enter(exc, exc_return, handler, (frame_sp, control & ~2) if use_psp else (frame_sp,))
                return
        if use_psp:
            uc.reg_write(A.UC_ARM_REG_PSP, frame_sp)
            uc.reg_write(A.UC_ARM_REG_CONTROL, control & ~2)  # SPSEL=0 in thread: SP is MSP
        else:
            uc.reg_write(A.UC_ARM_REG_MSP, frame_sp)
        if not stack_ok:
            # Derived fault on stacking (B1.5.6 PushStack): STKERR/MSTKERR.
            self._stacking_failed(exc, frame_sp, return_address)
            return
        self._vector(exc, exc_return, return_address, handler, fetched=True)

    def _vector(self, exc: int, exc_return: int, return_address: int, handler: int | None = None,
                fetched: bool = False) -> None:
        """Fetch the vector (unless ``fetched``: then ``handler`` is it, None when the fetch
        failed) and enter the handler."""
        vtor = self.ctl.vtor
        if not fetched:
            try:
                handler = self._read32(vtor + 4 * exc)
            except UcError:
                handler = None
        if handler is None:
            # Vector table read failed: HardFault with HFSR.VECTTBL (B1.5.6).
            if exc in (HARDFAULT, NMI):
                raise Lockup(f"vector fetch for {exception_name(exc)} from 0x{vtor + 4 * exc:08X} failed",
                             return_address) from None
            self.scb.record_hfsr("VECTTBL")
            self._record(HARDFAULT, "VECTTBL", return_address, vtor + 4 * exc, True)
            self.ctl.activate(HARDFAULT)
            self._enter(HARDFAULT, exc_return, self._read32_or_lockup(vtor + 4 * HARDFAULT))
            return
        if handler == 0xFFFFFFFF:
            self._event("erased_vector", exception=exception_name(exc), vector_address=vtor + 4 * exc)
            self.erased_vectors.append((exc, vtor + 4 * exc))
        self.ctl.activate(exc)
        self._enter(exc, exc_return, handler)

    def _read32_or_lockup(self, address: int) -> int:
        try:
            return self._read32(address)
        except UcError:
            raise Lockup(f"vector fetch from 0x{address:08X} failed", address) from None

    def _enter(self, exc: int, exc_return: int, handler: int, stack: tuple[int, ...] = ()) -> None:
        # EPSR.T comes from bit 0 of the vector; without it the first instruction of the
        # handler takes an INVSTATE UsageFault (B1.5.6): the stacked PC is the handler's
        # address and the stacked xPSR has T=0 and the handler's exception number.
        # [the frame's SP (MSP, or PSP and CONTROL), from take], LR, then xPSR as _set_xpsr
        # writes it, then the PC (Unicorn takes the Thumb state from its bit 0), in that order.
        xpsr = (1 << 24) | exc
        values = (exc_return, xpsr, xpsr & 0x1FF, xpsr & 0xF0000000, handler | 1)
        if not stack:
            self._write_enter(values)
        elif len(stack) == 1:
            self._write_enter_msp(stack + values)
        else:
            self._write_enter_psp(stack + values)
        self.taken_counts[exc] = self.taken_counts.get(exc, 0) + 1
        if exc not in self.first_taken_ns:
            self.first_taken_ns[exc] = self._now_ns()
        for hook in self.on_taken:
            hook(exc, handler)
        if not handler & 1:
            self.fault("INVSTATE", handler & ~1)

    def _stacking_failed(self, exc: int, frame_sp: int, return_address: int) -> None:
        if exc in (HARDFAULT, NMI) or self.execution_priority() < 0:
            raise Lockup(f"stacking for {exception_name(exc)} at SP=0x{frame_sp:08X} failed (outside SRAM)",
                         return_address)
        self.scb.record_cfsr("STKERR")
        self.scb.record_hfsr("FORCED")
        self._record(HARDFAULT, "STKERR", return_address, frame_sp, True)
        # The stack is unusable; the HardFault handler is entered on the same (bad) MSP so
        # its own first push faults again and locks up, as on the hardware.
        self.ctl.activate(HARDFAULT)
        self._enter(HARDFAULT, EXC_RETURN_THREAD_MSP, self._read32_or_lockup(self.ctl.vtor + 4 * HARDFAULT))

    # -- faults (B1.5.9 escalation) ---------------------------------------------------------
    def fault(self, cause: str, pc: int, address: int | None = None, *, imprecise_return: int | None = None,
              ) -> None:
        """Raise a synchronous fault for the instruction at ``pc``.

        ``cause`` is a CFSR bit name.  The fault is taken at once: configurable
        faults escalate to HardFault when disabled or unable to preempt; a fault
        at priority -1 or below is lockup.
        """
        target = _FAULT_OF_CFSR[cause]
        return_address = pc if imprecise_return is None else imprecise_return
        self.scb.record_cfsr(cause)
        if address is not None and cause in ("PRECISERR",):
            self.scb.set_bfar(address)
        if address is not None and cause in ("DACCVIOL",):
            self.scb.set_mmfar(address)
        escalated = False
        exec_prio = self.execution_priority()
        if not self.ctl.enabled[target] or self.ctl.group_priority(self.ctl.raw_priority(target)) >= exec_prio:
            escalated = True
            target = HARDFAULT
            if exec_prio <= -1:
                self._record(HARDFAULT, cause, pc, address, True)
                raise Lockup(f"{cause} fault while at priority {exec_prio} (in HardFault/NMI or FAULTMASK)", pc)
            self.scb.record_hfsr("FORCED")
        self._record(target, cause, pc, address, escalated)
        # INVSTATE means the instruction was to execute with EPSR.T=0: the frame says so.
        self.take(target, return_address, thumb=False if cause == "INVSTATE" else None)

    def svc(self, return_address: int) -> None:
        """SVC: take SVCall, or escalate to HardFault if it cannot preempt (B1.5.9)."""
        prio = self.ctl.group_priority(self.ctl.raw_priority(SVCALL))
        exec_prio = self.execution_priority()
        if prio < exec_prio:
            self.take(SVCALL, return_address)
            return
        if exec_prio <= -1:
            raise Lockup("SVC executed at priority -1 or higher", return_address - 2)
        self.scb.record_hfsr("FORCED")
        self._record(HARDFAULT, "SVC escalated", return_address - 2, None, True)
        self.take(HARDFAULT, return_address)

    def _record(self, exc: int, cause: str, pc: int, address: int | None, escalated: bool) -> None:
        self.faults.append(FaultRecord(exc, cause, pc, address, self._now_ns(), escalated))
        self._event("fault", exception=exception_name(exc), cause=cause, fault_pc=pc,
                    address=address, escalated=escalated)

    # -- return (B1.5.8) ---------------------------------------------------------------------
    def _return_check(self, exc_return: int, returning: int) -> str | None:
        """Why ``exc_return`` may not return from ``returning`` now (ExceptionReturn()), or None."""
        nested = self.ctl.nested_active_count()
        if returning == 0 or not self.ctl.active[returning]:
            return "return from an inactive handler"
        if exc_return >> 4 != 0x0FFF_FFFF:
            # EXC_RETURN<27:4> not all ones (e.g. an FP frame value on this FPU-less core):
            # UNPREDICTABLE in the architecture, an illegal EXC_RETURN on the Cortex-M3.
            return "reserved EXC_RETURN value"
        if exc_return & 0xF == 0x1:
            return "return to Handler mode with no other exception active" if nested == 1 else None
        if exc_return & 0xF in (0x9, 0xD):
            if nested != 1 and not self.scb.ccr("NONBASETHRDENA"):
                return "return to Thread mode with other exceptions still active"
            return None
        return "illegal EXC_RETURN value"

    def _illegal_return(self, exc_return: int, returning: int, problem: str) -> None:
        """ExceptionReturn() integrity failure (B1.5.8): DeActivate(ReturningExceptionNumber),
        UFSR.INVPC=1, LR = EXC_RETURN, ExceptionTaken(UsageFault).  No frame is pushed or
        popped: the handler runs on the frame the return was to unstack (tail-chain style)."""
        uc = self.uc
        if returning:
            self.ctl.deactivate(returning)
            if returning != NMI:
                uc.reg_write(A.UC_ARM_REG_FAULTMASK, 0)
        self.scb.record_cfsr("INVPC")
        target, escalated = USAGEFAULT, False
        exec_prio = self.execution_priority()
        if not self.ctl.enabled[USAGEFAULT] or \
                self.ctl.group_priority(self.ctl.raw_priority(USAGEFAULT)) >= exec_prio:
            target, escalated = HARDFAULT, True
            if exec_prio <= -1:
                self._record(HARDFAULT, "INVPC", exc_return & ~1, None, True)
                raise Lockup(f"INVPC fault ({problem}) while at priority {exec_prio}", exc_return & ~1)
            self.scb.record_hfsr("FORCED")
        self._record(target, "INVPC", exc_return & ~1, None, escalated)
        self._vector(target, exc_return, exc_return & ~1)

    def exception_return(self, exc_return: int, ipsr: int | None = None) -> None:
        """``ipsr``: IPSR as just read by the caller (nothing has written it since), or None."""
        uc = self.uc
        returning = self.ipsr() if ipsr is None else ipsr & 0x1FF
        problem = self._return_check(exc_return, returning)
        if problem is not None:
            self._illegal_return(exc_return, returning, problem)
            return
        self.ctl.deactivate(returning)
        clear_faultmask = returning != NMI  # DeActivate() clears FAULTMASK (B1.5.8)
        to_psp = exc_return == EXC_RETURN_THREAD_PSP
        psp, msp, control = self._read_return()
        sp = psp if to_psp else msp
        if not self._writable(sp, 32):
            if clear_faultmask:
                uc.reg_write(A.UC_ARM_REG_FAULTMASK, 0)
            self.ctl.active[returning] = True
            self.fault("UNSTKERR", 0xFFFFFFFF & exc_return)
            return
        r0, r1, r2, r3, r12, lr, pc, xpsr = struct.unpack("<8I", self.uc.mem_read(sp, 32))
        # PopStack: SP = (SP + framesize) OR ((xPSR<9> AND CCR.STKALIGN) << 2)  (B1.5.8).
        new_sp = (sp + 32) | (4 if xpsr & (1 << 9) and self.scb.ccr("STKALIGN") else 0)
        ipsr = 0 if exc_return != EXC_RETURN_HANDLER_MSP else (xpsr & 0x1FF)
        # In one write, in this order: FAULTMASK cleared, the frame's registers, xPSR as
        # _set_xpsr writes it (leaving handler mode first: SP is then MSP), the stack pointer,
        # the thread stack selected (SPSEL is written once out of handler mode), the PC.
        # CONTROL is as read above: nothing in between writes it.
        new_xpsr = (xpsr & ~0x1FF & ~(1 << 9)) | ipsr
        values = [0] if clear_faultmask else []
        values += (r0, r1, r2, r3, r12, lr, new_xpsr, new_xpsr & 0x1FF, new_xpsr & 0xF0000000, new_sp)
        if to_psp:
            values.append(control | 2)
        elif exc_return == EXC_RETURN_THREAD_MSP:
            values.append(control & ~2)
        values.append(pc | 1)
        self._return_writer(clear_faultmask, exc_return)(values)
        if not xpsr >> 24 & 1:
            # The restored EPSR.T is 0: the first instruction at the return address takes
            # an INVSTATE UsageFault (B1.5.8 PopStack restores EPSR from the frame).
            self.fault("INVSTATE", pc & ~1)
            return
        # Tail-chaining (B1.5.12): a pending exception that can preempt the context we
        # return to is taken straight away; the stacked frame is the same one.  Nothing
        # pending (bools: any() at C speed) is nothing to decide.
        if any(self.ctl.pending):
            nxt = self.deliverable()
            if nxt is not None:
                self.take(nxt, pc)

    def reset_state(self) -> None:
        self.ctl.reset()

"""The emulated STM32F103: Unicorn core, memory map, peripherals, time.

The machine owns Unicorn, the bus, emulated time and the exception engine.
Peripheral models only see their port.  The CPU runs in *slices* up to the
next timed event, counted block by block (:mod:`emulator.core.engine`): a slice
ends at the first translated-block boundary at or after the event, and a model
that needs the CPU to react sooner (an interrupt became pending, a reset was
requested, the clock changed) makes the slice end at the next block boundary.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unicorn import (
    UC_ARCH_ARM,
    UC_ERR_FETCH_PROT,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_INSN_INVALID,
    UC_ERR_READ_PROT,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_PROT,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_CODE,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_THUMB,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    Uc,
    UcError,
)
from unicorn import arm_const as A
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TB_REMOVE_CACHE
from unicorn.unicorn_py3.unicorn import uclib

from emulator.core import insn_traps
from emulator.core import memory as mm
from emulator.core.board import BOARD
from emulator.core.bus import Bus
from emulator.core.chips import (
    BOOT_ALIAS_BASE,
    FLASH_SIZE_REG,
    OPTION_BYTES_BASE,
    SYSTEM_MEMORY_BASE,
    SYSTEM_MEMORY_SIZE,
    UNIQUE_ID_BASE,
    Chip,
)
from emulator.core.engine import Engine, FastRegisters, hook_intr, make_engine, mmio_map
from emulator.core.exceptions import EXIT_TRAP_REGS, ExceptionEngine, FaultRecord, Lockup
from emulator.core.loops import MAX_TRAIL, VERIFYING, LoopDetector
from emulator.core.port import Event, SimPort, StrictModeError
from emulator.core.symbols import SymbolTable
from emulator.core.time import Scheduler
from firmware_models.bkp import BKP
from firmware_models.flash import TYPICAL_TIMINGS, FlashInterface, FlashTimings
from firmware_models.nvic import ExceptionController, exception_name
from firmware_models.pwr import PWR
from firmware_models.rcc import PERIPHERAL_CLOCKS, RCC
from firmware_models.regs import Access, BusError, Peripheral
from firmware_models.scb import SCB
from firmware_models.systick import SysTick
from firmware_models.usb import UsbDevice

log = logging.getLogger("emulator.core.machine")

MAX_SLICE = 1 << 16  # instructions; bounds how long a polling loop runs before it is looked at
THUMB_B_SELF = 0xE7FE  # "b ." : the idle loop of countless main()s
THUMB_WFI = 0xBF30
THUMB_WFE = 0xBF20
SYSTEM_MEMORY_END = SYSTEM_MEMORY_BASE + SYSTEM_MEMORY_SIZE
EXC_RETURNS = (0xFFFFFFF1, 0xFFFFFFF9, 0xFFFFFFFD)
# QEMU exception numbers Unicorn passes to UC_HOOK_INTR (target/arm/cpu.h EXCP_*).
_EXCP_PREFETCH_ABORT, _EXCP_DATA_ABORT, _EXCP_EXCEPTION_EXIT, _EXCP_NOCP = 3, 4, 8, 17
CALL_RETURN = 0xF000_0000  # unmapped: a fetch here means a function called by call_function returned
_CTL_REMOVE_CACHE = UC_CTL_IO_WRITE << 30 | 2 << 26 | UC_CTL_TB_REMOVE_CACHE  # uc_ctl's encoding, 2 args
_CONTEXT_REGS = tuple(getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)) + (
    A.UC_ARM_REG_MSP, A.UC_ARM_REG_PSP, A.UC_ARM_REG_LR, A.UC_ARM_REG_PC, A.UC_ARM_REG_XPSR,
    A.UC_ARM_REG_PRIMASK, A.UC_ARM_REG_BASEPRI, A.UC_ARM_REG_FAULTMASK)
# Errors that stop a block at the instruction that caused them (data aborts, undefined instructions).
_MID_BLOCK_ERRORS = (UC_ERR_READ_UNMAPPED, UC_ERR_READ_PROT, UC_ERR_WRITE_UNMAPPED, UC_ERR_WRITE_PROT,
                     UC_ERR_INSN_INVALID)
_PC = A.UC_ARM_REG_PC
_SIZE_MASK = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF, 0, 0, 0, 0xFFFFFFFFFFFFFFFF)
SENTINEL_SRAM = 0xA5  # power-on SRAM fill, so reads of uninitialised memory stand out


class EmulatorError(Exception):
    """A problem with the emulated run or its inputs; the message is one line for the user."""


@dataclass
class StopReason:
    kind: str  # time-budget | instruction-budget | idle | hang | lockup | fault-hang | breakpoint |
    #            system-memory | condition | strict | error
    detail: str = ""
    pc: int = 0

    @property
    def clean(self) -> bool:
        return self.kind in ("time-budget", "instruction-budget", "idle", "condition")


@dataclass
class _UnalignedAccess:
    """An access CCR.UNALIGN_TRP forbids, seen by the memory hook; the instruction is
    undone (registers, and the memory it wrote) and faults at the end of the slice."""

    pc: int
    address: int
    registers: list[int]
    overwritten: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class CpuState:
    sleeping: bool = False
    locked_up: bool = False


@dataclass
class Machine:
    """One board.  Build it, ``load`` flash, ``power_on``, then ``run``."""

    chip: Chip
    strict: bool = False
    boot0: bool = False
    flash_timings: FlashTimings = TYPICAL_TIMINGS
    uart_sinks: dict[int, Callable[[bytes], None]] = field(default_factory=dict)
    symbols: SymbolTable | None = None

    def __post_init__(self) -> None:
        self.scheduler = Scheduler()
        self.port = _MachinePort(self)
        self.events: list[Event] = self.port.events
        self.instructions = 0
        self.cpu = CpuState()
        self.resets = 0
        self.uart_output: dict[int, bytearray] = {}  # every byte each USART sent, by number
        self.path: list[tuple[int, str]] = []  # (time_ns, function) in order of first visit
        self._path_seen: set[str] = set()
        self._path_table: Any = None  # the symbol table _path_pcs was looked up in
        self._path_pcs: set[int] = set()  # addresses _note_path has looked up
        self._in_slice = False
        self._synced = 0
        self._slice_end_ns = 0
        self._hclk = 8_000_000  # HCLK the instructions not yet turned into time ran at
        self._reset_request: str | None = None
        self._stop: StopReason | None = None
        self._pending_fault: tuple[str, int, int | None] | None = None  # cause, pc, address
        self._unmapped: tuple[int, int] | None = None  # (access, address) of the last unmapped access
        self._internal_error: BaseException | None = None
        self._external_stop = False
        self._until_steady = True  # run()'s until cannot change without a model's callback
        self._until_external = False  # run()'s until is run_ns's: stop_soon() ends the run
        self.last_stop: StopReason | None = None
        self._trapped: set[tuple[int, str]] = set()  # (address, kind) of each code hook on a flash scan match
        self._unaligned_hook: int | None = None  # memory hook installed while CCR.UNALIGN_TRP=1
        self._unaligned: _UnalignedAccess | None = None
        self._stopped_in_store: int | None = None  # block of the store the run was stopped in
        self._store_address = 0  # address of the last CPU store to the System Control Space
        self._nvic_dirty = False  # an exception became pending in this slice (_scs_written)
        self._intr_hook_ran = False  # the interrupt hook ran (and may have written the PC) in this run
        self.time_queries = 0  # times a model asked for the time (loops.py: a pass that reads time differs)
        self.activity = 0  # exceptions taken, unmodelled accesses, guest errors, reset requests, UART output
        self.flash_writes = 0  # flash array changes
        self._mmio_reads: dict[int, Callable[[], int]] = {}  # address << 3 | size -> reader
        self._mmio_writes: dict[int, Callable[[int], None]] = {}
        self._c_callbacks: list[Any] = []  # ctypes callbacks kept alive
        # A debugger (emulator/gdb) called at the top of every pass of run()'s loop, between two
        # instructions: it may halt there (the clock stands still) and serve the debugger.
        # None when no debugger is attached: then it costs one attribute test per slice.
        self.supervisor: Callable[[], None] | None = None
        self._build_core()
        self._build_models()
        self._map_memory()

    # -- construction ---------------------------------------------------------------------
    def _build_core(self) -> None:
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB, A.UC_CPU_ARM_CORTEX_M3)
        self.regs = FastRegisters(self.uc)
        self.nvic = ExceptionController(self.chip.num_irqs)
        self.nvic.listeners.append(self._nvic_changed)

    def _build_models(self) -> None:
        port = self.port
        # The flash model owns the contents; Unicorn maps this very buffer at 0x0800_0000 and
        # at the boot alias (see _map_memory), so a change needs no copy, only its translated
        # code dropped.
        self.flash_storage = bytearray(b"\xff" * self.chip.flash_size)
        self.flash = FlashInterface(port, flash_base=self.chip.flash_base, flash_size=self.chip.flash_size,
                                    page_size=self.chip.page_size, storage=self.flash_storage,
                                    timings=self.flash_timings, on_change=self._flash_changed)
        self.pwr = PWR(port)
        # RM0008 §6.1: DR1..DR10 on low/medium-density parts, DR1..DR42 on high density.
        self.bkp = BKP(port, write_enabled=lambda: bool(self.pwr.field("CR", "DBP")),
                       data_registers=10 if self.chip.density == "medium" else 42)
        self.rcc = RCC(port, backup_write_enabled=lambda: bool(self.pwr.field("CR", "DBP")))
        self.rcc.on_peripheral_reset = self._peripheral_reset  # type: ignore[method-assign]
        self.rcc.on_backup_domain_reset = self.bkp.backup_domain_reset  # type: ignore[method-assign]
        self.scb = SCB(port, self.nvic, ipsr=lambda: self.regs.reg_read(A.UC_ARM_REG_IPSR) & 0x1FF)
        self.scb.ccr_listeners.append(self._ccr_written)  # UNALIGN_TRP applies from the next instruction
        self.systick = SysTick(port, pend=lambda: self.nvic.set_pending(15))
        self.usb = UsbDevice(port, require_usb_clock=True)  # silent without a 48 MHz USB clock (RM0008 §7.2)
        self.usb_pma = self.usb.pma
        self.bus = Bus(port.unmodelled, port.guest_error)
        self.models: dict[str, Peripheral] = {}
        for slot in BOARD:
            model = slot.factory(self)
            self.models[slot.name] = model
            gate = self._gate(slot.clock) if slot.clock else None
            self.bus.attach(slot.base, model, gate=gate)
        self.gpio = {letter: self.models[f"GPIO{letter}"] for letter in "ABCDE"}
        self.exc = ExceptionEngine(self.regs, self.nvic, self.scb, self._stackable,  # type: ignore[arg-type]
                                   self.scheduler_now, self.port.event)
        self.exc.on_taken.append(self._exception_taken)
        self._read_exit_trap = self.regs.reader(EXIT_TRAP_REGS)

    def _gate(self, name: str) -> Callable[[], str | None]:
        gate = PERIPHERAL_CLOCKS.get(name)
        if gate is None:
            return lambda: None
        reg, bit, rcc = gate.enable_register, gate.bit, self.rcc

        def check() -> str | None:
            if rcc.values[reg] >> bit & 1:
                return None
            return f"RCC_{reg} bit {bit} is 0"
        check.clock_bit = (rcc, reg, bit)  # type: ignore[attr-defined] # for the compiled MMIO writers
        return check

    def _map_memory(self) -> None:
        uc, chip = self.uc, self.chip
        self.engine: Engine = make_engine(uc, self.flash_storage, chip.flash_base,
                                          0 if self.boot0 else chip.flash_size)
        self._st = self.engine.state
        self.loops = LoopDetector(self)
        rx = UC_PROT_READ | UC_PROT_EXEC
        # Both views share the model's buffer (held exported, so it can never be reallocated).
        # mem_map_ptr alone leaves the region writable to the CPU: a store the write-protection
        # hook accepted would land in the buffer (measured, Unicorn 2.1.4); mem_protect makes it
        # read-only like mem_map's, so such a store is dropped and only the model writes flash.
        self._flash_view = (ctypes.c_char * chip.flash_size).from_buffer(self.flash_storage)
        for base in [chip.flash_base] + ([] if self.boot0 else [BOOT_ALIAS_BASE]):
            uc.mem_map_ptr(base, chip.flash_size, rx, ctypes.addressof(self._flash_view))
            uc.mem_protect(base, chip.flash_size, rx)
        self._flash_changed(0, chip.flash_size)
        uc.mem_map(chip.sram_base, chip.sram_size, UC_PROT_ALL)
        uc.mmio_map(SYSTEM_MEMORY_BASE, mm.SYSTEM_BLOCK_SIZE, self._mmio_read(self._system_read),
                    None, self._mmio_write(self._system_write), None)
        self._map_peripherals(mm.PERIPH_BASE, mm.PERIPH_SIZE)
        self._map_peripherals(mm.PPB_BASE, mm.PPB_SIZE)
        sram_alias = (chip.sram_size * 32 + 0xFFF) & ~0xFFF
        uc.mmio_map(mm.SRAM_BITBAND, sram_alias, self._mmio_read(self._sram_bb_read, mm.SRAM_BITBAND),
                    None, self._mmio_write(self._sram_bb_write, mm.SRAM_BITBAND), None)
        uc.mmio_map(mm.PERIPH_BITBAND, mm.PERIPH_SIZE * 32,
                    self._mmio_read(self._periph_bb_read, mm.PERIPH_BITBAND), None,
                    self._mmio_write(self._periph_bb_write, mm.PERIPH_BITBAND), None)
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._flash_store_hook)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._unmapped_hook)
        self._hook_intr_direct()

    # -- public API -------------------------------------------------------------------------
    def uart_sink(self, n: int) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            self.activity += 1
            self.uart_output.setdefault(n, bytearray()).extend(data)
            target = self.uart_sinks.get(n)
            if target is not None:
                target(data)
        return sink

    def load_flash(self, data: bytes, offset: int = 0) -> None:
        """Put bytes into main flash as a programmer would (not through the FPEC)."""
        if offset + len(data) > self.chip.flash_size:
            raise EmulatorError(f"{len(data)} bytes at flash offset 0x{offset:X} exceed the "
                                f"{self.chip.flash_size // 1024} KiB flash of the {self.chip.name}")
        self.flash_storage[offset:offset + len(data)] = data
        self._flash_changed(offset, len(data))

    def read_flash(self, address: int, length: int) -> bytes:
        off = address - self.chip.flash_base
        return bytes(self.flash_storage[off:off + length])

    def drive_pin(self, port_letter: str, pin: int, level: bool | None) -> None:
        self.gpio[port_letter.upper()].drive(pin, level)

    def scheduler_now(self) -> int:
        return self.scheduler.now_ns

    def cycle_count(self) -> int:
        """CPU cycles since power-on, for DWT.CYCCNT (a time query, as far as loops.py is concerned)."""
        self.time_queries += 1
        if self._in_slice:
            self._sync()
        return self.scheduler.cycles

    @property
    def now_ns(self) -> int:
        """Emulated time; inside a slice (a hook), the time at the start of the current block."""
        if self._in_slice:
            self._sync()
        return self.scheduler.now_ns

    @property
    def pc(self) -> int:
        return self.regs.reg_read(A.UC_ARM_REG_PC)

    def access_pc(self) -> int:
        """Where the CPU is, for events: inside a slice (an MMIO or store hook) the start of
        the translated block making the access, since Unicorn updates the PC register only
        at block boundaries; outside a slice the PC."""
        if self._in_slice and self._st.block_size:
            return self._st.block
        return self.pc

    def reg(self, name: str) -> int:
        return self.regs.reg_read(getattr(A, f"UC_ARM_REG_{name.upper()}"))

    def read_word(self, address: int) -> int:
        return struct.unpack("<I", self.uc.mem_read(address, 4))[0]

    def symbol(self, address: int) -> str:
        if self.symbols is None:
            return f"0x{address:08X}"
        return self.symbols.lookup(address)

    # -- reset --------------------------------------------------------------------------------
    def power_on(self) -> None:
        """Power-on reset: every model to its power-on state, SRAM filled with a sentinel."""
        if self.boot0:
            raise EmulatorError("BOOT0=1 selects ST's system-memory bootloader, which is not emulated")
        self.scheduler.clear()
        for model in self._all_models():
            model.power_on_reset()
        self.uc.mem_write(self.chip.sram_base, bytes([SENTINEL_SRAM]) * self.chip.sram_size)
        self.rcc.note_reset("power_on")
        self.port.event("reset", cause="power_on")
        self._scan_traps()
        self._cpu_reset()

    def power_cut(self) -> None:
        """Cut the supply now, between two instructions: a flash operation in flight
        stops where it is (see ``firmware_models.flash``); SRAM and every register are
        lost.  ``power_on()`` afterwards boots from exactly the flash that is left."""
        self.flash.power_cut()
        self.scheduler.power_cut()
        # The cut ended the flash operation in flight, so the stall of instruction fetches it
        # caused (PM0075 §2.3) ends too: the flash is idle at power-on.
        self.port.stalled_until_ns = 0
        self.port.event("power_cut")
        self.cpu = CpuState(locked_up=True)
        self._stop = StopReason("condition", "power cut", self.pc)

    def system_reset(self, cause: str) -> None:
        """System reset (SYSRESETREQ, IWDG...): peripherals reset, flash/backup domain/SRAM kept."""
        self.resets += 1
        self.scheduler.clear()
        for model in self._all_models():
            model.reset()
        self.rcc.note_reset(cause)
        self.port.event("reset", cause=cause)
        self._scan_traps()
        self._cpu_reset()

    def press_reset_button(self, at_ns: int) -> None:
        """Pull NRST low from outside at emulated time ``at_ns`` (a reset button, a debug probe's
        reset line): a system reset whose only flag is PINRSTF (RM0008 §7.1.2, §7.3.10), which
        bootloaders that enter DFU on a "reset pressed" tell apart from a power-on or a software
        reset.  The press is outside the chip, so the chip's own resets before it keep it."""
        def press() -> None:
            self._reset_request = "pin"
            self._request_stop()
        self.scheduler.schedule(max(0, at_ns - self.scheduler.now_ns), press, "NRST", external=True)

    def _all_models(self) -> list[Peripheral]:
        seen: dict[int, Peripheral] = {}
        for model in [*self.models.values(), self.usb, self.usb_pma, self.flash]:
            seen[id(model)] = model
        return list(seen.values())

    def _cpu_reset(self) -> None:
        uc = self.uc
        self.exc.reset_state()
        self.cpu = CpuState()
        for i in range(13):
            uc.reg_write(getattr(A, f"UC_ARM_REG_R{i}"), 0)
        uc.reg_write(A.UC_ARM_REG_CONTROL, 0)
        uc.reg_write(A.UC_ARM_REG_PRIMASK, 0)
        uc.reg_write(A.UC_ARM_REG_FAULTMASK, 0)
        uc.reg_write(A.UC_ARM_REG_BASEPRI, 0)
        uc.reg_write(A.UC_ARM_REG_PSP, 0)
        uc.reg_write(A.UC_ARM_REG_XPSR, 1 << 24)
        uc.reg_write(A.UC_ARM_REG_IPSR, 0)
        uc.reg_write(A.UC_ARM_REG_APSR_NZCV, 0)
        uc.reg_write(A.UC_ARM_REG_LR, 0xFFFFFFFF)
        msp, pc = self.read_word(BOOT_ALIAS_BASE), self.read_word(BOOT_ALIAS_BASE + 4)
        self.start_from_table(msp, pc, source="reset vector at 0x00000000")

    def start_from_table(self, msp: int, pc: int, source: str) -> None:
        """Load MSP and PC as the core does at reset (B1.5.5), from a vector table's words."""
        uc = self.uc
        self._stop = None
        self.cpu = CpuState()
        uc.reg_write(A.UC_ARM_REG_MSP, msp & 0xFFFFFFFC)
        uc.reg_write(A.UC_ARM_REG_PC, pc | 1)
        self.reset_msp, self.reset_pc = msp, pc
        self.port.event("reset_vector", msp=msp, reset_pc=pc, source=source)
        if msp == 0xFFFFFFFF and pc == 0xFFFFFFFF:
            self._stop = StopReason("hang", "flash is erased at the reset vector: nothing to run", pc)
        elif not pc & 1:
            # EPSR.T=0: the first instruction takes an INVSTATE UsageFault, which is
            # disabled at reset and so escalates to HardFault (B1.5.5, B1.5.9).
            try:
                self.exc.fault("INVSTATE", pc & ~1)
            except Lockup as e:
                self._lockup(e)

    # -- running ------------------------------------------------------------------------------
    def run(self, *, max_ns: int | None = None, max_instructions: int | None = None,
            until: Callable[[], bool] | None = None) -> StopReason:
        """Run until a budget is spent, the CPU idles for good, faults for good, or ``until``."""
        deadline = None if max_ns is None else self.scheduler.now_ns + max_ns
        instr_limit = None if max_instructions is None else self.instructions + max_instructions
        self._stop = self._stop if self._stop and not self._stop.clean else None
        # Changes only through a model's callback (which a skipped pass does not run): see _fast_forward.
        self._until_external = external = until is not None and until == self._stopped_externally
        self._until_steady = until is None or external
        # Locals for the loop below: one pass per slice, stall, sleep or event (tens of
        # thousands per second of a flash download).
        scheduler, port, nvic, reg_read = self.scheduler, self.port, self.nvic, self.regs.reg_read
        while True:
            if self.supervisor is not None:
                self.supervisor()
            scheduler.run_due()
            if self._reset_request is not None:
                cause, self._reset_request = self._reset_request, None
                self.system_reset(cause)
            if self._stop is not None:
                return self._stop
            if until is not None and (self._external_stop if external else until()):
                return StopReason("condition", pc=reg_read(_PC))
            if self.cpu.locked_up:
                if not self._wait_for_event(deadline):
                    return self._stop or StopReason("lockup", "core is locked up", self.pc)
                continue
            pc = reg_read(_PC)
            if port.stalled_until_ns > scheduler.now_ns and self._fetching_from_flash(pc):
                # The flash is busy programming or erasing: instruction fetches (and the
                # vector fetch of any interrupt) wait, timers keep running (PM0075 §2.3).
                nxt = scheduler.next_due()
                stall = port.stalled_until_ns
                if not self._skip_to(stall if nxt is None else min(stall, nxt), deadline):
                    return self._stop  # type: ignore[return-value]
                continue
            if any(nvic.pending) and self._take_pending_exception(pc):  # bools: any() runs at C speed
                continue
            if self.cpu.sleeping:
                if not self._sleep(deadline):
                    return self._stop  # type: ignore[return-value]
                continue
            if self._code_halfword(pc & ~1) == THUMB_B_SELF:  # _idle_loop
                if not self._sleep(deadline, spinning=True):
                    return self._stop  # type: ignore[return-value]
                continue
            if deadline is not None and scheduler.now_ns >= deadline:
                return StopReason("time-budget", f"{max_ns} ns of emulated time", pc)
            if instr_limit is not None and self.instructions >= instr_limit:
                return StopReason("instruction-budget", f"{max_instructions} instructions", pc)
            self._run_slice(pc, deadline, instr_limit)

    # -- driving the machine from a host (USB) ------------------------------------------------
    def run_ns(self, ns: int) -> StopReason | None:
        """Let ``ns`` of emulated time pass, the firmware running where it can.

        Returns early when :meth:`stop_soon` is called (e.g. the USB model saw an
        endpoint become ready).  A CPU that cannot run (locked up, hung, idle)
        does not stop time: timers keep firing, and a reset they cause revives it.
        Returns the last non-budget stop of the CPU, if any.
        """
        target = self.scheduler.now_ns + max(0, ns)
        self._external_stop = False
        last: StopReason | None = None
        while self.scheduler.now_ns < target and not self._external_stop:
            stop = self.run(max_ns=target - self.scheduler.now_ns, until=self._stopped_externally)
            if stop.kind in ("time-budget", "condition"):
                break
            last = self.last_stop = stop
            nxt = self.scheduler.next_due()
            hz = self.port.clocks.hclk
            if nxt is None or nxt > target:
                self.scheduler.advance_to(target, hz)
                break
            self.scheduler.advance_to(nxt, hz)
        return last

    def call_function(self, address: int, args: tuple[int, ...] = (), *, max_ns: int = 10_000_000_000) -> int:
        """Call a firmware function (AAPCS: up to four word arguments, result in r0) from
        where the CPU is now, run until it returns, and put the CPU back as it was.

        Interrupts keep being taken during the call, as they would if the firmware made
        it.  Used to drive a bootloader's own media interface with its USB stack bypassed.
        """
        if len(args) > 4:
            raise ValueError("call_function passes at most four arguments in registers")
        uc = self.uc
        saved = [uc.reg_read(r) for r in _CONTEXT_REGS]
        was_sleeping, self.cpu.sleeping = self.cpu.sleeping, False
        for i, value in enumerate(args):
            uc.reg_write(getattr(A, f"UC_ARM_REG_R{i}"), value & 0xFFFFFFFF)
        uc.reg_write(A.UC_ARM_REG_LR, CALL_RETURN | 1)
        uc.reg_write(A.UC_ARM_REG_PC, address | 1)
        stop = self.run(max_ns=max_ns)
        if stop.kind != "condition" or stop.detail != "function returned":
            raise EmulatorError(f"{self.symbol(address)} did not return: {stop.kind}: {stop.detail}")
        result = uc.reg_read(A.UC_ARM_REG_R0)
        for reg, value in zip(_CONTEXT_REGS, saved, strict=True):
            uc.reg_write(reg, value | 1 if reg == A.UC_ARM_REG_PC else value)
        self.cpu.sleeping = was_sleeping
        self._stop = None
        return result

    def _stopped_externally(self) -> bool:
        return self._external_stop

    def stop_soon(self) -> None:
        """Make :meth:`run_ns` return at the next translated-block boundary."""
        self._external_stop = True
        self._request_stop()

    def _take_pending_exception(self, pc: int) -> bool:
        if not any(self.nvic.pending):  # bools: any() is the cheapest look at C speed
            return False
        exc = self.exc.deliverable()
        if exc is None:
            return False
        self.cpu.sleeping = False
        try:
            self.exc.take(exc, pc)  # the PC the run loop just read
        except Lockup as e:
            self._lockup(e)
        return True

    def _wakeup_pending(self) -> bool:
        """WFI wakes for a pending exception that would preempt, PRIMASK ignored (B1.5.19)."""
        exc = self.nvic.highest_pending()
        if exc is None:
            return False
        _, faultmask, basepri = self.exc.masks()
        return self.nvic.can_preempt(exc, False, faultmask, basepri)

    def _fetching_from_flash(self, pc: int) -> bool:
        return self.chip.in_flash(pc) or (not self.boot0 and pc < self.chip.flash_size)

    def _skip_to(self, target: int, deadline: int | None) -> bool:
        if deadline is not None and target > deadline:
            self.scheduler.advance_to(deadline, self.port.clocks.hclk)
            self._stop = StopReason("time-budget", "emulated time budget spent", self.pc)
            return False
        self.scheduler.advance_to(target, self.port.clocks.hclk)
        return True

    def _sleep(self, deadline: int | None, spinning: bool = False) -> bool:
        """Skip time to the next event while the CPU sleeps or spins; False = stop."""
        if self.cpu.sleeping and self._wakeup_pending():
            self.cpu.sleeping = False
            return True
        # A spin with PRIMASK set (or in HardFault) can only be left through NMI, and this
        # board has no NMI source: it is stuck for good.
        if spinning and self.exc.execution_priority() <= 0:
            self._stop = self._hang_reason(self.symbol(self.pc))
            return False
        target = self.scheduler.next_due()
        if target is None:
            what = "spinning in an empty loop" if spinning else "sleeping in WFI"
            self._stop = StopReason("idle", f"{what} at {self.symbol(self.pc)} with nothing left to happen",
                                    self.pc)
            return False
        return self._skip_to(target, deadline)

    def _hang_reason(self, where: str) -> StopReason:
        active = [exception_name(e) for e in self.nvic.active_exceptions()]
        if any(e in ("HardFault", "MemManage", "BusFault", "UsageFault") for e in active):
            return StopReason("fault-hang", f"stuck in {where} handling {', '.join(active)}", self.pc)
        return StopReason("hang", f"spinning forever at {where} with interrupts masked "
                                  f"(execution priority {self.exc.execution_priority()})", self.pc)

    def _wait_for_event(self, deadline: int | None) -> bool:
        target = self.scheduler.next_due()
        if target is None or (deadline is not None and target > deadline):
            return False
        self.scheduler.advance_to(target, self.port.clocks.hclk)
        return True

    def _code_halfword(self, address: int) -> int | None:
        """The half-word at ``address``: straight from the flash array when it is flash."""
        chip = self.chip
        if chip.flash_base <= address < chip.flash_base + chip.flash_size - 1:
            off = address - chip.flash_base
        elif not self.boot0 and 0 <= address < chip.flash_size - 1:
            off = address  # the boot alias
        else:
            return self._halfword(address)
        storage = self.flash_storage
        return storage[off] | storage[off + 1] << 8

    def _run_slice(self, pc: int, deadline: int | None, instr_limit: int | None) -> None:
        hz = self._hclk = self.port.clocks.hclk  # what the slice's cycles run at, until the clock changes
        due = self.scheduler.next_due()
        if deadline is not None:
            due = deadline if due is None else min(due, deadline)
        budget = MAX_SLICE if due is None else min(MAX_SLICE, self.scheduler.cycles_until(due, hz))
        if instr_limit is not None:
            budget = max(1, min(budget, instr_limit - self.instructions))
        # End the slice when PRIMASK/FAULTMASK/BASEPRI change while they hold off a pending
        # exception: CPS and MSR end a translated block, so the interrupt is taken right after
        # the instruction that unmasks it.
        masks = self.exc.masks_holding_off() if any(self.nvic.pending) else None
        self._slice_end_ns = due if due is not None else 1 << 62
        if bool(self.scb.values["CCR"] & _CCR_UNALIGN_TRP) != (self._unaligned_hook is not None):
            self._update_unaligned_trap()
        self._synced = 0
        self._nvic_dirty = False
        self._intr_hook_ran = False
        loops = self.loops
        verify = loops.begin_verify(budget) if loops.armed else None
        if verify is not None:
            budget = verify[0]  # exactly one period of the loop the interrupt returned into
        self.engine.begin(budget, masks)
        self._in_slice = True
        error: UcError | None = None
        uc = self.uc
        uc._hook_exception = None  # what the binding's emu_start does, without its layers
        status = uclib.uc_emu_start(uc._uch, pc | 1, 0, 0, 0)
        self._in_slice = False
        if status:
            error = UcError(status)
        elif uc._hook_exception is not None:
            self._internal_error = uc._hook_exception
        st = self._st
        if st.stopped == 3:
            self.engine.rewind_to(st.barrier)  # in front of the barrier that waits for a bus fault
        if st.stopped == 4 or st.unaligned or self._unaligned is not None or self._stopped_in_store is not None:
            self._after_run_traps(st)
        if error is not None and error.errno in _MID_BLOCK_ERRORS:
            # The block stopped at the faulting instruction: only those before it ran.  A store
            # to nowhere counts as done (its bus fault is imprecise: the handler returns past
            # it), and so does an unsupported WFE (carried out as a hint by _cpu_error).
            fault_pc = self.pc
            done = error.errno in (UC_ERR_WRITE_UNMAPPED, UC_ERR_WRITE_PROT) or \
                self._halfword(fault_pc) == THUMB_WFE
            self.engine.rewind_to(fault_pc, 1 if done else 0)
        executed = st.count
        self._advance(executed - self._synced)
        self.instructions += executed
        if self._intr_hook_ran and loops._candidate is not None:
            loops.armed = True  # an interrupt returned (or was taken): verify the loop next slice
        proven = 0
        if verify is not None:
            proven = loops.end_verify(verify, st.stopped == 1 and error is None and not st.unaligned
                                      and self._unaligned is None and self._pending_fault is None
                                      and self._internal_error is None and self._stop is None
                                      and self._reset_request is None)
        if self.symbols is not None:
            self._note_path(self.pc)
        if self._internal_error is not None:
            err, self._internal_error = self._internal_error, None
            if isinstance(err, StrictModeError):
                self._stop = StopReason("strict", str(err), self.pc)
                return
            raise err
        if self._unaligned is not None:
            self._unaligned_fault()
        elif st.unaligned:
            self._multiword_fault(st)
        elif error is not None:
            self._cpu_error(error)
        elif self._pending_fault is not None:
            # Imprecise: taken at the block boundary after the access, or in front of a DSB/DMB;
            # the stacked PC is where execution got to (B3.2.15 IMPRECISERR).
            cause, fpc, addr = self._pending_fault
            self._pending_fault = None
            st.fault_pending = 0
            self._fault(cause, fpc, addr, self.pc)
        elif not st.stopped and self._stop is None and self._just_executed_wfi():
            self.cpu.sleeping = True
        elif proven:
            self._fast_forward(proven, deadline, instr_limit, self._one_block_loop(proven))
        elif self.loops.want_check and self._stop is None and self._reset_request is None:
            period = self.loops.check()
            if period:
                self._fast_forward(period, deadline, instr_limit, self._one_block_loop(period))

    def _one_block_loop(self, period: int) -> bool:
        """Right after a slice that proved ``period``: is the loop one translated block?

        The slice ended at the end of a block of ``period`` instructions, so that block began
        at the earlier of the two equal states: from this state the CPU runs that same block
        again and again, and every block boundary of the loop is a pass boundary."""
        st = self._st
        return st.block_n == period and st.count == st.base + st.block_n

    def _fast_forward(self, period: int, deadline: int | None, instr_limit: int | None,
                      one_block: bool = False) -> None:
        """Skip whole passes of a loop proven periodic (emulator/core/loops.py) up to the next event.

        Every skipped pass would have done exactly what the last one did; time and the
        instruction count advance as if they had run.  The next event is taken at the first
        block boundary at or after it falls due: inside the last pass unless the loop is
        ``one_block``, where that boundary is the end of the pass (and the state the same as
        now), so that pass is skipped too instead of run as a slice of its own.
        """
        if self._until_external and self._external_stop:
            # stop_soon() was called in the last pass: run_ns returns at this block boundary,
            # as it would without skipping.
            self.loops.forget_passes()
            return
        due = self.scheduler.next_due()
        if deadline is not None:
            due = deadline if due is None else min(due, deadline)
        if due is None:
            # Nothing will ever happen: the loop spins for good, like "b ." (see _sleep).
            self.loops.forget_passes()
            where = self.symbol(self.pc)
            if self.exc.execution_priority() <= 0:
                self._stop = self._hang_reason(where)
            else:
                self._stop = StopReason("idle", f"polling in a loop at {where} with nothing left to happen",
                                        self.pc)
            return
        hz = self.port.clocks.hclk
        iterations = (self.scheduler.cycles_until(due, hz) - 1) // period
        if instr_limit is not None and (instr_limit - self.instructions) // period <= iterations:
            iterations = (instr_limit - self.instructions) // period
        elif one_block and self._until_steady and hz == self._hclk:
            # The run loop would now run one slice: that block once (1 to `period` cycles are
            # left to `due`), ending where it starts.
            iterations += 1
        if iterations > 0:
            self._advance(iterations * period)
            self.instructions += iterations * period
            self.loops.skipped_passes += iterations
        self.loops.forget_passes()

    def _just_executed_wfi(self) -> bool:
        return self._code_halfword(self.pc - 2) == THUMB_WFI

    def _advance(self, cycles: int) -> None:
        if cycles > 0:
            self.scheduler.advance_cycles(cycles, self._hclk)

    def _sync(self) -> None:
        """Bring emulated time up to the start of the block now executing (MMIO and store hooks)."""
        if self._in_slice:
            counted = self._st.base
            if counted != self._synced:
                self._advance(counted - self._synced)
                self._synced = counted

    def _sync_block_end(self) -> None:
        """Bring emulated time up to the end of the block just executed (interrupt hook: SVC,
        exception return and fetch faults all come at the end of a block)."""
        if self._in_slice:
            counted = self._st.count
            if counted != self._synced:
                self._advance(counted - self._synced)
                self._synced = counted

    def _exception_taken(self, exc: int, handler: int) -> None:
        self.activity += 1

    def _nvic_changed(self) -> None:
        # An enable, priority or pending change can only make an exception deliverable when one
        # is pending (a set_pending comes here too): otherwise the CPU runs on.
        if self._in_slice and any(self.nvic.pending):
            self._st.deadline = 0
            self._nvic_dirty = True

    # -- a store the run ends right after ----------------------------------------------------
    # Stores to the System Control Space act on the core itself: one that makes an exception
    # deliverable (ICSR.PENDSVSET, NVIC_ISPR, STIR, an ISER enabling a pending IRQ, a priority
    # change) has it taken right after the store, and a CCR write applies from the next
    # instruction.  emu_stop() from inside the access ends the run right after the memory
    # operation with the PC restored to the store (Unicorn would carry the store out again on
    # resume): the machine completes the instruction itself, its base writeback included.
    # That is exact only for a single-register store outside an IT block (Unicorn cannot stop
    # inside one), so a block holding an IT, STM/PUSH, STRD or STREX ends at its end instead.
    def _scs_written(self) -> None:
        self._nvic_dirty = False
        if self._stopped_in_store is None and self.exc.deliverable() is not None:
            self._stop_after_store()

    def _stop_after_store(self) -> None:
        st = self._st
        st.deadline = 0  # at the block's end at the latest
        if self._stopped_in_store is None and not self._intr_hook_ran and insn_traps.stores_end_precisely(
                self.engine.code_bytes(st.block, st.block_size)):
            self._stopped_in_store = st.block
            uclib.uc_emu_stop(self.uc._uch)

    def _finish_store(self) -> None:
        """After a run stopped inside a store: carry out the rest of the instruction.

        The PC is on the store; checked against the address it wrote (with the registers as
        they are: the store's own writeback has not happened), so that a PC Unicorn did not
        restore can never make the machine run a part of the block a second time.
        """
        block, self._stopped_in_store = self._stopped_in_store, None
        assert block is not None
        st = self._st
        pc = self.pc
        reg = self._gpr
        store = insn_traps.single_store(*self._words(pc)) if block <= pc < block + st.block_size else None
        if store is None or store.address(reg) != self._store_address:
            raise RuntimeError(f"a run stopped inside a store at 0x{self._store_address:08X} ended at "
                               f"{self.symbol(pc)}, not on that store (block at 0x{block:08X})")
        if store.writeback:
            self.regs.reg_write(_GPR[store.rn], (reg(store.rn) + store.offset) & 0xFFFFFFFF)
        self.regs.reg_write(A.UC_ARM_REG_PC, (pc + store.size) | 1)
        self.engine.rewind_to(pc, then_executed=1)

    def _gpr(self, n: int) -> int:
        return self.regs.reg_read(_GPR[n])

    def _request_stop(self) -> None:
        if self._in_slice:
            self._st.deadline = 0

    def _note_path(self, pc: int) -> None:
        symbols = self.symbols
        if symbols is None:
            return
        # A slice ends at a few addresses over and over (a polling loop, a handler's return):
        # once looked up, an address cannot add to the path again while the table is the same
        # (a SymbolTable never changes; a new one is a new object).
        if symbols is not self._path_table:
            self._path_table, self._path_pcs = symbols, set()
        elif pc in self._path_pcs:
            return
        self._path_pcs.add(pc)
        fn = symbols.function_at(pc)
        name = fn.qualified_name if fn is not None else None
        if name and name not in self._path_seen:
            self._path_seen.add(name)
            self.path.append((self.scheduler.now_ns, name))

    # -- faults --------------------------------------------------------------------------------
    def _cpu_error(self, error: UcError) -> None:
        pc = self.pc
        errno = error.errno
        if errno in (UC_ERR_READ_UNMAPPED, UC_ERR_READ_PROT):
            addr = self._unmapped[1] if self._unmapped else None
            self._fault("PRECISERR", pc, addr, pc)
        elif errno in (UC_ERR_WRITE_UNMAPPED, UC_ERR_WRITE_PROT):
            addr = self._unmapped[1] if self._unmapped else None
            # Stores are buffered on the Cortex-M3: the fault is imprecise, the stacked
            # PC is past the store (B3.2.15 IMPRECISERR).
            self._fault("IMPRECISERR", pc, addr, pc + self._insn_size(pc))
        elif errno in (UC_ERR_FETCH_UNMAPPED, UC_ERR_FETCH_PROT) and pc == CALL_RETURN:
            self._stop = StopReason("condition", "function returned", pc)
        elif errno in (UC_ERR_FETCH_UNMAPPED, UC_ERR_FETCH_PROT):
            if SYSTEM_MEMORY_BASE <= pc < SYSTEM_MEMORY_END:
                self._stop = StopReason("system-memory", f"jumped to 0x{pc:08X} in ST's system-memory "
                                        "bootloader, which is not emulated", pc)
                return
            # Execute-never regions of the default memory map give MemManage (B3.5.1).
            xn = 0x4000_0000 <= pc < 0x6000_0000 or pc >= 0xA000_0000
            self._fault("IACCVIOL" if xn else "IBUSERR", pc, None, pc)
        elif errno == UC_ERR_INSN_INVALID and not self.regs.reg_read(A.UC_ARM_REG_XPSR) >> 24 & 1:
            # Executing with EPSR.T=0 (BX/BLX/POP/LDR pc to an even address): QEMU reports
            # it as an invalid instruction at the target.  INVSTATE UsageFault there (A2.3.1).
            self._fault("INVSTATE", pc, None, pc)
        elif errno == UC_ERR_INSN_INVALID:
            half = self._halfword(pc)
            if half == THUMB_WFE:
                # WFE: no event register is modelled; treat it as a hint that sleeps like WFI.
                self.uc.reg_write(A.UC_ARM_REG_PC, (pc + 2) | 1)
                self.cpu.sleeping = True
                return
            self._fault("UNDEFINSTR", pc, None, pc)
        else:
            self._stop = StopReason("error", f"CPU error at {self.symbol(pc)}: {error}", pc)

    def _fault(self, cause: str, pc: int, address: int | None, return_address: int) -> None:
        try:
            self.exc.fault(cause, pc, address, imprecise_return=return_address)
        except Lockup as e:
            self._lockup(e)

    def _lockup(self, e: Lockup) -> None:
        self.cpu.locked_up = True
        for exc, address in self.exc.erased_vectors:
            e.reason += f"; the vector for {exception_name(exc)} at 0x{address:08X} is erased (0xFFFFFFFF)"
        self.uc.reg_write(A.UC_ARM_REG_PC, 0xFFFFFFFF)
        self.port.event("lockup", reason=e.reason, fault_pc=e.pc)
        self._stop = StopReason("lockup", f"{e.reason}; faulting code at {self.symbol(e.pc)}", e.pc)

    def _halfword(self, address: int) -> int | None:
        try:
            return struct.unpack("<H", self.uc.mem_read(address, 2))[0]
        except UcError:
            return None

    def _insn_size(self, pc: int) -> int:
        half = self._halfword(pc) or 0
        return 4 if (half >> 11) in (0x1D, 0x1E, 0x1F) else 2

    @property
    def faults(self) -> list[FaultRecord]:
        return self.exc.faults

    # -- hooks ---------------------------------------------------------------------------------
    def _guard(self, fn: Callable[..., Any], default: Any = None) -> Any:
        try:
            return fn()
        except BusError as e:
            self._bus_error(e)
        except BaseException as e:  # noqa: BLE001 - must not unwind through Unicorn's C frames
            self._internal_error = e
            self._request_stop()
        return default

    def _bus_error(self, e: BusError) -> None:
        if self._pending_fault is None:  # a second error before the first is taken merges with it
            self._pending_fault = ("IMPRECISERR", self.access_pc(), e.address)
            self._st.fault_pending = 1
        self.port.event("bus_error", address=e.address, reason=e.reason)
        self._request_stop()

    def _hook_failed(self, e: BaseException) -> None:
        self._internal_error = e
        self._request_stop()

    def _mmio_read(self, handler: Callable[[int, int], int], base: int = 0) -> Callable[..., int]:
        """A read callback through Unicorn's binding, for the regions accessed seldom."""
        def cb(uc: Uc, offset: int, size: int, _ud: object) -> int:
            if self._unaligned is not None:
                return 0  # the instruction faults UNALIGNED: the access never reaches the bus
            self._sync()
            value = int(self._guard(lambda: handler(base + offset, size), 0) or 0) & _SIZE_MASK[size]
            if self.loops.mute:
                self.loops.mute -= 1
            elif self._in_slice:
                self.loops.access(self._st.block, (base + offset) << 1, value)
            return value
        return cb

    def _mmio_write(self, handler: Callable[[int, int, int], None], base: int = 0) -> Callable[..., None]:
        def cb(uc: Uc, offset: int, size: int, value: int, _ud: object) -> None:
            if self._unaligned is not None:
                return
            self._sync()
            self._guard(lambda: handler(base + offset, size, value))
            if self.loops.mute:
                self.loops.mute -= 1
            elif self._in_slice:
                self.loops.access(self._st.block, (base + offset) << 1 | 1, value)
        return cb

    def _map_peripherals(self, base: int, size: int) -> None:
        """The peripheral regions: the hot path of every polling loop.

        The callbacks are registered with Unicorn's C API directly (no binding layers), read no
        CPU register, and dispatch through a flat table of one reader/writer per (address,
        size) built on first use: the model's bound read/write with the offset and size baked
        in, behind the clock gate when the peripheral has one.
        """
        st, loops, bus = self._st, self.loops, self.bus
        reads, writes = self._mmio_reads, self._mmio_writes
        compile_read, compile_write = self._compile_read, self._compile_write
        scs = base == mm.PPB_BASE  # the System Control Space: see _scs_written

        def read_cb(_h: int, offset: int, size: int, _ud: int) -> int:
            # No time sync: a model that looks at the time syncs through its port.
            address = base + offset
            if self._unaligned is not None:
                return 0  # the instruction faults UNALIGNED: the access never reaches the bus
            try:
                fn = reads.get(address << 3 | size)
                if fn is None or bus.tracer is not None:
                    fn = compile_read(address, size)
                value = fn() & _SIZE_MASK[size]
                if loops.mute:
                    loops.mute -= 1
                elif self._in_slice:
                    block, key = st.block, address << 1
                    if loops._anchor_key == VERIFYING:
                        loops._verify_keys.add(key)  # LoopDetector.access while verifying, inlined
                    elif key != loops._anchor_key or block != loops._anchor_block:
                        trail = loops._trail  # LoopDetector.access, its common case inlined
                        trail += (block, key, value)
                        if len(trail) > MAX_TRAIL or loops._anchor_key < 0:
                            loops.access(block, key, value)
                    else:
                        loops.access(block, key, value)
                return value
            except BusError as e:
                self._bus_error(e)
            except BaseException as e:  # noqa: BLE001 - must not unwind through Unicorn's C frames
                self._hook_failed(e)
            return 0

        def write_cb(_h: int, offset: int, size: int, value: int, _ud: int) -> None:
            address = base + offset
            if self._unaligned is not None:
                return
            try:
                fn = writes.get(address << 3 | size)
                if fn is None or bus.tracer is not None:
                    fn = compile_write(address, size)
                if scs:
                    self._store_address = address
                fn(value)
                if scs and self._nvic_dirty and self._in_slice:
                    self._scs_written()
                if loops.mute:
                    loops.mute -= 1
                elif self._in_slice:
                    block, key = st.block, address << 1 | 1
                    if loops._anchor_key == VERIFYING:
                        loops._verify_keys.add(key)  # LoopDetector.access while verifying, inlined
                    elif key != loops._anchor_key or block != loops._anchor_block:
                        trail = loops._trail  # LoopDetector.access, its common case inlined
                        trail += (block, key, value)
                        if len(trail) > MAX_TRAIL or loops._anchor_key < 0:
                            loops.access(block, key, value)
                    else:
                        loops.access(block, key, value)
            except BusError as e:
                self._bus_error(e)
            except BaseException as e:  # noqa: BLE001
                self._hook_failed(e)

        mmio_map(self.uc, base, size, read_cb, write_cb, self._c_callbacks)

    def _compile_read(self, address: int, size: int) -> Callable[[], int]:
        bus = self.bus
        mapping = bus.find(address)
        if bus.tracer is not None or mapping is None:
            return functools.partial(bus.read, address, size)  # traced or unmodelled: the bus's own path
        read = _plain_register_reader(mapping.model, address - mapping.base, size) or functools.partial(
            mapping.model.read, address - mapping.base, size)
        gate = mapping.gate
        if gate is None:
            fn = read
        else:
            def fn() -> int:
                return read() if gate() is None else bus.read(address, size)
        self._mmio_reads[address << 3 | size] = fn
        return fn

    def _compile_write(self, address: int, size: int) -> Callable[[int], None]:
        bus = self.bus
        mapping = bus.find(address)
        if bus.tracer is not None or mapping is None:
            return functools.partial(bus.write, address, size)
        write = _plain_register_writer(mapping.model, address - mapping.base, size) or functools.partial(
            mapping.model.write, address - mapping.base, size)
        gate = mapping.gate
        clock_bit = getattr(gate, "clock_bit", None)
        if gate is None:
            fn = write
        elif clock_bit is not None:
            rcc, reg, bit = clock_bit

            def fn(value: int) -> None:
                if rcc.values[reg] >> bit & 1:  # the gate, inlined
                    write(value)
                else:
                    bus.write(address, size, value)
        else:
            def fn(value: int) -> None:
                if gate() is None:
                    write(value)
                else:
                    bus.write(address, size, value)
        self._mmio_writes[address << 3 | size] = fn
        return fn

    def model_at(self, address: int) -> Any:
        """The model behind an MMIO address (a bit-band alias: its word's model), if any."""
        if mm.PERIPH_BITBAND <= address < mm.PERIPH_BITBAND + mm.PERIPH_SIZE * 32:
            address = self._periph_bb_target(address)[0]
        elif SYSTEM_MEMORY_BASE <= address < SYSTEM_MEMORY_BASE + mm.SYSTEM_BLOCK_SIZE:
            return self.flash
        mapping = self.bus.find(address)
        return None if mapping is None else mapping.model

    def _system_read(self, offset: int, size: int) -> int:
        address = SYSTEM_MEMORY_BASE + offset
        chip = self.chip
        if OPTION_BYTES_BASE <= address < OPTION_BYTES_BASE + 16:
            data = self.flash.read_option_bytes()
        elif address >= UNIQUE_ID_BASE and address + size <= UNIQUE_ID_BASE + 12:
            data = chip.unique_id
            return int.from_bytes(data[address - UNIQUE_ID_BASE: address - UNIQUE_ID_BASE + size], "little")
        elif address >= FLASH_SIZE_REG and address + size <= FLASH_SIZE_REG + 2:
            return chip.flash_size_kib >> (8 * (address - FLASH_SIZE_REG)) & ((1 << (8 * size)) - 1)
        else:
            self.port.unmodelled("SYSMEM", address - SYSTEM_MEMORY_BASE, "read", size, None)
            return 0xFFFFFFFF & ((1 << (8 * size)) - 1)
        off = address - OPTION_BYTES_BASE
        return int.from_bytes(data[off:off + size], "little")

    def _system_write(self, offset: int, size: int, value: int) -> None:
        address = SYSTEM_MEMORY_BASE + offset
        if address >= OPTION_BYTES_BASE:
            self.flash.cpu_store(address, size, value)
        else:
            raise BusError(address, "system memory and the device ID words are read-only")

    def _sram_bb_read(self, address: int, size: int) -> int:
        byte, bit = mm.bitband_target(mm.SRAM_BITBAND, self.chip.sram_base, address)
        return self.uc.mem_read(byte, 1)[0] >> bit & 1

    def _sram_bb_write(self, address: int, size: int, value: int) -> None:
        byte, bit = mm.bitband_target(mm.SRAM_BITBAND, self.chip.sram_base, address)
        old = self.uc.mem_read(byte, 1)[0]
        new = (old | 1 << bit) if value & 1 else (old & ~(1 << bit))
        self.uc.mem_write(byte, bytes([new]))

    def _periph_bb_target(self, address: int) -> tuple[int, int]:
        byte, bit = mm.bitband_target(mm.PERIPH_BITBAND, mm.PERIPH_BASE, address)
        word = byte & ~3
        return word, bit + 8 * (byte - word)

    def _periph_bb_read(self, address: int, size: int) -> int:
        word, bit = self._periph_bb_target(address)
        return self.bus.read(word, 4) >> bit & 1

    def _periph_bb_write(self, address: int, size: int, value: int) -> None:
        # The bus does a read-modify-write of the whole word, as the hardware's bit-band
        # logic does; on registers with write-1-to-clear bits that has the same hazards.
        word, bit = self._periph_bb_target(address)
        old = self.bus.read(word, 4)
        self.bus.write(word, 4, (old | 1 << bit) if value & 1 else (old & ~(1 << bit)))

    def _flash_store_hook(self, uc: Uc, access: int, address: int, size: int, value: int,
                          _ud: object) -> bool:
        if self._unaligned is not None:
            return True  # the store faults UNALIGNED before it reaches the flash interface
        self._sync()
        chip = self.chip
        if address < chip.flash_size:
            address += chip.flash_base  # the boot alias at 0x0 is the same flash (RM0008 §3.4)
        if chip.flash_base <= address < chip.flash_end:
            self._guard(lambda: self.flash.cpu_store(address, size, value & ((1 << (8 * size)) - 1)))
            return True
        return False

    def _unmapped_hook(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        self._unmapped = (access, address)
        if access not in (UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_UNMAPPED):
            self.port.event("unmapped_read", address=address, size=size)
        return False

    def _hook_intr_direct(self) -> None:
        """The interrupt hook (SVC, exception return, fetch faults) through Unicorn's C API
        directly: one exception entry and return per tick of a 1 kHz SysTick."""
        uc = self.uc

        def cb(_handle: int, intno: int, _ud: int) -> None:
            try:
                self._intr_hook(uc, intno, None)
            except BaseException as e:  # noqa: BLE001 - must not unwind through Unicorn's C frames
                self._internal_error = e
                uc.emu_stop()

        hook_intr(uc, cb, self._c_callbacks)  # kept alive with the machine

    def _intr_hook(self, uc: Uc, intno: int, _ud: object) -> None:
        if intno == _EXCP_EXCEPTION_EXIT:
            # Once per interrupt handled (every SysTick tick): the general case below, with its
            # three register reads in one call and no closure.
            pc, xpsr, ipsr = self._read_exit_trap()
            if ipsr & 0x1FF:
                self._sync_block_end()
                try:
                    self.exc.exception_return(pc | (xpsr >> 24 & 1), ipsr)
                except Lockup as e:
                    self._lockup(e)
                    uc.emu_stop()
                except BaseException as e:  # noqa: BLE001 - as _in_hook
                    self._internal_error = e
                    uc.emu_stop()
                self._intr_hook_ran = True
                self._st.deadline = 0
                return
        pc = self.regs.reg_read(A.UC_ARM_REG_PC)
        def body() -> None:
            if intno == 2:  # SVC: PC is already past the instruction
                self._sync_block_end()
                self.exc.svc(pc)
            elif intno == _EXCP_EXCEPTION_EXIT and self.exc.ipsr() != 0:
                # A branch to 0xFFxxxxxx in Handler mode: exception return (B1.5.8).  QEMU
                # keeps bit 0 of the target in the T flag, not in the PC: put it back, so
                # that a value such as 0xFFFFFFF8 is seen as the illegal EXC_RETURN it is.
                self._sync_block_end()
                self.exc.exception_return(pc | (self.regs.reg_read(A.UC_ARM_REG_XPSR) >> 24 & 1))
            elif intno == _EXCP_PREFETCH_ABORT and pc | 1 in EXC_RETURNS and self.exc.ipsr() != 0:
                self._sync_block_end()
                self.exc.exception_return(pc | 1)
            elif intno == 3 and pc == CALL_RETURN:
                self._stop = StopReason("condition", "function returned", pc)
                uc.emu_stop()
            elif intno == 3:
                # Instruction fetch from the execute-never system region, e.g. an erased
                # (0xFFFFFFFF) vector: MemManage IACCVIOL (B3.5.1).
                self._sync_block_end()
                self.exc.fault("IACCVIOL", pc)
            elif intno == _EXCP_NOCP:
                # A coprocessor instruction (MRC/MCR/CDP/LDC/STC, VFP in CP10/11): the
                # Cortex-M3 has no coprocessor, NOCP UsageFault on the instruction (B3.2.15).
                # It ends its block: the instructions before it ran, it did not.
                self.engine.rewind_to(pc)
                self._sync_block_end()
                self.exc.fault("NOCP", pc)
            elif intno == _EXCP_DATA_ABORT and insn_traps.is_exclusive(*self._words(pc)):
                # Unicorn checks alignment only for LDREX/STREX (MO_ALIGN): an unaligned
                # exclusive always faults, UNALIGNED UsageFault (ARMv7-M A3.2.1).  The block
                # is left at the instruction (the PC is restored to it).
                self.engine.rewind_to(pc)
                self._sync_block_end()
                self.exc.fault("UNALIGNED", pc)
            elif intno == 7:  # BKPT: no debugger attached
                self._stop = StopReason("breakpoint", f"BKPT at {self.symbol(pc)}", pc)
                uc.emu_stop()
            else:
                self._stop = StopReason("error", f"unexpected CPU exception {intno} at {self.symbol(pc)}", pc)
                uc.emu_stop()
        self._in_hook(uc, body)
        # After a PC write from this hook, Unicorn 2.1.4 no longer restores the PC when a later
        # callback of the same run stops it mid-block (measured): the run ends at the next block
        # boundary, so that every run _stop_after_store relies on starts afresh.
        self._intr_hook_ran = True
        self._st.deadline = 0

    def _flash_changed(self, offset: int, length: int) -> None:
        # The CPU already reads the new bytes (the buffer is mapped, see _map_memory); translated
        # code from the old bytes must go, at both addresses (docs/ARCHITECTURE.md, Unicorn notes).
        uch = self.uc._uch
        for base in [self.chip.flash_base] + ([] if self.boot0 else [BOOT_ALIAS_BASE]):
            # ctl_remove_cache without the binding's layers: two per half-word programmed.
            status = uclib.uc_ctl(uch, _CTL_REMOVE_CACHE, ctypes.c_uint64(base + offset),
                                  ctypes.c_uint64(base + offset + length))
            if status:
                raise UcError(status)
        self.engine.code_changed()
        self.flash_writes += 1

    # -- instructions Unicorn gets wrong for a Cortex-M3 (see insn_traps) ---------------------
    def _scan_traps(self) -> None:
        data = bytes(self.flash_storage)
        bases = [self.chip.flash_base] + ([] if self.boot0 else [BOOT_ALIAS_BASE])
        for base in bases:
            for address in insn_traps.find_divides(data, base):
                self._add_trap(address, self._divide_trap)
            for address in insn_traps.find_msr_basepri(data, base):
                self._add_trap(address, self._msr_basepri_trap)
            for address in insn_traps.find_barriers(data, base):
                if (address, "barrier") not in self._trapped:
                    self._trapped.add((address, "barrier"))
                    self.engine.add_barrier(address)

    def _add_trap(self, address: int, callback: Callable[..., None]) -> None:
        if (address, callback.__name__) in self._trapped:
            return
        self._trapped.add((address, callback.__name__))
        self.uc.hook_add(UC_HOOK_CODE, callback, begin=address, end=address)
        self.uc.ctl_remove_cache(address, address + 4)

    # -- unaligned LDM/STM/LDRD/STRD: traps on the flash code that runs ---------------------
    # Data in flash often looks like LDM/STM, so these traps are not found by a scan: the
    # engine's block hook looks for them in each block of flash code when it first counts it
    # and ends the run in front of a block whose traps are not in place yet (engine.py,
    # "Multi-word traps").  Code run from SRAM is not looked at: an unaligned LDM/STM there
    # is performed silently unless CCR.UNALIGN_TRP is set (the memory hook then catches it).
    def _after_run_traps(self, st: Any) -> None:
        """Corrections of the count for runs a trap ended (before time is advanced)."""
        if st.stopped == 4:
            # In front of a block with untrapped multi-word instructions: trap them, then run it.
            self.engine.trap_new_block()
        if st.unaligned:
            upc = st.unaligned_pc
            if self.pc == upc:
                self.engine.rewind_to(upc)  # stopped in front of it: it did not run
            else:
                # In an IT block Unicorn cannot stop in front of an instruction: the block ran
                # to its end (the fault is taken there, its stacked PC where execution got to).
                log.info("unaligned multi-word access in an IT block at %s: UNALIGNED taken at the "
                         "end of the block", self.symbol(upc))
        if self._unaligned is not None:
            self.engine.rewind_to(self._unaligned.pc)  # the faulting access is undone
            self._stopped_in_store = None
        elif self._stopped_in_store is not None:
            self._finish_store()

    def _multiword_fault(self, st: Any) -> None:
        st.unaligned = 0
        upc = st.unaligned_pc
        # Every address an LDM/STM/LDRD/STRD accesses is Rn plus a multiple of 4: with Rn
        # unaligned it is an UNALIGNED UsageFault, whatever CCR.UNALIGN_TRP says (A3.2.1).
        self._fault("UNALIGNED", upc, None, self.pc)

    def _words(self, address: int) -> tuple[int, int]:
        first, second = struct.unpack("<HH", self.uc.mem_read(address, 4))
        return first, second

    def _in_hook(self, uc: Uc, body: Callable[[], None]) -> None:
        """Run a Unicorn hook's body; nothing may unwind through Unicorn's C frames."""
        try:
            body()
        except Lockup as e:
            self._lockup(e)
            uc.emu_stop()
        except BaseException as e:  # noqa: BLE001
            self._internal_error = e
            uc.emu_stop()

    def _divide_trap(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        def body() -> None:
            first, second = self._words(address)
            if (first & 0xFFD0) != 0xFB90 or (second & 0xF0F0) != 0xF0F0:
                return  # the bytes changed since the scan
            _, _, _, rm = insn_traps.decode_divide(first, second)
            if self.scb.ccr("DIV_0_TRP") and uc.reg_read(getattr(A, f"UC_ARM_REG_R{rm}")) == 0:
                self._sync()
                # The rest of the block is abandoned: the handler's PC is written below.
                self.engine.rewind_to(address)
                self.exc.fault("DIVBYZERO", address)  # UsageFault before the divide (B3.2.8)
        self._in_hook(uc, body)

    def _msr_basepri_trap(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        def body() -> None:
            first, second = self._words(address)
            if (first & 0xFFF0) != 0xF380 or (second & 0xFF00) != 0x8800 or (second & 0xFF) not in (17, 18):
                return
            rn, sysm = insn_traps.decode_msr(first, second)
            # Only BASEPRI[7:4] exist on the STM32F1 (4 priority bits, PM0056 §2.1.3).
            value = uc.reg_read(getattr(A, f"UC_ARM_REG_R{rn}")) & self.nvic.priority_mask
            current = uc.reg_read(A.UC_ARM_REG_BASEPRI)
            if sysm == 17 or (value and (current == 0 or value < current)):
                uc.reg_write(A.UC_ARM_REG_BASEPRI, value)
            uc.reg_write(A.UC_ARM_REG_PC, (address + 4) | 1)
            self.engine.rewind_to(address, then_executed=1)  # the MSR is done; Unicorn resumes after it
            self._request_stop()  # unmasking may make an interrupt deliverable now
        self._in_hook(uc, body)

    # -- CCR.UNALIGN_TRP: unaligned LDR/STR(H) fault too (B3.2.8, A3.2.1) -------------------
    def _ccr_written(self) -> None:
        # UNALIGN_TRP applies from the next instruction: when it changes, the run ends right
        # after this store and the memory hook goes in or out before the CPU goes on.
        want = bool(self.scb.values["CCR"] & _CCR_UNALIGN_TRP)
        if self._in_slice and want != (self._unaligned_hook is not None):
            self._stop_after_store()

    def _update_unaligned_trap(self) -> None:
        """Install the memory hook while UNALIGN_TRP is set, remove it when it is clear.

        A Python memory hook costs about a microsecond per load and store, so it is
        there only while the firmware asks for the trap; Unicorn decides at translation
        whether a block calls memory hooks, hence the flush.
        """
        want = bool(self.scb.values["CCR"] & _CCR_UNALIGN_TRP)
        if want == (self._unaligned_hook is not None):
            return
        if want:
            self._unaligned_hook = self.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._unaligned_access)
        else:
            self.uc.hook_del(self._unaligned_hook)
            self._unaligned_hook = None
        self.uc.ctl_flush_tb()

    def _unaligned_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                          _ud: object) -> None:
        # Runs before every load and store while UNALIGN_TRP is set: aligned ones return here.
        if self._unaligned is None and not address & (size - 1):
            return

        def body() -> None:
            pending = self._unaligned
            if pending is None:
                # Unicorn syncs the PC for memory hooks (unlike MMIO callbacks): it is the access's.
                r = self.regs.reg_read
                regs = [r(reg) for reg in _UNDO_REGS]
                pending = self._unaligned = _UnalignedAccess(r(A.UC_ARM_REG_PC), address, regs)
                # End the run right after this access (inside an IT block, where Unicorn
                # cannot stop, at the next block boundary; everything after it is undone).
                self._st.deadline = 0
                uclib.uc_emu_stop(uc._uch)
            if access == UC_MEM_WRITE and self.chip.in_sram(address, size):
                # The hook runs before the store: keep what it overwrites (every store of a
                # faulting LDM/STM too) so the instruction can be undone.
                pending.overwritten.append((address, bytes(uc.mem_read(address, size))))
        self._in_hook(uc, body)

    def _unaligned_fault(self) -> None:
        u, self._unaligned = self._unaligned, None
        assert u is not None
        for address, data in reversed(u.overwritten):
            self.uc.mem_write(address, data)
        for reg, value in zip(_UNDO_REGS, u.registers, strict=True):
            self.regs.reg_write(reg, value)
        self._fault("UNALIGNED", u.pc, u.address, u.pc)

    def _stackable(self, address: int, size: int) -> bool:
        return self.chip.in_sram(address, size)

    def _peripheral_reset(self, name: str) -> None:
        model = self.models.get(name)
        if model is not None:
            model.reset()


_GPR = tuple(getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)) + (
    A.UC_ARM_REG_SP, A.UC_ARM_REG_LR, A.UC_ARM_REG_PC)
_UNDO_REGS = _GPR[:15]  # what a load or store can change: R0-R12, SP (writeback), LR
_CCR_UNALIGN_TRP = 1 << 3


def _plain_register_reader(model: Any, offset: int, size: int) -> Callable[[], int] | None:
    """A reader for a register that is only its stored value (the framework's read, no on_read
    hook, no write-only bits), or None: then the model's own read is called."""
    if type(model).read is not Peripheral.read:
        return None
    loc = model._locate(offset)
    if loc is None:
        return None
    compiled, shift = loc
    reg = compiled.reg
    if reg.on_read is not None or compiled.masks[Access.WO] or shift + size > compiled.nbytes:
        return None
    name, bits, mask = reg.name, 8 * shift, (1 << (8 * size)) - 1

    def read() -> int:
        return model.values[name] >> bits & mask
    return read


def _plain_register_writer(model: Any, offset: int, size: int) -> Callable[[int], None] | None:
    """A writer for a register of a model that keeps the framework's write (no override):
    ``Peripheral.write`` with the register, its masks and the merge of a sub-word store
    worked out once; the register's ``on_write`` is called as the framework calls it."""
    if type(model).write is not Peripheral.write:
        return None
    loc = model._locate(offset)
    if loc is None:
        return None
    c, shift = loc
    reg = c.reg
    name, full = reg.name, (1 << reg.width) - 1
    written_mask = (((1 << (8 * size)) - 1) << (8 * shift)) & full
    keep, nz, no = ~written_mask, ~c.neutral_zero, c.neutral_one
    bits, rw_wo, w1c, w0c, toggle = 8 * shift, c.rw_wo, c.w1c, c.w0c, c.toggle
    on_write = reg.on_write
    if not (w1c or w0c or toggle):
        def write(value: int) -> None:
            values = model.values
            old = values[name]
            raw = ((value << bits) & written_mask) | (((old & nz) | no) & keep)
            new = ((old & ~rw_wo) | (raw & rw_wo)) & full
            values[name] = new
            if on_write is not None:
                getattr(model, on_write)(old, new, raw)
        return write

    def write_masked(value: int) -> None:
        values = model.values
        old = values[name]
        raw = ((value << bits) & written_mask) | (((old & nz) | no) & keep)
        new = (old & ~rw_wo) | (raw & rw_wo)
        new &= ~(raw & w1c)
        new &= ~(~raw & w0c)
        new ^= raw & toggle
        values[name] = new & full
        if on_write is not None:
            getattr(model, on_write)(old, new & full, raw)
    return write_masked


class _MachinePort(SimPort):
    """The port the machine hands to models: SimPort plus CPU-aware stop requests."""

    def __init__(self, machine: Machine) -> None:
        super().__init__(machine.scheduler, machine.strict)
        self.machine = machine
        self.irq_sink = lambda irq, level: machine.nvic.set_line(irq, level)
        self.pc_provider = machine.access_pc
        self.reset_sink = self._reset

    # Inside a slice emulated time is brought up to the current block only when something looks
    # at it: a model asking for the time, scheduling a timer or logging an event, or the clock
    # changing (the cycles so far ran at the old one).  MMIO accesses themselves do not sync.
    def unmodelled(self, periph: str, offset: int, access: str, size: int, value: int | None) -> None:
        self.machine.activity += 1
        super().unmodelled(periph, offset, access, size, value)

    def guest_error(self, periph: str, message: str) -> None:
        self.machine.activity += 1
        super().guest_error(periph, message)

    def request_reset(self, cause: str) -> None:
        self.machine.activity += 1
        super().request_reset(cause)

    def now_ns(self) -> int:
        m = self.machine
        m.time_queries += 1
        if m._in_slice:
            m._sync()
        return self.scheduler.now_ns

    def event(self, kind: str, **data: Any) -> None:
        if self.machine._in_slice:
            self.machine._sync()
        super().event(kind, **data)

    def schedule(self, delay_ns: int, callback: Callable[[], None], name: str = ""):  # type: ignore[override]
        if self.machine._in_slice:
            self.machine._sync()
        entry = super().schedule(delay_ns, callback, name)
        if entry.due_ns < self.machine._slice_end_ns:
            self.machine._request_stop()
        return entry

    def _reset(self, cause: str) -> None:
        self.machine._reset_request = cause
        self.machine._request_stop()

    def clocks_changed(self) -> None:
        m = self.machine
        if m._in_slice:
            m._sync()  # the instructions so far ran at the old clock
        m._hclk = self.clocks.hclk
        super().clocks_changed()
        m._request_stop()

    def stall_until(self, due_ns: int) -> None:
        super().stall_until(due_ns)
        self.machine._request_stop()


def write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()

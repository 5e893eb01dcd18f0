"""The emulated board as a GDB :class:`~emulator.gdb.server.Target`: registers, memory, flash, stops.

What a debugger's access does here, as an SWD probe's would on the chip:

* **Registers** are Unicorn's; a write keeps the machine consistent: the PC
  wakes a sleeping core, xPSR takes only the APSR flags (IPSR and EPSR belong to
  the exception engine), BASEPRI keeps its implemented bits [7:4] (PM0056
  §2.1.3), and the loop detector forgets what it saw.
* **SRAM and flash** are read and written directly (no time passes, nothing is
  logged).  Flash is written only through ``vFlash*`` (GDB's ``load``): a page
  erase and half-word programming as the FPEC does them, refused for
  write-protected pages and for half-words not erased (PGERR, RM0008 §3.3.3),
  done in no emulated time, as the core is halted anyway.
* **Peripheral registers** are read through their model without side effects,
  as the debug access port sees them: a register the core's read would change
  (SysTick CSR.COUNTFLAG, "Debugger reads do not clear the COUNTFLAG",
  ARMv7-M B3.3.3; USART SR/DR flag clearing, RM0008 §27.6.1) shows its stored
  value, a first GPIO read logs no ``gpio_read`` event, a computed register
  (SysTick CVR, GPIO IDR, ICSR, DWT CYCCNT) is computed at the halted time, and
  a peripheral whose RCC clock is off reads 0 as on the bus.  Nothing a read
  does reaches the event log or the loop detector.  **Writes** are real bus
  writes: they have every effect a store from the core would have (and log what
  it would log), as a probe's write does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE, UcError
from unicorn import arm_const as A
from unicorn.unicorn_py3.unicorn import uclib

from emulator.core import insn_traps
from emulator.core import memory as mm
from emulator.core.chips import (
    BOOT_ALIAS_BASE,
    FLASH_SIZE_REG,
    OPTION_BYTES_BASE,
    SYSTEM_MEMORY_BASE,
    UNIQUE_ID_BASE,
)
from emulator.core.machine import Machine
from emulator.gdb.server import SIGSEGV, SIGTRAP, Stop, TargetError
from emulator.gdb.tdesc import Region
from firmware_models.nvic import exception_name

REG_IDS = tuple(getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)) + (
    A.UC_ARM_REG_SP, A.UC_ARM_REG_LR, A.UC_ARM_REG_PC, A.UC_ARM_REG_XPSR, A.UC_ARM_REG_MSP,
    A.UC_ARM_REG_PSP, A.UC_ARM_REG_PRIMASK, A.UC_ARM_REG_BASEPRI, A.UC_ARM_REG_FAULTMASK,
    A.UC_ARM_REG_CONTROL)
PC, XPSR, BASEPRI = 15, 16, 20
_APSR_BITS = 0xF8000000  # N Z C V Q: what a debugger's xPSR write may change
_IT_BITS = 0x0600FC00  # EPSR.IT[1:0] (26:25) and IT[7:2] (15:10)
STOPPED_BY_DEBUGGER = 5  # engine state "stopped": a run the debugger ended (see emulator/core/engine.py)
# Register reads whose model hook changes state: the debugger sees the stored value instead.
_STORED_VALUE_READS = frozenset({"_read_ctrl", "_sr_read", "_dr_read", "_guarded_idcode", "_guarded_cr"})
WATCH_KINDS = {2: "watch", 3: "rwatch", 4: "awatch"}


@dataclass
class _Watch:
    kind: int
    address: int
    length: int
    hook: int


class _QuietPort:
    """A model's port during a debugger read: the same time and clocks, nothing logged or counted."""

    def __init__(self, port: Any) -> None:
        self._port = port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    def now_ns(self) -> int:
        return self._port.scheduler.now_ns

    def event(self, kind: str, **data: Any) -> None:
        pass

    def unmodelled(self, *args: Any) -> None:
        pass

    def guest_error(self, *args: Any) -> None:
        pass


class MachineTarget:
    """The board behind the stub.  ``stop_pending`` is set by a hook that ended a run for the
    debugger (breakpoint, watchpoint, single step, jump); the session reports it."""

    def __init__(self, machine: Machine, monitor: Callable[[str], str] | None = None) -> None:
        self.m = machine
        self._monitor = monitor
        self.breakpoints: dict[int, int] = {}  # address -> kind (0 software, 1 hardware, as GDB asked)
        self._code_hooks: dict[int, int] = {}  # address -> Unicorn hook handle (breakpoints, one-shots)
        self.watches: dict[tuple[int, int, int], _Watch] = {}
        self.stop_pending: Stop | None = None
        self.skip_once: int | None = None  # resuming from a breakpoint: its address runs once
        self._step_hook: int | None = None
        self._step_from: tuple[int, int] | None = None  # (pc, instructions) when the step began
        self._flash_touched: list[tuple[int, int]] = []
        self.one_shot: dict[int, Callable[[], str]] = {}  # address -> console message: internal breakpoints
        self._step_seen = 0
        self.describe_stop: Callable[[], str] | None = None  # the console text of stop_pending, made once halted

    # -- registers --------------------------------------------------------------------------
    def registers(self) -> list[int]:
        read = self.m.regs.reg_read
        values = [read(r) for r in REG_IDS]
        values[PC] &= ~1
        return values

    def set_register(self, n: int, value: int) -> None:
        m = self.m
        value &= 0xFFFFFFFF
        reg = REG_IDS[n]
        if n == PC:
            value |= 1
            m.cpu.sleeping = False
        elif n == XPSR:
            value = (m.regs.reg_read(reg) & ~_APSR_BITS) | (value & _APSR_BITS)
        elif n == BASEPRI:
            value &= m.nvic.priority_mask
        elif reg in (A.UC_ARM_REG_PRIMASK, A.UC_ARM_REG_FAULTMASK):
            value &= 1
        elif reg == A.UC_ARM_REG_CONTROL:
            value &= 3
        m.regs.reg_write(reg, value)
        m.loops.forget_passes()

    # -- memory -------------------------------------------------------------------------------
    def memory_regions(self) -> list[Region]:
        chip = self.m.chip
        regions = [Region("flash", chip.flash_base, chip.flash_size, chip.page_size),
                   Region("ram", chip.sram_base, chip.sram_size)]
        if not self.m.boot0:
            regions.insert(0, Region("rom", BOOT_ALIAS_BASE, chip.flash_size))
        # Without these GDB would refuse to touch peripheral registers (the memory map says
        # what exists); "ram" here means only "readable and writable".
        regions += [Region("rom", SYSTEM_MEMORY_BASE, mm.SYSTEM_BLOCK_SIZE),
                    Region("ram", mm.SRAM_BITBAND, chip.sram_size * 32),
                    Region("ram", mm.PERIPH_BASE, mm.PERIPH_SIZE),
                    Region("ram", mm.PERIPH_BITBAND, mm.PERIPH_SIZE * 32),
                    Region("ram", mm.PPB_BASE, mm.PPB_SIZE)]
        return sorted(regions, key=lambda r: r.start)

    def read_memory(self, address: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            chunk = self._read_span(address, length)
            if not chunk:
                if out:
                    break  # GDB takes a short read and asks again from there
                raise TargetError(f"cannot read 0x{address:08X}: nothing is mapped there")
            out += chunk
            address += len(chunk)
            length -= len(chunk)
        return bytes(out)

    def _read_span(self, address: int, length: int) -> bytes:
        m, chip = self.m, self.m.chip
        flash_off = self._flash_offset(address)
        if flash_off is not None:
            n = min(length, chip.flash_size - flash_off)
            return bytes(m.flash_storage[flash_off:flash_off + n])
        if chip.in_sram(address):
            return bytes(m.uc.mem_read(address, min(length, chip.sram_end - address)))
        if (mm.PERIPH_BASE <= address < mm.PERIPH_BASE + mm.PERIPH_SIZE
                or mm.PPB_BASE <= address < mm.PPB_BASE + mm.PPB_SIZE):
            return self._read_registers(address, length)
        if mm.SRAM_BITBAND <= address < mm.SRAM_BITBAND + chip.sram_size * 32:
            return self._read_words(address, length, self._sram_bitband)
        if mm.PERIPH_BITBAND <= address < mm.PERIPH_BITBAND + mm.PERIPH_SIZE * 32:
            return self._read_words(address, length, self._periph_bitband)
        if SYSTEM_MEMORY_BASE <= address < SYSTEM_MEMORY_BASE + mm.SYSTEM_BLOCK_SIZE:
            n = min(length, SYSTEM_MEMORY_BASE + mm.SYSTEM_BLOCK_SIZE - address)
            return bytes(self._system_byte(address + i) for i in range(n))
        return b""

    def _flash_offset(self, address: int) -> int | None:
        chip = self.m.chip
        if chip.in_flash(address):
            return address - chip.flash_base
        if not self.m.boot0 and 0 <= address < chip.flash_size:
            return address
        return None

    def _read_words(self, address: int, length: int, word: Callable[[int], int]) -> bytes:
        out = bytearray()
        first = address & ~3
        end = address + length
        for w in range(first, end, 4):
            out += word(w).to_bytes(4, "little")
        return bytes(out[address - first:address - first + length])

    def _read_registers(self, address: int, length: int) -> bytes:
        region_end = (mm.PPB_BASE + mm.PPB_SIZE) if address >= mm.PPB_BASE else mm.PERIPH_BASE + mm.PERIPH_SIZE
        return self._read_words(address, min(length, region_end - address), self.peek)

    def peek(self, address: int) -> int:
        """The 32-bit register at ``address`` (word-aligned) as the debug port reads it."""
        m = self.m
        mapping = m.bus.find(address)
        if mapping is None:
            return 0  # reserved: reads as zero, and a debugger read is not an unmodelled access
        if mapping.gate is not None and mapping.gate() is not None:
            return 0  # the peripheral's clock is off: the bus reads 0 (emulator/core/bus.py)
        model = mapping.model
        offset = address - mapping.base
        locate = getattr(model, "_locate", None)
        loc = locate(offset) if locate is not None else None
        if loc is not None and loc[0].reg.on_read in _STORED_VALUE_READS:
            compiled, shift = loc
            return (model.values[compiled.reg.name] & ~compiled.wo) >> (8 * shift) & 0xFFFFFFFF
        if loc is None and locate is not None:
            return 0
        port, labels = model.port, getattr(model, "labels", None)
        queries = m.time_queries  # DWT CYCCNT asks the machine itself: not a query of the firmware's
        model.port = _QuietPort(port)
        if labels is not None:
            model.labels = {}  # GPIO: a debugger read is not the firmware's first read of a pin
        try:
            return model.read(offset, 4) & 0xFFFFFFFF
        except Exception:  # noqa: BLE001 - a register the model refuses to read reads as 0 here
            return 0
        finally:
            model.port = port
            m.time_queries = queries
            if labels is not None:
                model.labels = labels

    def _sram_bitband(self, address: int) -> int:
        byte, bit = mm.bitband_target(mm.SRAM_BITBAND, self.m.chip.sram_base, address)
        return self.m.uc.mem_read(byte, 1)[0] >> bit & 1

    def _periph_bitband(self, address: int) -> int:
        byte, bit = mm.bitband_target(mm.PERIPH_BITBAND, mm.PERIPH_BASE, address)
        word = byte & ~3
        return self.peek(word) >> (bit + 8 * (byte - word)) & 1

    def _system_byte(self, address: int) -> int:
        m, chip = self.m, self.m.chip
        if OPTION_BYTES_BASE <= address < OPTION_BYTES_BASE + 16:
            return m.flash.read_option_bytes()[address - OPTION_BYTES_BASE]
        if UNIQUE_ID_BASE <= address < UNIQUE_ID_BASE + 12:
            return chip.unique_id[address - UNIQUE_ID_BASE]
        if FLASH_SIZE_REG <= address < FLASH_SIZE_REG + 2:
            return chip.flash_size_kib >> (8 * (address - FLASH_SIZE_REG)) & 0xFF
        return 0xFF  # ST's system-memory loader is not emulated: reads as erased

    def write_memory(self, address: int, data: bytes) -> None:
        m, chip = self.m, self.m.chip
        end = address + len(data)
        if chip.in_sram(address, len(data)):
            m.uc.mem_write(address, bytes(data))
            m.uc.ctl_remove_cache(address, end)  # code run from SRAM is translated afresh
        elif self._flash_offset(address) is not None:
            raise TargetError(f"0x{address:08X} is flash: write it with `load` (vFlashWrite), as a probe does")
        elif any(base <= address and end <= base + size for base, size in self._mmio_windows()):
            self._bus_write(address, data)
        else:
            raise TargetError(f"cannot write 0x{address:08X}: not SRAM or a peripheral register")
        m.loops.forget_passes()

    def _mmio_windows(self) -> tuple[tuple[int, int], ...]:
        return ((mm.PERIPH_BASE, mm.PERIPH_SIZE), (mm.PPB_BASE, mm.PPB_SIZE),
                (mm.SRAM_BITBAND, self.m.chip.sram_size * 32), (mm.PERIPH_BITBAND, mm.PERIPH_SIZE * 32))

    def _bus_write(self, address: int, data: bytes) -> None:
        # Naturally aligned words, half-words and bytes, through Unicorn: the machine's MMIO
        # callbacks route each to its model exactly as a store from the core.
        i = 0
        while i < len(data):
            a = address + i
            size = 4 if not a & 3 and len(data) - i >= 4 else 2 if not a & 1 and len(data) - i >= 2 else 1
            try:
                self.m.uc.mem_write(a, bytes(data[i:i + size]))
            except UcError as e:
                raise TargetError(f"write to 0x{a:08X} failed: {e}") from None
            i += size

    # -- flash, as a probe programs it ------------------------------------------------------------
    def flash_erase(self, address: int, length: int) -> None:
        m, chip = self.m, self.m.chip
        if m.flash.busy:
            raise TargetError("the flash interface is busy (an operation of the firmware is in flight)")
        if not chip.in_flash(address, length) or (address - chip.flash_base) % chip.page_size:
            raise TargetError(f"vFlashErase 0x{address:08X}+{length}: not whole pages of main flash")
        for page_address in range(address, address + length, chip.page_size):
            page = (page_address - chip.flash_base) // chip.page_size
            if m.flash.page_write_protected(page):
                raise TargetError(f"page {page} at 0x{page_address:08X} is write-protected (WRP option bytes)")
        off = address - chip.flash_base
        n = -(-length // chip.page_size) * chip.page_size
        m.load_flash(b"\xff" * n, off)  # as a programmer writes it: no FPEC, caches dropped
        self._flash_touched.append((off, n))

    def flash_write(self, address: int, data: bytes) -> None:
        m, chip = self.m, self.m.chip
        if not chip.in_flash(address, len(data)):
            raise TargetError(f"vFlashWrite 0x{address:08X}+{len(data)}: outside main flash")
        off = address - chip.flash_base
        storage = m.flash_storage
        for i in range(0, len(data), 2):
            a = (off + i) & ~1
            old = storage[a] | storage[a + 1] << 8
            if old != 0xFFFF and data[i:i + 2] != b"\x00\x00":
                # The FPEC programs half-words only when erased (PGERR, RM0008 §3.3.3).
                raise TargetError(f"0x{chip.flash_base + a:08X} is not erased (PGERR): erase before programming")
        m.load_flash(bytes(data), off)
        self._flash_touched.append((off, len(data)))

    def flash_done(self) -> None:
        touched, self._flash_touched = self._flash_touched, []
        if touched:
            low = min(o for o, _ in touched)
            high = max(o + n for o, n in touched)
            self.m.port.event("debugger_flash", offset=low, length=high - low)
        self.m.loops.forget_passes()

    # -- break- and watchpoints ---------------------------------------------------------------------
    def set_breakpoint(self, kind: int, address: int, length: int, on: bool) -> bool:
        if kind in (0, 1):
            address &= ~1
            if on:
                self.breakpoints[address] = kind
                self._hook_at(address)
            else:
                self.breakpoints.pop(address, None)
            return True
        if kind in WATCH_KINDS:
            key = (kind, address, length)
            if on and key not in self.watches:
                flags = {2: UC_HOOK_MEM_WRITE, 3: UC_HOOK_MEM_READ}.get(kind, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE)
                hook = self.m.uc.hook_add(flags, self._watch_hit, begin=address, end=address + max(length, 1) - 1,
                                          user_data=kind)
                self.watches[key] = _Watch(kind, address, length, hook)
                self.m.uc.ctl_flush_tb()  # Unicorn decides at translation whether accesses call hooks
            elif not on and key in self.watches:
                self.m.uc.hook_del(self.watches.pop(key).hook)
                self.m.uc.ctl_flush_tb()
            return True
        return False

    def add_one_shot(self, address: int, message: Callable[[], str]) -> None:
        """An internal breakpoint: halt the first time the CPU reaches ``address``."""
        address &= ~1
        self.one_shot[address] = message
        self._hook_at(address)

    def tidy(self) -> None:
        """While halted: code hooks no breakpoint needs any more go (none: no cost)."""
        for address in [a for a in self._code_hooks if a not in self.breakpoints and a not in self.one_shot]:
            self.m.uc.hook_del(self._code_hooks.pop(address))
            self.m.uc.ctl_remove_cache(address, address + 4)

    def clear_points(self) -> None:
        """Detach: every break- and watchpoint and the step hook go (they then cost nothing)."""
        self.breakpoints.clear()
        self.one_shot.clear()
        self.tidy()
        for w in self.watches.values():
            self.m.uc.hook_del(w.hook)
        if self.watches:
            self.m.uc.ctl_flush_tb()
        self.watches.clear()
        self.end_step()

    def _hook_at(self, address: int) -> None:
        if address not in self._code_hooks:
            self._code_hooks[address] = self.m.uc.hook_add(UC_HOOK_CODE, self._code_hit, begin=address, end=address)
            self.m.uc.ctl_remove_cache(address, address + 4)  # translated without the hook

    def _in_it_block(self, address: int) -> bool:
        """Is ``address`` inside an IT block?  Unicorn ignores a stop there (the block runs to its
        end) and shows no ITSTATE to hooks, so the block is decoded from its start up to it."""
        st = self.m.engine.state
        start = st.block
        if not start <= address < start + st.block_size:
            return False
        code = self.m.engine.code_bytes(start, address - start)
        i = remaining = 0
        while i + 1 < len(code):
            half = code[i] | code[i + 1] << 8
            if remaining:
                remaining -= 1
            elif half & 0xFF00 == 0xBF00 and half & 0xF:  # IT: mask[3:0] says 1-4 instructions (A7.7.38)
                mask = half & 0xF
                remaining = 4 - ((mask & -mask).bit_length() - 1)
            i += 4 if code[i + 1] >= 0xE8 else 2
        return remaining > 0

    def stop_here(self, address: int, stop: Stop) -> None:
        """From a code hook: end the run in front of the instruction at ``address`` (not executed).

        The block hook counted the whole block when it was entered: the count goes back to the
        instructions before ``address`` (Engine.rewind_to), so counts and time stay exact."""
        m = self.m
        st = m.engine.state
        m.engine.rewind_to(address)
        st.stopped = STOPPED_BY_DEBUGGER  # not a WFI, not a loop pass: the machine only counts it
        st.deadline = 0
        self.stop_pending = stop
        uclib.uc_emu_stop(m.uc._uch)

    def _code_hit(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        try:
            if self.stop_pending is not None:
                return
            if address == self.skip_once:
                self.skip_once = None
                return
            if (address in self.breakpoints or address in self.one_shot) and self._in_it_block(address):
                # Halt at the end of the block instead (the whole block runs and counts).
                message = self.one_shot.pop(address, None)
                self.stop_pending, self.describe_stop = Stop(SIGTRAP), message
                self.m.engine.state.deadline = 0
                return
            message = self.one_shot.pop(address, None)
            if message is not None:
                # No breakpoint of GDB's is there: a plain SIGTRAP (a swbreak/hwbreak stop at an
                # address without one GDB takes for a removed breakpoint and resumes).
                self.stop_here(address, Stop(SIGTRAP))
                self.describe_stop = message
            elif address in self.breakpoints:
                self.stop_here(address, Stop(SIGTRAP, "hwbreak:" if self.breakpoints[address] else "swbreak:"))
        except Exception as e:  # noqa: BLE001 - must not unwind through Unicorn's C frames
            self.m._hook_failed(e)  # noqa: SLF001

    def _watch_hit(self, uc: Any, access: int, address: int, size: int, value: int, kind: int) -> None:
        try:
            if self.stop_pending is not None:
                return
            if kind == 2 and access != UC_MEM_WRITE:
                return
            what = WATCH_KINDS[kind] if kind != 4 or access == UC_MEM_WRITE else "awatch"
            watched = next((w.address for w in self.watches.values()
                            if w.kind == kind and w.address <= address + size - 1 and address < w.address + w.length),
                           address)
            self.stop_pending = Stop(SIGTRAP, f"{what}:{watched:x}")
            m = self.m
            st = m.engine.state
            st.deadline = 0  # at the end of this block at the latest
            if access == UC_MEM_WRITE and m._stopped_in_store is None and not m._intr_hook_ran \
                    and insn_traps.stores_end_precisely(m.engine.code_bytes(st.block, st.block_size)):  # noqa: SLF001
                # Right after the store: the machine completes the instruction (its writeback)
                # as it does for a store to the System Control Space (Machine._finish_store).
                m._stopped_in_store = st.block  # noqa: SLF001
                m._store_address = address  # noqa: SLF001
                uclib.uc_emu_stop(uc._uch)
        except Exception as e:  # noqa: BLE001
            self.m._hook_failed(e)  # noqa: SLF001

    # -- single step ------------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Run one instruction: a code hook on every address ends the run in front of the second
        instruction executed (an exception taken in between ends it at the handler's first)."""
        m = self.m
        self._step_from = (m.pc & ~1, m.instructions)
        self._step_seen = 0
        if self._step_hook is None:
            self._step_hook = m.uc.hook_add(UC_HOOK_CODE, self._step_hit, begin=1, end=0)
            m.uc.ctl_flush_tb()

    def _step_hit(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        try:
            if self.stop_pending is not None:
                return
            self._step_seen += 1
            if self._step_seen >= 2 and not self._in_it_block(address):
                self.stop_here(address, Stop(SIGTRAP))
        except Exception as e:  # noqa: BLE001
            self.m._hook_failed(e)  # noqa: SLF001

    def step_done(self) -> bool:
        """At the top of the machine's loop: has the step made progress (an instruction ran, or
        an exception entry moved the PC)?"""
        if self._step_from is None:
            return False
        pc, count = self._step_from
        return self.m.instructions != count or (self.m.pc & ~1) != pc

    def end_step(self) -> None:
        self._step_from = None
        if self._step_hook is not None:
            self.m.uc.hook_del(self._step_hook)
            self._step_hook = None
            self.m.uc.ctl_flush_tb()

    @property
    def stepping(self) -> bool:
        return self._step_from is not None

    # -- faults ----------------------------------------------------------------------------------
    def fault_stop(self, index: int) -> Stop:
        f = self.m.faults[index]
        where = self.m.symbol(f.pc)
        address = "" if f.address is None else f" (address 0x{f.address:08X})"
        escalated = ", escalated to HardFault" if f.escalated else ""
        return Stop(SIGSEGV, message=f"{exception_name(f.exception)}: {f.cause} at {where}{address}{escalated}")

    # -- monitor ---------------------------------------------------------------------------------
    def monitor(self, command: str) -> str:
        if self._monitor is None:
            return "no monitor commands here"
        return self._monitor(command)

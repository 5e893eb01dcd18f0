"""The CPU engine: counts instructions block by block and ends slices on block boundaries.

Unicorn's ``count=N`` counts exactly but installs a hook on every instruction
(about a fifth of Unicorn's speed).  Here a block hook (``UC_HOOK_BLOCK``) is
called once per translated block as it is entered: it adds the block's
instruction count and ends the run *before* the block when the slice's deadline
is reached or a stop was requested.  So a slice ends at the first block boundary
at or after its deadline, and a stop request (an interrupt became pending, the
USB host wants the CPU back) takes effect at the next block boundary.  Both are
deterministic: the same image and inputs give the same boundaries.

Counting rules (identical in both engines):

* a block's count is the number of Thumb instructions in its bytes, conditional
  instructions in an IT block included (a Cortex-M3 spends a cycle on them too);
* a block that is cut short (a data abort, an instruction trap that redirects
  the PC) is corrected by the machine with :meth:`Engine.rewind_to`;
* ``b .`` (a block of the single half-word 0xE7FE) is never entered: the run
  ends in front of it and the machine's idle detector skips time instead;
* while ``watch`` is set the run also ends at the first block boundary where
  PRIMASK, FAULTMASK or BASEPRI differ from the values given; CPS and MSR end a
  translated block, so a masked interrupt is taken right after the instruction
  that unmasks it.

Multi-word traps.  Unicorn performs unaligned ``LDM``/``STM``/``LDRD``/``STRD``
silently; on ARMv7-M they always fault (A3.2.1).  When the hook first counts a
block of flash code (its count is not cached yet) it also looks for those
instructions (non-SP base, :func:`insn_traps.multiword_base`); a block holding
one whose trap is not in place yet is not entered: the run ends in front of it
(``stopped`` = 4, ``new_block``/``new_block_size``) and the machine puts a code
hook on each such instruction (:meth:`Engine.add_multiword`) before it runs.  So
code without them costs nothing more, and data in flash that looks like them
(common: a fifth of all half-words start with 0xC) never gets a hook.  The hook
reads Rn; an unaligned base ends the run in front of the instruction
(``unaligned``, ``unaligned_pc``).  Code run from SRAM is not looked at.

Two implementations share these rules: :class:`CEngine` (the hook in C, built
with cffi, see ``_cengine_build.py``) and :class:`PyEngine` (the same hook in
Python, for installations without a C compiler).  ``STM32_BOOTSIM_ENGINE=python``
forces the Python one; tests run both and compare event logs.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INTR, Uc, UcError
from unicorn import arm_const as A
from unicorn.unicorn_py3.unicorn import (
    HOOK_CODE_CFUNC,
    HOOK_INTR_CFUNC,
    MMIO_READ_CFUNC,
    MMIO_WRITE_CFUNC,
    uclib,
)

from emulator.core import insn_traps

ENV_VAR = "STM32_BOOTSIM_ENGINE"
THUMB_B_SELF = b"\xfe\xe7"
MASK_REGS = (A.UC_ARM_REG_PRIMASK, A.UC_ARM_REG_FAULTMASK, A.UC_ARM_REG_BASEPRI)
NO_DEADLINE = (1 << 64) - 1
GPR_REGS = tuple(getattr(A, f"UC_ARM_REG_R{i}") for i in range(13))
# The CPU registers a loop snapshot compares (emulator/core/loops.py).
SNAPSHOT_REGS = tuple(getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)) + (
    A.UC_ARM_REG_MSP, A.UC_ARM_REG_PSP, A.UC_ARM_REG_LR, A.UC_ARM_REG_PC, A.UC_ARM_REG_XPSR,
    A.UC_ARM_REG_PRIMASK, A.UC_ARM_REG_BASEPRI, A.UC_ARM_REG_FAULTMASK, A.UC_ARM_REG_CONTROL)

try:  # the compiled half; absent when the package was installed without a C compiler
    from emulator.core import _cengine  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the installation
    _cengine = None


def count_thumb(code: bytes) -> int:
    """Instructions in ``code``: a half-word with top bits 0b11101/0b11110/0b11111 starts a 32-bit one."""
    n = i = 0
    size = len(code) - 1
    while i < size:
        i += 4 if code[i + 1] >= 0xE8 else 2
        n += 1
    return n


def c_engine_available() -> bool:
    return _cengine is not None


def engine_choice() -> str:
    """``"c"`` or ``"python"``: the environment's choice, else C when it was built."""
    wanted = os.environ.get(ENV_VAR, "").strip().lower()
    if wanted in ("python", "py"):
        return "python"
    if wanted == "c" and _cengine is None:
        raise RuntimeError(f"{ENV_VAR}=c, but the C engine (emulator.core._cengine) was not built: "
                           "install with a C compiler, or run python -m emulator.core._cengine_build")
    return "c" if _cengine is not None else "python"


def _fn_address(fn: Any) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


# -- Unicorn callbacks into Python ----------------------------------------------------------
# Through the extension's C functions that call the Python callable with the C API (a third
# of a ctypes callback's cost) when it has them, else through the binding's ctypes function
# types.  Either way the callable gets (0, offset, size, 0), (0, offset, size, value, 0) or
# (0, intno, 0): the engine handle and user data are not passed on.
def _c_callbacks() -> bool:
    return _cengine is not None and getattr(_cengine.lib, "bs_intr_address", None) is not None


def _object_pointer(obj: Any) -> ctypes.c_void_p:
    """The ``PyObject *`` of ``obj`` (CPython: its id), for the C callbacks' user data."""
    return ctypes.c_void_p(id(obj))


def mmio_map(uc: Uc, base: int, size: int, read: Callable[[int, int, int, int], int],
             write: Callable[[int, int, int, int, int], None], keep: list[Any]) -> None:
    """Map ``size`` bytes at ``base`` as MMIO served by ``read(0, offset, size, 0)`` and
    ``write(0, offset, size, value, 0)``; what must stay alive as long as ``uc`` is put in
    ``keep``.  The callables must not raise (Unicorn's C frames are below them)."""
    if _c_callbacks():
        lib = _cengine.lib
        keep += [read, write]
        status = uclib.uc_mmio_map(uc._uch, base, size, ctypes.c_void_p(lib.bs_mmio_read_address()),
                                   _object_pointer(read), ctypes.c_void_p(lib.bs_mmio_write_address()),
                                   _object_pointer(write))
    else:
        rcb, wcb = MMIO_READ_CFUNC(read), MMIO_WRITE_CFUNC(write)
        keep += [rcb, wcb]
        status = uclib.uc_mmio_map(uc._uch, base, size, rcb, None, wcb, None)
    if status != 0:
        raise UcError(status)


def hook_intr(uc: Uc, callback: Callable[[int, int, int], None], keep: list[Any]) -> None:
    """``callback(0, intno, 0)`` on each of Unicorn's interrupts (UC_HOOK_INTR), as :func:`mmio_map`."""
    handle = ctypes.c_size_t()
    if _c_callbacks():
        keep.append(callback)
        status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INTR,
                                   ctypes.c_void_p(_cengine.lib.bs_intr_address()), _object_pointer(callback),
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
    else:
        fn = HOOK_INTR_CFUNC(callback)
        keep.append(fn)
        status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INTR, fn, None,
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
    if status:
        raise UcError(status)


class Engine:
    """What the machine uses: ``state`` (the fields of ``bs_state``), slices, stops, corrections."""

    name = "?"
    state: Any

    def __init__(self, uc: Uc, flash: bytearray, flash_base: int, alias_size: int) -> None:
        self.uc = uc
        self._flash = flash
        self._flash_base = flash_base
        self._flash_end = flash_base + len(flash)
        self._alias_size = alias_size
        self.multiword_traps: set[int] = set()  # addresses with a multi-word trap hook

    # -- slices ----------------------------------------------------------------------------
    def begin(self, budget: int, masks: tuple[int, int, int] | None) -> None:
        """Arm the hook for a slice of at least ``budget`` instructions."""
        st = self.state
        st.count = st.base = 0
        st.block = st.block_size = st.block_n = 0
        st.deadline = budget
        st.stopped = st.unaligned = 0
        if masks is None:
            st.watch = 0
        else:
            st.watch = 1
            st.masks[0], st.masks[1], st.masks[2] = masks

    def request_stop(self) -> None:
        """End the slice at the next block boundary."""
        self.state.deadline = 0

    def code_changed(self) -> None:
        """Flash changed: cached instruction counts of flash blocks are dropped."""
        st = self.state
        st.gen = (st.gen + 1) & 0xFFFFFFFF

    def add_barrier(self, address: int) -> None:
        """Hook the DSB/DMB at ``address``: with ``fault_pending`` set the run ends in front of it
        (``stopped`` = 3, ``barrier`` = its address)."""
        raise NotImplementedError

    def add_multiword(self, address: int) -> None:
        """Put a multi-word trap on the instruction at ``address`` (in flash or its alias)."""
        if address in self.multiword_traps:
            return
        self.multiword_traps.add(address)
        self._mark_trapped(address)
        self._hook_code(*self._multiword_hook(), address)

    def trap_new_block(self) -> list[int]:
        """After a run that ended with ``stopped`` = 4: trap the block's multi-word
        instructions (decoded from the block's exact start); their addresses."""
        st = self.state
        address, size = st.new_block, st.new_block_size
        found = [insn for insn, _rn in insn_traps.multiword_accesses_in_block(
            self.code_bytes(address, size), address)]
        for insn in found:
            self.add_multiword(insn)
        return found

    def _mark_trapped(self, address: int) -> None:
        pass

    def _multiword_hook(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _hook_code(self, fn: Any, user_data: Any, address: int) -> None:
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(self.uc._uch, ctypes.byref(handle), UC_HOOK_CODE, fn, user_data,
                                   ctypes.c_uint64(address), ctypes.c_uint64(address))
        if status != 0:
            raise RuntimeError(f"uc_hook_add(UC_HOOK_CODE) failed with error {status}")
        self.uc.ctl_remove_cache(address, address + 4)  # translated without the hook

    # -- corrections -----------------------------------------------------------------------
    def code_bytes(self, address: int, size: int) -> bytes:
        if self._flash_base <= address and address + size <= self._flash_end:
            off = address - self._flash_base
            return bytes(self._flash[off:off + size])
        if address + size <= self._alias_size:
            return bytes(self._flash[address:address + size])
        try:
            return bytes(self.uc.mem_read(address, size))
        except Exception:  # noqa: BLE001 - unreadable: nothing to count
            return b""

    def index_in_block(self, address: int) -> int:
        """Instructions of the current block before ``address``."""
        st = self.state
        if not st.block <= address < st.block + st.block_size:
            return st.block_n
        return count_thumb(self.code_bytes(st.block, address - st.block))

    def rewind_to(self, address: int, then_executed: int = 0) -> None:
        """The current block was left at ``address``: only the instructions before it
        (plus ``then_executed``, an instruction a hook carried out itself) ran."""
        st = self.state
        st.count = st.base + self.index_in_block(address) + then_executed


class CEngine(Engine):
    name = "C"

    def __init__(self, uc: Uc, flash: bytearray, flash_base: int, alias_size: int) -> None:
        super().__init__(uc, flash, flash_base, alias_size)
        ffi, lib = _cengine.ffi, _cengine.lib
        self._ffi = ffi
        st = self.state = ffi.new("bs_state *")
        self._flash_buffer = ffi.from_buffer(flash)  # keeps the bytearray's buffer exported (no resize)
        st.flash = self._flash_buffer
        st.flash_base, st.flash_size, st.alias_size = flash_base, len(flash), alias_size
        st.emu_stop = ffi.cast("void *", _fn_address(uclib.uc_emu_stop))
        st.mem_read = ffi.cast("void *", _fn_address(uclib.uc_mem_read))
        st.reg_read = ffi.cast("void *", _fn_address(uclib.uc_reg_read))
        st.mask_regs[0], st.mask_regs[1], st.mask_regs[2] = MASK_REGS
        st.gpr_regs[0:13] = GPR_REGS
        # One bit per half-word of flash and of its alias (bs_state.trapped).
        self._trapped_bits = bytearray((len(flash) + alias_size) // 16 + 1)
        self._trapped_buffer = ffi.from_buffer(self._trapped_bits)
        st.trapped = self._trapped_buffer
        st.deadline = NO_DEADLINE
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK,
                                   ctypes.c_void_p(lib.bs_block_hook_address()),
                                   ctypes.c_void_p(int(ffi.cast("uintptr_t", st))),
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != 0:
            raise RuntimeError(f"uc_hook_add(UC_HOOK_BLOCK) failed with error {status}")
        self._handle = handle.value
        self._st_pointer = ctypes.c_void_p(int(ffi.cast("uintptr_t", st)))
        self._barrier_fn = ctypes.c_void_p(lib.bs_barrier_hook_address())
        self._multiword_fn = ctypes.c_void_p(lib.bs_multiword_hook_address())

        c_begin = getattr(lib, "bs_begin", None)  # absent from an extension built before it
        if c_begin is not None:
            def begin(budget: int, masks: tuple[int, int, int] | None) -> None:
                if masks is None:
                    c_begin(st, budget, 0, 0, 0, 0)
                else:
                    c_begin(st, budget, 1, masks[0], masks[1], masks[2])
            self.begin = begin  # type: ignore[method-assign]

    def add_barrier(self, address: int) -> None:
        self._hook_code(self._barrier_fn, self._st_pointer, address)

    def _multiword_hook(self) -> tuple[Any, Any]:
        return self._multiword_fn, self._st_pointer

    def _mark_trapped(self, address: int) -> None:
        if self._flash_base <= address < self._flash_end:
            k = (address - self._flash_base) >> 1
        elif address < self._alias_size:
            k = (len(self._flash) + address) >> 1
        else:
            return
        self._trapped_bits[k >> 3] |= 1 << (k & 7)


class _PyState:
    """The fields of ``bs_state`` as a Python object."""

    __slots__ = ("count", "base", "deadline", "block", "block_size", "block_n", "stopped", "watch",
                 "masks", "fault_pending", "barrier", "gen", "new_block", "new_block_size",
                 "unaligned", "unaligned_pc")

    def __init__(self) -> None:
        self.count = self.base = self.block = self.block_size = self.block_n = 0
        self.deadline = NO_DEADLINE
        self.stopped = self.watch = self.fault_pending = self.barrier = self.gen = 0
        self.new_block = self.new_block_size = self.unaligned = self.unaligned_pc = 0
        self.masks = [0, 0, 0]


class PyEngine(Engine):
    """The block hook in Python: same rules as the C one, slower."""

    name = "Python"

    def __init__(self, uc: Uc, flash: bytearray, flash_base: int, alias_size: int) -> None:
        super().__init__(uc, flash, flash_base, alias_size)
        self.state = _PyState()
        self._counts: dict[tuple[int, int], int] = {}
        self._multiword_bases: dict[int, int | None] = {}  # trapped address -> Unicorn id of Rn
        st, counts, uch = self.state, self._counts, uc._uch
        flash_end = self._flash_end
        stop_run = uclib.uc_emu_stop
        reg_read = uc.reg_read
        code_bytes = self.code_bytes
        flash_base, alias_size = self._flash_base, self._alias_size
        trapped = self.multiword_traps
        multiword_accesses = insn_traps.multiword_accesses_in_block

        def hook(_handle: int, address: int, size: int, _ud: int) -> None:
            if st.count >= st.deadline or (
                    st.watch and (reg_read(MASK_REGS[0]), reg_read(MASK_REGS[1]), reg_read(MASK_REGS[2]))
                    != tuple(st.masks)):
                st.stopped = 1
                stop_run(uch)
                return
            key = (address, size)
            n = counts.get(key)
            if n is None:
                code = code_bytes(address, size)
                if code == THUMB_B_SELF:
                    st.stopped = 2
                    stop_run(uch)
                    return
                n = count_thumb(code)
                # Only flash is cached (dropped when it changes); code elsewhere may change unseen.
                if flash_base <= address < flash_end or address < alias_size:
                    if any(insn not in trapped for insn, _rn in multiword_accesses(code, address)):
                        st.stopped = 4  # the machine traps them before the block runs
                        st.new_block, st.new_block_size = address, size
                        stop_run(uch)
                        return
                    counts[key] = n
            st.base = st.count
            st.count += n
            st.block, st.block_size, st.block_n = address, size, n

        self._cb = HOOK_CODE_CFUNC(hook)  # kept alive as long as the engine
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(uch, ctypes.byref(handle), UC_HOOK_BLOCK, self._cb, None,
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != 0:
            raise RuntimeError(f"uc_hook_add(UC_HOOK_BLOCK) failed with error {status}")
        self._handle = handle.value

        def barrier(_handle: int, address: int, size: int, _ud: int) -> None:
            if st.fault_pending:
                st.stopped = 3
                st.barrier = address
                stop_run(uch)

        self._barrier_cb = HOOK_CODE_CFUNC(barrier)

        bases = self._multiword_bases
        word = ctypes.c_uint32()
        word_ref = ctypes.byref(word)
        uc_reg_read = uclib.uc_reg_read

        def multiword(_handle: int, address: int, size: int, _ud: int) -> None:
            reg = bases.get(address, -1)
            if reg == -1:  # decoded once per flash contents (dropped by code_changed)
                code = code_bytes(address, 2)
                rn = insn_traps.multiword_base(code[0] | code[1] << 8) if len(code) == 2 else None
                reg = bases[address] = None if rn is None else GPR_REGS[rn]
            if reg is not None and not uc_reg_read(uch, reg, word_ref) and word.value & 3:
                st.unaligned, st.unaligned_pc = 1, address
                st.deadline = 0  # inside an IT block Unicorn ignores the stop: then at the next block
                stop_run(uch)

        self._multiword_cb = HOOK_CODE_CFUNC(multiword)

    def add_barrier(self, address: int) -> None:
        self._hook_code(self._barrier_cb, None, address)

    def _multiword_hook(self) -> tuple[Any, Any]:
        return self._multiword_cb, None

    def code_changed(self) -> None:
        self._counts.clear()
        self._multiword_bases.clear()
        super().code_changed()


def make_engine(uc: Uc, flash: bytearray, flash_base: int, alias_size: int) -> Engine:
    cls = CEngine if engine_choice() == "c" else PyEngine
    return cls(uc, flash, flash_base, alias_size)


class FastRegisters:
    """``reg_read``/``reg_write``/``mem_read``/``mem_write`` straight through Unicorn's C API.

    The binding's ``reg_read`` picks a ctypes class per register and allocates on every call
    (about 1.5 us); the core's registers are all 32-bit.  With the C engine built the calls go
    through its helpers (about 0.2 us), else through ctypes with one preallocated word.  Given
    to the exception engine in place of the ``Uc`` object.
    """

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        uch = uc._uch
        if _cengine is not None:
            ffi, lib = _cengine.ffi, _cengine.lib
            lib.bs_set_api(ffi.cast("void *", _fn_address(uclib.uc_reg_read)),
                           ffi.cast("void *", _fn_address(uclib.uc_reg_write)))
            handle = ffi.cast("void *", uch.value)
            get, put = lib.bs_reg_get, lib.bs_reg_set
            ids = ffi.new("int[]", len(SNAPSHOT_REGS))
            ids[0:len(SNAPSHOT_REGS)] = SNAPSHOT_REGS
            out = ffi.new("uint32_t[]", len(SNAPSHOT_REGS))
            many = lib.bs_regs_get
            n = len(SNAPSHOT_REGS)

            def reg_read(reg_id: int) -> int:
                value = get(handle, reg_id)
                if value < 0:
                    raise UcError(-value)
                return value

            def reg_write(reg_id: int, value: int) -> None:
                status = put(handle, reg_id, value & 0xFFFFFFFF)
                if status:
                    raise UcError(status)

            def snapshot_regs() -> tuple[int, ...]:
                status = many(handle, ids, out, n)
                if status:
                    raise UcError(status)
                return tuple(out)

            out_bytes = ffi.buffer(out)

            def snapshot_regs_key() -> bytes | tuple[int, ...]:
                status = many(handle, ids, out, n)
                if status:
                    raise UcError(status)
                return out_bytes[:]  # one copy of the words: no int object per register

            set_many = getattr(lib, "bs_regs_set", None)  # absent from an extension built before it

            def reader(reg_ids: tuple[int, ...]) -> Callable[[], list[int]]:
                k = len(reg_ids)
                c_ids, c_out = ffi.new("int[]", reg_ids), ffi.new("uint32_t[]", k)

                def read() -> list[int]:
                    status = many(handle, c_ids, c_out, k)
                    if status:
                        raise UcError(status)
                    return c_out[0:k]
                return read

            def writer(reg_ids: tuple[int, ...]) -> Callable[[list[int] | tuple[int, ...]], None]:
                k = len(reg_ids)
                if set_many is None:
                    return self._writer_one_by_one(reg_ids)
                c_ids, c_values = ffi.new("int[]", reg_ids), ffi.new("uint32_t[]", k)

                def write(values: list[int] | tuple[int, ...]) -> None:
                    try:
                        c_values[0:k] = values  # one C loop; a value out of 32 bits raises
                    except OverflowError:
                        for i in range(k):
                            c_values[i] = values[i] & 0xFFFFFFFF
                    status = set_many(handle, c_ids, c_values, k)
                    if status:
                        raise UcError(status)
                return write
        else:
            word = ctypes.c_uint32()
            ref = ctypes.byref(word)
            read, write = uclib.uc_reg_read, uclib.uc_reg_write

            def reg_read(reg_id: int) -> int:
                status = read(uch, reg_id, ref)
                if status:
                    raise UcError(status)
                return word.value

            def reg_write(reg_id: int, value: int) -> None:
                word.value = value & 0xFFFFFFFF
                status = write(uch, reg_id, ref)
                if status:
                    raise UcError(status)

            def snapshot_regs() -> tuple[int, ...]:
                return tuple(reg_read(r) for r in SNAPSHOT_REGS)

            snapshot_regs_key = snapshot_regs

            def reader(reg_ids: tuple[int, ...]) -> Callable[[], list[int]]:
                return lambda: [reg_read(r) for r in reg_ids]

            writer = self._writer_one_by_one

        self.reg_read = reg_read
        self.reg_write = reg_write
        self.snapshot_regs = snapshot_regs  # SNAPSHOT_REGS, for emulator.core.loops
        # The same registers as a value that compares equal exactly when they are (bytes with
        # the extension, else the tuple): for comparisons only, as in a loop verify.
        self.snapshot_regs_key = snapshot_regs_key
        # reader(ids)() reads those registers at once; writer(ids)(values) writes them in order.
        self.reader = reader
        self.writer = writer
        word_buf, mem_read = ctypes.create_string_buffer(4), uclib.uc_mem_read

        def read32(address: int) -> int:
            status = mem_read(uch, address, word_buf, 4)
            if status:
                raise UcError(status)
            return int.from_bytes(word_buf.raw, "little")
        self.read32 = read32  # a little-endian word of memory (vector fetches)
        self._buffers: dict[int, Any] = {}  # mem_read's, one per size
        mem_api = None
        if _cengine is not None and getattr(_cengine.lib, "bs_mem_same", None) is not None:
            # An extension built before these helpers lacks them: ctypes, below, then.
            _cengine.lib.bs_set_mem_api(_cengine.ffi.cast("void *", _fn_address(uclib.uc_mem_read)))
            mem_api = _cengine.ffi, _cengine.lib, _cengine.ffi.cast("void *", uch.value)
        self._mem_api = mem_api
        if mem_api is not None:
            ffi, lib, handle = mem_api
            c_read, c_buffers = lib.bs_mem_read, {}
            ffi_buffer = ffi.buffer

            def c_mem_read(address: int, size: int) -> bytearray:
                buf = c_buffers.get(size)
                if buf is None:
                    buf = c_buffers[size] = ffi.new("uint8_t[]", size)
                status = c_read(handle, address, buf, size)
                if status:
                    raise UcError(status)
                return bytearray(ffi_buffer(buf, size))
            self.mem_read = c_mem_read  # type: ignore[method-assign]

    def memory_copy(self, address: int, size: int) -> tuple[Callable[[], None], Callable[[], bool]]:
        """``(save, same)`` for ``size`` bytes at ``address``: ``save()`` copies them aside,
        ``same()`` says whether they hold that copy now (the loop detector's SRAM).  With the C
        engine built the comparison is a memcmp in C and no bytes object is made."""
        if self._mem_api is not None:
            ffi, lib, handle = self._mem_api
            saved = ffi.new("uint8_t[]", size)
            c_read, c_same = lib.bs_mem_read, lib.bs_mem_same

            def save() -> None:
                status = c_read(handle, address, saved, size)
                if status:
                    raise UcError(status)

            def same() -> bool:
                result = c_same(handle, address, saved, size)
                if result < 0:
                    raise UcError(-result)
                return result == 1
            return save, same
        buf, uch, read = ctypes.create_string_buffer(size), self.uc._uch, uclib.uc_mem_read
        copy = [b""]

        def read_all() -> bytes:
            status = read(uch, address, buf, size)
            if status:
                raise UcError(status)
            return buf.raw

        def save_py() -> None:
            copy[0] = read_all()

        def same_py() -> bool:
            return read_all() == copy[0]
        return save_py, same_py

    def _writer_one_by_one(self, reg_ids: tuple[int, ...]) -> Callable[[list[int] | tuple[int, ...]], None]:
        def write(values: list[int] | tuple[int, ...]) -> None:
            for reg_id, value in zip(reg_ids, values, strict=True):
                self.reg_write(reg_id, value)
        return write

    def mem_read(self, address: int, size: int) -> bytearray:
        """Like ``Uc.mem_read`` (a stack frame, a vector), without the binding's layers."""
        buf = self._buffers.get(size)
        if buf is None:
            buf = self._buffers[size] = ctypes.create_string_buffer(size)
        status = uclib.uc_mem_read(self.uc._uch, address, buf, size)
        if status:
            raise UcError(status)
        return bytearray(buf.raw)

    def mem_write(self, address: int, data: bytes) -> None:
        status = uclib.uc_mem_write(self.uc._uch, address, data, len(data))
        if status:
            raise UcError(status)

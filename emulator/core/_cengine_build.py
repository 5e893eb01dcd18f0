"""cffi builder of ``emulator.core._cengine``, the C half of the CPU engine.

Built by ``pip install`` (``cffi_modules`` in ``setup.py``) when a C compiler is
present; ``python -m emulator.core._cengine_build`` builds it in place for a
source checkout.  Without it the pure-Python engine of :mod:`emulator.core.engine`
runs with the same block-boundary semantics and the same results.

Nothing is linked against Unicorn: the functions the C side calls
(``uc_emu_stop``, ``uc_mem_read``, ``uc_reg_read``) are looked up in the library
Unicorn's Python binding already loaded and handed over as pointers.
"""

from __future__ import annotations

from cffi import FFI

# The state shared by the C block hook and Python.  Python reads and writes the
# fields directly; the pure-Python engine mirrors them in a plain object.
STATE = """
typedef struct {
    uint32_t address;
    uint16_t size, n;
    uint32_t gen;
} bs_block_count;

typedef struct {
    uint64_t count;        /* instructions in the blocks entered since the slice began */
    uint64_t base;         /* count before the current block */
    uint64_t deadline;     /* end the slice at the first block boundary where count >= deadline;
                              a stop request sets it to 0 */
    uint64_t block;        /* address of the current block */
    uint32_t block_size;   /* its size in bytes */
    uint32_t block_n;      /* its instructions */
    uint32_t stopped;      /* 1: the hook ended the slice (deadline or stop), 2: at a "b .", 3: at a barrier */
    uint32_t fault_pending;  /* an imprecise bus fault waits: a DSB/DMB ends the slice in front of itself */
    uint64_t barrier;      /* the address of that barrier */
    uint32_t watch;        /* nonzero: end the slice when PRIMASK/FAULTMASK/BASEPRI leave masks[] */
    uint32_t masks[3];
    int32_t mask_regs[3];  /* Unicorn register ids of PRIMASK, FAULTMASK, BASEPRI */
    uint32_t gen;          /* flash generation: bumped when flash changes, drops the cached counts */
    const uint8_t *flash;  /* the flash array, read to count a block's instructions */
    uint64_t flash_base, flash_size, alias_size;
    void *emu_stop, *mem_read, *reg_read;
    /* Unaligned LDM/STM/LDRD/STRD (emulator/core/engine.py, "Multi-word traps"). */
    const uint8_t *trapped;  /* one bit per half-word of flash, then of its alias: a multi-word
                                trap hook is in place at that address */
    uint64_t new_block;    /* stopped == 4: a flash block holding such an instruction without a trap */
    uint32_t new_block_size;
    uint32_t unaligned;    /* a multi-word trap saw an unaligned base: the run ends in front of */
    uint64_t unaligned_pc; /* the instruction at this address */
    int32_t gpr_regs[13];  /* Unicorn register ids of R0-R12 */
    bs_block_count counts[4096];  /* instruction counts of flash blocks, by address */
} bs_state;
"""

CDEF = STATE + """
uintptr_t bs_block_hook_address(void);
uintptr_t bs_barrier_hook_address(void);
uintptr_t bs_multiword_hook_address(void);
int bs_multiword_base(unsigned first);
unsigned bs_count_thumb(const uint8_t *code, uint32_t size);
void bs_set_api(void *reg_read, void *reg_write);
int64_t bs_reg_get(void *uc, int regid);
int bs_reg_set(void *uc, int regid, uint32_t value);
int bs_regs_get(void *uc, const int *ids, uint32_t *out, int n);
int bs_regs_set(void *uc, const int *ids, const uint32_t *values, int n);
void bs_set_mem_api(void *mem_read);
int bs_mem_read(void *uc, uint64_t address, uint8_t *out, uint32_t size);
int bs_mem_same(void *uc, uint64_t address, const uint8_t *saved, uint32_t size);
void bs_begin(bs_state *st, uint64_t budget, int watch, uint32_t primask, uint32_t faultmask,
              uint32_t basepri);
uintptr_t bs_mmio_read_address(void);
uintptr_t bs_mmio_write_address(void);
uintptr_t bs_intr_address(void);
"""

SOURCE = "#include <string.h>\n" + STATE + r"""
typedef int (*bs_stop_fn)(void *uc);
typedef int (*bs_read_fn)(void *uc, uint64_t address, void *bytes, uint64_t size);
typedef int (*bs_reg_fn)(void *uc, int regid, void *value);

/* Thumb-2: a half-word whose top five bits are 0b11101, 0b11110 or 0b11111 starts a
   32-bit instruction (ARMv7-M A5.1). */
unsigned bs_count_thumb(const uint8_t *code, uint32_t size)
{
    unsigned n = 0;
    uint32_t i = 0;
    while (i + 1 < size) {
        unsigned top = code[i + 1] >> 3;
        i += (top >= 0x1D) ? 4 : 2;
        n++;
    }
    return n;
}

/* Rn of an LDM/STM (T1, T2, LDMDB/STMDB) or LDRD/STRD (immediate) whose first half-word is
   `first`, or -1: also for SP and PC bases (SP is word aligned on the M3).  The same rules as
   emulator.core.insn_traps.multiword_base. */
int bs_multiword_base(unsigned first)
{
    unsigned rn;
    if ((first & 0xF000) == 0xC000)
        return (first >> 8) & 7;
    if ((first & 0xFFC0) != 0xE880 && (first & 0xFFC0) != 0xE900
            && !((first & 0xFE40) == 0xE840 && (first & 0x0120)))
        return -1;
    rn = first & 0xF;
    return (rn == 13 || rn == 15) ? -1 : (int)rn;
}

/* A block's instruction count; *untrapped set when it holds a multi-word instruction whose
   trap is not in place (trapped_index: the bit of its first half-word, or -1 outside flash). */
static unsigned bs_count_block(const bs_state *st, const uint8_t *code, uint32_t size,
                               int64_t trapped_index, int *untrapped)
{
    unsigned n = 0;
    uint32_t i = 0;
    while (i + 1 < size) {
        unsigned first = code[i] | (unsigned)code[i + 1] << 8;
        if (trapped_index >= 0 && (first & 0xF000) >= 0xC000 && bs_multiword_base(first) >= 0) {
            uint64_t k = (uint64_t)trapped_index + (i >> 1);
            if (!((st->trapped[k >> 3] >> (k & 7)) & 1))
                *untrapped = 1;
        }
        i += ((first >> 11) >= 0x1D) ? 4 : 2;
        n++;
    }
    return n;
}

static void bs_block_hook(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    bs_state *st = (bs_state *)user_data;
    uint64_t count = st->count;
    bs_block_count *cached;
    unsigned n;

    if (count >= st->deadline)
        goto stop;
    if (st->watch) {
        int k;
        for (k = 0; k < 3; k++) {
            uint32_t v = 0;
            ((bs_reg_fn)st->reg_read)(uc, st->mask_regs[k], &v);
            if (v != st->masks[k])
                goto stop;
        }
    }
    cached = &st->counts[(address >> 1) & 4095];
    if (cached->address == (uint32_t)address && cached->size == size && cached->gen == st->gen) {
        n = cached->n;
    } else {
        const uint8_t *code;
        uint8_t buf[4096];
        int in_flash = 1, untrapped = 0;
        int64_t trapped_index = -1;
        if (address >= st->flash_base && address + size <= st->flash_base + st->flash_size) {
            code = st->flash + (address - st->flash_base);
            trapped_index = (int64_t)((address - st->flash_base) >> 1);
        } else if (address + size <= st->alias_size) {
            code = st->flash + address;
            trapped_index = (int64_t)((st->flash_size + address) >> 1);
        } else {
            in_flash = 0;
            if (size > sizeof buf)
                size = sizeof buf;
            if (((bs_read_fn)st->mem_read)(uc, address, buf, size) != 0)
                size = 0;
            code = buf;
        }
        if (size == 2 && code[0] == 0xFE && code[1] == 0xE7) {  /* "b ." : the idle detector takes over */
            st->stopped = 2;
            ((bs_stop_fn)st->emu_stop)(uc);
            return;
        }
        n = bs_count_block(st, code, size, trapped_index, &untrapped);
        if (untrapped) {  /* the machine puts the traps in before the block runs */
            st->stopped = 4;
            st->new_block = address;
            st->new_block_size = size;
            ((bs_stop_fn)st->emu_stop)(uc);
            return;
        }
        if (in_flash) {  /* code elsewhere may change unseen: counted again each time */
            cached->address = (uint32_t)address;
            cached->size = (uint16_t)size;
            cached->n = (uint16_t)n;
            cached->gen = st->gen;
        }
    }
    st->base = count;
    st->count = count + n;
    st->block = address;
    st->block_size = size;
    st->block_n = n;
    return;
stop:
    st->stopped = 1;
    ((bs_stop_fn)st->emu_stop)(uc);
}

/* Engine.begin in one call: arm the hook for a slice of at least `budget` instructions. */
void bs_begin(bs_state *st, uint64_t budget, int watch, uint32_t primask, uint32_t faultmask,
              uint32_t basepri)
{
    st->count = st->base = 0;
    st->block = 0;
    st->block_size = st->block_n = 0;
    st->deadline = budget;
    st->stopped = st->unaligned = 0;
    st->watch = watch ? 1 : 0;
    if (watch) {
        st->masks[0] = primask;
        st->masks[1] = faultmask;
        st->masks[2] = basepri;
    }
}

uintptr_t bs_block_hook_address(void)
{
    return (uintptr_t)&bs_block_hook;
}

/* A code hook on each DSB/DMB: a barrier waits for the write buffer, so a bus error of an
   earlier store is taken in front of it.  emu_stop from a code hook stops before the hooked
   instruction, with the PC on it. */
static void bs_barrier_hook(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    bs_state *st = (bs_state *)user_data;
    if (st->fault_pending) {
        st->stopped = 3;
        st->barrier = address;
        ((bs_stop_fn)st->emu_stop)(uc);
    }
}

uintptr_t bs_barrier_hook_address(void)
{
    return (uintptr_t)&bs_barrier_hook;
}

/* A code hook on each LDM/STM/LDRD/STRD of flash code that has run: every address such an
   instruction accesses is Rn plus a multiple of 4, so an unaligned base always faults
   (ARMv7-M A3.2.1, MemA).  The instruction is decoded from flash at each call: a trap left at
   an address whose code changed does nothing.  The run ends in front of the instruction. */
static void bs_multiword_hook(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    bs_state *st = (bs_state *)user_data;
    const uint8_t *code;
    uint32_t value = 0;
    int rn;
    if (address >= st->flash_base && address + 2 <= st->flash_base + st->flash_size)
        code = st->flash + (address - st->flash_base);
    else if (address + 2 <= st->alias_size)
        code = st->flash + address;
    else
        return;
    rn = bs_multiword_base(code[0] | (unsigned)code[1] << 8);
    if (rn < 0)
        return;
    ((bs_reg_fn)st->reg_read)(uc, st->gpr_regs[rn], &value);
    if (value & 3) {
        st->unaligned = 1;
        st->unaligned_pc = address;
        st->deadline = 0;  /* inside an IT block Unicorn ignores the stop: then at the next block */
        ((bs_stop_fn)st->emu_stop)(uc);
    }
}

uintptr_t bs_multiword_hook_address(void)
{
    return (uintptr_t)&bs_multiword_hook;
}

/* Register access for Python at a tenth of the binding's cost (all the core's registers are
   32-bit).  The Unicorn functions are handed over once by bs_set_api. */
static bs_reg_fn bs_p_reg_read;
static int (*bs_p_reg_write)(void *uc, int regid, const void *value);

void bs_set_api(void *reg_read, void *reg_write)
{
    bs_p_reg_read = (bs_reg_fn)reg_read;
    bs_p_reg_write = (int (*)(void *, int, const void *))reg_write;
}

int64_t bs_reg_get(void *uc, int regid)  /* the value, or -(Unicorn error) */
{
    uint32_t v = 0;
    int err = bs_p_reg_read(uc, regid, &v);
    return err ? -(int64_t)err : (int64_t)v;
}

int bs_reg_set(void *uc, int regid, uint32_t value)
{
    return bs_p_reg_write(uc, regid, &value);
}

int bs_regs_set(void *uc, const int *ids, const uint32_t *values, int n)  /* in order */
{
    int i, err;
    for (i = 0; i < n; i++) {
        err = bs_p_reg_write(uc, ids[i], &values[i]);
        if (err)
            return err;
    }
    return 0;
}

int bs_regs_get(void *uc, const int *ids, uint32_t *out, int n)
{
    int i, err;
    for (i = 0; i < n; i++) {
        out[i] = 0;
        err = bs_p_reg_read(uc, ids[i], &out[i]);
        if (err)
            return err;
    }
    return 0;
}

/* Memory for Python without the binding's layers or a bytes object per call: a stack frame,
   and the loop detector's SRAM comparison (emulator/core/loops.py), handed over by
   bs_set_mem_api. */
static bs_read_fn bs_p_mem_read;

void bs_set_mem_api(void *mem_read)
{
    bs_p_mem_read = (bs_read_fn)mem_read;
}

int bs_mem_read(void *uc, uint64_t address, uint8_t *out, uint32_t size)
{
    return bs_p_mem_read(uc, address, out, size);
}

/* 1 when the memory at address holds saved[0:size], 0 when it differs, -(Unicorn error). */
int bs_mem_same(void *uc, uint64_t address, const uint8_t *saved, uint32_t size)
{
    uint8_t chunk[16384];
    while (size) {
        uint32_t n = size < sizeof chunk ? size : (uint32_t)sizeof chunk;
        int err = bs_p_mem_read(uc, address, chunk, n);
        if (err)
            return -err;
        if (memcmp(chunk, saved, n) != 0)
            return 0;
        address += n;
        saved += n;
        size -= n;
    }
    return 1;
}
"""

# Unicorn's MMIO and interrupt callbacks straight into Python (emulator/core/engine.py, mmio_map
# and hook_intr): user_data is the Python callable itself, kept alive by the caller.  The C API
# call costs a third of a ctypes callback (no converter objects, no argument tuple of ctypes
# values).  Unicorn runs with the GIL released (ctypes released it for uc_emu_start).
SOURCE += r"""
/* fn(args..., NULL) or NULL; the callables catch everything: a failure here is a bug, reported. */
#define BS_CALL(fn, ...) bs_checked((PyObject *)(fn), PyObject_CallFunctionObjArgs((PyObject *)(fn), __VA_ARGS__, NULL))

static PyObject *bs_checked(PyObject *fn, PyObject *r)
{
    if (r == NULL)
        PyErr_WriteUnraisable(fn);
    return r;
}

static uint64_t bs_mmio_read(void *uc, uint64_t offset, unsigned size, void *user_data)
{
    uint64_t value = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *zero = PyLong_FromLong(0), *o = PyLong_FromUnsignedLongLong(offset);
    PyObject *n = PyLong_FromUnsignedLong(size);
    PyObject *r = (zero && o && n) ? BS_CALL(user_data, zero, o, n, zero) : NULL;
    if (r != NULL) {
        value = PyLong_AsUnsignedLongLongMask(r);
        if (PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)user_data);
        Py_DECREF(r);
    }
    Py_XDECREF(n);
    Py_XDECREF(o);
    Py_XDECREF(zero);
    PyGILState_Release(gil);
    return value;
}

static void bs_mmio_write(void *uc, uint64_t offset, unsigned size, uint64_t value, void *user_data)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *zero = PyLong_FromLong(0), *o = PyLong_FromUnsignedLongLong(offset);
    PyObject *n = PyLong_FromUnsignedLong(size), *v = PyLong_FromUnsignedLongLong(value);
    PyObject *r = (zero && o && n && v) ? BS_CALL(user_data, zero, o, n, v, zero) : NULL;
    if (r != NULL)
        Py_DECREF(r);
    Py_XDECREF(v);
    Py_XDECREF(n);
    Py_XDECREF(o);
    Py_XDECREF(zero);
    PyGILState_Release(gil);
}

static void bs_intr(void *uc, uint32_t intno, void *user_data)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *zero = PyLong_FromLong(0), *i = PyLong_FromUnsignedLong(intno);
    PyObject *r = (zero && i) ? BS_CALL(user_data, zero, i, zero) : NULL;
    if (r != NULL)
        Py_DECREF(r);
    Py_XDECREF(i);
    Py_XDECREF(zero);
    PyGILState_Release(gil);
}

uintptr_t bs_mmio_read_address(void) { return (uintptr_t)&bs_mmio_read; }
uintptr_t bs_mmio_write_address(void) { return (uintptr_t)&bs_mmio_write; }
uintptr_t bs_intr_address(void) { return (uintptr_t)&bs_intr; }
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
# optional=True: a build failure skips the extension instead of failing `pip install`.
ffibuilder.set_source("emulator.core._cengine", SOURCE, optional=True)


if __name__ == "__main__":
    import os
    from pathlib import Path

    # Build next to the sources (a checkout that was not pip-installed).
    root = Path(__file__).resolve().parents[2]
    os.chdir(root)
    out = ffibuilder.compile(tmpdir=str(root / "build" / "cengine"), verbose=False)
    target = root / "emulator" / "core" / Path(out).name
    Path(out).replace(target)
    print(target)

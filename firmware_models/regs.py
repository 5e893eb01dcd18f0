"""A small declarative register framework for peripheral models.

A model declares its registers as a table of :class:`Register` entries whose
fields carry an :class:`Access` mode.  The framework applies the access rules
(read-only, write-1-to-clear, write-0-to-clear, toggle, write-only) so that a
model's own code only deals with the *effects* of a write, never with the
bit-twiddling that RM0008 specifies per field.

Bits of a register that are not covered by any field are reserved: they read
as their reset value and writes to them are ignored.  A register with no
fields at all is a plain read/write word (``Access.RW`` over ``width`` bits).

Sub-word accesses (byte or half-word stores to a 32-bit register) are merged
with a *neutral* value for the bytes not written: RW fields keep their current
value, W1C and TOGGLE fields see 0 and W0C fields see 1, so a partial write
never toggles or clears bits it did not touch.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from firmware_models.port import Port


class Access(enum.Enum):
    RW = "rw"  # read/write
    RO = "ro"  # read-only: writes ignored (the model sets the value)
    WO = "wo"  # write-only: reads return 0, the written value is kept for the model
    W1C = "w1c"  # write 1 to clear (rc_w1 in RM0008)
    W0C = "w0c"  # write 0 to clear, write 1 has no effect (rc_w0 in RM0008)
    TOGGLE = "t"  # write 1 toggles, write 0 has no effect


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int = 1
    access: Access = Access.RW

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    def get(self, value: int) -> int:
        return (value >> self.lsb) & ((1 << self.width) - 1)

    def put(self, value: int, field_value: int) -> int:
        return (value & ~self.mask) | ((field_value << self.lsb) & self.mask)


@dataclass(frozen=True)
class Register:
    """One register: name as in RM0008, byte offset, reset value, fields.

    ``on_read`` / ``on_write`` name methods of the owning model.  ``on_read``
    returns the value to present (it may compute it from time or state);
    ``on_write(old, new, raw)`` runs after the access rules were applied and
    the new value was stored (``raw`` is the value the CPU wrote, merged to
    full width).
    """

    name: str
    offset: int
    reset: int = 0
    fields: tuple[Field, ...] = ()
    width: int = 32
    access: Access = Access.RW  # only used when ``fields`` is empty
    on_read: str | None = None
    on_write: str | None = None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    @property
    def effective_fields(self) -> tuple[Field, ...]:
        if self.fields:
            return self.fields
        return (Field(self.name, 0, self.width, self.access),)


def _masks(reg: Register) -> dict[Access, int]:
    masks = dict.fromkeys(Access, 0)
    for f in reg.effective_fields:
        masks[f.access] |= f.mask
    return masks


@dataclass
class _Compiled:
    reg: Register
    masks: dict[Access, int]
    neutral_zero: int  # bits that must read as 0 in a neutral merge (W1C, TOGGLE)
    neutral_one: int  # bits that must read as 1 in a neutral merge (W0C)
    nbytes: int = field(init=False)
    wo: int = field(init=False)
    rw_wo: int = field(init=False)
    w1c: int = field(init=False)
    w0c: int = field(init=False)
    toggle: int = field(init=False)
    # Aligned writes (shift 0) by access size, each with its merge worked out once: see
    # Peripheral.write.  Kept here, with the static register table, not as model state.
    writers: dict[int, Callable[[Peripheral, int], None]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.nbytes = self.reg.width // 8
        # The masks as plain ints: reads and writes are the hot path of every MMIO access.
        m = self.masks
        self.wo = m[Access.WO]
        self.rw_wo = m[Access.RW] | m[Access.WO]
        self.w1c, self.w0c, self.toggle = m[Access.W1C], m[Access.W0C], m[Access.TOGGLE]


class BusError(Exception):
    """Raised by a model for an access the hardware answers with a bus error.

    The machine turns it into a BusFault on the CPU (imprecise for stores,
    precise for loads, as on a Cortex-M3 with its write buffer).
    """

    def __init__(self, address: int, reason: str) -> None:
        super().__init__(f"bus error at 0x{address:08X}: {reason}")
        self.address = address
        self.reason = reason


class Peripheral:
    """Base class of every memory-mapped model.

    Subclasses set ``NAME`` (used in logs and traces), ``SIZE`` (bytes of
    address space the bus routes to the model) and ``REGISTERS``.  They talk to
    the rest of the machine only through ``self.port`` (see
    :mod:`firmware_models.port`), never to the CPU.
    """

    NAME: ClassVar[str] = "PERIPH"
    SIZE: ClassVar[int] = 0x400
    REGISTERS: ClassVar[tuple[Register, ...]] = ()

    def __init__(self, port: Port, name: str | None = None) -> None:
        self.port = port
        self.name = name or self.NAME
        self._by_offset: dict[int, _Compiled] = {}
        self._by_name: dict[str, _Compiled] = {}
        for reg in self.REGISTERS:
            masks = _masks(reg)
            c = _Compiled(reg, masks, masks[Access.W1C] | masks[Access.TOGGLE], masks[Access.W0C])
            if reg.offset in self._by_offset:
                raise ValueError(f"{self.name}: two registers at offset 0x{reg.offset:X}")
            self._by_offset[reg.offset] = c
            self._by_name[reg.name] = c
        self._offsets = sorted(self._by_offset)
        self.values: dict[str, int] = {}
        self.reset()

    # -- state ---------------------------------------------------------------
    def reset(self) -> None:
        """Return every register to its RM0008 reset value.  Subclasses extend this."""
        self.values = {r.name: r.reset for r in self.REGISTERS}

    def power_on_reset(self) -> None:
        """Power-on reset.  Differs from :meth:`reset` (system reset) only for
        state in the backup domain or otherwise kept across a system reset."""
        self.reset()

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __setitem__(self, name: str, value: int) -> None:
        """Set a register's stored value from the model side (no access rules)."""
        c = self._by_name[name]
        self.values[name] = value & ((1 << c.reg.width) - 1)

    def field(self, reg: str, name: str) -> int:
        return self._by_name[reg].reg.field(name).get(self.values[reg])

    def set_field(self, reg: str, name: str, value: int) -> None:
        f = self._by_name[reg].reg.field(name)
        self.values[reg] = f.put(self.values[reg], value)

    def register(self, name: str) -> Register:
        return self._by_name[name].reg

    # -- bus side --------------------------------------------------------------
    def _locate(self, offset: int) -> tuple[_Compiled, int] | None:
        """Find the register containing byte ``offset``; return it and the byte shift."""
        c = self._by_offset.get(offset)
        if c is not None:
            return c, 0
        # Sub-word access into the middle of a register.
        for base in (offset & ~3, offset & ~1):
            c = self._by_offset.get(base)
            if c is not None and offset - base < c.nbytes:
                return c, offset - base
        return None

    def read(self, offset: int, size: int) -> int:
        loc = self._locate(offset)
        if loc is None:
            self.port.unmodelled(self.name, offset, "read", size, None)
            return 0
        c, shift = loc
        reg = c.reg
        value = getattr(self, reg.on_read)() if reg.on_read is not None else self.values[reg.name]
        value &= ~c.wo
        return (value >> (8 * shift)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        c = self._by_offset.get(offset)
        if c is not None:  # an aligned access, the common case: its writer is compiled once
            writer = c.writers.get(size)
            if writer is None:
                writer = c.writers[size] = _compile_writer(c, size)
            writer(self, value)
            return
        loc = self._locate(offset)
        if loc is None:
            self.port.unmodelled(self.name, offset, "write", size, value)
            return
        c, shift = loc
        reg = c.reg
        full = (1 << reg.width) - 1
        written_mask = (((1 << (8 * size)) - 1) << (8 * shift)) & full
        old = self.values[reg.name]
        neutral = (old & ~c.neutral_zero) | c.neutral_one
        raw = ((value << (8 * shift)) & written_mask) | (neutral & ~written_mask)
        rw_wo = c.rw_wo
        new = (old & ~rw_wo) | (raw & rw_wo)
        new &= ~(raw & c.w1c)  # W1C: ones clear
        new &= ~(~raw & c.w0c)  # W0C: zeros clear
        new ^= raw & c.toggle  # TOGGLE: ones flip
        self.values[reg.name] = new & full
        if reg.on_write is not None:
            getattr(self, reg.on_write)(old, new & full, raw)

    def readable_without_clock(self, offset: int) -> bool:
        """May the CPU read the register at ``offset`` while the peripheral's RCC clock
        enable bit is 0?  Not on the STM32F1 (the bus reads 0 then, see
        ``emulator.core.bus``), except where a model says otherwise and cites why."""
        return False

    def describe(self, offset: int) -> str:
        """Name of the register at ``offset`` for traces (``RCC.CR``)."""
        loc = self._locate(offset)
        if loc is None:
            return f"{self.name}+0x{offset:03X}"
        return f"{self.name}.{loc[0].reg.name}"

    def decode(self, reg: str, value: int) -> str:
        """``PER=1 STRT=1``: the non-zero fields of ``value``, for traces."""
        r = self._by_name[reg].reg
        parts = [f"{f.name}={f.get(value):#x}" if f.width > 1 else f"{f.name}=1"
                 for f in r.fields if f.get(value)]
        return " ".join(parts) if r.fields else f"0x{value:08X}"


def _compile_writer(c: _Compiled, size: int) -> Callable[[Peripheral, int], None]:
    """``Peripheral.write`` of a ``size``-byte store at the start of register ``c``, the
    same arithmetic with the masks bound once (the hot path of every register write)."""
    reg = c.reg
    name, full = reg.name, (1 << reg.width) - 1
    written_mask = ((1 << (8 * size)) - 1) & full
    keep, nz, no = ~written_mask, ~c.neutral_zero, c.neutral_one
    rw_wo, w1c, w0c, toggle = c.rw_wo, c.w1c, c.w0c, c.toggle
    on_write = reg.on_write

    def write(model: Peripheral, value: int) -> None:
        values = model.values
        old = values[name]
        raw = (value & written_mask) | (((old & nz) | no) & keep)
        new = (old & ~rw_wo) | (raw & rw_wo)
        new &= ~(raw & w1c)  # W1C: ones clear
        new &= ~(~raw & w0c)  # W0C: zeros clear
        new ^= raw & toggle  # TOGGLE: ones flip
        new &= full
        values[name] = new
        if on_write is not None:
            getattr(model, on_write)(old, new, raw)
    return write


def bits(*names_and_positions: tuple[str, int], access: Access = Access.RW) -> tuple[Field, ...]:
    """Shorthand for a run of single-bit fields: ``bits(("HSION", 0), ("HSIRDY", 1))``."""
    return tuple(Field(n, p, 1, access) for n, p in names_and_positions)


def fields(*specs: Iterable) -> tuple[Field, ...]:
    """Shorthand: ``fields(("PLLMUL", 18, 4), ("SW", 0, 2), ("SWS", 2, 2, Access.RO))``."""
    out = []
    for spec in specs:
        spec = tuple(spec)
        name, lsb = spec[0], spec[1]
        width = spec[2] if len(spec) > 2 else 1
        access = spec[3] if len(spec) > 3 else Access.RW
        out.append(Field(name, lsb, width, access))
    return tuple(out)


RegisterCallback = Callable[[int, int, int], None]

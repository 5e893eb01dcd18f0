"""General-purpose I/O port (GPIOA..GPIOE) of the STM32F103, RM0008 §9.

Each pin's configuration is the 4-bit MODE/CNF nibble in CRL (pins 0–7) or CRH
(pins 8–15), RM0008 §9.2.1–9.2.2 and Table 20:

- MODE=00 input: CNF 00 analog (IDR reads 0, the Schmitt trigger is off, §9.1.12),
  01 floating, 10 pull-up/pull-down (ODR selects: 1 = up, 0 = down, §9.1.1), 11 reserved;
- MODE≠00 output: CNF 00 push-pull, 01 open-drain, 10 alternate-function push-pull,
  11 alternate-function open-drain.  The input stage stays on, so IDR reads the pin.

The outside world sets what it drives with :meth:`GPIO.drive` (``None`` =
released).  A floating input nobody drives reads 0.  Options: ``name`` (``GPIOA``...),
``labels`` ({pin: "BOOT1"}: the first IDR read after each reset of a labelled
pin is recorded as a ``gpio_read`` event), ``max_events`` (output changes
recorded as ``gpio`` events per port before only counting them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_models.regs import Access, Field, Peripheral, Register

if TYPE_CHECKING:
    from firmware_models.port import Port

PORT_NAMES = ("GPIOA", "GPIOB", "GPIOC", "GPIOD", "GPIOE")
GPIO_BASE = 0x4001_0800
GPIO_STRIDE = 0x400


def gpio_base(name: str) -> int:
    """Bus address of port ``name`` (RM0008 §3.3, Table 3)."""
    return GPIO_BASE + GPIO_STRIDE * PORT_NAMES.index(name)


def _cr_fields(first_pin: int) -> tuple[Field, ...]:
    out: list[Field] = []
    for i in range(8):
        out.append(Field(f"MODE{first_pin + i}", 4 * i, 2))
        out.append(Field(f"CNF{first_pin + i}", 4 * i + 2, 2))
    return tuple(out)


class GPIO(Peripheral):
    NAME = "GPIO"
    SIZE = 0x400

    REGISTERS = (
        Register("CRL", 0x00, 0x4444_4444, _cr_fields(0), on_write="_crl_written"),
        Register("CRH", 0x04, 0x4444_4444, _cr_fields(8), on_write="_crh_written"),
        Register("IDR", 0x08, 0, (Field("IDR", 0, 16, Access.RO),), on_read="_idr_read"),
        Register("ODR", 0x0C, 0, (Field("ODR", 0, 16),), on_write="_outputs_written"),
        # §9.2.5: BSy sets, BRy resets, and "if both BSx and BRx are set, BSx has priority".
        Register("BSRR", 0x10, 0, (Field("BS", 0, 16, Access.WO), Field("BR", 16, 16, Access.WO)),
                 on_write="_bsrr_written"),
        Register("BRR", 0x14, 0, (Field("BR", 0, 16, Access.WO),), on_write="_brr_written"),
        Register("LCKR", 0x18, 0, (Field("LCK", 0, 16), Field("LCKK", 16)),
                 on_read="_lckr_read", on_write="_lckr_written"),
    )

    def __init__(
        self,
        port: Port,
        *,
        name: str = "GPIOA",
        labels: dict[int, str] | None = None,
        max_events: int = 32,
    ) -> None:
        self.labels = dict(labels or {})
        self.max_events = max_events
        self._external: list[bool | None] = [None] * 16
        self._ext_set = self._ext_bits = 0  # _external as bit masks: driven from outside, and high
        self._af_levels: list[bool] = [False] * 16
        self._af_bits = 0  # _af_levels as a bit mask
        self.output_changes = 0
        self._levels: tuple[bool | None, ...] = (None,) * 16
        self._locked = False
        self._lock_step = 0
        self._lock_value = 0
        self._labels_read: set[int] = set()
        self._last_cr = "CRL"
        # CRH:CRL as of the last refresh, one nibble a pin: a single int (a loop verify
        # compares the model's attributes on every SysTick tick; 16 pairs cost it ~0.6 us).
        self._cfg_word = 0x4444444444444444  # every pin floating input (MODE 0, CNF 1)
        super().__init__(port, name)

    def reset(self) -> None:
        super().reset()
        self._refresh_cfg()
        self._locked = False
        self._lock_step = 0
        self._labels_read = set()
        self._levels = self._driven_levels()
        self._levels_bits = self._driven_bits()

    # -- pin configuration ------------------------------------------------------------------
    def _nibble(self, pin: int) -> tuple[int, int]:
        nibble = self._cfg_word >> (4 * pin)  # (MODE, CNF), refreshed on every CRL/CRH change
        return nibble & 3, (nibble >> 2) & 3

    def _refresh_cfg(self) -> None:
        word = self._cfg_word = self.values["CRH"] << 32 | self.values["CRL"]
        # The same as bit masks, for the quick "did any driven level change?" test.
        out = af = od = analog = pull = 0
        for p in range(16):
            mode, cnf = (word >> (4 * p)) & 3, (word >> (4 * p + 2)) & 3
            if mode:
                out |= 1 << p
                af |= (cnf >> 1) << p
                od |= (cnf & 1) << p
            elif cnf == 0:
                analog |= 1 << p
            elif cnf == 2:
                pull |= 1 << p
        self._out_mask, self._af_mask, self._od_mask = out, af, od
        self._analog_mask, self._pull_mask = analog, pull

    def is_output(self, pin: int) -> bool:
        """Is ``pin`` configured as an output (general purpose or alternate function)?"""
        return self._nibble(pin)[0] != 0

    def mode_name(self, pin: int) -> str:
        mode, cnf = self._nibble(pin)
        if mode == 0:
            return ("analog", "floating", "pull-up" if self.values["ODR"] >> pin & 1 else "pull-down",
                    "reserved")[cnf]
        return ("push-pull", "open-drain", "af-push-pull", "af-open-drain")[cnf]

    # -- the outside world ---------------------------------------------------------------------
    def drive(self, pin: int, level: bool | None) -> None:
        """The board drives ``pin`` high/low, or releases it (``None``)."""
        self._external[pin] = None if level is None else bool(level)
        self._ext_set = (self._ext_set & ~(1 << pin)) | ((level is not None) << pin)
        self._ext_bits = (self._ext_bits & ~(1 << pin)) | (bool(level) << pin)

    def set_af_output(self, pin: int, level: bool) -> None:
        """The on-chip peripheral behind an alternate-function output drives ``level``.

        Until a peripheral model routes its output here, AF outputs drive low.
        """
        self._af_levels[pin] = bool(level)
        self._af_bits = (self._af_bits & ~(1 << pin)) | (bool(level) << pin)
        self._note_output_changes()

    def output_level(self, pin: int) -> bool | None:
        """The level the chip drives on ``pin``; ``None`` when it does not drive it
        (input, or open-drain output releasing the line)."""
        mode, cnf = self._nibble(pin)
        if mode == 0:
            return None
        level = self._af_levels[pin] if cnf & 2 else bool(self.values["ODR"] >> pin & 1)
        if cnf & 1 and level:
            return None  # open-drain "1" releases the line
        return level

    def pin_level(self, pin: int) -> bool:
        """The level the input stage sees (what IDR reports for ``pin``)."""
        mode, cnf = self._nibble(pin)
        ext = self._external[pin]
        if mode == 0:
            if cnf == 0:
                return False  # analog: Schmitt trigger off, IDR reads 0 (§9.1.12)
            if cnf == 2 and ext is None:
                return bool(self.values["ODR"] >> pin & 1)  # weak pull-up / pull-down
            return bool(ext)
        driven = self.output_level(pin)
        if driven is not None:
            return driven
        return bool(ext)  # open-drain released: whatever the board does (no pull in output mode)

    def _driven_levels(self) -> tuple[bool | None, ...]:
        return tuple(self.output_level(p) for p in range(16))

    def _driven_bits(self) -> tuple[int, int]:
        """The pins the chip drives and their levels, as bit masks (``_driven_levels`` in short)."""
        out, af = self._out_mask, self._af_mask
        level = (self.values["ODR"] & ~af | self._af_bits & af) & out
        driven = out & ~(self._od_mask & level)
        return driven, level & driven

    def _note_output_changes(self) -> None:
        bits = self._driven_bits()
        if bits == self._levels_bits:
            return
        self._levels_bits = bits
        levels = self._driven_levels()
        if levels == self._levels:
            return
        for pin, (before, after) in enumerate(zip(self._levels, levels, strict=True)):
            if before != after:
                self.output_changes += 1
                # Keep a blinking LED from flooding the event log: record the first
                # ``max_events`` changes, then count only.
                if self.output_changes <= self.max_events:
                    self.port.event("gpio", port=self.name, pin=pin, level=after)
        self._levels = levels

    # -- register side effects ---------------------------------------------------------------------
    def _idr_read(self) -> int:
        # pin_level() of the 16 pins, as bit masks: driven outputs read their level; other
        # pins (inputs not analog, released open-drain) what the board drives; pull-up/down
        # inputs the board leaves alone their ODR bit; analog inputs 0 (RM0008 §9.1).
        driven, level = self._driven_bits()
        value = (level | self._ext_bits & ~driven & ~self._analog_mask
                 | self.values["ODR"] & self._pull_mask & ~self._ext_set)
        for pin, label in self.labels.items():
            if pin not in self._labels_read:
                self._labels_read.add(pin)
                self.port.event("gpio_read", port=self.name, pin=pin, label=label, level=bool(value >> pin & 1))
        return value

    def _cr_written(self, old: int, new: int, raw: int) -> None:
        reg = self._last_cr
        if self._locked:
            first = 0 if reg == "CRL" else 8
            locked = self.values["LCKR"] & 0xFFFF
            mask = 0
            for i in range(8):
                if locked >> (first + i) & 1:
                    mask |= 0xF << (4 * i)
            if (new ^ old) & mask:
                self.port.guest_error(self.name, f"{reg} write to pins locked by LCKR: those pins unchanged")
            self.values[reg] = (new & ~mask) | (old & mask)
        self._refresh_cfg()
        for pin in range(0 if reg == "CRL" else 8, 8 if reg == "CRL" else 16):
            mode, cnf = self._nibble(pin)
            if mode == 0 and cnf == 3:
                self.port.guest_error(self.name, f"pin {pin}: input CNF=11 is reserved")
        self._note_output_changes()

    # The framework's on_write does not say which register it serves: one entry point each
    # for CRL and CRH (no write() override, so the machine's compiled MMIO writer applies).
    def _crl_written(self, old: int, new: int, raw: int) -> None:
        self._last_cr = "CRL"
        self._cr_written(old, new, raw)

    def _crh_written(self, old: int, new: int, raw: int) -> None:
        self._last_cr = "CRH"
        self._cr_written(old, new, raw)

    def _outputs_written(self, old: int, new: int, raw: int) -> None:
        self._note_output_changes()

    def _bsrr_written(self, old: int, new: int, raw: int) -> None:
        set_bits = raw & 0xFFFF
        reset_bits = (raw >> 16) & ~set_bits
        self.values["ODR"] = (self.values["ODR"] & ~reset_bits) | set_bits
        self.values["BSRR"] = 0  # write-only: nothing is kept for a later partial write
        self._note_output_changes()

    def _brr_written(self, old: int, new: int, raw: int) -> None:
        self.values["ODR"] &= ~(raw & 0xFFFF)
        self.values["BRR"] = 0
        self._note_output_changes()

    # §9.2.7 lock key sequence: write LCKK=1, write LCKK=0, write LCKK=1 (LCK[15:0] unchanged
    # throughout), read 0, read 1.  The first read completes the sequence and returns LCKK=0;
    # from then on LCKK reads 1 and the port configuration of the LCK pins is frozen until reset.
    # Any other write aborts the sequence.
    def _lckr_written(self, old: int, new: int, raw: int) -> None:
        if self._locked:
            self.values["LCKR"] = old
            if raw != old:
                self.port.guest_error(self.name, "LCKR written after the lock was activated: ignored")
            return
        lckk, lck = raw >> 16 & 1, raw & 0xFFFF
        step = self._lock_step
        if step in (0, 3) or lck != self._lock_value:
            step = 1 if lckk else 0
        elif step == 1:
            step = 2 if not lckk else 1
        elif step == 2:
            step = 3 if lckk else 0
        self._lock_step = step
        self._lock_value = lck
        # LCKK itself is only ever set by a completed sequence.
        self.values["LCKR"] = lck

    def _lckr_read(self) -> int:
        if self._lock_step == 3 and not self._locked:
            self._locked = True
            self._lock_step = 0
            self.values["LCKR"] = self._lock_value | (1 << 16)
            self.port.event("gpio_lock", port=self.name, pins=self._lock_value)
            return self._lock_value  # "read 0"
        return self.values["LCKR"]

    @property
    def locked(self) -> bool:
        return self._locked

"""STM32F103 flash memory interface (FPEC): RM0008 §3.3 and §3.4, PM0075.

PM0075 (the STM32F10xxx flash programming manual) is the authority for
program/erase behaviour; RM0008 gives the register map.  The model owns the
main flash array (``storage``, which the machine maps into the CPU as it is and
is told of each change through ``on_change``) and the 16 option bytes at 0x1FFF_F800.

What the manuals say, and what the model does
---------------------------------------------
* Unlock (RM0008 §3.3.3, PM0075 §2.3.1): KEYR 0x4567_0123 then 0xCDEF_89AB
  clears CR.LOCK.  Any wrong value, at either step, locks the FPEC and CR
  until the next reset and answers with a bus error (the model raises
  :class:`BusError` and keeps raising for every later KEYR write).  Writing
  the correct pair again while already unlocked is accepted: ST's StdPeriph
  ``FLASH_Unlock`` writes the keys without looking at LOCK (an assumption;
  the manuals only speak of wrong sequences).  CR is write-protected while
  LOCK=1: writes are ignored; CR.LOCK written 1 relocks.
* OPTKEYR with the same keys sets CR.OPTWRE (PM0075 §2.4.3), only while the
  FPEC is unlocked.  A wrong OPTKEYR value is not documented to lock anything:
  the model restarts the option key sequence and reports a guest error.
* Programming (PM0075 §2.3.3): only half-word stores with CR.PG set program;
  "any attempt to write data that are not half-word long will result in a bus
  error response from the FPEC" -> :class:`BusError` for byte and word stores
  (and for a half-word at an odd address, which the Cortex-M3 splits into
  byte accesses).  The manuals document no error for a store with PG clear;
  on STM32 parts such a store is silently dropped, so the model drops it, logs
  a guest error and journals it (a firmware bug, not a fault).  The FPEC
  first reads the target: if it is not 0xFFFF the program is skipped and
  SR.PGERR set, "the only exception to this is when 0x0000 is programmed.
  In this case, the location is correctly programmed to 0x0000 and the
  PGERR bit is not set" (PM0075 §2.3.3).  A write-protected page sets
  SR.WRPRTERR and changes nothing.  Rejected programs never set BSY or EOP.
* Erase (PM0075 §2.3.4/2.3.5): PER + AR + STRT erases the page holding AR
  (any address in the page); MER + STRT erases all main flash.  A page erase
  of a write-protected page, or a mass erase while any page is protected by
  WRP, sets WRPRTERR and erases nothing (the manuals do not say whether a
  mass erase skips protected pages; refusing is the conservative reading).
  The pages that read protection write-protects automatically do *not* block
  a mass erase (PM0075 §2.4.1: "but not against mass erase").
* AR outside main flash: neither manual says what happens.  The model keeps
  the operation's shape (BSY for a page-erase time, then EOP, so firmware
  timing stays realistic — docs/SEED_BOOTLOADER.md defect 2c), changes nothing, journals an
  ``out_of_range_erase`` and reports a guest error.
* Option bytes (PM0075 §2.5): eight bytes, each followed by its complement,
  at 0x1FFF_F800: RDP, USER, Data0, Data1, WRP0..WRP3.  OPTER + STRT erases
  all 16 bytes to 0xFF; OPTPG + half-word store programs one byte: the FPEC
  uses the low byte and writes its complement in the high byte itself (ST's
  library writes ``OB->RDP = 0x00A5``).  Both need CR.OPTWRE.  A target
  half-word that is not erased sets PGERR.  Programming RDP = 0xA5 while read
  protection is active first forces a mass erase of main flash (PM0075 §2.4.1,
  "Unprotection").  New option values take effect after a system reset: OBR
  and WRPR are loaded at reset; an option byte whose complement does not
  match sets OBR.OPTERR and is taken as 0xFF (a byte and complement both
  0xFF, the erased state, is taken as 0xFF without OPTERR).
* RDP: read protection is active unless RDP = 0xA5 with complement 0x5A.
  Then the host's upload and a debugger are refused
  (:meth:`FlashInterface.external_read_allowed`) and pages 0-3 (1 KiB pages)
  or 0-1 (2 KiB pages), the first 4 KiB, are write-protected (PM0075 §2.4.1).
* WRP (PM0075 §2.4.2): WRPR bit n = 0 protects a page group: 4 pages per bit
  with 1 KiB pages (low/medium density), 2 pages per bit with 2 KiB pages
  (high density) where bit 31 (WRP3 bit 7) protects page 62 to the end.
* SR.BSY is set from the start of an operation until its scheduled
  completion; the data changes only at completion; then BSY and CR.STRT fall
  and EOP rises.  ``port.stall_until(completion)`` is called at the start, so
  the machine stalls code fetched from flash.  A store into flash, or a write
  to an FPEC register, made while BSY is set is held (the AHB access stalls,
  PM0075 §2.3.3) and performed right after completion, in order.  Register
  *reads* are answered at once, so BSY can be polled from SRAM.
* Interrupt (RM0008 §3.4): FLASH IRQ 4 is driven high while
  (EOP and EOPIE) or ((PGERR or WRPRTERR) and ERRIE).

Power cuts and resets during an operation
-----------------------------------------
:meth:`FlashInterface.power_cut` stops an operation in flight at fraction
``f`` = elapsed / duration of its busy time, deterministically:

* half-word program: of the bits the program would clear (old & ~new),
  the lowest ``floor(f * n)`` are cleared (bit 0 first), the rest keep their
  old value;
* page, mass and option-byte erase: the first ``floor(f * length)`` bytes of
  the range, rounded down to a half-word, read 0xFF; the rest is unchanged;
* RDP unprotection (mass erase then program): the mass erase portion is cut
  as above; a cut in the program portion leaves the erase complete.

A system reset (:meth:`reset`) in the middle of an operation interrupts it
the same way (the FPEC is reset with the rest of the chip — an assumption;
the manuals do not say).  Both keep flash and option bytes, which are
non-volatile; the next run starts from exactly that content.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware_models import flash_journal as fj
from firmware_models.regs import Access, BusError, Field, Peripheral, Register, bits

if TYPE_CHECKING:
    from firmware_models.port import Port, Timer

FLASH_BASE = 0x0800_0000
FPEC_BASE = 0x4002_2000
OPTION_BYTES_BASE = 0x1FFF_F800
OPTION_BYTES_SIZE = 16
FLASH_IRQ = 4
KEY1 = 0x4567_0123
KEY2 = 0xCDEF_89AB
RDP_UNPROTECT = 0xA5  # RDP value (complement 0x5A) that disables read protection
RDP_PROTECTED_BYTES = 4096  # first 4 KiB write-protected while RDP is active (PM0075 §2.4.1)

# As shipped by ST: no read protection, every option at its default, no WRP.
FACTORY_OPTION_BYTES = bytes([RDP_UNPROTECT, 0x5A] + [0xFF, 0x00] * 7)

# Bits the hot paths (one CR write, store and completion per half-word programmed) test
# directly; the same fields as the register table below.
_CR_PG, _CR_STRT, _CR_LOCK, _CR_OPTPG, _CR_OPTWRE = 1 << 0, 1 << 6, 1 << 7, 1 << 4, 1 << 9
_SR_BSY, _SR_EOP = 1 << 0, 1 << 5
_OBR_RDPRT = 1 << 1

# Option byte offsets (each a half-word: value, then complement).
OB_RDP, OB_USER, OB_DATA0, OB_DATA1, OB_WRP0, OB_WRP1, OB_WRP2, OB_WRP3 = range(0, 16, 2)


@dataclass(frozen=True)
class FlashTimings:
    """Busy times in emulated nanoseconds (datasheet tPROG, tERASE, tME)."""

    program_halfword_ns: int
    page_erase_ns: int
    mass_erase_ns: int

    @property
    def option_erase_ns(self) -> int:
        # The option bytes sit in one page of the information block: erased like a page.
        return self.page_erase_ns


# STM32F103x8/xB and xC/xD/xE datasheets, "Flash memory characteristics":
# tPROG 40/52.5/70 us, tERASE 20/-/40 ms, tME 20/-/40 ms.
TYPICAL_TIMINGS = FlashTimings(program_halfword_ns=52_500, page_erase_ns=20_000_000, mass_erase_ns=20_000_000)
WORST_CASE_TIMINGS = FlashTimings(program_halfword_ns=70_000, page_erase_ns=40_000_000, mass_erase_ns=40_000_000)
TIMINGS: dict[str, FlashTimings] = {"typical": TYPICAL_TIMINGS, "worst": WORST_CASE_TIMINGS}


def option_halfword(value: int) -> int:
    """The half-word the FPEC writes for option byte ``value``: value | ~value << 8."""
    value &= 0xFF
    return value | ((~value & 0xFF) << 8)


@dataclass
class _Operation:
    kind: str  # journal kind
    start_ns: int
    due_ns: int
    pc: int
    timer: Timer | None
    area: str  # "main" or "option"
    offset: int  # first byte touched, relative to the area
    length: int
    old: bytes  # contents of [offset, offset+length) at start
    new: bytes  # contents at completion
    journal_address: int | None
    erase_ns: int = 0  # RDP unprotection: the leading mass-erase part of the busy time
    detail: dict[str, Any] | None = None


FlashOperation = _Operation  # the public name for listeners


class FlashInterface(Peripheral):
    NAME = "FLASH"
    SIZE = 0x400
    REGISTERS = (
        Register("ACR", 0x00, reset=0x0000_0030, on_write="_acr_written", fields=(
            Field("LATENCY", 0, 3),
            Field("HLFCYA", 3),
            Field("PRFTBE", 4),
            Field("PRFTBS", 5, 1, Access.RO),
        )),
        Register("KEYR", 0x04, access=Access.WO, on_write="_keyr_written"),
        Register("OPTKEYR", 0x08, access=Access.WO, on_write="_optkeyr_written"),
        Register("SR", 0x0C, on_write="_update_irq", fields=(
            Field("BSY", 0, 1, Access.RO),
            Field("PGERR", 2, 1, Access.W1C),
            Field("WRPRTERR", 4, 1, Access.W1C),
            Field("EOP", 5, 1, Access.W1C),
        )),
        Register("CR", 0x10, reset=0x0000_0080, on_write="_cr_written", fields=(
            *bits(("PG", 0), ("PER", 1), ("MER", 2), ("OPTPG", 4), ("OPTER", 5), ("STRT", 6), ("LOCK", 7)),
            Field("OPTWRE", 9, 1, Access.W0C),  # set only by the OPTKEYR sequence, software may clear it
            *bits(("ERRIE", 10), ("EOPIE", 12)),
        )),
        # RM0008 marks FAR write-only; reads return 0.
        Register("AR", 0x14, access=Access.WO),
        Register("OBR", 0x1C, reset=0x03FF_FFFC, fields=(
            Field("OPTERR", 0, 1, Access.RO),
            Field("RDPRT", 1, 1, Access.RO),
            Field("WDG_SW", 2, 1, Access.RO),
            Field("nRST_STOP", 3, 1, Access.RO),
            Field("nRST_STDBY", 4, 1, Access.RO),
            Field("USER_UNUSED", 5, 5, Access.RO),
            Field("DATA0", 10, 8, Access.RO),
            Field("DATA1", 18, 8, Access.RO),
        )),
        Register("WRPR", 0x20, reset=0xFFFF_FFFF, access=Access.RO),
    )

    def __init__(
        self,
        port: Port,
        *,
        flash_base: int = FLASH_BASE,
        flash_size: int,
        page_size: int,
        storage: memoryview | bytearray | None = None,
        timings: FlashTimings = TYPICAL_TIMINGS,
        on_change: Callable[[int, int], None] | None = None,
        on_option_change: Callable[[], None] | None = None,
        option_bytes: bytes = FACTORY_OPTION_BYTES,
        name: str | None = None,
    ) -> None:
        if flash_size % page_size:
            raise ValueError("flash_size must be a whole number of pages")
        if storage is None:
            storage = bytearray(b"\xff" * flash_size)
        if len(storage) != flash_size:
            raise ValueError(f"storage holds {len(storage)} bytes, flash_size is {flash_size}")
        self.flash_base = flash_base
        self.flash_size = flash_size
        self.page_size = page_size
        self.storage = storage
        self.timings = timings
        self.on_change = on_change
        self.on_option_change = on_option_change
        self._options = bytearray(self._check_option_bytes(option_bytes))
        self.journal = fj.FlashJournal(flash_base, flash_size, page_size)
        self._op: _Operation | None = None
        # Called with ("start", op) when an operation begins and ("complete", op) when it
        # ends, for tools that watch the FPEC from outside (the power-cut sweep).
        self.operation_listeners: list[Callable[[str, FlashOperation], None]] = []
        self._deferred: deque[tuple[str, int, int, int]] = deque()
        self._locked_out = False
        self._key_step = 0
        self._optkey_step = 0
        self._irq_level = False
        super().__init__(port, name)

    # -- geometry -----------------------------------------------------------------
    @property
    def num_pages(self) -> int:
        return self.flash_size // self.page_size

    @property
    def flash_end(self) -> int:
        return self.flash_base + self.flash_size

    def page_index(self, address: int) -> int | None:
        """Page holding absolute ``address``, or None outside main flash."""
        if not self.flash_base <= address < self.flash_end:
            return None
        return (address - self.flash_base) // self.page_size

    def wrp_bit(self, page: int) -> int:
        """WRPR bit guarding ``page`` (PM0075 §2.4.2; ST's OB_WRP_PAGESxTOy)."""
        if self.page_size >= 2048:  # high density: 2 pages per bit, bit 31 = page 62 to the end
            return min(page // 2, 31)
        return min(page // 4, 31)  # low/medium density: 4 pages per bit

    def page_write_protected(self, page: int) -> bool:
        """True if program/page erase of ``page`` is refused (loaded WRPR, or RDP's first 4 KiB)."""
        values = self.values
        if not (values["WRPR"] >> self.wrp_bit(page)) & 1:
            return True
        return bool(values["OBR"] & _OBR_RDPRT) and page * self.page_size < RDP_PROTECTED_BYTES

    # -- option bytes ---------------------------------------------------------------
    @staticmethod
    def _check_option_bytes(data: bytes | bytearray) -> bytes:
        if len(data) != OPTION_BYTES_SIZE:
            raise ValueError(f"option bytes are {OPTION_BYTES_SIZE} bytes, got {len(data)}")
        return bytes(data)

    def read_option_bytes(self) -> bytes:
        """The 16 bytes at 0x1FFF_F800 as the CPU reads them (stored values, not OBR)."""
        return bytes(self._options)

    @property
    def option_bytes(self) -> bytes:
        return bytes(self._options)

    @option_bytes.setter
    def option_bytes(self, data: bytes) -> None:
        """Restore option bytes (persistence).  Like a programmed change, they take
        effect in OBR/WRPR at the next reset."""
        self._options[:] = self._check_option_bytes(data)
        if self.on_option_change is not None:
            self.on_option_change()

    def _loaded_option(self, index: int) -> tuple[int, bool]:
        """Option byte ``index`` (0..7) as the loader sees it: (value, mismatch)."""
        value, complement = self._options[2 * index], self._options[2 * index + 1]
        if value == 0xFF and complement == 0xFF:
            return 0xFF, False  # erased
        if value ^ complement != 0xFF:
            return 0xFF, True
        return value, False

    def _load_option_bytes(self) -> None:
        """The option byte loader run at every system reset (RM0008 §3.4.8, PM0075 §2.5)."""
        loaded = [self._loaded_option(i) for i in range(8)]
        opterr = any(m for _, m in loaded)
        rdp_val, rdp_bad = loaded[0]
        rdp_active = rdp_bad or rdp_val != RDP_UNPROTECT
        user, data0, data1 = loaded[1][0], loaded[2][0], loaded[3][0]
        obr = int(opterr) | (int(rdp_active) << 1) | ((user & 0xFF) << 2) | (data0 << 10) | (data1 << 18)
        self["OBR"] = obr
        self["WRPR"] = loaded[4][0] | (loaded[5][0] << 8) | (loaded[6][0] << 16) | (loaded[7][0] << 24)

    def external_read_allowed(self) -> bool:
        """False while read protection is active: the host's upload (system
        bootloader / debugger path) must be refused (PM0075 §2.4.1)."""
        return not self.field("OBR", "RDPRT")

    # -- reset ----------------------------------------------------------------------
    def reset(self) -> None:
        """System reset: relock, forget a wrong-key lockout, reload OBR/WRPR.
        Flash and option bytes are non-volatile and stay."""
        if getattr(self, "_op", None) is not None:
            self._interrupt("reset")
        super().reset()
        self._deferred.clear()
        self._locked_out = False
        self._key_step = 0
        self._optkey_step = 0
        self._load_option_bytes()
        self._update_irq()

    def power_cut(self) -> None:
        """Supply lost: an operation in flight stops where it is (see the module
        docstring), then the FPEC comes back in its power-on state."""
        if self._op is not None:
            self._interrupt(fj.POWER_CUT)
        else:
            self.journal.add(fj.POWER_CUT, self.port.now_ns(), self.port.pc(), operation=None)
        self.power_on_reset()

    def power_cut_preview(self) -> tuple[bytes, bytes, int | None] | None:
        """What :meth:`power_cut` would leave if the supply went now, changing nothing:
        (main flash, option bytes, bytes of the operation in flight written, None when
        none is in flight).  None when an RDP-unprotection mass erase is in flight: its
        partial erase is only worked out by cutting.  The power-cut sweep uses it to
        know a cut's flash without cutting."""
        main, options = self.storage, self._options
        op = self._op
        if op is None:
            return bytes(main), bytes(options), None
        if op.erase_ns:
            return None
        total = op.due_ns - op.start_ns
        elapsed = min(max(self.port.now_ns() - op.start_ns, 0), total)
        partial, changed = _cut_effect(op, 1.0 if total == 0 else elapsed / total)
        if changed and op.area != "none":
            area = bytearray(options if op.area == "option" else main)
            area[op.offset:op.offset + changed] = partial[:changed]
            if op.area == "option":
                return bytes(main), bytes(area), changed
            return bytes(area), bytes(options), changed
        return bytes(main), bytes(options), changed

    # -- bus side ---------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._op is not None

    def write(self, offset: int, size: int, value: int) -> None:
        if self._op is not None:
            # PM0075 §2.3.3: an access during BSY stalls until the operation ends.
            self._deferred.append(("reg", offset, size, value))
            self.port.stall_until(self._op.due_ns)
            return
        # _register_write, one call less: two CR writes and one SR write per half-word programmed.
        if offset == 0x10:
            old = self.values["CR"]
            if old & _CR_LOCK:
                self._write_locked_cr(size, value)
                return
            if size == 4:
                # Peripheral.write of a whole CR word, inline: RW fields take the written
                # bits, OPTWRE (W0C) is cleared by a 0, reserved bits keep their value.
                raw = value & 0xFFFF_FFFF
                new = ((old & ~_CR_RW) | (raw & _CR_RW)) & ~(~raw & _CR_W0C)
                self.values["CR"] = new
                self._cr_written(old, new, raw)
                return
        Peripheral.write(self, offset, size, value)

    def _register_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0x10 and self.values["CR"] & _CR_LOCK:
            self._write_locked_cr(size, value)
            return
        super().write(offset, size, value)

    def _write_locked_cr(self, size: int, value: int) -> None:
        # CR is write-protected while LOCK=1 (RM0008 §3.3.3): only LOCK=1 (a no-op) gets through.
        if value & ~self.register("CR").field("LOCK").mask & ((1 << (8 * size)) - 1):
            self.port.guest_error(self.name, f"write 0x{value:08X} to FLASH_CR ignored: FPEC is locked")

    # -- register side effects ----------------------------------------------------------
    def _acr_written(self, old: int, new: int, raw: int) -> None:
        # PRFTBS reports the prefetch buffer state; it follows PRFTBE at once here.
        self.set_field("ACR", "PRFTBS", self.field("ACR", "PRFTBE"))

    def _keyr_written(self, old: int, new: int, raw: int) -> None:
        now, pc = self.port.now_ns(), self.port.pc()
        if self._locked_out:
            self.journal.add(fj.ERROR, now, pc, error="KEYR write while locked out", value=raw)
            raise BusError(FPEC_BASE + 0x04, "FPEC locked until reset after a wrong key sequence")
        expected = KEY1 if self._key_step == 0 else KEY2
        if raw != expected:
            # RM0008 §3.3.3: a wrong sequence locks the FPEC and FLASH_CR until reset, bus error.
            self._locked_out = True
            self._key_step = 0
            self.set_field("CR", "LOCK", 1)
            self.journal.add(fj.LOCKOUT, now, pc, value=raw, expected=expected)
            self.port.event("flash_lockout", value=raw)
            self.port.guest_error(self.name, f"wrong FPEC key 0x{raw:08X}: FPEC locked until reset")
            raise BusError(FPEC_BASE + 0x04, f"wrong FPEC key 0x{raw:08X}")
        if self._key_step == 0:
            self._key_step = 1
            return
        self._key_step = 0
        if self.field("CR", "LOCK"):
            self.set_field("CR", "LOCK", 0)
            self.journal.add(fj.UNLOCK, now, pc)
            self.port.event("flash_unlock")

    def _optkeyr_written(self, old: int, new: int, raw: int) -> None:
        now, pc = self.port.now_ns(), self.port.pc()
        if self.field("CR", "LOCK"):
            self._optkey_step = 0
            self.journal.add(fj.ERROR, now, pc, error="OPTKEYR write while FPEC locked", value=raw)
            self.port.guest_error(self.name, "OPTKEYR written while the FPEC is locked: ignored")
            return
        expected = KEY1 if self._optkey_step == 0 else KEY2
        if raw != expected:
            self._optkey_step = 0
            self.journal.add(fj.ERROR, now, pc, error="wrong option key", value=raw, expected=expected)
            self.port.guest_error(self.name, f"wrong option byte key 0x{raw:08X}")
            return
        if self._optkey_step == 0:
            self._optkey_step = 1
            return
        self._optkey_step = 0
        if not self.field("CR", "OPTWRE"):
            self.set_field("CR", "OPTWRE", 1)
            self.journal.add(fj.OPTION_UNLOCK, now, pc)
            self.port.event("flash_option_unlock")

    def _cr_written(self, old: int, new: int, raw: int) -> None:
        # STRT is set by software and cleared by hardware only; LOCK is set only.
        if old & _CR_STRT:
            new |= _CR_STRT
        port = self.port
        now = port.now_ns()  # asked on every CR write, as ever (the loop detector counts queries)
        # The PC only where an entry needs it: most CR writes just set or clear PG.
        if raw & _CR_LOCK and not old & _CR_LOCK:
            self.journal.add(fj.LOCK, now, port.pc())
            port.event("flash_lock")
        if old & _CR_OPTWRE and not new & _CR_OPTWRE:
            self.journal.add(fj.OPTION_LOCK, now, port.pc())
        self.values["CR"] = new = (new & ~_CR_LOCK) | ((old | raw) & _CR_LOCK)
        if raw & _CR_STRT and not old & _CR_STRT:
            self._start(now, port.pc())
        self._update_irq()

    def _update_irq(self, *_: int) -> None:
        values = self.values
        sr, cr = values["SR"], values["CR"]
        # (EOP and EOPIE) or ((PGERR or WRPRTERR) and ERRIE), RM0008 §3.4
        level = bool((sr & 0x20 and cr & 0x1000) or (sr & 0b1_0100 and cr & 0x400))
        if level != self._irq_level:
            self._irq_level = level
            self.port.set_irq(FLASH_IRQ, level)

    # -- STRT: erases ---------------------------------------------------------------------
    def _start(self, now: int, pc: int) -> None:
        per, mer, opter = (self.field("CR", n) for n in ("PER", "MER", "OPTER"))
        if per + mer + opter != 1:
            self.set_field("CR", "STRT", 0)
            self.journal.add(fj.ERROR, now, pc, error="STRT without exactly one of PER/MER/OPTER",
                             cr=self["CR"])
            self.port.guest_error(self.name, "FLASH_CR.STRT set without exactly one of PER, MER, OPTER")
            return
        if per:
            self._start_page_erase(now, pc)
        elif mer:
            self._start_mass_erase(now, pc)
        else:
            self._start_option_erase(now, pc)

    def _start_page_erase(self, now: int, pc: int) -> None:
        ar = self.values["AR"]
        page = self.page_index(ar)
        if page is None:
            # No documented hardware behaviour: keep BSY/EOP timing, change nothing.
            self.port.guest_error(self.name, f"page erase at 0x{ar:08X}, outside main flash "
                                             f"0x{self.flash_base:08X}-0x{self.flash_end - 1:08X}")
            self._begin(fj.OUT_OF_RANGE_ERASE, now, pc, self.timings.page_erase_ns, area="none",
                        offset=0, new=b"", journal_address=ar)
            return
        if self.page_write_protected(page):
            self._error("WRPRTERR", now, pc, f"page erase of write-protected page {page}",
                        address=self.flash_base + page * self.page_size, length=self.page_size)
            return
        offset = page * self.page_size
        self._begin(fj.PAGE_ERASE, now, pc, self.timings.page_erase_ns, area="main", offset=offset,
                    new=b"\xff" * self.page_size, journal_address=self.flash_base + offset,
                    detail={"page": page, "ar": ar})

    def _start_mass_erase(self, now: int, pc: int) -> None:
        if self["WRPR"] != 0xFFFF_FFFF:
            self._error("WRPRTERR", now, pc, "mass erase with write-protected pages",
                        address=self.flash_base, length=self.flash_size)
            return
        self._begin(fj.MASS_ERASE, now, pc, self.timings.mass_erase_ns, area="main", offset=0,
                    new=b"\xff" * self.flash_size, journal_address=self.flash_base)

    def _start_option_erase(self, now: int, pc: int) -> None:
        if not self.field("CR", "OPTWRE"):
            self.set_field("CR", "STRT", 0)
            self.journal.add(fj.ERROR, now, pc, error="option erase without OPTWRE")
            self.port.guest_error(self.name, "option byte erase without OPTWRE (OPTKEYR sequence)")
            return
        self._begin(fj.OPTION_ERASE, now, pc, self.timings.option_erase_ns, area="option", offset=0,
                    new=b"\xff" * OPTION_BYTES_SIZE, journal_address=OPTION_BYTES_BASE)

    # -- stores into flash ----------------------------------------------------------------
    def cpu_store(self, address: int, size: int, value: int) -> None:
        """A firmware store to main flash (0x0800_0000.., boot alias already
        translated) or to the option bytes (0x1FFF_F800..0x1FFF_F80F)."""
        if size == 2 and not address & 1 and self._op is None and self.flash_base <= address < self.flash_end:
            # The common case, a half-word program of main flash: _store's checks, once.
            cr = self.values["CR"]
            if cr & _CR_PG and not cr & _CR_LOCK:
                port = self.port
                now = port.now_ns()
                self._program_main(address, value & 0xFFFF, now, port.pc())
                return
        in_main = self.flash_base <= address < self.flash_end
        in_option = OPTION_BYTES_BASE <= address < OPTION_BYTES_BASE + OPTION_BYTES_SIZE
        if not (in_main or in_option):
            raise BusError(address, "store outside main flash and option bytes")
        programming = self.values["CR"] & (_CR_OPTPG if in_option else _CR_PG)
        if programming and (size != 2 or address & 1):
            # PM0075 §2.3.3: "Any attempt to write data that are not half-word long will
            # result in a bus error response from the FPEC."  An unaligned half-word reaches
            # the FPEC as two byte accesses.
            self.journal.add(fj.ERROR, self.port.now_ns(), self.port.pc(), address=address, length=size,
                             error="bus error: program store not a half-word", size=size, value=value)
            raise BusError(address, f"{8 * size}-bit store while programming: only half-words program")
        if self._op is not None:
            self._deferred.append(("store", address, size, value))
            self.port.stall_until(self._op.due_ns)
            return
        self._store(address, size, value & ((1 << (8 * size)) - 1))

    def _store(self, address: int, size: int, value: int) -> None:
        now, pc = self.port.now_ns(), self.port.pc()
        in_option = address >= OPTION_BYTES_BASE
        bit = "OPTPG" if in_option else "PG"
        cr = self.values["CR"]
        if cr & _CR_LOCK or not cr & (_CR_OPTPG if in_option else _CR_PG):
            why = "FPEC locked" if cr & _CR_LOCK else f"CR.{bit} clear"
            self.journal.add(fj.IGNORED_STORE, now, pc, address=address, length=size, value=value, reason=why)
            self.port.guest_error(self.name, f"store of 0x{value:X} to 0x{address:08X} ignored: {why}")
            return
        if size != 2 or address & 1:  # PG/OPTPG was set since cpu_store checked (deferred store)
            self.journal.add(fj.ERROR, now, pc, address=address, length=size,
                             error="bus error: program store not a half-word (deferred)")
            self.port.guest_error(self.name, f"{8 * size}-bit store to 0x{address:08X} while programming")
            return
        if in_option:
            self._program_option(address - OPTION_BYTES_BASE, value, now, pc)
        else:
            self._program_main(address, value, now, pc)

    def _program_main(self, address: int, value: int, now: int, pc: int) -> None:
        offset = address - self.flash_base
        page = offset // self.page_size
        values = self.values
        # No WRP bit and no read protection (the usual case) protects no page.
        if (values["WRPR"] != 0xFFFF_FFFF or values["OBR"] & _OBR_RDPRT) and self.page_write_protected(page):
            self._error("WRPRTERR", now, pc, f"program of write-protected page {page}",
                        address=address, length=2, value=value)
            return
        storage = self.storage
        old = storage[offset] | storage[offset + 1] << 8
        if old != 0xFFFF and value != 0x0000:
            # PM0075 §2.3.3: not erased -> program skipped, PGERR (0x0000 is the exception).
            self._error("PGERR", now, pc, f"program of 0x{value:04X} over 0x{old:04X} at 0x{address:08X}",
                        address=address, length=2, value=value, old_value=old)
            return
        values["AR"] = address
        self._begin(fj.PROGRAM, now, pc, self.timings.program_halfword_ns, area="main", offset=offset,
                    new=value.to_bytes(2, "little"), journal_address=address,
                    detail={"old_value": old, "new_value": value})

    def _program_option(self, offset: int, value: int, now: int, pc: int) -> None:
        if not self.field("CR", "OPTWRE"):
            self.journal.add(fj.IGNORED_STORE, now, pc, address=OPTION_BYTES_BASE + offset, length=2,
                             value=value, reason="OPTWRE clear")
            self.port.guest_error(self.name, "option byte program without OPTWRE: ignored")
            return
        old = self._options[offset] | (self._options[offset + 1] << 8)
        if old != 0xFFFF:
            self._error("PGERR", now, pc, f"option byte program over 0x{old:04X}",
                        address=OPTION_BYTES_BASE + offset, length=2, value=value, old_value=old)
            return
        halfword = option_halfword(value)
        duration = self.timings.program_halfword_ns
        detail: dict[str, Any] = {"old_value": old, "new_value": halfword}
        erase_ns = 0
        if offset == OB_RDP and value & 0xFF == RDP_UNPROTECT and self.field("OBR", "RDPRT"):
            # PM0075 §2.4.1: unprotecting first forces a mass erase of main flash.
            erase_ns = self.timings.mass_erase_ns
            duration += erase_ns
            detail["forced_mass_erase"] = True
        self._begin(fj.OPTION_PROGRAM, now, pc, duration, area="option", offset=offset,
                    new=halfword.to_bytes(2, "little"), journal_address=OPTION_BYTES_BASE + offset,
                    detail=detail, erase_ns=erase_ns)

    # -- operations: start, complete, interrupt -----------------------------------------------
    def _area(self, area: str) -> memoryview | bytearray:
        return self._options if area == "option" else self.storage

    def _begin(self, kind: str, now: int, pc: int, duration: int, *, area: str, offset: int, new: bytes,
               journal_address: int | None, detail: dict[str, Any] | None = None, erase_ns: int = 0) -> None:
        if area == "main":
            old = bytes(self.storage[offset:offset + len(new)])
        else:
            old = bytes(self._options[offset:offset + len(new)]) if area == "option" else b""
        op = _Operation(kind, now, now + duration, pc, None, area, offset, len(new), old, new,
                        journal_address, erase_ns, detail)
        self._op = op
        self.values["SR"] |= _SR_BSY
        op.timer = self.port.schedule(duration, self._complete, f"{self.name}.{kind}")
        self.port.stall_until(op.due_ns)
        for listener in self.operation_listeners:
            listener("start", op)

    def _write_area(self, area: str, offset: int, data: bytes) -> None:
        if not data or area == "none":
            return
        self._area(area)[offset:offset + len(data)] = data
        if area == "main":
            if self.on_change is not None:
                self.on_change(offset, len(data))
        elif self.on_option_change is not None:
            self.on_option_change()

    def _forced_mass_erase(self, op: _Operation, fraction: float) -> tuple[bytes, bytes, int]:
        old = bytes(self.storage)
        n = self.flash_size if fraction >= 1 else _erased_prefix(self.flash_size, fraction)
        self._write_area("main", 0, b"\xff" * n)
        return old, bytes(self.storage), n

    def _complete(self) -> None:
        op = self._op
        assert op is not None
        self._op = None
        if op.erase_ns:
            old, new, _ = self._forced_mass_erase(op, 1.0)
            self.journal.add(fj.MASS_ERASE, op.start_ns, op.pc, address=self.flash_base, length=self.flash_size,
                             old=old, new=new, end_ns=op.start_ns + op.erase_ns, cause="RDP unprotection")
        new = op.new
        if op.kind == fj.PROGRAM:  # _write_area and _journal_op for a half-word, inline
            offset = op.offset
            self.storage[offset:offset + 2] = new
            if self.on_change is not None:
                self.on_change(offset, 2)
            self.journal.add(fj.PROGRAM, op.start_ns, op.pc, address=op.journal_address, length=2,
                             old=op.old, new=new, end_ns=self.port.now_ns(), **op.detail)  # type: ignore[arg-type]
        else:
            self._write_area(op.area, op.offset, new)
            self._journal_op(op, new, self.port.now_ns())
        values = self.values
        values["SR"] = (values["SR"] & ~_SR_BSY) | _SR_EOP
        values["CR"] &= ~_CR_STRT
        self._update_irq()
        for listener in self.operation_listeners:
            listener("complete", op)
        self._run_deferred()  # may start the next operation: after this one is reported

    def _journal_op(self, op: _Operation, new: bytes, end_ns: int, **extra: Any) -> None:
        detail = {**op.detail, **extra} if op.detail else extra
        if op.kind == fj.OUT_OF_RANGE_ERASE:
            self.journal.add(op.kind, op.start_ns, op.pc, address=op.journal_address, length=self.page_size,
                             end_ns=end_ns, **detail)
            return
        self.journal.add(op.kind, op.start_ns, op.pc, address=op.journal_address, length=op.length,
                         old=op.old, new=new, end_ns=end_ns, **detail)
        if op.kind not in (fj.PROGRAM,):
            self.port.event(f"flash_{op.kind}", address=op.journal_address, length=op.length)

    def _run_deferred(self) -> None:
        while self._deferred and self._op is None:
            what, a, size, value = self._deferred.popleft()
            try:
                if what == "reg":
                    self._register_write(a, size, value)
                else:
                    self._store(a, size, value)
            except BusError as exc:
                # The stalled access can no longer fault precisely: report it instead.
                self.port.guest_error(self.name, f"deferred access: {exc}")

    def _interrupt(self, cause: str) -> None:
        """Stop the operation in flight at the current time (power cut or reset)."""
        op = self._op
        assert op is not None
        self._op = None
        if op.timer is not None:
            self.port.cancel(op.timer)
        now = self.port.now_ns()
        total = op.due_ns - op.start_ns
        elapsed = min(max(now - op.start_ns, 0), total)
        extra: dict[str, Any] = {"interrupted_by": cause, "elapsed_ns": elapsed, "duration_ns": total}
        if op.erase_ns:
            f_erase = min(elapsed / op.erase_ns, 1.0)
            old, new, n = self._forced_mass_erase(op, f_erase)
            done = f_erase >= 1.0
            kind = fj.MASS_ERASE if done or cause != fj.POWER_CUT else fj.POWER_CUT
            self.journal.add(kind, op.start_ns, op.pc, address=self.flash_base, length=n, old=old[:n],
                             new=new[:n], end_ns=op.start_ns + op.erase_ns if done else now,
                             operation=fj.MASS_ERASE, cause="RDP unprotection",
                             **({} if done else extra))
            if not done:
                self._after_interrupt(op, cause, now, changed=0, partial=b"", extra=extra, journal=False)
                return
            elapsed -= op.erase_ns
            total -= op.erase_ns
        partial, changed = _cut_effect(op, 1.0 if total == 0 else elapsed / total)
        if op.kind in (fj.PROGRAM, fj.OPTION_PROGRAM):
            extra["new_value"] = int.from_bytes(partial, "little")
        self._write_area(op.area, op.offset, partial[:changed])
        self._after_interrupt(op, cause, now, changed=changed, partial=partial, extra=extra, journal=True)

    def _after_interrupt(self, op: _Operation, cause: str, now: int, *, changed: int, partial: bytes,
                         extra: dict[str, Any], journal: bool) -> None:
        if journal:
            if cause == fj.POWER_CUT:
                self.journal.add(fj.POWER_CUT, now, op.pc, address=op.journal_address, length=op.length,
                                 old=op.old, new=partial, operation=op.kind, started_ns=op.start_ns,
                                 changed_bytes=changed, **extra)
            elif op.kind == fj.OUT_OF_RANGE_ERASE:
                self._journal_op(op, b"", now, **extra)
            else:
                # A reset-interrupted operation keeps its own kind, so the analyses see what
                # it did, and its range is only the bytes it really changed.
                self.journal.add(op.kind, op.start_ns, op.pc, address=op.journal_address, length=changed,
                                 old=op.old[:changed], new=partial[:changed], end_ns=now,
                                 **{**(op.detail or {}), **extra})
        self.port.event("flash_interrupted", operation=op.kind, cause=cause, address=op.journal_address)
        self.set_field("SR", "BSY", 0)
        self.set_field("CR", "STRT", 0)
        self._deferred.clear()

    # -- errors ----------------------------------------------------------------------------
    def _error(self, flag: str, now: int, pc: int, message: str, **detail: Any) -> None:
        self.set_field("CR", "STRT", 0)
        self.set_field("SR", flag, 1)
        self.journal.add(fj.ERROR, now, pc, error=flag, message=message, **detail)
        self.port.event("flash_error", flag=flag, message=message)
        self._update_irq()


def _cr_masks() -> tuple[int, int]:
    """CR's RW and W0C bits, from the register table (FlashInterface.write's inline CR store)."""
    cr = next(r for r in FlashInterface.REGISTERS if r.name == "CR")
    assert not any(f.access in (Access.W1C, Access.TOGGLE, Access.RO, Access.WO) for f in cr.fields)
    rw = w0c = 0
    for f in cr.fields:
        if f.access is Access.RW:
            rw |= f.mask
        else:
            w0c |= f.mask
    return rw, w0c


_CR_RW, _CR_W0C = _cr_masks()


def _cut_effect(op: _Operation, fraction: float) -> tuple[bytes, int]:
    """An operation cut at ``fraction`` of its busy time (mass-erase part excluded): the
    bytes of its range (``partial``) and how many of them, from the start, it wrote."""
    if op.kind in (fj.PROGRAM, fj.OPTION_PROGRAM):
        value = _partial_program(int.from_bytes(op.old, "little"), int.from_bytes(op.new, "little"), fraction)
        return value.to_bytes(2, "little"), 2
    if op.kind == fj.OUT_OF_RANGE_ERASE:
        return b"", 0
    changed = op.length if fraction >= 1 else _erased_prefix(op.length, fraction)
    return op.new[:changed] + op.old[changed:], changed


def _partial_program(old: int, new: int, fraction: float) -> int:
    """Half-word left by a program cut at ``fraction``: the lowest floor(f*n) of the n
    bits being cleared are cleared.  (The 0x0000 rule clears bits the same way.)"""
    to_clear = [b for b in range(16) if (old >> b) & 1 and not (new >> b) & 1]
    done = len(to_clear) if fraction >= 1 else math.floor(fraction * len(to_clear))
    value = old
    for b in to_clear[:done]:
        value &= ~(1 << b)
    return value


def _erased_prefix(length: int, fraction: float) -> int:
    """Bytes at the start of an erase range already 0xFF when cut at ``fraction``
    (rounded down to a half-word)."""
    return min(length, math.floor(fraction * length)) & ~1

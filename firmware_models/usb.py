"""STM32F103 USB full-speed device peripheral (RM0008 §23) and its packet memory.

Two bus regions belong to this peripheral:

* :class:`UsbDevice` at 0x4000_5C00 — EP0R..EP7R, CNTR, ISTR, FNR, DADDR, BTABLE.
* :class:`UsbPacketMemory` at 0x4000_6000 — the 512-byte packet memory (PMA).
  PMA byte offset ``o`` (``o`` even) is the half-word at CPU address
  0x4000_6000 + 2·o; the upper half of each 32-bit word reads 0 (RM0008 §23.5.3,
  "the packet memory ... is accessed by the APB as 256 half-words, each at a
  word-aligned address").

The firmware sees registers; the virtual host sees *packets*.  The host-facing
API works as the serial interface engine does, in two steps per transaction:
:meth:`UsbDevice.sample_setup`, :meth:`UsbDevice.sample_out` and
:meth:`UsbDevice.sample_in` decide the answer when the token has been decoded
(address/endpoint match, STAT, data toggle, buffer size), and
:meth:`UsbDevice.complete` applies the transaction's effects when it has ended
on the wire (PMA transfer through the buffer descriptor table, COUNT, data
toggle, CTR flags, STAT to NAK, interrupt lines).  The wire model in between
lets the CPU run for the packets' duration.  ``setup``/``out``/``in_`` do both
at once; plus :meth:`UsbDevice.sof`, :meth:`UsbDevice.bus_reset`,
:meth:`UsbDevice.resume`.

Not modelled: isochronous and double-buffered bulk endpoints (a transaction to
one is reported through ``port.unmodelled`` and gets no answer), bus errors
(CRC, bit stuffing: ISTR.ERR is never set), PMAOVR (memory latency cannot
happen here), the USBWakeUp line through EXTI 18 (the machine may watch
``ISTR.WKUP`` if it needs it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from firmware_models.regs import Access, Field, Peripheral, Register

if TYPE_CHECKING:
    from firmware_models.port import Port, Timer

USB_BASE = 0x4000_5C00
PMA_BASE = 0x4000_6000
PMA_BYTES = 512
USB_HP_CAN1_TX_IRQ = 19
USB_LP_CAN1_RX0_IRQ = 20
NUM_ENDPOINTS = 8

FRAME_NS = 1_000_000
# How late an SOF may be before the frame timer calls it missing (ESOF).  The
# host sends SOFs exactly every 1 ms of emulated time; the slack only absorbs
# a CPU slice that overshoots the host's advance() target by a few cycles.
SOF_SLACK_NS = 50_000
PMA_SENTINEL = 0xA5  # fills the PMA at power-on so reads of unset buffers stand out


class Handshake(enum.Enum):
    """What the device answered to one transaction."""

    ACK = "ACK"
    NAK = "NAK"
    STALL = "STALL"
    TIMEOUT = "TIMEOUT"  # no answer at all: not addressed, disabled, or busy


class DataPid(enum.IntEnum):
    DATA0 = 0
    DATA1 = 1


class Stat(enum.IntEnum):
    """STAT_TX / STAT_RX encodings (RM0008 §23.5.2, Tables 169/170)."""

    DISABLED = 0
    STALL = 1
    NAK = 2
    VALID = 3


class EpType(enum.IntEnum):
    """EP_TYPE encodings (RM0008 §23.5.2, Table 171)."""

    BULK = 0
    CONTROL = 1
    ISO = 2
    INTERRUPT = 3


@dataclass(frozen=True)
class EndpointReady:
    """Listener notification: firmware set an endpoint's STAT to VALID or STALL."""

    register: int  # n of EPnR
    address: int  # EA field: the USB endpoint number
    is_in: bool  # True for STAT_TX (device -> host)
    stat: Stat


@dataclass(frozen=True)
class PendingTransaction:
    """A transaction the engine has accepted at its token and completes at its end on the wire."""

    kind: str  # "setup", "out" or "in"
    register: int  # n of EPnR
    data: bytes  # received packet (setup/out) or the packet sent (in)


@dataclass(frozen=True)
class AttachChanged:
    """Listener notification: the device appeared on or left the bus."""

    attached: bool


UsbListener = Callable[[object], None]

# EPnR bit masks used by the transaction engine.
_EA = 0x000F
_STAT_TX = 0x0030
_DTOG_TX = 0x0040
_CTR_TX = 0x0080
_EP_KIND = 0x0100
_EP_TYPE = 0x0600
_SETUP = 0x0800
_STAT_RX = 0x3000
_DTOG_RX = 0x4000
_CTR_RX = 0x8000

# CNTR / ISTR bits.
_FRES, _PDWN, _LP_MODE, _FSUSP, _RESUME = 0x1, 0x2, 0x4, 0x8, 0x10
_ESOF, _SOF, _RESET, _SUSP, _WKUP = 0x100, 0x200, 0x400, 0x800, 0x1000
_CTRM = 0x8000
_ISTR_EVENTS = 0x7F00  # ESOF..PMAOVR; CNTR holds the matching masks at the same positions
_FNR_LCK = 0x2000


def _epr(n: int) -> Register:
    # RM0008 §23.5.2: STAT/DTOG toggle on 1 (t), CTR are rc_w0, SETUP is read-only.
    return Register(
        f"EP{n}R",
        4 * n,
        0,
        (
            Field("EA", 0, 4),
            Field("STAT_TX", 4, 2, Access.TOGGLE),
            Field("DTOG_TX", 6, 1, Access.TOGGLE),
            Field("CTR_TX", 7, 1, Access.W0C),
            Field("EP_KIND", 8, 1),
            Field("EP_TYPE", 9, 2),
            Field("SETUP", 11, 1, Access.RO),
            Field("STAT_RX", 12, 2, Access.TOGGLE),
            Field("DTOG_RX", 14, 1, Access.TOGGLE),
            Field("CTR_RX", 15, 1, Access.W0C),
        ),
        on_write=f"_on_ep{n}r_write",
    )


def _crc16_byte(crc: int) -> int:
    for _ in range(8):
        crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_CRC16_TABLE = [_crc16_byte(i) for i in range(256)]  # the eight shifts of one byte, precomputed


def usb_crc16(data: bytes) -> int:
    """CRC16 of a USB data packet (USB 2.0 §8.3.5.2: x^16+x^15+x^2+1, reflected)."""
    crc = 0xFFFF
    table = _CRC16_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


class UsbPacketMemory(Peripheral):
    """The 512-byte packet memory at 0x4000_6000 (RM0008 §23.5.3).

    It is SRAM shared by the CPU (through APB1, 16 bits per 32-bit word) and
    the USB engine.  A system reset does not clear it; power-on fills it with a
    sentinel so a firmware that forgets to set up a buffer shows.
    """

    NAME = "USB_PMA"
    SIZE = 0x400
    REGISTERS = ()

    def __init__(self, port: Port, name: str | None = None) -> None:
        self.data = bytearray([PMA_SENTINEL]) * PMA_BYTES
        super().__init__(port, name)

    def reset(self) -> None:
        super().reset()  # SRAM: contents survive a system reset

    def power_on_reset(self) -> None:
        self.data[:] = bytes([PMA_SENTINEL]) * PMA_BYTES
        self.reset()

    # -- CPU side: offset is relative to 0x4000_6000 ----------------------------
    def read(self, offset: int, size: int) -> int:
        if not offset & 3 and size != 1:  # the common word/half-word access: the half-word behind it
            o = offset >> 1
            return self.data[o] | self.data[o + 1] << 8
        value = 0
        for i in range(size):
            o = offset + i
            if o % 4 < 2:  # upper half-word of each word is not backed by memory
                value |= self.data[(o // 4) * 2 + (o % 4)] << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if not offset & 3 and size != 1:
            o = offset >> 1
            self.data[o] = value & 0xFF
            self.data[o + 1] = (value >> 8) & 0xFF
            return
        for i in range(size):
            o = offset + i
            if o % 4 < 2:
                self.data[(o // 4) * 2 + (o % 4)] = (value >> (8 * i)) & 0xFF

    def describe(self, offset: int) -> str:
        return f"{self.name}[0x{(offset // 4) * 2 + (offset % 4 & 1):03X}]"

    # -- USB side: offsets are PMA byte offsets ("USB local addresses") ----------
    def u16(self, o: int) -> int:
        o &= PMA_BYTES - 2
        return self.data[o] | (self.data[o + 1] << 8)

    def set_u16(self, o: int, value: int) -> None:
        o &= PMA_BYTES - 2
        self.data[o] = value & 0xFF
        self.data[o + 1] = (value >> 8) & 0xFF

    def load(self, o: int, n: int) -> bytes:
        if o >= 0 and o + n <= PMA_BYTES:
            return bytes(self.data[o:o + n])
        return bytes(self.data[(o + i) % PMA_BYTES] for i in range(n))

    def store(self, o: int, payload: bytes) -> None:
        if o >= 0 and o + len(payload) <= PMA_BYTES:
            self.data[o:o + len(payload)] = payload
            return
        for i, b in enumerate(payload):
            self.data[(o + i) % PMA_BYTES] = b


class UsbDevice(Peripheral):
    """USB full-speed device registers at 0x4000_5C00 (RM0008 §23.5).

    ``pullup`` is the board's D+ pull-up as a callable (for boards that switch
    it from a GPIO); ``None`` means a fixed resistor.  ``require_usb_clock``
    makes the engine answer nothing unless the RCC model publishes a 48 MHz
    USB clock (off by default so models can be tested without an RCC).
    """

    NAME = "USB"
    SIZE = 0x400
    REGISTERS: ClassVar[tuple[Register, ...]] = (
        *(_epr(n) for n in range(NUM_ENDPOINTS)),
        Register(
            "CNTR",
            0x40,
            0x0003,  # FRES=1, PDWN=1 at reset (RM0008 §23.5.1)
            (
                Field("FRES", 0), Field("PDWN", 1), Field("LP_MODE", 2), Field("FSUSP", 3),
                Field("RESUME", 4), Field("ESOFM", 8), Field("SOFM", 9), Field("RESETM", 10),
                Field("SUSPM", 11), Field("WKUPM", 12), Field("ERRM", 13), Field("PMAOVRM", 14),
                Field("CTRM", 15),
            ),
            on_write="_cntr_written",
        ),
        Register(
            "ISTR",
            0x44,
            0,
            (
                Field("EP_ID", 0, 4, Access.RO), Field("DIR", 4, 1, Access.RO),
                Field("ESOF", 8, 1, Access.W0C), Field("SOF", 9, 1, Access.W0C),
                Field("RESET", 10, 1, Access.W0C), Field("SUSP", 11, 1, Access.W0C),
                Field("WKUP", 12, 1, Access.W0C), Field("ERR", 13, 1, Access.W0C),
                Field("PMAOVR", 14, 1, Access.W0C), Field("CTR", 15, 1, Access.RO),
            ),
            on_read="_istr_read",
            on_write="_istr_written",
        ),
        Register(
            "FNR",
            0x48,
            0,
            (
                Field("FN", 0, 11, Access.RO), Field("LSOF", 11, 2, Access.RO),
                Field("LCK", 13, 1, Access.RO), Field("RXDM", 14, 1, Access.RO),
                Field("RXDP", 15, 1, Access.RO),
            ),
            on_read="_fnr_read",
        ),
        Register("DADDR", 0x4C, 0, (Field("ADD", 0, 7), Field("EF", 7)), on_write="_daddr_written"),
        Register("BTABLE", 0x50, 0, (Field("BTABLE", 3, 13),)),
    )

    def __init__(
        self,
        port: Port,
        name: str | None = None,
        pullup: Callable[[], bool] | None = None,
        require_usb_clock: bool = False,
    ) -> None:
        self.pma = UsbPacketMemory(port)
        self.pullup = pullup
        self.require_usb_clock = require_usb_clock
        self._listeners: list[UsbListener] = []
        self._irq_levels = {USB_HP_CAN1_TX_IRQ: False, USB_LP_CAN1_RX0_IRQ: False}
        self._frame_timer: Timer | None = None
        self._was_attached = False
        super().__init__(port, name)

    # -- state ---------------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        if getattr(self, "_frame_timer", None) is not None:
            self.port.cancel(self._frame_timer)
        self._frame_timer = None
        self._suspend_check = False  # armed by a USB reset (ISTR.SUSP description)
        self._missed_frames = 0  # consecutive ESOFs without any traffic
        self._sofs_since_lock_reset = 0
        self._last_sof_ns = -FRAME_NS
        self._reset_frames = False  # True while the frame timer should run
        self.remote_wakeup_requested = False
        self.pma.reset()
        for irq in self._irq_levels:
            if self._irq_levels[irq]:
                self._irq_levels[irq] = False
                self.port.set_irq(irq, False)
        self._note_attach_change()

    def power_on_reset(self) -> None:
        self.pma.power_on_reset()
        self.reset()

    def add_listener(self, listener: UsbListener) -> None:
        """Call ``listener(EndpointReady | AttachChanged)`` when the firmware makes
        an endpoint VALID/STALL or the device appears/disappears, so a host
        waiting on NAKs can stop waiting early."""
        self._listeners.append(listener)

    def remove_listener(self, listener: UsbListener) -> None:
        self._listeners.remove(listener)

    def pullup_changed(self) -> None:
        """The machine calls this when the board's pull-up callable may have changed."""
        self._note_attach_change()

    # -- host-facing API ---------------------------------------------------------------
    def attached(self) -> bool:
        """The device is visible on the bus: transceiver powered (CNTR.PDWN=0) and
        the board's D+ pull-up present."""
        if self.values["CNTR"] & _PDWN:
            return False
        return self.pullup is None or bool(self.pullup())

    def bus_reset(self) -> None:
        """The host drove a USB reset (SE0 ≥ 10 ms).  RM0008 §23.4.2 / ISTR.RESET:
        DADDR and all EPnR are cleared, so nothing answers until the firmware
        re-enables the function and EP0; CNTR, BTABLE and the PMA are kept."""
        if not self.attached():
            return
        self._wake_if_suspended()
        self._usb_reset()
        self._reset_frames = True
        # The end of reset starts frame timing afresh: the first SOF is due 1 ms later.
        self._last_sof_ns = self.port.now_ns()
        if self._frame_timer is None:
            self._arm_frame_timer(self._last_sof_ns)
        self.port.event("usb_state", state="bus_reset")

    def resume(self) -> None:
        """The host drove resume signalling on a suspended bus."""
        if not self.attached():
            return
        self._wake_if_suspended(force=True)
        self._update_irq()

    def sof(self, frame_number: int) -> None:
        """A start-of-frame packet carrying ``frame_number`` (11 bits)."""
        if not self._sie_running():
            return
        self._traffic()
        now = self.port.now_ns()
        fnr = self.values["FNR"]
        fnr = (fnr & ~0x1FFF) | (frame_number & 0x7FF)  # FN = frame number, LSOF = 0
        self._sofs_since_lock_reset += 1
        # LCK: at least two consecutive SOFs after a reset or resume (RM0008 §23.5.1 FNR).
        if self._sofs_since_lock_reset >= 2:
            fnr |= _FNR_LCK
        self.values["FNR"] = fnr
        self.values["ISTR"] |= _SOF
        self._last_sof_ns = now
        self._reset_frames = True
        if self._frame_timer is None:
            self._arm_frame_timer(now)
        self._update_irq()

    # Each transaction has two instants on the wire (RM0008 §23.4.2): the serial
    # interface engine decides how to answer when it has decoded the token
    # (``sample_*``: STAT, data toggle, buffer size), and the endpoint register,
    # COUNTn_RX and the packet memory change only when the transaction has
    # completed on the bus, after the handshake (``complete``).  Until then the
    # firmware still sees the old STAT and counters.  The host-facing
    # ``setup``/``out``/``in_`` do both at one instant (a bus without time).

    def setup(self, addr: int, ep: int, data: bytes) -> Handshake:
        """SETUP token + DATA0 (8 bytes) to ``addr``/``ep``, completed at once."""
        hs, pending = self.sample_setup(addr, ep, data)
        self.complete(pending)
        return hs

    def out(self, addr: int, ep: int, data: bytes, data_pid: int) -> Handshake:
        """OUT token + DATAx packet, completed at once."""
        hs, pending = self.sample_out(addr, ep, data, data_pid)
        self.complete(pending)
        return hs

    def in_(self, addr: int, ep: int) -> tuple[Handshake, bytes, DataPid | None]:
        """IN token, completed at once: the handshake and, for ACK, the data packet and its PID."""
        hs, payload, pid, pending = self.sample_in(addr, ep)
        self.complete(pending)
        return hs, payload, pid

    def sample_setup(self, addr: int, ep: int, data: bytes) -> tuple[Handshake, PendingTransaction | None]:
        """The SIE's answer to a SETUP token + DATA0.

        RM0008 §23.4.2 "Control transfers": a control endpoint never answers a
        SETUP with NAK or STALL — it accepts it whatever STAT_RX says (unless
        DISABLED); on completion it sets DTOG_TX=1, DTOG_RX=0 (then toggled by
        the ACK, so the next OUT expects DATA1), and both STAT_TX and STAT_RX
        to NAK.  If CTR_RX is still set from an earlier reception, the SETUP is
        discarded with no handshake so the host retries it.
        """
        n = self._target(addr, ep)
        if n is None:
            return Handshake.TIMEOUT, None
        epr = self.values[f"EP{n}R"]
        if (epr & _EP_TYPE) >> 9 != EpType.CONTROL:
            return Handshake.TIMEOUT, None  # SETUP to a non-control endpoint: ignored
        if (epr & _STAT_RX) >> 12 == Stat.DISABLED or epr & _CTR_RX:
            return Handshake.TIMEOUT, None
        data = bytes(data)
        if not self._fits_rx_buffer(n, data):
            return Handshake.STALL, None
        return Handshake.ACK, PendingTransaction("setup", n, data)

    def sample_out(self, addr: int, ep: int, data: bytes,
                   data_pid: int) -> tuple[Handshake, PendingTransaction | None]:
        """The SIE's answer to an OUT token + DATAx (RM0008 §23.4.2 "Receiving data packets")."""
        n = self._target(addr, ep)
        if n is None:
            return Handshake.TIMEOUT, None
        epr = self.values[f"EP{n}R"]
        if self._needs_unmodelled_mode(n, epr):
            return Handshake.TIMEOUT, None
        stat = (epr & _STAT_RX) >> 12
        if stat == Stat.DISABLED:
            return Handshake.TIMEOUT, None
        if stat == Stat.STALL:
            return Handshake.STALL, None
        if stat == Stat.NAK:
            return Handshake.NAK, None
        data = bytes(data)
        # EP_KIND on a control endpoint is STATUS_OUT: OUT packets with data are
        # answered STALL instead of ACK (RM0008 §23.5.2, EP_KIND).
        if (epr & _EP_TYPE) >> 9 == EpType.CONTROL and epr & _EP_KIND and data:
            return Handshake.STALL, None
        if int(data_pid) != (epr & _DTOG_RX) >> 14:
            # Data toggle mismatch: a retransmission of a packet already taken.
            # The device ACKs and discards it (USB 2.0 §8.6.3); no CTR, no toggle.
            return Handshake.ACK, None
        if not self._fits_rx_buffer(n, data):
            return Handshake.STALL, None
        return Handshake.ACK, PendingTransaction("out", n, data)

    def sample_in(self, addr: int, ep: int
                  ) -> tuple[Handshake, bytes, DataPid | None, PendingTransaction | None]:
        """The SIE's answer to an IN token: the handshake and, for VALID, the packet it sends.

        The engine reads the packet from the packet memory as it transmits, so the
        payload is taken now; the host is assumed to acknowledge every data packet,
        and on completion DTOG_TX toggles, CTR_TX is set and STAT_TX drops to NAK
        (RM0008 §23.4.2 "Transmission").
        """
        n = self._target(addr, ep)
        if n is None:
            return Handshake.TIMEOUT, b"", None, None
        epr = self.values[f"EP{n}R"]
        if self._needs_unmodelled_mode(n, epr):
            return Handshake.TIMEOUT, b"", None, None
        stat = (epr & _STAT_TX) >> 4
        if stat == Stat.DISABLED:
            return Handshake.TIMEOUT, b"", None, None
        if stat == Stat.STALL:
            return Handshake.STALL, b"", None, None
        if stat == Stat.NAK:
            return Handshake.NAK, b"", None, None
        addr_tx = self._bdt(n, 0) & 0xFFFE
        count = self._bdt(n, 1) & 0x3FF
        if addr_tx + count > PMA_BYTES:
            self.port.guest_error(self.name, f"EP{n} TX buffer 0x{addr_tx:X}+{count} runs past the PMA")
        payload = self.pma.load(addr_tx, count)
        pid = DataPid((epr & _DTOG_TX) >> 6)
        return Handshake.ACK, payload, pid, PendingTransaction("in", n, payload)

    def complete(self, pending: PendingTransaction | None) -> None:
        """The end of a transaction the engine accepted: registers, counters and packet memory change now."""
        if pending is None:
            return
        n = pending.register
        key = f"EP{n}R"
        if pending.kind == "in":
            epr = self.values[key] ^ _DTOG_TX
            self.values[key] = (epr & ~_STAT_TX) | (Stat.NAK << 4) | _CTR_TX
        else:
            self._receive_into_pma(n, pending.data)
            epr = self.values[key]
            if pending.kind == "setup":
                epr &= ~(_STAT_TX | _STAT_RX)
                epr |= (Stat.NAK << 4) | (Stat.NAK << 12) | _DTOG_TX | _DTOG_RX | _SETUP | _CTR_RX
            else:
                epr ^= _DTOG_RX
                epr = (epr & ~_STAT_RX) | (Stat.NAK << 12) | _CTR_RX
                if (epr & _EP_TYPE) >> 9 == EpType.CONTROL:
                    epr &= ~_SETUP
            self.values[key] = epr
        self._update_irq()

    # -- helpers for the transaction engine --------------------------------------------
    def _sie_running(self) -> bool:
        if not self.attached() or self.values["CNTR"] & _FRES:
            return False
        return not (self.require_usb_clock and self.port.clocks.usbclk != 48_000_000)

    def _target(self, addr: int, ep: int) -> int | None:
        """The EPnR that answers a token to ``addr``/``ep``, or None for silence."""
        if not self._sie_running():
            return None
        self._traffic()
        if self.values["CNTR"] & _FSUSP:
            # Bus activity during suspend wakes the peripheral (ISTR.WKUP); its
            # clocks are stopped, so this packet itself goes unanswered.
            self._wake_if_suspended()
            self._update_irq()
            return None
        daddr = self.values["DADDR"]
        # DADDR.EF=0: "no transactions are handled, irrespective of USB_EPnR".
        if not daddr & 0x80 or (daddr & 0x7F) != addr:
            return None
        for n in range(NUM_ENDPOINTS):
            if self.values[f"EP{n}R"] & _EA == ep:
                return n
        return None

    def _needs_unmodelled_mode(self, n: int, epr: int) -> bool:
        ep_type = (epr & _EP_TYPE) >> 9
        if ep_type == EpType.ISO or (ep_type == EpType.BULK and epr & _EP_KIND):
            self.port.unmodelled(self.name, 4 * n, "iso/double-buffered transaction", 0, None)
            return True
        return False

    def _bdt(self, n: int, k: int) -> int:
        """Half-word k of endpoint n's buffer descriptor: ADDR_TX, COUNT_TX, ADDR_RX, COUNT_RX."""
        return self.pma.u16((self.values["BTABLE"] & 0xFFF8) + 8 * n + 2 * k)

    def rx_buffer_size(self, n: int) -> int:
        """Bytes allocated to endpoint n's reception buffer (RM0008 Table 177)."""
        count_rx = self._bdt(n, 3)
        num_block = (count_rx >> 10) & 0x1F
        if count_rx & 0x8000:  # BL_SIZE=1: 32-byte blocks, NUM_BLOCK+1 of them
            return (num_block + 1) * 32
        return num_block * 2

    def _fits_rx_buffer(self, n: int, data: bytes) -> bool:
        """RM0008 §23.4.2: a packet larger than the allocated reception buffer is
        answered STALL instead of ACK; the engine has written what fitted (payload
        + CRC16, never past the buffer), raises no interrupt and leaves COUNT_RX alone."""
        size = self.rx_buffer_size(n)
        if len(data) <= size:
            return True
        self.pma.store(self._bdt(n, 2) & 0xFFFE, self._with_crc(data)[:size])
        return False

    @staticmethod
    def _with_crc(data: bytes) -> bytes:
        crc = usb_crc16(data)
        return data + bytes((crc & 0xFF, crc >> 8))

    def _receive_into_pma(self, n: int, data: bytes) -> None:
        """Store a received packet (payload + CRC16, within the buffer) and its byte count in COUNTn_RX."""
        size = self.rx_buffer_size(n)
        self.pma.store(self._bdt(n, 2) & 0xFFFE, self._with_crc(data)[:size])
        slot = (self.values["BTABLE"] & 0xFFF8) + 8 * n + 6
        self.pma.set_u16(slot, (self.pma.u16(slot) & 0xFC00) | len(data))

    def _usb_reset(self) -> None:
        for n in range(NUM_ENDPOINTS):
            self.values[f"EP{n}R"] = 0
        self.values["DADDR"] = 0
        self.values["FNR"] &= ~(_FNR_LCK | 0x1800)
        self._sofs_since_lock_reset = 0
        self._missed_frames = 0
        self._suspend_check = True
        self.remote_wakeup_requested = False
        self.values["ISTR"] |= _RESET
        self._update_irq()

    def _traffic(self) -> None:
        self._missed_frames = 0

    def _wake_if_suspended(self, force: bool = False) -> None:
        """Activity on a suspended bus: set WKUP and clear LP_MODE asynchronously
        (RM0008 §23.4.5); the end of resume re-arms the suspend check."""
        if self.values["CNTR"] & _FSUSP or force:
            self.values["ISTR"] |= _WKUP
            self.values["CNTR"] &= ~_LP_MODE
            self._suspend_check = True
            self._sofs_since_lock_reset = 0
            self.values["FNR"] &= ~_FNR_LCK
            self.remote_wakeup_requested = False
            self.port.event("usb_state", state="wakeup")

    # -- frames ----------------------------------------------------------------------
    def _arm_frame_timer(self, from_ns: int) -> None:
        delay = from_ns + FRAME_NS + SOF_SLACK_NS - self.port.now_ns()
        self._frame_timer = self.port.schedule(delay, self._frame_check, "USB frame timer")

    def _frame_check(self) -> None:
        """Runs one frame (plus slack) after the last SOF was expected."""
        self._frame_timer = None
        if not self._sie_running() or not self._reset_frames or self.values["CNTR"] & _FSUSP:
            return  # suspended or off: the frame timer stops until traffic returns
        now = self.port.now_ns()
        if now - self._last_sof_ns < FRAME_NS + SOF_SLACK_NS:
            self._arm_frame_timer(self._last_sof_ns)
            return
        # ESOF: an SOF was expected and did not come (RM0008 §23.5.1 ISTR.ESOF).
        fnr = self.values["FNR"]
        lsof = min(3, ((fnr >> 11) & 3) + 1)
        self.values["FNR"] = (fnr & ~0x1800) | (lsof << 11)
        self.values["ISTR"] |= _ESOF
        self._missed_frames += 1
        if self._missed_frames >= 3 and self._suspend_check:
            # Three lost SOFs with no traffic in between = 3 ms idle: SUSP.
            self.values["ISTR"] |= _SUSP
            self.values["FNR"] &= ~_FNR_LCK
            self._suspend_check = False
            self.port.event("usb_state", state="suspend_detected")
        self._arm_frame_timer(now - SOF_SLACK_NS)
        self._update_irq()

    # -- register side effects ---------------------------------------------------------
    def _istr_read(self) -> int:
        value = self.values["ISTR"] & _ISTR_EVENTS
        source = self._ctr_source()
        if source is not None:
            n, direction = source
            value |= 0x8000 | (direction << 4) | n
        return value

    def _ctr_source(self) -> tuple[int, int] | None:
        """Endpoint reported in ISTR.EP_ID/DIR: the lowest-numbered EPnR with a
        pending CTR (RM0008 §23.5.1 ISTR.EP_ID); DIR=1 when CTR_RX is set."""
        for n in range(NUM_ENDPOINTS):
            epr = self.values[f"EP{n}R"]
            if epr & (_CTR_RX | _CTR_TX):
                return n, 1 if epr & _CTR_RX else 0
        return None

    def _istr_written(self, old: int, new: int, raw: int) -> None:
        self._update_irq()

    def _fnr_read(self) -> int:
        value = self.values["FNR"] & 0x3FFF
        if self.attached():
            value |= 0x8000  # idle J state on a full-speed bus: D+ high, D- low
        return value

    def _daddr_written(self, old: int, new: int, raw: int) -> None:
        if new != old and new & 0x80:
            self.port.event("usb_state", state="address", address=new & 0x7F)

    def _cntr_written(self, old: int, new: int, raw: int) -> None:
        rising = new & ~old
        if rising & _FRES:
            # FRES forces a USB reset "exactly like a RESET signalling on the USB".
            self._usb_reset()
        if rising & _FSUSP:
            self.port.event("usb_state", state="suspended")
        if rising & _RESUME:
            # Remote wakeup: the host side notices through this flag.
            self.remote_wakeup_requested = True
            self.port.event("usb_state", state="remote_wakeup")
        if (old ^ new) & _PDWN:
            self._note_attach_change()
        self._update_irq()

    def _epr_written(self, n: int, old: int, new: int) -> None:
        ea = new & _EA
        for shift, is_in in ((4, True), (12, False)):
            before, after = (old >> shift) & 3, (new >> shift) & 3
            if after != before and after in (Stat.VALID, Stat.STALL):
                self._notify(EndpointReady(n, ea, is_in, Stat(after)))
        if (old ^ new) & (_CTR_RX | _CTR_TX):
            self._update_irq()

    def _notify(self, what: object) -> None:
        for listener in list(self._listeners):
            listener(what)

    def _note_attach_change(self) -> None:
        now = self.attached()
        if now != getattr(self, "_was_attached", False):
            self._was_attached = now
            self.port.event("usb_state", state="attached" if now else "detached")
            if not now:
                self._reset_frames = False
            self._notify(AttachChanged(now))

    def _update_irq(self) -> None:
        cntr = self.values["CNTR"]
        lp = bool(self.values["ISTR"] & cntr & _ISTR_EVENTS)
        hp = False
        if cntr & _CTRM:
            values = self.values
            for name in _EPR_NAMES:
                epr = values[name]
                if not epr & (_CTR_RX | _CTR_TX):
                    continue
                ep_type = (epr & _EP_TYPE) >> 9
                # RM0008 §23.3: the HP line serves CTR of isochronous and
                # double-buffered bulk endpoints; everything else is LP.
                if ep_type == EpType.ISO or (ep_type == EpType.BULK and epr & _EP_KIND):
                    hp = True
                else:
                    lp = True
        for irq, level in ((USB_LP_CAN1_RX0_IRQ, lp), (USB_HP_CAN1_TX_IRQ, hp)):
            if self._irq_levels[irq] != level:
                self._irq_levels[irq] = level
                self.port.set_irq(irq, level)


_EPR_NAMES = tuple(f"EP{n}R" for n in range(NUM_ENDPOINTS))


def _make_epr_hook(n: int) -> Callable[[UsbDevice, int, int, int], None]:
    def hook(self: UsbDevice, old: int, new: int, raw: int) -> None:
        self._epr_written(n, old, new)

    hook.__name__ = f"_on_ep{n}r_write"
    return hook


for _n in range(NUM_ENDPOINTS):
    setattr(UsbDevice, f"_on_ep{_n}r_write", _make_epr_hook(_n))

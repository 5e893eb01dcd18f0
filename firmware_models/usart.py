"""Universal synchronous/asynchronous receiver-transmitter (USART1..3), RM0008 §27.

Asynchronous mode with byte timing in emulated time:

- TX (§27.3.2): DR writes go to TDR (TXE=0); when the shift register is free the
  byte moves on at once (TXE=1 again) and its frame lasts start + data (8/9) + stop
  (0.5/1/1.5/2) bits at the baud rate ``f_PCLK / BRR`` (§27.3.4: baud = f_CK /
  (16·USARTDIV), BRR = 16·USARTDIV).  At the end of the frame the byte is handed to
  ``tx_sink``; TC is set when a frame ends and TDR is empty.  Enabling the
  transmitter (TE and UE) first sends an idle frame.
- RX: :meth:`USART.feed` queues bytes that arrive one frame time apart; each sets
  RXNE, or ORE if RXNE was still set (the new byte is lost, RDR keeps the old one).
  One idle frame after the last byte IDLE is set (once per burst).
- Flag clearing (§27.6.1): TC by reading SR then writing DR (or writing 0); RXNE by
  reading DR (or writing 0); PE/FE/NE/ORE/IDLE by reading SR then reading DR.
- The interrupt line is the OR of the enabled sources of §27.4, Table 198.

Options: ``name`` (``USART1``/``USART2``/``USART3``, which picks the IRQ and the
bus clock: PCLK2 for USART1, PCLK1 for the others), ``irq``, ``clock``
(``"pclk1"``/``"pclk2"``) to override, and ``tx_sink`` (``Callable[[bytes], None]``;
by default the bytes are collected in :attr:`USART.tx_log`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.regs import Access, Field, Peripheral, Register, bits, fields

if TYPE_CHECKING:
    from firmware_models.port import Port, Timer

#: name -> (base address, IRQ number, bus clock)
USART_INSTANCES: dict[str, tuple[int, int, str]] = {
    "USART1": (0x4001_3800, 37, "pclk2"),
    "USART2": (0x4000_4400, 38, "pclk1"),
    "USART3": (0x4000_4800, 39, "pclk1"),
}

NS_PER_S = 1_000_000_000

# SR bit positions
PE, FE, NE, ORE, IDLE, RXNE, TC, TXE, LBD, CTS = (1 << n for n in range(10))
_ERRORS_CLEARED_BY_DR_READ = PE | FE | NE | ORE | IDLE

# Stop bits in half bits, by CR2.STOP (00: 1, 01: 0.5, 10: 2, 11: 1.5), §27.6.5.
_STOP_HALF_BITS = {0: 2, 1: 1, 2: 4, 3: 3}

_IDLE_FRAME = -1  # the shift register is sending the idle preamble


class USART(Peripheral):
    NAME = "USART"
    SIZE = 0x400

    REGISTERS = (
        # §27.6.1: reset 0x00C0 (TXE and TC set).
        Register("SR", 0x00, 0x00C0, (
            *bits(("PE", 0), ("FE", 1), ("NE", 2), ("ORE", 3), ("IDLE", 4), access=Access.RO),
            *bits(("RXNE", 5), ("TC", 6), access=Access.W0C),
            Field("TXE", 7, 1, Access.RO),
            *bits(("LBD", 8), ("CTS", 9), access=Access.W0C),
        ), on_read="_sr_read", on_write="_sr_written"),
        Register("DR", 0x04, 0, (Field("DR", 0, 9),), on_read="_dr_read", on_write="_dr_written"),
        Register("BRR", 0x08, 0, fields(("DIV_Fraction", 0, 4), ("DIV_Mantissa", 4, 12))),
        Register("CR1", 0x0C, 0, bits(
            ("SBK", 0), ("RWU", 1), ("RE", 2), ("TE", 3), ("IDLEIE", 4), ("RXNEIE", 5), ("TCIE", 6),
            ("TXEIE", 7), ("PEIE", 8), ("PS", 9), ("PCE", 10), ("WAKE", 11), ("M", 12), ("UE", 13),
        ), on_write="_cr1_written"),
        Register("CR2", 0x10, 0, fields(
            ("ADD", 0, 4), ("LBDL", 5), ("LBDIE", 6), ("LBCL", 8), ("CPHA", 9), ("CPOL", 10), ("CLKEN", 11),
            ("STOP", 12, 2), ("LINEN", 14),
        ), on_write="_cr_written"),
        Register("CR3", 0x14, 0, bits(
            ("EIE", 0), ("IREN", 1), ("IRLP", 2), ("HDSEL", 3), ("NACK", 4), ("SCEN", 5), ("DMAR", 6),
            ("DMAT", 7), ("RTSE", 8), ("CTSE", 9), ("CTSIE", 10),
        ), on_write="_cr_written"),
        Register("GTPR", 0x18, 0, fields(("PSC", 0, 8), ("GT", 8, 8))),
    )

    def __init__(
        self,
        port: Port,
        *,
        name: str = "USART1",
        irq: int | None = None,
        clock: str | None = None,
        tx_sink: Callable[[bytes], None] | None = None,
    ) -> None:
        _, default_irq, default_clock = USART_INSTANCES.get(name, (0, -1, "pclk1"))
        self.irq = default_irq if irq is None else irq
        self.clock = default_clock if clock is None else clock
        if self.clock not in ("pclk1", "pclk2"):
            raise ValueError(f"clock must be 'pclk1' or 'pclk2', not {self.clock!r}")
        self.tx_log = bytearray()
        self.tx_sink: Callable[[bytes], None] = tx_sink if tx_sink is not None else self.tx_log.extend
        self.rx_dropped = 0  # bytes that arrived while the receiver was off
        self._tdr: int | None = None
        self._shift: int | None = None
        self._tx_timer: Timer | None = None
        self._rx_queue: deque[int] = deque()
        self._rx_timer: Timer | None = None
        self._idle_timer: Timer | None = None
        self._idle_armed = False
        self._rdr = 0
        self._sr_snapshot = 0  # SR as last read, for the SR-then-DR clearing sequences
        self._irq_level = False
        super().__init__(port, name)

    # -- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        for timer in (self._tx_timer, self._rx_timer, self._idle_timer):
            if timer is not None:
                self.port.cancel(timer)
        self._tx_timer = self._rx_timer = self._idle_timer = None
        self._tdr = self._shift = None
        self._rx_queue.clear()
        self._idle_armed = False
        self._rdr = 0
        self._sr_snapshot = 0
        super().reset()
        self._update_irq()

    def _cr1(self, name: str) -> bool:
        return bool(self.field("CR1", name))

    def _sr_set(self, mask: int) -> None:
        self.values["SR"] |= mask

    def _sr_clear(self, mask: int) -> None:
        self.values["SR"] &= ~mask

    @property
    def transmitter_on(self) -> bool:
        return self._cr1("UE") and self._cr1("TE")

    @property
    def receiver_on(self) -> bool:
        return self._cr1("UE") and self._cr1("RE")

    # -- timing ---------------------------------------------------------------------------------
    @property
    def bus_hz(self) -> int:
        return int(getattr(self.port.clocks, self.clock))

    @property
    def baud(self) -> float:
        brr = self.values["BRR"] & 0xFFFF
        return self.bus_hz / brr if brr >= 16 and self.bus_hz else 0.0

    def frame_ns(self) -> int | None:
        """Length of one frame in ns at the current BRR and bus clock (None if no valid baud)."""
        brr = self.values["BRR"] & 0xFFFF
        hz = self.bus_hz
        if brr < 16 or not hz:  # USARTDIV below 1 is not a valid setting (§27.3.4)
            return None
        half_bits = 2 * (1 + (9 if self._cr1("M") else 8)) + _STOP_HALF_BITS[self.field("CR2", "STOP")]
        return (half_bits * brr * NS_PER_S + hz) // (2 * hz)

    # -- feeding and sending ----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes arriving on RX, back to back; the first one completes a frame time from now."""
        self._rx_queue.extend(data)
        if self._idle_timer is not None:
            # A new start bit before a whole idle frame elapsed: no idle line yet.
            self.port.cancel(self._idle_timer)
            self._idle_timer = None
        if self._rx_timer is None and self._rx_queue:
            self._rx_timer = self.port.schedule(self._line_frame_ns(), self._rx_arrived, f"{self.name}.rx")

    def _line_frame_ns(self) -> int:
        # The sender's frame time.  The host is assumed to use the firmware's baud; with no valid
        # BRR yet, the bytes still take a 115200-baud frame each on the wire (and are lost).
        return self.frame_ns() or 86_806

    def _rx_arrived(self) -> None:
        self._rx_timer = None
        byte = self._rx_queue.popleft()
        if not self.receiver_on or self.frame_ns() is None:
            self.rx_dropped += 1
        elif self.values["SR"] & RXNE:
            # §27.6.1 ORE: the RDR keeps its content, the shift register is overwritten.
            self._sr_set(ORE)
            self._idle_armed = True
        else:
            self._rdr = byte
            self._sr_set(RXNE)
            self._idle_armed = True
        if self._rx_queue:
            self._rx_timer = self.port.schedule(self._line_frame_ns(), self._rx_arrived, f"{self.name}.rx")
        elif self.receiver_on:
            self._idle_timer = self.port.schedule(self._line_frame_ns(), self._idle_line, f"{self.name}.idle")
        self._update_irq()

    def _idle_line(self) -> None:
        self._idle_timer = None
        # §27.6.1 IDLE: "The IDLE bit will not be set again until the RXNE bit has been set itself".
        if self._idle_armed and self.receiver_on:
            self._idle_armed = False
            self._sr_set(IDLE)
            self._update_irq()

    def _kick_tx(self) -> None:
        """Move TDR into the shift register if it is free and the transmitter runs."""
        if self._shift is not None or self._tdr is None or not self.transmitter_on:
            return
        frame = self.frame_ns()
        if frame is None:
            self.port.guest_error(self.name, "DR written with no valid baud rate (BRR or bus clock is 0)")
            return
        self._shift, self._tdr = self._tdr, None
        self._sr_set(TXE)
        self._tx_timer = self.port.schedule(frame, self._frame_sent, f"{self.name}.tx")

    def _frame_sent(self) -> None:
        self._tx_timer = None
        byte, self._shift = self._shift, None
        if byte is not None and byte != _IDLE_FRAME:
            self.tx_sink(bytes([byte & 0xFF]))
        if self._tdr is not None and self.transmitter_on:
            self._kick_tx()
        elif self._tdr is None:
            # §27.6.1 TC: set when transmission of a frame is complete and TXE is set.
            self._sr_set(TC)
        self._update_irq()

    def _start_idle_frame(self) -> None:
        # §27.3.2: "Setting the TE bit drives the USART to send an idle frame before the first data frame."
        frame = self.frame_ns()
        if frame is None or self._shift is not None:
            return
        self._shift = _IDLE_FRAME
        self._tx_timer = self.port.schedule(frame, self._frame_sent, f"{self.name}.tx-idle")

    # -- register side effects ------------------------------------------------------------------------
    def _sr_read(self) -> int:
        value = self.values["SR"]
        self._sr_snapshot = value
        return value

    def _sr_written(self, old: int, new: int, raw: int) -> None:
        self._update_irq()

    def _dr_read(self) -> int:
        self._sr_clear(RXNE)
        # PE/FE/NE/ORE/IDLE: cleared by a read of SR followed by a read of DR; only the flags
        # the SR read saw, so one that rose in between survives.
        self._sr_clear(self._sr_snapshot & _ERRORS_CLEARED_BY_DR_READ)
        self._sr_snapshot &= ~_ERRORS_CLEARED_BY_DR_READ
        self._update_irq()
        return self._rdr

    def _dr_written(self, old: int, new: int, raw: int) -> None:
        data = raw & (0x1FF if self._cr1("M") else 0xFF)
        # TC: cleared by a read of SR (that saw TC=1) followed by a write to DR.
        if self._sr_snapshot & TC:
            self._sr_clear(TC)
            self._sr_snapshot &= ~TC
        if self._tdr is not None:
            self.port.guest_error(self.name, "DR written while TXE=0: the byte waiting in TDR is lost")
        self._tdr = data
        self._sr_clear(TXE)
        self._kick_tx()
        self._update_irq()

    def _cr1_written(self, old: int, new: int, raw: int) -> None:
        reg = self.register("CR1")
        was_tx = bool(reg.field("UE").get(old) and reg.field("TE").get(old))
        te_dropped = reg.field("TE").get(old) and not reg.field("TE").get(new)
        if was_tx and te_dropped and self._shift is not None and self._shift != _IDLE_FRAME:
            # §27.3.2 note: resetting TE during a transmission freezes the baud counters and
            # the byte in the shift register is lost.
            self.port.guest_error(self.name, "CR1.TE cleared during a transmission: byte lost")
            if self._tx_timer is not None:
                self.port.cancel(self._tx_timer)
            self._tx_timer = None
            self._shift = None
        if self.transmitter_on and not was_tx:
            self._start_idle_frame()
        self._kick_tx()
        if not self.receiver_on and self._idle_timer is not None:
            self.port.cancel(self._idle_timer)
            self._idle_timer = None
        self._update_irq()

    def _cr_written(self, old: int, new: int, raw: int) -> None:
        self._update_irq()

    # -- interrupt ----------------------------------------------------------------------------------------
    def interrupt_pending(self) -> bool:
        """§27.4, Table 198: the OR of every event whose enable bit is set."""
        sr, cr1, cr2, cr3 = (self.values[r] for r in ("SR", "CR1", "CR2", "CR3"))
        c1 = self.register("CR1").field
        on = [
            sr & TXE and c1("TXEIE").get(cr1),
            sr & TC and c1("TCIE").get(cr1),
            sr & (RXNE | ORE) and c1("RXNEIE").get(cr1),
            sr & IDLE and c1("IDLEIE").get(cr1),
            sr & PE and c1("PEIE").get(cr1),
            sr & LBD and self.register("CR2").field("LBDIE").get(cr2),
            sr & CTS and cr3 >> 10 & 1,  # CTSIE
            sr & (FE | NE | ORE) and cr3 & 1 and cr3 >> 6 & 1,  # EIE, only with DMAR (multibuffer)
        ]
        return any(on)

    def _update_irq(self) -> None:
        level = self.interrupt_pending()
        if level != self._irq_level:
            self._irq_level = level
            if self.irq >= 0:
                self.port.set_irq(self.irq, level)

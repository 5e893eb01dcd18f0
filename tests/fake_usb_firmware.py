"""A Python stand-in for USB device firmware, for tests without a CPU.

:class:`FakeUsbFirmware` services the :class:`~firmware_models.usb.UsbDevice`
model the way a register-level STM32F1 driver does: only through the model's
``read``/``write`` (and the PMA's), on the USB_LP interrupt, with the
toggle/write-0-to-clear idioms of ST's driver.  It answers the standard
requests with a DFU-like descriptor set (0483:DF11, one DFU interface with two
alt settings) plus, optionally, a vendor loopback interface with bulk
endpoints 0x01/0x81.

:class:`FakeCpu` plays the CPU: it runs emulated time on the SimPort scheduler
and enters the firmware's interrupt handler while the USB_LP line is
asserted, each entry costing ``isr_ns`` of emulated time.

The descriptors here are written as raw bytes on purpose: they are the fixture
the host-side parser is tested against, so they must not come from it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from emulator.core.port import SimPort
from firmware_models.usb import USB_LP_CAN1_RX0_IRQ, UsbDevice

# Register offsets and bits, as a C driver would #define them.
CNTR, ISTR, FNR, DADDR, BTABLE = 0x40, 0x44, 0x48, 0x4C, 0x50
EP_CTR_RX, EP_DTOG_RX, EP_STAT_RX, EP_SETUP = 0x8000, 0x4000, 0x3000, 0x0800
EP_TYPE, EP_KIND, EP_CTR_TX, EP_DTOG_TX, EP_STAT_TX, EP_EA = 0x0600, 0x0100, 0x0080, 0x0040, 0x0030, 0x000F
EPREG_MASK = EP_CTR_RX | EP_SETUP | EP_TYPE | EP_KIND | EP_CTR_TX | EP_EA
ISTR_CTR, ISTR_RESET, ISTR_SUSP, ISTR_WKUP, ISTR_SOF, ISTR_ESOF = 0x8000, 0x400, 0x800, 0x1000, 0x200, 0x100
CNTR_FRES, CNTR_PDWN, CNTR_LPMODE, CNTR_FSUSP = 0x1, 0x2, 0x4, 0x8
CNTR_CTRM, CNTR_RESETM, CNTR_SUSPM, CNTR_WKUPM, CNTR_SOFM, CNTR_ESOFM = 0x8000, 0x400, 0x800, 0x1000, 0x200, 0x100
DISABLED, STALL, NAK, VALID = 0, 1, 2, 3
TYPE_BULK, TYPE_CONTROL = 0, 1

DFU_LAYOUT = "@Internal Flash  /0x08000000/16*002Ka,112*002Kg"
OPTION_LAYOUT = "@Option Bytes  /0x1FFFF800/01*016 e"


def _string(text: str) -> bytes:
    payload = text.encode("utf-16-le")
    return bytes((2 + len(payload), 3)) + payload


def device_descriptor(mps0: int = 64) -> bytes:
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, mps0, 0x0483, 0xDF11, 0x0200, 1, 2, 3, 1)


def configuration_descriptor(loopback: bool = False) -> bytes:
    dfu_functional = struct.pack("<BBBHHH", 9, 0x21, 0x0B, 255, 2048, 0x011A)
    body = (
        struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 0, 0xFE, 0x01, 0x02, 4)
        + dfu_functional
        + struct.pack("<BBBBBBBBB", 9, 4, 0, 1, 0, 0xFE, 0x01, 0x02, 5)
        + dfu_functional
    )
    interfaces = 1
    if loopback:
        interfaces = 2
        body += struct.pack("<BBBBBBBBB", 9, 4, 1, 0, 2, 0xFF, 0x00, 0x00, 0)
        body += struct.pack("<BBBBHB", 7, 5, 0x01, 0x02, 64, 0)
        body += struct.pack("<BBBBHB", 7, 5, 0x81, 0x02, 64, 0)
    total = 9 + len(body)
    return struct.pack("<BBHBBBBB", 9, 2, total, interfaces, 1, 0, 0xC0, 50) + body


STRINGS = {
    0: bytes((4, 3, 0x09, 0x04)),
    1: _string("STMicroelectronics"),
    2: _string("STM32  BOOTLOADER"),
    3: _string("206C34A35253"),
    4: _string(DFU_LAYOUT),
    5: _string(OPTION_LAYOUT),
}

# PMA layout: BTABLE at 0, EP0 TX at 0x40, EP0 RX at 0x80, EP1 TX at 0xC0, EP1 RX at 0x100.
EP0_TX, EP0_RX, EP1_TX, EP1_RX = 0x40, 0x80, 0xC0, 0x100


@dataclass
class Behaviour:
    """Ways the fake firmware can misbehave, one per failure the host must report."""

    never_enable: bool = False  # never sets DADDR.EF: the device answers nothing
    nak_forever: bool = False  # accepts SETUPs but never prepares a data/status stage
    stall_requests: set[int] = field(default_factory=set)  # bRequest values answered with STALL
    ignore_wlength: bool = False  # sends whole descriptors even when asked for fewer bytes
    oversize_packet: int = 0  # if set, the device descriptor goes out in one packet of this size
    reply_delay_ns: int = 0  # prepares IN data this long after the SETUP (a busy main loop)


class FakeUsbFirmware:
    """An ST-style USB device driver running on the model's registers."""

    def __init__(
        self,
        usb: UsbDevice,
        port: SimPort,
        *,
        mps0: int = 64,
        loopback: bool = False,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.usb = usb
        self.pma = usb.pma
        self.port = port
        self.mps0 = mps0
        self.loopback = loopback
        self.behaviour = behaviour or Behaviour()
        self.device = device_descriptor(mps0)
        self.config = configuration_descriptor(loopback)
        self.address_pending: int | None = None
        self.configuration = 0
        self.alt_setting = 0
        self.in_remaining = b""  # data stage still to send on EP0
        self.in_zlp = False  # a zero-length packet must end the data stage
        self.out_request: bytes | None = None  # SETUP waiting for its OUT data stage
        self.out_data = b""
        self.requests: list[bytes] = []  # every SETUP packet seen, in order
        self.dnload_blocks: dict[int, bytes] = {}
        self.bulk_received: list[bytes] = []
        self.events: list[str] = []
        self.sof_count = 0

    # -- register access, exactly the widths a C driver uses ----------------------------
    def rd(self, offset: int) -> int:
        return self.usb.read(offset, 4)

    def wr(self, offset: int, value: int) -> None:
        self.usb.write(offset, 4, value & 0xFFFF)

    def pma_write(self, pma_offset: int, data: bytes) -> None:
        for i in range(0, len(data), 2):
            half = data[i] | ((data[i + 1] if i + 1 < len(data) else 0) << 8)
            self.pma.write(2 * (pma_offset + i), 2, half)

    def pma_read(self, pma_offset: int, n: int) -> bytes:
        out = bytearray()
        for i in range(0, n, 2):
            half = self.pma.read(2 * (pma_offset + i), 2)
            out += bytes((half & 0xFF, half >> 8))
        return bytes(out[:n])

    def bdt_write(self, ep: int, k: int, value: int) -> None:
        base = self.rd(BTABLE) & 0xFFF8
        self.pma.write(2 * (base + 8 * ep + 2 * k), 2, value)

    def bdt_read(self, ep: int, k: int) -> int:
        base = self.rd(BTABLE) & 0xFFF8
        return self.pma.read(2 * (base + 8 * ep + 2 * k), 2)

    def set_stat_tx(self, ep: int, stat: int) -> None:
        reg = 4 * ep
        value = self.rd(reg) & (EPREG_MASK | EP_STAT_TX)
        value ^= stat << 4  # STAT bits toggle on 1: write current XOR wanted
        self.wr(reg, value | EP_CTR_RX | EP_CTR_TX)

    def set_stat_rx(self, ep: int, stat: int) -> None:
        reg = 4 * ep
        value = self.rd(reg) & (EPREG_MASK | EP_STAT_RX)
        value ^= stat << 12
        self.wr(reg, value | EP_CTR_RX | EP_CTR_TX)

    def set_ep_kind(self, ep: int, on: bool) -> None:
        value = self.rd(4 * ep) & EPREG_MASK
        value = value | EP_KIND if on else value & ~EP_KIND
        self.wr(4 * ep, value | EP_CTR_RX | EP_CTR_TX)

    def clear_ctr_rx(self, ep: int) -> None:
        self.wr(4 * ep, (self.rd(4 * ep) & EPREG_MASK & ~EP_CTR_RX) | EP_CTR_TX)

    def clear_ctr_tx(self, ep: int) -> None:
        self.wr(4 * ep, (self.rd(4 * ep) & EPREG_MASK & ~EP_CTR_TX) | EP_CTR_RX)

    def reset_dtog(self, ep: int) -> None:
        value = self.rd(4 * ep)
        toggles = value & (EP_DTOG_RX | EP_DTOG_TX)  # writing 1 flips them back to 0
        self.wr(4 * ep, (value & EPREG_MASK) | toggles | EP_CTR_RX | EP_CTR_TX)

    # -- start-up ---------------------------------------------------------------------
    def start(self, interrupts: int = CNTR_CTRM | CNTR_RESETM | CNTR_SUSPM | CNTR_WKUPM) -> None:
        """USB_DevInit + start: power the transceiver, release reset, unmask."""
        self.wr(CNTR, CNTR_FRES)  # PDWN=0: analog part on (RM0008 §23.4.2)
        self.wr(CNTR, 0)
        self.wr(ISTR, 0)
        self.wr(BTABLE, 0)
        self.wr(CNTR, interrupts)

    # -- the interrupt handler -----------------------------------------------------
    def isr(self) -> None:
        istr = self.rd(ISTR)
        while istr & ISTR_CTR:
            self.correct_transfer(istr & 0xF, bool(istr & 0x10))
            istr = self.rd(ISTR)
        if istr & ISTR_RESET:
            self.wr(ISTR, ~ISTR_RESET)
            self.on_reset()
        if istr & ISTR_SUSP:
            self.wr(ISTR, ~ISTR_SUSP)
            self.wr(CNTR, self.rd(CNTR) | CNTR_FSUSP | CNTR_LPMODE)
            self.events.append("suspend")
        if istr & ISTR_WKUP:
            self.wr(ISTR, ~ISTR_WKUP)
            self.wr(CNTR, self.rd(CNTR) & ~(CNTR_FSUSP | CNTR_LPMODE))
            self.events.append("wakeup")
        if istr & ISTR_SOF:
            self.wr(ISTR, ~ISTR_SOF)
            self.sof_count += 1
        if istr & ISTR_ESOF:
            self.wr(ISTR, ~ISTR_ESOF)

    def on_reset(self) -> None:
        self.events.append("reset")
        self.address_pending = None
        self.configuration = 0
        self.bdt_write(0, 0, EP0_TX)
        self.bdt_write(0, 1, 0)
        self.bdt_write(0, 2, EP0_RX)
        self.bdt_write(0, 3, 0x8400)  # BL_SIZE=1, NUM_BLOCK=1: 64 bytes
        self.wr(0, (TYPE_CONTROL << 9) | 0)  # EP0R: control, EA=0
        self.set_stat_rx(0, VALID)
        self.set_stat_tx(0, NAK)
        if not self.behaviour.never_enable:
            self.wr(DADDR, 0x80)

    def correct_transfer(self, ep: int, rx: bool) -> None:
        epr = self.rd(4 * ep)
        if ep == 1:
            self.loopback_transfer(epr)
            return
        if rx and epr & EP_CTR_RX:
            count = self.bdt_read(0, 3) & 0x3FF
            data = self.pma_read(EP0_RX, count)
            setup = bool(epr & EP_SETUP)
            self.clear_ctr_rx(0)
            if setup:
                self.on_setup(data)
            else:
                self.on_ep0_out(data)
        elif epr & EP_CTR_TX:
            self.clear_ctr_tx(0)
            self.on_ep0_in_done()

    # -- control endpoint -------------------------------------------------------------
    def on_setup(self, setup: bytes) -> None:
        self.requests.append(setup)
        self.set_ep_kind(0, False)
        self.in_remaining, self.in_zlp = b"", False
        if self.behaviour.nak_forever:
            return
        bm, req, value, index, length = struct.unpack("<BBHHH", setup)
        if req in self.behaviour.stall_requests:
            self.stall_ep0()
            return
        if bm & 0x80 or length == 0:
            reply = self.standard_in(bm, req, value, index, length)
            if reply is None:
                self.stall_ep0()
                return
            if length == 0:
                self.send_status_in()
                return
            if not self.behaviour.ignore_wlength:
                reply = reply[:length]
            self.in_zlp = len(reply) < length and len(reply) % self.mps0 == 0
            self.in_remaining = reply
            if self.behaviour.reply_delay_ns:
                self.port.schedule(self.behaviour.reply_delay_ns, self.send_next_in, "fake fw delayed reply")
            else:
                self.send_next_in()
        else:
            self.out_request = setup
            self.out_data = b""
            self.set_stat_rx(0, VALID)

    def stall_ep0(self) -> None:
        self.set_stat_tx(0, STALL)
        self.set_stat_rx(0, STALL)

    def send_next_in(self) -> None:
        size = self.behaviour.oversize_packet or self.mps0
        chunk, self.in_remaining = self.in_remaining[:size], self.in_remaining[size:]
        self.pma_write(EP0_TX, chunk)
        self.bdt_write(0, 1, len(chunk))
        self.set_stat_tx(0, VALID)
        # Accept the status OUT (zero length only) from now on: a host may end
        # the data stage early (Linux's first 64-byte read of an 8-byte EP0).
        self.set_ep_kind(0, True)
        self.set_stat_rx(0, VALID)

    def send_status_in(self) -> None:
        self.bdt_write(0, 1, 0)
        self.set_stat_tx(0, VALID)

    def on_ep0_in_done(self) -> None:
        if self.address_pending is not None:
            # SET_ADDRESS takes effect after its status stage (USB 2.0 §9.4.6).
            self.wr(DADDR, 0x80 | self.address_pending)
            self.address_pending = None
            self.set_stat_rx(0, VALID)
            return
        if self.in_remaining:
            self.send_next_in()
        elif self.in_zlp:
            self.in_zlp = False
            self.send_next_in()
        else:
            self.set_stat_rx(0, VALID)

    def on_ep0_out(self, data: bytes) -> None:
        if self.out_request is None:
            # Status stage of a control read: done, wait for the next SETUP.
            self.set_ep_kind(0, False)
            self.set_stat_rx(0, VALID)
            return
        self.out_data += data
        length = struct.unpack_from("<H", self.out_request, 6)[0]
        if len(self.out_data) < length and len(data) == self.mps0:
            self.set_stat_rx(0, VALID)
            return
        bm, req, value, index, _ = struct.unpack("<BBHHH", self.out_request)
        self.out_request = None
        if not self.class_out(bm, req, value, index, self.out_data):
            self.stall_ep0()
            return
        self.send_status_in()

    # -- requests ------------------------------------------------------------------
    def standard_in(self, bm: int, req: int, value: int, index: int, length: int) -> bytes | None:
        kind = (bm >> 5) & 3
        if kind == 1:  # class request to the DFU interface
            return self.class_in(req, value, length)
        if req == 6:  # GET_DESCRIPTOR
            dtype, dindex = value >> 8, value & 0xFF
            if dtype == 1:
                return self.device
            if dtype == 2 and dindex == 0:
                return self.config
            if dtype == 3:
                return STRINGS.get(dindex)
            if dtype == 0x21:
                return self.config[18:27]
            return None
        if req == 5:  # SET_ADDRESS
            self.address_pending = value & 0x7F
            return b""
        if req == 9:  # SET_CONFIGURATION
            self.configuration = value & 0xFF
            if self.loopback and self.configuration:
                self.open_loopback()
            return b""
        if req == 8:
            return bytes((self.configuration,))
        if req == 11:  # SET_INTERFACE
            self.alt_setting = value
            return b""
        if req == 10:
            return bytes((self.alt_setting,))
        if req == 0:
            return b"\x00\x00"
        if req == 1 and bm == 0x02:  # CLEAR_FEATURE(ENDPOINT_HALT)
            if index & 0x7F == 1:
                self.reset_dtog(1)
                self.set_stat_rx(1, VALID)
            return b""
        return None

    def class_in(self, req: int, value: int, length: int) -> bytes | None:
        if req == 3:  # DFU_GETSTATUS: OK, 0 ms, dfuIDLE
            return bytes((0, 0, 0, 0, 2, 0))
        if req == 5:
            return b"\x02"
        if req == 2:  # DFU_UPLOAD
            return self.dnload_blocks.get(value, b"")[:length]
        if req in (4, 6):  # CLRSTATUS, ABORT
            return b""
        return None

    def class_out(self, bm: int, req: int, value: int, index: int, data: bytes) -> bool:
        if (bm >> 5) & 3 == 1 and req == 1:  # DFU_DNLOAD
            self.dnload_blocks[value] = data
            return True
        return False

    # -- loopback bulk endpoint 1 ------------------------------------------------------
    def open_loopback(self) -> None:
        self.bdt_write(1, 0, EP1_TX)
        self.bdt_write(1, 1, 0)
        self.bdt_write(1, 2, EP1_RX)
        self.bdt_write(1, 3, 0x8400)
        self.wr(4, (TYPE_BULK << 9) | 1)
        self.reset_dtog(1)
        self.set_stat_rx(1, VALID)
        self.set_stat_tx(1, NAK)

    def loopback_transfer(self, epr: int) -> None:
        if epr & EP_CTR_RX:
            count = self.bdt_read(1, 3) & 0x3FF
            data = self.pma_read(EP1_RX, count)
            self.clear_ctr_rx(1)
            self.bulk_received.append(data)
            # Echo it back upper-cased; accept more OUT data once it was read.
            reply = data.upper()
            self.pma_write(EP1_TX, reply)
            self.bdt_write(1, 1, len(reply))
            self.set_stat_tx(1, VALID)
        if epr & EP_CTR_TX:
            self.clear_ctr_tx(1)
            self.set_stat_rx(1, VALID)


class FakeCpu:
    """Runs emulated time for the fake firmware (a ``DeviceRunner``).

    ``run_ns`` advances the SimPort scheduler, enters the firmware's ISR while
    USB_LP is asserted (``isr_ns`` of emulated time per entry) and returns
    early once :meth:`stop` was called, as the real machine does when the USB
    model's listener fires.
    """

    def __init__(self, port: SimPort, firmware: FakeUsbFirmware | None, isr_ns: int = 3_000) -> None:
        self.port = port
        self.firmware = firmware
        self.isr_ns = isr_ns
        self._stop = False
        self.isr_entries = 0

    def now_ns(self) -> int:
        return self.port.now_ns()

    def stop(self) -> None:
        self._stop = True

    def run_ns(self, ns: int) -> None:
        scheduler = self.port.scheduler
        target = scheduler.now_ns + ns
        self._stop = False
        while scheduler.now_ns < target and not self._stop:
            if self.firmware is not None and self.port.irq_levels.get(USB_LP_CAN1_RX0_IRQ):
                self.isr_entries += 1
                self.firmware.isr()
                scheduler.advance_to(min(target, scheduler.now_ns + self.isr_ns), self.port.clocks.hclk)
                scheduler.run_due()
                continue
            due = scheduler.next_due()
            step_to = target if due is None else min(target, max(due, scheduler.now_ns))
            scheduler.advance_to(step_to, self.port.clocks.hclk)
            scheduler.run_due()


def make_device(
    *,
    mps0: int = 64,
    loopback: bool = False,
    behaviour: Behaviour | None = None,
    start: bool = True,
) -> tuple[SimPort, UsbDevice, FakeUsbFirmware, FakeCpu]:
    """A model on a bare SimPort with the fake firmware already started."""
    port = SimPort()
    usb = UsbDevice(port)
    usb.power_on_reset()
    firmware = FakeUsbFirmware(usb, port, mps0=mps0, loopback=loopback, behaviour=behaviour)
    if start:
        firmware.start()
    return port, usb, firmware, FakeCpu(port, firmware)

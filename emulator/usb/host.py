"""A virtual USB host controller working at packet level.

The host talks to one device through a :class:`UsbWire`: single transactions
(SETUP, OUT, IN, SOF, bus reset) at the current emulated instant, plus
``advance(ns)``, which lets the device side (the emulated CPU) run.  Every
wait is in emulated time: NAK retries, timeouts, reset recovery, frames.

Transfers follow USB 2.0 chapter 8:

* control (§8.5.3): SETUP (DATA0), data stage in max-packet pieces starting
  with DATA1, status stage in the opposite direction (zero-length, DATA1);
  a short packet ends an IN data stage;
* bulk / interrupt (§8.5.2): data toggles kept per endpoint, reset by
  SET_CONFIGURATION, SET_INTERFACE and CLEAR_FEATURE(ENDPOINT_HALT);
* NAK -> the device is given emulated time (growing steps, capped, cut short
  when the device model reports an endpoint became ready) and the
  transaction is retried until the transfer's timeout;
* no handshake -> retried, three strikes (as EHCI/xHCI error counters), then
  :class:`UsbProtocolError` (Linux's -EPROTO, "error -71");
* STALL -> :class:`UsbStall` (EPIPE); more data than asked or a packet larger
  than wMaxPacketSize -> :class:`UsbBabble` (EOVERFLOW).

Every transaction and every transfer (URB submit/complete) is reported to the
monitors added with :meth:`VirtualHost.add_monitor` (see :mod:`emulator.usb.pcap`).
"""

from __future__ import annotations

import enum
import errno as errno_codes
import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from emulator.usb import fullspeed as fs
from firmware_models.usb import (
    AttachChanged,
    DataPid,
    EndpointReady,
    Handshake,
    PendingTransaction,
    UsbDevice,
)
from hostside.descriptors import (
    DT_CONFIGURATION,
    DT_DEVICE,
    DT_DFU_FUNCTIONAL,
    DT_STRING,
    Configuration,
    DescriptorError,
    DeviceDescriptor,
    DfuFunctionalDescriptor,
    StringDescriptor,
    parse_configuration,
)

NS_PER_MS = 1_000_000
FRAME_NS = NS_PER_MS
FS_BIT_NS = fs.BIT_NS  # full speed: 12 Mbit/s
HOST_GAP_NS = 1_000  # between the end of one transaction and the next token (Linux's BW_HOST_DELAY budget)
EOF1_NS = fs.ns(fs.EOF1_BITS)

# Standard requests (USB 2.0 Table 9-4).
GET_STATUS, CLEAR_FEATURE, SET_FEATURE, SET_ADDRESS = 0, 1, 3, 5
GET_DESCRIPTOR, GET_CONFIGURATION, SET_CONFIGURATION = 6, 8, 9
GET_INTERFACE, SET_INTERFACE = 10, 11
ENDPOINT_HALT = 0
LANGID_EN_US = 0x0409


# -- errors ------------------------------------------------------------------------------


class UsbError(Exception):
    """Base of the host's errors; ``errno`` is what Linux/libusb would report and
    ``urb_status`` the (negative) status usbmon shows for the failed URB."""

    errno: int = errno_codes.EIO
    urb_status: int = -errno_codes.EIO
    partial: bytes = b""  # data an IN control transfer had received before failing


class UsbNotAttached(UsbError):
    errno = errno_codes.ENODEV
    urb_status = -errno_codes.ENODEV


class UsbStall(UsbError):
    """The device answered STALL: a halted endpoint or a refused request."""

    errno = errno_codes.EPIPE
    urb_status = -errno_codes.EPIPE


class UsbTimeout(UsbError):
    """The transfer did not finish within its timeout (emulated time)."""

    errno = errno_codes.ETIMEDOUT
    urb_status = -errno_codes.ENOENT  # the kernel kills a timed-out URB: usbmon shows -ENOENT


class UsbBabble(UsbError):
    """The device sent more than the host asked for, or an oversized packet."""

    errno = errno_codes.EOVERFLOW
    urb_status = -errno_codes.EOVERFLOW


class UsbProtocolError(UsbError):
    """No handshake (three times), or a handshake that is illegal where it came."""

    errno = errno_codes.EPROTO
    urb_status = -errno_codes.EPROTO


# -- the wire ------------------------------------------------------------------------------


class UsbWire(Protocol):
    """What the host needs from "the other end of the cable".

    Transaction calls happen at the current emulated instant and do not move
    time.  ``advance(ns)`` lets the device side run for ``ns`` nanoseconds of
    emulated time and returns how many actually passed: it returns early when
    the device made an endpoint ready (VALID/STALL) or attached/detached.
    """

    def attached(self) -> bool: ...

    def bus_reset(self) -> None: ...

    def resume(self) -> None: ...

    def setup(self, addr: int, ep: int, data: bytes) -> Handshake: ...

    def out(self, addr: int, ep: int, data: bytes, data_pid: DataPid) -> Handshake: ...

    def in_(self, addr: int, ep: int) -> tuple[Handshake, bytes, DataPid | None]: ...

    def sof(self, frame_number: int) -> None: ...

    def now_ns(self) -> int: ...

    def advance(self, ns: int) -> int: ...


class DeviceRunner(Protocol):
    """The device side's clock, as :class:`ModelWire` needs it.

    The machine implements this on the real CPU: ``run_ns`` executes firmware
    (and timers) for up to ``ns`` of emulated time; ``stop`` may be called from
    inside ``run_ns`` (from an MMIO write hook) and makes it return as soon as
    the current translated block ends.  ``run_ns`` must forget a stop request
    made before it started, and must not overshoot ``ns`` by more than
    ``firmware_models.usb.SOF_SLACK_NS`` (or the device sees a missing SOF).
    """

    def now_ns(self) -> int: ...

    def run_ns(self, ns: int) -> None: ...

    def stop(self) -> None: ...


class ModelWire:
    """A :class:`UsbWire` onto a :class:`~firmware_models.usb.UsbDevice` model.

    ``timed=True`` (the default) is the full-speed bus of :mod:`emulator.usb.fullspeed`:
    every transaction occupies its wire time and the CPU runs during it; the
    device's engine decides its answer when the token has arrived and changes
    its registers when the handshake has ended (RM0008 §23.4.2), so the
    firmware never sees a packet before it could have crossed the cable.
    ``timed=False`` is a bus without time (a packet lands between two
    instructions): kept to show, in tests, what real stacks do on it.
    """

    def __init__(self, model: UsbDevice, runner: DeviceRunner, *, timed: bool = True) -> None:
        self.model = model
        self.runner = runner
        self.timed = timed
        self._ready_seen = False
        model.add_listener(self._on_model_event)

    def _on_model_event(self, what: object) -> None:
        if isinstance(what, EndpointReady | AttachChanged):
            self._ready_seen = True
            self.runner.stop()

    def take_ready(self) -> bool:
        """True once after the firmware made an endpoint VALID/STALL (or attach changed)."""
        seen, self._ready_seen = self._ready_seen, False
        return seen

    def _run_until(self, t: int) -> None:
        stuck = 0
        while self.runner.now_ns() < t:
            before = self.runner.now_ns()
            self.runner.run_ns(t - before)
            if self.runner.now_ns() == before:
                stuck += 1
                if stuck >= 3:
                    raise RuntimeError("the device side makes no progress during a transaction")

    def attached(self) -> bool:
        return self.model.attached()

    def bus_reset(self) -> None:
        self.model.bus_reset()

    def resume(self) -> None:
        self.model.resume()

    def _host_write(self, pid: int, addr: int, ep: int, data: bytes, data_pid: DataPid,
                    sample: Callable[[], tuple[Handshake, PendingTransaction | None]]) -> Handshake:
        start = self.runner.now_ns()
        self._run_until(start + fs.ns(fs.token_bits(pid, addr, ep)))
        hs, pending = sample()  # the engine decides when it has decoded the token
        after_data = fs.token_bits(pid, addr, ep) + fs.HOST_IPD_BITS + fs.data_bits(data_pid, data)
        tail = fs.HOST_TIMEOUT_BITS if hs is Handshake.TIMEOUT else fs.DEVICE_RESPONSE_BITS + fs.HANDSHAKE_BITS
        self._run_until(start + fs.ns(after_data + tail))
        self.model.complete(pending)  # CTR_RX, COUNT_RX, STAT_RX=NAK after the handshake
        return hs

    def setup(self, addr: int, ep: int, data: bytes) -> Handshake:
        if not self.timed:
            return self.model.setup(addr, ep, data)
        return self._host_write(fs.PID_SETUP, addr, ep, data, DataPid.DATA0,
                                lambda: self.model.sample_setup(addr, ep, data))

    def out(self, addr: int, ep: int, data: bytes, data_pid: DataPid) -> Handshake:
        if not self.timed:
            return self.model.out(addr, ep, data, data_pid)
        return self._host_write(fs.PID_OUT, addr, ep, data, data_pid,
                                lambda: self.model.sample_out(addr, ep, data, data_pid))

    def in_(self, addr: int, ep: int) -> tuple[Handshake, bytes, DataPid | None]:
        if not self.timed:
            return self.model.in_(addr, ep)
        start = self.runner.now_ns()
        token = fs.token_bits(fs.PID_IN, addr, ep)
        self._run_until(start + fs.ns(token))
        hs, payload, pid, pending = self.model.sample_in(addr, ep)
        if hs is Handshake.ACK:
            assert pid is not None
            tail = (fs.DEVICE_RESPONSE_BITS + fs.data_bits(pid, payload) + fs.HOST_IPD_BITS
                    + fs.HANDSHAKE_BITS)
        elif hs is Handshake.TIMEOUT:
            tail = fs.HOST_TIMEOUT_BITS
        else:
            tail = fs.DEVICE_RESPONSE_BITS + fs.HANDSHAKE_BITS
        self._run_until(start + fs.ns(token + tail))
        self.model.complete(pending)  # CTR_TX, DTOG_TX, STAT_TX=NAK after the host's ACK
        return hs, payload, pid

    def sof(self, frame_number: int) -> None:
        self.model.sof(frame_number)

    def now_ns(self) -> int:
        return self.runner.now_ns()

    def advance(self, ns: int) -> int:
        start = self.runner.now_ns()
        if ns > 0:
            self.runner.run_ns(ns)
        return self.runner.now_ns() - start


# -- records for monitors ------------------------------------------------------------------


class Token(enum.Enum):
    SETUP = "SETUP"
    OUT = "OUT"
    IN = "IN"


class TransferType(enum.IntEnum):
    """Numbered as usbmon's xfer_type (linux/Documentation/usb/usbmon.rst)."""

    ISOCHRONOUS = 0
    INTERRUPT = 1
    CONTROL = 2
    BULK = 3


@dataclass(frozen=True)
class Transaction:
    time_ns: int
    address: int
    endpoint: int  # endpoint number, no direction bit
    token: Token
    data_pid: DataPid | None  # of the data packet, if one was sent either way
    data: bytes
    handshake: Handshake


@dataclass
class Urb:
    """One transfer, as usbmon sees it."""

    urb_id: int
    transfer_type: TransferType
    address: int
    endpoint: int  # with 0x80 for IN
    length: int  # bytes requested (IN) or offered (OUT)
    setup: bytes | None = None
    data: bytes = b""  # OUT: data sent; IN: data received
    submit_ns: int = 0
    complete_ns: int = 0
    status: int = 0  # 0 or a negative errno
    interval: int = 0
    actual_length: int = 0

    @property
    def is_in(self) -> bool:
        return bool(self.endpoint & 0x80)


class UsbMonitor:
    """Base class for observers of the host; override what you need."""

    def transaction(self, tx: Transaction) -> None:  # noqa: B027 - optional hook
        pass

    def urb_submitted(self, urb: Urb) -> None:  # noqa: B027 - optional hook
        pass

    def urb_completed(self, urb: Urb) -> None:  # noqa: B027 - optional hook
        pass


# -- enumeration result ----------------------------------------------------------------------


@dataclass
class UsbDeviceInfo:
    """What enumeration learned about the device."""

    address: int
    device: DeviceDescriptor
    raw_device: bytes
    configurations: list[Configuration]
    raw_configurations: list[bytes]
    langids: list[int] = field(default_factory=list)
    strings: dict[int, str] = field(default_factory=dict)
    string_errors: dict[int, str] = field(default_factory=dict)  # index -> why it could not be read
    dfu_functional: DfuFunctionalDescriptor | None = None
    configuration_value: int = 0

    @property
    def ep0_mps(self) -> int:
        return self.device.bMaxPacketSize0

    def endpoint_mps(self, endpoint: int) -> int:
        for config in self.configurations:
            for intf in config.interfaces:
                for ep in intf.endpoints:
                    if ep.descriptor.bEndpointAddress == endpoint:
                        return ep.descriptor.wMaxPacketSize & 0x7FF
        raise ValueError(f"endpoint 0x{endpoint:02x} is in no configuration")


def setup_packet(bm_request_type: int, b_request: int, w_value: int, w_index: int, w_length: int) -> bytes:
    return struct.pack("<BBHHH", bm_request_type, b_request, w_value, w_index, w_length)


class VirtualHost:
    """A one-port USB host controller plus the bits of a USB core it needs."""

    def __init__(
        self,
        wire: UsbWire,
        *,
        bus_number: int = 1,
        nak_step_ns: int = 2_000,
        nak_step_max_ns: int = NS_PER_MS,
        attach_debounce_ms: int = 100,
        reset_recovery_ms: int = 10,
        set_address_recovery_ms: int = 2,
        model_bus_time: bool = True,
    ) -> None:
        self.wire = wire
        self.bus_number = bus_number
        self.nak_step_ns = nak_step_ns
        self.nak_step_max_ns = nak_step_max_ns
        self.attach_debounce_ms = attach_debounce_ms
        self.reset_recovery_ms = reset_recovery_ms
        self.set_address_recovery_ms = set_address_recovery_ms
        self.model_bus_time = model_bus_time
        self.monitors: list[UsbMonitor] = []
        self.device: UsbDeviceInfo | None = None
        self.frames_running = False
        self.frame_number = 0
        self._next_sof_ns = 0
        self._toggles: dict[tuple[int, int], DataPid] = {}  # (address, endpoint with dir) -> next PID
        self._urb_ids = itertools.count(0xFFFF_8800_0000_0000, 0x100)
        self._bus_debt_ns = 0.0
        self.transactions = 0
        # A wire with wire times (ModelWire(timed=True)) gets a paced controller;
        # any other wire keeps the bus without time, with bus time charged after
        # each transfer when model_bus_time is set.
        self.timed = bool(getattr(wire, "timed", False))
        self._bus_free_ns = 0
        self._sof_ns = fs.sof_ns()

    # -- monitors ---------------------------------------------------------------------------
    def add_monitor(self, monitor: UsbMonitor) -> None:
        self.monitors.append(monitor)

    def _record(self, tx: Transaction) -> None:
        self.transactions += 1
        if self.timed:
            self._bus_free_ns = self.wire.now_ns() + HOST_GAP_NS
        elif self.model_bus_time:
            # Token + data packet + handshake + turnarounds, in bit times (USB 2.0 §8.3-8.4).
            self._bus_debt_ns += (105 + 8 * len(tx.data)) * FS_BIT_NS
        for m in self.monitors:
            m.transaction(tx)

    # -- time and frames ------------------------------------------------------------------------
    def now_ns(self) -> int:
        return self.wire.now_ns()

    def advance(self, ns: int) -> int:
        """Let the device run ``ns`` of emulated time, sending an SOF at every
        frame boundary while the bus runs.  Returns early (the ns that passed)
        when the device made an endpoint ready."""
        start = self.wire.now_ns()
        target = start + max(0, int(ns))
        stuck = 0
        while True:
            now = self.wire.now_ns()
            self._send_due_sofs(now)
            if now >= target:
                break
            chunk_end = min(target, self._next_sof_ns) if self.frames_running else target
            self.wire.advance(chunk_end - now)
            after = self.wire.now_ns()
            if after == now:
                # No time passed at all: a stop request left over from before
                # this call.  Try again; a runner that never moves is a bug.
                stuck += 1
                if stuck >= 3:
                    raise RuntimeError("the device side makes no progress in advance()")
                continue
            stuck = 0
            if after < chunk_end:
                self._send_due_sofs(after)
                break  # the device has something for us
        return self.wire.now_ns() - start

    def wait_ms(self, ms: float) -> None:
        """Sleep in emulated time (e.g. a DFU bwPollTimeout), never returning early."""
        target = self.wire.now_ns() + int(ms * NS_PER_MS)
        while self.wire.now_ns() < target:
            self.advance(target - self.wire.now_ns())

    def _send_due_sofs(self, now: int) -> None:
        if not self.frames_running or now < self._next_sof_ns:
            return
        self.wire.sof(self.frame_number)
        self.frame_number = (self.frame_number + 1) & 0x7FF
        self._next_sof_ns += FRAME_NS
        while self._next_sof_ns <= now:  # the device side overshot: frames were not sent
            self._next_sof_ns += FRAME_NS
            self.frame_number = (self.frame_number + 1) & 0x7FF

    def _start_frames(self) -> None:
        self.frames_running = True
        self._next_sof_ns = self.wire.now_ns() + FRAME_NS

    def _pay_bus_time(self) -> None:
        if not self.timed and self._bus_debt_ns >= 1:
            debt = int(self._bus_debt_ns)
            self._bus_debt_ns -= debt
            self.wait_ms(debt / NS_PER_MS)

    # -- bus states -----------------------------------------------------------------------------
    def wait_attached(self, timeout_ms: float = 1000) -> None:
        """Run the device until it attaches (pull-up seen), then debounce."""
        deadline = self.wire.now_ns() + int(timeout_ms * NS_PER_MS)
        while not self.wire.attached():
            if self.wire.now_ns() >= deadline:
                raise UsbNotAttached("no device attached")
            self.advance(min(NS_PER_MS, deadline - self.wire.now_ns()))
        # USB 2.0 §7.1.7.3: the host waits TATTDB (100 ms) for the connection to settle.
        self.wait_ms(self.attach_debounce_ms)
        if not self.wire.attached():
            raise UsbNotAttached("device detached during debounce")

    def bus_reset(self) -> None:
        """Drive a USB reset, start frames, wait reset recovery (USB 2.0 §7.1.7.5)."""
        if not self.wire.attached():
            raise UsbNotAttached("no device attached")
        self.wire.bus_reset()
        self._toggles.clear()
        self._start_frames()
        self.wait_ms(self.reset_recovery_ms)

    def suspend(self) -> None:
        """Stop sending SOFs: after 3 ms the device detects suspend."""
        self.frames_running = False

    def resume(self, recovery_ms: float = 10) -> None:
        """Resume signalling, frames again, then TRSMRCY (USB 2.0 §7.1.7.7)."""
        self.wire.resume()
        self._start_frames()
        self.wait_ms(recovery_ms)

    # -- transaction helpers ------------------------------------------------------------------------
    def _check_deadline(self, deadline: int) -> None:
        if self.wire.now_ns() >= deadline:
            raise UsbTimeout("transfer timed out")

    def _retry_wait(self, step: int, deadline: int) -> int:
        """Let the device run before a retry; returns the next step."""
        self._check_deadline(deadline)
        wanted = min(step, deadline - self.wire.now_ns())
        passed = self.advance(wanted)
        if passed < wanted:
            return self.nak_step_ns  # the device just readied something: retry promptly
        return min(step * 2, self.nak_step_max_ns)

    def _transaction(self, token: Token, addr: int, ep: int, estimate_ns: int, deadline: int,
                     attempt: Callable[[], tuple[Handshake, bytes, DataPid | None]]) -> tuple[bytes, DataPid]:
        """One transaction, retried as a host controller does: NAK again and again until the
        timeout, no handshake three times (the xHCI/EHCI error counter), STALL never."""
        errors = 0
        step = self.nak_step_ns
        while True:
            started = self._start_slot(estimate_ns, deadline)
            hs, data, pid = attempt()
            self._record(Transaction(started, addr, ep, token, pid, data, hs))
            if hs is Handshake.ACK:
                return data, pid if pid is not None else DataPid.DATA0
            if token is Token.SETUP and hs is not Handshake.TIMEOUT:
                # USB 2.0 §8.5.3: a device must accept every SETUP.
                raise UsbProtocolError(f"device answered SETUP with {hs.value}")
            if hs is Handshake.STALL:
                raise UsbStall(f"endpoint 0x{ep | (0x80 if token is Token.IN else 0):02x} stalled")
            if hs is Handshake.TIMEOUT:
                errors += 1
                if errors >= 3:
                    raise UsbProtocolError("no handshake to SETUP" if token is Token.SETUP
                                           else f"no answer to {token.value} on endpoint {ep}")
                step = self._retry_wait(step, deadline)
            else:
                step = self._nak_wait(started, step, deadline)

    def _do_setup(self, addr: int, setup: bytes, deadline: int) -> None:
        estimate = fs.host_write_ns(fs.PID_SETUP, addr, 0, DataPid.DATA0, setup)
        self._transaction(Token.SETUP, addr, 0, estimate, deadline,
                          lambda: (self.wire.setup(addr, 0, setup), setup, DataPid.DATA0))

    def _do_in(self, addr: int, ep: int, deadline: int) -> tuple[bytes, DataPid]:
        estimate = fs.in_estimate_ns(addr, ep, self._reserved_mps(addr, ep))
        return self._transaction(Token.IN, addr, ep, estimate, deadline, lambda: self.wire.in_(addr, ep))

    def _do_out(self, addr: int, ep: int, data: bytes, pid: DataPid, deadline: int) -> None:
        estimate = fs.host_write_ns(fs.PID_OUT, addr, ep, pid, data)
        self._transaction(Token.OUT, addr, ep, estimate, deadline,
                          lambda: (self.wire.out(addr, ep, data, pid), data, pid))

    # -- the host controller's schedule on the timed bus (docs/USB_BUS.md) --------------------------
    def _run_to(self, t: int) -> None:
        while self.wire.now_ns() < t:
            self.advance(t - self.wire.now_ns())

    def _start_slot(self, estimate_ns: int, deadline: int) -> int:
        """Wait until the controller may start a transaction of ``estimate_ns``; returns its start time.

        After the previous transaction and the host's gap; never over a frame's
        SOF; never unless it ends before EOF1 of its frame (USB 2.0 §11.2.5),
        otherwise right after the next SOF.
        """
        self._check_deadline(deadline)
        if not self.timed:
            return self.wire.now_ns()
        start = max(self.wire.now_ns(), self._bus_free_ns)
        if self.frames_running:
            nxt = self._next_sof_ns
            frame = nxt - FRAME_NS if start < nxt else nxt + (start - nxt) // FRAME_NS * FRAME_NS
            first = frame + self._sof_ns + HOST_GAP_NS
            if start < first:
                start = first
            if start + estimate_ns + EOF1_NS > frame + FRAME_NS:
                start = first + FRAME_NS
        self._run_to(start)
        self.wire.take_ready()
        return start

    def _nak_wait(self, started: int, step: int, deadline: int) -> int:
        """After a NAK the controller retries the same transaction back to back until
        the device answers otherwise (as a full-speed controller walking its
        control/bulk list does).  A NAK changes nothing in the device, so the
        retries whose answer cannot differ are skipped: the CPU runs until the
        firmware makes an endpoint VALID or STALL, and the transaction is retried
        at the first slot of the back-to-back retry train after that instant."""
        if not self.timed:
            return self._retry_wait(step, deadline)
        now = self.wire.now_ns()
        period = now - started + HOST_GAP_NS
        origin = now + HOST_GAP_NS
        if not self.wire.take_ready():
            self._check_deadline(deadline)
            self.advance(deadline - now)
            self.wire.take_ready()
        behind = self.wire.now_ns() - origin
        self._bus_free_ns = origin + max(0, -(-behind // period)) * period
        return step

    # -- URB bookkeeping --------------------------------------------------------------------------
    def _submit(self, urb: Urb) -> None:
        urb.submit_ns = self.wire.now_ns()
        for m in self.monitors:
            m.urb_submitted(urb)

    def _complete(self, urb: Urb, status: int) -> None:
        urb.status = status
        urb.complete_ns = self.wire.now_ns()
        urb.actual_length = len(urb.data)
        for m in self.monitors:
            m.urb_completed(urb)

    # -- control transfers --------------------------------------------------------------------------
    def control_transfer(
        self,
        addr: int,
        bm_request_type: int,
        b_request: int,
        w_value: int,
        w_index: int,
        data_or_length: bytes | int = 0,
        timeout_ms: float = 5000,
        *,
        ep0_mps: int | None = None,
    ) -> bytes | int:
        """A control transfer on endpoint 0 (USB 2.0 §8.5.3).

        For device-to-host requests ``data_or_length`` is wLength and the data
        read is returned; otherwise it is the data to send (bytes) and the
        number of bytes sent is returned.
        """
        is_in = bool(bm_request_type & 0x80)
        if is_in:
            length = int(data_or_length) if not isinstance(data_or_length, bytes | bytearray) else len(data_or_length)
            payload = b""
        else:
            payload = bytes(data_or_length) if isinstance(data_or_length, bytes | bytearray) else b""
            length = len(payload)
        if length > 0xFFFF:
            raise ValueError("wLength is 16 bits")
        mps = ep0_mps or (self.device.ep0_mps if self.device and self.device.address == addr else 64)
        setup = setup_packet(bm_request_type, b_request, w_value, w_index, length)
        urb = Urb(next(self._urb_ids), TransferType.CONTROL, addr, 0x80 if is_in else 0x00, length, setup, payload)
        self._submit(urb)
        if not is_in:
            urb.data = b""
        deadline = self.wire.now_ns() + int(timeout_ms * NS_PER_MS)
        received = bytearray()
        try:
            if not self.wire.attached():
                raise UsbNotAttached("device not attached")
            self._do_setup(addr, setup, deadline)
            if is_in:
                pid = DataPid.DATA1
                while len(received) < length:
                    chunk, got_pid = self._do_in(addr, 0, deadline)
                    if got_pid != pid:
                        continue  # a repeated packet whose ACK the device missed: ignore it
                    pid = DataPid(pid ^ 1)
                    if len(chunk) > mps or len(received) + len(chunk) > length:
                        raise UsbBabble(f"device sent {len(chunk)} bytes (max packet {mps}, "
                                        f"{length - len(received)} still expected)")
                    received += chunk
                    if len(chunk) < mps:
                        break  # short packet: end of the data stage
                urb.data = bytes(received)
                # Status stage: zero-length OUT, DATA1.
                self._do_out(addr, 0, b"", DataPid.DATA1, deadline)
                result: bytes | int = bytes(received)
            else:
                pid = DataPid.DATA1
                for offset in range(0, length, mps):
                    self._do_out(addr, 0, payload[offset : offset + mps], pid, deadline)
                    pid = DataPid(pid ^ 1)
                    urb.data = payload[: offset + mps]
                # Status stage: zero-length IN, DATA1.
                status, _ = self._do_in(addr, 0, deadline)
                if status:
                    raise UsbBabble(f"device sent {len(status)} bytes in the status stage")
                result = length
        except UsbError as exc:
            if is_in:
                exc.partial = urb.data = bytes(received)
            self._complete(urb, exc.urb_status)
            self._pay_bus_time()
            raise
        self._complete(urb, 0)
        self._pay_bus_time()
        return result

    # -- bulk and interrupt ---------------------------------------------------------------------------
    def _toggle(self, addr: int, endpoint: int) -> DataPid:
        return self._toggles.get((addr, endpoint), DataPid.DATA0)

    def reset_toggles(self, addr: int, endpoint: int | None = None) -> None:
        for key in list(self._toggles):
            if key[0] == addr and (endpoint is None or key[1] == endpoint):
                del self._toggles[key]

    def _data_out(
        self, kind: TransferType, addr: int, endpoint: int, data: bytes, mps: int, timeout_ms: float, zlp: bool
    ) -> int:
        data = bytes(data)
        urb = Urb(next(self._urb_ids), kind, addr, endpoint & 0x7F, len(data), None, data,
                  interval=self._interval(addr, endpoint & 0x7F, kind))
        self._submit(urb)
        deadline = self.wire.now_ns() + int(timeout_ms * NS_PER_MS)
        key = (addr, endpoint & 0x7F)
        sent = 0
        try:
            if not self.wire.attached():
                raise UsbNotAttached("device not attached")
            chunks = [data[i : i + mps] for i in range(0, len(data), mps)] or [b""]
            if zlp and data and len(data) % mps == 0:
                chunks.append(b"")
            for chunk in chunks:
                self._do_out(addr, endpoint & 0x0F, chunk, self._toggle(*key), deadline)
                self._toggles[key] = DataPid(self._toggle(*key) ^ 1)
                sent += len(chunk)
        except UsbError as exc:
            urb.data = data[:sent]
            self._complete(urb, exc.urb_status)
            self._pay_bus_time()
            raise
        self._complete(urb, 0)
        self._pay_bus_time()
        return sent

    def _data_in(
        self, kind: TransferType, addr: int, endpoint: int, length: int, mps: int, timeout_ms: float
    ) -> bytes:
        urb = Urb(next(self._urb_ids), kind, addr, endpoint | 0x80, length,
                  interval=self._interval(addr, endpoint | 0x80, kind))
        self._submit(urb)
        deadline = self.wire.now_ns() + int(timeout_ms * NS_PER_MS)
        key = (addr, endpoint | 0x80)
        received = bytearray()
        try:
            if not self.wire.attached():
                raise UsbNotAttached("device not attached")
            while len(received) < length or length == 0:
                chunk, pid = self._do_in(addr, endpoint & 0x0F, deadline)
                if pid != self._toggle(*key):
                    continue  # retransmission of a packet already taken (USB 2.0 §8.6.4)
                self._toggles[key] = DataPid(pid ^ 1)
                if len(chunk) > mps or len(received) + len(chunk) > length:
                    urb.data = bytes(received)
                    raise UsbBabble(f"endpoint 0x{endpoint | 0x80:02x} sent {len(chunk)} bytes")
                received += chunk
                if len(chunk) < mps or length == 0:
                    break
        except UsbError as exc:
            urb.data = bytes(received)
            self._complete(urb, exc.urb_status)
            self._pay_bus_time()
            raise
        urb.data = bytes(received)
        self._complete(urb, 0)
        self._pay_bus_time()
        return bytes(received)

    def _interval(self, addr: int, endpoint: int, kind: TransferType) -> int:
        if kind is not TransferType.INTERRUPT or self.device is None or self.device.address != addr:
            return 0
        for config in self.device.configurations:
            for intf in config.interfaces:
                for ep in intf.endpoints:
                    if ep.descriptor.bEndpointAddress == endpoint:
                        return ep.descriptor.bInterval
        return 0

    def _reserved_mps(self, addr: int, endpoint: int) -> int:
        """The packet size a controller budgets for an IN: the endpoint's, or 64 (the
        full-speed maximum for control and bulk) before the device is known."""
        if self.device is None or self.device.address != addr:
            return 64
        if endpoint == 0:
            return self.device.ep0_mps
        try:
            return self.device.endpoint_mps(endpoint | 0x80)
        except ValueError:
            return 64

    def _mps(self, addr: int, endpoint: int, mps: int | None) -> int:
        if mps is not None:
            return mps
        if self.device is None or self.device.address != addr:
            raise ValueError("max packet size unknown: enumerate first or pass mps")
        return self.device.endpoint_mps(endpoint)

    def bulk_out(self, addr: int, endpoint: int, data: bytes, timeout_ms: float = 1000,
                 *, mps: int | None = None, zlp: bool = False) -> int:
        return self._data_out(TransferType.BULK, addr, endpoint, data, self._mps(addr, endpoint & 0x7F, mps),
                              timeout_ms, zlp)

    def bulk_in(self, addr: int, endpoint: int, length: int, timeout_ms: float = 1000,
                *, mps: int | None = None) -> bytes:
        return self._data_in(TransferType.BULK, addr, endpoint, length, self._mps(addr, endpoint | 0x80, mps),
                             timeout_ms)

    def interrupt_out(self, addr: int, endpoint: int, data: bytes, timeout_ms: float = 1000,
                      *, mps: int | None = None) -> int:
        return self._data_out(TransferType.INTERRUPT, addr, endpoint, data,
                              self._mps(addr, endpoint & 0x7F, mps), timeout_ms, False)

    def interrupt_in(self, addr: int, endpoint: int, length: int, timeout_ms: float = 1000,
                     *, mps: int | None = None) -> bytes:
        return self._data_in(TransferType.INTERRUPT, addr, endpoint, length,
                             self._mps(addr, endpoint | 0x80, mps), timeout_ms)

    # -- standard requests ---------------------------------------------------------------------------
    def get_descriptor(self, addr: int, dtype: int, index: int, length: int, lang: int = 0,
                       timeout_ms: float = 5000, *, ep0_mps: int | None = None) -> bytes:
        data = self.control_transfer(addr, 0x80, GET_DESCRIPTOR, (dtype << 8) | index, lang, length,
                                     timeout_ms, ep0_mps=ep0_mps)
        assert isinstance(data, bytes)
        return data

    def get_string(self, addr: int, index: int, langid: int = LANGID_EN_US, timeout_ms: float = 5000) -> str:
        raw = self.get_descriptor(addr, DT_STRING, index, 255, langid, timeout_ms)
        if len(raw) < 2 or raw[1] != DT_STRING:
            raise UsbProtocolError(f"string {index}: not a string descriptor")
        return StringDescriptor.parse(raw[: raw[0]]).string

    def set_configuration(self, addr: int, value: int, timeout_ms: float = 5000) -> None:
        self.control_transfer(addr, 0x00, SET_CONFIGURATION, value, 0, b"", timeout_ms)
        self.reset_toggles(addr)
        if self.device is not None and self.device.address == addr:
            self.device.configuration_value = value

    def get_configuration(self, addr: int, timeout_ms: float = 5000) -> int:
        data = self.control_transfer(addr, 0x80, GET_CONFIGURATION, 0, 0, 1, timeout_ms)
        assert isinstance(data, bytes)
        if len(data) != 1:
            raise UsbProtocolError("GET_CONFIGURATION returned no byte")
        return data[0]

    def set_interface(self, addr: int, interface: int, alt_setting: int, timeout_ms: float = 5000) -> None:
        self.control_transfer(addr, 0x01, SET_INTERFACE, alt_setting, interface, b"", timeout_ms)
        if self.device is not None and self.device.address == addr:
            for config in self.device.configurations:
                for intf in config.alt_settings(interface):
                    for ep in intf.endpoints:
                        self.reset_toggles(addr, ep.descriptor.bEndpointAddress)

    def clear_halt(self, addr: int, endpoint: int, timeout_ms: float = 5000) -> None:
        self.control_transfer(addr, 0x02, CLEAR_FEATURE, ENDPOINT_HALT, endpoint, b"", timeout_ms)
        self.reset_toggles(addr, endpoint)

    def get_status(self, addr: int, timeout_ms: float = 5000) -> int:
        data = self.control_transfer(addr, 0x80, GET_STATUS, 0, 0, 2, timeout_ms)
        assert isinstance(data, bytes)
        return struct.unpack("<H", data.ljust(2, b"\0"))[0]

    # -- enumeration --------------------------------------------------------------------------------
    def enumerate(
        self,
        address: int = 1,
        *,
        configure: bool = True,
        first_request: int = 64,
        second_reset: bool = True,
        read_strings: bool = True,
        timeout_ms: float = 5000,
    ) -> UsbDeviceInfo:
        """Enumerate the attached device the way Linux's hub driver does.

        ``first_request=64`` is the "new scheme": GET_DESCRIPTOR(device) for 64
        bytes assuming a 64-byte EP0, keeping only bMaxPacketSize0, then a
        second reset; ``first_request=8`` is the old scheme (8 bytes at
        max packet 8).  Then SET_ADDRESS, the full device descriptor, each
        configuration (9 bytes, then wTotalLength), the strings, and
        SET_CONFIGURATION of the first configuration.
        """
        self.device = None
        self.wait_attached()
        self.bus_reset()
        try:
            head = self.get_descriptor(0, DT_DEVICE, 0, first_request, timeout_ms=timeout_ms,
                                       ep0_mps=64 if first_request >= 64 else 8)
        except (UsbStall, UsbTimeout, UsbProtocolError) as exc:
            # Like Linux's hub_port_init: what counts is that the first 8 bytes
            # arrived; a failed status stage of this first read is forgiven.
            if len(exc.partial) < 8:
                raise
            head = exc.partial
        if len(head) < 8 or head[1] != DT_DEVICE:
            raise UsbProtocolError(f"bad first device descriptor read: {head.hex()}")
        mps0 = head[7]
        if mps0 not in (8, 16, 32, 64):
            raise UsbProtocolError(f"invalid bMaxPacketSize0 {mps0}")
        if second_reset and first_request >= 64:
            self.bus_reset()
        self.control_transfer(0, 0x00, SET_ADDRESS, address, 0, b"", timeout_ms, ep0_mps=mps0)
        self.wait_ms(self.set_address_recovery_ms)  # USB 2.0 §9.2.6.3
        raw_device = self.get_descriptor(address, DT_DEVICE, 0, 18, timeout_ms=timeout_ms, ep0_mps=mps0)
        try:
            device = DeviceDescriptor.parse(raw_device)
        except DescriptorError as exc:
            raise UsbProtocolError(f"device descriptor: {exc}") from exc
        info = UsbDeviceInfo(address, device, raw_device, [], [])
        self.device = info
        for index in range(device.bNumConfigurations):
            head = self.get_descriptor(address, DT_CONFIGURATION, index, 9, timeout_ms=timeout_ms)
            if len(head) < 4:
                raise UsbProtocolError("short configuration descriptor")
            total = struct.unpack_from("<H", head, 2)[0]
            raw = self.get_descriptor(address, DT_CONFIGURATION, index, total, timeout_ms=timeout_ms)
            try:
                info.configurations.append(parse_configuration(raw))
            except DescriptorError as exc:
                raise UsbProtocolError(f"configuration {index}: {exc}") from exc
            info.raw_configurations.append(raw)
        if read_strings:
            self._read_strings(info, timeout_ms)
        info.dfu_functional = next(
            (c.dfu_functional for c in info.configurations if c.dfu_functional is not None), None
        )
        if info.dfu_functional is None and any(
            i.descriptor.is_dfu for c in info.configurations for i in c.interfaces
        ):
            # dfu-util's fallback when the functional descriptor is not in the configuration.
            try:
                raw = self.get_descriptor(address, DT_DFU_FUNCTIONAL, 0, 9, timeout_ms=timeout_ms)
                info.dfu_functional = DfuFunctionalDescriptor.parse(raw)
            except (UsbStall, DescriptorError):
                pass
        if configure and info.configurations:
            self.set_configuration(address, info.configurations[0].descriptor.bConfigurationValue, timeout_ms)
        return info

    def _read_strings(self, info: UsbDeviceInfo, timeout_ms: float) -> None:
        indexes = [info.device.iManufacturer, info.device.iProduct, info.device.iSerialNumber]
        for config in info.configurations:
            indexes.append(config.descriptor.iConfiguration)
            indexes += [i.descriptor.iInterface for i in config.interfaces]
        wanted = sorted({i for i in indexes if i})
        if not wanted:
            return
        try:
            raw = self.get_descriptor(info.address, DT_STRING, 0, 255, 0, timeout_ms)
        except UsbStall:
            for index in wanted:
                info.string_errors[index] = "stalled (no LANGID table)"
            return  # no string support: Linux carries on without strings
        info.langids = StringDescriptor.parse(raw[: raw[0]] if raw else b"\x02\x03").langids
        lang = info.langids[0] if info.langids else LANGID_EN_US
        for index in wanted:
            try:
                info.strings[index] = self.get_string(info.address, index, lang, timeout_ms)
            except UsbStall:
                info.string_errors[index] = "stalled"  # Linux keeps going without that string
                continue


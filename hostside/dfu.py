"""DFU 1.1 and ST DfuSe client, written to read like the specs.

* USB DFU 1.1 (usb.org, "Device Class Specification for Device Firmware
  Upgrade"): requests §3, GETSTATUS §6.1.2, states and status codes §6.1.2 tables.
* DfuSe 1.1a (ST UM0424 / AN3156): block 0 of DNLOAD carries commands
  (0x21 SET_ADDRESS_POINTER, 0x41 ERASE, 0x92 READ_UNPROTECT), blocks n >= 2 carry
  data for ``pointer + (n - 2) * wTransferSize``; UPLOAD block 0 lists the commands.

The wire sequences follow what dfu-util 0.11 sends (docs/SEED_BOOTLOADER.md, DFU hosts): every
command is followed by GETSTATUS polls that honour ``bwPollTimeout`` through
``transport.wait_ms``, and the state is checked after each.  The library never
prints or exits: it raises the typed exceptions below and reports progress
through a callback.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from hostside.dfuse_layout import MemoryLayout, RegionError
from hostside.files import FirmwareImage
from hostside.transport import (
    DEFAULT_TIMEOUT_MS,
    DeviceGone,
    DeviceInfo,
    DfuAltSetting,
    Transport,
    TransportError,
    TransportStall,
    TransportTimeout,
)

# bmRequestType for class requests to an interface (USB 2.0 §9.3.1).
REQ_OUT = 0x21
REQ_IN = 0xA1

LINUX_MAX_TRANSFER = 4096  # usbfs caps a control transfer at one page; dfu-util caps wTransferSize to it
MAX_ZERO_TIMEOUT_POLLS = 100  # dfu-util gives up on a device that says busy with 0 ms this often
MAX_IDLE_ATTEMPTS = 8


class DfuRequest(IntEnum):
    """DFU 1.1 §3, table 3.2."""

    DETACH = 0
    DNLOAD = 1
    UPLOAD = 2
    GETSTATUS = 3
    CLRSTATUS = 4
    GETSTATE = 5
    ABORT = 6


class DfuState(IntEnum):
    """DFU 1.1 §6.1.2, bState values."""

    appIDLE = 0
    appDETACH = 1
    dfuIDLE = 2
    dfuDNLOAD_SYNC = 3
    dfuDNBUSY = 4
    dfuDNLOAD_IDLE = 5
    dfuMANIFEST_SYNC = 6
    dfuMANIFEST = 7
    dfuMANIFEST_WAIT_RESET = 8
    dfuUPLOAD_IDLE = 9
    dfuERROR = 10


class DfuStatus(IntEnum):
    """DFU 1.1 §6.1.2, bStatus values."""

    OK = 0x00
    errTARGET = 0x01
    errFILE = 0x02
    errWRITE = 0x03
    errERASE = 0x04
    errCHECK_ERASED = 0x05
    errPROG = 0x06
    errVERIFY = 0x07
    errADDRESS = 0x08
    errNOTDONE = 0x09
    errFIRMWARE = 0x0A
    errVENDOR = 0x0B
    errUSBR = 0x0C
    errPOR = 0x0D
    errUNKNOWN = 0x0E
    errSTALLEDPKT = 0x0F


class DfuseCommand(IntEnum):
    """UM0424 §5 / AN3156 §6: the first byte of a DNLOAD block 0."""

    GET_COMMANDS = 0x00
    SET_ADDRESS_POINTER = 0x21
    ERASE = 0x41
    READ_UNPROTECT = 0x92


def state_name(value: int) -> str:
    try:
        return DfuState(value).name
    except ValueError:
        return f"state {value}"


def status_name(value: int) -> str:
    try:
        return DfuStatus(value).name
    except ValueError:
        return f"status {value}"


# -- exceptions ---------------------------------------------------------------------------
class DfuException(Exception):
    """Base of everything the DFU client raises."""


class DfuError(DfuException):
    """The device reported a bStatus other than OK (or entered dfuERROR)."""

    def __init__(self, status: int, state: int, context: str = "") -> None:
        self.status = status
        self.state = state
        self.context = context
        where = f"{context}: " if context else ""
        super().__init__(f"{where}device reports {status_name(status)} (state {state_name(state)})")

    @property
    def status_name(self) -> str:
        return status_name(self.status)

    @property
    def state_name(self) -> str:
        return state_name(self.state)


class DfuStateError(DfuException):
    """The device is in a state the protocol does not allow at this point."""

    def __init__(self, actual: int, expected: Iterable[int], context: str = "") -> None:
        self.actual = actual
        self.expected = tuple(expected)
        want = " or ".join(state_name(s) for s in self.expected)
        where = f"{context}: " if context else ""
        super().__init__(f"{where}device is in {state_name(actual)}, expected {want}")


class DfuStall(DfuException):
    """The device stalled a DFU request."""

    def __init__(self, request: str) -> None:
        self.request = request
        super().__init__(f"device stalled {request}")


class DfuTimeout(DfuException):
    """A DFU request timed out (or the device stayed busy too long)."""

    def __init__(self, request: str, detail: str = "") -> None:
        self.request = request
        super().__init__(f"{request} timed out" + (f" ({detail})" if detail else ""))


class DfuDeviceGone(DfuException):
    """The device disappeared in the middle of an operation."""

    def __init__(self, request: str) -> None:
        self.request = request
        super().__init__(f"device disappeared during {request}")


class DfuTransportError(DfuException):
    """Any other USB-level failure."""


class DfuUnsupported(DfuException):
    """The operation needs something the device does not offer (DfuSe, upload, ...)."""


class DfuVerifyError(DfuException):
    """Read-back differs from what was written."""

    def __init__(self, first_address: int, differing: int, compared: int) -> None:
        self.first_address = first_address
        self.differing = differing
        self.compared = compared
        super().__init__(
            f"verify failed: {differing} of {compared} bytes differ, first at 0x{first_address:08X}")


# -- reports ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DfuStatusResponse:
    """The 6-byte GETSTATUS answer (DFU 1.1 §6.1.2)."""

    status: int
    poll_timeout_ms: int
    state: int
    istring: int

    @classmethod
    def parse(cls, raw: bytes) -> DfuStatusResponse:
        if len(raw) < 6:
            raise DfuTransportError(f"GETSTATUS returned {len(raw)} bytes, expected 6")
        return cls(raw[0], raw[1] | raw[2] << 8 | raw[3] << 16, raw[4], raw[5])

    @property
    def is_error(self) -> bool:
        return self.status != DfuStatus.OK or self.state == DfuState.dfuERROR


@dataclass(frozen=True)
class BusyTiming:
    """How long a command kept the device busy, as the host saw it."""

    command: str
    address: int | None
    polls: int  # GETSTATUS requests sent
    poll_wait_ms: int  # sum of bwPollTimeout waited
    elapsed_ns: int  # transport clock from the command to the last poll (emulated or wall)


@dataclass(frozen=True)
class ProgressEvent:
    phase: str  # "erase", "download", "upload", "verify", "mass-erase", "leave"
    done: int
    total: int
    address: int | None = None
    timing: BusyTiming | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class DownloadReport:
    bytes_written: int = 0
    chunks: int = 0
    erases: list[BusyTiming] = field(default_factory=list)
    elapsed_ns: int = 0

    @property
    def erase_busy_ns(self) -> int:
        return sum(e.elapsed_ns for e in self.erases)


@dataclass(frozen=True)
class LeaveResult:
    last_state: int | None
    vanished: bool  # the device went away after manifestation (the expected end for ST's class)


@dataclass(frozen=True)
class VerifyResult:
    compared: int
    segments: int


# -- the client ------------------------------------------------------------------------------------
class DfuClient:
    """One DFU interface alt setting of one device, behind a ``Transport``."""

    def __init__(
        self,
        transport: Transport,
        alt: int | str | DfuAltSetting = 0,
        *,
        interface: int | None = None,
        transfer_size: int | None = None,
        max_transfer: int | None = LINUX_MAX_TRANSFER,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.transport = transport
        self.info: DeviceInfo = transport.device_info()
        if isinstance(alt, DfuAltSetting):
            self.alt_setting: DfuAltSetting = alt
        else:
            try:
                self.alt_setting = self.info.find_alt(alt, interface)
            except LookupError as exc:
                raise DfuUnsupported(f"device has no DFU alternate setting {alt!r}") from exc
        self.interface = self.alt_setting.interface
        self.functional = self.info.functional
        self.device_transfer_size = self.functional.transfer_size
        size = transfer_size if transfer_size is not None else self.device_transfer_size
        if transfer_size is None and max_transfer is not None:
            size = min(size, max_transfer)
        if size <= 0:
            raise ValueError("transfer size must be positive")
        self.transfer_size = size
        self.timeout_ms = timeout_ms
        self.progress = progress
        self.last_status: DfuStatusResponse | None = None

    @property
    def is_dfuse(self) -> bool:
        return self.functional.is_dfuse

    # -- transport plumbing ------------------------------------------------------------
    def _emit(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def _out(self, request: DfuRequest, value: int, data: bytes, what: str | None = None) -> int:
        try:
            return self.transport.control_out(REQ_OUT, request, value, self.interface, data, self.timeout_ms)
        except TransportError as exc:
            raise self._wrap(exc, what or request.name) from exc

    def _in(self, request: DfuRequest, value: int, length: int, what: str | None = None) -> bytes:
        try:
            return self.transport.control_in(REQ_IN, request, value, self.interface, length, self.timeout_ms)
        except TransportError as exc:
            raise self._wrap(exc, what or request.name) from exc

    @staticmethod
    def _wrap(exc: TransportError, what: str) -> DfuException:
        if isinstance(exc, TransportStall):
            return DfuStall(what)
        if isinstance(exc, TransportTimeout):
            return DfuTimeout(what)
        if isinstance(exc, DeviceGone):
            return DfuDeviceGone(what)
        return DfuTransportError(f"{what}: {exc}")

    # -- one method per DFU 1.1 request -----------------------------------------------------
    def detach(self, timeout_ms: int = 1000) -> None:
        """DFU_DETACH (§5.1): ask a run-time device to enter DFU mode within ``timeout_ms``."""
        self._out(DfuRequest.DETACH, timeout_ms & 0xFFFF, b"")

    def dnload(self, block: int, data: bytes) -> int:
        """DFU_DNLOAD (§6.1.1): send ``data`` as block ``block``; zero length ends the download."""
        return self._out(DfuRequest.DNLOAD, block & 0xFFFF, data, f"DNLOAD block {block}")

    def upload(self, block: int, length: int) -> bytes:
        """DFU_UPLOAD (§6.2): read up to ``length`` bytes of block ``block``; short means the end."""
        return self._in(DfuRequest.UPLOAD, block & 0xFFFF, length, f"UPLOAD block {block}")

    def get_status(self) -> DfuStatusResponse:
        """DFU_GETSTATUS (§6.1.2): status, poll timeout and state; moves the device's state machine."""
        st = DfuStatusResponse.parse(self._in(DfuRequest.GETSTATUS, 0, 6))
        self.last_status = st
        return st

    def clr_status(self) -> None:
        """DFU_CLRSTATUS (§6.1.3): leave dfuERROR for dfuIDLE."""
        self._out(DfuRequest.CLRSTATUS, 0, b"")

    def get_state(self) -> DfuState | int:
        """DFU_GETSTATE (§6.1.5): the state alone, without side effects."""
        raw = self._in(DfuRequest.GETSTATE, 0, 1)
        if len(raw) != 1:
            raise DfuTransportError(f"GETSTATE returned {len(raw)} bytes")
        try:
            return DfuState(raw[0])
        except ValueError:
            return raw[0]

    def abort(self) -> None:
        """DFU_ABORT (§6.1.4): back to dfuIDLE from the idle/sync states."""
        self._out(DfuRequest.ABORT, 0, b"")

    # -- state handling ------------------------------------------------------------------------
    def _check(self, st: DfuStatusResponse, context: str) -> None:
        if st.is_error:
            raise DfuError(st.status, st.state, context)

    def _expect(self, st: DfuStatusResponse, states: Iterable[int], context: str) -> None:
        self._check(st, context)
        wanted = tuple(states)
        if st.state not in wanted:
            raise DfuStateError(st.state, wanted, context)

    def start(self) -> DfuStatusResponse:
        """SET_INTERFACE to our alt setting, then bring the device to dfuIDLE like dfu-util.

        GETSTATUS first; only from dfuERROR is CLRSTATUS sent, only from an idle
        down/upload state ABORT (docs/SEED_BOOTLOADER.md, DFU hosts)."""
        try:
            self.transport.set_alt_setting(self.interface, self.alt_setting.alt)
        except TransportError as exc:
            raise self._wrap(exc, "SET_INTERFACE") from exc
        return self.ensure_idle()

    def ensure_idle(self) -> DfuStatusResponse:
        for _ in range(MAX_IDLE_ATTEMPTS):
            st = self.get_status()
            self.transport.wait_ms(st.poll_timeout_ms)
            if st.state in (DfuState.appIDLE, DfuState.appDETACH):
                raise DfuStateError(st.state, [DfuState.dfuIDLE], "device is in run-time mode (detach it first)")
            if st.state == DfuState.dfuERROR:
                self.clr_status()
                continue
            if st.state in (DfuState.dfuDNLOAD_IDLE, DfuState.dfuUPLOAD_IDLE, DfuState.dfuDNLOAD_SYNC,
                            DfuState.dfuMANIFEST_SYNC):
                self.abort()
                continue
            if st.state == DfuState.dfuIDLE:
                if st.status != DfuStatus.OK:
                    self.clr_status()
                    continue
                return st
            if st.state == DfuState.dfuDNBUSY:
                continue  # still finishing an operation: the wait above covered its poll timeout
            raise DfuStateError(st.state, [DfuState.dfuIDLE], "start")
        raise DfuStateError(self.last_status.state if self.last_status else -1, [DfuState.dfuIDLE],
                            "device does not return to dfuIDLE")

    def abort_to_idle(self) -> DfuStatusResponse:
        """ABORT, then GETSTATUS must say dfuIDLE (dfu-util ``dfu_abort_to_idle``)."""
        self.abort()
        st = self.get_status()
        self._expect(st, [DfuState.dfuIDLE], "ABORT")
        self.transport.wait_ms(st.poll_timeout_ms)
        return st

    def _poll_until(self, done_states: Iterable[int], context: str, *, first_must_be_busy: bool = False,
                    address: int | None = None) -> tuple[DfuStatusResponse, BusyTiming]:
        """GETSTATUS, wait bwPollTimeout, repeat while dfuDNBUSY (or not yet in ``done_states``)."""
        done = tuple(done_states)
        t0 = self.transport.now_ns()
        polls = waited = zero_polls = 0
        first = True
        while True:
            try:
                st = self.get_status()
            except DfuTimeout as exc:
                # The device is still busy (ST's class runs erases inside the USB interrupt).
                raise DfuTimeout(f"GETSTATUS after {context}",
                                 f"no answer within {self.timeout_ms} ms") from exc
            polls += 1
            if st.is_error:
                raise DfuError(st.status, st.state, context)
            if first and first_must_be_busy and st.state != DfuState.dfuDNBUSY:
                # dfu-util: "Wrong state after command download"
                raise DfuStateError(st.state, [DfuState.dfuDNBUSY], context)
            first = False
            self.transport.wait_ms(st.poll_timeout_ms)
            waited += st.poll_timeout_ms
            if st.state in done and st.state != DfuState.dfuDNBUSY:
                break
            if st.state not in (DfuState.dfuDNBUSY, DfuState.dfuDNLOAD_SYNC, DfuState.dfuMANIFEST_SYNC):
                raise DfuStateError(st.state, done, context)
            zero_polls = zero_polls + 1 if st.poll_timeout_ms == 0 else 0
            if zero_polls >= MAX_ZERO_TIMEOUT_POLLS:
                raise DfuTimeout(context, "device stays busy with a zero poll timeout")
        timing = BusyTiming(context, address, polls, waited, self.transport.now_ns() - t0)
        return st, timing

    # -- DfuSe commands ----------------------------------------------------------------------------
    def _require_dfuse(self, what: str) -> None:
        if not self.is_dfuse:
            raise DfuUnsupported(f"{what} needs a DfuSe device (bcdDFUVersion 0x011A), "
                                 f"this one is 0x{self.functional.dfu_version:04X}")

    def dfuse_command(self, payload: bytes, name: str, address: int | None = None) -> BusyTiming:
        """DNLOAD block 0 with a DfuSe command, then poll: the first GETSTATUS must be dfuDNBUSY,
        then wait bwPollTimeout and poll until not busy; ends in dfuDNLOAD-IDLE."""
        self._require_dfuse(name)
        self._out(DfuRequest.DNLOAD, 0, payload, name)
        _st, timing = self._poll_until([DfuState.dfuDNLOAD_IDLE], name, first_must_be_busy=True,
                                       address=address)
        return timing

    def set_address(self, address: int) -> BusyTiming:
        """SET_ADDRESS_POINTER (0x21 + 32-bit little-endian address)."""
        return self.dfuse_command(struct.pack("<BI", DfuseCommand.SET_ADDRESS_POINTER, address),
                                  f"SET_ADDRESS 0x{address:08X}", address)

    def erase_page(self, address: int) -> BusyTiming:
        """ERASE (0x41 + page address): erase the page holding ``address``."""
        return self.dfuse_command(struct.pack("<BI", DfuseCommand.ERASE, address),
                                  f"ERASE 0x{address:08X}", address)

    def mass_erase(self) -> BusyTiming:
        """ERASE with no address (the single byte 0x41): erase the whole memory."""
        timing = self.dfuse_command(bytes([DfuseCommand.ERASE]), "MASS_ERASE")
        self._emit(ProgressEvent("mass-erase", 1, 1, None, timing))
        return timing

    def read_unprotect(self, *, confirm: bool = False) -> DfuStatusResponse:
        """READ_UNPROTECT (0x92): removes read protection, which mass-erases the flash and resets the
        device.  Refused unless ``confirm`` is True."""
        self._require_dfuse("READ_UNPROTECT")
        if not confirm:
            raise DfuUnsupported("READ_UNPROTECT erases the whole flash: pass confirm=True")
        self.dnload(0, bytes([DfuseCommand.READ_UNPROTECT]))
        st = self.get_status()
        self._expect(st, [DfuState.dfuDNBUSY], "READ_UNPROTECT")
        self.transport.wait_ms(st.poll_timeout_ms)
        return st  # the device disconnects now; dfu-util stops talking to it here

    def get_commands(self) -> list[int]:
        """UPLOAD block 0: the DfuSe commands the device supports (AN3156 §6.1)."""
        self._require_dfuse("GET_COMMANDS")
        raw = self.upload(0, 32)
        st = self.get_status()
        self._check(st, "GET_COMMANDS")
        self.transport.wait_ms(st.poll_timeout_ms)
        if st.state != DfuState.dfuIDLE:
            self.abort_to_idle()
        return list(raw)

    # -- DfuSe download / upload ----------------------------------------------------------------------
    def _chunks(self, image: FirmwareImage) -> list[tuple[int, bytes]]:
        out = []
        for seg in image.segments:
            for off in range(0, len(seg.data), self.transfer_size):
                out.append((seg.address + off, seg.data[off:off + self.transfer_size]))
        return out

    def _write_chunk(self, address: int, data: bytes) -> None:
        """SET_ADDRESS then DNLOAD block 2 (no offset from the pointer), polled to dfuDNLOAD-IDLE."""
        self.set_address(address)
        sent = self.dnload(2, data)
        if sent != len(data):
            raise DfuTransportError(f"device took {sent} of {len(data)} bytes at 0x{address:08X}")
        st, _ = self._poll_until([DfuState.dfuDNLOAD_IDLE], f"write 0x{address:08X}", address=address)
        self._expect(st, [DfuState.dfuDNLOAD_IDLE], f"write 0x{address:08X}")

    def download_dfuse(
        self,
        image: FirmwareImage,
        layout: MemoryLayout | None,
        *,
        erase_order: str = "all-first",
        erase: bool = True,
        force: bool = False,
    ) -> DownloadReport:
        """Write ``image`` with page erases (DfuSe).

        ``all-first`` (dfu-util 0.9+): erase every page the image touches, then
        write every chunk.  ``interleaved`` (older dfu-util, pydfu): before each
        chunk, erase the pages it touches that were not erased yet.  Pages are
        those of the ``layout``; bytes outside it are not erased (only with
        ``force``, which also skips the writable check).  Ends with ABORT to dfuIDLE.
        """
        self._require_dfuse("DfuSe download")
        if erase_order not in ("all-first", "interleaved"):
            raise ValueError(f"unknown erase order {erase_order!r}")
        if layout is not None and not force:
            for seg in image.segments:
                layout.check_write(seg.address, len(seg.data))
        report = DownloadReport()
        t0 = self.transport.now_ns()
        chunks = self._chunks(image)
        erased: set[int] = set()
        total = image.size

        def pages_for(address: int, length: int) -> list[int]:
            if layout is None or not erase:
                return []
            return [p.start for p in layout.pages_touched(address, length)
                    if p.segment.erasable and p.start not in erased]

        def do_erase(page: int, done: int, of: int) -> None:
            timing = self.erase_page(page)
            erased.add(page)
            report.erases.append(timing)
            self._emit(ProgressEvent("erase", done, of, page, timing))

        if erase_order == "all-first":
            todo: list[int] = []
            for address, data in chunks:
                for p in pages_for(address, len(data)):
                    if p not in todo:
                        todo.append(p)
            for i, page in enumerate(todo):
                do_erase(page, i + 1, len(todo))
        written = 0
        for address, data in chunks:
            if erase_order == "interleaved":
                for page in pages_for(address, len(data)):
                    do_erase(page, len(erased) + 1, 0)
            self._write_chunk(address, data)
            written += len(data)
            report.chunks += 1
            self._emit(ProgressEvent("download", written, total, address))
        report.bytes_written = written
        self.abort_to_idle()
        report.elapsed_ns = self.transport.now_ns() - t0
        return report

    def upload_dfuse(self, address: int, length: int, *, layout: MemoryLayout | None = None,
                     block_addressing: str = "auto", phase: str = "upload") -> bytes:
        """Read ``length`` bytes from ``address``: SET_ADDRESS, ABORT to idle, then UPLOAD blocks
        2, 3, 4, ... (``sequential``, what dfu-util does).  The device places block n at
        ``pointer + (n-2) * its own wTransferSize``, so when our transfer size differs from the
        device's, ``auto`` switches to ``per-block``: SET_ADDRESS before every block, each block 2."""
        self._require_dfuse("DfuSe upload")
        if layout is not None:
            layout.check_read(address, length)
        mode = block_addressing
        if mode == "auto":
            mode = "sequential" if self.transfer_size == self.device_transfer_size else "per-block"
        if mode not in ("sequential", "per-block"):
            raise ValueError(f"unknown block addressing {block_addressing!r}")
        out = bytearray()
        block = 2
        if mode == "sequential":
            self.set_address(address)
            self.abort_to_idle()
        while len(out) < length:
            n = min(self.transfer_size, length - len(out))
            if mode == "per-block":
                if out:
                    self.abort_to_idle()  # UPLOAD left the device in dfuUPLOAD-IDLE
                self.set_address(address + len(out))
                self.abort_to_idle()
                block = 2
            data = self.upload(block, n)
            block += 1
            out += data
            self._emit(ProgressEvent(phase, len(out), length, address))
            if len(data) < n:
                break
        self.abort_to_idle()
        return bytes(out)

    def verify(self, image: FirmwareImage, *, block_addressing: str = "auto") -> VerifyResult:
        """Upload every segment of ``image`` and compare; ``DfuVerifyError`` names the first
        differing address and counts the differing bytes (missing bytes count as differing)."""
        first: int | None = None
        differing = compared = 0
        for seg in image.segments:
            if self.is_dfuse:
                got = self.upload_dfuse(seg.address, len(seg.data), block_addressing=block_addressing,
                                        phase="verify")
            else:
                got = self.upload_plain(len(seg.data))
            for i, want in enumerate(seg.data):
                if i >= len(got) or got[i] != want:
                    differing += 1
                    if first is None:
                        first = seg.address + i
            compared += len(seg.data)
        if first is not None:
            raise DfuVerifyError(first, differing, compared)
        return VerifyResult(compared, len(image.segments))

    def leave(self, address: int | None = None) -> LeaveResult:
        """Leave DFU mode: SET_ADDRESS to the start (if given), a zero-length DNLOAD (block 2), then
        GETSTATUS until dfuMANIFEST.  ST's class resets the chip there, so the device vanishing
        is the expected end and is reported, not raised."""
        if address is not None and self.is_dfuse:
            self.set_address(address)
        block = 2 if self.is_dfuse else 0
        try:
            self.dnload(block, b"")
        except DfuDeviceGone:
            return LeaveResult(None, True)
        return self._manifest("leave")

    def _manifest(self, context: str) -> LeaveResult:
        last: int | None = None
        polls = 0
        while True:
            try:
                st = self.get_status()
            except (DfuDeviceGone, DfuStall, DfuTimeout, DfuTransportError):
                return LeaveResult(last, True)
            polls += 1
            last = st.state
            if st.is_error:
                raise DfuError(st.status, st.state, context)
            self.transport.wait_ms(st.poll_timeout_ms)
            if st.state in (DfuState.dfuMANIFEST, DfuState.dfuMANIFEST_WAIT_RESET, DfuState.dfuIDLE):
                self._emit(ProgressEvent("leave", 1, 1))
                return LeaveResult(st.state, False)
            if st.state not in (DfuState.dfuMANIFEST_SYNC, DfuState.dfuDNBUSY, DfuState.dfuDNLOAD_SYNC,
                                DfuState.dfuDNLOAD_IDLE):
                raise DfuStateError(st.state, [DfuState.dfuMANIFEST], context)
            if polls > MAX_ZERO_TIMEOUT_POLLS:
                raise DfuTimeout(context, "device never reaches dfuMANIFEST")

    # -- plain DFU 1.1 ------------------------------------------------------------------------------
    def download_plain(self, data: bytes, *, manifest: bool = True) -> DownloadReport:
        """DFU 1.1 §7: DNLOAD blocks 0, 1, 2, ... each polled to dfuDNLOAD-IDLE, then (``manifest``)
        a zero-length DNLOAD and GETSTATUS through manifestation."""
        report = DownloadReport()
        t0 = self.transport.now_ns()
        block = 0
        for off in range(0, len(data), self.transfer_size):
            chunk = data[off:off + self.transfer_size]
            self.dnload(block, chunk)
            st, _ = self._poll_until([DfuState.dfuDNLOAD_IDLE], f"DNLOAD block {block}")
            self._expect(st, [DfuState.dfuDNLOAD_IDLE], f"DNLOAD block {block}")
            block += 1
            report.chunks += 1
            report.bytes_written += len(chunk)
            self._emit(ProgressEvent("download", report.bytes_written, len(data), None))
        if manifest:
            self.manifest(block)
        report.elapsed_ns = self.transport.now_ns() - t0
        return report

    def manifest(self, block: int = 0) -> LeaveResult:
        """DFU 1.1 §7: the zero-length DNLOAD that ends a plain download (block = the next block
        number), then GETSTATUS into manifestation.  A device that is not manifestation tolerant
        resets or waits for a USB reset after answering dfuMANIFEST; its vanishing is reported."""
        try:
            self.dnload(block, b"")
        except DfuDeviceGone:
            return LeaveResult(None, True)
        return self._manifest("manifestation")

    def idle_after_manifest(self) -> DfuStatusResponse:
        """A manifestation-tolerant device goes dfuMANIFEST → dfuMANIFEST-SYNC → dfuIDLE
        (DFU 1.1 §7 and appendix A, states 7 and 6): GETSTATUS, honouring bwPollTimeout, until dfuIDLE."""
        for _ in range(MAX_ZERO_TIMEOUT_POLLS):
            st = self.get_status()
            self._check(st, "manifestation")
            self.transport.wait_ms(st.poll_timeout_ms)
            if st.state == DfuState.dfuIDLE:
                return st
            if st.state not in (DfuState.dfuMANIFEST, DfuState.dfuMANIFEST_SYNC):
                raise DfuStateError(st.state, [DfuState.dfuIDLE], "after manifestation")
        raise DfuTimeout("manifestation", "device never returns to dfuIDLE")

    def upload_plain(self, length: int | None = None) -> bytes:
        """DFU 1.1 §6.2: UPLOAD blocks 0, 1, 2, ... until a short block (or ``length`` bytes)."""
        out = bytearray()
        block = 0
        while length is None or len(out) < length:
            n = self.transfer_size if length is None else min(self.transfer_size, length - len(out))
            data = self.upload(block, n)
            out += data
            block += 1
            self._emit(ProgressEvent("upload", len(out), length or 0, None))
            if len(data) < n:
                return bytes(out)  # a short block ends the upload: the device is back in dfuIDLE
        self.abort_to_idle()
        return bytes(out)

    # -- convenience ---------------------------------------------------------------------------------
    def check_layout_fits(self, layout: MemoryLayout, image: FirmwareImage) -> None:
        """``RegionError`` if any image byte is outside a writable segment of ``layout``."""
        for seg in image.segments:
            layout.check_write(seg.address, len(seg.data))


__all__ = [
    "BusyTiming", "DfuClient", "DfuDeviceGone", "DfuError", "DfuException", "DfuRequest", "DfuStall",
    "DfuState", "DfuStateError", "DfuStatus", "DfuStatusResponse", "DfuTimeout", "DfuTransportError",
    "DfuUnsupported", "DfuVerifyError", "DfuseCommand", "DownloadReport", "LeaveResult", "ProgressEvent",
    "RegionError", "VerifyResult", "state_name", "status_name",
]

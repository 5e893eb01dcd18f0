"""A pure-Python DfuSe / DFU 1.1 device that answers control transfers: a ``Transport``.

It follows ST's USB device DFU class (usbd_dfu.c) closely enough to test a
host against: a DfuSe command or data block is only executed when the host
polls GETSTATUS in dfuDNLOAD-SYNC (the device answers dfuDNBUSY with the media
poll timeout, then runs the operation with the CPU inside the USB interrupt),
the next GETSTATUS answers dfuDNLOAD-IDLE, UPLOAD block n >= 2 reads
``pointer + (n-2) * wTransferSize`` with the *device's* transfer size, a
zero-length DNLOAD enters manifestation and the device resets (vanishes)
after answering dfuMANIFEST.

Time is the double's own clock: ``wait_ms`` advances it, and while the
emulated CPU is busy (erase, program) requests are NAKed, i.e. they complete
only when the operation ends, or time out when that is later than the
request's timeout (docs/SEED_BOOTLOADER.md defect 2c).

Switchable faults: ``erase_wipes`` (every ERASE wipes a whole range, like the
seed's ``MEM_If_Erase_FS``), ``stall_when`` (stall chosen requests),
``error_range`` (dfuERROR with e.g. errADDRESS for writes/erases in a range),
``corrupt_reads`` (flip bits on upload, to test verify).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hostside.dfu import DfuRequest, DfuState, DfuStatus
from hostside.transport import (
    DeviceGone,
    DeviceInfo,
    DfuAltSetting,
    DfuFunctionalDescriptor,
    TransportStall,
    TransportTimeout,
)

F103RC_LAYOUT = "@Internal Flash  /0x08000000/16*002Ka,112*002Kg"
SEED_LAYOUT = "@Internal Flash   /0x08000000/02*016Ka,02*016Kg,01*064Kg,03*128Kg"
NS_PER_MS = 1_000_000


@dataclass
class WireRecord:
    """One control request as the device saw it (and, for GETSTATUS, what it answered)."""

    request: str
    value: int = 0
    data: bytes = b""
    length: int = 0
    reply_state: int | None = None
    at_ns: int = 0

    @property
    def command(self) -> str:
        """A short form for sequence assertions: 'ERASE 0x08008000', 'DNLOAD 2 (2048)', 'GETSTATUS'."""
        if self.request == "DNLOAD" and self.value == 0 and self.data:
            op = self.data[0]
            if op == 0x21 and len(self.data) == 5:
                return f"SET_ADDRESS 0x{struct.unpack_from('<I', self.data, 1)[0]:08X}"
            if op == 0x41 and len(self.data) == 5:
                return f"ERASE 0x{struct.unpack_from('<I', self.data, 1)[0]:08X}"
            if op == 0x41 and len(self.data) == 1:
                return "MASS_ERASE"
            if op == 0x92 and len(self.data) == 1:
                return "READ_UNPROTECT"
        if self.request == "DNLOAD":
            return f"DNLOAD {self.value} ({len(self.data)})"
        if self.request == "UPLOAD":
            return f"UPLOAD {self.value} ({self.length})"
        if self.request == "SET_INTERFACE":
            return f"SET_INTERFACE {self.value}"
        return self.request


@dataclass
class _Pending:
    block: int
    data: bytes


@dataclass
class DfuseDeviceDouble:
    layout: str = F103RC_LAYOUT
    alt_names: list[str] | None = None  # defaults to [layout]
    flash_base: int = 0x0800_0000
    flash_size: int = 256 * 1024
    page_size: int = 2048
    transfer_size: int = 2048
    dfuse: bool = True
    vid: int = 0x0483
    pid: int = 0xDF11
    bcd_device: int = 0x0200
    serial: str = "5CE4826C3236"
    attributes: int = 0x0B  # will-detach, can-upload, can-download; not manifestation tolerant
    # timing: what the device reports (ST's MEM_If_GetStatus) and what the flash really takes
    erase_poll_ms: int = 50
    program_poll_ms: int = 50
    page_erase_ms: float = 20.0
    mass_erase_ms: float = 40.0
    halfword_program_us: float = 52.5
    busy_model: str = "blocking"  # "blocking": ST's class (CPU in the IRQ); "background": keeps answering
    strict_program: bool = True  # programming a non-erased half-word -> dfuERROR errPROG
    protect_readonly: bool = False  # refuse writes to read-only layout segments (the seed does not)
    # faults
    erase_wipes: tuple[int, int] | None = None
    stall_when: Callable[[WireRecord], bool] | None = None
    error_range: tuple[int, int] | None = None
    error_status: DfuStatus = DfuStatus.errADDRESS
    corrupt_reads: dict[int, int] = field(default_factory=dict)  # address -> xor mask on upload
    vanish_on_manifest: bool = True
    answer_manifest: bool = True  # False: reset on the zero-length DNLOAD, before any GETSTATUS answer

    def __post_init__(self) -> None:
        self.flash = bytearray(b"\xff" * self.flash_size)
        self.state = DfuState.dfuIDLE
        self.status = DfuStatus.OK
        self.pointer = self.flash_base
        self.alt = 0
        self.now = 0
        self.busy_until = 0
        self.gone = False
        self.resets = 0
        self.log: list[WireRecord] = []
        self.erased_pages: list[int] = []  # every page the flash actually erased, in order
        self.erase_requests: list[int] = []  # addresses the host asked to erase
        self._pending: _Pending | None = None
        self._done_state = DfuState.dfuDNLOAD_IDLE
        self._done_status = DfuStatus.OK
        self._poll_ms = 0
        self._plain_offset = 0
        self._plain_upload = 0

    # -- Transport: clock and descriptors ------------------------------------------------------
    def wait_ms(self, ms: int) -> None:
        self.now += int(ms) * NS_PER_MS

    def now_ns(self) -> int:
        return self.now

    def device_info(self) -> DeviceInfo:
        names = self.alt_names if self.alt_names is not None else [self.layout]
        return DeviceInfo(
            vid=self.vid, pid=self.pid, bcd_device=self.bcd_device, serial=self.serial, configuration=1,
            alt_settings=tuple(DfuAltSetting(0, i, n) for i, n in enumerate(names)),
            functional=DfuFunctionalDescriptor(self.attributes, 255, self.transfer_size,
                                               0x011A if self.dfuse else 0x0110),
            devnum=9, path="1-4.2",
        )

    def set_alt_setting(self, interface: int, alt: int) -> None:
        self._arrive(WireRecord("SET_INTERFACE", alt), 5000)
        self.alt = alt

    def reset(self) -> None:
        self.log.append(WireRecord("RESET", at_ns=self.now))
        self.gone = True
        self.resets += 1

    # -- Transport: control transfers -------------------------------------------------------------
    def control_out(self, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, data: bytes,
                    timeout_ms: int) -> int:
        assert bmRequestType == 0x21, f"unexpected bmRequestType 0x{bmRequestType:02X}"
        rec = WireRecord(DfuRequest(bRequest).name, wValue, bytes(data))
        self._arrive(rec, timeout_ms)
        if bRequest == DfuRequest.DNLOAD:
            return self._dnload(wValue, bytes(data))
        if bRequest == DfuRequest.CLRSTATUS:
            if self.state == DfuState.dfuERROR:
                self.state, self.status = DfuState.dfuIDLE, DfuStatus.OK
            else:  # ST: CLRSTATUS elsewhere is itself an error
                self.state, self.status = DfuState.dfuERROR, DfuStatus.errUNKNOWN
            return 0
        if bRequest == DfuRequest.ABORT:
            if self.state in (DfuState.dfuIDLE, DfuState.dfuDNLOAD_SYNC, DfuState.dfuDNLOAD_IDLE,
                              DfuState.dfuMANIFEST_SYNC, DfuState.dfuUPLOAD_IDLE):
                self.state, self.status = DfuState.dfuIDLE, DfuStatus.OK
                self._pending = None
                self._plain_offset = self._plain_upload = 0
                return 0
            raise TransportStall("ABORT in " + self.state.name)
        if bRequest == DfuRequest.DETACH:
            return 0
        raise TransportStall(f"request {bRequest}")

    def control_in(self, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, length: int,
                   timeout_ms: int) -> bytes:
        assert bmRequestType == 0xA1, f"unexpected bmRequestType 0x{bmRequestType:02X}"
        rec = WireRecord(DfuRequest(bRequest).name, wValue, length=length)
        self._arrive(rec, timeout_ms)
        if bRequest == DfuRequest.GETSTATUS:
            reply = self._getstatus()
            rec.reply_state = reply[4]
            return reply
        if bRequest == DfuRequest.GETSTATE:
            return bytes([self.state])
        if bRequest == DfuRequest.UPLOAD:
            return self._upload(wValue, length)
        raise TransportStall(f"request {bRequest}")

    # -- request arrival: NAK while busy, faults, log ------------------------------------------------
    def _arrive(self, rec: WireRecord, timeout_ms: int) -> None:
        if self.gone:
            raise DeviceGone(f"{rec.request}: device has reset")
        if self.busy_model == "blocking" and self.now < self.busy_until:
            # The CPU is inside the USB interrupt: the request is NAKed until the operation ends.
            if self.busy_until - self.now > timeout_ms * NS_PER_MS:
                self.now += timeout_ms * NS_PER_MS
                rec.at_ns = self.now
                self.log.append(rec)
                raise TransportTimeout(f"{rec.request} NAKed for {timeout_ms} ms")
            self.now = self.busy_until
        rec.at_ns = self.now
        self.log.append(rec)
        if self.stall_when is not None and self.stall_when(rec):
            if rec.request in ("DNLOAD", "UPLOAD", "GETSTATUS"):
                self.state, self.status = DfuState.dfuERROR, DfuStatus.errSTALLEDPKT
            raise TransportStall(rec.command)

    # -- DNLOAD ---------------------------------------------------------------------------------------
    def _dnload(self, block: int, data: bytes) -> int:
        if self.state not in (DfuState.dfuIDLE, DfuState.dfuDNLOAD_IDLE):
            self.state, self.status = DfuState.dfuERROR, DfuStatus.errSTALLEDPKT
            raise TransportStall(f"DNLOAD in {self.state.name}")
        if not data:
            self.state = DfuState.dfuMANIFEST_SYNC
            if not self.answer_manifest:
                self.gone = True
                self.resets += 1
            return 0
        if self.state == DfuState.dfuIDLE:
            self._plain_offset = 0
        self._pending = _Pending(block, data)
        self.state = DfuState.dfuDNLOAD_SYNC
        return len(data)

    def _getstatus(self) -> bytes:
        poll = 0
        if self.state == DfuState.dfuDNLOAD_SYNC:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                is_erase = self.dfuse and pending.block == 0 and pending.data[0] == 0x41
                poll = self.erase_poll_ms if is_erase else self.program_poll_ms
                reply = self._status_bytes(DfuStatus.OK, poll, DfuState.dfuDNBUSY)
                # ST runs the operation after the status stage (EP0 TxReady), CPU busy meanwhile.
                busy_ns, result_state, result_status = self._execute(pending)
                self.busy_until = self.now + busy_ns
                self._done_state, self._done_status = result_state, result_status
                self.state = DfuState.dfuDNBUSY
                return reply
            self.state = DfuState.dfuDNLOAD_IDLE
        elif self.state == DfuState.dfuDNBUSY:
            if self.now < self.busy_until:  # only reachable in the background model
                remaining = -(-(self.busy_until - self.now) // NS_PER_MS)
                return self._status_bytes(DfuStatus.OK, remaining, DfuState.dfuDNBUSY)
            self.state, self.status = self._done_state, self._done_status
        elif self.state == DfuState.dfuMANIFEST_SYNC:
            reply = self._status_bytes(DfuStatus.OK, 1, DfuState.dfuMANIFEST)
            if self.vanish_on_manifest and not (self.attributes & 0x04):
                self.gone = True  # ST's DFU_Leave: NVIC_SystemReset right after this answer
                self.resets += 1
            else:
                self.state = DfuState.dfuIDLE
            return reply
        return self._status_bytes(self.status, poll, self.state)

    @staticmethod
    def _status_bytes(status: int, poll_ms: int, state: int) -> bytes:
        return bytes([status, poll_ms & 0xFF, (poll_ms >> 8) & 0xFF, (poll_ms >> 16) & 0xFF, state, 0])

    # -- operations -------------------------------------------------------------------------------------
    def _in_error_range(self, start: int, length: int) -> bool:
        if self.error_range is None:
            return False
        lo, hi = self.error_range
        return start < hi and start + max(length, 1) > lo

    def _execute(self, p: _Pending) -> tuple[int, DfuState, DfuStatus]:
        ok = (DfuState.dfuDNLOAD_IDLE, DfuStatus.OK)
        if not self.dfuse:
            addr = self.flash_base + self._plain_offset
            self._plain_offset += len(p.data)
            return self._program(addr, p.data)
        if p.block == 0:
            op = p.data[0]
            if op == 0x21 and len(p.data) == 5:
                self.pointer = struct.unpack_from("<I", p.data, 1)[0]
                return (0, *ok)
            if op == 0x41 and len(p.data) == 5:
                addr = struct.unpack_from("<I", p.data, 1)[0]
                self.erase_requests.append(addr)
                if self._in_error_range(addr, 1):
                    return 0, DfuState.dfuERROR, self.error_status
                if self.erase_wipes is not None:
                    lo, hi = self.erase_wipes
                    pages = range(lo, hi, self.page_size)
                    for page in pages:
                        self._erase(page)
                    return int(len(pages) * self.page_erase_ms * NS_PER_MS), *ok
                self._erase(addr - (addr - self.flash_base) % self.page_size)
                return int(self.page_erase_ms * NS_PER_MS), *ok
            if op == 0x41 and len(p.data) == 1:
                for page in range(self.flash_base, self.flash_base + self.flash_size, self.page_size):
                    self._erase(page)
                return int(self.mass_erase_ms * NS_PER_MS), *ok
            if op == 0x92:
                self.flash[:] = b"\xff" * self.flash_size
                self.gone = True
                return 0, *ok
            return 0, DfuState.dfuERROR, DfuStatus.errUNKNOWN
        if p.block == 1:
            return 0, DfuState.dfuERROR, DfuStatus.errUNKNOWN
        addr = self.pointer + (p.block - 2) * self.transfer_size
        return self._program(addr, p.data)

    def _erase(self, page: int) -> None:
        off = page - self.flash_base
        if 0 <= off < self.flash_size:  # pages beyond the part cost time but erase nothing
            self.flash[off:off + self.page_size] = b"\xff" * self.page_size
            self.erased_pages.append(page)

    def _program(self, addr: int, data: bytes) -> tuple[int, DfuState, DfuStatus]:
        off = addr - self.flash_base
        busy = int((len(data) + 1) // 2 * self.halfword_program_us * 1000)
        if self._in_error_range(addr, len(data)) or off < 0 or off + len(data) > self.flash_size:
            return busy, DfuState.dfuERROR, self.error_status
        if self.protect_readonly and self._readonly(addr, len(data)):
            return busy, DfuState.dfuERROR, DfuStatus.errTARGET
        old = self.flash[off:off + len(data)]
        if self.strict_program and any(b != 0xFF for b in old):
            return busy, DfuState.dfuERROR, DfuStatus.errPROG
        self.flash[off:off + len(data)] = bytes(a & b for a, b in zip(old, data, strict=True))
        return busy, DfuState.dfuDNLOAD_IDLE, DfuStatus.OK

    def _readonly(self, addr: int, length: int) -> bool:
        from hostside.dfuse_layout import parse_layout

        lay = parse_layout(self.layout)
        for a in range(addr, addr + length, self.page_size):
            seg = lay.find_segment(a)
            if seg is None or not seg.writable:
                return True
        return False

    # -- UPLOAD --------------------------------------------------------------------------------------
    def _upload(self, block: int, length: int) -> bytes:
        if self.state not in (DfuState.dfuIDLE, DfuState.dfuUPLOAD_IDLE):
            self.state, self.status = DfuState.dfuERROR, DfuStatus.errSTALLEDPKT
            raise TransportStall(f"UPLOAD in {self.state.name}")
        if not self.dfuse:
            if self.state == DfuState.dfuIDLE:
                self._plain_upload = 0
            data = self._read(self.flash_base + self._plain_upload, min(length, self.flash_size - self._plain_upload))
            self._plain_upload += len(data)
            self.state = DfuState.dfuUPLOAD_IDLE if len(data) == length else DfuState.dfuIDLE
            return data
        if block == 0:
            self.state = DfuState.dfuIDLE if length > 3 else DfuState.dfuUPLOAD_IDLE
            return bytes([0x00, 0x21, 0x41, 0x92])[:length]
        if block == 1:
            self.state, self.status = DfuState.dfuERROR, DfuStatus.errSTALLEDPKT
            raise TransportStall("UPLOAD block 1")
        addr = self.pointer + (block - 2) * self.transfer_size
        off = addr - self.flash_base
        if off < 0 or off + length > self.flash_size:
            self.state, self.status = DfuState.dfuERROR, DfuStatus.errADDRESS
            raise TransportStall(f"UPLOAD outside flash at 0x{addr:08X}")
        self.state = DfuState.dfuUPLOAD_IDLE
        return self._read(addr, length)

    def _read(self, addr: int, length: int) -> bytes:
        off = addr - self.flash_base
        out = bytearray(self.flash[off:off + length])
        for a, mask in self.corrupt_reads.items():
            if addr <= a < addr + length:
                out[a - addr] ^= mask
        return bytes(out)

    # -- helpers for tests ------------------------------------------------------------------------------
    def read_flash(self, addr: int, length: int) -> bytes:
        off = addr - self.flash_base
        return bytes(self.flash[off:off + length])

    def commands(self) -> list[str]:
        return [r.command for r in self.log]

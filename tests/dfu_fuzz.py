"""Deterministic malformed control requests against an emulated bootloader's USB device.

Used by ``tests/test_dfu_fuzz.py`` (a few thousand requests per bootloader in the suite) and for
the longer release run (``STM32_BOOTSIM_FUZZ_REQUESTS``, see the README).  Every request goes
through the virtual host controller as a real host's would; the device may answer, stall, NAK
until the timeout or leave the bus, and the only exceptions allowed out of the emulator are the
USB errors a host sees (:class:`emulator.usb.host.UsbError`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from emulator.core.machine import EmulatorError
from emulator.usb.host import UsbError, UsbNotAttached, UsbProtocolError, UsbStall, UsbTimeout, VirtualHost
from emulator.usb.target import EmulatedTarget, open_emulated

# DFU 1.1 §3 class requests, and the DfuSe commands sent in DNLOAD block 0 (UM0424 §5.3).
DETACH, DNLOAD, UPLOAD, GETSTATUS, CLRSTATUS, GETSTATE, ABORT = range(7)
DFUSE_GET, DFUSE_SET_ADDRESS, DFUSE_ERASE, DFUSE_READ_UNPROTECT = 0x00, 0x21, 0x41, 0x92
SET_CONFIGURATION = 9
SET_ADDRESS = 5  # a standard request the fuzzer leaves alone: the host would lose the device
SIZES = (0, 1, 2, 5, 6, 7, 8, 9, 16, 63, 64, 65, 255, 1023, 1024, 1025, 2047, 2048, 2049, 4096, 0xFFFF)


@dataclass(frozen=True)
class Request:
    bm_request_type: int
    b_request: int
    w_value: int
    w_index: int
    data_or_length: bytes | int
    timeout_ms: int = 100

    def __str__(self) -> str:
        data = (f"{len(self.data_or_length)} bytes {self.data_or_length[:8].hex()}"
                if isinstance(self.data_or_length, bytes) else f"wLength {self.data_or_length}")
        return (f"bmRequestType 0x{self.bm_request_type:02X} bRequest {self.b_request} wValue 0x{self.w_value:04X} "
                f"wIndex 0x{self.w_index:04X} {data}")


# Not a request: the fuzzer asks GETSTATUS and sends CLRSTATUS from dfuERROR, ABORT from anywhere else.
RECOVER = Request(0xA1, GETSTATUS, 0, 0, 6)
DFU_ERROR = 10


def _addresses(flash_base: int, flash_end: int) -> tuple[int, ...]:
    """Addresses a DfuSe command might name: the bootloader, the application, the ends of flash,
    RAM, the system memory, nothing at all."""
    return (flash_base, flash_base + 0x100, flash_base + 0x7FF0, flash_base + 0x7800, flash_base + 0x8000,
            flash_end - 0x800, flash_end, flash_end + 0x800, 0x0807_F800, 0x2000_0000, 0x1FFF_F000, 0,
            0xFFFF_FFFC, 0x0800_0001)


def requests(rng: random.Random, flash_base: int, flash_end: int, interfaces: Sequence[int] = (0,)) -> Iterator[Request]:
    """An endless, seeded stream of control requests, most of them malformed, some of them not."""
    addresses = _addresses(flash_base, flash_end)

    def size() -> int:
        return rng.choice(SIZES) if rng.random() < 0.8 else rng.randrange(0, 5000)

    def payload(n: int | None = None) -> bytes:
        n = size() if n is None else n
        n = min(n, 4096)
        fill = rng.choice((b"\xff", b"\x00", None))
        return fill * n if fill is not None else rng.randbytes(n)

    def interface() -> int:
        return rng.choice(interfaces) if rng.random() < 0.85 else rng.randrange(0, 0x10000)

    def status(n: int = 1) -> Iterator[Request]:
        for _ in range(n):
            yield Request(0xA1, GETSTATUS, 0, interfaces[0], 6)

    def recover() -> Iterator[Request]:
        yield RECOVER

    while True:
        kind = rng.random()
        if kind < 0.12:  # a well-formed episode (with an address from anywhere): reach the deeper states
            yield from recover()
            episode = rng.choice(("write", "write", "erase", "read", "plain", "leave"))
            address = rng.choice(addresses)
            if episode in ("write", "read", "leave"):
                yield Request(0x21, DNLOAD, 0, interfaces[0], bytes([DFUSE_SET_ADDRESS]) + address.to_bytes(4, "little"))
                yield from status(2)
            if episode == "write":
                yield Request(0x21, DNLOAD, rng.choice((2, 2, 3, 17)), interfaces[0], payload(rng.choice((8, 64, 1024, 2048))))
                yield from status(3)
            elif episode == "erase":
                yield Request(0x21, DNLOAD, 0, interfaces[0], bytes([DFUSE_ERASE]) + address.to_bytes(4, "little"))
                yield from status(3)
            elif episode == "read":
                yield from recover()
                yield Request(0xA1, UPLOAD, rng.choice((2, 3, 100)), interfaces[0], rng.choice((16, 1024, 2048)))
            elif episode == "plain":
                for block in range(rng.randrange(1, 4)):
                    yield Request(0x21, DNLOAD, block, interfaces[0], payload(rng.choice((16, 1024))))
                    yield from status(2)
            elif rng.random() < 0.3:  # leave: manifestation, the device resets or jumps (rarely: it re-enumerates)
                yield Request(0x21, DNLOAD, 0, interfaces[0], b"")
                yield from status(2)
            continue
        if kind < 0.25:  # the DFU state machine moving: status, abort, clear
            req = rng.choice((GETSTATUS, GETSTATUS, GETSTATE, ABORT, CLRSTATUS))
            if req in (GETSTATUS, GETSTATE):
                yield Request(0xA1, req, 0, interface(), 6 if req == GETSTATUS else 1)
            else:
                yield Request(0x21, req, 0, interface(), b"")
        elif kind < 0.35:  # DfuSe commands with addresses anywhere
            command = rng.choice((DFUSE_SET_ADDRESS, DFUSE_ERASE, DFUSE_ERASE, DFUSE_GET, DFUSE_READ_UNPROTECT))
            address = rng.choice(addresses) if rng.random() < 0.8 else rng.getrandbits(32)
            body = bytes([command]) + address.to_bytes(4, "little")
            if command in (DFUSE_GET, DFUSE_READ_UNPROTECT):
                body = bytes([command])
            if rng.random() < 0.2:
                body = body[: rng.randrange(0, len(body) + 1)] + rng.randbytes(rng.randrange(0, 4))
            yield Request(0x21, DNLOAD, 0, interface(), body)
        elif kind < 0.50:  # data blocks: any block number, any size
            block = rng.choice((0, 1, 2, 3, 0xFFFF, rng.randrange(0, 0x10000)))
            yield Request(0x21, DNLOAD, block, interface(), payload())
        elif kind < 0.60:  # uploads
            block = rng.choice((0, 1, 2, 3, 0xFFFF, rng.randrange(0, 0x10000)))
            yield Request(0xA1, UPLOAD, block, interface(), size())
        elif kind < 0.65:  # class requests with wrong directions, unknown numbers, DETACH
            req = rng.choice((DETACH, DNLOAD, UPLOAD, GETSTATUS, 7, 8, 0xFF, rng.randrange(256)))
            direction = rng.choice((0x21, 0xA1, 0x22, 0xA2, 0x23, 0xA3, 0x20, 0xA0))
            data: bytes | int = size() if direction & 0x80 else payload()
            yield Request(direction, req, rng.getrandbits(16), interface(), data)
        elif kind < 0.85:  # standard requests to any recipient, any descriptor
            req = rng.choice((0, 1, 3, 6, 6, 6, 7, 8, 9, 10, 11, 12))
            recipient = rng.choice((0, 0, 1, 1, 2, 3))
            if req in (0, 6, 8, 10, 12):
                value = (rng.choice((1, 2, 3, 4, 5, 6, 7, 0x0F, 0x21, 0x22, 0x29, 0xFF)) << 8) | rng.choice(
                    (0, 1, 2, 3, 4, 0xEE, 0xFF))
                yield Request(0x80 | recipient, req, value if req == 6 else rng.getrandbits(16),
                              rng.choice((0, 0x0409, interface())), size())
            else:
                value = rng.choice((0, 1, 2, rng.getrandbits(16)))
                yield Request(recipient, req, value, rng.choice((0, 1, 0x80, 0x81, interface())), b"")
        else:  # vendor and reserved request types, anything at all
            bm = rng.getrandbits(8)
            req = rng.getrandbits(8)
            if bm & 0x60 == 0 and req == SET_ADDRESS:
                req = 0xFE
            data = size() if bm & 0x80 else payload()
            yield Request(bm, req, rng.getrandbits(16), rng.getrandbits(16), data)


@dataclass
class FuzzReport:
    requests: int = 0
    answered: int = 0
    usb_errors: dict[str, int] = field(default_factory=dict)
    replugs: int = 0
    region_changed_by: list[str] = field(default_factory=list)  # the requests after which it changed
    hangs: list[str] = field(default_factory=list)  # the device stopped answering: the request, the firmware's state


SILENT_LIMIT = 8  # consecutive timeouts or unanswered SETUPs before the board is re-plugged


def fuzz(boot_image: str, options: Sequence[str], count: int, seed: int) -> FuzzReport:
    """Send ``count`` requests from :func:`requests` to ``boot_image``'s device and watch the
    bootloader's own flash.  When the device leaves the bus it is enumerated again; when it stops
    answering, the firmware's state is recorded and a fresh board is powered on."""
    rng = random.Random(seed)
    report = FuzzReport()
    target = open_emulated(boot_image, options)
    chip = target.board.machine.chip
    boot = target.board.layout.images[0]
    region = slice(boot.start - chip.flash_base, boot.end - chip.flash_base)
    original = bytes(target.board.machine.flash_storage[region])
    stream = requests(rng, chip.flash_base, chip.flash_end)
    silent, went_silent = 0, ""
    try:
        while report.requests < count:
            req = next(stream)
            report.requests += 1
            host = target.link.host
            assert host.device is not None
            try:
                if req is RECOVER:
                    _recover(host, req.timeout_ms)
                else:
                    host.control_transfer(host.device.address, req.bm_request_type, req.b_request, req.w_value,
                                          req.w_index, req.data_or_length, req.timeout_ms)
                report.answered += 1
                silent = 0
            except UsbError as e:
                name = type(e).__name__
                report.usb_errors[name] = report.usb_errors.get(name, 0) + 1
                silent = silent + 1 if isinstance(e, UsbTimeout | UsbProtocolError) else 0
                if silent == 1:
                    went_silent = f"request {report.requests}: {req}"
                if isinstance(e, UsbNotAttached) or silent >= SILENT_LIMIT:
                    stop = target.board.machine.last_stop
                    if silent and stop is not None and not stop.clean:
                        report.hangs.append(f"{went_silent}: {stop.kind}: {stop.detail}")
                    target = _replug(target, boot_image, options, fresh=silent > 0)
                    report.replugs += 1
                    silent = 0
            if bytes(target.board.machine.flash_storage[region]) != original:
                report.region_changed_by.append(f"request {report.requests}: {req}")
                target.board.machine.load_flash(original, region.start)  # go on from an intact bootloader
    finally:
        target.link.close()
    return report


def _recover(host: VirtualHost, timeout_ms: int) -> None:
    """What a host does to get a DFU interface back to dfuIDLE: configure the device again if a
    request deconfigured it (GETSTATUS stalls then), CLRSTATUS from dfuERROR, ABORT from elsewhere."""
    assert host.device is not None
    address = host.device.address
    try:
        status = host.control_transfer(address, 0xA1, GETSTATUS, 0, 0, 6, timeout_ms)
    except UsbStall:
        host.control_transfer(address, 0x00, SET_CONFIGURATION, 1, 0, b"", timeout_ms)
        status = host.control_transfer(address, 0xA1, GETSTATUS, 0, 0, 6, timeout_ms)
    assert isinstance(status, bytes | bytearray)
    if len(status) == 6:
        host.control_transfer(address, 0x21, CLRSTATUS if status[4] == DFU_ERROR else ABORT, 0, 0, b"", timeout_ms)


def _replug(target: EmulatedTarget, boot_image: str, options: Sequence[str], *, fresh: bool) -> EmulatedTarget:
    """The device left the bus (a reset after manifestation, a jump): enumerate it again as a host
    would.  It stopped answering, or never came back: power a fresh board on."""
    if not fresh:
        try:
            target.reattach(attach_timeout_ns=500_000_000)
            return target
        except (EmulatorError, UsbError):  # DeviceNotAttached among them
            pass
    target.link.close()
    return open_emulated(boot_image, options)

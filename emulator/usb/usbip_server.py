"""USB/IP export of the emulated device (``python -m emulator serve BOOT.elf --usbip``).

Speaks the USB/IP protocol version 0x0111 (Linux Documentation/usb/usbip_protocol.rst)
as a *server* (the role of ``usbipd`` + the stub driver): OP_REQ_DEVLIST,
OP_REQ_IMPORT, then USBIP_CMD_SUBMIT / USBIP_CMD_UNLINK on the imported
connection.  All fields are big-endian.  A Linux host with ``vhci-hcd`` attaches
it with ``usbip attach -r 127.0.0.1 -b 1-1`` and any tool then sees a local USB
device.

Every URB is run to completion on the virtual host before it is answered, in
emulated time, so an UNLINK always arrives after its RET_SUBMIT (status 0, as
the protocol prescribes for that case).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from emulator.core import progress
from emulator.core.machine import EmulatorError
from emulator.core.session import BoardOptions
from emulator.usb.device_server import DeviceServer, boot_and_attach, flash_check_passed, format_flash_check
from hostside.selection import DfuSelector

USBIP_VERSION = 0x0111
OP_REQ_DEVLIST, OP_REP_DEVLIST = 0x8005, 0x0005
OP_REQ_IMPORT, OP_REP_IMPORT = 0x8003, 0x0003
CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK = 1, 2, 3, 4
USB_SPEED_FULL = 2  # enum usb_device_speed
BUSID = "1-1"
SYSFS_PATH = "/sys/devices/platform/stm32-bootsim/usb1/1-1"

OP_HEADER = struct.Struct(">HHI")  # version, command code, status
BASIC_HEADER = struct.Struct(">IIIII")  # command, seqnum, devid, direction, ep
SUBMIT_TAIL = struct.Struct(">IiiiI8s")  # transfer_flags, length, start_frame, n_iso, interval, setup
RET_SUBMIT_TAIL = struct.Struct(">iiiii8x")  # status, actual_length, start_frame, n_iso, error_count
UNLINK_TAIL = struct.Struct(">I24x")
RET_UNLINK_TAIL = struct.Struct(">i24x")

# A hub-class SET_FEATURE(PORT_RESET) forwarded by vhci: the stub driver resets the device.
PORT_RESET_SETUP = (0x23, 0x03, 4)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


@dataclass
class UsbipStats:
    connections: int = 0
    imports: int = 0
    submits: int = 0
    unlinks: int = 0
    wall_s: float = 0.0


@dataclass
class UsbipServer:
    """One emulated device, one client at a time; stops after an imported session ends or when idle."""

    server: DeviceServer
    host: str = "127.0.0.1"
    port: int = 3240
    idle_timeout_s: float = 60.0
    stats: UsbipStats = field(default_factory=UsbipStats)

    def __post_init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((self.host, self.port))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]

    @property
    def devid(self) -> int:
        return (self.server.host.bus_number << 16) | self.server.address

    # -- device records ------------------------------------------------------------------------
    def _device_record(self) -> bytes:
        info = self.server.host.device
        assert info is not None
        d = info.device
        config = info.configurations[0] if info.configurations else None
        n_intf = config.descriptor.bNumInterfaces if config is not None else 0
        return struct.pack(">256s32sIIIHHHBBBBBB", SYSFS_PATH.encode(), BUSID.encode(),
                           self.server.host.bus_number, info.address, USB_SPEED_FULL,
                           d.idVendor, d.idProduct, d.bcdDevice, d.bDeviceClass, d.bDeviceSubClass,
                           d.bDeviceProtocol, info.configuration_value, d.bNumConfigurations, n_intf)

    def _interface_records(self) -> bytes:
        info = self.server.host.device
        assert info is not None
        out = b""
        if info.configurations:
            seen = set()
            for intf in info.configurations[0].interfaces:
                desc = intf.descriptor
                if desc.bInterfaceNumber in seen:
                    continue  # one record per interface (alt 0), as usbipd lists them
                seen.add(desc.bInterfaceNumber)
                out += struct.pack(">BBBx", desc.bInterfaceClass, desc.bInterfaceSubClass,
                                   desc.bInterfaceProtocol)
        return out

    # -- serving ------------------------------------------------------------------------------------
    def serve(self) -> None:
        """Accept clients until one that imported the device disconnects, or nothing happens for a while."""
        start = time.perf_counter()
        self.listener.settimeout(self.idle_timeout_s)
        try:
            while True:
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    return
                self.stats.connections += 1
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait per URB
                    conn.settimeout(self.idle_timeout_s)
                    try:
                        if self._session(conn):
                            return
                    except (EOFError, ConnectionError, TimeoutError):
                        if self.stats.imports:
                            return
        finally:
            self.listener.close()
            self.stats.wall_s = time.perf_counter() - start

    def _session(self, conn: socket.socket) -> bool:
        """Handle one connection; True when it imported the device (the server then stops)."""
        version, code, _status = OP_HEADER.unpack(_recv_exact(conn, OP_HEADER.size))
        if code == OP_REQ_DEVLIST:
            conn.sendall(OP_HEADER.pack(USBIP_VERSION, OP_REP_DEVLIST, 0) + struct.pack(">I", 1)
                         + self._device_record() + self._interface_records())
            return False
        if code == OP_REQ_IMPORT:
            busid = _recv_exact(conn, 32).split(b"\0", 1)[0].decode(errors="replace")
            if busid != BUSID or self.server.gone:
                conn.sendall(OP_HEADER.pack(USBIP_VERSION, OP_REP_IMPORT, 1))
                return False
            conn.sendall(OP_HEADER.pack(USBIP_VERSION, OP_REP_IMPORT, 0) + self._device_record())
            self.stats.imports += 1
            with contextlib.suppress(EOFError, ConnectionError, TimeoutError):
                self._urb_loop(conn)
            return True
        raise ConnectionError(f"unknown USB/IP operation 0x{code:04x} (version 0x{version:04x})")

    def _urb_loop(self, conn: socket.socket) -> None:
        while True:
            command, seqnum, devid, direction, ep = BASIC_HEADER.unpack(_recv_exact(conn, BASIC_HEADER.size))
            if command == CMD_SUBMIT:
                flags, length, _frame, n_iso, _interval, setup = SUBMIT_TAIL.unpack(
                    _recv_exact(conn, SUBMIT_TAIL.size))
                out = _recv_exact(conn, length) if direction == 0 and length > 0 else b""
                if n_iso not in (0, -1, 0xFFFFFFFF):
                    _recv_exact(conn, 16 * n_iso)  # iso descriptors: no isochronous endpoints here
                    status, data = -errno.EINVAL, b""
                else:
                    status, data = self._submit(direction, ep, setup, out, length)
                self.stats.submits += 1
                actual = len(data) if direction == 1 else (0 if status else length)
                conn.sendall(BASIC_HEADER.pack(RET_SUBMIT, seqnum, 0, 0, 0)
                             + RET_SUBMIT_TAIL.pack(status, actual, 0, 0, 0)
                             + (data if direction == 1 else b""))
            elif command == CMD_UNLINK:
                _recv_exact(conn, UNLINK_TAIL.size)
                self.stats.unlinks += 1
                # Already given back (see module docstring): status 0, not -ECONNRESET.
                conn.sendall(BASIC_HEADER.pack(RET_UNLINK, seqnum, 0, 0, 0) + RET_UNLINK_TAIL.pack(0))
            else:
                raise ConnectionError(f"unknown USB/IP command {command}")

    def _submit(self, direction: int, ep: int, setup: bytes, out: bytes, length: int) -> tuple[int, bytes]:
        if ep == 0:
            if (setup[0], setup[1], int.from_bytes(setup[2:4], "little")) == PORT_RESET_SETUP:
                return self.server.reset(), b""
            return self.server.control(setup, out)
        endpoint = ep | (0x80 if direction == 1 else 0)
        kind = self._endpoint_kind(endpoint)
        return self.server.transfer(kind, endpoint, out, length)

    def _endpoint_kind(self, endpoint: int) -> str:
        info = self.server.host.device
        if info is not None:
            for config in info.configurations:
                for intf in config.interfaces:
                    for e in intf.endpoints:
                        if e.descriptor.bEndpointAddress == endpoint:
                            return "interrupt" if (e.descriptor.bmAttributes & 3) == 3 else "bulk"
        return "bulk"


def check_listen(host: str, port: int) -> None:
    """Raise a one-line :class:`EmulatorError` when ``host:port`` cannot be listened on (in use, no such
    address, a privileged port), as the server's own bind would fail later."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)
    except (OSError, OverflowError) as e:
        raise EmulatorError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        probe.close()


def serve_usbip(options: BoardOptions, *, host: str = "127.0.0.1", port: int = 3240, idle_timeout_s: float = 60.0,
                timeout_ms: float = 5000.0, poll_scale: float = 1.0, attach_timeout_ns: int = 2_000_000_000,
                pcap_path: str | None = None, selector: DfuSelector | None = None,
                plain_address: int | None = None) -> int:
    """CLI body of ``serve --usbip``: export until the client is done, then print a summary and check
    the flash against what the client sent in DNLOAD requests (exit 1 when they differ)."""
    check_listen(host, port)  # before the board boots: a port in use is one line, the state file untouched
    target = boot_and_attach(options, attach_timeout_ns=attach_timeout_ns, pcap_path=pcap_path, selector=selector)
    device = DeviceServer(target, poll_scale=poll_scale, timeout_ms=timeout_ms, started_ns=target.now_ns())
    server = UsbipServer(device, host, port, idle_timeout_s)
    ids = f"{target.device.idVendor:04x}:{target.device.idProduct:04x}"
    print(f"serve: exporting {ids} as bus id {BUSID} on {host}:{server.port} (USB/IP 0x{USBIP_VERSION:04x}); "
          f"attach with: usbip attach -r {host} -b {BUSID}", file=sys.stderr, flush=True)
    device.progress = progress.task(f"serving over USB/IP on {host}:{server.port}", unit="requests")
    try:
        server.serve()
    finally:
        device.progress.close()
    target.close()
    target.board.save()
    s = server.server.summary()
    print(f"serve: USB/IP session over: {server.stats.imports} import(s), {server.stats.submits} URBs, "
          f"{server.stats.unlinks} unlinks; emulated {s['emulated_ms']:.3f} ms since power-on, "
          f"wall {server.stats.wall_s:.3f} s", file=sys.stderr)
    check = device.flash_check(plain_address)
    line = format_flash_check(check)
    if line is not None:
        print(line, file=sys.stderr)
    return 0 if flash_check_passed(check) else 1

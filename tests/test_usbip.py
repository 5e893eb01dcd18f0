"""USB/IP export (emulator/usbip_server.py) driven by a small USB/IP client written from the protocol spec."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.core.session import BoardOptions
from emulator.usb.device_server import DeviceServer, boot_and_attach
from emulator.usb.usbip_server import UsbipServer

ROOT = Path(__file__).resolve().parents[1]
BOOT_FIXED = str(ROOT / "fixtures" / "images" / "boot_fixed.elf")
APP_SMALL = (ROOT / "fixtures" / "images" / "app_small.bin").read_bytes()
APP_BASE = 0x0800_8000
VERSION = 0x0111
DNLOAD, UPLOAD, GETSTATUS, ABORT = 1, 2, 3, 6
DFU_OUT, DFU_IN = 0x21, 0xA1
DNBUSY, DNLOAD_IDLE, IDLE, UPLOAD_IDLE = 4, 5, 2, 9


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "server closed the connection"
        buf += chunk
    return buf


class UsbipClient:
    """The vhci side of USB/IP 0x0111, enough for control transfers on EP0."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seq = 0
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def devlist(self) -> tuple[int, list[tuple[str, int, int, list[tuple[int, int, int]]]]]:
        with self._connect() as s:
            s.sendall(struct.pack(">HHI", VERSION, 0x8005, 0))
            version, code, status, count = struct.unpack(">HHII", recv_exact(s, 12))
            assert (version, code, status) == (VERSION, 0x0005, 0)
            devices = []
            for _ in range(count):
                rec = recv_exact(s, 312)
                busid = rec[256:288].split(b"\0")[0].decode()
                vid, pid = struct.unpack_from(">HH", rec, 300)
                n_intf = rec[311]
                intfs = [tuple(recv_exact(s, 4)[:3]) for _ in range(n_intf)]
                devices.append((busid, vid, pid, intfs))
            return count, devices

    def import_(self, busid: str) -> tuple[int, int]:
        self.sock = self._connect()
        self.sock.sendall(struct.pack(">HHI32s", VERSION, 0x8003, 0, busid.encode()))
        version, code, status = struct.unpack(">HHI", recv_exact(self.sock, 8))
        assert (version, code) == (VERSION, 0x0003)
        if status:
            return status, 0
        rec = recv_exact(self.sock, 312)
        busnum, devnum = struct.unpack_from(">II", rec, 288)
        self.devid = (busnum << 16) | devnum
        return status, devnum

    def control(self, bm: int, req: int, value: int, index: int, data_or_length: bytes | int) -> tuple[int, bytes]:
        assert self.sock is not None
        self.seq += 1
        is_in = bool(bm & 0x80)
        length = data_or_length if is_in else len(data_or_length)
        setup = struct.pack("<BBHHH", bm, req, value, index, length)
        self.sock.sendall(struct.pack(">IIIIIIiiiI8s", 1, self.seq, self.devid, 1 if is_in else 0, 0,
                                      0, length, 0, 0, 0, setup) + (b"" if is_in else bytes(data_or_length)))
        head = recv_exact(self.sock, 48)
        command, seq, _devid, _dir, _ep, status, actual = struct.unpack_from(">IIIIIii", head)
        assert (command, seq) == (3, self.seq)
        return status, recv_exact(self.sock, actual) if is_in and actual > 0 else b""

    def unlink(self, seqnum: int) -> int:
        assert self.sock is not None
        self.seq += 1
        self.sock.sendall(struct.pack(">IIIIII24x", 2, self.seq, self.devid, 0, 0, seqnum))
        command, seq, _d, _dir, _ep, status = struct.unpack_from(">IIIIIi", recv_exact(self.sock, 48))
        assert (command, seq) == (4, self.seq)
        return status

    # -- DfuSe over the control pipe (DFU 1.1 §6, AN3156) --------------------------------------------
    def status(self) -> tuple[int, int, int]:
        st, data = self.control(DFU_IN, GETSTATUS, 0, 0, 6)
        assert st == 0 and len(data) == 6
        return data[0], int.from_bytes(data[1:4], "little"), data[4]

    def dnload_and_wait(self, block: int, payload: bytes) -> None:
        st, _ = self.control(DFU_OUT, DNLOAD, block, 0, payload)
        assert st == 0
        status, _poll, state = self.status()
        while state == DNBUSY:
            status, _poll, state = self.status()
        assert (status, state) == (0, DNLOAD_IDLE)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@pytest.fixture()
def exported() -> Iterator[tuple[UsbipServer, UsbipClient]]:
    target = boot_and_attach(BoardOptions(image=BOOT_FIXED))
    server = UsbipServer(DeviceServer(target, poll_scale=0), port=0, idle_timeout_s=30)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = UsbipClient(server.port)
    yield server, client
    client.close()
    thread.join(timeout=60)


def test_devlist_shows_the_dfu_device_with_its_interface(exported) -> None:
    _server, client = exported
    count, devices = client.devlist()
    assert count == 1
    assert devices[0] == ("1-1", 0x0483, 0xDF11, [(0xFE, 0x01, 0x02)])


def test_import_of_an_unknown_bus_id_is_refused(exported) -> None:
    _server, client = exported
    status, _ = client.import_("9-9")
    assert status == 1


def test_imported_device_answers_get_descriptor_on_ep0(exported) -> None:
    _server, client = exported
    client.import_("1-1")
    status, data = client.control(0x80, 6, 0x0100, 0, 18)
    assert status == 0
    assert data[:2] == b"\x12\x01" and data[8:12] == bytes.fromhex("8304 11df".replace(" ", ""))


def test_stalled_request_comes_back_as_epipe(exported) -> None:
    _server, client = exported
    client.import_("1-1")
    status, _ = client.control(0x80, 6, 0x0307, 0, 255)  # string 7 does not exist: the device stalls
    assert status == -32


def test_unlink_after_completion_reports_status_zero(exported) -> None:
    _server, client = exported
    client.import_("1-1")
    client.control(0x80, 6, 0x0100, 0, 18)
    assert client.unlink(client.seq) == 0


def test_dfuse_download_and_verify_over_usbip_puts_app_small_in_flash(exported) -> None:
    server, client = exported
    client.import_("1-1")
    assert client.control(0x01, 11, 0, 0, b"")[0] == 0  # SET_INTERFACE alt 0
    assert client.status()[2] == IDLE
    for page in range(APP_BASE, APP_BASE + len(APP_SMALL), 2048):
        client.dnload_and_wait(0, b"\x41" + page.to_bytes(4, "little"))
    client.dnload_and_wait(0, b"\x21" + APP_BASE.to_bytes(4, "little"))
    for n, offset in enumerate(range(0, len(APP_SMALL), 2048)):
        client.dnload_and_wait(2 + n, APP_SMALL[offset : offset + 2048])
    assert client.control(DFU_OUT, ABORT, 0, 0, b"")[0] == 0
    client.dnload_and_wait(0, b"\x21" + APP_BASE.to_bytes(4, "little"))
    assert client.control(DFU_OUT, ABORT, 0, 0, b"")[0] == 0
    read = b""
    for n in range(0, (len(APP_SMALL) + 2047) // 2048):
        status, data = client.control(DFU_IN, UPLOAD, 2 + n, 0, 2048)
        assert status == 0
        read += data
    assert read[: len(APP_SMALL)] == APP_SMALL
    assert server.server.target.board.machine.read_flash(APP_BASE, len(APP_SMALL)) == APP_SMALL


def test_server_stops_by_itself_when_the_importing_client_disconnects(exported) -> None:
    server, client = exported
    client.import_("1-1")
    client.close()
    listener_closed = threading.Event()
    thread = threading.Thread(target=lambda: (server.listener.fileno() == -1 or None, listener_closed.set()))
    for _ in range(2000):
        if server.listener.fileno() == -1:
            break
        threading.Event().wait(0.01)
    thread.start()
    thread.join()
    assert server.listener.fileno() == -1
    assert server.stats.imports == 1

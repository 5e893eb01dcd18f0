"""``python -m emulator serve``: the emulated board as a USB device for unmodified host tools.

Two ways out of the emulator:

* ``serve BOOT.elf -- COMMAND ARGS…`` publishes the enumerated device in a
  umockdev testbed and runs COMMAND (e.g. Debian's ``dfu-util``) with
  umockdev's preload library, so its libusb talks usbfs ioctls to us.  The
  ioctls are answered by :mod:`emulator.usb.umockdev_bridge`, which runs in the
  system python3 (umockdev's GI bindings live there) and forwards each
  transfer over a socket to this process, where :class:`DeviceServer` runs it
  on the virtual host.
* ``serve BOOT.elf --usbip`` exports the device over USB/IP
  (:mod:`emulator.usb.usbip_server`).

Time: every transfer runs in emulated time.  Between two requests the host
program would sleep in wall time, which the emulator never sees; what matters
for a DFU device is the bwPollTimeout of each GETSTATUS (DFU 1.1 §6.1.2: the
host waits at least that long before the next request), so the server charges
it in *emulated* time right after the answer and hands the program
``bwPollTimeout × --poll-scale`` (default 1: the program sleeps what a real
board asks for; 0 makes dfu-util not sleep at all).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from emulator.core import progress
from emulator.core.flashcheck import compare_flash, describe_differences, landing_address
from emulator.core.machine import EmulatorError
from emulator.core.session import Board, BoardOptions, build_board
from emulator.usb.host import (
    UsbBabble,
    UsbError,
    UsbNotAttached,
    UsbStall,
    UsbTimeout,
)
from emulator.usb.target import EmulatedTarget, attach
from emulator.usb.umockdev_bridge import recv_frame, send_frame
from hostside.selection import DfuSelector

BRIDGE = Path(__file__).with_name("umockdev_bridge.py")
DEFAULT_BRIDGE_PYTHON = "/usr/bin/python3"
APT_LINE = "apt-get install -y dfu-util umockdev gir1.2-umockdev-1.0 python3-gi"

# USB 2.0 §9.4 standard requests the server keeps the host's books for.
CLEAR_FEATURE, SET_CONFIGURATION, SET_INTERFACE = 1, 9, 11
DFU_DNLOAD, DFU_GETSTATUS = 1, 3  # DFU 1.1 §6.1.1, §6.1.2
DFUSE_VERSION = 0x011A
DFUSE_SET_ADDRESS = 0x21  # DfuSe command byte in DNLOAD block 0 (UM0424 §5 / AN3156 §6)


@dataclass
class SentDownload:
    """What a host program sent in DFU_DNLOAD requests, as the device received it.

    This, not the program's own file parsing or exit code, is what the flash is
    checked against after the session.  DfuSe (UM0424 §5 / AN3156 §6): block 0 carries
    commands (0x21 sets the address pointer), data block n >= 2 belongs at
    ``pointer + (n - 2) * wTransferSize``.  Plain DFU 1.1 (§6.1.1): blocks carry no
    address; blocks 0, 1, 2... form one payload the bootloader places itself."""

    dfuse: bool
    transfer_size: int
    pointer: int | None = None
    by_address: dict[int, bytes] = field(default_factory=dict)  # DfuSe: address -> data block
    blocks: dict[int, bytes] = field(default_factory=dict)  # plain DFU: block -> data, current payload
    requests: int = 0
    bytes_sent: int = 0  # every DNLOAD data byte, commands included

    def record(self, block: int, data: bytes) -> None:
        if not data:
            return  # a zero-length DNLOAD: manifestation or DfuSe leave, no data
        self.requests += 1
        self.bytes_sent += len(data)
        if self.dfuse:
            if block == 0:
                if data[0] == DFUSE_SET_ADDRESS and len(data) == 5:
                    self.pointer = int.from_bytes(data[1:5], "little")
                return  # ERASE, READ_UNPROTECT and the rest change no data the host sent
            if block >= 2 and self.pointer is not None:
                self.by_address[self.pointer + (block - 2) * self.transfer_size] = data
            return
        if block == 0:
            self.blocks = {}  # a new download starts over
        self.blocks[block] = data

    @property
    def empty(self) -> bool:
        return not (self.by_address or self.blocks)

    def payload(self) -> bytes:
        """Plain DFU: the blocks in order (DFU 1.1 numbers them from 0)."""
        return b"".join(self.blocks[n] for n in sorted(self.blocks))

    def segments(self, plain_address: int | None) -> list[tuple[int, bytes]]:
        if self.dfuse:
            return sorted(self.by_address.items())
        return [] if plain_address is None else [(plain_address, self.payload())]


@dataclass
class ServeStats:
    transfers: int = 0
    failed: int = 0
    poll_charged_ms: int = 0  # bwPollTimeout waited in emulated time on the program's behalf
    poll_handed_ms: float = 0.0  # what the program was told to sleep (wall time)
    detached_at_ns: int | None = None


@dataclass
class DeviceServer:
    """Runs host-side USB operations on the emulated device; answers with usbfs-style statuses.

    Statuses are 0 or a negative errno as usbfs reports them in ``urb.status``:
    -EPIPE for a STALL, -ETIMEDOUT when the emulated timeout ran out,
    -EOVERFLOW for babble, -EPROTO for other bus errors, -ENODEV once the
    device has left the bus (after a DFU manifestation reset, for example).
    """

    target: EmulatedTarget
    poll_scale: float = 1.0
    timeout_ms: float = 5000.0
    stats: ServeStats = field(default_factory=ServeStats)
    sent: SentDownload | None = None  # the DNLOAD traffic, once a host sent any
    started_ns: int = 0
    progress: progress.Task | None = None  # shows the session's requests while it runs

    @property
    def host(self):  # noqa: ANN201 - emulator.usb.host.VirtualHost
        return self.target.link.host

    @property
    def address(self) -> int:
        info = self.host.device
        return info.address if info is not None else 1

    @property
    def gone(self) -> bool:
        return self.stats.detached_at_ns is not None

    def _note_detach(self) -> None:
        if self.stats.detached_at_ns is None and not self.host.wire.attached():
            self.stats.detached_at_ns = self.target.now_ns()

    def _run(self, op) -> tuple[int, bytes]:  # noqa: ANN001 - a callable doing host work
        if self.gone:
            return -errno.ENODEV, b""
        self.stats.transfers += 1
        try:
            result = op()
        except UsbError as e:
            self.stats.failed += 1
            self._note_detach()
            if self.gone or isinstance(e, UsbNotAttached):
                return -errno.ENODEV, bytes(e.partial)
            if isinstance(e, UsbStall):
                return -errno.EPIPE, bytes(e.partial)
            if isinstance(e, UsbTimeout):
                return -errno.ETIMEDOUT, bytes(e.partial)
            if isinstance(e, UsbBabble):
                return -errno.EOVERFLOW, bytes(e.partial)
            return -errno.EPROTO, bytes(e.partial)
        self._note_detach()
        self._show()
        return 0, result if isinstance(result, bytes) else b""

    def _show(self) -> None:
        if self.progress is None:
            return
        sent = self.sent.bytes_sent if self.sent is not None else 0
        self.progress.update(completed=self.stats.transfers,
                             description=f"serving: {sent / 1024:.1f} KiB downloaded, "
                                         f"{(self.target.now_ns() - self.started_ns) / 1e6:.0f} ms emulated")

    def control(self, setup: bytes, data_out: bytes = b"", timeout_ms: float | None = None) -> tuple[int, bytes]:
        """One control transfer; returns (status, data read)."""
        bm, req, value, index, length = struct.unpack("<BBHHH", setup[:8])
        timeout = timeout_ms or self.timeout_ms
        addr = self.address
        host = self.host
        if bm == 0x00 and req == SET_CONFIGURATION:
            return self._run(lambda: host.set_configuration(addr, value, timeout))
        if bm == 0x01 and req == SET_INTERFACE:
            return self._run(lambda: host.set_interface(addr, index, value, timeout))
        if bm == 0x02 and req == CLEAR_FEATURE and value == 0:
            return self._run(lambda: host.clear_halt(addr, index, timeout))
        status, data = self._run(lambda: host.control_transfer(addr, bm, req, value, index,
                                                               length if bm & 0x80 else bytes(data_out), timeout))
        if status == 0 and bm == 0xA1 and req == DFU_GETSTATUS and len(data) >= 6:
            data = self._charge_poll(data)
        if status == 0 and bm == 0x21 and req == DFU_DNLOAD:
            self._sent().record(value, bytes(data_out))
        return status, data

    def _sent(self) -> SentDownload:
        if self.sent is None:
            info = self.host.device
            functional = info.dfu_functional if info is not None else None
            version = functional.bcdDFUVersion if functional is not None else None
            size = functional.wTransferSize if functional is not None else 0
            self.sent = SentDownload(version == DFUSE_VERSION, size or 0)
        return self.sent

    def flash_check(self, plain_address: int | None = None) -> dict | None:
        """The flash model against every byte the host sent in DNLOAD requests (None if it sent none).

        A plain DFU payload is checked at ``plain_address``, else where the bootloader wrote during
        the session (the flash journal)."""
        if self.sent is None or self.sent.empty:
            return None
        m = self.target.board.machine
        landed = None
        if not self.sent.dfuse:
            landed = landing_address(m, self.started_ns, m.now_ns)
            if plain_address is None and landed is None:
                # Nowhere to compare: a plain DFU host sends no address, and this device stored the
                # payload somewhere other than the chip's flash (RAM, an external memory, a UART).
                # Not a failure by itself; --address makes the chip's flash the required place.
                return {"ok": None, "compared": 0, "protocol": "dfu",
                        "problem": "the device wrote nothing to the chip's flash during the session; "
                                   "give --address to require the payload there"}
        segments = self.sent.segments(plain_address if plain_address is not None else landed)
        result = compare_flash(bytes(m.flash_storage), m.chip.flash_base, segments)
        result["protocol"] = "dfuse" if self.sent.dfuse else "dfu"
        if landed is not None:
            result["landed_at"] = landed
        return result

    def _charge_poll(self, status: bytes) -> bytes:
        poll = int.from_bytes(status[1:4], "little")
        if poll:
            self.host.wait_ms(poll)
            self.stats.poll_charged_ms += poll
            self._note_detach()
        scaled = min(0xFFFFFF, round(poll * self.poll_scale))
        self.stats.poll_handed_ms += scaled
        return status[:1] + scaled.to_bytes(3, "little") + status[4:]

    def transfer(self, kind: str, ep: int, data_out: bytes, length: int,
                 timeout_ms: float | None = None) -> tuple[int, bytes]:
        """A bulk or interrupt transfer on ``ep`` (direction bit included)."""
        timeout = timeout_ms or self.timeout_ms
        addr, host = self.address, self.host
        if ep & 0x80:
            fn = host.bulk_in if kind == "bulk" else host.interrupt_in
            return self._run(lambda: fn(addr, ep, length, timeout))
        fn = host.bulk_out if kind == "bulk" else host.interrupt_out
        return self._run(lambda: fn(addr, ep, bytes(data_out), timeout))

    def set_configuration(self, value: int) -> int:
        return self._run(lambda: self.host.set_configuration(self.address, value, self.timeout_ms))[0]

    def set_interface(self, interface: int, alt: int) -> int:
        status, _ = self._run(lambda: self.host.set_interface(self.address, interface, alt, self.timeout_ms))
        if status == -errno.EPIPE and self._alt_count(interface) == 1:
            # Linux usb_set_interface(): a device with one alt setting may stall
            # SET_INTERFACE; the kernel then just resets the endpoints' state.
            return 0
        return status

    def _alt_count(self, interface: int) -> int:
        info = self.host.device
        if info is None:
            return 0
        return sum(len(c.alt_settings(interface)) for c in info.configurations)

    def clear_halt(self, ep: int) -> int:
        return self._run(lambda: self.host.clear_halt(self.address, ep, self.timeout_ms))[0]

    def reset(self) -> int:
        """USBDEVFS_RESET: bus reset and re-enumeration at the same address, config restored."""
        addr = self.address
        info = self.host.device
        config = info.configuration_value if info is not None else None
        status, _ = self._run(lambda: self.host.enumerate(addr, configure=False, read_strings=False))
        if status == 0 and config:
            status = self.set_configuration(config)
        return status

    def summary(self) -> dict:
        m = self.target.board.machine
        return {"emulated_ms": m.now_ns / 1e6, "transfers": self.stats.transfers,
                "failed": self.stats.failed, "poll_charged_ms": self.stats.poll_charged_ms,
                "poll_handed_ms": self.stats.poll_handed_ms,
                "detached_at_ms": None if self.stats.detached_at_ns is None else self.stats.detached_at_ns / 1e6}


@dataclass
class ServeResult:
    exit_code: int
    board: Board
    server: DeviceServer
    wall_s: float
    session_start_ns: int  # emulated time when the program started (after boot and enumeration)
    flash_check: dict | None = None  # the flash against the DNLOAD traffic (None: nothing was sent)

    @property
    def command_exit_code(self) -> int:
        return self.exit_code

    @property
    def flash_ok(self) -> bool:
        return flash_check_passed(self.flash_check)

    @property
    def session_ns(self) -> int:
        return self.board.machine.now_ns - self.session_start_ns


def boot_and_attach(options: BoardOptions, *, attach_timeout_ns: int = 2_000_000_000,
                    pcap_path: str | None = None, selector: DfuSelector | None = None) -> EmulatedTarget:
    """Build the board (BOOT1 low unless asked otherwise) and enumerate it like a hub driver; with
    ``selector`` the device must be the DFU device it names."""
    board = build_board(options)
    try:
        return attach(board, pcap_path=pcap_path, attach_timeout_ns=attach_timeout_ns, selector=selector)
    except UsbError as e:
        raise EmulatorError(f"USB enumeration failed: {e}") from None


def device_description(server: DeviceServer) -> dict:
    """What the bridge needs to publish the device in sysfs."""
    info = server.host.device
    assert info is not None
    d = info.device
    strings = info.strings
    return {
        "op": "device", "busnum": server.host.bus_number, "devnum": info.address, "speed": 12,
        "idVendor": d.idVendor, "idProduct": d.idProduct, "bcdDevice": d.bcdDevice,
        "bNumConfigurations": d.bNumConfigurations, "configuration": info.configuration_value or 0,
        "descriptors": (info.raw_device + b"".join(info.raw_configurations)).hex(),
        "manufacturer": strings.get(d.iManufacturer, ""), "product": strings.get(d.iProduct, ""),
        "serial": strings.get(d.iSerialNumber, ""),
    }


def _answer(server: DeviceServer, header: dict, payload: bytes) -> tuple[dict, bytes]:
    op = header.get("op")
    if op == "transfer":
        kind = header["kind"]
        if kind == "control":
            status, data = server.control(bytes.fromhex(header["setup"]), payload, header.get("timeout_ms"))
        else:
            status, data = server.transfer(kind, header["ep"], payload, header["length"], header.get("timeout_ms"))
        return {"status": status, "in": bool(data)}, data
    if op == "set_interface":
        return {"status": server.set_interface(header["interface"], header["alt"])}, b""
    if op == "set_configuration":
        return {"status": server.set_configuration(header["value"])}, b""
    if op == "clear_halt":
        return {"status": server.clear_halt(header["ep"])}, b""
    if op == "reset":
        return {"status": server.reset()}, b""
    return {"status": -errno.ENOSYS}, b""


def bridge_python() -> str:
    return os.environ.get("EMULATOR_BRIDGE_PYTHON", DEFAULT_BRIDGE_PYTHON)


def serve_command(options: BoardOptions, command: Sequence[str], *, poll_scale: float = 1.0,
                  timeout_ms: float = 5000.0, attach_timeout_ns: int = 2_000_000_000,
                  pcap_path: str | None = None, selector: DfuSelector | None = None,
                  plain_address: int | None = None) -> ServeResult:
    """Boot, enumerate, run ``command`` against the device through umockdev; returns when it exits."""
    if not command:
        raise EmulatorError("serve: no command given after --")
    python = bridge_python()
    if shutil.which(python) is None:
        raise EmulatorError(f"the umockdev bridge needs Debian's system python3 at {python}: {APT_LINE}")
    if shutil.which(command[0]) is None:
        hint = f": {APT_LINE}" if Path(command[0]).name == "dfu-util" else ""
        raise EmulatorError(f"{command[0]} not found{hint}")
    target = boot_and_attach(options, attach_timeout_ns=attach_timeout_ns, pcap_path=pcap_path, selector=selector)
    server = DeviceServer(target, poll_scale=poll_scale, timeout_ms=timeout_ms, started_ns=target.now_ns())
    ours, theirs = socket.socketpair()
    wall0 = time.perf_counter()
    start_ns = target.now_ns()
    reporter = progress.current()
    # While a bar is drawn on the terminal, the program's output goes above it (through the reporter).
    piped = reporter is not None and reporter.draws
    try:
        proc = subprocess.Popen([python, str(BRIDGE), "--fd", str(theirs.fileno()), "--", *command],
                                pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE if piped else None,
                                stderr=subprocess.STDOUT if piped else None)
    except OSError as e:
        raise EmulatorError(f"cannot start the umockdev bridge with {python}: {e.strerror}") from None
    theirs.close()
    echo = None
    if piped:
        assert reporter is not None and proc.stdout is not None
        echo = threading.Thread(target=_forward_lines, args=(proc.stdout, reporter.echo), daemon=True)
        echo.start()
    code: int | None = None
    server.progress = progress.task(f"serving {Path(command[0]).name}", unit="requests")
    try:
        send_frame(ours, device_description(server))
        while True:
            try:
                header, payload = recv_frame(ours)
            except (EOFError, ConnectionError):
                break
            op = header.get("op")
            if op == "error":
                proc.wait()
                raise EmulatorError(header.get("message", "the umockdev bridge failed"))
            if op == "ready":
                continue
            if op == "exit":
                code = int(header["code"])
                break
            reply, data = _answer(server, header, payload)
            send_frame(ours, reply, data)
    finally:
        ours.close()
        server.progress.close()
    bridge_code = proc.wait()
    if echo is not None:
        echo.join(timeout=5)
    wall = time.perf_counter() - wall0
    target.close()
    if code is None:
        raise EmulatorError(f"the umockdev bridge ended without reporting the command's exit (code {bridge_code})")
    return ServeResult(code, target.board, server, wall, start_ns, server.flash_check(plain_address))


def _forward_lines(stream: IO[bytes], echo: Callable[[str], None]) -> None:
    """Hand each line a program prints to ``echo``; of a line redrawn with carriage returns (a
    progress bar of its own), only the last state."""
    pending = b""
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            echo(line.rsplit(b"\r", 1)[-1].decode("utf-8", "replace") + "\n")
    if pending:
        echo(pending.rsplit(b"\r", 1)[-1].decode("utf-8", "replace") + "\n")


def flash_check_passed(check: dict | None) -> bool:
    """False only for a real difference: nothing sent, or nowhere to compare (``ok`` None), is not one."""
    return check is None or check["ok"] is not False


def format_flash_check(check: dict | None) -> str | None:
    """One line on the flash against the DNLOAD traffic, or None when nothing was downloaded."""
    if check is None:
        return None
    kind = "DfuSe" if check.get("protocol") == "dfuse" else "plain DFU"
    where = f", landed at 0x{check['landed_at']:08X}" if check.get("landed_at") is not None else ""
    if check["ok"]:
        return f"serve: the flash holds the {check['compared']} bytes sent in DNLOAD requests ({kind}{where})"
    if check["ok"] is None:
        return f"serve: flash not checked: {check['problem']} ({kind})"
    if check.get("problem"):
        return f"serve: FLASH CHECK FAILED: {check['problem']} ({kind})"
    return f"serve: FLASH DIFFERS from the DNLOAD traffic ({kind}{where}): {describe_differences(check)}"


def format_summary(result: ServeResult) -> str:
    s = result.server.summary()
    detached = f", device left the bus at {s['detached_at_ms']:.3f} ms" if s["detached_at_ms"] is not None else ""
    return (f"serve: command exited {result.exit_code}; emulated {result.session_ns / 1e6:.3f} ms "
            f"of session ({s['emulated_ms']:.3f} ms since power-on), wall {result.wall_s:.3f} s; "
            f"{s['transfers']} requests ({s['failed']} failed), bwPollTimeout {s['poll_charged_ms']} ms "
            f"emulated / {s['poll_handed_ms']:.0f} ms handed to the program{detached}")

"""usbfs side of ``python -m emulator serve``: runs under Debian's system python3 with PyGObject.

umockdev's GI bindings (``UMockdev.IoctlBase``) exist only for the system
interpreter, while the emulator runs in the project's Python.  So this file is
a small, standalone process (stdlib + ``gi`` only, no project imports) that:

1. reads the enumerated device's descriptors from the emulator over an
   inherited socket (``--fd``),
2. publishes it in a private umockdev testbed as ``/dev/bus/usb/BBB/DDD`` with
   the sysfs attributes libusb reads,
3. starts COMMAND with ``LD_PRELOAD=libumockdev-preload.so.0`` and the testbed's
   ``UMOCKDEV_DIR``,
4. answers COMMAND's usbfs ioctls (linux/usbdevice_fs.h) by asking the emulator,
5. exits with COMMAND's exit code.

Wire protocol with the emulator (both directions): a frame is
``u32 length`` + ``u32 header length`` + JSON header + raw payload bytes.
The emulator completes every transfer before it answers, so every URB is
complete when SUBMITURB returns and REAPURB never has to block.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import struct
import subprocess
import sys

PRELOAD = "libumockdev-preload.so.0"
APT_LINE = "apt-get install -y umockdev gir1.2-umockdev-1.0 python3-gi"


# -- framing (emulator/serve.py imports these; this file itself imports nothing from the project) --
def send_frame(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(struct.pack("<II", 4 + len(head) + len(payload), len(head)) + head + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed the bridge socket")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<I", _recv_exact(sock, 4))
    body = _recv_exact(sock, length)
    (head_len,) = struct.unpack_from("<I", body)
    return json.loads(body[4 : 4 + head_len]), body[4 + head_len :]


# -- usbfs ioctl numbers (linux/usbdevice_fs.h, 64-bit layouts) --------------------------------
def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("U") << 8) | nr


_NONE, _W, _R = 0, 1, 2
URB_SIZE = 56  # struct usbdevfs_urb without iso descriptors on LP64
CONTROL = _ioc(_R | _W, 0, 24)
BULK = _ioc(_R | _W, 2, 24)
SETINTERFACE = _ioc(_R, 4, 8)
SETCONFIGURATION = _ioc(_R, 5, 4)
GETDRIVER = _ioc(_W, 8, 260)
SUBMITURB = _ioc(_R, 10, URB_SIZE)
DISCARDURB = _ioc(_NONE, 11, 0)
REAPURB = _ioc(_W, 12, 8)
REAPURBNDELAY = _ioc(_W, 13, 8)
CLAIMINTERFACE = _ioc(_R, 15, 4)
RELEASEINTERFACE = _ioc(_R, 16, 4)
CONNECTINFO = _ioc(_W, 17, 8)
IOCTL = _ioc(_R | _W, 18, 16)
RESET = _ioc(_NONE, 20, 0)
CLEAR_HALT = _ioc(_R, 21, 4)
DISCONNECT = _ioc(_NONE, 22, 0)
CONNECT = _ioc(_NONE, 23, 0)
GET_CAPABILITIES = _ioc(_R, 26, 4)
DISCONNECT_CLAIM = _ioc(_R, 27, 264)
DROP_PRIVILEGES = _ioc(_W, 30, 4)
GET_SPEED = _ioc(_NONE, 31, 0)

URB_TYPE_NAMES = {0: "iso", 1: "interrupt", 2: "control", 3: "bulk"}
# ZERO_PACKET | BULK_CONTINUATION | NO_PACKET_SIZE_LIM | REAP_AFTER_DISCONNECT
CAPABILITIES = 0x01 | 0x02 | 0x04 | 0x10
USB_SPEED_FULL = 2  # enum usb_device_speed (ch9.h)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def find_preload() -> str | None:
    """Where the dynamic linker would find the preload library, if anywhere."""
    try:
        out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.strip().startswith(PRELOAD):
            return line.rsplit("=>", 1)[-1].strip()
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
              "/usr/local/lib"):
        if os.path.exists(os.path.join(d, PRELOAD)):
            return os.path.join(d, PRELOAD)
    return None


class Bridge:
    """Answers usbfs ioctls on one emulated device node."""

    def __init__(self, sock: socket.socket, GLib, UMockdev, device: dict) -> None:  # noqa: ANN001, N803
        self.sock = sock
        self.GLib = GLib
        self.device = device
        self.completed: list[object] = []  # IoctlData of URBs waiting to be reaped
        self.handler = UMockdev.IoctlBase()
        self.handler.connect("handle-ioctl", self._on_ioctl)

    # one request to the emulator, one answer
    def ask(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        send_frame(self.sock, header, payload)
        return recv_frame(self.sock)

    def _on_ioctl(self, _handler: object, client: object) -> bool:
        try:
            result, err = self._dispatch(client)
        except (EOFError, OSError):
            client.abort()  # the emulator is gone: umockdev makes the client exit(1)
            return True
        client.complete(result, err)
        return True

    def _dispatch(self, client) -> tuple[int, int]:  # noqa: ANN001, C901 - one table of ioctls
        request = client.get_request()
        arg = client.get_arg()
        if request == SUBMITURB:
            return self._submit(arg)
        if request in (REAPURB, REAPURBNDELAY):
            if not self.completed:
                return -1, errno.EAGAIN
            ptr = arg.resolve(0, 8)
            ptr.set_ptr(0, self.completed.pop(0))
            return 0, 0
        if request == DISCARDURB:
            return -1, errno.EINVAL  # every URB completed at submission (usbfs: not pending -> EINVAL)
        if request == CONTROL:
            return self._sync_control(arg)
        if request in (CLAIMINTERFACE, RELEASEINTERFACE):
            return 0, 0
        if request == SETINTERFACE:
            data = bytes(arg.resolve(0, 8).retrieve())
            intf, alt = struct.unpack("<II", data)
            return self._status(self.ask({"op": "set_interface", "interface": intf, "alt": alt}))
        if request == SETCONFIGURATION:
            (value,) = struct.unpack("<i", bytes(arg.resolve(0, 4).retrieve()))
            return self._status(self.ask({"op": "set_configuration", "value": value}))
        if request == CLEAR_HALT:
            (ep,) = struct.unpack("<I", bytes(arg.resolve(0, 4).retrieve()))
            return self._status(self.ask({"op": "clear_halt", "ep": ep}))
        if request == RESET:
            return self._status(self.ask({"op": "reset"}))
        if request == GET_CAPABILITIES:
            arg.resolve(0, 4).update(0, list(struct.pack("<I", CAPABILITIES)))
            return 0, 0
        if request == CONNECTINFO:
            arg.resolve(0, 8).update(0, list(struct.pack("<IB3x", self.device["devnum"], 0)))
            return 0, 0
        if request == GET_SPEED:
            return USB_SPEED_FULL, 0
        if request in (GETDRIVER, IOCTL):
            return -1, errno.ENODATA  # no kernel driver is bound to the emulated interface
        if request in (DISCONNECT_CLAIM, DROP_PRIVILEGES, DISCONNECT, CONNECT):
            return 0, 0
        return -1, errno.ENOTTY

    @staticmethod
    def _status(answer: tuple[dict, bytes]) -> tuple[int, int]:
        status = answer[0]["status"]
        return (0, 0) if status == 0 else (-1, -status)

    def _transfer(self, kind: str, ep: int, setup: bytes, out: bytes, length: int,
                  timeout_ms: int | None) -> tuple[int, bytes]:
        header = {"op": "transfer", "kind": kind, "ep": ep, "length": length, "timeout_ms": timeout_ms}
        if kind == "control":
            header["setup"] = setup.hex()
        reply, data = self.ask(header, out)
        return reply["status"], data if reply.get("in") else b""

    def _submit(self, arg) -> tuple[int, int]:  # noqa: ANN001
        urb = arg.resolve(0, URB_SIZE)
        raw = bytes(urb.retrieve())
        kind_code, ep = raw[0], raw[1]
        (buf_len,) = struct.unpack_from("<i", raw, 24)
        kind = URB_TYPE_NAMES.get(kind_code)
        if kind is None or kind == "iso":
            return -1, errno.EINVAL
        buf = urb.resolve(16, buf_len) if buf_len > 0 else None
        content = bytes(buf.retrieve()) if buf is not None else b""
        if kind == "control":
            if buf_len < 8:
                return -1, errno.EINVAL
            setup = content[:8]
            w_length = struct.unpack_from("<H", setup, 6)[0]
            is_in = bool(setup[0] & 0x80)
            status, data = self._transfer("control", 0, setup, b"" if is_in else content[8 : 8 + w_length],
                                          w_length, None)
            offset = 8
        else:
            is_in = bool(ep & 0x80)
            status, data = self._transfer(kind, ep, b"", b"" if is_in else content, buf_len, None)
            offset = 0
        if is_in:
            if data:
                buf.update(offset, list(data))
            actual = len(data)
        else:
            actual = 0 if status else len(content) - offset
        urb.update(4, list(struct.pack("<i", status)))
        urb.update(28, list(struct.pack("<i", actual)))
        self.completed.append(urb)
        return 0, 0

    def _sync_control(self, arg) -> tuple[int, int]:  # noqa: ANN001
        ctrl = arg.resolve(0, 24)
        raw = bytes(ctrl.retrieve())
        setup = raw[:8]
        w_length = struct.unpack_from("<H", raw, 6)[0]
        (timeout,) = struct.unpack_from("<I", raw, 8)
        is_in = bool(raw[0] & 0x80)
        buf = ctrl.resolve(16, w_length) if w_length else None
        out = b"" if is_in or buf is None else bytes(buf.retrieve())
        status, data = self._transfer("control", 0, setup, out, w_length, timeout or None)
        if status:
            return -1, -status
        if is_in and data:
            buf.update(0, list(data))
            return len(data), 0
        return (len(data) if is_in else w_length), 0


def sysfs_description(device: dict) -> str:
    """umockdev's text format for the device: what libusb/libudev read from sysfs."""
    bus, dev = device["busnum"], device["devnum"]
    lines = [
        f"P: /devices/usb{bus}/{bus}-1",
        f"N: bus/usb/{bus:03d}/{dev:03d}",
        "E: SUBSYSTEM=usb",
        "E: DRIVER=usb",
        "E: DEVTYPE=usb_device",
        f"E: BUSNUM={bus:03d}",
        f"E: DEVNUM={dev:03d}",
        f"E: DEVNAME=/dev/bus/usb/{bus:03d}/{dev:03d}",
        f"E: PRODUCT={device['idVendor']:x}/{device['idProduct']:x}/{device['bcdDevice']:x}",
        f"A: idVendor={device['idVendor']:04x}\\n",
        f"A: idProduct={device['idProduct']:04x}\\n",
        f"A: bcdDevice={device['bcdDevice']:04x}\\n",
        f"A: busnum={bus}\\n",
        f"A: devnum={dev}\\n",
        f"A: bConfigurationValue={device['configuration'] or ''}\\n",
        f"A: bNumConfigurations={device['bNumConfigurations']}\\n",
        f"A: speed={device['speed']}\\n",
        "A: devpath=1\\n",
        f"H: descriptors={device['descriptors']}",
    ]
    for key in ("manufacturer", "product", "serial"):
        if device.get(key):
            text = device[key].replace("\\", "\\\\").replace("\n", " ")
            lines.insert(-1, f"A: {key}={text}\\n")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--fd" or argv[2] != "--":
        fail("usage: umockdev_bridge.py --fd N -- COMMAND [ARGS...]")
        return 2
    sock = socket.socket(fileno=int(argv[1]))
    command = argv[3:]

    def refuse(message: str) -> int:
        send_frame(sock, {"op": "error", "message": message})
        return 2

    try:
        import gi

        gi.require_version("UMockdev", "1.0")
        from gi.repository import GLib, UMockdev
    except (ImportError, ValueError) as e:
        return refuse(f"umockdev's Python bindings are missing in {sys.executable} ({e}): {APT_LINE}")
    if not hasattr(UMockdev, "IoctlBase") or not hasattr(UMockdev.IoctlData, "update"):
        return refuse(f"umockdev is too old (need 0.17.14 or newer for IoctlBase from Python): {APT_LINE}")
    if find_preload() is None:
        return refuse(f"{PRELOAD} not found: {APT_LINE}")

    header, _ = recv_frame(sock)
    if header.get("op") != "device":
        return refuse(f"bridge protocol: expected the device description, got {header.get('op')!r}")
    testbed = UMockdev.Testbed.new()
    bridge = Bridge(sock, GLib, UMockdev, header)
    devnode = f"/dev/bus/usb/{header['busnum']:03d}/{header['devnum']:03d}"
    # The ioctl handler must be in place before the device appears (umockdev issue #173).
    testbed.attach_ioctl(devnode, bridge.handler)
    testbed.add_from_string(sysfs_description(header))

    env = dict(os.environ)
    env["UMOCKDEV_DIR"] = testbed.get_root_dir()
    env["LD_PRELOAD"] = " ".join(p for p in (PRELOAD, env.get("LD_PRELOAD", "")) if p)
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as e:
        hint = " (apt-get install -y dfu-util)" if os.path.basename(command[0]) == "dfu-util" else ""
        return refuse(f"cannot run {command[0]}: {e.strerror}{hint}")
    send_frame(sock, {"op": "ready", "root": testbed.get_root_dir()})

    loop = GLib.MainLoop()
    outcome: list[int] = []

    def on_exit(_pid: int, status: int) -> None:
        outcome.append(os.waitstatus_to_exitcode(status))
        loop.quit()

    GLib.child_watch_add(GLib.PRIORITY_DEFAULT, child.pid, on_exit)
    loop.run()
    code = outcome[0] if outcome else 1
    if code < 0:  # killed by a signal: the shell convention
        code = 128 - code
    with contextlib.suppress(OSError):
        send_frame(sock, {"op": "exit", "code": code})
    child.returncode = code  # GLib reaped it; keep Popen from waiting again
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A GDB remote stub over a :class:`Target`: one handler per packet, keyed by its prefix.

The stub answers what arm-none-eabi-gdb / gdb-multiarch ask of a Cortex-M
target (GDB manual, Appendix E): ``qSupported``, target description and
memory map through ``qXfer``, registers (``g G p P``), memory (``m M X``),
flash programming (``vFlashErase vFlashWrite vFlashDone``), break- and
watchpoints (``Z0``-``Z4``), run control (``c s vCont``, Ctrl-C), ``?``,
``qRcmd`` (``monitor``), ``D`` and ``k``.  Everything the target does is
behind :class:`Target`, so each handler can be tested from a packet string.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from emulator.gdb import rsp
from emulator.gdb.tdesc import REGISTERS, Region, memory_map_xml, target_xml

SIGINT, SIGTRAP, SIGSEGV = 2, 5, 11
PACKET_SIZE = 0x4000
_REG_BYTES = [1 if name in ("primask", "basepri", "faultmask", "control") else 4 for name in REGISTERS]


@dataclass
class Stop:
    """Why the target stopped, as a stop reply (GDB manual E.3)."""

    signal: int = SIGTRAP
    reason: str = ""  # e.g. "swbreak:", "hwbreak:", "watch:20000010"
    exited: int | None = None  # the run ended: W packet
    message: str = ""  # printed on the debugger console first (O packet)


class Target(Protocol):
    """What the stub needs of the emulated board."""

    def registers(self) -> list[int]: ...

    def set_register(self, n: int, value: int) -> None: ...

    def read_memory(self, address: int, length: int) -> bytes: ...

    def write_memory(self, address: int, data: bytes) -> None: ...

    def memory_regions(self) -> list[Region]: ...

    def flash_erase(self, address: int, length: int) -> None: ...

    def flash_write(self, address: int, data: bytes) -> None: ...

    def flash_done(self) -> None: ...

    def set_breakpoint(self, kind: int, address: int, length: int, on: bool) -> bool: ...

    def monitor(self, command: str) -> str: ...


class TargetError(Exception):
    """A request the target refuses (bad address, flash error): answered ``E01`` and a console line."""


Handler = Callable[["GdbStub", bytes], bytes | None]
_HANDLERS: list[tuple[bytes, Handler]] = []


def handles(prefix: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS.append((prefix.encode(), fn))
        _HANDLERS.sort(key=lambda item: -len(item[0]))  # longest prefix first: "vFlashErase" before "v"
        return fn
    return register


def _hex_int(text: bytes) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise rsp.ProtocolError(f"not a hex number: {text!r}") from None


def _addr_len(text: bytes) -> tuple[int, int]:
    addr, _, length = text.partition(b",")
    return _hex_int(addr), _hex_int(length)


class GdbStub:
    """The protocol state for one debugger connection."""

    def __init__(self, target: Target, *, send: Callable[[bytes], None]) -> None:
        self.target = target
        self._send = send
        self.resume: str | None = None  # "step" or "continue" once the debugger lets the target run
        self.no_ack = False
        self.last_stop = Stop(SIGTRAP)
        self.detached = False
        self.killed = False
        # The ELF being debugged, named to GDB (qXfer:exec-file) so that `target remote` alone finds
        # its symbols; without vFile support GDB then opens it on the local file system.
        self.exec_file: str | None = None

    # -- I/O ----------------------------------------------------------------------------------
    def send_packet(self, payload: bytes) -> None:
        self._send(rsp.frame(payload))

    def console(self, text: str) -> None:
        """A line on the debugger's console (an ``O`` packet)."""
        if text:
            self.send_packet(b"O" + text.encode().hex().encode())

    def handle(self, payload: bytes) -> bytes | None:
        """The reply to one packet (None: reply already sent, or none due)."""
        for prefix, fn in _HANDLERS:
            if payload.startswith(prefix):
                try:
                    return fn(self, payload[len(prefix):])
                except TargetError as e:
                    self.console(f"{e}\n")
                    return b"E01"
                except rsp.ProtocolError:
                    return b"E02"
        return b""  # unsupported: the empty reply (E.1)

    # -- run control --------------------------------------------------------------------------
    def run(self, step: bool) -> None:
        """Let the target run: the reply is the stop reply sent when it halts again (:meth:`report_stop`)."""
        self.resume = "step" if step else "continue"

    def report_stop(self, stop: Stop) -> None:
        self.last_stop = stop
        if stop.message:
            self.console(stop.message if stop.message.endswith("\n") else stop.message + "\n")
        self.send_packet(stop_reply(stop))


def stop_reply(stop: Stop) -> bytes:
    if stop.exited is not None:
        return f"W{stop.exited & 0xFF:02x}".encode()
    reason = stop.reason + (";" if stop.reason and not stop.reason.endswith(";") else "")
    return f"T{stop.signal:02x}{reason}thread:1;".encode()


# -- queries -----------------------------------------------------------------------------------
@handles("qSupported")
def _q_supported(stub: GdbStub, _args: bytes) -> bytes:
    return (f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;qXfer:memory-map:read+;QStartNoAckMode+;"
            "vContSupported+;swbreak+;hwbreak+" + (";qXfer:exec-file:read+" if stub.exec_file else "")).encode()


@handles("QStartNoAckMode")
def _no_ack(stub: GdbStub, _args: bytes) -> bytes:
    stub.no_ack = True
    return b"OK"


def _xfer(document: str, args: bytes) -> bytes:
    _, _, span = args.rpartition(b":")
    offset, length = _addr_len(span)
    data = document.encode()
    chunk = data[offset : offset + length]
    return (b"l" if offset + length >= len(data) else b"m") + rsp.escape_binary(chunk)


@handles("qXfer:features:read:")
def _q_features(stub: GdbStub, args: bytes) -> bytes:
    if not args.startswith(b"target.xml:"):
        return b"E00"
    return _xfer(target_xml(), args)


@handles("qXfer:exec-file:read:")
def _q_exec_file(stub: GdbStub, args: bytes) -> bytes:
    if not stub.exec_file:
        return b"E00"
    return _xfer(stub.exec_file, args)


@handles("qXfer:memory-map:read:")
def _q_memory_map(stub: GdbStub, args: bytes) -> bytes:
    return _xfer(memory_map_xml(stub.target.memory_regions()), args)


@handles("qAttached")
def _q_attached(stub: GdbStub, _args: bytes) -> bytes:
    return b"1"  # attached to an existing process: "kill" is not implied by quitting GDB


@handles("qC")
def _q_current_thread(stub: GdbStub, _args: bytes) -> bytes:
    return b"QC1"


def gdb_crc32(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """The CRC ``qCRC`` answers: CRC-32 polynomial 0x04C11DB7, MSB first, no final inversion
    (GDB's ``xcrc32``, libiberty/crc32.c)."""
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


@handles("qCRC:")
def _q_crc(stub: GdbStub, args: bytes) -> bytes:
    # compare-sections; without its own handler "qCRC" would match "qC" (the current thread).
    addr, length = _addr_len(args)
    return f"C{gdb_crc32(stub.target.read_memory(addr, length)):08x}".encode()


@handles("qfThreadInfo")
def _q_threads_first(stub: GdbStub, _args: bytes) -> bytes:
    return b"m1"


@handles("qsThreadInfo")
def _q_threads_next(stub: GdbStub, _args: bytes) -> bytes:
    return b"l"


@handles("qSymbol")
def _q_symbol(stub: GdbStub, _args: bytes) -> bytes:
    return b"OK"


@handles("qRcmd,")
def _monitor(stub: GdbStub, args: bytes) -> bytes:
    try:
        command = bytes.fromhex(args.decode()).decode(errors="replace")
    except ValueError:
        raise rsp.ProtocolError("qRcmd argument is not hex") from None
    out = stub.target.monitor(command.strip())
    stub.console(out if out.endswith("\n") or not out else out + "\n")
    return b"OK"


@handles("H")
def _set_thread(stub: GdbStub, _args: bytes) -> bytes:
    return b"OK"


@handles("T")
def _thread_alive(stub: GdbStub, _args: bytes) -> bytes:
    return b"OK"


@handles("?")
def _why_stopped(stub: GdbStub, _args: bytes) -> bytes:
    return stop_reply(stub.last_stop)


# -- registers ---------------------------------------------------------------------------------
@handles("g")
def _read_registers(stub: GdbStub, _args: bytes) -> bytes:
    values = stub.target.registers()
    return b"".join((v & ((1 << (8 * n)) - 1)).to_bytes(n, "little").hex().encode()
                    for v, n in zip(values, _REG_BYTES, strict=True))


@handles("G")
def _write_registers(stub: GdbStub, args: bytes) -> bytes:
    raw = bytes.fromhex(args.decode())
    pos = 0
    for i, n in enumerate(_REG_BYTES):
        if pos + n > len(raw):
            break
        stub.target.set_register(i, int.from_bytes(raw[pos : pos + n], "little"))
        pos += n
    return b"OK"


@handles("p")
def _read_register(stub: GdbStub, args: bytes) -> bytes:
    n = _hex_int(args)
    if n >= len(REGISTERS):
        return b"E00"
    size = _REG_BYTES[n]
    return (stub.target.registers()[n] & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex().encode()


@handles("P")
def _write_register(stub: GdbStub, args: bytes) -> bytes:
    n_text, _, value = args.partition(b"=")
    n = _hex_int(n_text)
    if n >= len(REGISTERS):
        return b"E00"
    stub.target.set_register(n, int.from_bytes(bytes.fromhex(value.decode()), "little"))
    return b"OK"


# -- memory ------------------------------------------------------------------------------------
@handles("m")
def _read_memory(stub: GdbStub, args: bytes) -> bytes:
    addr, length = _addr_len(args)
    return stub.target.read_memory(addr, min(length, PACKET_SIZE // 2)).hex().encode()


@handles("M")
def _write_memory(stub: GdbStub, args: bytes) -> bytes:
    head, _, data = args.partition(b":")
    addr, length = _addr_len(head)
    payload = bytes.fromhex(data.decode())
    if len(payload) != length:
        raise rsp.ProtocolError("M length does not match its data")
    stub.target.write_memory(addr, payload)
    return b"OK"


@handles("X")
def _write_memory_binary(stub: GdbStub, args: bytes) -> bytes:
    head, _, data = args.partition(b":")
    addr, length = _addr_len(head)
    payload = rsp.unescape_binary(data)
    if len(payload) != length:
        raise rsp.ProtocolError("X length does not match its data")
    if length:
        stub.target.write_memory(addr, payload)
    return b"OK"


@handles("vFlashErase:")
def _flash_erase(stub: GdbStub, args: bytes) -> bytes:
    addr, length = _addr_len(args)
    stub.target.flash_erase(addr, length)
    return b"OK"


@handles("vFlashWrite:")
def _flash_write(stub: GdbStub, args: bytes) -> bytes:
    addr_text, _, data = args.partition(b":")
    stub.target.flash_write(_hex_int(addr_text), rsp.unescape_binary(data))
    return b"OK"


@handles("vFlashDone")
def _flash_done(stub: GdbStub, _args: bytes) -> bytes:
    stub.target.flash_done()
    return b"OK"


# -- break- and watchpoints ----------------------------------------------------------------------
def _point(stub: GdbStub, args: bytes, on: bool) -> bytes:
    kind_text, _, rest = args.partition(b",")
    addr_text, _, length_text = rest.partition(b",")
    kind = _hex_int(kind_text)
    if kind > 4:
        return b""
    ok = stub.target.set_breakpoint(kind, _hex_int(addr_text), _hex_int(length_text.split(b";")[0] or b"2"), on)
    return b"OK" if ok else b""


@handles("Z")
def _insert_point(stub: GdbStub, args: bytes) -> bytes:
    return _point(stub, args, True)


@handles("z")
def _remove_point(stub: GdbStub, args: bytes) -> bytes:
    return _point(stub, args, False)


# -- run control -------------------------------------------------------------------------------
def _resume_at(stub: GdbStub, args: bytes) -> None:
    if args:
        stub.target.set_register(15, _hex_int(args))


@handles("c")
def _continue(stub: GdbStub, args: bytes) -> None:
    _resume_at(stub, args)
    stub.run(step=False)


@handles("s")
def _step(stub: GdbStub, args: bytes) -> None:
    _resume_at(stub, args)
    stub.run(step=True)


@handles("vCont?")
def _vcont_query(stub: GdbStub, _args: bytes) -> bytes:
    return b"vCont;c;C;s;S;t"


@handles("vCont;")
def _vcont(stub: GdbStub, args: bytes) -> bytes | None:
    # One thread: the first action decides (c/C continue, s/S step, t stop).
    action = args.split(b";")[0].split(b":")[0]
    if action[:1] == b"t":
        stub.last_stop = Stop(SIGINT)
        return stop_reply(stub.last_stop)
    stub.run(step=action[:1] in (b"s", b"S"))
    return None


@handles("vMustReplyEmpty")
def _must_reply_empty(stub: GdbStub, _args: bytes) -> bytes:
    return b""


@handles("D")
def _detach(stub: GdbStub, _args: bytes) -> bytes:
    stub.detached = True
    return b"OK"


@handles("k")
def _kill(stub: GdbStub, _args: bytes) -> None:
    stub.killed = True
    return None


# -- the connection ------------------------------------------------------------------------------
class Connection:
    """One debugger on a socket: acks, packets, Ctrl-C while the target runs."""

    def __init__(self, sock: socket.socket, target: Target) -> None:
        self.sock = sock
        self.reader = rsp.PacketReader()
        self.pending: list[rsp.Packet | rsp.Interrupt | rsp.Ack] = []
        self.stub = GdbStub(target, send=self._send)

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def interrupted(self) -> bool:
        """While the target runs: has the debugger sent Ctrl-C?  (Other bytes are kept for later.)"""
        if any(isinstance(i, rsp.Interrupt) for i in self.pending):  # came with the packet that resumed
            self.pending = [i for i in self.pending if not isinstance(i, rsp.Interrupt)]
            return True
        return self._poll_interrupt()

    def _poll_interrupt(self) -> bool:
        # One non-blocking recv: polled at every pass of the machine's loop while it runs.
        try:
            data: bytes | None = self.sock.recv(4096, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            data = None
        if data == b"":
            raise ConnectionResetError("the debugger closed the connection")
        if data:
            items = self.reader.feed(data)
            if any(isinstance(i, rsp.Interrupt) for i in items):
                self.pending += [i for i in items if not isinstance(i, rsp.Interrupt)]
                return True
            self.pending += items
        return False

    def serve(self) -> str:
        """Answer packets while the target is halted, until the debugger lets it run ('step',
        'continue'), detaches ('detach'), kills ('kill') or goes away ('gone')."""
        self.stub.resume = None
        while True:
            if not self.pending:
                data = self.sock.recv(4096)
                if not data:
                    return "gone"
                self.pending = self.reader.feed(data)
            item = self.pending.pop(0)
            if isinstance(item, rsp.Ack):
                continue
            if isinstance(item, rsp.Interrupt):
                self.stub.last_stop = Stop(SIGINT)
                self.stub.send_packet(stop_reply(self.stub.last_stop))
                continue
            if not self.stub.no_ack:
                self._send(b"+")
            reply = self.stub.handle(item.payload)
            if self.stub.killed:
                return "kill"
            if reply is not None:
                self.stub.send_packet(reply)
            if self.stub.detached:
                return "detach"
            if self.stub.resume is not None:
                return self.stub.resume

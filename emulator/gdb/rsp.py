"""The GDB remote serial protocol's framing: packets, checksums, escapes, acks, Ctrl-C.

A packet is ``$payload#cs`` where ``cs`` is the modulo-256 sum of the payload
bytes in two hex digits; the receiver answers ``+`` (or ``-`` to ask for a
retransmission) until ``QStartNoAckMode``.  Inside binary data (``X``,
``vFlashWrite``) the bytes ``#``, ``$``, ``}`` and ``*`` are sent as ``}``
followed by the byte XOR 0x20.  A lone 0x03 byte outside a packet is an
interrupt request (Ctrl-C).  (GDB manual, "Overview" and "Binary data" of
Appendix E, Remote Serial Protocol.)
"""

from __future__ import annotations

from dataclasses import dataclass

INTERRUPT = 0x03
_ESCAPED = frozenset(b"#$}*")


class ProtocolError(Exception):
    """A malformed packet from the debugger."""


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def frame(payload: bytes) -> bytes:
    """``payload`` as a packet ready to send."""
    return b"$" + payload + b"#" + f"{checksum(payload):02x}".encode()


def escape_binary(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape_binary(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            try:
                out.append(next(it) ^ 0x20)
            except StopIteration:
                raise ProtocolError("binary data ends with an escape byte") from None
        else:
            out.append(b)
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    payload: bytes


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Ack:
    ok: bool


class PacketReader:
    """Turns the byte stream from the debugger into packets, acks and interrupts."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet | Interrupt | Ack]:
        self._buf += data
        out: list[Packet | Interrupt | Ack] = []
        while self._buf:
            first = self._buf[0]
            if first == INTERRUPT:
                del self._buf[0]
                out.append(Interrupt())
            elif first in (ord("+"), ord("-")):
                del self._buf[0]
                out.append(Ack(first == ord("+")))
            elif first == ord("$"):
                end = self._buf.find(b"#")
                if end < 0 or len(self._buf) < end + 3:
                    break  # wait for the rest of the packet
                payload = bytes(self._buf[1:end])
                cs = bytes(self._buf[end + 1 : end + 3])
                del self._buf[: end + 3]
                try:
                    ok = int(cs, 16) == checksum(payload)
                except ValueError:
                    ok = False
                out.append(Packet(payload) if ok else Ack(False))
            else:
                del self._buf[0]  # line noise between packets is ignored, as gdbserver does
        return out

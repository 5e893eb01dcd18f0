"""Full-speed USB on the wire: how long packets and transactions take (USB 2.0 ch. 7-8).

12 Mbit/s, 83.3 ns per bit.  Every packet starts with SYNC (8 bits) and a PID
(8 bits) and ends with EOP (2 bit times of SE0 and 1 of J, §7.1.13.2).  NRZI
bit stuffing (§7.1.9) inserts a 0 after six consecutive 1s from SYNC to the
end of the CRC, so a data packet's length depends on its bytes: it is counted
exactly here from the payload and its CRC16.  A token's 11 address/endpoint
bits are counted with stuffing too; its CRC5 is counted as 5 plain bits.

Gaps (§7.1.18.1): between two packets of the host (token then DATA, or the
host's ACK after an IN data packet) ``HOST_IPD_BITS``; a device answers after
``DEVICE_RESPONSE_BITS`` (the limit is 6.5 bit times); a host that gets no
answer gives up after ``HOST_TIMEOUT_BITS`` (16-18 bit times).
"""

from __future__ import annotations

import functools

from firmware_models.usb import DataPid, usb_crc16

BIT_NS = 1000 / 12
SYNC_PID_BITS = 16
EOP_BITS = 3
HANDSHAKE_BITS = SYNC_PID_BITS + EOP_BITS  # ACK / NAK / STALL: 19 bit times
HOST_IPD_BITS = 2
DEVICE_RESPONSE_BITS = 4
HOST_TIMEOUT_BITS = 18
EOF1_BITS = 32  # §11.2.5: nothing may be on the bus past EOF1 of a frame

PID_OUT, PID_IN, PID_SOF, PID_SETUP = 0xE1, 0x69, 0xA5, 0x2D
PID_DATA = {DataPid.DATA0: 0xC3, DataPid.DATA1: 0x4B}
_SYNC = 0x80  # KJKJKJKK: seven 0 bits then a 1, sent LSB first


def _stuff_bits(value: int, width: int, ones: int) -> tuple[int, int]:
    """Bits on the wire for one ``width``-bit field sent LSB first after a run of ``ones``
    1 bits, with stuffing; and the run of 1 bits it ends with."""
    total = 0
    for i in range(width):
        total += 1
        if (value >> i) & 1:
            ones += 1
            if ones == 6:
                total += 1  # the stuffed 0
                ones = 0
        else:
            ones = 0
    return total, ones


# (run of 1s before, byte) -> (bits on the wire, run of 1s after): a data packet is counted a
# byte at a time (runs never reach 6: the stuffed 0 ends them).
_BYTE_STUFFING = [[_stuff_bits(byte, 8, ones) for byte in range(256)] for ones in range(6)]


def _stuffed_length(fields: list[tuple[int, int]]) -> int:
    """Bits on the wire for (value, width) fields sent LSB first, with stuffing, without EOP."""
    total = ones = 0
    for value, width in fields:
        n, ones = _stuff_bits(value, width, ones)
        total += n
    return total


def _stuffed_payload(ones: int, payload: bytes) -> tuple[int, int]:
    """Bits on the wire for ``payload``'s bytes after a run of ``ones`` 1 bits, and the run after."""
    total = 0
    table = _BYTE_STUFFING
    for byte in payload:
        n, ones = table[ones][byte]
        total += n
    return total, ones


def ns(bits: float) -> int:
    """Bit times to whole nanoseconds."""
    return round(bits * BIT_NS)


@functools.lru_cache(maxsize=256)
def token_bits(pid: int, addr: int, ep: int) -> int:
    """SETUP / OUT / IN / SOF token: SYNC, PID, 7-bit address, 4-bit endpoint, CRC5, EOP (35+ bits)."""
    return _stuffed_length([(_SYNC, 8), (pid, 8), (addr & 0x7F | (ep & 0xF) << 7, 11)]) + 5 + EOP_BITS


def data_bits(pid: DataPid, payload: bytes) -> int:
    """DATA0/DATA1 packet carrying ``payload``: 35 + 8·n bits before stuffing."""
    crc = usb_crc16(payload)
    total, ones = _stuffed_payload(0, bytes((_SYNC, PID_DATA[DataPid(pid)])))
    n, ones = _stuffed_payload(ones, payload)
    total += n
    n, ones = _stuffed_payload(ones, crc.to_bytes(2, "little"))  # the CRC16 is sent LSB first too
    return total + n + EOP_BITS


def sof_ns() -> int:
    return ns(token_bits(PID_SOF, 0, 0))


def host_write_ns(pid: int, addr: int, ep: int, data_pid: DataPid, payload: bytes) -> int:
    """A SETUP or OUT transaction that the device answers: token, DATA, handshake."""
    return ns(token_bits(pid, addr, ep) + HOST_IPD_BITS + data_bits(data_pid, payload)
              + DEVICE_RESPONSE_BITS + HANDSHAKE_BITS)


def in_estimate_ns(addr: int, ep: int, max_packet: int) -> int:
    """The bus time a host reserves for an IN transaction of up to ``max_packet`` bytes (worst-case stuffing)."""
    worst = SYNC_PID_BITS + (8 * max_packet + 16) * 7 / 6 + EOP_BITS
    return ns(token_bits(PID_IN, addr, ep) + DEVICE_RESPONSE_BITS + worst + HOST_IPD_BITS + HANDSHAKE_BITS)

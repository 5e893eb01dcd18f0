"""Capture what the virtual host does, as Linux usbmon would, into a pcap file.

:class:`UsbCapture` is a :class:`~emulator.usb.host.UsbMonitor`: it keeps
every transaction (time, address, endpoint, token, data PID, data,
handshake) for text dumps, and every URB submit ('S') and completion ('C')
as a usbmon record.  :meth:`UsbCapture.write` produces a classic pcap file
with link type 220, LINKTYPE_USB_LINUX_MMAPPED: each packet is the 64-byte
``mon_bin_hdr`` of the kernel's binary usbmon interface followed by the
captured data, filled in the way ``drivers/usb/mon/mon_bin.c`` fills it:

* 'S' of a control URB carries the 8-byte setup packet (flag_setup = 0);
  every other record has flag_setup '-';
* an IN URB's 'S' and an OUT URB's 'C' carry no data (flag_data '<' / '>');
* urb length is transfer_buffer_length on 'S', actual_length on 'C';
* status is -EINPROGRESS on 'S', then 0 or the URB's error (-EPIPE for a
  stall, -EPROTO for no answer, -EOVERFLOW for babble, -ENOENT for a URB the
  host killed at its timeout).

Wireshark decodes class requests to an interface (here DFU: class 0xFE,
subclass 1) only when it has seen that device's configuration descriptor in
the same capture, so a capture should include the enumeration.

Timestamps are emulated time since power-on (the capture starts at 1970).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from emulator.usb.host import Transaction, TransferType, Urb, UsbMonitor

LINKTYPE_USB_LINUX_MMAPPED = 220
PCAP_MAGIC_USEC = 0xA1B2C3D4
USBMON_HEADER = struct.Struct("<QBBBBHccqiiII8siiII")
assert USBMON_HEADER.size == 64
URB_DIR_IN = 0x0200  # transfer_flags bit the USB core sets on IN URBs
SNAPLEN = 0x40000


@dataclass(frozen=True)
class UsbmonRecord:
    """One usbmon event: the fields of ``struct mon_bin_hdr`` plus the data."""

    urb_id: int
    event: str  # 'S' submit, 'C' complete, 'E' error
    xfer_type: int
    epnum: int  # endpoint number | 0x80 for IN
    devnum: int
    busnum: int
    flag_setup: bytes  # b'\0' = setup present, b'-' = not relevant
    flag_data: bytes  # b'\0' = data present, b'<' / b'>' = not captured
    ts_ns: int
    status: int
    urb_len: int
    setup: bytes = b"\0" * 8
    interval: int = 0
    start_frame: int = 0
    xfer_flags: int = 0
    ndesc: int = 0
    data: bytes = b""

    def header(self) -> bytes:
        return USBMON_HEADER.pack(
            self.urb_id, ord(self.event), self.xfer_type, self.epnum, self.devnum, self.busnum,
            self.flag_setup, self.flag_data, self.ts_ns // 1_000_000_000, (self.ts_ns // 1000) % 1_000_000,
            self.status, self.urb_len, len(self.data), self.setup, self.interval, self.start_frame,
            self.xfer_flags, self.ndesc,
        )

    def packet(self) -> bytes:
        return self.header() + self.data

    @classmethod
    def from_packet(cls, packet: bytes) -> UsbmonRecord:
        (urb_id, event, xfer_type, epnum, devnum, busnum, flag_setup, flag_data, sec, usec, status,
         urb_len, len_cap, setup, interval, start_frame, xfer_flags, ndesc) = USBMON_HEADER.unpack_from(packet)
        return cls(urb_id, chr(event), xfer_type, epnum, devnum, busnum, flag_setup, flag_data,
                   sec * 1_000_000_000 + usec * 1000, status, urb_len, setup, interval, start_frame,
                   xfer_flags, ndesc, bytes(packet[64 : 64 + len_cap]))


def usbmon_records_for(urb: Urb, event: str, bus: int) -> UsbmonRecord:
    """The record mon_bin.c would emit for ``urb`` at submit ('S') or completion ('C')."""
    is_in = urb.is_in
    submit = event == "S"
    if submit:
        urb_len, data, status = urb.length, (b"" if is_in else urb.data), -errno.EINPROGRESS
    else:
        urb_len, data, status = urb.actual_length, (urb.data if is_in else b""), urb.status
    if submit and is_in:
        flag_data = b"<"
    elif not submit and not is_in:
        flag_data = b">"
    else:
        flag_data = b"\0"
    control_submit = urb.transfer_type is TransferType.CONTROL and submit
    return UsbmonRecord(
        urb_id=urb.urb_id,
        event=event,
        xfer_type=int(urb.transfer_type),
        epnum=urb.endpoint,
        devnum=urb.address,
        busnum=bus,
        flag_setup=b"\0" if control_submit else b"-",
        flag_data=flag_data,
        ts_ns=urb.submit_ns if submit else urb.complete_ns,
        status=status,
        urb_len=urb_len,
        setup=urb.setup if control_submit and urb.setup else b"\0" * 8,
        interval=urb.interval if urb.transfer_type in (TransferType.INTERRUPT, TransferType.ISOCHRONOUS) else 0,
        xfer_flags=URB_DIR_IN if is_in else 0,
        data=bytes(data),
    )


@dataclass
class UsbCapture(UsbMonitor):
    """Records a host's traffic; attach with ``host.add_monitor(capture)``."""

    bus: int = 1
    transactions: list[Transaction] = field(default_factory=list)
    records: list[UsbmonRecord] = field(default_factory=list)

    def transaction(self, tx: Transaction) -> None:
        self.transactions.append(tx)

    def urb_submitted(self, urb: Urb) -> None:
        self.records.append(usbmon_records_for(urb, "S", self.bus))

    def urb_completed(self, urb: Urb) -> None:
        self.records.append(usbmon_records_for(urb, "C", self.bus))

    # -- output ---------------------------------------------------------------------------
    def pcap_bytes(self) -> bytes:
        out = bytearray(struct.pack("<IHHiIII", PCAP_MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USB_LINUX_MMAPPED))
        for rec in self.records:
            packet = rec.packet()
            out += struct.pack("<IIII", rec.ts_ns // 1_000_000_000, (rec.ts_ns // 1000) % 1_000_000,
                               len(packet), len(packet))
            out += packet
        return bytes(out)

    def write(self, target: str | Path | BinaryIO) -> None:
        data = self.pcap_bytes()
        if isinstance(target, str | Path):
            Path(target).write_bytes(data)
        else:
            target.write(data)

    def format_transactions(self) -> str:
        """One line per transaction: ``12.345678 ms  1:0 SETUP DATA0 8006000100004000 ACK``."""
        lines = []
        for tx in self.transactions:
            pid = tx.data_pid.name if tx.data_pid is not None else "-"
            lines.append(f"{tx.time_ns / 1e6:12.6f} ms  {tx.address}:{tx.endpoint} {tx.token.value:5} "
                         f"{pid:5} {tx.data.hex() or '-'} {tx.handshake.value}")
        return "\n".join(lines)


def read_pcap(data: bytes) -> Iterator[UsbmonRecord]:
    """Read back a usbmon pcap written by :class:`UsbCapture` (little-endian, link type 220)."""
    magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    if magic != PCAP_MAGIC_USEC or linktype != LINKTYPE_USB_LINUX_MMAPPED:
        raise ValueError("not a little-endian usbmon (link type 220) pcap")
    offset = 24
    while offset + 16 <= len(data):
        _sec, _usec, incl, _orig = struct.unpack_from("<IIII", data, offset)
        offset += 16
        yield UsbmonRecord.from_packet(data[offset : offset + incl])
        offset += incl

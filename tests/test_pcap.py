"""usbmon pcap capture of the virtual host's traffic, read back with dpkt."""

from __future__ import annotations

import dataclasses
import errno
import io
import struct

import dpkt
import pytest

from emulator.usb.host import ModelWire, Token, UsbStall, UsbTimeout, VirtualHost
from emulator.usb.pcap import LINKTYPE_USB_LINUX_MMAPPED, UsbCapture, UsbmonRecord, read_pcap
from firmware_models.usb import Handshake
from tests.fake_usb_firmware import Behaviour, device_descriptor, make_device


def captured_session(**kwargs):
    port, model, firmware, cpu = make_device(**kwargs)
    host = VirtualHost(ModelWire(model, cpu))
    capture = UsbCapture()
    host.add_monitor(capture)
    host.enumerate(address=3)
    return port, firmware, host, capture


def dpkt_packets(capture: UsbCapture) -> tuple[int, list[tuple[float, bytes]]]:
    reader = dpkt.pcap.Reader(io.BytesIO(capture.pcap_bytes()))
    return reader.datalink(), list(reader)


def records_for(capture: UsbCapture, setup_prefix: bytes) -> list[UsbmonRecord]:
    """The S and C records of the control URB whose setup packet starts with ``setup_prefix``."""
    submit = next(r for r in capture.records if r.event == "S" and r.setup.startswith(setup_prefix))
    return [r for r in capture.records if r.urb_id == submit.urb_id]


def test_dpkt_reads_the_capture_as_link_type_220():
    _, _, _, capture = captured_session()
    linktype, packets = dpkt_packets(capture)
    assert linktype == LINKTYPE_USB_LINUX_MMAPPED and len(packets) == len(capture.records)


def test_every_packet_is_a_64_byte_header_plus_the_captured_data():
    _, _, _, capture = captured_session()
    _, packets = dpkt_packets(capture)
    for (_, buf), rec in zip(packets, capture.records, strict=True):
        len_cap = struct.unpack_from("<I", buf, 36)[0]
        assert len(buf) == 64 + len_cap and buf[64:] == rec.data


def test_each_urb_is_one_submit_then_one_complete_with_the_same_id():
    _, _, _, capture = captured_session()
    events = {}
    for rec in capture.records:
        events.setdefault(rec.urb_id, []).append(rec.event)
    assert set(map(tuple, events.values())) == {("S", "C")}


def test_control_submit_carries_the_setup_packet():
    _, _, _, capture = captured_session()
    submit, _ = records_for(capture, bytes.fromhex("80060001"))
    assert submit.flag_setup == b"\0" and submit.xfer_type == 2
    assert submit.setup == bytes.fromhex("8006000100004000")


def test_submit_of_an_in_urb_has_no_data_and_the_less_than_flag():
    _, _, _, capture = captured_session()
    submit, _ = records_for(capture, bytes.fromhex("80060001"))
    assert (submit.flag_data, submit.data, submit.urb_len) == (b"<", b"", 64)
    assert submit.status == -errno.EINPROGRESS and submit.epnum == 0x80


def test_completion_of_an_in_urb_carries_the_received_data():
    _, _, _, capture = captured_session()
    _, complete = records_for(capture, bytes.fromhex("8006000100001200"))
    assert complete.data == device_descriptor() and complete.urb_len == 18
    assert (complete.flag_setup, complete.flag_data, complete.status) == (b"-", b"\0", 0)


def test_completion_of_an_out_urb_has_no_data_and_the_greater_than_flag():
    _, _, host, capture = captured_session()
    host.control_transfer(3, 0x21, 1, 2, 0, b"abcd")
    submit, complete = records_for(capture, bytes.fromhex("2101"))
    assert submit.data == b"abcd" and submit.flag_data == b"\0"
    assert (complete.flag_data, complete.data, complete.urb_len) == (b">", b"", 4)


def test_a_stalled_urb_completes_with_epipe():
    _, _, host, capture = captured_session()
    with pytest.raises(UsbStall):
        host.control_transfer(3, 0xC0, 0x42, 0, 0, 4)
    assert capture.records[-1].status == -errno.EPIPE


def test_a_timed_out_urb_completes_as_killed():
    _, firmware, host, capture = captured_session()
    firmware.behaviour.nak_forever = True
    with pytest.raises(UsbTimeout):
        host.control_transfer(3, 0xA1, 3, 0, 0, 6, timeout_ms=10)
    assert capture.records[-1].status == -errno.ENOENT


def test_timestamps_are_emulated_time():
    port, _, _, capture = captured_session()
    _, packets = dpkt_packets(capture)
    last_ts = packets[-1][0]
    assert last_ts == pytest.approx(capture.records[-1].ts_ns / 1e9, abs=1e-6)
    assert 0.1 < last_ts <= port.now_ns() / 1e9


def test_bulk_urbs_are_recorded_with_the_bulk_transfer_type():
    _, _, host, capture = captured_session(loopback=True)
    host.bulk_out(3, 0x01, b"hi")
    submit = capture.records[-2]
    assert (submit.xfer_type, submit.epnum, submit.flag_setup, submit.data) == (3, 0x01, b"-", b"hi")


def test_records_read_back_equal_what_was_written_to_the_microsecond():
    _, _, _, capture = captured_session()
    written = [dataclasses.replace(r, ts_ns=r.ts_ns // 1000 * 1000) for r in capture.records]
    assert list(read_pcap(capture.pcap_bytes())) == written


def test_write_produces_a_file(tmp_path):
    _, _, _, capture = captured_session()
    path = tmp_path / "enum.pcap"
    capture.write(path)
    assert path.read_bytes() == capture.pcap_bytes()


def test_capture_keeps_naked_transactions_too():
    # A firmware that prepares its IN data 20 µs after the SETUP: the IN tokens before that are NAKed.
    _, _, _, capture = captured_session(behaviour=Behaviour(reply_delay_ns=20_000))
    assert any(t.token is Token.IN and t.handshake is Handshake.NAK for t in capture.transactions)


def test_transaction_dump_shows_token_pid_data_and_handshake():
    _, _, _, capture = captured_session()
    first = capture.format_transactions().splitlines()[0]
    assert first.split()[2:] == ["0:0", "SETUP", "DATA0", "8006000100004000", "ACK"]

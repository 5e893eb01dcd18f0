"""The virtual host controller and the pyusb backend, against the fake firmware."""

from __future__ import annotations

import errno

import pytest
import usb.core
import usb.util

from emulator.usb.host import (
    ModelWire,
    Token,
    UsbBabble,
    UsbNotAttached,
    UsbProtocolError,
    UsbStall,
    UsbTimeout,
    VirtualHost,
)
from emulator.usb.pcap import UsbCapture
from emulator.usb.pyusb_backend import LIBUSB_ERROR_PIPE, EmulatedBackend
from firmware_models.usb import DataPid, Handshake
from tests.fake_usb_firmware import (
    CNTR_CTRM,
    CNTR_RESETM,
    CNTR_SOFM,
    DFU_LAYOUT,
    OPTION_LAYOUT,
    Behaviour,
    make_device,
)

MS = 1_000_000


def rig(**kwargs):
    start_sof = kwargs.pop("sof_interrupts", False)
    port, model, firmware, cpu = make_device(start=False, **kwargs)
    firmware.start(CNTR_CTRM | CNTR_RESETM | 0x0800 | 0x1000 | (CNTR_SOFM if start_sof else 0))
    host = VirtualHost(ModelWire(model, cpu))
    capture = UsbCapture()
    host.add_monitor(capture)
    return port, model, firmware, host, capture


def enumerated(**kwargs):
    port, model, firmware, host, capture = rig(**kwargs)
    info = host.enumerate(address=5)
    return port, model, firmware, host, capture, info


# -- enumeration --------------------------------------------------------------------------------


def test_enumeration_reads_the_dfu_device_descriptor():
    *_, info = enumerated()
    assert (info.device.idVendor, info.device.idProduct) == (0x0483, 0xDF11)


def test_enumeration_moves_the_device_to_the_requested_address():
    _, model, *_ = enumerated()
    assert model.read(0x4C, 4) == 0x80 | 5


def test_enumeration_finds_the_dfu_functional_descriptor():
    *_, info = enumerated()
    assert info.dfu_functional is not None
    assert (info.dfu_functional.wTransferSize, info.dfu_functional.bcdDFUVersion) == (2048, 0x011A)


def test_enumeration_reads_the_alt_setting_strings():
    *_, info = enumerated()
    assert info.strings[4] == DFU_LAYOUT and info.strings[5] == OPTION_LAYOUT


def test_enumeration_selects_the_first_configuration():
    _, _, firmware, *_ = enumerated()
    assert firmware.configuration == 1


def test_enumeration_first_asks_64_bytes_of_device_descriptor_at_address_zero():
    _, _, firmware, *_ = enumerated()
    assert firmware.requests[0] == bytes.fromhex("8006000100004000")


def test_enumeration_resets_the_bus_twice_in_the_new_scheme():
    _, _, firmware, *_ = enumerated()
    assert firmware.events.count("reset") == 2


def test_old_scheme_enumerates_a_device_with_an_8_byte_ep0():
    _, _, firmware, host, _ = rig(mps0=8)
    info = host.enumerate(first_request=8)
    assert info.ep0_mps == 8 and firmware.requests[0][6] == 8


def test_new_scheme_enumerates_a_device_with_an_8_byte_ep0():
    *_, info = enumerated(mps0=8)
    assert info.strings[2] == "STM32  BOOTLOADER"


def test_frames_are_sent_every_emulated_millisecond():
    _, model, _, host, *_ = enumerated()
    before = model.read(0x48, 4) & 0x7FF
    host.wait_ms(10)
    assert (model.read(0x48, 4) & 0x7FF) - before == 10


def test_firmware_sees_start_of_frame_interrupts_while_the_host_runs():
    _, _, firmware, host, *_ = enumerated(sof_interrupts=True)
    seen = firmware.sof_count
    host.wait_ms(5)
    assert firmware.sof_count - seen == 5


def test_a_device_that_is_not_attached_cannot_be_enumerated():
    port, model, firmware, cpu = make_device(start=False)
    host = VirtualHost(ModelWire(model, cpu))
    with pytest.raises(UsbNotAttached):
        host.enumerate()


def test_a_device_that_never_enables_its_function_gives_a_protocol_error():
    *_, host, _ = rig(behaviour=Behaviour(never_enable=True))
    with pytest.raises(UsbProtocolError):
        host.enumerate()


# -- control transfers ----------------------------------------------------------------------------


def test_control_write_sends_data1_first_and_alternates_toggles():
    _, _, _, host, capture, _ = enumerated()
    capture.transactions.clear()
    host.control_transfer(5, 0x21, 1, 2, 0, bytes(150))
    outs = [(t.data_pid, len(t.data)) for t in capture.transactions
            if t.token is Token.OUT and t.handshake is Handshake.ACK]
    assert outs == [(DataPid.DATA1, 64), (DataPid.DATA0, 64), (DataPid.DATA1, 22)]


def test_control_write_ends_with_a_zero_length_in_status_stage():
    _, _, _, host, capture, _ = enumerated()
    capture.transactions.clear()
    host.control_transfer(5, 0x21, 1, 2, 0, bytes(10))
    last = capture.transactions[-1]
    assert (last.token, last.data, last.data_pid) == (Token.IN, b"", DataPid.DATA1)


def test_control_write_delivers_the_data_to_the_firmware():
    _, _, firmware, host, *_ = enumerated()
    host.control_transfer(5, 0x21, 1, 2, 0, bytes(range(200)))
    assert firmware.dnload_blocks[2] == bytes(range(200))


def test_control_read_returns_data_in_max_packet_pieces():
    _, _, _, host, capture, _ = enumerated()
    host.control_transfer(5, 0x21, 1, 3, 0, bytes(range(200)))
    capture.transactions.clear()
    data = host.control_transfer(5, 0xA1, 2, 3, 0, 200)
    ins = [(t.data_pid, len(t.data)) for t in capture.transactions if t.token is Token.IN and t.data]
    assert data == bytes(range(200))
    assert ins == [(DataPid.DATA1, 64), (DataPid.DATA0, 64), (DataPid.DATA1, 64), (DataPid.DATA0, 8)]


def test_control_read_ends_with_a_zero_length_out_status_stage():
    _, _, _, host, capture, _ = enumerated()
    capture.transactions.clear()
    host.control_transfer(5, 0xA1, 3, 0, 0, 6)
    last = capture.transactions[-1]
    assert (last.token, last.data, last.data_pid) == (Token.OUT, b"", DataPid.DATA1)


def test_a_short_packet_ends_the_data_stage_early():
    *_, host, _, _ = enumerated()
    assert len(host.control_transfer(5, 0x80, 6, 0x0100, 0, 255)) == 18


def test_a_stalled_request_raises_usb_stall_with_epipe():
    *_, host, _, _ = enumerated()
    with pytest.raises(UsbStall) as err:
        host.control_transfer(5, 0xC0, 0x42, 0, 0, 4)
    assert err.value.errno == errno.EPIPE


def test_the_control_pipe_works_again_after_a_stall():
    *_, host, _, _ = enumerated()
    with pytest.raises(UsbStall):
        host.control_transfer(5, 0xC0, 0x42, 0, 0, 4)
    assert host.get_configuration(5) == 1


def test_a_device_that_naks_forever_times_out_in_emulated_time():
    port, _, firmware, host, _ = rig()
    host.enumerate(address=5)
    firmware.behaviour.nak_forever = True
    start = port.now_ns()
    with pytest.raises(UsbTimeout):
        host.control_transfer(5, 0x80, 6, 0x0100, 0, 18, timeout_ms=50)
    assert 50 * MS <= port.now_ns() - start < 52 * MS


def test_a_device_sending_more_than_asked_raises_babble():
    *_, host, _ = rig(behaviour=Behaviour(ignore_wlength=True))
    host.wait_attached()
    host.bus_reset()
    with pytest.raises(UsbBabble):
        host.control_transfer(0, 0x80, 6, 0x0100, 0, 8)


def test_a_packet_larger_than_max_packet_size_raises_babble():
    *_, host, _ = rig(loopback=True, behaviour=Behaviour(oversize_packet=96))
    host.wait_attached()
    host.bus_reset()
    with pytest.raises(UsbBabble):
        host.control_transfer(0, 0x80, 6, 0x0200, 0, 200)  # 68-byte configuration in one packet


def test_a_slow_device_is_waited_for_through_naks():
    port, _, _, host, _ = rig(behaviour=Behaviour(reply_delay_ns=30 * MS))
    host.wait_attached()
    host.bus_reset()
    start = port.now_ns()
    data = host.control_transfer(0, 0x80, 6, 0x0100, 0, 18)
    assert len(data) == 18 and port.now_ns() - start >= 30 * MS


def test_the_host_retries_as_soon_as_the_device_readies_its_endpoint():
    port, _, _, host, _ = rig(behaviour=Behaviour(reply_delay_ns=30 * MS))
    host.model_bus_time = False
    host.wait_attached()
    host.bus_reset()
    start = port.now_ns()
    host.control_transfer(0, 0x80, 6, 0x0100, 0, 18)
    # Without the listener the host would sleep up to a whole 1 ms NAK step.
    assert port.now_ns() - start < 30 * MS + 100_000


def test_timeout_counts_from_submission_not_from_the_last_nak():
    port, _, firmware, host, _ = rig()
    host.enumerate(address=5)
    firmware.behaviour.reply_delay_ns = 40 * MS
    with pytest.raises(UsbTimeout):
        host.control_transfer(5, 0x80, 6, 0x0100, 0, 18, timeout_ms=20)


# -- bulk -----------------------------------------------------------------------------------------------


def test_bulk_out_and_in_round_trip_through_the_loopback_endpoint():
    *_, host, _, _ = enumerated(loopback=True)
    host.bulk_out(5, 0x01, b"ping")
    assert host.bulk_in(5, 0x81, 64) == b"PING"


def test_bulk_toggles_alternate_across_transfers():
    _, _, _, host, capture, _ = enumerated(loopback=True)
    capture.transactions.clear()
    for word in (b"a", b"b", b"c"):
        host.bulk_out(5, 0x01, word)
        host.bulk_in(5, 0x81, 64)
    pids = [t.data_pid for t in capture.transactions if t.token is Token.OUT and t.handshake is Handshake.ACK]
    assert pids == [DataPid.DATA0, DataPid.DATA1, DataPid.DATA0]


def test_set_configuration_resets_bulk_toggles():
    _, _, _, host, capture, _ = enumerated(loopback=True)
    host.bulk_out(5, 0x01, b"a")
    host.bulk_in(5, 0x81, 64)
    host.set_configuration(5, 1)
    capture.transactions.clear()
    host.bulk_out(5, 0x01, b"b")
    assert [t.data_pid for t in capture.transactions if t.token is Token.OUT] == [DataPid.DATA0]


def test_bulk_in_on_an_empty_endpoint_times_out():
    *_, host, _, _ = enumerated(loopback=True)
    with pytest.raises(UsbTimeout):
        host.bulk_in(5, 0x81, 64, timeout_ms=5)


# -- suspend / resume -----------------------------------------------------------------------------------


def test_firmware_sees_suspend_three_milliseconds_after_frames_stop():
    _, _, firmware, host, *_ = enumerated()
    host.suspend()
    host.wait_ms(1.9)  # the last SOF was at most 1 ms ago: SUSP comes 3 frames (+slack) after it
    assert "suspend" not in firmware.events
    host.wait_ms(1.3)
    assert "suspend" in firmware.events


def test_resume_wakes_suspended_firmware_and_transfers_work_again():
    _, _, firmware, host, *_ = enumerated()
    host.suspend()
    host.wait_ms(5)
    host.resume()
    assert firmware.events[-1] == "wakeup"
    assert host.get_configuration(5) == 1


# -- pyusb backend ------------------------------------------------------------------------------------------


def pyusb_device(**kwargs):
    port, model, firmware, host, capture = rig(**kwargs)
    backend = EmulatedBackend(host)
    dev = usb.core.find(idVendor=0x0483, idProduct=0xDF11, backend=backend)
    return dev, backend, firmware, port


def test_pyusb_finds_the_emulated_dfu_device():
    dev, *_ = pyusb_device()
    assert dev is not None and (dev.idVendor, dev.idProduct) == (0x0483, 0xDF11)


def test_pyusb_get_string_reads_the_alt_setting_name():
    dev, *_ = pyusb_device()
    intf = dev.get_active_configuration()[(0, 1)]
    assert usb.util.get_string(dev, intf.iInterface) == OPTION_LAYOUT


def test_pyusb_set_configuration_reaches_the_firmware():
    dev, _, firmware, _ = pyusb_device()
    dev.set_configuration(1)
    assert firmware.configuration == 1 and dev.get_active_configuration().bConfigurationValue == 1


def test_pyusb_set_interface_altsetting_sends_set_interface():
    dev, _, firmware, _ = pyusb_device()
    dev.set_configuration()
    dev.set_interface_altsetting(interface=0, alternate_setting=1)
    assert firmware.alt_setting == 1


def test_pyusb_ctrl_transfer_reads_dfu_status():
    dev, *_ = pyusb_device()
    assert bytes(dev.ctrl_transfer(0xA1, 3, 0, 0, 6)) == bytes((0, 0, 0, 0, 2, 0))


def test_pyusb_ctrl_transfer_writes_a_dfu_block():
    dev, _, firmware, _ = pyusb_device()
    assert dev.ctrl_transfer(0x21, 1, 2, 0, b"\x11" * 100) == 100
    assert firmware.dnload_blocks[2] == b"\x11" * 100


def test_pyusb_stall_raises_usb_error_with_epipe():
    dev, *_ = pyusb_device()
    with pytest.raises(usb.core.USBError) as err:
        dev.ctrl_transfer(0xC0, 0x42, 0, 0, 4)
    assert (err.value.errno, err.value.backend_error_code) == (errno.EPIPE, LIBUSB_ERROR_PIPE)


def test_pyusb_timeout_raises_usb_timeout_error():
    dev, _, firmware, _ = pyusb_device()
    firmware.behaviour.nak_forever = True
    with pytest.raises(usb.core.USBTimeoutError) as err:
        dev.ctrl_transfer(0xA1, 3, 0, 0, 6, timeout=30)
    assert err.value.errno == errno.ETIMEDOUT


def test_pyusb_bulk_write_and_read():
    dev, *_ = pyusb_device(loopback=True)
    dev.set_configuration()
    dev.write(0x01, b"echo")
    assert bytes(dev.read(0x81, 64)) == b"ECHO"


def test_backend_wait_ms_advances_emulated_time():
    dev, backend, _, port = pyusb_device()
    start = port.now_ns()
    backend.wait_ms(50)
    assert port.now_ns() - start == 50 * MS


def test_backend_clock_is_emulated_time():
    dev, backend, _, port = pyusb_device()
    assert backend.now_ns() == port.now_ns()


def test_enumeration_never_lets_the_device_miss_a_start_of_frame():
    _, model, *_ = enumerated()
    assert not model.read(0x44, 4) & 0x0100  # ISTR.ESOF


class _FrozenWire:
    """A wire whose device side never lets time pass: a broken runner."""

    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        return self.t

    def advance(self, ns: int) -> int:
        return 0

    def attached(self) -> bool:
        return True

    def sof(self, frame_number: int) -> None:
        pass


def test_a_device_side_that_never_advances_is_reported_instead_of_hanging():
    host = VirtualHost(_FrozenWire())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        host.wait_ms(1)

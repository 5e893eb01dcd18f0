"""The timed full-speed bus (docs/USB_BUS.md): wire lengths, when the device sees a packet, frames, NAKs."""

from __future__ import annotations

from emulator.usb import fullspeed as fs
from emulator.usb.host import EOF1_NS, FRAME_NS, HOST_GAP_NS, ModelWire, Transaction, UsbMonitor, VirtualHost
from firmware_models.usb import DataPid, Handshake
from tests.fake_usb_firmware import EP_CTR_RX, Behaviour, make_device

CTR_RX = 0x8000


def test_a_token_is_35_bit_times_and_a_handshake_19():
    assert fs.token_bits(fs.PID_IN, 1, 0) == 35
    assert fs.HANDSHAKE_BITS == 19


def test_an_empty_data_packet_is_35_bit_times():
    assert fs.data_bits(DataPid.DATA1, b"") == 35


def test_bit_stuffing_makes_a_packet_of_ones_longer_than_one_of_zeros():
    zeros, ones = fs.data_bits(DataPid.DATA0, bytes(64)), fs.data_bits(DataPid.DATA0, b"\xff" * 64)
    assert 35 + 8 * 64 <= zeros < ones
    assert ones - (35 + 8 * 64) >= 8 * 64 // 7  # one stuffed bit per six 1s


def test_a_64_byte_out_transaction_takes_about_51_microseconds():
    assert 50_000 < fs.host_write_ns(fs.PID_OUT, 1, 0, DataPid.DATA1, bytes(64)) < 52_000


class _WatchingRunner:
    """A DeviceRunner that notes EP0R's CTR_RX each time the CPU is let run."""

    def __init__(self, port, model) -> None:  # noqa: ANN001
        self.port, self.model = port, model
        self.seen: list[tuple[int, bool]] = []

    def now_ns(self) -> int:
        return self.port.now_ns()

    def run_ns(self, ns: int) -> None:
        self.seen.append((self.port.now_ns(), bool(self.model.values["EP0R"] & CTR_RX)))
        self.port.scheduler.advance_to(self.port.now_ns() + ns, self.port.clocks.hclk)

    def stop(self) -> None:
        pass


def _ready_for_out():
    port, model, firmware, cpu = make_device()
    host = VirtualHost(ModelWire(model, cpu))
    host.enumerate(address=2)
    firmware.set_stat_rx(0, 3)  # EP0 RX VALID, as for a data stage
    model.values["EP0R"] = (model.values["EP0R"] & ~0x4000) | 0x4000  # expect DATA1
    return port, model


def test_the_device_sees_an_out_packet_only_when_the_transaction_has_ended():
    port, model = _ready_for_out()
    runner = _WatchingRunner(port, model)
    wire = ModelWire(model, runner)
    start = port.now_ns()
    hs = wire.out(2, 0, b"12345678", DataPid.DATA1)
    assert hs is Handshake.ACK
    assert runner.seen and not any(ctr for _, ctr in runner.seen)  # the CPU ran, CTR_RX still clear
    assert model.values["EP0R"] & CTR_RX
    assert port.now_ns() - start == fs.host_write_ns(fs.PID_OUT, 2, 0, DataPid.DATA1, b"12345678")


def test_the_bus_without_time_delivers_the_packet_before_the_next_instruction():
    port, model = _ready_for_out()
    runner = _WatchingRunner(port, model)
    start = port.now_ns()
    assert ModelWire(model, runner, timed=False).out(2, 0, b"12345678", DataPid.DATA1) is Handshake.ACK
    assert runner.seen == [] and port.now_ns() == start and model.values["EP0R"] & EP_CTR_RX


class _Spans(UsbMonitor):
    def __init__(self, host: VirtualHost) -> None:
        self.host = host
        self.spans: list[tuple[int, int]] = []

    def transaction(self, tx: Transaction) -> None:
        self.spans.append((tx.time_ns, self.host.wire.now_ns()))


def _enumerated_with_sofs(**kwargs):
    port, model, firmware, cpu = make_device(**kwargs)
    wire = ModelWire(model, cpu)
    sofs: list[int] = []
    real_sof = wire.sof

    def sof(frame: int) -> None:
        sofs.append(wire.now_ns())
        real_sof(frame)

    wire.sof = sof  # type: ignore[method-assign]
    host = VirtualHost(wire)
    spans = _Spans(host)
    host.add_monitor(spans)
    host.enumerate(address=3)
    return sofs, spans.spans


def test_no_transaction_straddles_a_start_of_frame():
    sofs, spans = _enumerated_with_sofs(behaviour=Behaviour(reply_delay_ns=300_000))
    assert len(sofs) > 10 and len(spans) > 20
    for start, end in spans:
        assert not any(start < t < end for t in sofs)


def test_every_transaction_ends_before_eof1_of_its_frame():
    sofs, spans = _enumerated_with_sofs()
    for start, end in spans:
        frame_start = max((t for t in sofs if t <= start), default=None)
        if frame_start is not None:
            assert end <= frame_start + FRAME_NS - EOF1_NS


def test_transactions_follow_each_other_with_the_host_gap():
    _, spans = _enumerated_with_sofs()
    gaps = [b_start - a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)]
    assert min(gaps) == HOST_GAP_NS


def test_a_firmware_that_answers_late_gets_naks_until_it_is_ready():
    port, model, firmware, cpu = make_device(behaviour=Behaviour(reply_delay_ns=40_000))
    host = VirtualHost(ModelWire(model, cpu))
    spans = _Spans(host)
    naks: list[int] = []

    class _Naks(UsbMonitor):
        def transaction(self, tx: Transaction) -> None:
            if tx.handshake is Handshake.NAK:
                naks.append(tx.time_ns)

    host.add_monitor(spans)
    host.add_monitor(_Naks())
    host.enumerate(address=4)
    assert naks  # the INs before the reply was ready were NAKed, and enumeration still completed
    assert host.device is not None and host.device.address == 4


def test_the_same_session_twice_gives_the_same_transactions_at_the_same_times():
    assert _enumerated_with_sofs(behaviour=Behaviour(reply_delay_ns=40_000)) == \
        _enumerated_with_sofs(behaviour=Behaviour(reply_delay_ns=40_000))


def test_the_pcap_timestamps_show_each_transfer_taking_its_wire_time():
    from emulator.usb.pcap import UsbCapture

    port, model, firmware, cpu = make_device()
    host = VirtualHost(ModelWire(model, cpu))
    capture = UsbCapture()
    host.add_monitor(capture)
    host.enumerate(address=6)
    submits = {r.urb_id: r.ts_ns for r in capture.records if r.event == "S"}
    durations = [r.ts_ns - submits[r.urb_id] for r in capture.records if r.event == "C"]
    setup_and_status = fs.host_write_ns(fs.PID_SETUP, 6, 0, DataPid.DATA0, bytes(8))
    assert durations and min(durations) >= setup_and_status  # no transfer is shorter than its SETUP alone
    # The capture keeps microseconds: consecutive transfers are apart by at least the host gap.
    times = [r.ts_ns for r in capture.records]
    assert times == sorted(times)

"""Register semantics and host-facing behaviour of the STM32F1 USB device model (RM0008 §23)."""

from __future__ import annotations

import struct

import pytest

from emulator.core.port import SimPort
from firmware_models.usb import (
    PMA_SENTINEL,
    USB_HP_CAN1_TX_IRQ,
    USB_LP_CAN1_RX0_IRQ,
    AttachChanged,
    DataPid,
    EndpointReady,
    Handshake,
    Stat,
    UsbDevice,
    usb_crc16,
)

CNTR, ISTR, FNR, DADDR, BTABLE = 0x40, 0x44, 0x48, 0x4C, 0x50
CTR_RX, DTOG_RX, SETUP, EP_KIND, CTR_TX, DTOG_TX = 0x8000, 0x4000, 0x0800, 0x0100, 0x0080, 0x0040
CONTROL, BULK, ISO = 1 << 9, 0 << 9, 2 << 9
CTRM, RESETM, SOFM = 0x8000, 0x400, 0x200
SETUP_PACKET = struct.pack("<BBHHH", 0x80, 6, 0x0100, 0, 64)


def make(pullup=None) -> tuple[SimPort, UsbDevice]:
    port = SimPort()
    usb = UsbDevice(port, pullup=pullup)
    usb.power_on_reset()
    return port, usb


def pma_u16(usb: UsbDevice, o: int, value: int) -> None:
    usb.pma.write(2 * o, 2, value)


def stat_bits(epr: int, tx: int, rx: int) -> int:
    """The toggle pattern that moves STAT_TX/STAT_RX from ``epr`` to tx/rx."""
    return ((((epr >> 4) & 3) ^ tx) << 4) | ((((epr >> 12) & 3) ^ rx) << 12)


def set_stats(usb: UsbDevice, n: int, tx: int, rx: int) -> None:
    epr = usb.read(4 * n, 4)
    keep = epr & (0x0F0F & ~SETUP)  # EA, EP_TYPE, EP_KIND
    usb.write(4 * n, 4, keep | CTR_RX | CTR_TX | stat_bits(epr, tx, rx))


def running(ep_type: int = CONTROL, tx: int = Stat.NAK, rx: int = Stat.VALID, address: int = 0) -> tuple[SimPort, UsbDevice]:
    """Powered, out of reset, function enabled, EP0 with 64-byte buffers at 0x40/0x80."""
    port, usb = make()
    usb.write(CNTR, 4, 0)
    usb.write(BTABLE, 4, 0)
    pma_u16(usb, 0, 0x40)  # ADDR0_TX
    pma_u16(usb, 2, 0)  # COUNT0_TX
    pma_u16(usb, 4, 0x80)  # ADDR0_RX
    pma_u16(usb, 6, 0x8400)  # COUNT0_RX: BL_SIZE=1, NUM_BLOCK=1 -> 64 bytes
    usb.write(0, 4, ep_type)
    set_stats(usb, 0, tx, rx)
    usb.write(DADDR, 4, 0x80 | address)
    return port, usb


def load_tx(usb: UsbDevice, data: bytes) -> None:
    for i in range(0, len(data), 2):
        pma_u16(usb, 0x40 + i, data[i] | ((data[i + 1] if i + 1 < len(data) else 0) << 8))
    pma_u16(usb, 2, len(data))


# -- reset values and attachment -----------------------------------------------------------


def test_cntr_resets_with_fres_and_pdwn_set():
    _, usb = make()
    assert usb.read(CNTR, 4) == 0x0003


def test_device_is_not_attached_while_pdwn_is_set():
    _, usb = make()
    usb.write(CNTR, 4, 0x0001)  # FRES still set, PDWN cleared
    assert usb.attached()
    usb.write(CNTR, 4, 0x0003)
    assert not usb.attached()


def test_clearing_pdwn_notifies_listeners_of_attachment():
    _, usb = make()
    heard = []
    usb.add_listener(heard.append)
    usb.write(CNTR, 4, 0)
    assert heard == [AttachChanged(True)]


def test_board_pullup_callable_gates_attachment():
    pulled = [False]
    _, usb = make(pullup=lambda: pulled[0])
    usb.write(CNTR, 4, 0)
    assert not usb.attached()
    pulled[0] = True
    assert usb.attached()


def test_power_on_fills_packet_memory_with_sentinel():
    _, usb = make()
    assert usb.pma.read(0x10, 2) == PMA_SENTINEL * 0x101


# -- EPnR access modes ------------------------------------------------------------------------


def test_writing_one_to_stat_tx_bits_toggles_them():
    _, usb = make()
    usb.write(0, 4, 0x0030)
    assert (usb.read(0, 4) >> 4) & 3 == 3
    usb.write(0, 4, 0x0010)
    assert (usb.read(0, 4) >> 4) & 3 == 2


def test_writing_zero_to_stat_and_dtog_bits_leaves_them_unchanged():
    _, usb = make()
    usb.write(0, 4, 0x7070)
    usb.write(0, 4, 0x0000)
    assert usb.read(0, 4) & 0x7070 == 0x7070


def test_writing_one_to_dtog_rx_toggles_it():
    _, usb = make()
    usb.write(0, 4, DTOG_RX)
    assert usb.read(0, 4) & DTOG_RX
    usb.write(0, 4, DTOG_RX)
    assert not usb.read(0, 4) & DTOG_RX


def test_writing_one_to_ctr_rx_cannot_set_it():
    _, usb = make()
    usb.write(0, 4, CTR_RX | CTR_TX)
    assert usb.read(0, 4) & (CTR_RX | CTR_TX) == 0


def test_writing_zero_clears_ctr_rx_and_writing_one_keeps_ctr_tx():
    _, usb = make()
    usb["EP0R"] = CTR_RX | CTR_TX
    usb.write(0, 4, CTR_TX)
    assert usb.read(0, 4) & (CTR_RX | CTR_TX) == CTR_TX


def test_setup_bit_is_read_only():
    _, usb = make()
    usb.write(0, 4, SETUP)
    assert not usb.read(0, 4) & SETUP
    usb["EP0R"] = SETUP
    usb.write(0, 4, 0)
    assert usb.read(0, 4) & SETUP


def test_ea_ep_type_and_ep_kind_are_plain_read_write():
    _, usb = make()
    usb.write(4 * 3, 4, 0x0700 | 0x5)
    assert usb.read(4 * 3, 4) == 0x0705
    usb.write(4 * 3, 4, 0)
    assert usb.read(4 * 3, 4) == 0


def test_byte_write_to_epnr_toggles_nothing_in_the_other_byte():
    _, usb = make()
    usb.write(0, 4, 0x3030)
    usb.write(0, 1, 0x05)  # only EA in the low byte, STAT_TX written 0
    assert usb.read(0, 4) == 0x3035


# -- ISTR ---------------------------------------------------------------------------------------


def test_istr_event_bits_clear_on_zero_and_ignore_one():
    _, usb = make()
    usb["ISTR"] = 0x7F00
    usb.write(ISTR, 4, 0xFFFF & ~0x0400)  # clear RESET only
    assert usb.read(ISTR, 4) == 0x7B00


def test_istr_reports_lowest_numbered_endpoint_with_pending_ctr():
    _, usb = make()
    usb["EP2R"] = CTR_TX | 2
    usb["EP1R"] = CTR_RX | 1
    assert usb.read(ISTR, 4) & 0x801F == 0x8000 | 0x10 | 1


def test_istr_dir_is_zero_for_a_pending_transmission():
    _, usb = make()
    usb["EP3R"] = CTR_TX | 3
    assert usb.read(ISTR, 4) & 0x801F == 0x8000 | 3


def test_istr_ctr_dir_and_ep_id_ignore_writes():
    _, usb = make()
    usb.write(ISTR, 4, 0x801F)
    assert usb.read(ISTR, 4) == 0


# -- packet memory -------------------------------------------------------------------------------


def test_pma_halfword_sits_at_word_aligned_cpu_address():
    _, usb = make()
    usb.pma.write(0x08, 2, 0x1234)  # PMA byte offset 4
    assert usb.pma.data[4:6] == b"\x34\x12"


def test_pma_upper_halfword_of_each_word_reads_zero():
    _, usb = make()
    usb.pma.write(0x08, 4, 0xABCD_1234)
    assert usb.pma.read(0x08, 4) == 0x0000_1234
    assert usb.pma.read(0x0A, 2) == 0


def test_pma_survives_system_reset_but_not_power_on():
    _, usb = make()
    usb.pma.write(0, 2, 0xBEEF)
    usb.reset()
    assert usb.pma.read(0, 2) == 0xBEEF
    usb.power_on_reset()
    assert usb.pma.read(0, 2) != 0xBEEF


@pytest.mark.parametrize(
    ("count_rx", "size"),
    [(0x8400, 64), (0x8000, 32), (0xFC00, 1024), (0x0400, 2), (0x7C00, 62), (0x0000, 0)],
)
def test_rx_buffer_size_comes_from_bl_size_and_num_block(count_rx, size):
    _, usb = make()
    usb.write(BTABLE, 4, 0x100)
    pma_u16(usb, 0x100 + 8 * 2 + 6, count_rx)
    assert usb.rx_buffer_size(2) == size


def test_btable_low_three_bits_read_zero():
    _, usb = make()
    usb.write(BTABLE, 4, 0xFFFF)
    assert usb.read(BTABLE, 4) == 0xFFF8


# -- SETUP ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rx", [Stat.VALID, Stat.NAK, Stat.STALL])
def test_setup_is_acked_whatever_stat_rx_says(rx):
    _, usb = running(rx=rx)
    assert usb.setup(0, 0, SETUP_PACKET) is Handshake.ACK


def test_setup_is_ignored_when_stat_rx_is_disabled():
    _, usb = running(rx=Stat.DISABLED)
    assert usb.setup(0, 0, SETUP_PACKET) is Handshake.TIMEOUT


def test_setup_sets_setup_and_ctr_rx_and_count_and_copies_data():
    _, usb = running()
    usb.setup(0, 0, SETUP_PACKET)
    epr = usb.read(0, 4)
    assert epr & (SETUP | CTR_RX) == SETUP | CTR_RX
    assert usb.pma.u16(6) & 0x3FF == 8
    assert usb.pma.load(0x80, 8) == SETUP_PACKET


def test_setup_sets_both_stat_to_nak_and_both_toggles_to_data1():
    _, usb = running(tx=Stat.STALL, rx=Stat.VALID)
    usb.setup(0, 0, SETUP_PACKET)
    epr = usb.read(0, 4)
    assert (epr >> 4) & 3 == Stat.NAK and (epr >> 12) & 3 == Stat.NAK
    # DTOG_TX set to 1; DTOG_RX cleared by the SETUP PID, then toggled by its ACK.
    assert epr & (DTOG_TX | DTOG_RX) == DTOG_TX | DTOG_RX


def test_setup_is_dropped_while_a_previous_ctr_rx_is_pending():
    _, usb = running()
    usb.setup(0, 0, SETUP_PACKET)
    assert usb.setup(0, 0, SETUP_PACKET) is Handshake.TIMEOUT


def test_setup_to_a_bulk_endpoint_gets_no_answer():
    _, usb = running(ep_type=BULK)
    assert usb.setup(0, 0, SETUP_PACKET) is Handshake.TIMEOUT


# -- OUT ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rx", "answer"),
    [(Stat.DISABLED, Handshake.TIMEOUT), (Stat.STALL, Handshake.STALL), (Stat.NAK, Handshake.NAK),
     (Stat.VALID, Handshake.ACK)],
)
def test_out_handshake_follows_stat_rx(rx, answer):
    _, usb = running(ep_type=BULK, rx=rx)
    assert usb.out(0, 0, b"abc", DataPid.DATA0) is answer


def test_accepted_out_sets_ctr_rx_toggles_dtog_rx_and_naks_the_next_one():
    _, usb = running(ep_type=BULK)
    usb.out(0, 0, b"abc", DataPid.DATA0)
    epr = usb.read(0, 4)
    assert epr & (CTR_RX | DTOG_RX) == CTR_RX | DTOG_RX
    assert (epr >> 12) & 3 == Stat.NAK
    assert usb.out(0, 0, b"def", DataPid.DATA1) is Handshake.NAK


def test_accepted_out_stores_payload_and_count_rx():
    _, usb = running(ep_type=BULK)
    usb.out(0, 0, b"hello", DataPid.DATA0)
    assert usb.pma.load(0x80, 5) == b"hello"
    assert usb.pma.u16(6) == 0x8400 | 5


def test_accepted_out_writes_crc16_after_the_payload():
    _, usb = running(ep_type=BULK)
    usb.out(0, 0, b"hello", DataPid.DATA0)
    assert usb.pma.load(0x85, 2) == struct.pack("<H", usb_crc16(b"hello"))


def test_out_with_the_wrong_toggle_is_acked_and_discarded():
    _, usb = running(ep_type=BULK)
    assert usb.out(0, 0, b"dup", DataPid.DATA1) is Handshake.ACK
    assert not usb.read(0, 4) & CTR_RX
    assert usb.pma.load(0x80, 3) != b"dup"


def test_out_larger_than_the_rx_buffer_is_stalled_without_ctr():
    port, usb = running(ep_type=BULK)
    usb.write(CNTR, 4, CTRM)
    assert usb.out(0, 0, bytes(65), DataPid.DATA0) is Handshake.STALL
    assert not usb.read(0, 4) & CTR_RX
    assert not port.irq_levels.get(USB_LP_CAN1_RX0_IRQ)


def test_status_out_stalls_out_packets_with_data():
    _, usb = running()
    usb.write(0, 4, CONTROL | EP_KIND | CTR_RX | CTR_TX)
    assert usb.out(0, 0, b"x", DataPid.DATA0) is Handshake.STALL


def test_status_out_accepts_a_zero_length_out():
    _, usb = running()
    usb.write(0, 4, CONTROL | EP_KIND | CTR_RX | CTR_TX)
    assert usb.out(0, 0, b"", DataPid.DATA0) is Handshake.ACK


def test_out_clears_the_setup_bit_of_a_control_endpoint():
    _, usb = running()
    usb.setup(0, 0, SETUP_PACKET)
    usb.write(0, 4, CONTROL | CTR_TX)  # clear CTR_RX
    set_stats(usb, 0, Stat.NAK, Stat.VALID)
    usb.out(0, 0, b"", DataPid.DATA1)
    assert not usb.read(0, 4) & SETUP


# -- IN --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tx", "answer"),
    [(Stat.DISABLED, Handshake.TIMEOUT), (Stat.STALL, Handshake.STALL), (Stat.NAK, Handshake.NAK),
     (Stat.VALID, Handshake.ACK)],
)
def test_in_handshake_follows_stat_tx(tx, answer):
    _, usb = running(ep_type=BULK, tx=tx)
    assert usb.in_(0, 0)[0] is answer


def test_in_sends_count_tx_bytes_from_addr_tx_with_the_dtog_tx_pid():
    _, usb = running(ep_type=BULK, tx=Stat.VALID)
    load_tx(usb, b"12345")
    usb.write(0, 4, DTOG_TX | CTR_RX | CTR_TX)
    assert usb.in_(0, 0) == (Handshake.ACK, b"12345", DataPid.DATA1)


def test_in_completion_toggles_dtog_tx_sets_ctr_tx_and_naks():
    _, usb = running(ep_type=BULK, tx=Stat.VALID)
    usb.in_(0, 0)
    epr = usb.read(0, 4)
    assert epr & (CTR_TX | DTOG_TX) == CTR_TX | DTOG_TX
    assert (epr >> 4) & 3 == Stat.NAK


# -- addressing and reset ---------------------------------------------------------------------------------


def test_tokens_to_another_address_get_no_answer():
    _, usb = running(address=5, tx=Stat.VALID)
    assert usb.in_(4, 0)[0] is Handshake.TIMEOUT
    assert usb.in_(5, 0)[0] is Handshake.ACK


def test_nothing_answers_while_ef_is_clear_even_at_address_zero():
    _, usb = running()
    usb.write(DADDR, 4, 0)
    assert usb.setup(0, 0, SETUP_PACKET) is Handshake.TIMEOUT


def test_nothing_answers_while_fres_holds_the_peripheral_in_reset():
    _, usb = running()
    usb.write(CNTR, 4, 0x1)
    usb.write(DADDR, 4, 0x80)
    usb.write(0, 4, CONTROL)
    set_stats(usb, 0, Stat.NAK, Stat.VALID)
    assert usb.setup(0, 0, SETUP_PACKET) is Handshake.TIMEOUT


def test_tokens_to_an_endpoint_no_register_claims_get_no_answer():
    _, usb = running()
    assert usb.in_(0, 3)[0] is Handshake.TIMEOUT


def test_bus_reset_clears_daddr_and_every_endpoint_register():
    _, usb = running(address=7)
    usb.write(4, 4, 0x0201)
    usb.bus_reset()
    assert usb.read(DADDR, 4) == 0
    assert usb.read(0, 4) == 0 and usb.read(4, 4) == 0


def test_bus_reset_sets_istr_reset_and_keeps_btable_cntr_and_pma():
    _, usb = running()
    usb.write(BTABLE, 4, 0x40)
    usb.write(CNTR, 4, RESETM)
    usb.pma.write(0x100, 2, 0x5A5A)
    usb.bus_reset()
    assert usb.read(ISTR, 4) & 0x400
    assert usb.read(BTABLE, 4) == 0x40 and usb.read(CNTR, 4) == RESETM
    assert usb.pma.read(0x100, 2) == 0x5A5A


def test_bus_reset_raises_the_lp_interrupt_only_when_resetm_is_set():
    port, usb = running()
    usb.bus_reset()
    assert not port.irq_levels.get(USB_LP_CAN1_RX0_IRQ)
    usb.write(CNTR, 4, RESETM)
    assert port.irq_levels[USB_LP_CAN1_RX0_IRQ]


def test_clearing_istr_reset_drops_the_lp_interrupt():
    port, usb = running()
    usb.write(CNTR, 4, RESETM)
    usb.bus_reset()
    usb.write(ISTR, 4, ~0x400 & 0xFFFF)
    assert not port.irq_levels[USB_LP_CAN1_RX0_IRQ]


def test_setting_fres_acts_like_a_usb_reset():
    _, usb = running(address=3)
    usb.write(CNTR, 4, 0x1)
    assert usb.read(ISTR, 4) & 0x400
    assert usb.read(DADDR, 4) == 0


def test_bus_reset_of_an_unattached_device_does_nothing():
    _, usb = make()
    usb.bus_reset()
    assert usb.read(ISTR, 4) == 0


# -- interrupt lines --------------------------------------------------------------------------------------------


def test_correct_transfer_raises_lp_line_when_ctrm_is_set():
    port, usb = running(ep_type=BULK)
    usb.write(CNTR, 4, CTRM)
    usb.out(0, 0, b"a", DataPid.DATA0)
    assert port.irq_levels[USB_LP_CAN1_RX0_IRQ]
    assert not port.irq_levels.get(USB_HP_CAN1_TX_IRQ)


def test_correct_transfer_leaves_lp_line_low_when_ctrm_is_clear():
    port, usb = running(ep_type=BULK)
    usb.out(0, 0, b"a", DataPid.DATA0)
    assert not port.irq_levels.get(USB_LP_CAN1_RX0_IRQ)


def test_clearing_ctr_rx_drops_the_lp_line():
    port, usb = running(ep_type=BULK)
    usb.write(CNTR, 4, CTRM)
    usb.out(0, 0, b"a", DataPid.DATA0)
    usb.write(0, 4, CTR_TX)
    assert not port.irq_levels[USB_LP_CAN1_RX0_IRQ]


# -- frames, suspend, resume ------------------------------------------------------------------------------------


def test_sof_sets_the_frame_number_and_the_sof_flag():
    _, usb = running()
    usb.sof(0x123)
    assert usb.read(FNR, 4) & 0x7FF == 0x123
    assert usb.read(ISTR, 4) & 0x200


def test_frame_lock_needs_two_consecutive_sofs():
    port, usb = running()
    usb.bus_reset()
    usb.sof(1)
    assert not usb.read(FNR, 4) & 0x2000
    port.advance(1_000_000)
    usb.sof(2)
    assert usb.read(FNR, 4) & 0x2000


def test_frame_number_follows_sofs_sent_every_millisecond():
    port, usb = running()
    usb.bus_reset()
    for frame in range(1, 11):
        port.advance(1_000_000)
        usb.sof(frame)
    assert usb.read(FNR, 4) & 0x7FF == 10
    assert not usb.read(ISTR, 4) & 0x100  # no ESOF: every SOF came on time


def test_a_missing_sof_sets_esof_and_counts_lost_sofs():
    port, usb = running()
    usb.bus_reset()
    port.advance(2_100_000)
    assert usb.read(ISTR, 4) & 0x100
    assert (usb.read(FNR, 4) >> 11) & 3 == 2


def test_three_missing_sofs_without_traffic_raise_susp():
    port, usb = running()
    usb.bus_reset()
    port.advance(2_900_000)
    assert not usb.read(ISTR, 4) & 0x800
    port.advance(200_000)
    assert usb.read(ISTR, 4) & 0x800


def test_traffic_between_missing_sofs_prevents_suspend():
    port, usb = running()
    usb.bus_reset()
    for _ in range(5):
        port.advance(1_000_000)
        usb.in_(0, 0)
    assert not usb.read(ISTR, 4) & 0x800


def test_traffic_while_suspended_sets_wkup_and_clears_lp_mode():
    _, usb = running()
    usb.write(CNTR, 4, 0x0008 | 0x0004)  # FSUSP | LP_MODE
    assert usb.in_(0, 0)[0] is Handshake.TIMEOUT
    assert usb.read(ISTR, 4) & 0x1000
    assert not usb.read(CNTR, 4) & 0x0004


def test_host_resume_signalling_sets_wkup():
    _, usb = running()
    usb.write(CNTR, 4, 0x0008)
    usb.resume()
    assert usb.read(ISTR, 4) & 0x1000


def test_firmware_resume_bit_requests_remote_wakeup():
    _, usb = running()
    usb.write(CNTR, 4, 0x0010)
    assert usb.remote_wakeup_requested


def test_fnr_shows_the_idle_j_state_while_attached():
    _, usb = running()
    assert usb.read(FNR, 4) & 0xC000 == 0x8000


def test_fnr_shows_se0_while_detached():
    _, usb = make()
    assert usb.read(FNR, 4) & 0xC000 == 0


# -- listeners and unmodelled modes --------------------------------------------------------------------


def test_listener_hears_stat_tx_becoming_valid():
    _, usb = running()
    heard = []
    usb.add_listener(heard.append)
    set_stats(usb, 0, Stat.VALID, Stat.VALID)
    assert heard == [EndpointReady(0, 0, True, Stat.VALID)]


def test_listener_is_not_called_when_an_endpoint_goes_to_nak():
    _, usb = running(tx=Stat.VALID)
    heard = []
    usb.add_listener(heard.append)
    set_stats(usb, 0, Stat.NAK, Stat.VALID)
    assert heard == []


def test_isochronous_transactions_are_reported_as_unmodelled():
    port, usb = running(ep_type=ISO, tx=Stat.VALID)
    assert usb.in_(0, 0)[0] is Handshake.TIMEOUT
    assert ("USB", 0) in port.unmodelled_seen


def test_usb_state_events_record_reset_and_address():
    port, usb = running()
    usb.bus_reset()
    usb.write(DADDR, 4, 0x80 | 9)
    states = [(e.kind, e.data.get("state")) for e in port.events]
    assert ("usb_state", "bus_reset") in states and ("usb_state", "address") in states

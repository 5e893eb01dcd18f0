"""USART model against RM0008 §27."""

from __future__ import annotations

from emulator.core.port import SimPort
from firmware_models.usart import USART

SR, DR, BRR, CR1, CR2, CR3 = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14
PE, FE, NE, ORE, IDLE, RXNE, TC, TXE = (1 << n for n in range(8))
RE, TE, IDLEIE, RXNEIE, TCIE, TXEIE, M, UE = 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 12, 1 << 13

BRR_115200_AT_72MHZ = 0x271  # USARTDIV 39.0625 (RM0008 §27.3.4, Table 192)
FRAME_NS = 86_806  # 10 bits at 72 MHz / 625 = 86 805.6 ns


def make(name: str = "USART1", **options: object) -> tuple[SimPort, USART, bytearray]:
    port = SimPort()
    port.clocks.pclk2 = 72_000_000
    port.clocks.pclk1 = 36_000_000
    sent = bytearray()
    usart = USART(port, name=name, tx_sink=sent.extend, **options)
    return port, usart, sent


def enabled(cr1: int = TE | RE, brr: int = BRR_115200_AT_72MHZ) -> tuple[SimPort, USART, bytearray]:
    """USART1 at 115200 baud, enabled, idle preamble already sent."""
    port, usart, sent = make()
    usart.write(BRR, 4, brr)
    usart.write(CR1, 4, UE | cr1)
    port.advance(FRAME_NS)
    return port, usart, sent


def test_sr_resets_with_txe_and_tc_set() -> None:
    _, usart, _ = make()
    assert usart.read(SR, 4) == 0xC0


def test_usart_instances_have_their_irq_numbers() -> None:
    port = SimPort()
    assert [USART(port, name=f"USART{n}").irq for n in (1, 2, 3)] == [37, 38, 39]


# -- transmission -----------------------------------------------------------------------------------


def test_byte_is_not_delivered_before_its_frame_ends() -> None:
    port, usart, sent = enabled()
    usart.write(DR, 4, 0x55)
    port.advance(FRAME_NS - 1)
    assert sent == b""


def test_byte_is_delivered_one_frame_after_the_dr_write_at_115200() -> None:
    port, usart, sent = enabled()
    usart.write(DR, 4, 0x55)
    port.advance(FRAME_NS)
    assert sent == b"\x55"


def test_txe_stays_set_when_the_shift_register_was_empty() -> None:
    _, usart, _ = enabled()
    usart.write(DR, 4, 0x41)
    assert usart.read(SR, 4) & TXE


def test_txe_clears_when_a_second_byte_waits_behind_the_first() -> None:
    _, usart, _ = enabled()
    usart.write(DR, 4, 0x41)
    usart.write(DR, 4, 0x42)
    assert not usart.read(SR, 4) & TXE


def test_tc_sets_only_after_the_last_frame() -> None:
    port, usart, _ = enabled()
    usart.read(SR, 4)
    usart.write(DR, 4, 0x41)
    usart.write(DR, 4, 0x42)
    port.advance(2 * FRAME_NS - 1)
    before = usart.read(SR, 4) & TC
    port.advance(1)
    assert (before, usart.read(SR, 4) & TC) == (0, TC)


def test_back_to_back_bytes_keep_their_order() -> None:
    port, usart, sent = enabled()
    for b in b"OK\r\n":
        while not usart.read(SR, 4) & TXE:
            port.advance(1_000)
        usart.write(DR, 4, b)
    port.advance(5 * FRAME_NS)
    assert sent == b"OK\r\n"


def test_polled_string_takes_one_frame_per_byte() -> None:
    port, usart, sent = enabled()
    start = port.now_ns()
    for b in b"hello":
        while not usart.read(SR, 4) & TXE:
            port.advance(100)
        usart.write(DR, 4, b)
    while not usart.read(SR, 4) & TC:
        port.advance(100)
    elapsed = port.now_ns() - start
    assert sent == b"hello" and 5 * FRAME_NS <= elapsed < 5 * FRAME_NS + 100  # 100 ns polling grain


def test_tc_is_cleared_by_reading_sr_then_writing_dr() -> None:
    _, usart, _ = enabled()
    usart.read(SR, 4)
    usart.write(DR, 4, 0x41)
    assert not usart.read(SR, 4) & TC


def test_tc_stays_set_when_dr_is_written_without_reading_sr_first() -> None:
    _, usart, _ = enabled()
    usart.write(DR, 4, 0x41)
    assert usart.read(SR, 4) & TC


def test_tc_is_cleared_by_writing_zero_to_it() -> None:
    _, usart, _ = enabled()
    usart.write(SR, 4, ~TC & 0x3FF)
    assert not usart.read(SR, 4) & TC


def test_txe_cannot_be_cleared_by_software() -> None:
    _, usart, _ = enabled()
    usart.write(SR, 4, 0)
    assert usart.read(SR, 4) & TXE


def test_enabling_the_transmitter_sends_an_idle_frame_first() -> None:
    port, usart, sent = make()
    usart.write(BRR, 4, BRR_115200_AT_72MHZ)
    usart.write(CR1, 4, UE | TE)
    usart.write(DR, 4, 0x41)
    port.advance(2 * FRAME_NS - 1)
    before = bytes(sent)
    port.advance(1)
    assert (before, bytes(sent)) == (b"", b"A")


def test_nothing_is_sent_while_the_transmitter_is_off() -> None:
    port, usart, sent = make()
    usart.write(BRR, 4, BRR_115200_AT_72MHZ)
    usart.write(DR, 4, 0x41)
    port.advance(10 * FRAME_NS)
    assert sent == b""


def test_writing_dr_while_txe_is_clear_is_reported() -> None:
    port, usart, _ = enabled()
    for b in b"abc":
        usart.write(DR, 4, b)
    assert len(port.guest_errors) == 1


def test_clearing_te_mid_frame_loses_the_byte() -> None:
    port, usart, sent = enabled()
    usart.write(DR, 4, 0x41)
    port.advance(FRAME_NS // 2)
    usart.write(CR1, 4, UE | RE)
    port.advance(FRAME_NS)
    assert (sent, len(port.guest_errors)) == (b"", 1)


def test_usart2_runs_from_pclk1() -> None:
    port, usart, sent = make("USART2")
    usart.write(BRR, 4, 0x138)  # 36 MHz / 312
    usart.write(CR1, 4, UE | TE)
    port.advance(100_000)
    usart.write(DR, 4, 0x41)
    frame = (20 * 0x138 * 1_000_000_000 + 36_000_000) // (2 * 36_000_000)
    port.advance(frame - 1)
    assert (bytes(sent), usart.frame_ns()) == (b"", frame)


def test_nine_data_bits_and_two_stop_bits_make_a_twelve_bit_frame() -> None:
    port, usart, _ = make()
    usart.write(BRR, 4, 720)  # 100 kbaud at 72 MHz: 10 µs per bit
    usart.write(CR2, 4, 0b10 << 12)
    usart.write(CR1, 4, UE | TE | M)
    assert usart.frame_ns() == 120_000


def test_no_valid_baud_rate_sends_nothing_and_is_reported() -> None:
    port, usart, sent = make()
    usart.write(CR1, 4, UE | TE)
    usart.write(DR, 4, 0x41)
    port.advance(1_000_000)
    assert (sent, len(port.guest_errors)) == (b"", 1)


# -- reception ---------------------------------------------------------------------------------------------


def test_fed_byte_is_not_received_before_one_frame() -> None:
    port, usart, _ = enabled()
    usart.feed(b"x")
    port.advance(FRAME_NS - 1)
    assert not usart.read(SR, 4) & RXNE


def test_fed_byte_sets_rxne_after_one_frame() -> None:
    port, usart, _ = enabled()
    usart.feed(b"x")
    port.advance(FRAME_NS)
    assert usart.read(SR, 4) & RXNE


def test_reading_dr_returns_the_byte_and_clears_rxne() -> None:
    port, usart, _ = enabled()
    usart.feed(b"x")
    port.advance(FRAME_NS)
    assert (usart.read(DR, 4), usart.read(SR, 4) & RXNE) == (ord("x"), 0)


def test_rxne_is_cleared_by_writing_zero_to_it() -> None:
    port, usart, _ = enabled()
    usart.feed(b"x")
    port.advance(FRAME_NS)
    usart.write(SR, 4, ~RXNE & 0x3FF)
    assert not usart.read(SR, 4) & RXNE


def test_fed_bytes_arrive_one_frame_apart() -> None:
    port, usart, _ = enabled()
    usart.feed(b"ab")
    got = []
    for _ in range(2):
        while not usart.read(SR, 4) & RXNE:
            port.advance(1_000)
        got.append((usart.read(DR, 4), port.now_ns()))
    assert got[1][1] - got[0][1] == 87_000 and bytes(b for b, _ in got) == b"ab"


def test_unread_byte_followed_by_another_sets_ore_and_keeps_the_first() -> None:
    port, usart, _ = enabled()
    usart.feed(b"ab")
    port.advance(2 * FRAME_NS)
    assert (usart.read(SR, 4) & ORE, usart.read(DR, 4)) == (ORE, ord("a"))


def test_ore_is_cleared_by_reading_sr_then_dr() -> None:
    port, usart, _ = enabled()
    usart.feed(b"ab")
    port.advance(2 * FRAME_NS)
    usart.read(SR, 4)
    usart.read(DR, 4)
    assert not usart.read(SR, 4) & ORE


def test_ore_survives_a_dr_read_without_a_prior_sr_read() -> None:
    port, usart, _ = enabled()
    usart.feed(b"ab")
    port.advance(2 * FRAME_NS)
    usart.read(DR, 4)
    assert usart.values["SR"] & ORE


def test_idle_sets_one_frame_after_the_last_byte() -> None:
    port, usart, _ = enabled()
    usart.feed(b"ab")
    port.advance(3 * FRAME_NS - 1)
    before = usart.values["SR"] & IDLE
    port.advance(1)
    assert (before, usart.values["SR"] & IDLE) == (0, IDLE)


def test_idle_is_cleared_by_reading_sr_then_dr() -> None:
    port, usart, _ = enabled()
    usart.feed(b"a")
    port.advance(2 * FRAME_NS)
    usart.read(SR, 4)
    usart.read(DR, 4)
    assert not usart.read(SR, 4) & IDLE


def test_idle_is_not_set_again_without_a_new_byte() -> None:
    port, usart, _ = enabled()
    usart.feed(b"a")
    port.advance(2 * FRAME_NS)
    usart.read(SR, 4)
    usart.read(DR, 4)
    port.advance(10 * FRAME_NS)
    assert not usart.read(SR, 4) & IDLE


def test_bytes_arriving_while_the_receiver_is_off_are_lost() -> None:
    port, usart, _ = enabled(cr1=TE)
    usart.feed(b"abc")
    port.advance(5 * FRAME_NS)
    assert (usart.read(SR, 4) & RXNE, usart.rx_dropped) == (0, 3)


# -- interrupt line -------------------------------------------------------------------------------------------


def test_rxne_interrupt_asserts_the_line_when_enabled() -> None:
    port, usart, _ = enabled(cr1=TE | RE | RXNEIE)
    usart.feed(b"a")
    port.advance(FRAME_NS)
    assert port.irq_levels[37] is True


def test_reading_dr_deasserts_the_rxne_interrupt() -> None:
    port, usart, _ = enabled(cr1=TE | RE | RXNEIE)
    usart.feed(b"a")
    port.advance(FRAME_NS)
    usart.read(DR, 4)
    assert port.irq_levels[37] is False


def test_rxne_without_its_enable_leaves_the_line_low() -> None:
    port, usart, _ = enabled()
    usart.feed(b"a")
    port.advance(FRAME_NS)
    assert port.irq_levels.get(37, False) is False


def test_txeie_asserts_the_line_while_txe_is_set() -> None:
    port, usart, _ = enabled()
    usart.write(CR1, 4, UE | TE | RE | TXEIE)
    assert port.irq_levels[37] is True


def test_tc_interrupt_follows_the_end_of_transmission() -> None:
    port, usart, _ = enabled(cr1=TE | RE | TCIE)
    usart.read(SR, 4)
    usart.write(DR, 4, 0x41)
    low = port.irq_levels[37]
    port.advance(FRAME_NS)
    assert (low, port.irq_levels[37]) == (False, True)


def test_idle_interrupt_asserts_the_line_when_enabled() -> None:
    port, usart, _ = enabled(cr1=TE | RE | IDLEIE)
    usart.feed(b"a")
    port.advance(2 * FRAME_NS)
    assert port.irq_levels[37] is True


def test_interrupt_driven_transmit_sends_the_whole_buffer() -> None:
    port, usart, sent = enabled()
    pending = list(b"interrupts")

    def isr() -> None:
        # A HAL-style handler: feed DR on TXE, drop TXEIE when done.
        if not usart.read(SR, 4) & TXE:
            return
        if pending:
            usart.write(DR, 4, pending.pop(0))
        else:
            usart.write(CR1, 4, usart.read(CR1, 4) & ~TXEIE)

    usart.write(CR1, 4, usart.read(CR1, 4) | TXEIE)
    # The NVIC line is level-sensitive: the handler runs again as long as the line is high.
    for _ in range(1_000):
        if port.irq_levels.get(37):
            isr()
        else:
            port.advance(1_000)
    assert sent == b"interrupts"


def test_reset_cancels_a_transmission_in_flight() -> None:
    port, usart, sent = enabled()
    usart.write(DR, 4, 0x41)
    usart.reset()
    port.advance(2 * FRAME_NS)
    assert (sent, usart.read(SR, 4)) == (b"", 0xC0)

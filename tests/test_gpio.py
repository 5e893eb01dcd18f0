"""GPIO model against RM0008 §9.1–9.2."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.core.port import SimPort
from firmware_models.gpio import GPIO, gpio_base

CRL, CRH, IDR, ODR, BSRR, BRR, LCKR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18

# MODE/CNF nibbles (RM0008 Table 20)
ANALOG, FLOATING, PULL = 0x0, 0x4, 0x8
PUSH_PULL, OPEN_DRAIN, AF_PUSH_PULL = 0x2, 0x6, 0xA


def make(**options: object) -> tuple[SimPort, GPIO]:
    port = SimPort()
    return port, GPIO(port, **options)


def configure(gpio: GPIO, pin: int, nibble: int) -> None:
    off = CRL if pin < 8 else CRH
    shift = 4 * (pin & 7)
    gpio.write(off, 4, (gpio.read(off, 4) & ~(0xF << shift)) | nibble << shift)


def idr_bit(gpio: GPIO, pin: int) -> int:
    return gpio.read(IDR, 4) >> pin & 1


def lock(gpio: GPIO, pins: int) -> tuple[int, int]:
    """RM0008 §9.2.7 key sequence; returns the two confirming reads of LCKK."""
    gpio.write(LCKR, 4, 1 << 16 | pins)
    gpio.write(LCKR, 4, pins)
    gpio.write(LCKR, 4, 1 << 16 | pins)
    return gpio.read(LCKR, 4) >> 16, gpio.read(LCKR, 4) >> 16


def test_port_bases_are_0x400_apart_from_0x40010800() -> None:
    assert [gpio_base(n) for n in ("GPIOA", "GPIOE")] == [0x4001_0800, 0x4001_1800]


@pytest.mark.parametrize("offset", [CRL, CRH])
def test_configuration_registers_reset_to_floating_inputs(offset: int) -> None:
    _, gpio = make()
    assert gpio.read(offset, 4) == 0x4444_4444


def test_odr_resets_to_zero() -> None:
    _, gpio = make()
    assert gpio.read(ODR, 4) == 0


# -- inputs -----------------------------------------------------------------------------------------


def test_undriven_floating_input_reads_zero() -> None:
    _, gpio = make()
    assert idr_bit(gpio, 3) == 0


def test_floating_input_reads_the_external_drive() -> None:
    _, gpio = make()
    gpio.drive(3, True)
    assert idr_bit(gpio, 3) == 1


def test_released_pin_reads_zero_again() -> None:
    _, gpio = make()
    gpio.drive(3, True)
    gpio.drive(3, None)
    assert idr_bit(gpio, 3) == 0


def test_undriven_pull_up_input_reads_one() -> None:
    _, gpio = make()
    configure(gpio, 2, PULL)
    gpio.write(ODR, 4, 1 << 2)
    assert idr_bit(gpio, 2) == 1


def test_undriven_pull_down_input_reads_zero() -> None:
    _, gpio = make()
    configure(gpio, 2, PULL)
    assert idr_bit(gpio, 2) == 0


def test_external_drive_overrides_the_pull_up() -> None:
    _, gpio = make()
    configure(gpio, 2, PULL)
    gpio.write(ODR, 4, 1 << 2)
    gpio.drive(2, False)
    assert idr_bit(gpio, 2) == 0


def test_analog_input_reads_zero_even_when_driven_high() -> None:
    _, gpio = make()
    configure(gpio, 0, ANALOG)
    gpio.drive(0, True)
    assert idr_bit(gpio, 0) == 0


def test_idr_is_read_only() -> None:
    _, gpio = make()
    gpio.write(IDR, 4, 0xFFFF)
    assert gpio.read(IDR, 4) == 0


# -- outputs ----------------------------------------------------------------------------------------


def test_push_pull_output_reads_back_odr_in_idr() -> None:
    _, gpio = make()
    configure(gpio, 13, PUSH_PULL)
    gpio.write(ODR, 4, 1 << 13)
    assert idr_bit(gpio, 13) == 1


def test_push_pull_output_level_follows_odr() -> None:
    _, gpio = make()
    configure(gpio, 13, PUSH_PULL)
    gpio.write(ODR, 4, 1 << 13)
    assert gpio.output_level(13) is True


def test_open_drain_one_releases_the_line() -> None:
    _, gpio = make()
    configure(gpio, 6, OPEN_DRAIN)
    gpio.write(ODR, 4, 1 << 6)
    assert gpio.output_level(6) is None


def test_open_drain_released_reads_the_external_level() -> None:
    _, gpio = make()
    configure(gpio, 6, OPEN_DRAIN)
    gpio.write(ODR, 4, 1 << 6)
    gpio.drive(6, True)
    assert idr_bit(gpio, 6) == 1


def test_open_drain_zero_pulls_the_line_low_against_an_external_high() -> None:
    _, gpio = make()
    configure(gpio, 6, OPEN_DRAIN)
    gpio.drive(6, True)
    assert idr_bit(gpio, 6) == 0


def test_input_pin_drives_nothing() -> None:
    _, gpio = make()
    assert gpio.output_level(4) is None


def test_is_output_follows_the_mode_bits() -> None:
    _, gpio = make()
    configure(gpio, 9, AF_PUSH_PULL)
    assert (gpio.is_output(9), gpio.is_output(10)) == (True, False)


def test_alternate_function_output_follows_the_peripheral_not_odr() -> None:
    _, gpio = make()
    configure(gpio, 9, AF_PUSH_PULL)
    gpio.write(ODR, 4, 1 << 9)
    gpio.set_af_output(9, False)
    assert gpio.output_level(9) is False


def test_reserved_input_configuration_is_reported() -> None:
    port, gpio = make()
    configure(gpio, 1, 0xC)
    assert len(port.guest_errors) == 1


# -- BSRR / BRR ---------------------------------------------------------------------------------------


def test_bsrr_set_wins_over_reset_for_the_same_pin() -> None:
    _, gpio = make()
    gpio.write(BSRR, 4, (1 << 16 | 1) << 5)
    assert gpio.read(ODR, 4) == 1 << 5


def test_bsrr_reads_as_zero() -> None:
    _, gpio = make()
    gpio.write(BSRR, 4, 0xFFFF)
    assert gpio.read(BSRR, 4) == 0


def test_halfword_write_to_bsrr_upper_half_resets_pins() -> None:
    _, gpio = make()
    gpio.write(ODR, 4, 0xFF)
    gpio.write(BSRR + 2, 2, 0x0F)
    assert gpio.read(ODR, 4) == 0xF0


def test_halfword_bsrr_write_does_not_replay_an_earlier_reset() -> None:
    _, gpio = make()
    gpio.write(BSRR, 4, 0x0001_0000)
    gpio.write(BSRR, 2, 0x0001)
    assert gpio.read(ODR, 4) == 1


def test_brr_reads_as_zero() -> None:
    _, gpio = make()
    gpio.write(BRR, 4, 0xFFFF)
    assert gpio.read(BRR, 4) == 0


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF))
def test_bsrr_sets_then_resets_the_rest(odr: int, bsrr: int) -> None:
    _, gpio = make()
    gpio.write(ODR, 4, odr)
    gpio.write(BSRR, 4, bsrr)
    set_bits, reset_bits = bsrr & 0xFFFF, bsrr >> 16
    assert gpio.read(ODR, 4) == (odr & ~reset_bits | set_bits) & 0xFFFF


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_brr_clears_exactly_the_written_ones(odr: int, brr: int) -> None:
    _, gpio = make()
    gpio.write(ODR, 4, odr)
    gpio.write(BRR, 4, brr)
    assert gpio.read(ODR, 4) == odr & ~brr


# -- LCKR ---------------------------------------------------------------------------------------------------


def test_lock_sequence_reads_lckk_zero_then_one() -> None:
    _, gpio = make()
    assert lock(gpio, 1 << 3) == (0, 1)


def test_locked_pin_configuration_cannot_change() -> None:
    _, gpio = make()
    lock(gpio, 1 << 3)
    configure(gpio, 3, PUSH_PULL)
    assert gpio.read(CRL, 4) == 0x4444_4444


def test_writing_a_locked_pin_configuration_is_reported() -> None:
    port, gpio = make()
    lock(gpio, 1 << 3)
    configure(gpio, 3, PUSH_PULL)
    assert len(port.guest_errors) == 1


def test_unlocked_pins_of_a_locked_port_stay_configurable() -> None:
    _, gpio = make()
    lock(gpio, 1 << 3)
    configure(gpio, 4, PUSH_PULL)
    assert gpio.read(CRL, 4) == 0x4442_4444


def test_lock_covers_pins_in_crh() -> None:
    _, gpio = make()
    lock(gpio, 1 << 12)
    configure(gpio, 12, PUSH_PULL)
    assert gpio.read(CRH, 4) == 0x4444_4444


def test_lock_takes_effect_only_after_the_confirming_read() -> None:
    _, gpio = make()
    gpio.write(LCKR, 4, 1 << 16 | 1)
    gpio.write(LCKR, 4, 1)
    gpio.write(LCKR, 4, 1 << 16 | 1)
    configure(gpio, 0, PUSH_PULL)
    assert gpio.read(CRL, 4) & 0xF == PUSH_PULL


def test_a_changed_lck_value_mid_sequence_aborts_the_lock() -> None:
    _, gpio = make()
    gpio.write(LCKR, 4, 1 << 16 | 1)
    gpio.write(LCKR, 4, 3)
    gpio.write(LCKR, 4, 1 << 16 | 3)
    gpio.read(LCKR, 4)
    assert not gpio.locked


def test_a_wrong_key_order_does_not_lock() -> None:
    _, gpio = make()
    gpio.write(LCKR, 4, 1 << 16 | 1)
    gpio.write(LCKR, 4, 1 << 16 | 1)
    gpio.write(LCKR, 4, 1)
    gpio.read(LCKR, 4)
    assert gpio.read(LCKR, 4) >> 16 == 0


def test_lckr_is_frozen_once_locked() -> None:
    _, gpio = make()
    lock(gpio, 1 << 3)
    gpio.write(LCKR, 4, 0xFFFF)
    assert gpio.read(LCKR, 4) == 1 << 16 | 1 << 3


def test_reset_releases_the_lock() -> None:
    _, gpio = make()
    lock(gpio, 1 << 3)
    gpio.reset()
    configure(gpio, 3, PUSH_PULL)
    assert gpio.read(CRL, 4) & 0xF000 == PUSH_PULL << 12


# -- events -------------------------------------------------------------------------------------------------------


def test_output_change_is_recorded_as_an_event() -> None:
    port, gpio = make(name="GPIOC")
    configure(gpio, 13, PUSH_PULL)
    gpio.write(BSRR, 4, 1 << 13)
    assert [e.data for e in port.events if e.kind == "gpio"][-1] == {"port": "GPIOC", "pin": 13, "level": True}


def test_a_blinking_pin_is_counted_but_its_events_are_capped() -> None:
    port, gpio = make(max_events=4)
    configure(gpio, 5, PUSH_PULL)  # drives low: first change
    for _ in range(50):
        gpio.write(BSRR, 4, 1 << 5)
        gpio.write(BRR, 4, 1 << 5)
    assert (gpio.output_changes, sum(e.kind == "gpio" for e in port.events)) == (101, 4)


def test_a_labelled_pin_read_is_recorded_once() -> None:
    port, gpio = make(name="GPIOB", labels={2: "BOOT1"})
    gpio.drive(2, True)
    gpio.read(IDR, 4)
    gpio.read(IDR, 4)
    reads = [e.data for e in port.events if e.kind == "gpio_read"]
    assert reads == [{"port": "GPIOB", "pin": 2, "label": "BOOT1", "level": True}]


@settings(max_examples=300, deadline=None)
@given(crl=st.integers(0, 2**32 - 1), crh=st.integers(0, 2**32 - 1), odr=st.integers(0, 0xFFFF),
       external=st.lists(st.sampled_from([None, True, False]), min_size=16, max_size=16),
       af=st.lists(st.booleans(), min_size=16, max_size=16))
def test_idr_and_driven_levels_as_bit_masks_match_the_per_pin_rules(crl, crh, odr, external, af):
    g = GPIO(SimPort())
    g.values["CRL"], g.values["CRH"], g.values["ODR"] = crl, crh, odr
    g._refresh_cfg()
    for pin in range(16):
        g.drive(pin, external[pin])
        g.set_af_output(pin, af[pin])
    assert g._idr_read() == sum(1 << p for p in range(16) if g.pin_level(p))
    driven, level = g._driven_bits()
    for pin in range(16):
        out = g.output_level(pin)
        assert (out is not None) == bool(driven >> pin & 1)
        assert out is None or out == bool(level >> pin & 1)

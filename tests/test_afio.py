"""AFIO model against RM0008 §9.4."""

from __future__ import annotations

import pytest

from emulator.core.port import SimPort
from firmware_models.afio import AFIO

EVCR, MAPR, EXTICR1, EXTICR4, MAPR2 = 0x00, 0x04, 0x08, 0x14, 0x1C


def make() -> tuple[SimPort, AFIO]:
    port = SimPort()
    return port, AFIO(port)


@pytest.mark.parametrize("offset", [EVCR, MAPR, EXTICR1, 0x0C, 0x10, EXTICR4, MAPR2])
def test_every_register_resets_to_zero(offset: int) -> None:
    _, afio = make()
    assert afio.read(offset, 4) == 0


def test_evcr_keeps_pin_port_and_evoe() -> None:
    _, afio = make()
    afio.write(EVCR, 4, 0xFFFF_FFFF)
    assert afio.read(EVCR, 4) == 0xFF


def test_mapr_remap_bits_read_back() -> None:
    _, afio = make()
    afio.write(MAPR, 4, 1 << 2 | 0b11 << 4)  # USART1_REMAP, USART3 full remap
    assert afio.read(MAPR, 4) == 1 << 2 | 0b11 << 4


def test_swj_cfg_reads_as_zero() -> None:
    _, afio = make()
    afio.write(MAPR, 4, 0b010 << 24)
    assert afio.read(MAPR, 4) == 0


def test_swj_cfg_write_takes_effect() -> None:
    _, afio = make()
    afio.write(MAPR, 4, 0b100 << 24)
    assert (afio.swj_cfg, afio.swd_enabled) == (0b100, False)


def test_swj_cfg_change_is_recorded_as_an_event() -> None:
    port, afio = make()
    afio.write(MAPR, 4, 0b010 << 24)
    assert [e.data["value"] for e in port.events if e.kind == "swj_cfg"] == [0b010]


def test_reserved_swj_cfg_value_leaves_the_debug_port_as_it_was() -> None:
    # HAL's AFIO_REMAP_ENABLE writes SWJ_CFG=111 to avoid undoing an earlier setting.
    _, afio = make()
    afio.write(MAPR, 4, 0b010 << 24)
    afio.write(MAPR, 4, 0b111 << 24 | 1)
    assert afio.swj_cfg == 0b010


def test_read_modify_write_of_mapr_restores_full_swj() -> None:
    # SWJ_CFG reads 0, so a plain |= writes 000 back: the classic F1 pitfall, as on hardware.
    _, afio = make()
    afio.write(MAPR, 4, 0b010 << 24)
    afio.write(MAPR, 4, afio.read(MAPR, 4) | 1)
    assert afio.swj_cfg == 0


def test_reset_restores_full_swj() -> None:
    _, afio = make()
    afio.write(MAPR, 4, 0b100 << 24)
    afio.reset()
    assert afio.swd_enabled


def test_exticr_selects_the_port_of_each_line() -> None:
    _, afio = make()
    afio.write(EXTICR4, 4, 0x0200)  # EXTI14 <- port C
    assert (afio.exti_port(14), afio.exti_port(15)) == (2, 0)


def test_exticr_upper_half_is_reserved() -> None:
    _, afio = make()
    afio.write(EXTICR1, 4, 0xFFFF_FFFF)
    assert afio.read(EXTICR1, 4) == 0xFFFF


def test_mapr2_keeps_only_its_defined_bits() -> None:
    _, afio = make()
    afio.write(MAPR2, 4, 0xFFFF_FFFF)
    assert afio.read(MAPR2, 4) == 0b111_1110_0000


def test_access_to_an_unmapped_offset_is_logged_as_unmodelled() -> None:
    port, afio = make()
    afio.read(0x18, 4)
    assert ("AFIO", 0x18) in port.unmodelled_seen

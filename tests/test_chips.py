"""Chip profiles: sizes and ID words of the STM32F103 parts the emulator models."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.core.chips import (
    CHIPS,
    DEFAULT_CHIP,
    STM32F103C8,
    STM32F103RC,
    UNIQUE_ID_BYTES,
    get_chip,
)


def test_default_chip_is_the_seed_tutorials_stm32f103rc() -> None:
    assert DEFAULT_CHIP is STM32F103RC
    assert get_chip() is STM32F103RC
    assert get_chip("") is STM32F103RC


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("flash_base", 0x0800_0000),
        ("flash_size", 256 * 1024),
        ("page_size", 2 * 1024),
        ("sram_base", 0x2000_0000),
        ("sram_size", 48 * 1024),
        ("dev_id", 0x414),
        ("flash_size_kib", 256),
        ("num_irqs", 60),
        ("density", "high"),
    ],
)
def test_rc_profile_is_high_density(attribute: str, expected: object) -> None:
    assert getattr(STM32F103RC, attribute) == expected


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("flash_base", 0x0800_0000),
        ("flash_size", 64 * 1024),
        ("page_size", 1024),
        ("sram_base", 0x2000_0000),
        ("sram_size", 20 * 1024),
        ("dev_id", 0x410),
        ("flash_size_kib", 64),
        ("num_irqs", 43),
        ("density", "medium"),
    ],
)
def test_c8_profile_is_medium_density(attribute: str, expected: object) -> None:
    assert getattr(STM32F103C8, attribute) == expected


@pytest.mark.parametrize(
    ("name", "chip"),
    [
        ("stm32f103rc", STM32F103RC),
        ("STM32F103RC", STM32F103RC),
        ("rc", STM32F103RC),
        ("RC", STM32F103RC),
        (" Stm32F103rC ", STM32F103RC),
        ("STM32F103C8", STM32F103C8),
        ("stm32f103c8", STM32F103C8),
        ("c8", STM32F103C8),
        ("stm32f103c8t6", STM32F103C8),
    ],
)
def test_get_chip_accepts_case_insensitive_names_and_short_forms(name: str, chip: object) -> None:
    assert get_chip(name) is chip


def test_unknown_chip_name_error_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        get_chip("stm32f407vg")
    message = str(info.value)
    assert "stm32f407vg" in message
    assert "STM32F103RC" in message and "STM32F103C8" in message
    assert "\n" not in message


def test_flash_end_is_the_first_address_past_flash() -> None:
    assert STM32F103RC.flash_end == 0x0804_0000
    assert STM32F103C8.flash_end == 0x0801_0000


def test_sram_end_is_the_first_address_past_sram() -> None:
    assert STM32F103RC.sram_end == 0x2000_C000
    assert STM32F103C8.sram_end == 0x2000_5000


def test_page_count_covers_the_whole_flash() -> None:
    assert STM32F103RC.num_pages == 128
    assert STM32F103C8.num_pages == 64


@pytest.mark.parametrize("chip", CHIPS, ids=lambda c: c.name)
@given(data=st.data())
def test_page_of_maps_every_byte_of_a_page_to_that_page(chip, data) -> None:
    page = data.draw(st.integers(0, chip.num_pages - 1))
    offset = data.draw(st.integers(0, chip.page_size - 1))
    address = chip.page_address(page) + offset
    assert chip.page_of(address) == page
    assert chip.page_start(address) == chip.page_address(page)


def test_page_of_the_application_start_matches_the_page_size() -> None:
    # 0x08008000 is 32 KiB in: page 16 with 2 KiB pages, page 32 with 1 KiB pages.
    assert STM32F103RC.page_of(0x0800_8000) == 16
    assert STM32F103C8.page_of(0x0800_8000) == 32


@pytest.mark.parametrize("address", [0x07FF_FFFF, 0x0804_0000, 0x0000_0000, 0x2000_0000])
def test_page_of_an_address_outside_flash_raises(address: int) -> None:
    with pytest.raises(ValueError, match="not in STM32F103RC flash"):
        STM32F103RC.page_of(address)


def test_page_address_rejects_a_page_past_the_end() -> None:
    with pytest.raises(ValueError, match="pages 0..63"):
        STM32F103C8.page_address(64)


def test_in_flash_requires_the_whole_range_inside() -> None:
    assert STM32F103C8.in_flash(0x0800_FFFC, 4)
    assert not STM32F103C8.in_flash(0x0800_FFFC, 5)


def test_idcode_combines_revision_and_device_id() -> None:
    assert STM32F103RC.idcode & 0xFFF == 0x414
    assert STM32F103RC.idcode >> 16 == STM32F103RC.rev_id
    assert STM32F103C8.idcode & 0xFFF == 0x410


def test_vector_table_length_counts_system_exceptions_and_irqs() -> None:
    assert STM32F103RC.num_vectors == 76
    assert STM32F103C8.num_vectors == 59


def test_unique_id_is_96_bits() -> None:
    assert len(STM32F103RC.unique_id) == UNIQUE_ID_BYTES == 12


def test_unique_id_is_the_same_for_every_instance_of_a_profile() -> None:
    assert get_chip("rc").unique_id == dataclasses.replace(STM32F103RC).unique_id


def test_unique_ids_differ_between_profiles() -> None:
    assert STM32F103RC.unique_id != STM32F103C8.unique_id


def test_uid_seed_gives_another_board_of_the_same_part() -> None:
    other = STM32F103RC.with_uid_seed(1)
    assert other.unique_id != STM32F103RC.unique_id
    assert other.unique_id == STM32F103RC.with_uid_seed(1).unique_id
    assert dataclasses.replace(other, uid_seed="") == STM32F103RC


def test_chip_profiles_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        STM32F103RC.flash_size = 512 * 1024  # type: ignore[misc]

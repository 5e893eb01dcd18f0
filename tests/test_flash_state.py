"""The whole-board non-volatile state file (emulator/flash_state.py)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.core.flash_state import (
    BoardNvState,
    FlashStateError,
    decode_state,
    encode_state,
    load_state,
    save_state,
)
from firmware_models.flash import FACTORY_OPTION_BYTES

SIZE = 4096


def sample() -> BoardNvState:
    flash = bytes(range(256)) * (SIZE // 256)
    options = bytes([0x00, 0xFF] + [0xFF, 0x00] * 7)
    return BoardNvState("STM32F103C8", flash, options, [0x1234, 0, 0xFFFF])


def test_state_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    assert load_state(path, chip="STM32F103C8", flash_size=SIZE) == sample()


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.binary(min_size=16, max_size=16),
       st.lists(st.integers(0, 0xFFFF), max_size=42), st.text(min_size=1, max_size=20))
def test_any_state_encodes_and_decodes_to_itself(flash: bytes, options: bytes, backup: list[int],
                                                  chip: str) -> None:
    state = BoardNvState(chip, flash, options, backup)
    assert decode_state(encode_state(state)) == state


def test_a_missing_file_is_a_fresh_erased_chip(tmp_path: Path) -> None:
    state = load_state(tmp_path / "none.nv", chip="STM32F103RC", flash_size=SIZE, backup_register_count=42)
    assert state.flash == b"\xff" * SIZE
    assert state.option_bytes == FACTORY_OPTION_BYTES
    assert state.backup_registers == [0] * 42
    assert state.chip == "STM32F103RC"


def test_a_file_for_another_chip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    with pytest.raises(FlashStateError, match="STM32F103C8.*STM32F103RC"):
        load_state(path, chip="STM32F103RC", flash_size=SIZE)


def test_a_file_with_another_flash_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    with pytest.raises(FlashStateError, match="bytes of flash"):
        load_state(path, chip="STM32F103C8", flash_size=2 * SIZE)


def test_a_file_with_another_backup_register_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    with pytest.raises(FlashStateError, match="backup registers"):
        load_state(path, chip="STM32F103C8", flash_size=SIZE, backup_register_count=10)


def test_a_42_register_file_for_a_10_register_part_loads_when_the_missing_ones_are_zero(tmp_path: Path) -> None:
    # Files written while the BKP model gave every chip 42 data registers.
    path = tmp_path / "board.nv"
    state = sample()
    state.backup_registers = [0x4F42, *range(1, 10), *[0] * 32]
    save_state(path, state)
    loaded = load_state(path, chip="STM32F103C8", flash_size=SIZE, backup_register_count=10)
    assert loaded.backup_registers == [0x4F42, *range(1, 10)]


def test_a_42_register_file_with_data_above_dr10_is_refused_for_a_10_register_part(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    state = sample()
    state.backup_registers = [0] * 41 + [7]
    save_state(path, state)
    with pytest.raises(FlashStateError, match="holds 42 backup registers"):
        load_state(path, chip="STM32F103C8", flash_size=SIZE, backup_register_count=10)


def test_a_flipped_byte_in_the_flash_image_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FlashStateError, match="CRC"):
        load_state(path, chip="STM32F103C8", flash_size=SIZE)


def test_a_truncated_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FlashStateError):
        load_state(path, chip="STM32F103C8", flash_size=SIZE)


def test_a_file_cut_inside_the_header_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(FlashStateError, match="truncated"):
        load_state(path, chip="STM32F103C8", flash_size=SIZE)


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(b"\x00\x50\x00\x20" * 100)
    with pytest.raises(FlashStateError, match="not a flash state file"):
        load_state(path, chip="STM32F103C8", flash_size=SIZE)


def test_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    path.write_bytes(b"junk")
    with pytest.raises(FlashStateError) as info:
        load_state(path, chip="STM32F103C8", flash_size=SIZE)
    assert "\n" not in str(info.value)


def test_a_newer_format_version_is_refused() -> None:
    data = encode_state(sample()).replace(b'"version":1', b'"version":9')
    body = data[:-4]
    data = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(FlashStateError, match="version 9"):
        decode_state(data)


def test_saving_replaces_the_file_without_leaving_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "board.nv"
    save_state(path, sample())
    state = sample()
    state.backup_registers = [7]
    save_state(path, state)
    assert load_state(path, chip="STM32F103C8", flash_size=SIZE).backup_registers == [7]
    assert [p.name for p in tmp_path.iterdir()] == ["board.nv"]


def test_backup_register_values_wider_than_16_bits_are_refused() -> None:
    state = sample()
    state.backup_registers = [0x10000]
    with pytest.raises(ValueError):
        encode_state(state)

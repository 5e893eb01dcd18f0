"""The built-in test application: a real image generated for any address and chip."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emulator.bootflow.testapp import build_test_application
from emulator.core.session import BoardOptions, build_board


def run_alone(tmp_path: Path, address: int, chip: str | None) -> tuple[str, str]:
    app = build_test_application(address, chip)
    path = app.write(tmp_path / "app.bin")
    board = build_board(BoardOptions(image=str(path), base=address, chip=chip))
    stop = board.machine.run(max_ns=50_000_000)
    return board.machine.uart_output[1].decode("latin-1"), stop.kind


@pytest.mark.parametrize(("address", "chip"), [(0x0800_8000, "STM32F103RC"), (0x0800_2000, "STM32F103C8")])
def test_the_test_application_prints_exactly_what_it_promises(tmp_path, address, chip):
    app = build_test_application(address, chip)
    uart, stop = run_alone(tmp_path, address, chip)
    assert uart == app.expected_uart and stop == "idle"


def test_the_test_application_starts_with_a_vector_table_for_its_address_and_chip():
    app = build_test_application(0x0800_2000, "STM32F103C8")
    msp, reset = struct.unpack_from("<2I", app.image)
    assert msp == 0x2000_5000 and reset & 1 and 0x0800_2000 < reset < app.end


def test_the_test_application_spans_more_than_two_pages():
    assert len(build_test_application(0x0800_8000, "STM32F103RC").image) > 2 * 2048


def test_the_printed_sum_changes_when_one_word_of_the_image_is_lost(tmp_path):
    app = build_test_application(0x0800_8000)
    broken = bytearray(app.image)
    broken[-4:] = b"\xff\xff\xff\xff"  # the last word never written
    path = tmp_path / "broken.bin"
    path.write_bytes(broken)
    board = build_board(BoardOptions(image=str(path), base=0x0800_8000))
    board.machine.run(max_ns=50_000_000)
    assert board.machine.uart_output[1].decode("latin-1") != app.expected_uart


def test_an_address_the_vector_table_cannot_be_relocated_to_is_refused():
    with pytest.raises(ValueError, match="512-byte alignment"):
        build_test_application(0x0800_8100)


def test_an_application_past_the_end_of_flash_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        build_test_application(0x0800_FC00, "STM32F103C8")

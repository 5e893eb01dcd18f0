"""serve checks the flash against what the host program sent in DNLOAD requests, whatever the program
said (bus-timing issue item 3), on DfuSe and on plain DFU 1.1 (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emulator.core.session import BoardOptions
from emulator.usb.device_server import SentDownload, format_flash_check, serve_command

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "fixtures" / "images"
DFU11 = str(IMAGES / "boot_dfu11.elf")
APP_C8 = IMAGES / "app_c8_2000.bin"
LEAVE_EXITS = (0, 74)


def serve_dfu11(*args: str, plain_address: int | None = None):
    return serve_command(BoardOptions(image=DFU11, chip="STM32F103C8"), ["dfu-util", *args], poll_scale=0,
                         plain_address=plain_address)


def test_dfuse_data_blocks_are_placed_from_the_address_pointer_and_the_transfer_size():
    sent = SentDownload(dfuse=True, transfer_size=2048)
    sent.record(0, bytes([0x21]) + (0x0800_8000).to_bytes(4, "little"))
    sent.record(2, b"ab")
    sent.record(3, b"cd")
    sent.record(0, bytes([0x41]) + (0x0800_9000).to_bytes(4, "little"))  # an ERASE moves nothing
    assert sent.segments(None) == [(0x0800_8000, b"ab"), (0x0800_8800, b"cd")]


def test_plain_dfu_blocks_form_one_payload_and_a_new_block_zero_starts_over():
    sent = SentDownload(dfuse=False, transfer_size=1024)
    for block, data in ((0, b"old"), (0, b"AB"), (1, b"CD"), (2, b"")):
        sent.record(block, data)
    assert sent.segments(0x0800_2000) == [(0x0800_2000, b"ABCD")]


def test_dfu_util_on_the_plain_dfu_fixture_leaves_exactly_the_dnload_bytes_in_flash():
    result = serve_dfu11("-d", "1209:0001", "-D", str(APP_C8))
    assert result.exit_code in LEAVE_EXITS
    assert result.flash_check == {"ok": True, "compared": APP_C8.stat().st_size, "protocol": "dfu",
                                  "landed_at": 0x0800_2000}
    assert result.board.machine.read_flash(0x0800_2000, APP_C8.stat().st_size) == APP_C8.read_bytes()


def test_a_flash_byte_that_differs_from_the_traffic_is_named():
    result = serve_dfu11("-d", "1209:0001", "-D", str(APP_C8))
    m = result.board.machine
    m.flash_storage[0x2100] ^= 0xFF  # what a bootloader that mis-writes one byte would leave
    check = result.server.flash_check()
    assert not check["ok"] and check["first_difference"] == 0x0800_2100 and check["differing_bytes"] == 1
    line = format_flash_check(check)
    assert line.startswith("serve: FLASH DIFFERS")


def test_serve_exits_one_and_names_the_addresses_when_the_flash_is_not_what_was_sent():
    proc = subprocess.run([sys.executable, "-m", "emulator", "serve", DFU11, "--chip", "STM32F103C8",
                           "--poll-scale", "0", "--address", "0x08004000", "--",
                           "dfu-util", "-d", "1209:0001", "-D", str(APP_C8)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 1
    assert "FLASH DIFFERS from the DNLOAD traffic (plain DFU, landed at 0x08002000)" in proc.stderr
    assert "first at 0x08004000" in proc.stderr


def test_serve_refuses_a_selection_the_emulated_device_does_not_match():
    proc = subprocess.run([sys.executable, "-m", "emulator", "serve", DFU11, "--chip", "STM32F103C8",
                           "-d", "0483:df11", "--", "dfu-util", "-l"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "1209:0001" in proc.stderr


def test_listing_only_sends_no_dnload_and_checks_nothing():
    result = serve_dfu11("-l")
    assert result.exit_code == 0 and result.flash_check is None and result.flash_ok

"""A firmware team's own bootloader tests on the emulated board, with the bootsim pytest plugin.

``pip install stm32-bootsim`` registers the plugin; then ``pytest examples/`` runs these.
"""

from __future__ import annotations

from pathlib import Path

from hostside.dfu import DfuState

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
BOOT = IMAGES / "boot_dfu11.elf"  # a plain DFU 1.1 bootloader for the STM32F103C8
APP = IMAGES / "app_c8_2000.bin"  # its application, at 0x08002000
C8 = "STM32F103C8"


def test_the_bootloader_jumps_to_a_valid_application(bootsim_board):
    board = bootsim_board(BOOT, chip=C8, apps=[f"{APP}@0x08002000"])
    assert "app_c8 ok" in board.run_until_uart("done", timeout="500ms")


def test_the_backup_register_keeps_the_bootloader_in_dfu_mode(bootsim_board):
    board = bootsim_board(BOOT, chip=C8, apps=[f"{APP}@0x08002000"], bkp={1: 0x4F42})
    assert "reason: bkp" in board.run_until_uart("DFU mode", timeout="500ms")


def test_the_bootloader_relocates_vtor_before_the_jump(bootsim_board):
    board = bootsim_board(BOOT, chip=C8, apps=[f"{APP}@0x08002000"])
    assert board.run_until_event("vtor_write", timeout="100ms").data["value"] == 0x0800_2000


def test_dfu_mode_answers_getstatus_in_dfu_idle(bootsim_dfu):
    dfu = bootsim_dfu(BOOT, chip=C8, device="1209:0001")
    assert dfu.client.get_status().state == DfuState.dfuIDLE


def test_upload_is_refused_on_this_bootloader(bootsim_dfu):
    dfu = bootsim_dfu(BOOT, chip=C8)
    assert dfu.attempt(lambda: dfu.client.upload(0, 64)).stalled


def test_a_download_boots_the_application(bootsim_flash):
    outcome = bootsim_flash(BOOT, APP, chip=C8)
    assert outcome.ok and "crc FBF24E8F" in outcome.app_uart


def test_check_finds_nothing_wrong(bootsim_check):
    report = bootsim_check(BOOT, APP, chip=C8)
    assert [f.id for f in report.findings] == []

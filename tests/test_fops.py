"""--transport fops: the same DFU session through the bootloader's own
USBD_DFU_fops_FS functions, USB bypassed."""

from __future__ import annotations

from pathlib import Path

from emulator.bootflow.fops import find_fops, fops_flash_and_boot
from emulator.cli import main
from emulator.core.session import BoardOptions, build_board

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"


def test_fops_table_is_found_by_symbol_with_the_seed_layout_string():
    board = build_board(BoardOptions(image=str(IMAGES / "boot_seed.elf")))
    board.machine.run(max_ns=50_000_000)
    fops = find_fops(board.machine)
    assert fops.layout.startswith("@Internal Flash   /0x08000000/02*016Ka")
    assert board.machine.symbol(fops.erase) == "boot_seed:MEM_If_Erase_FS"


def test_seed_media_interface_flashes_and_boots_the_application():
    outcome = fops_flash_and_boot(str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_small.bin"))
    assert outcome.ok and outcome.app_uart.startswith("app ok")
    # One Erase() call: the seed's MEM_If_Erase_FS erases 240 pages whatever the address.
    assert len(outcome.erase_busy_ms) == 1 and outcome.erase_busy_ms[0] > 4000


def test_interleaved_erases_through_the_media_interface_corrupt_the_image_like_over_usb():
    outcome = fops_flash_and_boot(str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_big.bin"),
                                  erase_order="interleaved", run_ns=1_000_000)
    assert outcome.verify["ok"] is False
    assert outcome.verify["first_difference"] == 0x08008000
    assert outcome.verify["differing_bytes"] == 32610  # the same figure as the USB session


def test_fixed_bootloader_stays_in_dfu_without_its_manifest_commit_record():
    outcome = fops_flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"),
                                  run_ns=100_000_000)
    assert outcome.download_ok and outcome.verify["ok"]
    assert outcome.jump is None  # the record is written by its DFU class at manifestation, not by fops


def test_image_without_symbols_needs_the_table_address(capsys):
    code = main(["flash", str(IMAGES / "boot_seed.bin"), str(IMAGES / "app_small.bin"), "--transport", "fops"])
    err = capsys.readouterr().err
    assert code == 2 and "--fops ADDR" in err and "Traceback" not in err

"""Power cuts through the whole machine, persistence across runs, and the flash
journal's destroyed-data finding on real bootloader traffic."""

from __future__ import annotations

from pathlib import Path

from emulator.bootflow.scenario import flash_and_boot
from emulator.core.session import BoardOptions, build_board

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"
TEST_PAGE = 0x0803F800  # flash_selftest's scratch page


def test_power_cut_during_a_page_erase_leaves_a_partly_erased_page_the_next_boot_sees(tmp_path):
    state = tmp_path / "board.nv"
    board = build_board(BoardOptions(image=str(IMAGES / "flash_selftest.elf"), flash_file=str(state)))
    m = board.machine
    # Run until the self-test erases its marked page (first and last half-words written),
    # then pull the plug halfway through the erase.
    marked = b"\xff" * 2048
    m.run(max_ns=1_000_000_000,
          until=lambda: m.flash.busy and m.flash["CR"] & 0x2 and m.read_flash(TEST_PAGE, 2048) != marked)
    before = m.read_flash(TEST_PAGE, 2048)
    assert before[:2] == b"\xa5\xa5" and before[-2:] == b"\x5a\x5a"
    m.run(max_ns=10_000_000)  # halfway through the 20 ms erase
    m.power_cut()
    board.save()
    cut = m.read_flash(TEST_PAGE, 2048)
    assert cut != before and cut != b"\xff" * 2048  # neither old nor erased: partly erased
    assert cut[:2] == b"\xff\xff" and cut[-2:] == b"\x5a\x5a"  # erased from the start, cut midway
    # Next "power-on" from the saved state starts from exactly that flash.
    again = build_board(BoardOptions(image=str(IMAGES / "hello_base.elf"), flash_file=str(state)))
    assert again.machine.read_flash(TEST_PAGE, 2048) == cut


def test_seed_bootloader_with_interleaved_erases_shows_erases_destroying_programmed_data():
    outcome = flash_and_boot(str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_big.bin"),
                             erase_order="interleaved", run_ns=1_000_000)
    destroyed = outcome.board.machine.flash.journal.destroyed_data()
    assert destroyed
    assert any(start <= 0x08008000 < end for d in destroyed for start, end in d.destroyed)


def test_fixed_bootloader_download_destroys_nothing():
    outcome = flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_big.bin"), run_ns=100_000_000)
    assert outcome.ok
    assert outcome.board.machine.flash.journal.destroyed_data() == []


def test_seed_erase_requests_pages_beyond_the_end_of_flash():
    outcome = flash_and_boot(str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_small.bin"), run_ns=1_000_000)
    journal = outcome.board.machine.flash.journal.as_dicts()
    beyond = [e for e in journal if e["kind"] == "out_of_range_erase"]
    assert beyond and all(e["address"] >= 0x08040000 for e in beyond)

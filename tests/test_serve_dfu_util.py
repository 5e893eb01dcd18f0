"""Debian's unmodified dfu-util against the emulated bootloaders, through umockdev (emulator/usb/device_server.py).

These tests need `dfu-util umockdev gir1.2-umockdev-1.0 python3-gi`; when they
are missing the tests fail with the apt line instead of skipping, so CI cannot
pass without actually running dfu-util.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from emulator.core.session import BoardOptions
from emulator.usb.device_server import ServeResult, serve_command
from firmware_models import flash_journal as fj

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "fixtures" / "images"
BOOT_FIXED = str(IMAGES / "boot_fixed.elf")
BOOT_SEED = str(IMAGES / "boot_seed.elf")
APP_SMALL = IMAGES / "app_small.bin"
APP_BIG = IMAGES / "app_big.bin"
APP_BASE = 0x0800_8000
FLASH_END = 0x0804_0000  # STM32F103RC: 256 KiB
LEAVE_EXITS = (0, 74)  # 74: "Error during download get_status" after the manifest reset, as on real boards


pytestmark = pytest.mark.usefixtures("dfu_util_tools")


def serve(boot: str, *args: str, apps: tuple[str, ...] = (), flash_timing: str = "typical") -> ServeResult:
    return serve_command(BoardOptions(image=boot, apps=list(apps), flash_timing=flash_timing),
                         ["dfu-util", *args], poll_scale=0)


def run_capturing(capfd: pytest.CaptureFixture[str], boot: str, *args: str) -> tuple[ServeResult, str]:
    result = serve(boot, *args)
    return result, capfd.readouterr().out


@pytest.mark.parametrize("boot, layout", [
    (BOOT_FIXED, "@Internal Flash  /0x08000000/16*002Ka,112*002Kg"),
    (BOOT_SEED, "@Internal Flash   /0x08000000/02*016Ka,02*016Kg,01*064Kg,03*128Kg"),
])
def test_dfu_util_lists_the_emulated_bootloader_with_its_layout_string(capfd, boot: str, layout: str) -> None:
    result, out = run_capturing(capfd, boot, "-l")
    assert result.exit_code == 0
    assert "Found DFU: [0483:df11]" in out
    assert f'name="{layout}"' in out


def test_dfu_util_download_with_leave_leaves_exactly_the_file_in_flash() -> None:
    app = APP_SMALL.read_bytes()
    result = serve(BOOT_FIXED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_SMALL))
    assert result.exit_code in LEAVE_EXITS
    assert result.board.machine.read_flash(APP_BASE, len(app)) == app


def test_dfu_util_leave_makes_the_device_leave_the_bus() -> None:
    result = serve(BOOT_FIXED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_SMALL))
    assert result.server.stats.detached_at_ns is not None


def test_application_flashed_by_dfu_util_runs_after_reset_with_boot1_high() -> None:
    result = serve(BOOT_FIXED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_BIG))
    m = result.board.machine
    assert m.read_flash(APP_BASE, APP_BIG.stat().st_size) == APP_BIG.read_bytes()
    m.drive_pin("B", 2, True)
    m.system_reset("pin")  # the reset button (NRST), as a user would press it
    m.run(max_ns=500_000_000)
    uart = bytes(m.uart_output.get(1, b""))
    assert b"app_big ok" in uart and b"done" in uart


def test_dfu_util_upload_reads_back_what_dfu_util_downloaded(tmp_path: Path) -> None:
    app = APP_SMALL.read_bytes()
    first = serve(BOOT_FIXED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_SMALL))
    state = tmp_path / "board.flash"
    first.board.options.flash_file = str(state)
    first.board.save()
    out = tmp_path / "readback.bin"
    second = serve_command(BoardOptions(image=BOOT_FIXED, flash_file=str(state)),
                           ["dfu-util", "-a", "0", "-s", f"0x08008000:{len(app)}", "-U", str(out)], poll_scale=0)
    assert second.exit_code == 0
    assert out.read_bytes() == app


def test_dfu_util_mass_erase_wipes_every_non_blank_application_page_and_spares_the_bootloader() -> None:
    small = APP_SMALL.read_bytes()
    big = APP_BIG.read_bytes()
    result = serve(BOOT_FIXED, "-a", "0", "-s", "0x08008000:mass-erase:force", "-D", str(APP_SMALL),
                   apps=(f"{APP_BIG}@0x08008000",))
    m = result.board.machine
    boot = (IMAGES / "boot_fixed.bin").read_bytes()
    assert result.exit_code == 0
    assert m.read_flash(APP_BASE, len(small)) == small
    assert set(m.read_flash(APP_BASE + 4096, len(big) - 4096)) == {0xFF}  # app_big's tail is gone
    assert m.read_flash(0x0800_0000, len(boot)) == boot
    erased = [e for e in m.flash.journal.entries if e.kind == fj.PAGE_ERASE]
    # boot_fixed's mass erase = the 25 non-blank pages app_big used; dfu-util then erases nothing more.
    assert {e.address for e in erased} >= {APP_BASE + 2048 * i for i in range(len(big) // 2048 + 1)}
    assert all(e.address >= APP_BASE for e in erased)


def _seed_erase_calls(result: ServeResult) -> list[list[object]]:
    """Page erases grouped by the DfuSe ERASE command that caused them (a restart from the app start)."""
    calls: list[list[object]] = []
    for e in result.board.machine.flash.journal.entries:
        if e.kind not in (fj.PAGE_ERASE, fj.OUT_OF_RANGE_ERASE):
            continue
        if e.kind == fj.PAGE_ERASE and e.address == APP_BASE:
            calls.append([])
        if calls:
            calls[-1].append(e)
    return calls


def test_seed_erase_everything_routine_runs_once_per_fake_sector_dfu_util_erases() -> None:
    # app_big (≈50 KiB at 0x08008000) touches the seed's fake sectors at 0x08008000, 0x0800C000 and
    # 0x08010000: dfu-util sends three ERASE commands, each of which erases every page to 0x0807FFFF.
    result = serve(BOOT_SEED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_BIG))
    calls = _seed_erase_calls(result)
    assert len(calls) == 3
    for call in calls:
        kinds = Counter(e.kind for e in call)
        assert kinds[fj.PAGE_ERASE] == 112  # 0x08008000..0x0803FFFF exists
        assert kinds[fj.OUT_OF_RANGE_ERASE] == 128  # 0x08040000..0x0807FFFF does not (docs/SEED_BOOTLOADER.md defect 2d)


def test_dfu_util_erase_first_order_survives_the_seed_erase_everything_routine() -> None:
    # docs/SEED_BOOTLOADER.md defect 2(b): dfu-util >= 0.9 erases every page first, then writes; it only pays the time.
    result = serve(BOOT_SEED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_BIG))
    assert result.exit_code in LEAVE_EXITS
    assert result.board.machine.read_flash(APP_BASE, APP_BIG.stat().st_size) == APP_BIG.read_bytes()


def test_each_seed_erase_command_keeps_the_flash_busy_for_seconds_of_emulated_time() -> None:
    # docs/SEED_BOOTLOADER.md defect 2(c): 112 real page erases at the typical 20 ms each, inside one USB interrupt.
    result = serve(BOOT_SEED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_SMALL))
    (call,) = _seed_erase_calls(result)
    busy_ns = sum(e.end_ns - e.time_ns for e in call if e.kind == fj.PAGE_ERASE)
    assert busy_ns >= 112 * 20_000_000


def test_seed_erase_with_worst_case_flash_timing_outlasts_dfu_utils_five_second_timeout() -> None:
    # docs/SEED_BOOTLOADER.md defect 2(c): 112 × 40 ms = 4.5 s of erase plus 128 out-of-range requests; the GETSTATUS whose
    # status stage waits for it times out in emulated time and dfu-util gives up.
    result = serve(BOOT_SEED, "-a", "0", "-s", "0x08008000:leave", "-D", str(APP_SMALL), flash_timing="worst")
    assert result.exit_code != 0
    assert result.server.stats.failed >= 1


def test_serve_reports_a_missing_program_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "emulator", "serve", BOOT_FIXED, "--",
                           "no-such-dfu-tool-xyz", "-l"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no-such-dfu-tool-xyz not found"

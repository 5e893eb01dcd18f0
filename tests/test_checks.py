"""`python -m emulator check`: every defect of docs/SEED_BOOTLOADER.md that applies shows up as a
named finding for the seed's bootloader, none for the fixed one, and each broken
application adds exactly its own finding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.bootflow.checks import check
from emulator.cli import main

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
SEED = str(IMAGES / "boot_seed.elf")
FIXED = str(IMAGES / "boot_fixed.elf")
SEED_BASELINE = {"layout-does-not-match-chip", "erase-beyond-end-of-flash", "dfu-request-busy-too-long",
                 "bootloader-region-writable", "bootloader-readable", "state-left-running-at-jump"}


def ids(report) -> set[str]:
    return {f.id for f in report.findings}


@pytest.fixture(scope="module")
def seed_small():
    return check(SEED, str(IMAGES / "app_small.bin"), erase_orders=("all-first",))


def test_fixed_bootloader_has_no_findings_and_exit_code_zero(capsys):
    assert main(["check", FIXED, str(IMAGES / "app_small.bin"), "--erase-order", "all-first", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["clean"] and data["findings"] == []


def test_seed_bootloader_shows_each_applicable_design_defect(seed_small):
    assert ids(seed_small) == SEED_BASELINE


def test_seed_layout_finding_names_the_f4_sector_map_and_the_missing_flash(seed_small):
    layout = next(f for f in seed_small.findings if f.id == "layout-does-not-match-chip")
    assert "02*016Ka" in layout.evidence["layout"]
    assert any("outside the 256 KiB flash" in p for p in layout.evidence["problems"])


def test_seed_erase_requests_128_pages_past_the_end_of_flash_per_erase_command(seed_small):
    beyond = next(f for f in seed_small.findings if f.id == "erase-beyond-end-of-flash")
    assert beyond.evidence["count"] == 128 and beyond.evidence["first"] == "0x8040000"


def test_seed_leaves_systick_and_the_pll_running_at_the_jump(seed_small):
    state = next(f for f in seed_small.findings if f.id == "state-left-running-at-jump").evidence
    assert state["systick_enabled"] and state["pll_on"] and state["vtor"] == "0x0"


def test_seed_with_both_host_erase_orders_names_the_order_that_breaks_the_image():
    report = check(SEED, str(IMAGES / "app_big.elf"))
    broken = [f for f in report.findings if f.id == "erase-order-breaks-image"]
    assert [f.evidence["erase_order"] for f in broken] == ["interleaved"]
    assert broken[0].evidence["first_difference"] == "0x8008000"
    destroyed = [f for f in report.findings if f.id == "erase-destroys-written-data"]
    assert [f.evidence["erase_order"] for f in destroyed] == ["interleaved"]
    assert report.runs["all-first"]["verify"]["ok"]


@pytest.mark.parametrize("app, finding", [
    ("bad_vtor.elf", "interrupt-ran-bootloader-handler"),
    ("bad_msp.elf", "initial-msp-invalid"),
    ("bad_thumb.elf", "reset-vector-without-thumb-bit"),
    ("bad_base.elf", "application-linked-over-bootloader"),
    ("bad_base.bin", "reset-vector-outside-application"),
])
def test_each_broken_application_adds_its_own_finding(app, finding, seed_small):
    report = check(SEED, str(IMAGES / app), erase_orders=("all-first",))
    extra = ids(report) - ids(seed_small)
    assert finding in extra
    # Whatever else it adds is a consequence of the same defect, never another defect.
    assert extra <= {finding, "no-jump", "application-failed", "download-failed",
                     "reset-vector-outside-application", "interrupt-ran-bootloader-handler"}


def test_explain_narrates_the_boot_flow_in_order_with_symbols(capsys):
    assert main(["flash", SEED, str(IMAGES / "bad_vtor.elf"), "--explain", "--json"]) == 0
    lines = json.loads(capsys.readouterr().out)["explain"]
    text = "\n".join(lines)
    order = ["power-on reset", "reads BOOT1 (PB2) = low", "flash controller unlocked", "x page_erase",
             "software reset", "reads BOOT1 (PB2) = high", "jump into the application",
             "first interrupt after the jump: SysTick"]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)
    assert "boot_seed:SysTick_Handler" in text
    assert "past the end of flash" in text


def test_seed_32k_dfu_buffer_is_reported_on_a_20k_part(capsys):
    # On the STM32F103C8 the seed's .bss (32 KiB DFU buffer) runs past SRAM; the run itself fails.
    code = main(["check", SEED, str(IMAGES / "app_small.bin"), "--chip", "c8", "--erase-order", "all-first",
                 "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert "ram-exceeds-chip-sram" in {f["id"] for f in data["findings"]}

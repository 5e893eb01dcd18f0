"""The fixture firmware run end to end on the emulator, checked against what
RM0008 / PM0075 / the ARMv7-M ARM say a real STM32F103 prints."""

from __future__ import annotations

import json
import re
import sys
import zlib
from pathlib import Path

import pytest

from emulator.cli import main

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"


def run_json(capsys, *args: str) -> dict:
    code = main(["run", *args, "--json"])
    data = json.loads(capsys.readouterr().out)
    data["exit"] = code
    return data


def uart_lines(data: dict) -> list[str]:
    return data["uart"].get("1", "").replace("\r", "").splitlines()


def test_exception_self_test_passes_every_check(capsys):
    data = run_json(capsys, str(IMAGES / "exc_test.elf"), "--max-time", "5s")
    lines = uart_lines(data)
    assert data["exit"] == 0
    assert lines[0] == "exc_test start" and lines[-1] == "exc_test done"
    results = lines[1:-1]
    assert len(results) == 15
    assert all(line.startswith("PASS ") for line in results), results


EXPECTED_FLASH_SELFTEST = """\
flash_selftest start
RESET_STATE: CR=0x00000080 SR=0x00000000
UNLOCK: CR=0x00000000
PREP_ERASE: SR=0x00000020 blank=0x00000001
EOP_W1C: after_write_0=0x00000020 after_write_1=0x00000000
PROGRAM: SR_first=0x00000001 SR=0x00000020 read=0x00001234
PROGRAM_TIME: <40..70>
REPROGRAM: SR=0x00000004 read=0x00001234
PGERR_W1C: after_write_0=0x00000004 after_write_1=0x00000000
PROGRAM_ZERO: SR=0x00000020 read=0x00000000
PAGE_MARKS: first=0x0000A5A5 last=0x00005A5A
PAGE_ERASE: SR_first=0x00000001 SR=0x00000020 blank=0x00000001
ERASE_TIME: <20000..40000>
WORD_STORE_PG: busfaults=0x00000001 CFSR=0x00000400 read=0xFFFFFFFF SR=0x00000000
BYTE_STORE_PG: busfaults=0x00000001 CFSR=0x00000400 read=0x0000FFFF SR=0x00000000
STORE_NO_PG: busfaults=0x00000000 read=0x0000FFFF SR=0x00000000
OPT_UNLOCK: CR=0x00000200
OPTION_BYTES: OBR=0x03FFFFFC WRPR=0xFFFFFFFF
OPT_RELOCK: CR=0x00000000
LOCK: CR=0x00000080
UNLOCK_AGAIN: CR=0x00000000 CR_relocked=0x00000080
WRONG_KEY: busfaults=0x00000001 CFSR=0x00000400 CR=0x00000080
KEYS_AFTER_WRONG: busfaults=0x00000002 CFSR=0x00000400 CR=0x00000080
flash_selftest done"""


def _match(expected: str, actual: str) -> None:
    m = re.fullmatch(r"(\w+): <(\d+)\.\.(\d+)>", expected)
    if m is None:
        assert actual == expected
        return
    name, lo, hi = m.group(1), int(m.group(2)), int(m.group(3))
    got = re.fullmatch(rf"{name}: (\d+) us", actual)
    assert got is not None, actual
    assert lo <= int(got.group(1)) <= hi, actual


def test_flash_selftest_prints_what_pm0075_says_a_real_chip_does(capsys):
    data = run_json(capsys, str(IMAGES / "flash_selftest.elf"), "--max-time", "5s")
    lines = uart_lines(data)
    expected = EXPECTED_FLASH_SELFTEST.splitlines()
    assert len(lines) == len(expected), lines
    for want, got in zip(expected, lines, strict=True):
        _match(want, got)


@pytest.mark.parametrize("timing, erase_us", [("typical", 20000), ("worst", 40000)])
def test_flash_timing_table_shows_in_emulated_time(capsys, timing, erase_us):
    data = run_json(capsys, str(IMAGES / "flash_selftest.elf"), "--max-time", "5s", "--flash-timing", timing)
    assert f"ERASE_TIME: {erase_us} us" in uart_lines(data)


def test_flash_journal_records_the_selftest_operations(tmp_path, capsys):
    journal = tmp_path / "journal.json"
    assert main(["run", str(IMAGES / "flash_selftest.elf"), "--max-time", "5s", "--flash-journal",
                 str(journal)]) == 0
    capsys.readouterr()
    entries = json.loads(journal.read_text())["entries"]
    kinds = {e["kind"] for e in entries}
    assert {"unlock", "page_erase", "program"} <= kinds
    assert any(e.get("symbol", "").startswith("flash_selftest:") for e in entries)


def test_hello_app_runs_from_its_own_table_at_0x08008000(capsys):
    data = run_json(capsys, str(IMAGES / "hello_app.elf"))
    assert uart_lines(data)[0] == "hello from 0x08008000"
    assert data["vtor"] == 0x08008000


def test_app_small_crc_is_the_crc32_of_its_own_image(capsys):
    data = run_json(capsys, str(IMAGES / "app_small.elf"))
    crc = zlib.crc32((IMAGES / "app_small.bin").read_bytes())
    assert uart_lines(data) == ["app ok", f"crc {crc:08X}", "done"]


def test_app_big_checksums_its_table_like_zlib(capsys):
    sys.path.insert(0, str(ROOT / "fixtures" / "apps"))
    try:
        import gen_tables
    finally:
        sys.path.pop(0)
    data = run_json(capsys, str(IMAGES / "app_big.elf"))
    crc = zlib.crc32(gen_tables.table_bytes(49152, 0x2545F491))
    assert uart_lines(data) == ["app_big ok", f"table crc {crc:08X}", "done"]


def test_two_runs_of_the_same_firmware_are_identical(capsys):
    first = run_json(capsys, str(IMAGES / "hello_base.elf"))
    second = run_json(capsys, str(IMAGES / "hello_base.elf"))
    for key in ("events", "emulated_ns", "instructions", "cycles", "uart"):
        assert first[key] == second[key]

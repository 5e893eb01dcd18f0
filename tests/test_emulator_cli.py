"""`python -m emulator run`: outputs, exit codes, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.cli import main
from tests.thumb import B_SELF, image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"


def run_cli(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_hello_prints_its_uart_lines_and_a_summary_and_exits_zero():
    code, out, err = run_cli("run", str(IMAGES / "hello_base.elf"))
    assert code == 0
    assert out.splitlines() == ["hello from 0x08000000", "svc ok", "pendsv ok", "tick 10", "tick 20",
                                "tick 30", "done"]
    assert "idle" in err and "Reset_Handler" in err and "SysTick" in err


def test_json_summary_holds_uart_output_reset_vector_and_stop_reason(capsys):
    code = main(["run", str(IMAGES / "hello_base.elf"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["uart"]["1"].startswith("hello from 0x08000000")
    assert data["reset"]["msp"] == 0x2000C000
    assert data["stop"]["reason"] == "idle"
    assert data["exceptions_taken"]["SVCall"] == 1


def test_application_image_alone_starts_from_its_own_vector_table(capsys):
    code = main(["run", str(IMAGES / "app_small.elf"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["reset"]["from_image_table"] == 0x08008000
    assert "app ok" in data["uart"]["1"]


def test_application_msp_outside_sram_ends_in_lockup_with_exit_one(capsys):
    code = main(["run", str(IMAGES / "bad_msp.elf"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["stop"]["reason"] == "lockup"


def test_instruction_budget_is_a_clean_end(capsys):
    code = main(["run", str(IMAGES / "hello_base.elf"), "--max-instructions", "1000", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["stop"]["reason"] == "instruction-budget"
    # The run ends at the first translated-block boundary at or after the budget.
    assert 1000 <= data["instructions"] < 1000 + 512


def test_uart_output_goes_to_a_file_when_asked(tmp_path, capsys):
    out = tmp_path / "uart.txt"
    assert main(["run", str(IMAGES / "hello_base.elf"), "--uart1", str(out)]) == 0
    assert out.read_bytes().startswith(b"hello from 0x08000000\r\n")
    assert capsys.readouterr().out == ""


def test_flash_state_file_keeps_an_application_between_runs(tmp_path, capsys):
    state = tmp_path / "board.nv"
    assert main(["run", str(IMAGES / "hello_base.elf"), "--flash", str(state), "--max-time", "1ms"]) == 0
    assert state.exists()
    # Second run: the image given again is programmed over the same state; it still boots.
    assert main(["run", str(IMAGES / "hello_base.elf"), "--flash", str(state), "--json"]) == 0


def bad_input(args: list[str], capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_image_is_one_line_and_exit_two(capsys):
    assert "nope.elf" in bad_input(["run", "nope.elf"], capsys)


def test_non_arm_elf_is_refused(capsys):
    line = bad_input(["run", str(ROOT / "tests" / "data" / "loader" / "x86_64.elf")], capsys)
    assert "ARM" in line


def test_corrupt_elf_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"\x7fELF" + b"\x01" * 20)
    bad_input(["run", str(bad)], capsys)


def test_image_larger_than_flash_is_refused(tmp_path, capsys):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (300 * 1024))
    bad_input(["run", str(big)], capsys)


def test_overlapping_application_is_refused(capsys):
    line = bad_input(["run", str(IMAGES / "hello_base.elf"), "--app", str(IMAGES / "bad_base.bin") + "@0x08000000"],
                     capsys)
    assert "overlap" in line


@pytest.mark.parametrize("args", [
    ["--max-time", "soon"], ["--max-time", "-1s"], ["--boot1", "maybe"], ["--chip", "stm32f407"],
    ["--max-instructions", "lots"], ["--boot0", "high"],
])
def test_bad_option_values_are_one_line_errors(args, capsys):
    bad_input(["run", str(IMAGES / "hello_base.elf"), *args], capsys)


def test_strict_mode_fails_on_an_unmodelled_register(tmp_path, capsys):
    # ldr r0, =0x40000000 (TIM2, not modelled); ldr r1, [r0]; b .
    from tests.thumb import with_pool
    code = with_pool([("ldr", 0, 0), bytes.fromhex("0168"), B_SELF], [0x4000_0000])
    img = tmp_path / "tim2.bin"
    img.write_bytes(image(code))
    assert main(["run", str(img), "--json"]) == 0
    capsys.readouterr()
    code = main(["run", str(img), "--strict", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["stop"]["reason"] == "strict"

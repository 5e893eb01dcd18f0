"""Boot triggers: pins held and backup registers set from outside, on `run` (and through
BoardOptions on every command that boots a board)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from emulator.cli import main
from emulator.core.arguments import parse_bkp_setting, parse_pin_setting
from emulator.core.chips import get_chip
from emulator.core.machine import EmulatorError, Machine
from emulator.core.session import BoardOptions, apply_backup_registers, build_board
from emulator.core.time import Scheduler
from tests.thumb import B_SELF, image, ldr_r1_r0, with_pool

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
DFU11 = str(IMAGES / "boot_dfu11.elf")
APP_C8 = str(IMAGES / "app_c8_2000.elf")
C8 = ["--chip", "STM32F103C8"]


def run_uart(capsys, *extra: str) -> str:
    assert main(["run", DFU11, *C8, "--app", APP_C8, "--max-time", "60ms", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)["uart"]["1"]


@pytest.mark.parametrize("text, expected", [
    ("PA0=high", ("A", 0, True)), ("pb2=low", ("B", 2, False)), ("PC13=1", ("C", 13, True)),
    ("PE15 = l", ("E", 15, False)),
])
def test_pin_settings_parse_port_pin_and_level(text, expected):
    assert parse_pin_setting(text) == expected


@pytest.mark.parametrize("text", ["PA16=high", "PF0=high", "A0=high", "PA0", "PA0=maybe", "PA0=high=low"])
def test_bad_pin_settings_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_pin_setting(text)


@pytest.mark.parametrize("text, expected", [
    ("DR1=0x4F42", (1, 0x4F42)), ("dr10=0x424C", (10, 0x424C)), ("BKP_DR42=7", (42, 7)), ("DR2=0", (2, 0)),
])
def test_backup_register_settings_parse_register_and_value(text, expected):
    assert parse_bkp_setting(text) == expected


@pytest.mark.parametrize("text", ["DR0=1", "DR43=1", "DR1=0x10000", "DR1=-1", "DR1=lots", "CR=1", "DR1"])
def test_bad_backup_register_settings_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bkp_setting(text)


def test_without_triggers_boot_dfu11_jumps_to_its_valid_application(capsys):
    assert "jump 08002000" in run_uart(capsys)


def test_the_backup_register_magic_keeps_boot_dfu11_in_dfu_mode(capsys):
    uart = run_uart(capsys, "--bkp", "DR1=0x4F42")
    assert "reason: bkp" in uart and "jump" not in uart


def test_a_button_held_on_pa0_keeps_boot_dfu11_in_dfu_mode(capsys):
    uart = run_uart(capsys, "--pin", "PA0=high")
    assert "reason: button" in uart and "jump" not in uart


def test_a_later_pin_setting_for_pb2_overrides_boot1():
    board = build_board(BoardOptions(image=DFU11, chip="STM32F103C8", boot1=False, pins=[("B", 2, True)]))
    assert board.machine.gpio["B"].read(0x08, 4) >> 2 & 1  # GPIOB_IDR bit 2


def test_a_backup_register_setting_wins_over_the_state_file(tmp_path):
    state = tmp_path / "board.nv"
    build_board(BoardOptions(image=DFU11, chip="STM32F103C8", flash_file=str(state))).save()
    board = build_board(BoardOptions(image=DFU11, chip="STM32F103C8", flash_file=str(state), bkp=[(1, 0x4F42)]))
    assert board.machine.bkp["DR1"] == 0x4F42


@pytest.mark.parametrize("args", [["--pin", "PA0=up"], ["--bkp", "DR99=1"], ["--pin-after", "PA0=high"],
                                  ["--nrst", "0"], ["--nrst", "soon"]])
def test_bad_trigger_options_on_run_are_one_line_errors(args, capsys):
    assert main(["run", DFU11, *C8, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_register_the_part_lacks_is_a_clear_error():
    board = build_board(BoardOptions(image=DFU11, chip="STM32F103C8"))
    with pytest.raises(EmulatorError, match="DR1..DR10"):
        apply_backup_registers(board.machine, [(11, 1)])


# -- the reset button (NRST pulled low from outside) ---------------------------------------------------

RCC_CSR, RMVF, PINRSTF, PORRSTF = 0x4002_1024, 1 << 24, 1 << 26, 1 << 27
STR_R2_R0 = bytes.fromhex("0260")  # str r2, [r0]


def csr_reader(presses_ns: list[int]) -> Machine:
    """Firmware that reads RCC_CSR into r1, clears the flags (RMVF) and waits; the button is
    pressed at each of ``presses_ns``."""
    m = Machine(get_chip("c8"))
    m.load_flash(image(with_pool([("ldr", 0, 0), ldr_r1_r0(), ("ldr", 2, 1), STR_R2_R0, B_SELF],
                                 [RCC_CSR, RMVF])))
    m.power_on()
    for at in presses_ns:
        m.press_reset_button(at)
    m.run(max_ns=10_000_000)
    return m


def test_after_power_on_the_firmware_sees_the_power_on_and_pin_flags() -> None:
    m = csr_reader([])
    assert (m.resets, m.reg("r1") & (PINRSTF | PORRSTF)) == (0, PINRSTF | PORRSTF)


def test_a_reset_button_press_is_a_pin_reset_with_pinrstf_alone() -> None:
    # RM0008 §7.1.2, §7.3.10: what "reset pressed" bootloaders test for.
    m = csr_reader([2_000_000])
    assert (m.resets, m.reg("r1") >> 24) == (1, PINRSTF >> 24)


def test_a_double_tap_is_two_pin_resets() -> None:
    m = csr_reader([2_000_000, 2_300_000])
    assert (m.resets, [e.data["cause"] for e in m.events if e.kind == "reset"]) == (2, ["power_on", "pin", "pin"])


def test_timers_from_outside_the_chip_survive_its_resets_and_its_own_do_not() -> None:
    s = Scheduler()
    ran: list[str] = []
    s.schedule(10, lambda: ran.append("button"), external=True)
    s.schedule(10, lambda: ran.append("peripheral"))
    s.clear()
    s.now_ns = 10
    s.run_due()
    assert ran == ["button"]


def test_nrst_on_run_resets_the_board_at_the_given_time(capsys) -> None:
    assert main(["run", DFU11, *C8, "--app", APP_C8, "--max-time", "60ms", "--json", "--nrst", "5ms"]) == 0
    out = json.loads(capsys.readouterr().out)
    resets = [e for e in out["events"] if e["kind"] == "reset"]
    # The press lands at the first block boundary after it falls due (docs/ARCHITECTURE.md, the CPU engine).
    assert [e["cause"] for e in resets] == ["power_on", "pin"] and out["resets"] == 1
    assert 5_000_000 <= resets[1]["time_ns"] < 5_001_000


def test_the_reset_button_brings_boot_dfu11_back_to_dfu_mode_over_a_valid_application(tmp_path, capsys) -> None:
    # An application is installed; without a trigger the bootloader jumps to it and never
    # attaches.  A press of the reset button while the application runs is boot_dfu11's
    # "reset pin" reason: the download then goes through and the new application starts.
    state = str(tmp_path / "board.nv")
    flash = ["flash", DFU11, str(IMAGES / "app_c8_2000.bin"), *C8, "--flash", state, "--json"]
    assert main(flash) == 0
    capsys.readouterr()
    assert main(flash) == 1
    assert "never attached" in capsys.readouterr().err
    assert main([*flash, "--nrst", "5ms", "--explain"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and any("NRST pin reset (the reset button)" in line for line in out["explain"])

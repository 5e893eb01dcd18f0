"""Boot triggers: pins held and backup registers set from outside, on `run` (and through
BoardOptions on every command that boots a board)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from emulator.cli import main
from emulator.core.arguments import parse_bkp_setting, parse_pin_setting
from emulator.core.machine import EmulatorError
from emulator.core.session import BoardOptions, apply_backup_registers, build_board

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


@pytest.mark.parametrize("args", [["--pin", "PA0=up"], ["--bkp", "DR99=1"], ["--pin-after", "PA0=high"]])
def test_bad_trigger_options_on_run_are_one_line_errors(args, capsys):
    assert main(["run", DFU11, *C8, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_register_the_part_lacks_is_a_clear_error():
    board = build_board(BoardOptions(image=DFU11, chip="STM32F103C8"))
    board.machine.bkp.data_registers = 10  # a medium-density part's DR1..DR10
    with pytest.raises(EmulatorError, match="DR1..DR10"):
        apply_backup_registers(board.machine, [(11, 1)])

"""Any DFU device on the emulated bus: found by its interface class, whatever its VID:PID, and
-d/-a/--intf/--serial on the commands that talk to it (issue 13 items 1 and 5)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from emulator.cli import main
from emulator.core.session import BoardOptions, build_board
from emulator.usb.target import NotTheDeviceAsked, attach, open_emulated
from hostside import cli as hostside_cli
from hostside.selection import DfuSelector, parse_device_ids

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
DFU11 = str(IMAGES / "boot_dfu11.elf")
FIXED = str(IMAGES / "boot_fixed.elf")
C8 = ["--chip", "STM32F103C8"]


def dfu11_board():
    return build_board(BoardOptions(image=DFU11, chip="STM32F103C8"))


def test_a_non_st_plain_dfu_bootloader_enumerates_and_is_selected_by_class():
    target = attach(dfu11_board(), selector=DfuSelector())
    alt = target.select()
    assert (target.device.idVendor, target.device.idProduct) == (0x1209, 0x0001)
    assert (alt.interface, alt.alt, alt.name) == (0, 0, "bootsim DFU")
    target.close()


def test_a_selector_for_another_device_is_refused_naming_the_one_found():
    with pytest.raises(NotTheDeviceAsked, match="1209:0001"):
        attach(dfu11_board(), selector=DfuSelector(ids=parse_device_ids("0483:df11")))


def test_usb_info_prints_any_device(capsys):
    assert main(["usb-info", DFU11, *C8]) == 0
    out = capsys.readouterr().out
    assert "ID 1209:0001" in out and "bootsim DFU" in out


def test_usb_info_with_matching_selection_names_the_alt_setting(capsys):
    assert main(["usb-info", DFU11, *C8, "-d", "1209:0001", "-a", "bootsim DFU", "--intf", "0"]) == 0
    assert 'selected interface 0 alt 0 "bootsim DFU"' in capsys.readouterr().err


@pytest.mark.parametrize("args", [["-d", "0483:df11"], ["-a", "2"], ["--intf", "1"], ["--serial", "nope"],
                                  ["-d", "xyz"], ["--intf", "300"]])
def test_usb_info_selection_that_matches_nothing_is_one_line_and_exit_two(args, capsys):
    assert main(["usb-info", DFU11, *C8, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_hostside_emulate_lists_a_non_st_device():
    out, err = io.StringIO(), io.StringIO()
    code = hostside_cli.main(["--emulate", DFU11, *C8, "-l"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert 'Found DFU: [1209:0001]' in out.getvalue() and 'name="bootsim DFU"' in out.getvalue()


def test_hostside_emulate_with_a_vendor_filter_for_another_device_finds_none():
    app_c8_bin = IMAGES / "app_c8_2000.bin"
    out, err = io.StringIO(), io.StringIO()
    code = hostside_cli.main(["--no-progress", "--emulate", DFU11, *C8, "-d", "0483:df11", "-D", str(app_c8_bin)],
                             stdout=out, stderr=err)
    assert code == 74 and "No DFU capable USB device" in err.getvalue()


def test_open_emulated_takes_boot_triggers_as_options():
    target = open_emulated(DFU11, [*C8, "--app", str(IMAGES / "app_c8_2000.elf"), "--bkp", "DR1=0x4F42"])
    assert (target.device.idVendor, target.device.idProduct) == (0x1209, 0x0001)  # stayed in DFU mode
    target.close()


def test_usb_info_on_the_st_fixture_is_unchanged_by_selection(capsys):
    assert main(["usb-info", FIXED, "-d", "0483:df11", "-a", "0"]) == 0
    assert "ID 0483:df11" in capsys.readouterr().out

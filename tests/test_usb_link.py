"""The emulated board's USB link end to end: our register-level DFU bootloaders,
enumerated by the virtual host, driven through pyusb and the hostside client."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dpkt
import pytest
import usb.util

from emulator.bootflow.scenario import flash_and_boot
from emulator.cli import main as emulator_main
from emulator.usb.target import open_emulated
from hostside.cli import main as hostside_main

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"
SEED_LAYOUT = "@Internal Flash   /0x08000000/02*016Ka,02*016Kg,01*064Kg,03*128Kg"
FIXED_LAYOUT = "@Internal Flash  /0x08000000/16*002Ka,112*002Kg"


@pytest.mark.parametrize("boot, layout, transfer", [("boot_seed", SEED_LAYOUT, 32768),
                                                    ("boot_fixed", FIXED_LAYOUT, 2048)])
def test_usb_info_shows_the_dfu_device_its_functional_descriptor_and_layout(capsys, boot, layout, transfer):
    assert emulator_main(["usb-info", str(IMAGES / f"{boot}.elf")]) == 0
    out = capsys.readouterr().out
    assert "ID 0483:df11" in out
    assert layout in out
    assert "bcdDFUVersion                   1.1a" in out
    assert re.search(rf"wTransferSize +{transfer} bytes", out)


def test_pyusb_talks_to_the_emulated_bootloader_through_the_backend():
    target = open_emulated(str(IMAGES / "boot_seed.elf"))
    dev = target.device
    assert (dev.idVendor, dev.idProduct) == (0x0483, 0xDF11)
    dev.set_configuration()
    intf = dev.get_active_configuration()[(0, 0)]
    assert usb.util.get_string(dev, intf.iInterface) == SEED_LAYOUT
    assert len(usb.util.get_string(dev, dev.iSerialNumber)) == 12
    # DFU GETSTATUS: bStatus OK, state dfuIDLE (2)
    status = dev.ctrl_transfer(0xA1, 3, 0, 0, 6)
    assert status[0] == 0 and status[4] == 2
    target.close()


def test_list_against_the_emulator_prints_what_dfu_util_prints(capsys):
    assert hostside_main(["--emulate", str(IMAGES / "boot_fixed.elf"), "-l"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('Found DFU: [0483:df11] ver=0200, devnum=1, cfg=1, intf=0, path="1-1", alt=0, '
                           f'name="{FIXED_LAYOUT}", serial="')


def test_fixed_bootloader_flashes_app_big_exactly_and_verifies(capsys):
    code = hostside_main(["--emulate", str(IMAGES / "boot_fixed.elf"), "-a", "0", "-s", "0x08008000:leave",
                          "-D", str(IMAGES / "app_big.bin"), "--verify"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Verified 50536 bytes" in out.out


def test_seed_bootloader_with_interleaved_erases_corrupts_app_big_and_verify_says_where(capsys):
    code = hostside_main(["--emulate", str(IMAGES / "boot_seed.elf"), "-a", "0", "-s", "0x08008000:leave",
                          "-D", str(IMAGES / "app_big.bin"), "--verify", "--erase-order", "interleaved"])
    err = capsys.readouterr().err
    assert code != 0
    assert "verify failed" in err and "first at 0x08008000" in err


def test_seed_bootloader_with_all_first_erases_succeeds_but_each_erase_is_busy_for_seconds():
    outcome = flash_and_boot(str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_big.elf"))
    assert outcome.ok
    assert outcome.verify == {"ok": True, "compared": 50536}
    # 240 page erases of 20 ms each per DfuSe ERASE: the seed's MEM_If_Erase_FS defect.
    assert len(outcome.erase_busy_ms) == 3
    assert all(4800 <= busy < 5000 for busy in outcome.erase_busy_ms)
    assert "app_big ok" in outcome.app_uart


def test_flash_scenario_jumps_into_the_application_and_the_flash_holds_the_file():
    app = (IMAGES / "app_small.bin").read_bytes()
    outcome = flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"))
    assert outcome.ok
    assert outcome.jump is not None and outcome.jump.address == 0x08008134 and outcome.jump.msp == 0x2000C000
    assert outcome.board.machine.read_flash(0x08008000, len(app)) == app
    assert outcome.app_uart.startswith("app ok\r\n")


def test_flash_command_exit_code_is_one_when_the_boot_flow_breaks(capsys):
    code = emulator_main(["flash", str(IMAGES / "boot_fixed.elf"), str(IMAGES / "bad_msp.elf"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["jump"] is None and "errFILE" in data["error"]


def test_enumeration_capture_is_a_usbmon_pcap_a_pcap_library_reads(tmp_path, capsys):
    pcap = tmp_path / "enum.pcap"
    assert emulator_main(["usb-info", str(IMAGES / "boot_fixed.elf"), "--usb-pcap", str(pcap)]) == 0
    capsys.readouterr()
    with pcap.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == 220  # LINKTYPE_USB_LINUX_MMAPPED
        packets = [buf for _, buf in reader]
    assert len(packets) >= 20
    # The first submission is GET_DESCRIPTOR(device): setup 80 06 00 01 at header offset 40.
    assert packets[0][8:9] == b"S" and packets[0][40:44] == bytes.fromhex("80060001")

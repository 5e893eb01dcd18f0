"""flash and check on a plain DFU 1.1, non-ST bootloader (boot_dfu11 on the STM32F103C8), the boot
triggers before and after the download, the leave modes, and run-time DFU_DETACH (issue 13)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from emulator.bootflow import checks
from emulator.bootflow.checks import check
from emulator.bootflow.scenario import flash_and_boot, open_dfu
from emulator.cli import main
from emulator.usb.target import EmulatedTarget
from hostside.dfu import DfuClient, DfuState, DfuTransportError
from hostside.selection import DfuSelector
from hostside.transport import DFU_PROTOCOL_RUNTIME, DeviceInfo
from tests.dfuse_device_double import DfuseDeviceDouble

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
DFU11 = str(IMAGES / "boot_dfu11.elf")
APP_BIN = str(IMAGES / "app_c8_2000.bin")
APP_ELF = str(IMAGES / "app_c8_2000.elf")
C8 = "STM32F103C8"
RUN = 300_000_000


def flash(app: str = APP_BIN, **kwargs):
    return flash_and_boot(DFU11, app, chip=C8, run_ns=RUN, **kwargs)


@pytest.fixture(scope="module")
def plain():
    return flash()


@pytest.fixture(scope="module")
def checked():
    return check(DFU11, APP_ELF, chip=C8, run_ns=RUN)


# -- flash -------------------------------------------------------------------------------------------
def test_plain_dfu_download_boots_the_application(plain):
    assert plain.ok and plain.protocol == "dfu"
    assert plain.app_uart == "app_c8 ok\r\ncrc FBF24E8F\r\ndone\r\n"


def test_a_bin_lands_where_the_bootloader_writes_it(plain):
    assert plain.landed_at == plain.app_address == 0x0800_2000


def test_a_device_that_cannot_upload_is_verified_from_the_flash_and_says_so(plain):
    assert plain.verify_method == "flash" and plain.verify == {"ok": True, "compared": 1556}
    assert any("bitCanUpload = 0" in n for n in plain.notes)


def test_the_flash_model_holds_exactly_the_bin_that_was_sent(plain):
    assert plain.flash_check["ok"] and plain.flash_check["compared"] == Path(APP_BIN).stat().st_size


def test_a_will_detach_device_that_resets_after_manifestation_needs_no_host_reset(plain):
    assert plain.left == "vanished"
    assert "manifest ok, reset" in plain.uart_after_leave


def test_the_jump_is_recorded_at_the_applications_reset_handler(plain):
    assert plain.jump is not None and plain.jump.address == 0x0800_2134 and plain.jump.msp == 0x2000_5000


def test_an_elf_carries_its_own_address_and_no_landing_guess_is_needed():
    o = flash(APP_ELF)
    assert o.ok and o.app_address == 0x0800_2000
    assert not any("landed" in n for n in o.notes)


def test_an_address_where_the_bootloader_does_not_write_fails_loudly_naming_bytes():
    o = flash(app_address=0x0800_4000)
    assert not o.ok
    c = o.flash_check
    assert not c["ok"] and c["first_difference"] == 0x0800_4000 and c["landed_at"] == 0x0800_2000
    assert c["differences"][0]["address"] == 0x0800_4000


def test_the_backup_register_magic_before_power_on_enters_dfu_and_the_download_still_boots():
    o = flash(bkp=[(1, 0x4F42)])
    uart = bytes(o.board.machine.uart_output[1]).decode()
    assert uart.startswith("bootsim dfu\r\nreason: bkp") and o.ok


def test_the_backup_register_magic_after_the_download_keeps_it_in_dfu_mode():
    o = flash(bkp_after=[(1, 0x4F42)])
    assert o.jump is None and "reason: bkp" in o.uart_after_leave


def test_a_button_held_through_the_reboot_keeps_it_in_dfu_mode():
    o = flash(pins=[("A", 0, True)])
    assert o.jump is None and "reason: button" in o.uart_after_leave


def test_releasing_the_button_after_the_download_lets_it_jump():
    o = flash(pins=[("A", 0, True)], pins_after=[("A", 0, False)])
    assert o.ok


def test_leave_none_on_a_dfuse_bootloader_sends_nothing_and_it_stays_in_dfu_mode():
    o = flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"), leave="none",
                       run_ns=RUN)
    assert o.download_ok and o.left == "none" and o.jump is None


def test_a_selector_for_another_device_is_bad_input_on_flash(capsys):
    assert main(["flash", DFU11, APP_BIN, "--chip", C8, "-d", "0483:df11"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "1209:0001" in err


@pytest.mark.parametrize("args", [["--leave", "later"], ["--pin-after", "PZ1=high"], ["--bkp-after", "DR1=x"],
                                  ["-a", "1"], ["--intf", "-1"]])
def test_bad_flow_options_are_one_line_and_exit_two(args, capsys):
    assert main(["flash", DFU11, APP_BIN, "--chip", C8, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_flash_json_names_the_protocol_interface_and_flash_check(capsys):
    assert main(["flash", DFU11, APP_BIN, "--chip", C8, "-d", "1209:0001", "-a", "bootsim DFU", "--json",
                 "--max-time", "300ms"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["protocol"] == "dfu" and data["dfu_interface"]["name"] == "bootsim DFU"
    assert data["flash_check"]["ok"] and data["verify_method"] == "flash" and data["landed_at"] == 0x08002000


# -- check -------------------------------------------------------------------------------------------
def test_check_on_the_plain_dfu_fixture_is_clean_and_reports_the_jump(checked):
    assert checked.clean
    (run,) = checked.runs.values()
    assert run["jumped"] and run["jump"]["symbol"] == "app:Reset_Handler"


def test_check_runs_a_plain_dfu_download_once(checked):
    assert list(checked.runs) == ["plain-dfu"]


def test_check_finds_the_bootloader_region_from_where_the_application_lives(checked):
    probe = next(n for n in checked.notes if n.startswith("bootloader-region probe"))
    assert "block 56: refused (errADDRESS" in probe and "0x08002000-0x0800FFFF" in probe


def test_check_says_it_cannot_read_out_a_device_without_upload(checked):
    assert any("bitCanUpload = 0" in n for n in checked.notes)


def test_check_describes_the_device_in_front_of_it(checked):
    assert checked.device["protocol"] == "dfu" and checked.device["functional"]["can_upload"] is False


def test_an_application_linked_for_another_address_is_named():
    report = check(DFU11, str(IMAGES / "app_small.elf"), chip=C8, run_ns=RUN)
    found = {f.id: f for f in report.findings}
    assert found["application-linked-for-another-address"].evidence == {
        "linked_at": "0x8008000", "bootloader_wrote_at": "0x8002000"}
    assert "flash-differs-from-image" in found


def test_no_jump_evidence_lists_the_pins_the_bootloader_read():
    report = check(DFU11, APP_ELF, chip=C8, run_ns=RUN, pins=[("A", 0, True)])
    no_jump = next(f for f in report.findings if f.id == "no-jump")
    assert "PA0 = high" in no_jump.evidence["pins_read_after_last_reset"]
    assert "reason: button" in no_jump.evidence["bootloader_printed"]


def test_a_transport_error_inside_the_region_probe_becomes_a_note(monkeypatch):
    def broken(self, *args, **kwargs):
        raise DfuTransportError("ABORT: pipe broke")
    monkeypatch.setattr(checks, "_probe_dfuse", broken)
    report = check(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"), erase_orders=("all-first",))
    assert any("probe stopped: DfuTransportError" in n for n in report.notes)


def test_check_cli_on_the_plain_dfu_fixture_exits_zero(capsys):
    assert main(["check", DFU11, APP_ELF, "--chip", C8, "--max-time", "300ms"]) == 0
    err = capsys.readouterr().err
    assert "jumped to 0x08002134 (app:Reset_Handler)" in err and "no findings" in err


# -- run-time mode: DFU_DETACH (DFU 1.1 §5.1) ------------------------------------------------------------
class RuntimeDouble(DfuseDeviceDouble):
    """The application's run-time DFU interface (protocol 1): it only takes DFU_DETACH."""

    def device_info(self) -> DeviceInfo:
        info = super().device_info()
        alts = tuple(replace(a, interface=2, name="app DFU", protocol=DFU_PROTOCOL_RUNTIME)
                     for a in info.alt_settings[:1])
        return replace(info, alt_settings=alts)


class FakeTarget:
    """What open_dfu needs of an EmulatedTarget, with device doubles for the two modes."""

    select = EmulatedTarget.select

    def __init__(self, runtime: DfuseDeviceDouble, dfu_mode: DfuseDeviceDouble) -> None:
        self.transport, self.dfu_mode = runtime, dfu_mode
        self.reattached: list[int] = []

    def reattach(self, *, detach_wait_ns: int = 0, attach_timeout_ns: int = 0) -> None:
        self.reattached.append(detach_wait_ns)
        self.transport = self.dfu_mode


@pytest.mark.parametrize("attributes, waited", [(0x0B, 255_000_000), (0x03, 0)])
def test_a_run_time_device_is_detached_into_dfu_mode(attributes, waited):
    runtime = RuntimeDouble(attributes=attributes, vid=0xCAFE, pid=0x400B)
    dfu_mode = DfuseDeviceDouble(dfuse=False, vid=0xCAFE, pid=0x400C, alt_names=["flash"])
    target = FakeTarget(runtime, dfu_mode)
    outcome = SimpleNamespace(notes=[])
    client = open_dfu(target, DfuSelector(alt="flash"), outcome)  # type: ignore[arg-type]
    assert [(r.request, r.value) for r in runtime.log] == [("DETACH", 255)]
    assert target.reattached == [waited]  # bitWillDetach: wait for the device's own detach; else reset
    assert client.transport is dfu_mode and client.alt_setting.name == "flash" and outcome.protocol == "dfu"


def test_a_manifestation_tolerant_device_returns_to_idle_after_manifestation():
    dev = DfuseDeviceDouble(dfuse=False, transfer_size=1024, attributes=0x07)
    client = DfuClient(dev)
    client.start()
    client.download_plain(bytes(range(256)) * 8, manifest=False)
    result = client.manifest(2)
    assert not result.vanished
    assert client.idle_after_manifest().state == DfuState.dfuIDLE


@pytest.mark.parametrize("args", [["--power-cut-sweep", "--leave", "none"], ["--transport", "fops", "--leave", "reset"],
                                  ["--transport", "fops", "-d", "1209:0001"]])
def test_options_that_do_not_apply_to_a_mode_are_refused_in_one_line(args, capsys):
    assert main(["flash", DFU11, APP_BIN, "--chip", C8, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not apply" in err


def test_a_transport_error_that_escapes_a_command_is_one_line_exit_one(monkeypatch, capsys):
    from emulator.cli import check as check_cli

    def broken(*args, **kwargs):
        raise DfuTransportError("ABORT: pipe broke")
    monkeypatch.setattr(check_cli, "check", broken)
    assert main(["check", DFU11, APP_ELF, "--chip", C8]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: USB/DFU: DfuTransportError: ABORT: pipe broke"

"""``python -m hostside`` end to end against the device double (injected transports)."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import pytest

from hostside import cli
from hostside.cli import DfuseOptions, main, parse_dfuse_options
from hostside.dfu import DfuState, DfuStatus
from hostside.files import (
    DfuSeFile,
    DfuSeTarget,
    FirmwareImage,
    ImageSegment,
    add_suffix,
    write_dfuse,
    write_hex,
)
from tests.dfuse_device_double import SEED_LAYOUT, DfuseDeviceDouble

APP = 0x08008000


def run(argv: list[str], *devices: DfuseDeviceDouble) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--no-progress", *argv], transports=lambda: list(devices), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def app_bin(tmp_path: Path) -> Path:
    p = tmp_path / "app.bin"
    p.write_bytes(bytes((i * 13 + 5) & 0xFF for i in range(5000)))
    return p


# -- -s parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0x08008000", DfuseOptions(address=0x08008000)),
        ("0x08008000:leave", DfuseOptions(address=0x08008000, leave=True)),
        (":mass-erase:force", DfuseOptions(mass_erase=True, force=True)),
        ("0x08000000:0x400", DfuseOptions(address=0x08000000, length=0x400)),
        ("0x08000000:1024:leave", DfuseOptions(address=0x08000000, length=1024, leave=True)),
        ("134250496", DfuseOptions(address=0x08008000)),
        ("010", DfuseOptions(address=8)),
        (":unprotect:force", DfuseOptions(unprotect=True, force=True)),
    ],
)
def test_dfuse_address_option_parses_like_dfu_util(text: str, expected: DfuseOptions) -> None:
    assert parse_dfuse_options(text) == expected


@pytest.mark.parametrize("text", ["0x0800G000", "0x08000000:bogus"])
def test_invalid_dfuse_option_is_a_usage_error(text: str) -> None:
    code, _, err = run(["-s", text, "-D", "x.bin"], DfuseDeviceDouble())
    assert code == 64 and "invalid dfuse" in one_error_line(err)


# -- listing --------------------------------------------------------------------------------------------
def test_list_prints_one_dfu_util_style_line_per_alt_setting() -> None:
    code, out, _ = run(["-l"], DfuseDeviceDouble())
    assert code == 0
    assert out == ('Found DFU: [0483:df11] ver=0200, devnum=9, cfg=1, intf=0, path="1-4.2", alt=0, '
                   'name="@Internal Flash  /0x08000000/16*002Ka,112*002Kg", serial="5CE4826C3236"\n')


def test_list_filters_by_vendor_and_product() -> None:
    code, out, _ = run(["-l", "-d", "1209:0001"], DfuseDeviceDouble())
    assert code == 0 and out == ""


# -- download ---------------------------------------------------------------------------------------------
def test_download_with_leave_writes_flash_and_exits_zero(app_bin: Path) -> None:
    dev = DfuseDeviceDouble()
    code, out, err = run(["-a", "0", "-s", "0x08008000:leave", "-D", str(app_bin)], dev)
    assert (code, err) == (0, "")
    assert dev.read_flash(APP, 5000) == app_bin.read_bytes()
    assert "Downloaded 5000 bytes to 0x08008000-0x08009387" in out
    assert "Left DFU mode" in out and dev.gone


def test_summary_reports_erase_busy_time(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(page_erase_ms=120)
    code, out, _ = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 0
    assert "Erased 3 pages: device busy 360.0 ms in all, longest 120.0 ms" in out


def test_verbose_prints_each_erase_with_its_busy_time(app_bin: Path) -> None:
    code, _, err = run(["-v", "-s", "0x08008000", "-D", str(app_bin)], DfuseDeviceDouble())
    assert code == 0
    assert "erase 0x08008800: device busy 50.0 ms (2 polls, 50 ms poll timeouts)" in err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_goes_to_stderr_on_a_terminal(app_bin: Path) -> None:
    out, err = io.StringIO(), FakeTerminal()
    code = main(["-s", "0x08008000", "-D", str(app_bin)], transports=lambda: [DfuseDeviceDouble()],
                stdout=out, stderr=err)
    assert code == 0 and "Download" in err.getvalue() and "Download" not in out.getvalue().split("Downloaded")[0]


def test_no_progress_bar_when_stderr_is_not_a_terminal(app_bin: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["-s", "0x08008000", "-D", str(app_bin)], transports=lambda: [DfuseDeviceDouble()],
                stdout=out, stderr=err)
    assert code == 0 and err.getvalue() == ""


def test_verify_after_download_succeeds(app_bin: Path) -> None:
    code, out, _ = run(["-s", "0x08008000", "--verify", "-D", str(app_bin)], DfuseDeviceDouble())
    assert code == 0 and "Verified 5000 bytes" in out


def test_interleaved_erase_on_the_seed_fails_verify_naming_the_first_address(tmp_path: Path) -> None:
    fw = tmp_path / "big.bin"
    fw.write_bytes(bytes(range(256)) * 80)  # 20 KiB: more than one 16 KiB fake sector
    dev = DfuseDeviceDouble(layout=SEED_LAYOUT, erase_wipes=(APP, 0x08080000), page_erase_ms=2)
    code, _, err = run(["-s", "0x08008000", "--verify", "--erase-order", "interleaved", "-D", str(fw)], dev)
    assert code == 74
    assert "first at 0x08008000" in one_error_line(err)


def test_dfuse_file_downloads_its_elements_without_an_address(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble()
    f = tmp_path / "app.dfu"
    f.write_bytes(write_dfuse(DfuSeFile([DfuSeTarget(0, "ST...", [ImageSegment(APP, b"\x11" * 300),
                                                                  ImageSegment(APP + 0x1000, b"\x22" * 10)])],
                                        0x0483, 0xDF11)))
    code, _, err = run(["-D", str(f)], dev)
    assert (code, err) == (0, "")
    assert dev.read_flash(APP, 300) == b"\x11" * 300 and dev.read_flash(APP + 0x1000, 10) == b"\x22" * 10


def test_hex_file_carries_its_own_address(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble()
    f = tmp_path / "app.hex"
    f.write_text(write_hex(FirmwareImage.from_segments([(APP + 0x800, b"\x5A" * 64)])))
    code, _, _ = run(["-D", str(f)], dev)
    assert code == 0 and dev.read_flash(APP + 0x800, 64) == b"\x5A" * 64


def test_mass_erase_then_download_skips_page_erases(app_bin: Path) -> None:
    dev = DfuseDeviceDouble()
    code, out, _ = run(["-s", "0x08008000:mass-erase:force", "-D", str(app_bin)], dev)
    assert code == 0 and "Mass erase" in out
    assert dev.erase_requests == [] and dev.log[2].data == b"\x41"


def test_plain_dfu_device_takes_a_raw_binary_without_address(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(dfuse=False, transfer_size=1024)
    code, out, _ = run(["-D", str(app_bin)], dev)
    assert code == 0 and "in 5 blocks of 1024" in out
    assert dev.read_flash(dev.flash_base, 5000) == app_bin.read_bytes()


# -- upload -------------------------------------------------------------------------------------------------
def test_upload_with_length_writes_a_raw_file(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble()
    dev.flash[0:0x400] = bytes(range(256)) * 4
    out_file = tmp_path / "boot.bin"
    code, out, _ = run(["-s", "0x08000000:0x400", "-U", str(out_file)], dev)
    assert code == 0 and out_file.read_bytes() == bytes(range(256)) * 4
    assert "Uploaded 1024 bytes from 0x08000000" in out


def test_upload_size_option_overrides_and_hex_extension_writes_intel_hex(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble()
    out_file = tmp_path / "boot.hex"
    code, _, _ = run(["-s", "0x08000000", "-Z", "64", "-U", str(out_file)], dev)
    assert code == 0 and out_file.read_text().startswith(":")


def test_upload_without_length_stops_at_the_end_of_the_segment_run(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble()
    code, out, _ = run(["-s", "0x0803F000", "-U", str(tmp_path / "tail.bin")], dev)
    assert code == 0 and "Uploaded 4096 bytes" in out


# -- errors: one line, the right code ---------------------------------------------------------------------------
def test_err_address_is_reported_by_status_name_and_state(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(error_range=(0x08008800, 0x08009000))
    code, _, err = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 74
    line = one_error_line(err)
    assert "errADDRESS" in line and "dfuERROR" in line and "0x08008800" in line


def test_address_in_read_only_segment_exits_64(app_bin: Path) -> None:
    code, _, err = run(["-s", "0x08000000", "-D", str(app_bin)], DfuseDeviceDouble())
    assert code == 64 and "read-only" in one_error_line(err)


def test_address_outside_every_segment_exits_64(app_bin: Path) -> None:
    code, _, err = run(["-s", "0x20000000", "-D", str(app_bin)], DfuseDeviceDouble())
    assert code == 64 and "outside every segment" in one_error_line(err)


def test_file_larger_than_the_target_exits_64(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (0x38000 + 1))
    code, _, err = run(["-s", "0x08008000", "-D", str(big)], DfuseDeviceDouble())
    assert code == 64 and "beyond the end" in one_error_line(err)


def test_force_skips_the_layout_checks(tmp_path: Path) -> None:
    f = tmp_path / "boot.bin"
    f.write_bytes(b"\x00" * 16)
    dev = DfuseDeviceDouble()
    code, _, _ = run(["-s", "0x08000000:force", "-D", str(f)], dev)
    assert code == 0 and dev.read_flash(0x08000000, 16) == b"\x00" * 16


def test_unparsable_layout_exits_74(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(layout="@Internal Flash  /0x08000000/sixteen pages")
    code, _, err = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 74 and "cannot parse the memory layout" in one_error_line(err)


def test_stall_exits_74_naming_the_request(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(stall_when=lambda r: r.command == "ERASE 0x08008800")
    code, _, err = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 74 and "stalled ERASE 0x08008800" in one_error_line(err)


def test_seed_erase_beyond_the_transfer_timeout_exits_74(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(layout=SEED_LAYOUT, erase_wipes=(APP, 0x08080000), page_erase_ms=40)
    code, _, err = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 74 and "timed out" in one_error_line(err)


def test_unexpected_state_exits_76(app_bin: Path) -> None:
    dev = DfuseDeviceDouble()
    dev.state = DfuState.appIDLE
    code, _, err = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 76 and "run-time mode" in one_error_line(err)


def test_device_error_at_start_is_cleared_and_the_download_succeeds(app_bin: Path) -> None:
    dev = DfuseDeviceDouble()
    dev.state, dev.status = DfuState.dfuERROR, DfuStatus.errVENDOR
    code, _, _ = run(["-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 0


def test_no_device_exits_74(app_bin: Path) -> None:
    code, _, err = run(["-s", "0x08008000", "-D", str(app_bin)])
    assert code == 74 and "No DFU capable USB device" in one_error_line(err)


def test_two_devices_without_a_filter_exit_74(app_bin: Path) -> None:
    code, _, err = run(["-D", str(app_bin)], DfuseDeviceDouble(), DfuseDeviceDouble(serial="X"))
    assert code == 74 and "more than one" in one_error_line(err)


def test_serial_option_picks_one_of_two_devices(app_bin: Path) -> None:
    b = DfuseDeviceDouble(serial="B")
    code, _, _ = run(["-S", "B", "-s", "0x08008000", "-D", str(app_bin)], DfuseDeviceDouble(serial="A"), b)
    assert code == 0 and b.read_flash(APP, 4) == app_bin.read_bytes()[:4]


def test_raw_binary_without_address_on_dfuse_device_exits_64(app_bin: Path) -> None:
    code, _, err = run(["-D", str(app_bin)], DfuseDeviceDouble())
    assert code == 64 and "needs an address" in one_error_line(err)


def test_damaged_dfuse_file_exits_65(tmp_path: Path) -> None:
    f = tmp_path / "bad.dfu"
    raw = bytearray(write_dfuse(DfuSeFile([DfuSeTarget(0, "", [ImageSegment(APP, b"\x01" * 40)])])))
    raw[300] ^= 0xFF
    f.write_bytes(bytes(raw))
    code, _, err = run(["-D", str(f)], DfuseDeviceDouble())
    assert code == 65 and "CRC" in one_error_line(err)


def test_suffix_for_another_device_exits_64(tmp_path: Path) -> None:
    f = tmp_path / "other.bin"
    f.write_bytes(add_suffix(b"\x01" * 32, vid=0x1209, pid=0x0001))
    code, _, err = run(["-s", "0x08008000", "-D", str(f)], DfuseDeviceDouble())
    assert code == 64 and "1209:0001" in one_error_line(err)


def test_missing_file_exits_66(tmp_path: Path) -> None:
    code, _, err = run(["-s", "0x08008000", "-D", str(tmp_path / "nope.bin")], DfuseDeviceDouble())
    assert code == 66 and "nope.bin" in one_error_line(err)


def test_mass_erase_without_force_exits_64() -> None:
    code, _, err = run(["-s", ":mass-erase"], DfuseDeviceDouble())
    assert code == 64 and ":force" in one_error_line(err)


def test_unknown_option_exits_64_without_emulation() -> None:
    code, _, err = run(["--chip", "rc", "-l"], DfuseDeviceDouble())
    assert code == 64 and "--chip" in one_error_line(err)


def test_internal_failure_is_one_line_without_traceback() -> None:
    def broken() -> list[DfuseDeviceDouble]:
        raise RuntimeError("boom")

    err = io.StringIO()
    code = main(["-l"], transports=broken, stdout=io.StringIO(), stderr=err)
    assert code == 70 and "RuntimeError: boom" in one_error_line(err.getvalue())


# -- emulator hook ---------------------------------------------------------------------------------------------
def test_emulate_without_the_emulator_module_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "emulator.usb.target", None)
    code, _, err = run(["--emulate", "boot.elf", "--chip", "rc", "-l"])
    assert code == 69 and one_error_line(err) == "error: emulation is not available in this installation"


def test_emulate_opens_the_target_with_pass_through_options_and_closes_it(
        monkeypatch: pytest.MonkeyPatch, app_bin: Path) -> None:
    calls: dict[str, object] = {}
    dev = DfuseDeviceDouble()

    class Target:
        device = object()

        def wait_ms(self, ms: int) -> None: ...

        def now_ns(self) -> int:
            return 0

        def close(self) -> None:
            calls["closed"] = True

    def open_emulated(boot_image: str, options: list[str]) -> Target:
        calls["args"] = (boot_image, options)
        return Target()

    def wrap(device: object, wait_ms: object = None, now_ns: object = None) -> DfuseDeviceDouble:
        calls["wrapped"] = device is Target.device and wait_ms is not None and now_ns is not None
        return dev

    module = types.ModuleType("emulator.usb.target")
    module.open_emulated = open_emulated  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "emulator.usb.target", module)
    monkeypatch.setattr(cli, "PyUsbTransport", wrap)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--no-progress", "--emulate", "boot.elf", "--chip", "rc", "--boot1=0", "-s", "0x08008000:leave",
                 "-D", str(app_bin)], stdout=out, stderr=err)
    assert (code, err.getvalue()) == (0, "")
    assert calls == {"args": ("boot.elf", ["--chip", "rc", "--boot1=0"]), "wrapped": True, "closed": True}
    assert dev.read_flash(APP, 5000) == app_bin.read_bytes()


def test_emulator_start_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def open_emulated(boot_image: str, options: list[str]) -> None:
        raise FileNotFoundError(boot_image)

    module = types.ModuleType("emulator.usb.target")
    module.open_emulated = open_emulated  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "emulator.usb.target", module)
    code, _, err = run(["--emulate", "missing.elf", "-l"])
    assert code == 66 and "cannot start the emulator" in one_error_line(err)


# -- detach and reset --------------------------------------------------------------------------------------------
def test_detach_sends_dfu_detach_with_the_timeout() -> None:
    dev = DfuseDeviceDouble()
    code, out, _ = run(["-e"], dev)
    assert code == 0 and "Sent DFU_DETACH" in out
    assert [(r.request, r.value) for r in dev.log] == [("DETACH", 1000)]


def test_reset_option_resets_the_device_after_download(app_bin: Path) -> None:
    dev = DfuseDeviceDouble()
    code, out, _ = run(["-R", "-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 0 and dev.commands()[-1] == "RESET" and "Reset the device" in out


def test_plain_dfu_upload_reads_until_the_short_block(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble(dfuse=False, transfer_size=1024, flash_size=2500)
    dev.flash[:] = bytes(range(250)) * 10
    f = tmp_path / "all.bin"
    code, _, _ = run(["-U", str(f)], dev)
    assert code == 0 and f.read_bytes() == bytes(dev.flash)


# -- interface selection ---------------------------------------------------------------------------------------
def test_intf_option_selects_the_dfu_interface(app_bin: Path) -> None:
    dev = DfuseDeviceDouble()
    code, _, _ = run(["--intf", "0", "-s", "0x08008000", "-D", str(app_bin)], dev)
    assert code == 0 and dev.read_flash(APP, 4) == app_bin.read_bytes()[:4]


def test_intf_the_device_lacks_is_one_usage_line_naming_what_it_has(app_bin: Path) -> None:
    code, _, err = run(["-i", "3", "-s", "0x08008000", "-D", str(app_bin)], DfuseDeviceDouble())
    assert code == 64 and "--intf 3" in one_error_line(err) and "intf 0 alt 0" in err


def test_bad_intf_value_is_a_usage_error() -> None:
    code, _, err = run(["--intf", "x", "-l"], DfuseDeviceDouble())
    assert code == 64 and "invalid interface number" in one_error_line(err)


# -- bitCanUpload = 0 --------------------------------------------------------------------------------------------
def test_upload_from_a_device_that_cannot_upload_says_why(tmp_path: Path) -> None:
    dev = DfuseDeviceDouble(dfuse=False, attributes=0x09)  # download | will detach, no upload
    code, _, err = run(["-U", str(tmp_path / "x.bin")], dev)
    assert code == 64 and "bitCanUpload = 0" in one_error_line(err)
    assert [r.request for r in dev.log if r.request == "UPLOAD"] == []


def test_verify_on_a_device_that_cannot_upload_says_why(app_bin: Path) -> None:
    dev = DfuseDeviceDouble(dfuse=False, attributes=0x09)
    code, _, err = run(["--verify", "-D", str(app_bin)], dev)
    assert code == 64 and "cannot upload (bitCanUpload = 0)" in one_error_line(err)

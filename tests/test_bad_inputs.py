"""The bad-input catalogue: every command, fed what a new user (or a careless script) feeds it.

Each case asserts the exit code, exactly one line on stderr (``error: ...``, printable), no
traceback, and that a saved board state file (``--flash``) is byte-identical afterwards.  The
inputs are chosen to fail fast: before an emulation, or right after a boot and an enumeration.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator.cli import main as emulator_main
from hostside.cli import main as hostside_main
from hostside.files import DfuSeFile, DfuSeTarget, ImageSegment, write_dfuse

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"
LOADER_DATA = ROOT / "tests" / "data" / "loader"


@dataclass(frozen=True)
class Case:
    name: str
    tool: str  # "emulator" or "hostside"
    args: tuple[str, ...]
    code: int


def emu(name: str, code: int, *args: str) -> Case:
    return Case(name, "emulator", args, code)


def dfu(name: str, code: int, *args: str) -> Case:
    return Case(name, "hostside", args, code)


BOOT, HELLO, APP = "{F}/boot_fixed.elf", "{F}/hello_base.elf", "{F}/app_small.bin"
SEED, DFU11 = "{F}/boot_seed.elf", "{F}/boot_dfu11.elf"
FLASH_STATE = ("--flash", "{state}")
EMULATE = ("--emulate", BOOT, "--flash", "{state}")
NO_DIR = "{tmp}/no-such-dir/out"

CASES = [
    # -- no command, unknown commands and options ------------------------------------------------------
    emu("no-command", 2),
    emu("unknown-command", 2, "frobnicate"),
    emu("unknown-option", 2, "run", HELLO, "--frobnicate"),
    # -- run: missing, empty, corrupt and foreign images ---------------------------------------------------
    emu("run-missing-image", 2, "run", "{tmp}/nope.elf", *FLASH_STATE),
    emu("run-empty-image", 2, "run", "{tmp}/empty.bin", *FLASH_STATE),
    emu("run-directory-as-image", 2, "run", "{tmp}", *FLASH_STATE),
    emu("run-corrupt-elf", 2, "run", "{tmp}/corrupt.elf", *FLASH_STATE),
    emu("run-x86-64-elf", 2, "run", "{x86}", *FLASH_STATE),
    emu("run-big-endian-elf", 2, "run", "{armbe}", *FLASH_STATE),
    emu("run-hex-bad-checksum", 2, "run", "{tmp}/bad_checksum.hex", *FLASH_STATE),
    emu("run-hex-without-eof-record", 2, "run", "{tmp}/no_eof.hex", *FLASH_STATE),
    emu("run-hex-non-ascii", 2, "run", "{tmp}/non_ascii.hex", *FLASH_STATE),
    emu("run-image-larger-than-flash", 2, "run", "{tmp}/big.bin", *FLASH_STATE),
    emu("run-base-not-word-aligned", 2, "run", "{F}/hello_base.bin", "--base", "0x08000001", *FLASH_STATE),
    emu("run-base-in-sram", 2, "run", "{F}/hello_base.bin", "--base", "0x20000000", *FLASH_STATE),
    emu("run-app-overlapping", 2, "run", HELLO, "--app", "{F}/bad_base.bin@0x08000000", *FLASH_STATE),
    emu("run-app-missing", 2, "run", HELLO, "--app", "{tmp}/nope.bin", *FLASH_STATE),
    emu("run-app-bad-address", 2, "run", HELLO, "--app", "{F}/app_small.bin@zz", *FLASH_STATE),
    # -- run: durations, budgets, pins, chips, backup registers ---------------------------------------------
    emu("run-duration-word", 2, "run", HELLO, "--max-time", "soon"),
    emu("run-duration-negative", 2, "run", HELLO, "--max-time", "-1s"),
    emu("run-duration-zero", 2, "run", HELLO, "--max-time", "0"),
    emu("run-instructions-word", 2, "run", HELLO, "--max-instructions", "lots"),
    emu("run-boot1-maybe", 2, "run", HELLO, "--boot1", "maybe"),
    emu("run-boot0-high", 2, "run", HELLO, "--boot0", "high", *FLASH_STATE),
    emu("run-unknown-chip", 2, "run", HELLO, "--chip", "stm32f407", *FLASH_STATE),
    emu("run-pin-no-such-port", 2, "run", HELLO, "--pin", "PZ0=high"),
    emu("run-pin-16", 2, "run", HELLO, "--pin", "PA16=high"),
    emu("run-pin-level-maybe", 2, "run", HELLO, "--pin", "PA0=maybe"),
    emu("run-bkp-dr43", 2, "run", HELLO, "--bkp", "DR43=1"),
    emu("run-bkp-17-bits", 2, "run", HELLO, "--bkp", "DR1=0x10000"),
    emu("run-bkp-dr11-on-medium-density", 2, "run", DFU11, "--chip", "STM32F103C8", "--bkp", "DR11=1"),
    emu("run-flash-timing-unknown", 2, "run", HELLO, "--flash-timing", "slow"),
    # -- run: state files and outputs ----------------------------------------------------------------------
    emu("run-state-corrupt", 2, "run", HELLO, "--flash", "{corrupt_state}"),
    emu("run-state-for-another-chip", 2, "run", DFU11, "--chip", "STM32F103C8", *FLASH_STATE),
    emu("run-state-in-missing-directory", 2, "run", HELLO, "--flash", NO_DIR),
    emu("run-state-is-a-directory", 2, "run", HELLO, "--flash", "{tmp}"),
    emu("run-journal-in-missing-directory", 2, "run", HELLO, "--flash-journal", NO_DIR, *FLASH_STATE),
    emu("run-journal-is-a-directory", 2, "run", HELLO, "--flash-journal", "{tmp}", *FLASH_STATE),
    emu("run-journal-under-a-file", 2, "run", HELLO, "--flash-journal", "{tmp}/empty.bin/j.json", *FLASH_STATE),
    emu("run-report-in-missing-directory", 2, "run", HELLO, "--report", NO_DIR, *FLASH_STATE),
    emu("run-uart1-in-missing-directory", 2, "run", HELLO, "--uart1", NO_DIR, *FLASH_STATE),
    emu("run-uart1-rx-missing", 2, "run", HELLO, "--uart1-rx", "{tmp}/nope.txt", *FLASH_STATE),
    # -- flash: applications -----------------------------------------------------------------------------
    emu("flash-missing-bootloader", 2, "flash", "{tmp}/nope.elf", APP, *FLASH_STATE),
    emu("flash-missing-app", 2, "flash", BOOT, "{tmp}/nope.bin", *FLASH_STATE),
    emu("flash-empty-app", 2, "flash", BOOT, "{tmp}/empty.bin", *FLASH_STATE),
    emu("flash-x86-64-elf-app", 2, "flash", BOOT, "{x86}", *FLASH_STATE),
    emu("flash-corrupt-elf-app", 2, "flash", BOOT, "{tmp}/corrupt.elf", *FLASH_STATE),
    emu("flash-hex-bad-checksum-app", 2, "flash", BOOT, "{tmp}/bad_checksum.hex", *FLASH_STATE),
    emu("flash-dfu-file-bad-crc", 2, "flash", BOOT, "{tmp}/bad_crc.dfu", *FLASH_STATE),
    emu("flash-app-larger-than-flash", 2, "flash", BOOT, "{tmp}/big.bin", *FLASH_STATE),
    emu("flash-app-past-the-end-of-flash", 2, "flash", BOOT, "{tmp}/big250.bin", *FLASH_STATE),
    emu("flash-address-outside-flash", 2, "flash", BOOT, APP, "--address", "0x09000000", *FLASH_STATE),
    emu("flash-address-over-bootloader", 2, "flash", BOOT, APP, "--address", "0x08000000", *FLASH_STATE),
    emu("flash-address-in-read-only-segment", 2, "flash", BOOT, APP, "--address", "0x08002000", *FLASH_STATE),
    emu("flash-address-not-word-aligned", 2, "flash", BOOT, APP, "--address", "0x08008002", *FLASH_STATE),
    emu("flash-address-word", 2, "flash", BOOT, APP, "--address", "app"),
    # -- flash: options ---------------------------------------------------------------------------------------
    emu("flash-erase-order-unknown", 2, "flash", BOOT, APP, "--erase-order", "sideways"),
    emu("flash-leave-unknown", 2, "flash", BOOT, APP, "--leave", "maybe"),
    emu("flash-device-ids-malformed", 2, "flash", BOOT, APP, "-d", "zz:yy"),
    emu("flash-device-not-matching", 2, "flash", BOOT, APP, "-d", "1234:5678", *FLASH_STATE),
    emu("flash-alt-not-present", 2, "flash", BOOT, APP, "-a", "7", *FLASH_STATE),
    emu("flash-interface-out-of-range", 2, "flash", BOOT, APP, "--intf", "300"),
    emu("flash-pin-after-no-such-port", 2, "flash", BOOT, APP, "--pin-after", "PZ1=high"),
    emu("flash-state-in-missing-directory", 2, "flash", BOOT, APP, "--flash", NO_DIR),
    emu("flash-report-in-missing-directory", 2, "flash", BOOT, APP, "--report", NO_DIR, *FLASH_STATE),
    emu("flash-fops-not-a-table", 2, "flash", SEED, APP, "--transport", "fops", "--fops", "0x20000000",
        *FLASH_STATE),
    emu("flash-fops-unaligned", 2, "flash", SEED, APP, "--transport", "fops", "--fops", "0x08000002"),
    emu("flash-fops-with-alt", 2, "flash", SEED, APP, "--transport", "fops", "-a", "0"),
    emu("sweep-points-malformed", 2, "flash", BOOT, APP, "--power-cut-sweep", "--sweep-points", "5-x"),
    emu("sweep-with-leave", 2, "flash", BOOT, APP, "--power-cut-sweep", "--leave", "none"),
    emu("sweep-address-outside-flash", 2, "flash", BOOT, APP, "--power-cut-sweep", "--address", "0x09000000"),
    # -- check -----------------------------------------------------------------------------------------------
    emu("check-missing-bootloader", 2, "check", "{tmp}/nope.elf", APP),
    emu("check-foreign-app", 2, "check", BOOT, "{x86}"),
    emu("check-app-larger-than-flash", 2, "check", BOOT, "{tmp}/big.bin"),
    emu("check-address-outside-flash", 2, "check", BOOT, APP, "--address", "0x09000000"),
    emu("check-address-over-bootloader", 2, "check", BOOT, APP, "--address", "0x08000000"),
    emu("check-erase-order-unknown", 2, "check", BOOT, APP, "--erase-order", "sideways"),
    emu("check-unknown-chip", 2, "check", BOOT, APP, "--chip", "f407"),
    emu("check-duration-zero", 2, "check", BOOT, APP, "--max-time", "0"),
    emu("check-report-in-missing-directory", 2, "check", BOOT, APP, "--report", NO_DIR),
    # -- serve ---------------------------------------------------------------------------------------------
    emu("serve-port-out-of-range", 2, "serve", BOOT, "--usbip", "--port", "70000", *FLASH_STATE),
    emu("serve-port-negative", 2, "serve", BOOT, "--usbip", "--port", "-1"),
    emu("serve-port-in-use", 2, "serve", BOOT, "--usbip", "--port", "{busy_port}", *FLASH_STATE),
    emu("serve-address-not-local", 2, "serve", BOOT, "--usbip", "--host", "192.0.2.1", *FLASH_STATE),
    emu("serve-poll-scale-negative", 2, "serve", BOOT, "--poll-scale", "-1", "--", "true"),
    emu("serve-poll-scale-nan", 2, "serve", BOOT, "--poll-scale", "nan", "--", "true"),
    emu("serve-usbip-with-command", 2, "serve", BOOT, "--usbip", *FLASH_STATE, "--", "dfu-util", "-l"),
    emu("serve-no-command", 2, "serve", BOOT, *FLASH_STATE),
    emu("serve-transfer-timeout-zero", 2, "serve", BOOT, "--transfer-timeout", "0", "--", "true"),
    emu("serve-pcap-in-missing-directory", 2, "serve", BOOT, "--usb-pcap", NO_DIR, *FLASH_STATE, "--", "true"),
    emu("serve-state-in-missing-directory", 2, "serve", BOOT, "--flash", NO_DIR, "--", "true"),
    # -- usb-info ------------------------------------------------------------------------------------------
    emu("usb-info-pcap-in-missing-directory", 2, "usb-info", BOOT, "--usb-pcap", NO_DIR, *FLASH_STATE),
    emu("usb-info-missing-image", 2, "usb-info", "{tmp}/nope.elf", *FLASH_STATE),
    emu("usb-info-attach-timeout-zero", 2, "usb-info", BOOT, "--attach-timeout", "0"),
    emu("usb-info-alt-not-present", 2, "usb-info", BOOT, "-a", "7", *FLASH_STATE),
    emu("usb-info-never-attaches", 1, "usb-info", HELLO, "--attach-timeout", "20ms", *FLASH_STATE),
    # -- hostside ------------------------------------------------------------------------------------------
    dfu("hostside-nothing-to-do", 64, *EMULATE),
    dfu("hostside-unknown-option", 64, "--frobnicate"),
    dfu("hostside-dfuse-address-word", 64, *EMULATE, "-s", "zz", "-D", APP),
    dfu("hostside-dfuse-modifier-unknown", 64, *EMULATE, "-s", "0x08008000:bogus", "-D", APP),
    dfu("hostside-device-ids-malformed", 64, *EMULATE, "-d", "zz", "-l"),
    dfu("hostside-interface-out-of-range", 64, *EMULATE, "-i", "300", "-l"),
    dfu("hostside-erase-order-unknown", 64, *EMULATE, "--erase-order", "sideways", "-l"),
    dfu("hostside-transfer-size-zero", 64, *EMULATE, "-t", "0", "-s", "0x08008000", "-D", APP),
    dfu("hostside-transfer-size-above-wtransfersize", 64, *EMULATE, "-t", "3000", "-s", "0x08008000",
        "-D", APP),
    dfu("hostside-transfer-size-huge", 64, *EMULATE, "-t", "100000", "-s", "0x08008000", "-D", APP),
    dfu("hostside-download-missing-file", 66, *EMULATE, "-s", "0x08008000", "-D", "{tmp}/nope.bin"),
    dfu("hostside-download-bad-crc-dfu", 65, *EMULATE, "-D", "{tmp}/bad_crc.dfu"),
    dfu("hostside-raw-binary-without-address", 64, *EMULATE, "-D", APP),
    dfu("hostside-address-outside-every-segment", 64, *EMULATE, "-s", "0x09000000", "-D", APP),
    dfu("hostside-address-in-read-only-segment", 64, *EMULATE, "-s", "0x08000000", "-D", APP),
    dfu("hostside-mass-erase-without-force", 64, *EMULATE, "-s", ":mass-erase"),
    dfu("hostside-upload-into-missing-directory", 73, *EMULATE, "-s", "0x08008000:16", "-U", NO_DIR),
    dfu("hostside-upload-into-a-directory", 73, *EMULATE, "-s", "0x08008000:16", "-U", "{tmp}"),
    dfu("hostside-emulate-missing-image", 66, "--emulate", "{tmp}/nope.elf", "--flash", "{state}", "-l"),
    dfu("hostside-emulate-foreign-image", 65, "--emulate", "{x86}", "--flash", "{state}", "-l"),
    dfu("hostside-emulate-unknown-chip", 64, *EMULATE, "--chip", "f407", "-l"),
    dfu("hostside-emulate-unknown-option", 64, *EMULATE, "--frobnicate", "-l"),
    dfu("hostside-emulate-pcap-in-missing-directory", 73, *EMULATE, "--usb-pcap", NO_DIR, "-l"),
    dfu("hostside-emulate-state-in-missing-directory", 73, "--emulate", BOOT, "--flash", NO_DIR, "-l"),
    dfu("hostside-emulate-state-corrupt", 65, "--emulate", BOOT, "--flash", "{corrupt_state}", "-l"),
    dfu("hostside-emulate-no-such-device", 74, *EMULATE, "-d", "1234:5678", "-s", "0x08008000", "-D", APP),
]


def test_the_catalogue_covers_every_command_with_at_least_sixty_inputs() -> None:
    commands = {c.args[0] if c.tool == "emulator" and c.args else c.tool for c in CASES}
    assert {"run", "flash", "check", "serve", "usb-info", "hostside"} <= commands
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


# -- the inputs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def saved_state(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A board state file as a run saves it: boot_fixed and app_small in an STM32F103RC's flash."""
    path = tmp_path_factory.mktemp("state") / "board.nv"
    assert emulator_main(["run", str(IMAGES / "boot_fixed.elf"), "--app", f"{IMAGES / 'app_small.bin'}@0x08008000",
                          "--flash", str(path), "--max-time", "1ms"]) == 0
    return path.read_bytes()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def make_inputs(tmp: Path) -> None:
    (tmp / "empty.bin").write_bytes(b"")
    (tmp / "corrupt.elf").write_bytes(b"\x7fELF" + b"\x01" * 20)
    hex_lines = (IMAGES / "hello_app.hex").read_text().splitlines()
    first = hex_lines[1] if hex_lines[0][7:9] == "04" else hex_lines[0]
    broken = first[:-2] + ("00" if first[-2:] != "00" else "01")
    (tmp / "bad_checksum.hex").write_text("\n".join(broken if line == first else line for line in hex_lines) + "\n")
    (tmp / "no_eof.hex").write_text("\n".join(hex_lines[:-1]) + "\n")
    (tmp / "non_ascii.hex").write_bytes(b":10000000\xff\xfe" + b"0" * 30 + b"\n:00000001FF\n")
    (tmp / "big.bin").write_bytes(bytes(300 * 1024))
    (tmp / "big250.bin").write_bytes(bytes(250_000))
    dfu = bytearray(write_dfuse(DfuSeFile([DfuSeTarget(0, "app", [ImageSegment(0x08008000, b"\x01" * 64)])])))
    dfu[20] ^= 0xFF  # inside the element: the suffix CRC no longer matches
    (tmp / "bad_crc.dfu").write_bytes(bytes(dfu))
    (tmp / "corrupt.nv").write_bytes(b"not a state file at all")


def expand(args: tuple[str, ...], tmp: Path, port: int) -> list[str]:
    values = {"F": str(IMAGES), "tmp": str(tmp), "state": str(tmp / "board.nv"), "x86": str(LOADER_DATA / "x86_64.elf"),
              "armbe": str(LOADER_DATA / "armbe.elf"), "corrupt_state": str(tmp / "corrupt.nv"),
              "busy_port": str(port)}
    return [a.format(**values) for a in args]


def assert_one_clean_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert lines[0].isprintable(), repr(lines[0])
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code_and_leaves_the_state_file_alone(
        case: Case, tmp_path: Path, saved_state: bytes, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    make_inputs(tmp_path)
    state = tmp_path / "board.nv"
    state.write_bytes(saved_state)
    corrupt = (tmp_path / "corrupt.nv").read_bytes()
    argv = expand(case.args, tmp_path, busy_port)
    if case.tool == "emulator":
        code = emulator_main(argv)
        captured = capsys.readouterr()
        err = captured.err
    else:
        out, errs = io.StringIO(), io.StringIO()
        code = hostside_main(["--no-progress", *argv], stdout=out, stderr=errs)
        err = errs.getvalue()
    assert_one_clean_line(err)
    assert code == case.code, err
    assert state.read_bytes() == saved_state
    assert (tmp_path / "corrupt.nv").read_bytes() == corrupt
    assert not (tmp_path / "no-such-dir").exists()


# -- output into a pipe whose reader went away ---------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["flash", "{F}/hello_base.elf", "{F}/app_small.bin"],
    ["usb-info", "{F}/hello_base.elf"],
    ["serve", "{F}/hello_base.elf", "--poll-scale", "0", "--", sys.executable, "-c", "pass"],
], ids=["flash", "usb-info", "serve"])
def test_firmware_that_never_attaches_to_usb_fails_the_flow_with_1_not_bad_input(
        command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # The image is a good one; it just never connects to USB: that is the firmware's failure (exit 1),
    # not bad input (exit 2).
    code = emulator_main([arg.replace("{F}", str(IMAGES)) for arg in command])
    line = assert_one_clean_line(capsys.readouterr().err)
    assert (code, "never attached to USB" in line) == (1, True), line


def run_with_stdout_closed(tool: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The reader of stdout has gone before the command writes anything (``| head -n0``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", tool, *args], stdout=write, stderr=subprocess.PIPE,
                              cwd="/", env=env, check=False)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [
    ("emulator", "run", str(IMAGES / "hello_base.elf"), "--json"),
    ("emulator", "run", str(IMAGES / "hello_base.elf")),
    ("emulator", "usb-info", str(IMAGES / "boot_fixed.elf")),
    ("emulator", "check", str(IMAGES / "boot_dfu11.elf"), str(IMAGES / "app_c8_2000.bin"), "--chip", "STM32F103C8",
     "--json"),
    ("hostside", "--emulate", str(IMAGES / "boot_fixed.elf"), "-l"),
], ids=["run-json", "run-uart", "usb-info", "check-json", "hostside-list"])
def test_output_into_a_closed_pipe_stops_quietly_with_141(args: tuple[str, ...]) -> None:
    proc = run_with_stdout_closed(*args)
    assert proc.returncode == 141, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr
    assert b"error" not in proc.stderr


def test_output_piped_into_head_ends_without_a_traceback() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(f"'{sys.executable}' -m emulator run '{IMAGES / 'hello_base.elf'}' --json | head -n1",
                          shell=True, capture_output=True, cwd="/", env=env, check=False)
    assert proc.stdout == b"{\n"
    assert proc.stderr == b""


# -- malformed USB traffic through the pyusb backend -----------------------------------------------------------
SET_ADDRESS_0800 = bytes([0x21]) + (0x0800_0000).to_bytes(4, "little")  # DfuSe: point at the bootloader
ERASE_0800 = bytes([0x41]) + (0x0800_0000).to_bytes(4, "little")
USB_CASES = {
    "dnload-to-a-missing-interface": [(0x21, 1, 2, 5, b"\x00" * 16)],
    "upload-past-the-end-of-the-address-space": [(0xA1, 2, 0xFFFF, 0, 2048)],
    "getstatus-host-to-device": [(0x21, 3, 0, 0, b"\x00" * 6)],
    "detach-in-dfu-mode": [(0x21, 0, 1000, 0, b"")],
    "unknown-descriptor-type": [(0x80, 6, 0x7700, 0, 255)],
    "string-descriptor-past-the-last": [(0x80, 6, 0x03FE, 0x0409, 255)],
    "set-interface-to-a-missing-alt": [(0x01, 11, 9, 0, b"")],
    "vendor-request": [(0xC0, 0x42, 0, 0, 64)],
    "dnload-larger-than-wtransfersize": [(0x21, 1, 2, 0, b"\x00" * 4096)],
    "write-into-the-bootloader": [(0x21, 1, 0, 0, SET_ADDRESS_0800), (0xA1, 3, 0, 0, 6), (0xA1, 3, 0, 0, 6),
                                  (0x21, 1, 2, 0, b"\x00" * 64), (0xA1, 3, 0, 0, 6), (0xA1, 3, 0, 0, 6)],
    "erase-the-bootloader": [(0x21, 1, 0, 0, ERASE_0800), (0xA1, 3, 0, 0, 6), (0xA1, 3, 0, 0, 6)],
}


@pytest.mark.parametrize("name", sorted(USB_CASES))
def test_malformed_usb_traffic_through_pyusb_is_a_usb_error_and_leaves_the_bootloader_alone(name: str) -> None:
    import usb.core

    from emulator.usb.target import open_emulated

    target = open_emulated(str(IMAGES / "boot_fixed.elf"))
    m = target.board.machine
    boot = target.board.layout.images[0]
    before = m.read_flash(boot.start, boot.end - boot.start)
    refused = 0
    try:
        for bm, req, value, index, data in USB_CASES[name]:
            try:
                answer = target.device.ctrl_transfer(bm, req, value, index, data, timeout=1000)
            except usb.core.USBError:
                refused += 1
            else:
                if req == 3 and len(answer) == 6 and answer[4] == 10:  # GETSTATUS: dfuERROR
                    refused += 1
        status = target.device.ctrl_transfer(0xA1, 3, 0, 0, 6)  # the device still answers
    finally:
        target.close()
    assert refused >= 1
    assert len(status) == 6
    assert m.read_flash(boot.start, boot.end - boot.start) == before

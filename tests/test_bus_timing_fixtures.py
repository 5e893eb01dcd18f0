"""Two bootloaders shaped like real USB drivers hold the bus timing (docs/USB_BUS.md).

boot_hal_rearm re-reads EP0R after its data-OUT callback and re-arms reception
if it is not VALID (ST's HAL PCD driver); boot_usblib_abort arms the status
stage during data stages and treats a packet in the other direction as the end
of the transfer (ST's usb_lib).  Both are correct firmware: on the timed bus
they download byte-exact and boot.  On the bus without time (packets land
between two instructions) they fail as the real stacks did: the regression
tests below keep that failure visible, so the timing cannot silently go away.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.bootflow.scenario import flash_and_boot
from emulator.cli import main as emulator_main
from emulator.core.session import BoardOptions, build_board
from emulator.usb.device_server import serve_command
from emulator.usb.target import attach
from hostside.dfu import DfuClient, DfuStall
from hostside.dfuse_layout import parse_layout
from hostside.files import load_file
from hostside.transport import PyUsbTransport

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
FIXTURES = ("boot_hal_rearm", "boot_usblib_abort")
APP_ADDRESS = 0x0800_8000


def _flash_bytes(board, address: int, length: int) -> bytes:  # noqa: ANN001
    return bytes(board.machine.uc.mem_read(address, length))


@pytest.mark.parametrize("boot", FIXTURES)
@pytest.mark.parametrize("app", ["app_small.bin", "app_big.bin"])
def test_on_the_timed_bus_the_download_is_byte_exact_and_the_application_boots(boot: str, app: str) -> None:
    image = (IMAGES / app).read_bytes()
    outcome = flash_and_boot(str(IMAGES / f"{boot}.elf"), str(IMAGES / app))
    assert outcome.ok, outcome.error
    assert _flash_bytes(outcome.board, APP_ADDRESS, len(image)) == image
    assert outcome.app_uart.endswith("done\r\n")


@pytest.mark.parametrize("boot", FIXTURES)
def test_check_finds_nothing_wrong_with_a_correct_driver(boot: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert emulator_main(["check", str(IMAGES / f"{boot}.elf"), str(IMAGES / "app_small.bin")]) == 0


@pytest.mark.parametrize("boot", FIXTURES)
def test_the_power_cut_sweep_passes(boot: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = emulator_main(["flash", str(IMAGES / f"{boot}.elf"), str(IMAGES / "app_small.bin"),
                          "--power-cut-sweep", "--sweep-points", "0,3,10-11"])
    assert code == 0, capsys.readouterr().out


def _zero_time_download(boot: str, app: str, *, give_up_after_ms: float = 3000):
    board = build_board(BoardOptions(image=str(IMAGES / f"{boot}.elf"), boot1=False))
    target = attach(board, timed_bus=False)
    start = board.machine.now_ns

    def wait_ms(ms: float) -> None:
        if (board.machine.now_ns - start) / 1e6 > give_up_after_ms:
            raise TimeoutError(f"still busy after {give_up_after_ms} ms of emulated time")
        target.wait_ms(ms)

    client = DfuClient(PyUsbTransport(target.device, wait_ms=wait_ms, now_ns=target.now_ns), 0)
    image = load_file(str(IMAGES / app), APP_ADDRESS).image
    client.download_dfuse(image, parse_layout(client.alt_setting.name))
    return board


def test_on_the_bus_without_time_the_hal_shaped_driver_loses_packets_and_stalls() -> None:
    # Two OUT packets land per data-OUT callback; the block comes out short and the class stalls it.
    with pytest.raises(DfuStall, match="DNLOAD block 2"):
        _zero_time_download("boot_hal_rearm", "app_small.bin")


def test_on_the_bus_without_time_the_usblib_shaped_driver_never_leaves_dfudnbusy() -> None:
    # The status OUT of GETSTATUS arrives with its data packet and reads as an abort: the erase never runs.
    with pytest.raises(TimeoutError, match="still busy"):
        _zero_time_download("boot_usblib_abort", "app_small.bin")


def test_boot_fixed_downloads_on_either_bus() -> None:
    board = _zero_time_download("boot_fixed", "app_small.bin")
    image = (IMAGES / "app_small.bin").read_bytes()
    assert _flash_bytes(board, APP_ADDRESS, len(image)) == image


@pytest.mark.parametrize("boot", FIXTURES)
@pytest.mark.usefixtures("dfu_util_tools")
def test_unmodified_dfu_util_downloads_through_them_byte_exact(boot: str) -> None:
    image = (IMAGES / "app_small.bin").read_bytes()
    result = serve_command(BoardOptions(image=str(IMAGES / f"{boot}.elf")),
                           ["dfu-util", "-a", "0", "-s", "0x08008000:leave", "-D", str(IMAGES / "app_small.bin")],
                           poll_scale=0)
    assert result.exit_code in (0, 74)  # 74: the device reset itself at :leave, as on a real board
    assert _flash_bytes(result.board, APP_ADDRESS, len(image)) == image

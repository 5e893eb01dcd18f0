"""pytest fixtures for testing your own bootloader on the emulated STM32F103.

Installed with the package: the ``pytest11`` entry point ``bootsim`` loads this module in
every pytest run (``-p no:bootsim`` turns it off; from a source checkout without the install,
``-p emulator.pytest_plugin``).  The fixtures are factories; everything they built is
closed when the test ends (USB captures and ``flash_state`` files are written then):

``bootsim_board(image, chip=, apps=, boot1=, pins=, bkp=, flash_state=, flash_timing=)``
    a powered-on :class:`~emulator.bootflow.harness.SimBoard`.  ``board.run_for("10ms")``,
    ``board.run_until_uart("DFU mode")``, ``board.run_until_event("jump")``, ``board.uart()``,
    ``board.events``, ``board.machine`` for everything else.
``bootsim_dfu(board_or_image, device=, alt=, interface=, serial=, pcap=, **board_options)``
    the board enumerated on a virtual USB host, its DFU interface in dfuIDLE: a
    :class:`~emulator.bootflow.harness.DfuSession` whose ``client`` is hostside's DFU/DfuSe client
    (``dnload``, ``get_status``, ``download_dfuse``, ``upload``...); ``attempt(call)`` returns a STALL
    instead of raising it.
``bootsim_flash(boot, app, **options)``
    the ``flash`` command's boot flow: a :class:`~emulator.bootflow.scenario.FlashOutcome`
    (``ok``, ``jump``, ``app_uart``, ``flash_check``, ``board.machine.events``).
``bootsim_check(boot, app, **options)``
    the ``check`` command: a :class:`~emulator.bootflow.checks.CheckReport` with its ``findings``.
``bootsim_test_app(address, chip=None)``
    the built-in test application for ``address``, written to a temporary .bin:
    ``(path, expected_uart)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.bootflow.checks import CheckReport, check
from emulator.bootflow.harness import DfuSession, SimBoard, WaitTimeout
from emulator.bootflow.scenario import FlashOutcome, flash_and_boot
from emulator.bootflow.testapp import build_test_application
from hostside.selection import DfuSelector, parse_alt, parse_device_ids

__all__ = ["DfuSession", "SimBoard", "WaitTimeout"]


@pytest.fixture
def bootsim_board() -> Iterator[Callable[..., SimBoard]]:
    """Build a board from an image: ``bootsim_board("boot.elf", chip="STM32F103C8", pins={"PA0": True},
    bkp={1: 0x4F42}, apps=["app.bin@0x08002000"], flash_state="board.state")``."""
    built: list[SimBoard] = []

    def build(image: str | Path, **options: Any) -> SimBoard:
        board = SimBoard.build(str(image), **options)
        built.append(board)
        return board

    yield build
    for board in built:
        board.close()


@pytest.fixture
def bootsim_dfu(bootsim_board: Callable[..., SimBoard]) -> Callable[..., DfuSession]:
    """Attach a DFU host to a board (or to a new board built from an image with ``board_options``):
    ``dfu = bootsim_dfu(board, device="0483:df11", alt=0)``; ``dfu.client.get_status()``."""

    def attach(board: SimBoard | str | Path, *, device: str | None = None, alt: int | str | None = None,
               interface: int | None = None, serial: str | None = None, pcap: str | None = None,
               start: bool = True, **board_options: Any) -> DfuSession:
        if not isinstance(board, SimBoard):
            board = bootsim_board(board, **board_options)
        elif board_options:
            raise TypeError(f"board options {sorted(board_options)} apply only when bootsim_dfu builds the board")
        selector = None
        if device is not None or alt is not None or interface is not None or serial is not None:
            selector = DfuSelector(ids=parse_device_ids(device) if device else DfuSelector().ids, serial=serial,
                                   interface=interface, alt=parse_alt(alt) if isinstance(alt, str) else alt)
        return board.attach_dfu(selector, pcap=pcap, start=start)

    return attach


@pytest.fixture
def bootsim_flash() -> Callable[..., FlashOutcome]:
    """``python -m emulator flash`` as a function: ``bootsim_flash("boot.elf", "app.bin", chip=...,
    erase_order="interleaved", boot1_after=True, pins_after=[...])`` → FlashOutcome."""

    def run(boot: str | Path, app: str | Path, **options: Any) -> FlashOutcome:
        return flash_and_boot(str(boot), str(app), **options)

    return run


@pytest.fixture
def bootsim_check() -> Callable[..., CheckReport]:
    """``python -m emulator check`` as a function: ``bootsim_check("boot.elf", "app.bin")`` → CheckReport;
    ``[f.id for f in report.findings]``."""

    def run(boot: str | Path, app: str | Path, **options: Any) -> CheckReport:
        return check(str(boot), str(app), **options)

    return run


@pytest.fixture
def bootsim_test_app(tmp_path: Path) -> Callable[..., tuple[Path, str]]:
    """The built-in test application linked for ``address``: ``path, expected_uart = bootsim_test_app(0x08008000)``."""

    def build(address: int, chip: str | None = None, size: int | None = None) -> tuple[Path, str]:
        app = build_test_application(address, chip, size)
        return app.write(tmp_path / f"test_app_{address:08x}.bin"), app.expected_uart

    return build

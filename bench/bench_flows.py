"""Whole boot flows against real time: emulated seconds per wall second, measured in this run.

    python -m bench.bench_flows

- ``flash boot_fixed app_big`` / ``app_small``: boot, enumerate, download, verify, leave, boot the app;
- dfu-util through ``serve --poll-scale 0`` (needs dfu-util and umockdev; skipped with a line otherwise);
- firmware idling in DFU mode: boot_fixed (interrupt-driven, SysTick at 1 kHz, ``while (1)``) and
  boot_dfu11 (a polled main-loop USB driver) for 2 s of emulated time.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from pathlib import Path

from bench import goals
from emulator.bootflow.scenario import flash_and_boot
from emulator.core.session import BoardOptions, build_board

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"


def _line(what: str, emulated_s: float, wall_s: float, goal: float) -> None:
    print(f"{what:44} {emulated_s:7.3f} s emulated in {wall_s:7.3f} s wall = {emulated_s / wall_s:6.2f}x real time"
          f"  (goal >= {goal:g}x)")
    goals.record(what, emulated_s / wall_s, "x", goal, at_least=True)


def flash(app: str, goal: float) -> None:
    wall = time.perf_counter()
    outcome = flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / app))
    wall = time.perf_counter() - wall
    assert outcome.ok, outcome.error
    _line(f"flash boot_fixed {app}", outcome.board.machine.now_ns / 1e9, wall, goal)


def dfu_util(goal: float) -> None:
    if shutil.which("dfu-util") is None:
        print("dfu-util via serve --poll-scale 0: skipped (dfu-util is not installed)")
        return
    from emulator.usb.device_server import serve_command

    saved = os.dup(1), os.dup(2)
    wall = time.perf_counter()
    try:  # dfu-util's progress and its expected "get_status" error after the reset go to /dev/null
        with open(os.devnull, "wb") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            result = serve_command(BoardOptions(image=str(IMAGES / "boot_fixed.elf")),
                                   ["dfu-util", "-a", "0", "-s", "0x08008000:leave", "-D",
                                    str(IMAGES / "app_big.bin")], poll_scale=0)
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
    wall = time.perf_counter() - wall
    _line("serve --poll-scale 0 -- dfu-util -D app_big", result.board.machine.now_ns / 1e9, wall, goal)


def idle(image: str, goal: float, **options: object) -> None:
    board = build_board(BoardOptions(image=str(IMAGES / image), boot1=False, **options))  # type: ignore[arg-type]
    wall = time.perf_counter()
    board.machine.run(max_ns=2_000_000_000)
    wall = time.perf_counter() - wall
    _line(f"{image} idle in DFU mode", board.machine.now_ns / 1e9, wall, goal)


def main() -> None:
    flash("app_big.bin", 12)
    flash("app_small.bin", 25)
    dfu_util(8)
    idle("boot_fixed.elf", 20)
    idle("boot_dfu11.elf", 20, chip="STM32F103C8")


if __name__ == "__main__":
    main()

"""DFU through the emulated board: boot-to-DFU-ready time, download rate, and
wall versus emulated time, for both fixture bootloaders.

    python -m bench.bench_dfu_emulated
"""

from __future__ import annotations

import time
from pathlib import Path

from emulator.bootflow.scenario import flash_and_boot
from emulator.core.session import BoardOptions, build_board
from emulator.usb.target import attach

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"


def boot_to_ready(boot: str) -> None:
    t = time.perf_counter()
    board = build_board(BoardOptions(image=str(IMAGES / f"{boot}.elf"), boot1=False))
    target = attach(board)
    wall = time.perf_counter() - t
    print(f"{boot:11} boot to enumerated DFU device: {board.machine.now_ns / 1e6:7.1f} ms emulated, "
          f"{wall:6.3f} s wall, {target.link.host.transactions} USB transactions")


def download(boot: str, app: str, order: str = "all-first") -> None:
    t = time.perf_counter()
    outcome = flash_and_boot(str(IMAGES / f"{boot}.elf"), str(IMAGES / app), erase_order=order, verify=False)
    wall = time.perf_counter() - t
    kib = outcome.app_size / 1024
    emu = outcome.download_emulated_ns / 1e9
    print(f"{boot:11} {app:13} {order:11} {kib:6.1f} KiB: {kib / wall:7.1f} KiB per wall s "
          f"(whole flow {wall:6.2f} s wall), download {emu:7.3f} s emulated = {kib / emu:6.1f} KiB/s "
          f"as a real board would; erases busy {sum(outcome.erase_busy_ms):8.1f} ms; ok={outcome.ok}")


if __name__ == "__main__":
    for boot in ("boot_fixed", "boot_seed"):
        boot_to_ready(boot)
    download("boot_fixed", "app_small.bin")
    download("boot_fixed", "app_big.bin")
    download("boot_seed", "app_big.bin")

"""Debian's dfu-util against the emulated board through umockdev: wall versus emulated time.

    python -m bench.bench_dfu_util

Downloads app_big (≈50 KiB) with ``-a 0 -s 0x08008000:leave -D`` through both
bootloaders.  ``--poll-scale 0`` makes dfu-util skip its wall-clock
bwPollTimeout sleeps (the emulator still charges them in emulated time);
``--poll-scale 1`` is what a real board would cost in wall time.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from emulator.core.session import BoardOptions
from emulator.usb.device_server import serve_command

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"


def download(boot: str, app: str, poll_scale: float) -> None:
    image = IMAGES / app
    kib = image.stat().st_size / 1024
    # dfu-util's progress bars go to the inherited stdout: send them to /dev/null for a readable table.
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            result = serve_command(BoardOptions(image=str(IMAGES / f"{boot}.elf")),
                                   ["dfu-util", "-a", "0", "-s", "0x08008000:leave", "-D", str(image)],
                                   poll_scale=poll_scale)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    ok = result.board.machine.read_flash(0x0800_8000, image.stat().st_size) == image.read_bytes()
    s = result.server.summary()
    emu = result.session_ns / 1e9
    print(f"{boot:10} {app:12} {kib:5.1f} KiB poll-scale {poll_scale:g}: wall {result.wall_s:6.2f} s "
          f"({kib / result.wall_s:6.1f} KiB/s), emulated {emu:6.3f} s ({kib / emu:6.1f} KiB/s), "
          f"bwPollTimeout {s['poll_charged_ms']} ms, {s['transfers']} requests, exit {result.exit_code}, "
          f"flash {'matches' if ok else 'DIFFERS'}")


if __name__ == "__main__":
    scales = [float(a) for a in sys.argv[1:]] or [0.0, 1.0]
    for scale in scales:
        for boot in ("boot_fixed", "boot_seed"):
            download(boot, "app_big.bin", scale)

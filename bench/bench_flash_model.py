"""Wall time of programming 64 KiB through the FPEC model.

Each half-word goes the way ST's HAL programs it (``FLASH_Program_HalfWord``
then ``FLASH_WaitForLastOperation``): CR.PG set, the store through
``FlashInterface.cpu_store``, the completion reached with ``SimPort.advance``
(as the machine does while the CPU stalls on the busy flash), SR.EOP cleared,
CR.PG cleared.  Prints the wall time, the emulated time and the
per-half-word cost.  Run from the repository root:
``python -m bench.bench_flash_model``.
"""

from __future__ import annotations

import time

from emulator.core.port import SimPort
from firmware_models.flash import FLASH_BASE, KEY1, KEY2, TYPICAL_TIMINGS, FlashInterface

KEYR, SR, CR = 0x04, 0x0C, 0x10
PG, EOP = 1 << 0, 1 << 5
SIZE = 64 * 1024


ROUNDS = 5  # the best of several: the machine is shared, the slowest rounds measure the others


def _round() -> tuple[float, SimPort, FlashInterface]:
    port = SimPort()
    flash = FlashInterface(port, flash_size=256 * 1024, page_size=2048, on_change=lambda offset, length: None)
    flash.write(KEYR, 4, KEY1)
    flash.write(KEYR, 4, KEY2)
    step = TYPICAL_TIMINGS.program_halfword_ns
    start = time.perf_counter()
    for offset in range(0, SIZE, 2):
        flash.write(CR, 4, PG)
        flash.cpu_store(FLASH_BASE + offset, 2, offset & 0xFFFF)
        port.advance(step)
        flash.write(SR, 4, EOP)
        flash.write(CR, 4, 0)
    wall = time.perf_counter() - start
    assert flash.storage[SIZE - 2:SIZE] == (SIZE - 2).to_bytes(2, "little")
    return wall, port, flash


def main() -> None:
    walls = []
    for _ in range(ROUNDS):
        wall, port, flash = _round()
        walls.append(wall)
    wall = min(walls)
    halfwords = SIZE // 2
    print(f"programmed {SIZE // 1024} KiB ({halfwords} half-words) in {wall:.3f} s wall (best of {ROUNDS}), "
          f"{port.now_ns() / 1e6:.1f} ms emulated, {wall / halfwords * 1e6:.1f} us per half-word, "
          f"{len(flash.journal.entries)} journal entries")


if __name__ == "__main__":
    main()

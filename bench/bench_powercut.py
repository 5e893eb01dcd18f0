"""Power-cut sweep cost: wall time of one trial (replay to the cut, power on,
boot) at a few positions in the download, and of the full default sweep, for
both fixture bootloaders with app_small.

    python -m bench.bench_powercut            # default sweep (about a minute per bootloader)
    python -m bench.bench_powercut --quick    # only the per-trial timings
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from emulator.bootflow.powercut import render, sweep

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
APP = str(IMAGES / "app_small.bin")


def per_trial(boot: str) -> None:
    """Trials early, in the middle and at the end of the programs: the replay grows with the cut."""
    def pick(ops):  # noqa: ANN001, ANN202 - sweep's callable point spec
        programs = [op.index for op in ops if op.kind == "program"]
        return [programs[0], programs[len(programs) // 2], programs[-1]]

    rep = sweep(str(IMAGES / f"{boot}.elf"), APP, points=pick, dedupe=False)
    for t in rep.trials:
        print(f"{boot:11} {t.point.label:16} {t.outcome:10} {t.wall_s:6.2f} s wall")
    walls = [t.wall_s for t in rep.trials]
    print(f"{boot:11} per trial: median {statistics.median(walls):.2f} s, max {max(walls):.2f} s; "
          f"{len(rep.ops)} flash operations, so points=all would take about "
          f"{(2 * len(rep.ops) + 1) * statistics.median(walls) / 60:.0f} min")


def full_default(boot: str) -> None:
    rep = sweep(str(IMAGES / f"{boot}.elf"), APP)
    replayed = sum(t.same_as is None for t in rep.trials)
    print(f"{boot:11} default sweep: {len(rep.trials)} cuts ({replayed} replayed, the rest equal an earlier "
          f"cut's flash), {rep.wall_s:.1f} s wall, {rep.wall_s / max(1, replayed):.2f} s per replayed cut; "
          f"{rep.counts()}")
    render([rep])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only time single trials")
    args = ap.parse_args()
    for boot in ("boot_seed", "boot_fixed"):
        per_trial(boot)
    if not args.quick:
        for boot in ("boot_seed", "boot_fixed"):
            full_default(boot)

"""Power-cut sweep cost: wall time of one trial replayed from reset (replay to the cut, power
on, boot) at a few positions in the download, the full default sweep in forked snapshots for
both fixture bootloaders with app_small, and on request ``--sweep-points all`` on boot_fixed +
app_big (issue 18's goal: at most 5 minutes on a 2-core machine).

    python -m bench.bench_powercut            # default sweep (under a minute per bootloader)
    python -m bench.bench_powercut --quick    # only the per-trial timings
    python -m bench.bench_powercut --all      # also every cut of boot_fixed + app_big (50,605 cuts)
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench import goals
from emulator.bootflow.powercut import cost_line, render, sweep

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
APP = str(IMAGES / "app_small.bin")
APP_BIG = str(IMAGES / "app_big.bin")
GOAL_ALL_S = 300


def per_trial(boot: str, app: str = APP) -> float:
    """Trials early, in the middle and at the end of the programs, each replayed from reset
    (``jobs=0``): the replay grows with the cut.  Returns the median wall time of one."""
    def pick(ops):  # noqa: ANN001, ANN202 - sweep's callable point spec
        programs = [op.index for op in ops if op.kind == "program"]
        return [programs[0], programs[len(programs) // 2], programs[-1]]

    rep = sweep(str(IMAGES / f"{boot}.elf"), app, points=pick, dedupe=False, jobs=0)
    name = f"{boot}+{Path(app).stem}"
    for t in rep.trials:
        print(f"{name:20} {t.point.label:16} {t.outcome:10} {t.wall_s:6.2f} s wall (replayed from reset)")
    median = statistics.median(t.wall_s for t in rep.trials)
    print(f"{name:20} per replayed trial: median {median:.2f} s; {len(rep.ops)} flash operations, so points=all "
          f"replayed from reset would take about {(2 * len(rep.ops) + 1) * median / 60:.0f} min on one core")
    return median


def full_default(boot: str) -> None:
    rep = sweep(str(IMAGES / f"{boot}.elf"), APP)
    print(f"{boot:11} default sweep in snapshots (--jobs {os.cpu_count()}): {rep.wall_s:.1f} s wall; {rep.counts()}")
    render([rep])


def sweep_all(jobs: int) -> None:
    """``flash boot_fixed.elf app_big.bin --power-cut-sweep --sweep-points all --jobs N``."""
    rep = sweep(str(IMAGES / "boot_fixed.elf"), APP_BIG, points="all", jobs=jobs)
    verdict = "met" if rep.wall_s <= GOAL_ALL_S else f"missed by {rep.wall_s - GOAL_ALL_S:.0f} s"
    print(f"boot_fixed + app_big, --sweep-points all --jobs {jobs}: {rep.wall_s:.1f} s wall "
          f"(goal ≤ {GOAL_ALL_S} s: {verdict}); {rep.counts()}")
    print(f"  {cost_line(rep)}")
    goals.record(f"power-cut sweep, all points, boot_fixed+app_big, --jobs {jobs}", rep.wall_s, "s", GOAL_ALL_S,
                 at_least=False)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only time single trials")
    ap.add_argument("--all", action="store_true",
                    help="also --sweep-points all on boot_fixed + app_big (about half a minute)")
    ap.add_argument("--jobs", type=int, default=2, help="for --all (default 2, the goal's machine)")
    args = ap.parse_args()
    for boot in ("boot_seed", "boot_fixed"):
        per_trial(boot)
    if not args.quick:
        for boot in ("boot_seed", "boot_fixed"):
            full_default(boot)
    if args.all:
        per_trial("boot_fixed", APP_BIG)
        sweep_all(args.jobs)

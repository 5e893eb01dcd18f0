"""``python -m bench``: every performance figure, each next to what it is compared with, from one run,
then issue 18's goals against what this run measured.

No figure here is a test: nothing asserts a time (the suite never does).

    python -m bench            # everything, the power-cut sweep of every cut included (about a minute)
    python -m bench --quick    # without the sweep of every cut
"""

from __future__ import annotations

import argparse

from bench import bench_core, bench_flows, bench_powercut, bench_usb_bus, goals


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--quick", action="store_true",
                    help="skip the power-cut sweep of every cut of boot_fixed + app_big")
    args = ap.parse_args()
    print("== CPU and MMIO (bench.bench_core)")
    bench_core.main()
    print("\n== boot flows against real time (bench.bench_flows)")
    bench_flows.main()
    print("\n== the timed USB bus (bench.bench_usb_bus)")
    bench_usb_bus.main()
    if not args.quick:
        print("\n== power-cut sweep of every cut (bench.bench_powercut --all)")
        bench_powercut.sweep_all(jobs=2)
    print("\n== issue 18's goals, measured in this run")
    print(goals.summary())


if __name__ == "__main__":
    main()

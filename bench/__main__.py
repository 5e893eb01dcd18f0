"""``python -m bench``: every performance figure, each next to what it is compared with, from one run.

No figure here is a test: nothing asserts a time (the suite never does).
"""

from __future__ import annotations

from bench import bench_core, bench_flows, bench_usb_bus


def main() -> None:
    print("== CPU and MMIO (bench.bench_core)")
    bench_core.main()
    print("\n== boot flows against real time (bench.bench_flows)")
    bench_flows.main()
    print("\n== the timed USB bus (bench.bench_usb_bus)")
    bench_usb_bus.main()


if __name__ == "__main__":
    main()

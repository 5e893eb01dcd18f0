"""Wall-clock throughput of the DfuSe client: a 64 KiB download (erase all-first, write, ABORT)
against the pure-Python device double.  Prints KiB per wall second, and the emulated time the
same transfer takes by the double's clock (the poll timeouts a real host would sleep).

    python bench/bench_dfu_client.py [--repeat N] [--transfer-size N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostside.dfu import DfuClient  # noqa: E402
from hostside.dfuse_layout import parse_layout  # noqa: E402
from hostside.files import FirmwareImage  # noqa: E402
from tests.dfuse_device_double import DfuseDeviceDouble  # noqa: E402

SIZE = 64 * 1024
APP = 0x0800_8000


def one_run(transfer_size: int) -> tuple[float, int, bool]:
    dev = DfuseDeviceDouble(transfer_size=transfer_size)
    image = FirmwareImage.from_segments([(APP, bytes((i * 31 + (i >> 9)) & 0xFF for i in range(SIZE)))])
    client = DfuClient(dev, 0)
    t0 = time.perf_counter()
    client.start()
    client.download_dfuse(image, parse_layout(dev.layout))
    wall = time.perf_counter() - t0
    ok = dev.read_flash(APP, SIZE) == image.segments[0].data
    return wall, dev.now_ns(), ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--transfer-size", type=int, default=2048)
    args = ap.parse_args()
    runs = [one_run(args.transfer_size) for _ in range(args.repeat)]
    if not all(ok for _, _, ok in runs):
        print("error: flash contents differ after download", file=sys.stderr)
        return 1
    best = min(w for w, _, _ in runs)
    emulated_s = runs[0][1] / 1e9
    print(f"64 KiB DfuSe download, transfer size {args.transfer_size}, best of {args.repeat}:")
    print(f"  {SIZE / 1024 / best:.0f} KiB per wall second ({best * 1000:.1f} ms)")
    print(f"  {emulated_s:.2f} s of device time (poll timeouts honoured, ≈ what a real host would wait)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wall-clock cost of the USB stack: model + virtual host + fake firmware, no CPU.

Prints the wall time of one full enumeration (bus resets, descriptors, strings,
SET_CONFIGURATION; ≈ 120 ms of emulated time) and control-transfer round trips
per wall second for a 6-byte DFU GETSTATUS and a 2048-byte DFU DNLOAD, each
against the register-level fake firmware in ``tests/fake_usb_firmware.py``.

    python bench/bench_usb.py [--repeat N] [--transfers N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emulator.usb.host import ModelWire, VirtualHost  # noqa: E402
from tests.fake_usb_firmware import make_device  # noqa: E402


def rig() -> tuple[VirtualHost, object]:
    port, model, _firmware, cpu = make_device()
    return VirtualHost(ModelWire(model, cpu)), port


def bench_enumeration(repeat: int) -> tuple[float, float]:
    walls = []
    emulated_ms = 0.0
    for _ in range(repeat):
        host, port = rig()
        t0 = time.perf_counter()
        host.enumerate()
        walls.append(time.perf_counter() - t0)
        emulated_ms = port.now_ns() / 1e6  # type: ignore[attr-defined]
    return statistics.median(walls), emulated_ms


def bench_transfers(count: int, payload: int) -> tuple[float, float]:
    host, port = rig()
    host.enumerate()
    start_ns = port.now_ns()  # type: ignore[attr-defined]
    data = bytes(range(256)) * (payload // 256 + 1)
    t0 = time.perf_counter()
    for _ in range(count):
        if payload:
            host.control_transfer(1, 0x21, 1, 2, 0, data[:payload])  # DFU_DNLOAD
        else:
            host.control_transfer(1, 0xA1, 3, 0, 0, 6)  # DFU_GETSTATUS
    wall = time.perf_counter() - t0
    emulated_ms = (port.now_ns() - start_ns) / 1e6  # type: ignore[attr-defined]
    return count / wall, emulated_ms / count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--transfers", type=int, default=2000)
    args = ap.parse_args()
    wall, emu = bench_enumeration(args.repeat)
    print(f"enumeration: {wall * 1e3:.2f} ms wall (median of {args.repeat}), {emu:.1f} ms emulated")
    for label, payload in (("GETSTATUS (6 B in)", 0), ("DNLOAD (2048 B out)", 2048)):
        rate, per = bench_transfers(args.transfers, payload)
        print(f"control {label}: {rate:,.0f} round trips per wall second, {per:.3f} ms emulated each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The timed full-speed bus: transaction rate against the wire's ceiling, and its wall cost.

    python -m bench.bench_usb_bus

Both figures come from the same run: boot_fixed is enumerated and sent the
same DfuSe download of app_big once on the timed bus and once on the bus
without time (packets between two instructions, kept only for comparison).
"""

from __future__ import annotations

import time
from pathlib import Path

from emulator.core.session import BoardOptions, build_board
from emulator.usb import fullspeed as fs
from emulator.usb.host import EOF1_NS, FRAME_NS, HOST_GAP_NS, Transaction, Urb, UsbMonitor
from emulator.usb.target import attach
from firmware_models.usb import DataPid
from hostside.dfu import DfuClient
from hostside.dfuse_layout import parse_layout
from hostside.files import load_file
from hostside.transport import PyUsbTransport

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"


class _Transfers(UsbMonitor):
    """Transactions per control transfer carrying data OUT (the DNLOAD blocks)."""

    def __init__(self) -> None:
        self.count = 0
        self.per_urb: list[tuple[int, int]] = []  # (transactions, emulated ns)
        self._start: int | None = None

    def transaction(self, tx: Transaction) -> None:
        self.count += 1

    def urb_submitted(self, urb: Urb) -> None:
        self._start = self.count

    def urb_completed(self, urb: Urb) -> None:
        if urb.setup is not None and not urb.is_in and urb.length >= 1024 and self._start is not None:
            self.per_urb.append((self.count - self._start, urb.complete_ns - urb.submit_ns))


def ceiling_per_ms(payload: int = 64) -> float:
    """Back-to-back OUT transactions of ``payload`` bytes that fit in one frame after SOF, before EOF1."""
    one = fs.host_write_ns(fs.PID_OUT, 1, 0, DataPid.DATA1, bytes(payload)) + HOST_GAP_NS
    usable = FRAME_NS - fs.sof_ns() - HOST_GAP_NS - EOF1_NS
    return usable // one * (1_000_000 / FRAME_NS)


def download(timed: bool) -> tuple[float, float, _Transfers, int]:
    wall = time.perf_counter()
    board = build_board(BoardOptions(image=str(IMAGES / "boot_fixed.elf"), boot1=False))
    target = attach(board, timed_bus=timed)
    monitor = _Transfers()
    target.link.host.add_monitor(monitor)
    dev = target.device
    transport = PyUsbTransport(dev, wait_ms=target.wait_ms, now_ns=target.now_ns)
    client = DfuClient(transport, 0)
    layout = parse_layout(client.alt_setting.name)
    image = load_file(str(IMAGES / "app_big.bin"), 0x08008000).image
    assert image is not None
    t0 = board.machine.now_ns
    client.download_dfuse(image, layout)
    emulated_ms = (board.machine.now_ns - t0) / 1e6
    wall = time.perf_counter() - wall
    return wall, emulated_ms, monitor, target.link.host.transactions


def main() -> None:
    print(f"full-speed ceiling: {ceiling_per_ms():.0f} back-to-back 64-byte OUT transactions per emulated ms "
          f"(SOF {fs.sof_ns()} ns, EOF1 guard {EOF1_NS} ns, host gap {HOST_GAP_NS} ns); a DNLOAD adds "
          "a shorter SETUP and a zero-length status IN")
    results = {timed: download(timed) for timed in (True, False)}
    for timed, (wall, emu_ms, mon, total) in results.items():
        name = "timed bus    " if timed else "zero-time bus"
        rates = [n / (ns / 1e6) for n, ns in mon.per_urb if ns > 0]
        rate = f"{sum(rates) / len(rates):5.1f} transactions per emulated ms inside a DNLOAD" if rates else \
            "DNLOAD transfers take no emulated time"
        print(f"{name}: app_big download {emu_ms:8.1f} ms emulated in {wall:6.2f} s wall "
              f"(boot + enumeration included), {total} transactions; {rate}")
    (tw, *_), (zw, *_) = results[True], results[False]
    print(f"wall cost of the timed bus: {tw / zw:.2f}x the zero-time bus on the same download")


if __name__ == "__main__":
    main()

"""The cable between the emulated board and the virtual USB host.

The host (``emulator.usb.host.VirtualHost``) talks packets to the USB device
model and lets the real CPU run between packets through :class:`MachineRunner`.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.core.machine import Machine
from emulator.core.outputs import OutputPathError
from emulator.usb.host import ModelWire, VirtualHost
from emulator.usb.pcap import UsbCapture
from emulator.usb.pyusb_backend import EmulatedBackend
from emulator.usb.request_log import RequestLog


class MachineRunner:
    """``emulator.usb.host.DeviceRunner`` on the emulated CPU."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def now_ns(self) -> int:
        return self.machine.now_ns

    def run_ns(self, ns: int) -> None:
        self.machine.run_ns(ns)

    def stop(self) -> None:
        self.machine.stop_soon()


@dataclass
class UsbLink:
    machine: Machine
    host: VirtualHost
    backend: EmulatedBackend
    capture: UsbCapture | None = None
    pcap_path: str | None = None

    def close(self) -> None:
        """Write the capture, if one was asked for."""
        if self.capture is not None and self.pcap_path is not None:
            try:
                self.capture.write(self.pcap_path)
            except OSError as e:  # checked before the session; a directory removed during it
                raise OutputPathError(f"--usb-pcap {self.pcap_path}: cannot write ({e.strerror})") from None


def connect(machine: Machine, *, pcap_path: str | None = None, address: int = 1, timed: bool = True) -> UsbLink:
    """Plug the board into a virtual host; nothing is enumerated yet.

    ``timed=False`` gives the bus without time of earlier versions (packets land
    between two instructions), only to show what real USB stacks do on it.
    """
    host = VirtualHost(ModelWire(machine.usb, MachineRunner(machine), timed=timed))
    # The host's requests join the boot-flow events the reports are built from.
    host.add_monitor(RequestLog(machine))
    capture = None
    if pcap_path is not None:
        capture = UsbCapture()
        host.add_monitor(capture)
    return UsbLink(machine, host, EmulatedBackend(host, address=address), capture, pcap_path)

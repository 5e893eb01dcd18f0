"""A pyusb backend over the virtual host, so pyusb code runs against the emulator.

    backend = EmulatedBackend(host)
    dev = usb.core.find(idVendor=0x0483, idProduct=0xDF11, backend=backend)
    dev.set_configuration(); dev.ctrl_transfer(0xA1, 3, 0, 0, 6)
    backend.wait_ms(50)   # a DFU bwPollTimeout, in emulated time

Errors are raised as libusb's backend raises them: ``usb.core.USBError``
with libusb's error code and errno (LIBUSB_ERROR_PIPE/EPIPE for a stall,
LIBUSB_ERROR_IO/EIO for no answer, LIBUSB_ERROR_OVERFLOW/EOVERFLOW for
babble, LIBUSB_ERROR_NO_DEVICE/ENODEV), and ``usb.core.USBTimeoutError``
(LIBUSB_ERROR_TIMEOUT/ETIMEDOUT) for a timeout.
"""

from __future__ import annotations

import array
import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import usb.backend
import usb.core

from emulator.usb.host import (
    UsbBabble,
    UsbDeviceInfo,
    UsbError,
    UsbNotAttached,
    UsbProtocolError,
    UsbStall,
    UsbTimeout,
    VirtualHost,
)
from hostside.descriptors import Configuration, Descriptor, Interface

# libusb error codes (libusb.h) and the strings pyusb's libusb1 backend uses.
LIBUSB_ERROR_IO = -1
LIBUSB_ERROR_NO_DEVICE = -4
LIBUSB_ERROR_NOT_FOUND = -5
LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_OVERFLOW = -8
LIBUSB_ERROR_PIPE = -9
LIBUSB_SPEED_FULL = 2
# libusb's timeout 0 means "no limit"; in emulated time a dead device would then
# hang the caller for ever, so 0 becomes a minute of emulated time.
UNLIMITED_MS = 60_000

_ERRORS: dict[type[UsbError], tuple[int, str, int]] = {
    UsbStall: (LIBUSB_ERROR_PIPE, "Pipe error", errno.EPIPE),
    UsbTimeout: (LIBUSB_ERROR_TIMEOUT, "Operation timed out", errno.ETIMEDOUT),
    UsbBabble: (LIBUSB_ERROR_OVERFLOW, "Overflow", errno.EOVERFLOW),
    UsbProtocolError: (LIBUSB_ERROR_IO, "Input/output error", errno.EIO),
    UsbNotAttached: (LIBUSB_ERROR_NO_DEVICE, "No such device (it may have been disconnected)", errno.ENODEV),
}

T = TypeVar("T")


def _translate(call: Callable[[], T]) -> T:
    try:
        return call()
    except UsbError as exc:
        code, text, err = _ERRORS.get(type(exc), (LIBUSB_ERROR_IO, "Input/output error", errno.EIO))
        if isinstance(exc, UsbTimeout):
            raise usb.core.USBTimeoutError(text, code, err) from exc
        raise usb.core.USBError(text, code, err) from exc


class _DescriptorView:
    """Attribute access to a descriptor's fields, as pyusb's core expects."""

    def __init__(self, desc: Descriptor, **extra: Any) -> None:
        for name, _fmt in desc.wire_fields():
            value = getattr(desc, name)
            setattr(self, name, 0 if value is None else value)
        self.extra_descriptors = list(extra.pop("extra_bytes", b""))
        for key, value in extra.items():
            setattr(self, key, value)


@dataclass
class EmulatedDeviceId:
    """What ``enumerate_devices`` yields: the one device behind the host."""

    info: UsbDeviceInfo


@dataclass
class EmulatedHandle:
    device: EmulatedDeviceId
    claimed: set[int]


class EmulatedBackend(usb.backend.IBackend):
    """``usb.backend.IBackend`` over a :class:`~emulator.usb.host.VirtualHost`."""

    def __init__(self, host: VirtualHost, *, address: int = 1) -> None:
        super().__init__()
        self.host = host
        self.address = address

    # -- emulated time ----------------------------------------------------------------
    def wait_ms(self, ms: float) -> None:
        """Wait ``ms`` of emulated time (a DFU poll timeout) instead of sleeping."""
        self.host.wait_ms(ms)

    def now_ns(self) -> int:
        """Emulated time since power-on (for ``hostside.transport.PyUsbTransport``)."""
        return self.host.now_ns()

    # -- discovery ----------------------------------------------------------------------
    def enumerate_devices(self) -> Iterator[EmulatedDeviceId]:
        if self.host.device is None:
            if not self.host.wire.attached():
                return
            _translate(lambda: self.host.enumerate(self.address))
        assert self.host.device is not None
        yield EmulatedDeviceId(self.host.device)

    def get_parent(self, dev: EmulatedDeviceId) -> None:
        return None

    def get_device_descriptor(self, dev: EmulatedDeviceId) -> _DescriptorView:
        return _DescriptorView(
            dev.info.device,
            bus=self.host.bus_number,
            address=dev.info.address,
            port_number=1,
            port_numbers=(1,),
            speed=LIBUSB_SPEED_FULL,
        )

    def _config(self, dev: EmulatedDeviceId, config: int) -> Configuration:
        if config >= len(dev.info.configurations):
            raise IndexError(f"invalid configuration index {config}")
        return dev.info.configurations[config]

    def _interface(self, dev: EmulatedDeviceId, intf: int, alt: int, config: int) -> Interface:
        cfg = self._config(dev, config)
        numbers = cfg.interface_numbers()
        if intf >= len(numbers):
            raise IndexError(f"invalid interface index {intf}")
        alts = cfg.alt_settings(numbers[intf])
        if alt >= len(alts):
            raise IndexError(f"invalid alternate setting index {alt}")
        return alts[alt]

    def get_configuration_descriptor(self, dev: EmulatedDeviceId, config: int) -> _DescriptorView:
        cfg = self._config(dev, config)
        view = _DescriptorView(cfg.descriptor, extra_bytes=b"".join(d.build() for d in cfg.extra))
        # pyusb reads bMaxPower; libusb calls the field MaxPower.
        view.bMaxPower = cfg.descriptor.bMaxPower
        view.bNumInterfaces = len(cfg.interface_numbers())
        return view

    def get_interface_descriptor(self, dev: EmulatedDeviceId, intf: int, alt: int, config: int) -> _DescriptorView:
        i = self._interface(dev, intf, alt, config)
        view = _DescriptorView(i.descriptor, extra_bytes=b"".join(d.build() for d in i.extra))
        view.bNumEndpoints = len(i.endpoints)
        return view

    def get_endpoint_descriptor(
        self, dev: EmulatedDeviceId, ep: int, intf: int, alt: int, config: int
    ) -> _DescriptorView:
        i = self._interface(dev, intf, alt, config)
        if ep >= len(i.endpoints):
            raise IndexError(f"invalid endpoint index {ep}")
        e = i.endpoints[ep]
        return _DescriptorView(e.descriptor, extra_bytes=b"".join(d.build() for d in e.extra))

    # -- handles --------------------------------------------------------------------------
    def open_device(self, dev: EmulatedDeviceId) -> EmulatedHandle:
        if not self.host.wire.attached():
            raise usb.core.USBError(_ERRORS[UsbNotAttached][1], LIBUSB_ERROR_NO_DEVICE, errno.ENODEV)
        return EmulatedHandle(dev, set())

    def close_device(self, dev_handle: EmulatedHandle) -> None:
        dev_handle.claimed.clear()

    def claim_interface(self, dev_handle: EmulatedHandle, intf: int) -> None:
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: EmulatedHandle, intf: int) -> None:
        dev_handle.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: EmulatedHandle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: EmulatedHandle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: EmulatedHandle, intf: int) -> None:
        return None

    # -- standard requests ----------------------------------------------------------------------
    def _addr(self, dev_handle: EmulatedHandle) -> int:
        return dev_handle.device.info.address

    def set_configuration(self, dev_handle: EmulatedHandle, config_value: int) -> None:
        _translate(lambda: self.host.set_configuration(self._addr(dev_handle), config_value))

    def get_configuration(self, dev_handle: EmulatedHandle) -> int:
        return _translate(lambda: self.host.get_configuration(self._addr(dev_handle)))

    def set_interface_altsetting(self, dev_handle: EmulatedHandle, intf: int, altsetting: int) -> None:
        _translate(lambda: self.host.set_interface(self._addr(dev_handle), intf, altsetting))

    def clear_halt(self, dev_handle: EmulatedHandle, ep: int) -> None:
        _translate(lambda: self.host.clear_halt(self._addr(dev_handle), ep))

    def reset_device(self, dev_handle: EmulatedHandle) -> None:
        """A port reset; libusb re-enumerates the device at the same address."""
        _translate(lambda: self.host.enumerate(self._addr(dev_handle)))
        assert self.host.device is not None
        dev_handle.device.info = self.host.device

    # -- transfers ------------------------------------------------------------------------------
    def ctrl_transfer(
        self,
        dev_handle: EmulatedHandle,
        bmRequestType: int,  # noqa: N803 - pyusb's parameter names
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array.array,
        timeout: int,
    ) -> int:
        addr = self._addr(dev_handle)
        nbytes = len(data) * data.itemsize
        timeout_ms = timeout or UNLIMITED_MS
        if bmRequestType & 0x80:
            got = _translate(lambda: self.host.control_transfer(
                addr, bmRequestType, bRequest, wValue, wIndex, nbytes, timeout_ms))
            assert isinstance(got, bytes)
            memoryview(data).cast("B")[: len(got)] = got
            return len(got)
        payload = data.tobytes()
        sent = _translate(lambda: self.host.control_transfer(
            addr, bmRequestType, bRequest, wValue, wIndex, payload, timeout_ms))
        assert isinstance(sent, int)
        return sent

    def bulk_write(self, dev_handle: EmulatedHandle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        return _translate(lambda: self.host.bulk_out(self._addr(dev_handle), ep, data.tobytes(), timeout or UNLIMITED_MS))

    def bulk_read(self, dev_handle: EmulatedHandle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        got = _translate(lambda: self.host.bulk_in(self._addr(dev_handle), ep, len(buff) * buff.itemsize,
                                                   timeout or UNLIMITED_MS))
        memoryview(buff).cast("B")[: len(got)] = got
        return len(got)

    def intr_write(self, dev_handle: EmulatedHandle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        return _translate(lambda: self.host.interrupt_out(self._addr(dev_handle), ep, data.tobytes(),
                                                          timeout or UNLIMITED_MS))

    def intr_read(self, dev_handle: EmulatedHandle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        got = _translate(lambda: self.host.interrupt_in(self._addr(dev_handle), ep, len(buff) * buff.itemsize,
                                                        timeout or UNLIMITED_MS))
        memoryview(buff).cast("B")[: len(got)] = got
        return len(got)

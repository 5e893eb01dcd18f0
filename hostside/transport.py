"""The USB transport the DFU client talks through.

The DFU client needs only control transfers, a way to wait, a clock, and the
few descriptors DFU depends on.  ``PyUsbTransport`` provides that
over any pyusb ``Device``: a real one through libusb, or one from the emulator's
pyusb backend, in which case ``wait_ms`` and ``now_ns`` come from emulated time.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# USB 2.0 §9.6.5 / DFU 1.1 §4.2.1: the DFU interface class and subclass.
DFU_INTERFACE_CLASS = 0xFE
DFU_INTERFACE_SUBCLASS = 0x01
DFU_PROTOCOL_RUNTIME = 0x01
DFU_PROTOCOL_DFU_MODE = 0x02
DFU_FUNCTIONAL_DESCRIPTOR_TYPE = 0x21  # DFU 1.1 §4.1.3

DEFAULT_TIMEOUT_MS = 5000  # dfu-util's DFU_TIMEOUT


class TransportError(Exception):
    """A control transfer failed below the DFU protocol."""


class TransportStall(TransportError):
    """The device answered with a STALL handshake (libusb LIBUSB_ERROR_PIPE / EPIPE)."""


class TransportTimeout(TransportError):
    """The transfer did not complete within its timeout (ETIMEDOUT)."""


class DeviceGone(TransportError):
    """The device is no longer there (ENODEV, or it reset itself)."""


class NoUsbBackend(TransportError):
    """pyusb found no backend (libusb is not installed)."""


@dataclass(frozen=True)
class DfuFunctionalDescriptor:
    """DFU 1.1 §4.1.3 functional descriptor (9 bytes; DFU 1.0 devices send 7)."""

    attributes: int = 0x0B  # bitWillDetach | bitCanUpload | bitCanDnload
    detach_timeout_ms: int = 255
    transfer_size: int = 2048
    dfu_version: int = 0x011A

    @property
    def can_download(self) -> bool:
        return bool(self.attributes & 0x01)

    @property
    def can_upload(self) -> bool:
        return bool(self.attributes & 0x02)

    @property
    def manifestation_tolerant(self) -> bool:
        return bool(self.attributes & 0x04)

    @property
    def will_detach(self) -> bool:
        return bool(self.attributes & 0x08)

    @property
    def is_dfuse(self) -> bool:
        return self.dfu_version == 0x011A

    @classmethod
    def parse(cls, raw: bytes) -> DfuFunctionalDescriptor:
        if len(raw) < 7 or raw[1] != DFU_FUNCTIONAL_DESCRIPTOR_TYPE:
            raise ValueError("not a DFU functional descriptor")
        attributes, detach, xfer = struct.unpack_from("<BHH", raw, 2)
        version = struct.unpack_from("<H", raw, 7)[0] if len(raw) >= 9 else 0x0100
        return cls(attributes, detach, xfer, version)

    def build(self) -> bytes:
        return struct.pack(
            "<BBBHHH", 9, DFU_FUNCTIONAL_DESCRIPTOR_TYPE, self.attributes,
            self.detach_timeout_ms, self.transfer_size, self.dfu_version,
        )


@dataclass(frozen=True)
class DfuAltSetting:
    """One alternate setting of a DFU interface, with its string name."""

    interface: int
    alt: int
    name: str
    protocol: int = DFU_PROTOCOL_DFU_MODE


@dataclass(frozen=True)
class DeviceInfo:
    """What ``-l`` shows and what the DFU client needs from the descriptors."""

    vid: int
    pid: int
    bcd_device: int
    serial: str
    configuration: int
    alt_settings: tuple[DfuAltSetting, ...]
    functional: DfuFunctionalDescriptor
    devnum: int = 0
    path: str = ""
    manufacturer: str = ""
    product: str = ""

    def find_alt(self, alt: int | str, interface: int | None = None) -> DfuAltSetting:
        """Alt setting by number or by exact name (dfu-util's ``-a``), on ``interface`` if given."""
        for a in self.alt_settings:
            if interface is not None and a.interface != interface:
                continue
            if (isinstance(alt, int) and a.alt == alt) or (isinstance(alt, str) and a.name == alt):
                return a
        raise LookupError(f"no alternate setting {alt!r}")


@runtime_checkable
class Transport(Protocol):
    """Control transfers, waiting and descriptors for one DFU device."""

    def control_in(
        self, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, length: int, timeout_ms: int
    ) -> bytes: ...

    def control_out(
        self, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, data: bytes, timeout_ms: int
    ) -> int: ...

    def wait_ms(self, ms: int) -> None:
        """Let ``ms`` pass: emulated time against the emulator, a sleep on hardware."""

    def now_ns(self) -> int:
        """The transport's clock (emulated or monotonic wall time), in ns."""

    def device_info(self) -> DeviceInfo: ...

    def set_alt_setting(self, interface: int, alt: int) -> None: ...

    def reset(self) -> None:
        """USB port reset (dfu-util ``-R``)."""


def _translate_usb_error(exc: Exception) -> TransportError:
    """Map a pyusb ``USBError`` onto the transport's exceptions by errno."""
    import usb.core

    if isinstance(exc, usb.core.USBTimeoutError):
        return TransportTimeout(str(exc))
    code = getattr(exc, "errno", None)
    if code == errno.EPIPE:
        return TransportStall(str(exc))
    if code == errno.ETIMEDOUT:
        return TransportTimeout(str(exc))
    if code in (errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN):
        return DeviceGone(str(exc))
    return TransportError(str(exc))


class PyUsbTransport:
    """``Transport`` over a pyusb ``Device`` (libusb or the emulator's backend)."""

    def __init__(
        self,
        device: Any,
        wait_ms: Callable[[int], None] | None = None,
        now_ns: Callable[[], int] | None = None,
    ) -> None:
        self.device = device
        self._wait = wait_ms
        self._now = now_ns
        self._info: DeviceInfo | None = None

    # -- control transfers -------------------------------------------------------
    def control_in(
        self, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, length: int, timeout_ms: int
    ) -> bytes:
        import usb.core

        try:
            data = self.device.ctrl_transfer(bmRequestType, bRequest, wValue, wIndex, length, timeout_ms)
        except usb.core.USBError as exc:
            raise _translate_usb_error(exc) from exc
        return bytes(data)

    def control_out(
        self, bmRequestType: int, bRequest: int, wValue: int, wIndex: int, data: bytes, timeout_ms: int
    ) -> int:
        import usb.core

        try:
            return int(self.device.ctrl_transfer(bmRequestType, bRequest, wValue, wIndex, bytes(data), timeout_ms))
        except usb.core.USBError as exc:
            raise _translate_usb_error(exc) from exc

    def wait_ms(self, ms: int) -> None:
        if ms <= 0:
            return
        if self._wait is not None:
            self._wait(ms)
        else:
            time.sleep(ms / 1000)

    def now_ns(self) -> int:
        return self._now() if self._now is not None else time.monotonic_ns()

    def set_alt_setting(self, interface: int, alt: int) -> None:
        import usb.core

        try:
            self.device.set_interface_altsetting(interface=interface, alternate_setting=alt)
        except usb.core.USBError as exc:
            raise _translate_usb_error(exc) from exc

    def reset(self) -> None:
        import usb.core

        try:
            self.device.reset()
        except usb.core.USBError as exc:
            # A DFU device often re-enumerates as the application: losing it is the point.
            err = _translate_usb_error(exc)
            if not isinstance(err, DeviceGone):
                raise err from exc

    # -- descriptors -------------------------------------------------------------
    def _string(self, index: int) -> str:
        import usb.util

        if not index:
            return ""
        try:
            return usb.util.get_string(self.device, index) or ""
        except (ValueError, NotImplementedError, OSError):
            return "UNKNOWN"  # dfu-util prints UNKNOWN when the string cannot be read

    def device_info(self) -> DeviceInfo:
        if self._info is not None:
            return self._info
        dev = self.device
        alts: list[DfuAltSetting] = []
        functional: DfuFunctionalDescriptor | None = None
        cfg_value = 0
        for cfg in dev:
            for intf in cfg:
                if intf.bInterfaceClass != DFU_INTERFACE_CLASS or intf.bInterfaceSubClass != DFU_INTERFACE_SUBCLASS:
                    continue
                cfg_value = cfg.bConfigurationValue
                alts.append(
                    DfuAltSetting(
                        intf.bInterfaceNumber, intf.bAlternateSetting,
                        self._string(intf.iInterface), intf.bInterfaceProtocol,
                    )
                )
                if functional is None:
                    functional = _find_functional(bytes(getattr(intf, "extra_descriptors", b"") or b""))
            if functional is None and alts:
                # Some devices put the functional descriptor after the interfaces.
                functional = _find_functional(bytes(getattr(cfg, "extra_descriptors", b"") or b""))
            if functional is None and alts:
                functional = self._functional_from_config(cfg.index)
        ports = getattr(dev, "port_numbers", None) or ()
        path = f"{dev.bus}-{'.'.join(str(p) for p in ports)}" if ports else str(getattr(dev, "bus", "") or "")
        self._info = DeviceInfo(
            vid=dev.idVendor,
            pid=dev.idProduct,
            bcd_device=dev.bcdDevice,
            serial=self._string(dev.iSerialNumber),
            configuration=cfg_value,
            alt_settings=tuple(alts),
            functional=functional or DfuFunctionalDescriptor(),
            devnum=int(getattr(dev, "address", 0) or 0),
            path=path,
            manufacturer=self._string(dev.iManufacturer),
            product=self._string(dev.iProduct),
        )
        return self._info


    def _functional_from_config(self, index: int) -> DfuFunctionalDescriptor | None:
        """GET_DESCRIPTOR(CONFIGURATION) and walk it (USB 2.0 §9.4.3), for backends that keep no
        class-specific descriptors."""
        try:
            head = self.control_in(0x80, 6, 0x0200 | index, 0, 9, DEFAULT_TIMEOUT_MS)
            total = struct.unpack_from("<H", head, 2)[0] if len(head) >= 4 else 0
            raw = self.control_in(0x80, 6, 0x0200 | index, 0, total, DEFAULT_TIMEOUT_MS) if total else b""
        except TransportError:
            return None
        return _find_functional(raw)


def _find_functional(extra: bytes) -> DfuFunctionalDescriptor | None:
    """Walk a blob of class-specific descriptors for the DFU functional one."""
    i = 0
    while i + 2 <= len(extra):
        length = extra[i]
        if length < 2:
            break
        if extra[i + 1] == DFU_FUNCTIONAL_DESCRIPTOR_TYPE:
            try:
                return DfuFunctionalDescriptor.parse(extra[i:i + length])
            except ValueError:
                return None
        i += length
    return None


@dataclass
class UsbFilter:
    """``-d VID:PID[,VID:PID]``: ``None`` matches anything."""

    ids: list[tuple[int | None, int | None]] = field(default_factory=list)

    def matches(self, vid: int, pid: int) -> bool:
        if not self.ids:
            return True
        return any((v is None or v == vid) and (p is None or p == pid) for v, p in self.ids)


def _is_dfu_device(dev: Any) -> bool:
    try:
        for cfg in dev:
            for intf in cfg:
                if intf.bInterfaceClass == DFU_INTERFACE_CLASS and intf.bInterfaceSubClass == DFU_INTERFACE_SUBCLASS:
                    return True
    except Exception:  # noqa: BLE001 - a device we cannot read is simply not listed
        return False
    return False


def find_pyusb_transports(usb_filter: UsbFilter | None = None, backend: Any = None) -> list[PyUsbTransport]:
    """Every DFU-capable device pyusb sees (default backend: libusb)."""
    import usb.core

    flt = usb_filter or UsbFilter()
    try:
        devices: Sequence[Any] = list(usb.core.find(find_all=True, backend=backend))
    except usb.core.NoBackendError as exc:
        raise NoUsbBackend("no USB backend available: install libusb-1.0 (Debian: libusb-1.0-0)") from exc
    return [PyUsbTransport(d) for d in devices if flt.matches(d.idVendor, d.idProduct) and _is_dfu_device(d)]

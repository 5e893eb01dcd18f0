"""Which DFU device, interface and alternate setting to talk to: ``-d``, ``-S``, ``--intf``, ``-a``.

One set of rules for every tool that picks a DFU target, real boards through
pyusb and emulated ones alike:

* a device is a DFU device when one of its interfaces has class 0xFE
  (application specific) and subclass 0x01 (DFU), in run-time mode
  (protocol 1) or in DFU mode (protocol 2) (DFU 1.1 §4.1 and §4.2, the run-time and
  DFU-mode descriptor sets) —
  not when it has a particular VID:PID;
* ``-d VID:PID[,VID:PID]`` (hex, ``*`` or an empty half for "any") and
  ``-S SERIAL`` narrow the devices, ``--intf N`` the interfaces, and
  ``-a ALT`` (a number) or ``-a NAME`` (the alt setting's iInterface string,
  exactly) the alternate settings;
* with nothing given, the first DFU device and its first DFU alternate setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hostside.transport import DFU_PROTOCOL_RUNTIME, DeviceInfo, DfuAltSetting, Transport, UsbFilter


class SelectionError(LookupError):
    """No device, interface or alternate setting matches what was asked for (one line of text)."""


def parse_device_ids(text: str) -> UsbFilter:
    """``VID:PID[,VID:PID]`` in hex; an empty or ``*`` half matches anything.  ValueError if malformed."""
    ids: list[tuple[int | None, int | None]] = []
    for part in text.split(","):
        vid_s, sep, pid_s = part.strip().partition(":")
        try:
            vid = None if vid_s in ("", "*") else int(vid_s, 16)
            pid = None if pid_s in ("", "*") or not sep else int(pid_s, 16)
        except ValueError:
            raise ValueError(f"invalid vendor:product id: {part!r} (use hex, e.g. 0483:df11)") from None
        if (vid is not None and not 0 <= vid <= 0xFFFF) or (pid is not None and not 0 <= pid <= 0xFFFF):
            raise ValueError(f"invalid vendor:product id: {part!r} (16-bit hex values)")
        ids.append((vid, pid))
    return UsbFilter(ids)


def parse_alt(text: str) -> int | str:
    """``-a``: a decimal or 0x number selects by bAlternateSetting, anything else by name."""
    t = text.strip()
    try:
        return int(t, 0)
    except ValueError:
        return text


def describe_ids(flt: UsbFilter) -> str:
    def half(v: int | None) -> str:
        return "*" if v is None else f"{v:04x}"
    return ",".join(f"{half(v)}:{half(p)}" for v, p in flt.ids)


@dataclass(frozen=True)
class DfuSelector:
    """What the user asked for; every field ``None``/empty means "any"."""

    ids: UsbFilter = field(default_factory=UsbFilter)
    serial: str | None = None
    interface: int | None = None
    alt: int | str | None = None

    def matches_device(self, info: DeviceInfo) -> bool:
        return self.ids.matches(info.vid, info.pid) and (self.serial is None or info.serial == self.serial)

    def alt_settings(self, info: DeviceInfo) -> list[DfuAltSetting]:
        """The device's DFU alternate settings that ``--intf`` and ``-a`` allow, in descriptor order."""
        out = []
        for a in info.alt_settings:
            if self.interface is not None and a.interface != self.interface:
                continue
            if isinstance(self.alt, int) and a.alt != self.alt:
                continue
            if isinstance(self.alt, str) and a.name != self.alt:
                continue
            out.append(a)
        return out

    def describe(self) -> str:
        parts = []
        if self.ids.ids:
            parts.append(f"-d {describe_ids(self.ids)}")
        if self.serial is not None:
            parts.append(f"--serial {self.serial}")
        if self.interface is not None:
            parts.append(f"--intf {self.interface}")
        if self.alt is not None:
            parts.append(f"-a {self.alt!r}" if isinstance(self.alt, str) else f"-a {self.alt}")
        return " ".join(parts) or "any DFU device"


def describe_device(info: DeviceInfo) -> str:
    alts = ", ".join(f"intf {a.interface} alt {a.alt} {a.name!r}"
                     + (" (run-time)" if a.protocol == DFU_PROTOCOL_RUNTIME else "")
                     for a in info.alt_settings)
    serial = f" serial {info.serial}" if info.serial else ""
    return f"{info.vid:04x}:{info.pid:04x}{serial} [{alts or 'no DFU interface'}]"


def select_alt(info: DeviceInfo, selector: DfuSelector) -> DfuAltSetting:
    """The alternate setting to use on a device; SelectionError names what the device offers."""
    if not info.alt_settings:
        raise SelectionError(f"{info.vid:04x}:{info.pid:04x} has no DFU interface (class 0xFE, subclass 0x01)")
    found = selector.alt_settings(info)
    if not found:
        raise SelectionError(f"no DFU alternate setting matches {selector.describe()} on "
                             f"{describe_device(info)}")
    return found[0]


def select_transport(transports: Sequence[Transport], selector: DfuSelector, *,
                     first: bool = True) -> Transport:
    """The device to talk to: the first DFU device the selector allows (``first``), or exactly one
    (``first=False``: dfu-util's rule, several matches are an error)."""
    seen = [t for t in transports if t.device_info().alt_settings]
    if not seen:
        if transports:
            raise SelectionError("; ".join(f"{t.device_info().vid:04x}:{t.device_info().pid:04x} has no DFU "
                                           "interface (class 0xFE, subclass 0x01)" for t in transports))
        raise SelectionError("no DFU capable USB device found")
    matching = [t for t in seen if selector.matches_device(t.device_info())
                and selector.alt_settings(t.device_info())]
    if not matching:
        offered = "; ".join(describe_device(t.device_info()) for t in seen)
        raise SelectionError(f"no DFU device matches {selector.describe()} (found {offered})")
    if len(matching) > 1 and not first:
        raise SelectionError("more than one DFU capable USB device found: use -d, -S or --list")
    return matching[0]

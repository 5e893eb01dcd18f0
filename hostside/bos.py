"""Binary Object Store, WebUSB and Microsoft OS 2.0 descriptors: read, parse, print.

* BOS (USB 3.2 §9.6.2, introduced for USB 2.0 by the LPM ECN; a host reads it
  when bcdUSB >= 0x0201): a 5-byte header, then device capability descriptors
  (type 0x10); capability type 0x05 is a *platform* capability named by a UUID.
* WebUSB (the WebUSB API's "WebUSB Platform Capability Descriptor", "GET_URL" and "URL
  Descriptor"): platform UUID {3408B638-09A9-47A0-8BFD-A0768815B665},
  bcdVersion, bVendorCode, iLandingPage; the landing page is the URL descriptor
  returned by the vendor request (bmRequestType 0xC0, bRequest = bVendorCode,
  wValue = index, wIndex = 2 GET_URL): bLength, 0x03, bScheme (0 http, 1 https,
  255 as written), UTF-8 URL.
* Microsoft OS 2.0 (Microsoft OS 2.0 Descriptors Specification: the platform
  capability descriptor, the descriptor set information structure and the
  MS_OS_20_DESCRIPTOR_INDEX request): platform UUID {D8DD60DF-4589-4CC7-9CD2-659D9E648A9F}; each 8-byte
  descriptor-set information block gives dwWindowsVersion, the set's total
  length, bMS_VendorCode and bAltEnumCode; the set itself comes from the vendor
  request (0xC0, bMS_VendorCode, wValue 0, wIndex 7 MS_OS_20_DESCRIPTOR_INDEX).

UUIDs are stored on the wire in the little-endian field order of RFC 4122's
GUID form (Python's ``uuid.UUID.bytes_le``).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

DT_BOS = 0x0F
DT_DEVICE_CAPABILITY = 0x10
CAPABILITY_NAMES = {0x01: "Wireless USB", 0x02: "USB 2.0 Extension", 0x03: "SuperSpeed USB",
                    0x04: "Container ID", 0x05: "Platform", 0x0A: "SuperSpeedPlus USB"}
CAP_PLATFORM = 0x05
WEBUSB_UUID = uuid.UUID("3408b638-09a9-47a0-8bfd-a0768815b665")
MSOS20_UUID = uuid.UUID("d8dd60df-4589-4cc7-9cd2-659d9e648a9f")
WEBUSB_GET_URL = 2  # WebUSB GET_URL, wIndex of the vendor request
MSOS20_DESCRIPTOR_INDEX = 7  # MS OS 2.0 MS_OS_20_DESCRIPTOR_INDEX, wIndex of the vendor request
URL_SCHEMES = {0: "http://", 1: "https://", 255: ""}
MSOS20_TYPES = {0x00: "set header", 0x01: "configuration subset header", 0x02: "function subset header",
                0x03: "compatible ID", 0x04: "registry property", 0x05: "minimum resume time",
                0x06: "model ID", 0x07: "CCGP device", 0x08: "vendor revision"}
REG_TYPES = {1: "REG_SZ", 2: "REG_EXPAND_SZ", 3: "REG_BINARY", 4: "REG_DWORD_LITTLE_ENDIAN",
             5: "REG_DWORD_BIG_ENDIAN", 6: "REG_LINK", 7: "REG_MULTI_SZ"}


class BosError(ValueError):
    """Bytes that are not a well-framed BOS descriptor."""


@dataclass(frozen=True)
class WebUsbCapability:
    bcd_version: int
    vendor_code: int
    landing_page: int


@dataclass(frozen=True)
class MsOs20SetInfo:
    windows_version: int
    total_length: int
    vendor_code: int
    alt_enum_code: int


@dataclass
class Capability:
    """One device capability descriptor; platform ones are decoded when their UUID is known."""

    type: int
    raw: bytes
    platform_uuid: uuid.UUID | None = None
    webusb: WebUsbCapability | None = None
    msos20: list[MsOs20SetInfo] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        """The capability-dependent bytes after bDevCapabilityType (and, for platform ones, the UUID)."""
        return self.raw[20:] if self.platform_uuid is not None else self.raw[3:]


@dataclass
class Bos:
    raw: bytes
    capabilities: list[Capability]

    @property
    def total_length(self) -> int:
        return struct.unpack_from("<H", self.raw, 2)[0]


def parse_bos(raw: bytes) -> Bos:
    """The BOS header and its capabilities (BosError if not framed as one)."""
    raw = bytes(raw)
    if len(raw) < 5 or raw[1] != DT_BOS or raw[0] < 5:
        raise BosError(f"not a BOS descriptor: {raw[:5].hex(' ')}")
    total, count = struct.unpack_from("<HB", raw, 2)
    body = raw[:total]
    caps: list[Capability] = []
    i = raw[0]
    while i < len(body) and len(caps) < count:
        length = body[i]
        if length < 3 or i + length > len(body) or body[i + 1] != DT_DEVICE_CAPABILITY:
            raise BosError(f"bad device capability descriptor at offset {i}")
        caps.append(_capability(body[i:i + length]))
        i += length
    return Bos(body, caps)


def _capability(raw: bytes) -> Capability:
    cap = Capability(raw[2], raw)
    if cap.type != CAP_PLATFORM or len(raw) < 20:
        return cap
    cap.platform_uuid = uuid.UUID(bytes_le=raw[4:20])
    data = raw[20:]
    if cap.platform_uuid == WEBUSB_UUID and len(data) >= 4:
        bcd, vendor, page = struct.unpack_from("<HBB", data)
        cap.webusb = WebUsbCapability(bcd, vendor, page)
    elif cap.platform_uuid == MSOS20_UUID:
        for off in range(0, len(data) - 7, 8):
            cap.msos20.append(MsOs20SetInfo(*struct.unpack_from("<IHBB", data, off)))
    return cap


def parse_url_descriptor(raw: bytes) -> str:
    """The WebUSB URL descriptor: scheme byte plus UTF-8 text."""
    if len(raw) < 3 or raw[1] != 0x03:
        raise BosError(f"not a URL descriptor: {bytes(raw[:3]).hex(' ')}")
    return URL_SCHEMES.get(raw[2], f"<scheme {raw[2]}>") + bytes(raw[3:raw[0]]).decode("utf-8", "replace")


@dataclass(frozen=True)
class MsOs20Item:
    kind: str
    length: int
    fields: dict[str, object]


def parse_msos20_set(raw: bytes) -> list[MsOs20Item]:
    """The descriptors of an MS OS 2.0 descriptor set, in order (header, subset headers, features)."""
    raw = bytes(raw)
    items: list[MsOs20Item] = []
    i = 0
    while i + 4 <= len(raw):
        length, dtype = struct.unpack_from("<HH", raw, i)
        if length < 4 or i + length > len(raw):
            raise BosError(f"bad MS OS 2.0 descriptor at offset {i}")
        body = raw[i + 4:i + length]
        fields: dict[str, object] = {}
        if dtype == 0x00 and len(body) >= 6:
            fields["dwWindowsVersion"], fields["wTotalLength"] = struct.unpack_from("<IH", body)
        elif dtype == 0x03 and len(body) >= 16:
            fields["CompatibleID"] = body[:8].rstrip(b"\0").decode("ascii", "replace")
            fields["SubCompatibleID"] = body[8:16].rstrip(b"\0").decode("ascii", "replace")
        elif dtype == 0x04 and len(body) >= 4:
            kind, name_len = struct.unpack_from("<HH", body)
            name = body[4:4 + name_len].decode("utf-16-le", "replace").rstrip("\0")
            (data_len,) = struct.unpack_from("<H", body, 4 + name_len)
            data = body[6 + name_len:6 + name_len + data_len]
            value: object = data.hex()
            if kind in (1, 2, 6, 7):
                value = [v for v in data.decode("utf-16-le", "replace").split("\0") if v]
            fields.update(PropertyDataType=REG_TYPES.get(kind, str(kind)), PropertyName=name, PropertyData=value)
        elif dtype in (0x01, 0x02) and len(body) >= 2:
            fields["first"] = body[0]
        items.append(MsOs20Item(MSOS20_TYPES.get(dtype, f"type 0x{dtype:02x}"), length, fields))
        i += length
    return items


# -- reading from a device --------------------------------------------------------------------------
ControlIn = Callable[[int, int, int, int, int], bytes]  # bmRequestType, bRequest, wValue, wIndex, wLength


@dataclass
class BosReport:
    """What a host learns from the BOS and the vendor requests it names; failures kept as text."""

    bos: Bos | None = None
    error: str | None = None
    urls: dict[int, str] = field(default_factory=dict)  # iLandingPage -> URL
    url_errors: dict[int, str] = field(default_factory=dict)
    msos20_sets: dict[int, list[MsOs20Item]] = field(default_factory=dict)  # bMS_VendorCode -> descriptors
    msos20_errors: dict[int, str] = field(default_factory=dict)


def read_bos(control_in: ControlIn) -> BosReport:
    """GET_DESCRIPTOR(BOS) for 5 bytes then wTotalLength, then each WebUSB landing page and MS OS 2.0
    descriptor set it announces.  Any failure (a stall, most often) is recorded, never raised."""
    report = BosReport()
    try:
        head = control_in(0x80, 6, DT_BOS << 8, 0, 5)
        if len(head) < 5:
            raise BosError(f"BOS header is {len(head)} bytes")
        total = struct.unpack_from("<H", head, 2)[0]
        report.bos = parse_bos(control_in(0x80, 6, DT_BOS << 8, 0, total))
    except Exception as exc:  # noqa: BLE001 - a device without BOS stalls; any failure is reported
        report.error = _why(exc)
        return report
    for cap in report.bos.capabilities:
        if cap.webusb is not None and cap.webusb.landing_page:
            page = cap.webusb.landing_page
            try:
                report.urls[page] = parse_url_descriptor(control_in(0xC0, cap.webusb.vendor_code, page,
                                                                    WEBUSB_GET_URL, 255))
            except Exception as exc:  # noqa: BLE001
                report.url_errors[page] = _why(exc)
        for info in cap.msos20:
            try:
                raw = control_in(0xC0, info.vendor_code, 0, MSOS20_DESCRIPTOR_INDEX, info.total_length)
                report.msos20_sets[info.vendor_code] = parse_msos20_set(raw)
            except Exception as exc:  # noqa: BLE001
                report.msos20_errors[info.vendor_code] = _why(exc)
    return report


def _why(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "request stalled" if "stall" in text.lower() or "pipe" in text.lower() else text


# -- lsusb -v style ---------------------------------------------------------------------------------
def render_bos(report: BosReport) -> list[str]:
    """Lines in the manner of ``lsusb -v``'s "Binary Object Store Descriptor" block."""
    if report.bos is None:
        return [f"Binary Object Store Descriptor: none ({report.error})"] if report.error else []
    bos = report.bos
    lines = [
        "Binary Object Store Descriptor:",
        f"  bLength             {bos.raw[0]:5d}",
        f"  bDescriptorType     {bos.raw[1]:5d}",
        f"  wTotalLength       0x{bos.total_length:04x}",
        f"  bNumDeviceCaps      {bos.raw[4]:5d}",
    ]
    for cap in bos.capabilities:
        lines += [
            f"  {CAPABILITY_NAMES.get(cap.type, f'Unknown ({cap.type})')} Device Capability:",
            f"    bLength             {cap.raw[0]:5d}",
            f"    bDescriptorType     {cap.raw[1]:5d}",
            f"    bDevCapabilityType  {cap.type:5d}",
        ]
        if cap.platform_uuid is None:
            lines.append("    data                " + cap.data.hex(" "))
            continue
        lines.append(f"    PlatformCapabilityUUID    {{{cap.platform_uuid}}}")
        if cap.webusb is not None:
            w = cap.webusb
            page = report.urls.get(w.landing_page) or (
                f"<{report.url_errors[w.landing_page]}>" if w.landing_page in report.url_errors else "")
            lines += [
                "      WebUSB:",
                f"        bcdVersion    {w.bcd_version >> 8:x}.{w.bcd_version & 0xFF:02x}",
                f"        bVendorCode   {w.vendor_code:5d}",
                f"        iLandingPage  {w.landing_page:5d} {page}".rstrip(),
            ]
        elif cap.msos20:
            for info in cap.msos20:
                lines += [
                    "      Microsoft OS 2.0 descriptor set:",
                    f"        dwWindowsVersion              0x{info.windows_version:08x}",
                    f"        wMSOSDescriptorSetTotalLength {info.total_length:5d}",
                    f"        bMS_VendorCode                {info.vendor_code:5d}",
                    f"        bAltEnumCode                  {info.alt_enum_code:5d}",
                ]
                if info.vendor_code in report.msos20_errors:
                    lines.append(f"        <descriptor set: {report.msos20_errors[info.vendor_code]}>")
                for item in report.msos20_sets.get(info.vendor_code, []):
                    detail = ", ".join(f"{k} {_show(v)}" for k, v in item.fields.items())
                    lines.append(f"        {item.kind} ({item.length} bytes){': ' + detail if detail else ''}")
        else:
            lines.append("    CapabilityData      " + cap.data.hex(" "))
    return lines


def _show(value: object) -> str:
    if isinstance(value, int) and value > 255:
        return f"0x{value:08x}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)

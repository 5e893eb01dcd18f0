"""USB descriptors: each declared once, parsed and built from that declaration.

Every descriptor is a dataclass whose fields carry their wire format
(``u8()`` / ``u16()``, little-endian, in wire order).  :meth:`Descriptor.parse`
and :meth:`Descriptor.build` are generic over that declaration, and keep
whatever the declaration does not cover (bytes past the declared fields,
fields cut off by a short ``bLength``) so that ``build(parse(raw)) == raw``
for any well-framed input — including descriptors real devices get wrong.

A configuration is parsed into a tree (:class:`Configuration` →
:class:`Interface` per alternate setting → :class:`Endpoint`), each node
keeping the class-specific descriptors that follow it in wire order, so the
tree also builds back to the exact bytes.

References: USB 2.0 §9.6 (standard descriptors), DFU 1.1 §4.1.3 (functional
descriptor, type 0x21), usbutils' ``lsusb -v`` output format.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

DT_DEVICE = 0x01
DT_CONFIGURATION = 0x02
DT_STRING = 0x03
DT_INTERFACE = 0x04
DT_ENDPOINT = 0x05
DT_DFU_FUNCTIONAL = 0x21

CLASS_APPLICATION_SPECIFIC = 0xFE
SUBCLASS_DFU = 0x01


class DescriptorError(ValueError):
    """Bytes that cannot be framed as descriptors (bLength < 2 or past the end)."""


def u8(default: int | None = 0) -> Any:
    return field(default=default, metadata={"fmt": "B"})


def u16(default: int | None = 0) -> Any:
    return field(default=default, metadata={"fmt": "H"})


D = TypeVar("D", bound="Descriptor")


@dataclass
class Descriptor:
    """Base of the declared descriptors.  ``extra`` holds bytes past the
    declared fields (within bLength)."""

    TYPE: ClassVar[int] = 0

    def _wire_fields(self) -> Iterator[dataclasses.Field[Any]]:
        for f in dataclasses.fields(self):
            if "fmt" in f.metadata:
                yield f

    @classmethod
    def wire_fields(cls) -> list[tuple[str, str]]:
        return [(f.name, f.metadata["fmt"]) for f in dataclasses.fields(cls) if "fmt" in f.metadata]

    @classmethod
    def parse(cls: type[D], raw: bytes) -> D:
        """Parse exactly one descriptor; ``raw`` is the descriptor's bytes."""
        raw = bytes(raw)
        if len(raw) < 2:
            raise DescriptorError(f"{cls.__name__}: {len(raw)} bytes is too short")
        values: dict[str, Any] = {}
        offset = 0
        cut = False
        for name, fmt in cls.wire_fields():
            size = struct.calcsize("<" + fmt)
            if cut or offset + size > len(raw):
                values[name] = None  # cut off by a short bLength: so is every later field
                cut = True
                continue
            values[name] = struct.unpack_from("<" + fmt, raw, offset)[0]
            offset += size
        values.update(cls._parse_tail(raw[offset:]))
        return cls(**values)

    @classmethod
    def _parse_tail(cls, tail: bytes) -> dict[str, Any]:
        return {"extra": tail}

    def build(self) -> bytes:
        out = bytearray()
        for f in self._wire_fields():
            value = getattr(self, f.name)
            if value is None:
                break
            out += struct.pack("<" + f.metadata["fmt"], value)
        return bytes(out) + self._build_tail()

    def _build_tail(self) -> bytes:
        return bytes(getattr(self, "extra", b""))

    @classmethod
    def make(cls: type[D], **values: Any) -> D:
        """A new, well-formed descriptor: bLength and bDescriptorType filled in."""
        desc = cls(bLength=0, bDescriptorType=cls.TYPE, **values)
        desc.bLength = len(desc.build())  # type: ignore[attr-defined]
        return desc


@dataclass
class DeviceDescriptor(Descriptor):
    TYPE: ClassVar[int] = DT_DEVICE
    bLength: int = u8(18)
    bDescriptorType: int = u8(DT_DEVICE)
    bcdUSB: int = u16(0x0200)
    bDeviceClass: int = u8()
    bDeviceSubClass: int = u8()
    bDeviceProtocol: int = u8()
    bMaxPacketSize0: int = u8(64)
    idVendor: int = u16()
    idProduct: int = u16()
    bcdDevice: int = u16()
    iManufacturer: int = u8()
    iProduct: int = u8()
    iSerialNumber: int = u8()
    bNumConfigurations: int = u8(1)
    extra: bytes = b""


@dataclass
class ConfigurationDescriptor(Descriptor):
    TYPE: ClassVar[int] = DT_CONFIGURATION
    bLength: int = u8(9)
    bDescriptorType: int = u8(DT_CONFIGURATION)
    wTotalLength: int = u16()
    bNumInterfaces: int = u8()
    bConfigurationValue: int = u8(1)
    iConfiguration: int = u8()
    bmAttributes: int = u8(0x80)
    bMaxPower: int = u8(50)  # in 2 mA units at full speed
    extra: bytes = b""


@dataclass
class InterfaceDescriptor(Descriptor):
    TYPE: ClassVar[int] = DT_INTERFACE
    bLength: int = u8(9)
    bDescriptorType: int = u8(DT_INTERFACE)
    bInterfaceNumber: int = u8()
    bAlternateSetting: int = u8()
    bNumEndpoints: int = u8()
    bInterfaceClass: int = u8()
    bInterfaceSubClass: int = u8()
    bInterfaceProtocol: int = u8()
    iInterface: int = u8()
    extra: bytes = b""

    @property
    def is_dfu(self) -> bool:
        return self.bInterfaceClass == CLASS_APPLICATION_SPECIFIC and self.bInterfaceSubClass == SUBCLASS_DFU


@dataclass
class EndpointDescriptor(Descriptor):
    TYPE: ClassVar[int] = DT_ENDPOINT
    bLength: int = u8(7)
    bDescriptorType: int = u8(DT_ENDPOINT)
    bEndpointAddress: int = u8()
    bmAttributes: int = u8()
    wMaxPacketSize: int = u16(64)
    bInterval: int = u8()
    # Audio-class endpoints are 9 bytes long; others stop after bInterval.
    bRefresh: int | None = u8(None)
    bSynchAddress: int | None = u8(None)
    extra: bytes = b""


@dataclass
class DfuFunctionalDescriptor(Descriptor):
    """DFU 1.1 §4.1.3.  DFU 1.0 devices stop after wTransferSize (7 bytes)."""

    TYPE: ClassVar[int] = DT_DFU_FUNCTIONAL
    bLength: int = u8(9)
    bDescriptorType: int = u8(DT_DFU_FUNCTIONAL)
    bmAttributes: int = u8()
    wDetachTimeOut: int = u16()
    wTransferSize: int = u16()
    bcdDFUVersion: int | None = u16(None)
    extra: bytes = b""

    can_download = property(lambda self: bool(self.bmAttributes & 0x01))
    can_upload = property(lambda self: bool(self.bmAttributes & 0x02))
    manifestation_tolerant = property(lambda self: bool(self.bmAttributes & 0x04))
    will_detach = property(lambda self: bool(self.bmAttributes & 0x08))


@dataclass
class StringDescriptor(Descriptor):
    """String descriptor: UTF-16LE text, or (index 0) the list of LANGIDs."""

    TYPE: ClassVar[int] = DT_STRING
    bLength: int = u8()
    bDescriptorType: int = u8(DT_STRING)
    payload: bytes = b""

    @classmethod
    def _parse_tail(cls, tail: bytes) -> dict[str, Any]:
        return {"payload": tail}

    def _build_tail(self) -> bytes:
        return bytes(self.payload)

    @property
    def string(self) -> str:
        return self.payload[: len(self.payload) & ~1].decode("utf-16-le", errors="replace")

    @property
    def langids(self) -> list[int]:
        return [struct.unpack_from("<H", self.payload, i)[0] for i in range(0, len(self.payload) - 1, 2)]

    @classmethod
    def from_text(cls, text: str) -> StringDescriptor:
        payload = text.encode("utf-16-le")
        return cls(2 + len(payload), DT_STRING, payload)

    @classmethod
    def from_langids(cls, langids: list[int]) -> StringDescriptor:
        payload = b"".join(struct.pack("<H", lang) for lang in langids)
        return cls(2 + len(payload), DT_STRING, payload)


@dataclass
class UnknownDescriptor(Descriptor):
    """A descriptor this module does not declare (class or vendor specific)."""

    bLength: int = u8()
    bDescriptorType: int = u8()
    extra: bytes = b""


# -- configuration tree ----------------------------------------------------------------


@dataclass
class Endpoint:
    descriptor: EndpointDescriptor
    extra: list[Descriptor] = field(default_factory=list)


@dataclass
class Interface:
    """One alternate setting of an interface, with what follows it on the wire."""

    descriptor: InterfaceDescriptor
    extra: list[Descriptor] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def dfu_functional(self) -> DfuFunctionalDescriptor | None:
        for d in self.extra:
            if isinstance(d, DfuFunctionalDescriptor):
                return d
        return None


@dataclass
class Configuration:
    descriptor: ConfigurationDescriptor
    extra: list[Descriptor] = field(default_factory=list)  # before the first interface
    interfaces: list[Interface] = field(default_factory=list)  # every alt setting, wire order
    junk: bytes = b""  # trailing bytes that do not frame as a descriptor

    def build(self) -> bytes:
        out = bytearray(self.descriptor.build())
        for d in self.extra:
            out += d.build()
        for intf in self.interfaces:
            out += intf.descriptor.build()
            for d in intf.extra:
                out += d.build()
            for ep in intf.endpoints:
                out += ep.descriptor.build()
                for d in ep.extra:
                    out += d.build()
        return bytes(out) + self.junk

    @property
    def dfu_functional(self) -> DfuFunctionalDescriptor | None:
        for intf in self.interfaces:
            if intf.dfu_functional is not None:
                return intf.dfu_functional
        return None

    def interface_numbers(self) -> list[int]:
        """bInterfaceNumber values in wire order, each once."""
        seen: list[int] = []
        for intf in self.interfaces:
            if intf.descriptor.bInterfaceNumber not in seen:
                seen.append(intf.descriptor.bInterfaceNumber)
        return seen

    def alt_settings(self, number: int) -> list[Interface]:
        return [i for i in self.interfaces if i.descriptor.bInterfaceNumber == number]


def split_descriptors(raw: bytes) -> tuple[list[bytes], bytes]:
    """Frame ``raw`` by bLength; returns the descriptors and any junk left over."""
    out = []
    i = 0
    while i + 2 <= len(raw):
        length = raw[i]
        if length < 2 or i + length > len(raw):
            break
        out.append(raw[i : i + length])
        i += length
    return out, raw[i:]


def parse_configuration(raw: bytes) -> Configuration:
    """Parse a whole GET_DESCRIPTOR(CONFIGURATION) answer into a tree."""
    pieces, junk = split_descriptors(bytes(raw))
    if not pieces or pieces[0][1] != DT_CONFIGURATION:
        raise DescriptorError("a configuration must start with a configuration descriptor")
    config = Configuration(ConfigurationDescriptor.parse(pieces[0]), junk=junk)
    current_intf: Interface | None = None
    current_ep: Endpoint | None = None
    for piece in pieces[1:]:
        dtype = piece[1]
        if dtype == DT_INTERFACE:
            current_intf = Interface(InterfaceDescriptor.parse(piece))
            current_ep = None
            config.interfaces.append(current_intf)
        elif dtype == DT_ENDPOINT and current_intf is not None:
            current_ep = Endpoint(EndpointDescriptor.parse(piece))
            current_intf.endpoints.append(current_ep)
        else:
            # 0x21 means "DFU functional" only inside a DFU interface (it is
            # the HID descriptor elsewhere): the meaning depends on context.
            if dtype == DT_DFU_FUNCTIONAL and current_intf is not None and current_intf.descriptor.is_dfu:
                desc: Descriptor = DfuFunctionalDescriptor.parse(piece)
            else:
                desc = UnknownDescriptor.parse(piece)
            if current_ep is not None:
                current_ep.extra.append(desc)
            elif current_intf is not None:
                current_intf.extra.append(desc)
            else:
                config.extra.append(desc)
    return config


def build_configuration(config: Configuration) -> bytes:
    return config.build()


def parse(raw: bytes) -> Descriptor | Configuration:
    """Parse one descriptor blob by its type byte (a configuration as a tree)."""
    raw = bytes(raw)
    if len(raw) < 2:
        raise DescriptorError("too short")
    kinds: dict[int, type[Descriptor]] = {
        DT_DEVICE: DeviceDescriptor,
        DT_STRING: StringDescriptor,
        DT_INTERFACE: InterfaceDescriptor,
        DT_ENDPOINT: EndpointDescriptor,
        DT_DFU_FUNCTIONAL: DfuFunctionalDescriptor,
    }
    if raw[1] == DT_CONFIGURATION:
        return parse_configuration(raw)
    return kinds.get(raw[1], UnknownDescriptor).parse(raw)


def build(obj: Descriptor | Configuration) -> bytes:
    return obj.build()


# -- lsusb -v style rendering -----------------------------------------------------------

VENDORS = {0x0483: "STMicroelectronics", 0x1D50: "OpenMoko, Inc.", 0x1209: "Generic"}
PRODUCTS = {(0x0483, 0xDF11): "STM Device in DFU Mode", (0x0483, 0x5740): "Virtual COM Port"}
CLASSES = {
    0x00: "(Defined at Interface level)",
    0x02: "Communications",
    0x03: "Human Interface Device",
    0x08: "Mass Storage",
    0x09: "Hub",
    0x0A: "CDC Data",
    0xEF: "Miscellaneous Device",
    0xFE: "Application Specific Interface",
    0xFF: "Vendor Specific Class",
}
SUBCLASSES = {(0xFE, 0x01): "Device Firmware Update", (0xFF, 0xFF): "Vendor Specific Subclass"}
PROTOCOLS = {(0xFF, 0xFF, 0xFF): "Vendor Specific Protocol"}
_TRANSFER = ("Control", "Isochronous", "Bulk", "Interrupt")
_SYNC = ("None", "Asynchronous", "Adaptive", "Synchronous")
_USAGE = ("Data", "Feedback", "Implicit feedback Data", "(reserved)")


def _bcd(value: int) -> str:
    return f"{value >> 8:2x}.{value & 0xFF:02x}"


def render_lsusb(
    device: DeviceDescriptor,
    configurations: list[Configuration],
    strings: Mapping[int, str],
    *,
    bus: int = 1,
    address: int = 1,
    device_status: int | None = None,
    string_errors: Mapping[int, str] | None = None,
    extra_lines: list[str] | None = None,
) -> str:
    """The device the way ``lsusb -v`` (usbutils) prints it.

    A string whose request failed shows as ``<string request stalled>`` (lsusb
    leaves it blank, which reads as an empty string); ``extra_lines`` (the BOS
    block, :func:`hostside.bos.render_bos`) come after the configurations."""
    errors = string_errors or {}

    def s(index: int | None) -> str:
        if not index:
            return ""
        if index in errors:
            return f"<string request {errors[index]}>"
        return strings.get(index, "")

    vendor = VENDORS.get(device.idVendor, "")
    product = PRODUCTS.get((device.idVendor, device.idProduct), "")
    lines = [
        f"Bus {bus:03d} Device {address:03d}: ID {device.idVendor:04x}:{device.idProduct:04x} "
        f"{vendor} {product}".rstrip(),
        "Device Descriptor:",
        f"  bLength             {device.bLength:5d}",
        f"  bDescriptorType     {device.bDescriptorType:5d}",
        f"  bcdUSB              {_bcd(device.bcdUSB)}",
        f"  bDeviceClass        {device.bDeviceClass:5d} {CLASSES.get(device.bDeviceClass, '')}",
        f"  bDeviceSubClass     {device.bDeviceSubClass:5d} "
        f"{SUBCLASSES.get((device.bDeviceClass, device.bDeviceSubClass), '')}",
        f"  bDeviceProtocol     {device.bDeviceProtocol:5d} "
        f"{PROTOCOLS.get((device.bDeviceClass, device.bDeviceSubClass, device.bDeviceProtocol), '')}",
        f"  bMaxPacketSize0     {device.bMaxPacketSize0:5d}",
        f"  idVendor           0x{device.idVendor:04x} {vendor}",
        f"  idProduct          0x{device.idProduct:04x} {product}",
        f"  bcdDevice           {_bcd(device.bcdDevice)}",
        f"  iManufacturer       {device.iManufacturer:5d} {s(device.iManufacturer)}",
        f"  iProduct            {device.iProduct:5d} {s(device.iProduct)}",
        f"  iSerial             {device.iSerialNumber:5d} {s(device.iSerialNumber)}",
        f"  bNumConfigurations  {device.bNumConfigurations:5d}",
    ]
    for config in configurations:
        lines += _render_config(config, s)
    lines += extra_lines or []
    if device_status is not None:
        lines.append(f"Device Status:     0x{device_status:04x}")
        lines.append("  Self Powered" if device_status & 1 else "  (Bus Powered)")
        if device_status & 2:
            lines.append("  Remote Wakeup Enabled")
    return "\n".join(lines) + "\n"


def _render_config(config: Configuration, s: Any) -> list[str]:
    c = config.descriptor
    lines = [
        "  Configuration Descriptor:",
        f"    bLength             {c.bLength:5d}",
        f"    bDescriptorType     {c.bDescriptorType:5d}",
        f"    wTotalLength       0x{c.wTotalLength:04x}",
        f"    bNumInterfaces      {c.bNumInterfaces:5d}",
        f"    bConfigurationValue {c.bConfigurationValue:5d}",
        f"    iConfiguration      {c.iConfiguration:5d} {s(c.iConfiguration)}",
        f"    bmAttributes         0x{c.bmAttributes:02x}",
    ]
    if not c.bmAttributes & 0x80:
        lines.append("      (Missing must-be-set bit!)")
    lines.append("      Self Powered" if c.bmAttributes & 0x40 else "      (Bus Powered)")
    if c.bmAttributes & 0x20:
        lines.append("      Remote Wakeup")
    lines.append(f"    MaxPower            {c.bMaxPower * 2:5d}mA")
    for d in config.extra:
        lines.append("    ** UNRECOGNIZED: " + " ".join(f"{b:02x}" for b in d.build()))
    for intf in config.interfaces:
        lines += _render_interface(intf, s)
    return lines


def _render_interface(intf: Interface, s: Any) -> list[str]:
    i = intf.descriptor
    cls = i.bInterfaceClass
    lines = [
        "    Interface Descriptor:",
        f"      bLength             {i.bLength:5d}",
        f"      bDescriptorType     {i.bDescriptorType:5d}",
        f"      bInterfaceNumber    {i.bInterfaceNumber:5d}",
        f"      bAlternateSetting   {i.bAlternateSetting:5d}",
        f"      bNumEndpoints       {i.bNumEndpoints:5d}",
        f"      bInterfaceClass     {cls:5d} {CLASSES.get(cls, '') if cls else ''}",
        f"      bInterfaceSubClass  {i.bInterfaceSubClass:5d} {SUBCLASSES.get((cls, i.bInterfaceSubClass), '')}",
        f"      bInterfaceProtocol  {i.bInterfaceProtocol:5d} "
        f"{PROTOCOLS.get((cls, i.bInterfaceSubClass, i.bInterfaceProtocol), '')}",
        f"      iInterface          {i.iInterface:5d} {s(i.iInterface)}",
    ]
    for d in intf.extra:
        if isinstance(d, DfuFunctionalDescriptor):
            lines += _render_dfu(d)
        else:
            lines.append("      ** UNRECOGNIZED: " + " ".join(f"{b:02x}" for b in d.build()))
    for ep in intf.endpoints:
        lines += _render_endpoint(ep)
    return lines


def _render_dfu(d: DfuFunctionalDescriptor) -> list[str]:
    attrs = d.bmAttributes
    lines = [
        "      Device Firmware Upgrade Interface Descriptor:",
        f"        bLength                         {d.bLength:5d}",
        f"        bDescriptorType                 {d.bDescriptorType:5d}",
        f"        bmAttributes                    {attrs:5d}",
    ]
    if attrs & 0xF0:
        lines.append("          (unknown attributes!)")
    lines += [
        f"          Will {'' if attrs & 0x08 else 'Not '}Detach",
        f"          Manifestation {'Tolerant' if attrs & 0x04 else 'Intolerant'}",
        f"          Upload {'Supported' if attrs & 0x02 else 'Unsupported'}",
        f"          Download {'Supported' if attrs & 0x01 else 'Unsupported'}",
        f"        wDetachTimeout                  {d.wDetachTimeOut or 0:5d} milliseconds",
        f"        wTransferSize                   {d.wTransferSize or 0:5d} bytes",
    ]
    if d.bcdDFUVersion is not None:  # DFU 1.0 descriptors have no version field
        v = d.bcdDFUVersion
        lines.append(f"        bcdDFUVersion                   {v >> 8:x}.{v & 0xFF:02x}")
    return lines


def _render_endpoint(ep: Endpoint) -> list[str]:
    e = ep.descriptor
    wmax = e.wMaxPacketSize
    attrs = e.bmAttributes
    lines = [
        "      Endpoint Descriptor:",
        f"        bLength             {e.bLength:5d}",
        f"        bDescriptorType     {e.bDescriptorType:5d}",
        f"        bEndpointAddress     0x{e.bEndpointAddress:02x}  EP {e.bEndpointAddress & 0x0F} "
        f"{'IN' if e.bEndpointAddress & 0x80 else 'OUT'}",
        f"        bmAttributes        {attrs:5d}",
        f"          Transfer Type            {_TRANSFER[attrs & 3]}",
        f"          Synch Type               {_SYNC[(attrs >> 2) & 3]}",
        f"          Usage Type               {_USAGE[(attrs >> 4) & 3]}",
        f"        wMaxPacketSize     0x{wmax:04x}  {('1x', '2x', '3x', '(??)')[(wmax >> 11) & 3]} "
        f"{wmax & 0x7FF} bytes",
        f"        bInterval           {e.bInterval:5d}",
    ]
    if e.bLength == 9 and e.bRefresh is not None:
        lines.append(f"        bRefresh            {e.bRefresh:5d}")
        lines.append(f"        bSynchAddress       {e.bSynchAddress or 0:5d}")
    for d in ep.extra:
        lines.append("        ** UNRECOGNIZED: " + " ".join(f"{b:02x}" for b in d.build()))
    return lines

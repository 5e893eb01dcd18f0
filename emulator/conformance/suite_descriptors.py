"""Enumeration and descriptors: what any host reads before it sends a DFU request.

USB 2.0 §9.6 (device, configuration, interface, string descriptors), DFU 1.1 §4.2
(the DFU-mode interface and its functional descriptor), UM0424 §4.3.2 (the DfuSe
memory-layout string).  One enumeration serves every test here.
"""

from __future__ import annotations

import struct

import pytest

from emulator.bootflow.checks import layout_problems
from emulator.conformance.target import ConformanceTarget, DeviceProfile

DT_INTERFACE, DT_DFU_FUNCTIONAL = 0x04, 0x21
USB_VERSIONS = (0x0110, 0x0200, 0x0201, 0x0210)
DFU_VERSIONS = (0x0100, 0x0101, 0x0110, 0x011A)


def _descriptors(raw: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset + 2 <= len(raw):
        length = raw[offset]
        if length < 2:
            break
        out.append(raw[offset:offset + length])
        offset += length
    return out


def _functional(device: DeviceProfile) -> bytes:
    """The DFU functional descriptor that follows the selected DFU interface (DFU 1.1 §4.2.3)."""
    for raw in device.usb.raw_configurations:
        current = None
        for d in _descriptors(raw):
            if d[1] == DT_INTERFACE and len(d) >= 9:
                current = (d[2], d[3])
            elif d[1] == DT_DFU_FUNCTIONAL and current == (device.alt.interface, device.alt.alt):
                return d
        # Some devices give one functional descriptor after the last alt setting of the interface.
        for d in _descriptors(raw):
            if d[1] == DT_DFU_FUNCTIONAL:
                return d
    pytest.fail("no DFU functional descriptor (type 0x21) in the configuration descriptor")


def test_device_descriptor_is_well_formed(device: DeviceProfile) -> None:
    raw = device.usb.raw_device
    assert len(raw) == 18 and raw[0] == 18 and raw[1] == 1, f"device descriptor {raw.hex(' ')}: not 18 bytes of type 1"
    bcd_usb = struct.unpack_from("<H", raw, 2)[0]
    assert bcd_usb in USB_VERSIONS, f"bcdUSB 0x{bcd_usb:04X} is no USB version a full-speed device declares"
    assert raw[7] in (8, 16, 32, 64), f"bMaxPacketSize0 {raw[7]} is not 8, 16, 32 or 64 (USB 2.0 §9.6.1)"
    assert raw[17] >= 1, "bNumConfigurations is 0"


def test_configuration_descriptor_length_matches_its_contents(device: DeviceProfile) -> None:
    for index, raw in enumerate(device.usb.raw_configurations):
        total = struct.unpack_from("<H", raw, 2)[0]
        parts = _descriptors(raw)
        assert sum(len(p) for p in parts) == total == len(raw), \
            f"configuration {index}: wTotalLength {total}, descriptors add up to {sum(len(p) for p in parts)}"
        interfaces = {p[2] for p in parts if p[1] == DT_INTERFACE and len(p) >= 9}
        assert raw[4] == len(interfaces), f"configuration {index}: bNumInterfaces {raw[4]}, " \
                                          f"{len(interfaces)} interfaces described"


def test_dfu_mode_interface_has_class_fe_subclass_01_protocol_02(device: DeviceProfile) -> None:
    for raw in device.usb.raw_configurations:
        for d in _descriptors(raw):
            if d[1] == DT_INTERFACE and (d[2], d[3]) == (device.alt.interface, device.alt.alt):
                assert (d[5], d[6], d[7]) == (0xFE, 0x01, 0x02), \
                    f"interface {d[2]} alt {d[3]}: class {d[5]:02X}/{d[6]:02X}/{d[7]:02X}, not FE/01/02"
                return
    pytest.fail(f"interface {device.alt.interface} alt {device.alt.alt} is in no configuration descriptor")


def test_dfu_functional_descriptor_is_well_formed(device: DeviceProfile) -> None:
    d = _functional(device)
    assert len(d) == 9 or (len(d) == 7 and device.functional.dfu_version < 0x0110), \
        f"functional descriptor of {len(d)} bytes: DFU 1.1 §4.1.3 gives 9"
    bm, _detach, transfer = d[2], struct.unpack_from("<H", d, 3)[0], struct.unpack_from("<H", d, 5)[0]
    version = struct.unpack_from("<H", d, 7)[0] if len(d) >= 9 else 0x0100
    assert bm & 0x01, f"bmAttributes 0x{bm:02X}: bitCanDnload is clear, nothing can be downloaded"
    assert version in DFU_VERSIONS, f"bcdDFUVersion 0x{version:04X} is no DFU version"
    assert transfer >= device.usb.raw_device[7], \
        f"wTransferSize {transfer} is smaller than one control packet ({device.usb.raw_device[7]} bytes)"


def test_string_descriptor_zero_lists_a_language(device: DeviceProfile) -> None:
    assert device.usb.langids, "string descriptor 0 names no LANGID (USB 2.0 §9.6.7)"


def test_every_string_the_descriptors_name_can_be_read(device: DeviceProfile) -> None:
    errors = {i: why for i, why in device.usb.string_errors.items()}
    assert not errors, "strings the descriptors name cannot be read: " + \
        ", ".join(f"index {i} {why}" for i, why in sorted(errors.items()))


def test_dfu_interface_has_a_name(device: DeviceProfile) -> None:
    assert device.alt.name, "the DFU interface's iInterface string is empty (hosts list alt settings by name; " \
                            "DfuSe puts the memory layout there)"


def test_dfuse_layout_string_parses(device: DeviceProfile) -> None:
    if not device.is_dfuse:
        pytest.skip("plain DFU 1.1: the interface name is not a DfuSe memory layout")
    assert device.layout_error is None, f"the layout {device.alt.name!r} cannot be parsed: {device.layout_error}"


def test_dfuse_layout_matches_the_chips_flash_geometry(device: DeviceProfile, target: ConformanceTarget) -> None:
    if not device.is_dfuse or device.layout is None:
        pytest.skip("no DfuSe memory layout")
    problems = layout_problems(device.layout, target.the_chip)
    assert not problems, f"layout-does-not-match-chip: {device.alt.name.strip()!r}: " + "; ".join(problems)


def test_dfuse_layout_keeps_the_bootloader_read_only(device: DeviceProfile, target: ConformanceTarget) -> None:
    if not device.is_dfuse or device.layout is None:
        pytest.skip("no DfuSe memory layout")
    base = target.the_chip.flash_base
    writable = [seg for seg in device.layout.segments if seg.writable and seg.start < device.boot_end
                and seg.start + seg.count * seg.size > base]
    assert not writable, f"the layout marks the bootloader's own flash (0x{base:08X}-0x{device.boot_end - 1:08X}) " \
                         f"writable: segment at 0x{writable[0].start:08X}"

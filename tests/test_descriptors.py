"""Descriptors: declared once, parse/build round trips, lsusb -v rendering."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostside.descriptors import (
    ConfigurationDescriptor,
    DescriptorError,
    DeviceDescriptor,
    DfuFunctionalDescriptor,
    EndpointDescriptor,
    InterfaceDescriptor,
    StringDescriptor,
    UnknownDescriptor,
    build,
    parse,
    parse_configuration,
    render_lsusb,
)
from tests.fake_usb_firmware import DFU_LAYOUT, OPTION_LAYOUT, configuration_descriptor, device_descriptor

u8s = st.integers(0, 0xFF)
u16s = st.integers(0, 0xFFFF)


# -- fixtures from the fake firmware's raw bytes ----------------------------------------------


def test_fixture_device_descriptor_round_trips():
    raw = device_descriptor()
    assert build(parse(raw)) == raw


def test_fixture_configuration_round_trips():
    raw = configuration_descriptor(loopback=True)
    assert build(parse(raw)) == raw


def test_device_descriptor_fields_parse_to_their_values():
    dev = DeviceDescriptor.parse(device_descriptor(mps0=8))
    assert (dev.idVendor, dev.idProduct, dev.bcdUSB, dev.bMaxPacketSize0) == (0x0483, 0xDF11, 0x0200, 8)


def test_configuration_tree_keeps_each_alt_setting_with_its_functional_descriptor():
    config = parse_configuration(configuration_descriptor())
    assert [i.descriptor.bAlternateSetting for i in config.interfaces] == [0, 1]
    assert all(i.dfu_functional is not None for i in config.interfaces)


def test_configuration_tree_puts_endpoints_under_their_interface():
    config = parse_configuration(configuration_descriptor(loopback=True))
    loop = config.alt_settings(1)[0]
    assert [e.descriptor.bEndpointAddress for e in loop.endpoints] == [0x01, 0x81]


def test_dfu_functional_descriptor_fields():
    dfu = parse_configuration(configuration_descriptor()).dfu_functional
    assert dfu is not None
    assert (dfu.bmAttributes, dfu.wDetachTimeOut, dfu.wTransferSize, dfu.bcdDFUVersion) == (0x0B, 255, 2048, 0x011A)
    assert dfu.will_detach and dfu.can_upload and dfu.can_download and not dfu.manifestation_tolerant


def test_dfu_1_0_functional_descriptor_has_no_version():
    raw = struct.pack("<BBBHH", 7, 0x21, 0x05, 5000, 64)
    dfu = DfuFunctionalDescriptor.parse(raw)
    assert dfu.bcdDFUVersion is None and dfu.build() == raw


def test_type_0x21_outside_a_dfu_interface_stays_unknown():
    hid_interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 0, 0x03, 0, 0, 0)
    hid = bytes((9, 0x21, 0x11, 0x01, 0, 1, 0x22, 0x20, 0))
    raw = struct.pack("<BBHBBBBB", 9, 2, 27, 1, 1, 0, 0x80, 50) + hid_interface + hid
    config = parse_configuration(raw)
    assert isinstance(config.interfaces[0].extra[0], UnknownDescriptor)
    assert config.build() == raw


def test_string_descriptor_decodes_utf16le():
    assert StringDescriptor.from_text(DFU_LAYOUT).build()[2:].decode("utf-16-le") == DFU_LAYOUT
    assert StringDescriptor.parse(StringDescriptor.from_text("Ω").build()).string == "Ω"


def test_string_zero_lists_language_ids():
    assert StringDescriptor.parse(bytes((6, 3, 0x09, 0x04, 0x07, 0x04))).langids == [0x0409, 0x0407]


def test_make_fills_in_length_and_type():
    ep = EndpointDescriptor.make(bEndpointAddress=0x81, bmAttributes=2, wMaxPacketSize=64, bInterval=0)
    assert ep.build() == bytes((7, 5, 0x81, 2, 64, 0, 0))


def test_a_configuration_must_start_with_a_configuration_descriptor():
    with pytest.raises(DescriptorError):
        parse_configuration(device_descriptor())


def test_bytes_that_do_not_frame_are_kept_as_junk():
    raw = configuration_descriptor() + b"\x01"
    config = parse_configuration(raw)
    assert config.junk == b"\x01" and config.build() == raw


def test_a_single_byte_is_not_a_descriptor():
    with pytest.raises(DescriptorError):
        DeviceDescriptor.parse(b"\x12")


# -- property tests ---------------------------------------------------------------------------


@given(u16s, u8s, u8s, u8s, st.sampled_from([8, 16, 32, 64]), u16s, u16s, u16s, u8s, u8s, u8s, u8s)
def test_any_device_descriptor_survives_build_then_parse(bcd, cls, sub, proto, mps, vid, pid, rel, i1, i2, i3, n):
    dev = DeviceDescriptor.make(bcdUSB=bcd, bDeviceClass=cls, bDeviceSubClass=sub, bDeviceProtocol=proto,
                                bMaxPacketSize0=mps, idVendor=vid, idProduct=pid, bcdDevice=rel,
                                iManufacturer=i1, iProduct=i2, iSerialNumber=i3, bNumConfigurations=n)
    assert DeviceDescriptor.parse(dev.build()) == dev


@given(u8s, u16s, u16s, st.one_of(st.none(), u16s))
def test_any_dfu_functional_descriptor_survives_build_then_parse(attrs, detach, size, version):
    fields = {"bmAttributes": attrs, "wDetachTimeOut": detach, "wTransferSize": size, "bcdDFUVersion": version}
    dfu = DfuFunctionalDescriptor.make(**fields)
    assert DfuFunctionalDescriptor.parse(dfu.build()) == dfu


@given(
    st.sampled_from([DeviceDescriptor, ConfigurationDescriptor, InterfaceDescriptor, EndpointDescriptor,
                     DfuFunctionalDescriptor, StringDescriptor, UnknownDescriptor]),
    st.binary(min_size=0, max_size=253),
    u8s,
)
def test_any_framed_bytes_round_trip_through_every_declaration(kind, body, dtype):
    raw = bytes((len(body) + 2, dtype)) + body
    assert kind.parse(raw).build() == raw


def _descriptor_blobs():
    typed = st.tuples(st.sampled_from([4, 5, 0x21, 0x24, 0x0B, 7]), st.binary(min_size=0, max_size=30))
    return st.lists(typed, max_size=12).map(lambda ds: b"".join(bytes((len(b) + 2, t)) + b for t, b in ds))


@given(st.binary(min_size=7, max_size=7), _descriptor_blobs(), st.binary(max_size=1))
def test_any_configuration_blob_round_trips(header_body, body, junk):
    raw = bytes((9, 2)) + header_body + body + junk
    assert build(parse(raw)) == raw


# -- lsusb -v rendering --------------------------------------------------------------------------


STRINGS = {1: "STMicroelectronics", 2: "DFU in FS Mode", 3: "206C34A35253", 4: DFU_LAYOUT, 5: OPTION_LAYOUT}


def rendered(config_raw: bytes | None = None) -> str:
    return render_lsusb(DeviceDescriptor.parse(device_descriptor()),
                        [parse_configuration(config_raw or configuration_descriptor())], STRINGS,
                        bus=1, address=7, device_status=0)


def test_lsusb_header_shows_bus_device_and_0483_df11():
    assert rendered().splitlines()[0] == "Bus 001 Device 007: ID 0483:df11 STMicroelectronics STM Device in DFU Mode"


def test_lsusb_prints_vendor_and_product_lines_like_usbutils():
    lines = rendered().splitlines()
    assert "  idVendor           0x0483 STMicroelectronics" in lines
    assert "  bcdUSB               2.00" in lines


def test_lsusb_prints_alt_setting_strings_on_iinterface_lines():
    lines = rendered().splitlines()
    assert f"      iInterface              4 {DFU_LAYOUT}" in lines
    assert f"      iInterface              5 {OPTION_LAYOUT}" in lines


def test_lsusb_decodes_the_dfu_functional_descriptor():
    text = rendered()
    block = text[text.index("Device Firmware Upgrade Interface Descriptor:"):].splitlines()[:11]
    assert block == [
        "Device Firmware Upgrade Interface Descriptor:",
        "        bLength                             9",
        "        bDescriptorType                    33",
        "        bmAttributes                       11",
        "          Will Detach",
        "          Manifestation Intolerant",
        "          Upload Supported",
        "          Download Supported",
        "        wDetachTimeout                    255 milliseconds",
        "        wTransferSize                    2048 bytes",
        "        bcdDFUVersion                   1.1a",
    ]


def test_lsusb_omits_the_dfu_version_of_a_dfu_1_0_descriptor():
    raw = bytearray(configuration_descriptor())
    config = parse_configuration(bytes(raw))
    for intf in config.interfaces:
        intf.extra = [DfuFunctionalDescriptor.parse(struct.pack("<BBBHH", 7, 0x21, 0x05, 5000, 64))]
    text = render_lsusb(DeviceDescriptor.parse(device_descriptor()), [config], STRINGS)
    assert "bcdDFUVersion" not in text and "Will Not Detach" in text and "Manifestation Tolerant" in text


def test_lsusb_prints_configuration_power_and_attributes():
    lines = rendered().splitlines()
    assert "    bmAttributes         0xc0" in lines and "      Self Powered" in lines
    assert "    MaxPower              100mA" in lines


def test_lsusb_prints_endpoints_like_usbutils():
    text = rendered(configuration_descriptor(loopback=True))
    assert "        bEndpointAddress     0x81  EP 1 IN" in text
    assert "        wMaxPacketSize     0x0040  1x 64 bytes" in text
    assert "          Transfer Type            Bulk" in text


def test_lsusb_ends_with_device_status():
    assert rendered().endswith("Device Status:     0x0000\n  (Bus Powered)\n")

"""BOS, WebUSB and Microsoft OS 2.0 descriptors (hostside.bos), stalled strings in usb-info (issue 13 item 5)."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from emulator.cli import main
from hostside.bos import (
    MSOS20_UUID,
    WEBUSB_UUID,
    BosError,
    parse_bos,
    parse_msos20_set,
    parse_url_descriptor,
    read_bos,
    render_bos,
)
from hostside.descriptors import DeviceDescriptor, render_lsusb
from tests import fake_usb_firmware
from tests.test_usb_host import enumerated

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
DFU11 = str(IMAGES / "boot_dfu11.elf")


def platform(u: uuid.UUID, data: bytes) -> bytes:
    return bytes((20 + len(data), 0x10, 0x05, 0)) + u.bytes_le + data


def bos(*caps: bytes) -> bytes:
    body = b"".join(caps)
    return struct.pack("<BBHB", 5, 0x0F, 5 + len(body), len(caps)) + body


WEBUSB = platform(WEBUSB_UUID, struct.pack("<HBB", 0x0100, 0x01, 1))
MSOS = platform(MSOS20_UUID, struct.pack("<IHBB", 0x06030000, 30, 0x02, 0))
SET = (struct.pack("<HHIH", 10, 0, 0x06030000, 30)
       + struct.pack("<HH", 20, 3) + b"WINUSB\0\0" + bytes(8))


def test_bos_header_and_both_platform_capabilities_parse():
    parsed = parse_bos(bos(WEBUSB, MSOS))
    web, ms = parsed.capabilities
    assert parsed.total_length == 5 + 24 + 28
    assert web.webusb is not None and (web.webusb.vendor_code, web.webusb.landing_page) == (1, 1)
    assert ms.msos20[0].total_length == 30 and ms.msos20[0].vendor_code == 2


def test_a_non_bos_descriptor_is_refused():
    with pytest.raises(BosError):
        parse_bos(bytes.fromhex("1201000200000040"))


def test_url_descriptor_puts_the_scheme_in_front():
    assert parse_url_descriptor(b"\x0e\x03\x01example.com") == "https://example.com"


def test_msos20_set_lists_the_compatible_id():
    items = parse_msos20_set(SET)
    assert [i.kind for i in items] == ["set header", "compatible ID"]
    assert items[1].fields["CompatibleID"] == "WINUSB"


def test_reading_follows_the_capabilities_to_the_url_and_the_descriptor_set():
    answers = {(0x80, 6, 0x0F00, 0): bos(WEBUSB, MSOS), (0xC0, 1, 1, 2): b"\x0e\x03\x01example.com",
               (0xC0, 2, 0, 7): SET}
    report = read_bos(lambda bm, req, value, index, length: answers[(bm, req, value, index)][:length])
    assert report.urls == {1: "https://example.com"}
    assert [i.kind for i in report.msos20_sets[2]] == ["set header", "compatible ID"]


def test_a_stalled_vendor_request_is_shown_not_raised():
    def control_in(bm, req, value, index, length):
        if bm == 0xC0:
            raise OSError("[Errno 32] Pipe error")
        return bos(WEBUSB)[:length]
    lines = render_bos(read_bos(control_in))
    assert any("iLandingPage      1 <request stalled>" in line for line in lines)


def test_a_device_without_bos_says_so():
    def control_in(*_):
        raise OSError("Pipe error")
    assert render_bos(read_bos(control_in)) == ["Binary Object Store Descriptor: none (request stalled)"]


def test_usb_info_prints_the_webusb_landing_page_and_the_ms_os_20_set(capsys):
    assert main(["usb-info", DFU11, "--chip", "STM32F103C8"]) == 0
    out = capsys.readouterr().out
    assert "Binary Object Store Descriptor:" in out
    assert "iLandingPage      1 https://example.com/stm32-bootsim" in out
    assert "CompatibleID WINUSB" in out and "{7D4AACAA-C909-5C61-8A23-1CDF4EE3B779}" in out


def test_usb_info_reads_no_bos_from_a_usb_2_00_device(capsys):
    assert main(["usb-info", str(IMAGES / "boot_fixed.elf")]) == 0
    assert "Binary Object Store" not in capsys.readouterr().out


def test_enumeration_records_which_string_requests_stalled(monkeypatch):
    monkeypatch.delitem(fake_usb_firmware.STRINGS, 5)
    *_, info = enumerated()
    assert info.string_errors == {5: "stalled"} and 5 not in info.strings


def test_lsusb_rendering_marks_a_stalled_string_instead_of_printing_a_blank():
    text = render_lsusb(DeviceDescriptor(iManufacturer=1, iProduct=2), [], {1: "Maker"},
                        string_errors={2: "stalled"})
    assert "iManufacturer           1 Maker" in text
    assert "iProduct                2 <string request stalled>" in text

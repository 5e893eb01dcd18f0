"""Malformed control requests against every fixture bootloader, through the virtual host.

A few thousand seeded requests each (``tests/dfu_fuzz.py``: DFU and DfuSe requests with any
block number, size, address and direction, standard requests to any recipient, vendor and
reserved types, and well-formed episodes that reach the deeper DFU states).  Whatever the
firmware does, the emulator raises nothing but the USB errors a host sees, and a bootloader
that is meant to protect itself never has its own image changed nor stops answering.

The release check runs far more: ``STM32_BOOTSIM_FUZZ_REQUESTS=100000 python -m pytest
tests/test_dfu_fuzz.py`` (``STM32_BOOTSIM_FUZZ_SEED`` picks another stream).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.dfu_fuzz import fuzz

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
REQUESTS = int(os.environ.get("STM32_BOOTSIM_FUZZ_REQUESTS", "2000"))
SEED = int(os.environ.get("STM32_BOOTSIM_FUZZ_SEED", "16"))

# boot_seed is the tutorial's bootloader with its defects kept: a host can write its own region
# (bootloader-region-writable) and an UPLOAD past the end of flash sends it into HardFault.
PROTECTED = {
    "boot_fixed": (),
    "boot_hal_rearm": (),
    "boot_usblib_abort": (),
    "boot_dfu11": ("--chip", "STM32F103C8"),
}


USB_ERRORS = {"UsbStall", "UsbTimeout", "UsbProtocolError", "UsbNotAttached", "UsbBabble"}


@pytest.mark.parametrize("name", sorted(PROTECTED))
def test_malformed_requests_leave_a_protected_bootloader_intact_and_answering(name: str) -> None:
    report = fuzz(str(IMAGES / f"{name}.elf"), PROTECTED[name], REQUESTS, SEED)
    assert report.requests == REQUESTS
    assert set(report.usb_errors) <= USB_ERRORS
    assert report.region_changed_by == [], report.region_changed_by[:3]
    assert report.hangs == [], report.hangs[:3]
    assert report.answered >= REQUESTS // 5  # the stream reached the device, not only a stalled endpoint


def test_malformed_requests_to_the_seed_bootloader_end_only_in_usb_errors() -> None:
    report = fuzz(str(IMAGES / "boot_seed.elf"), (), REQUESTS, SEED)
    assert report.requests == REQUESTS and report.answered > 0
    assert set(report.usb_errors) <= USB_ERRORS

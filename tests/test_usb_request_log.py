"""The host's control requests as boot-flow events (emulator.usb.request_log)."""

from __future__ import annotations

import struct

from emulator.usb.request_log import describe_request


def setup(bm: int, request: int, value: int = 0, index: int = 0, length: int = 0) -> bytes:
    return struct.pack("<BBHHH", bm, request, value, index, length)


def test_a_getstatus_answer_is_recorded_with_its_bstatus_bstate_and_poll_timeout():
    kind, data = describe_request(setup(0xA1, 3, length=6), bytes([0, 50, 0, 0, 4, 0]), 0)
    assert kind == "dfu_request"
    assert (data["request"], data["b_status"], data["b_state"], data["poll_timeout_ms"]) == (
        "GETSTATUS", "OK", "dfuDNBUSY", 50)


def test_a_dfuse_erase_in_block_zero_is_recorded_with_its_command_and_address():
    kind, data = describe_request(setup(0x21, 1, 0, 0, 5), bytes([0x41]) + (0x0800_8000).to_bytes(4, "little"), 0)
    assert kind == "dfu_request"
    assert (data["request"], data["block"], data["dfuse_command"], data["address"]) == (
        "DNLOAD", 0, "ERASE", 0x0800_8000)


def test_a_getstate_answer_is_recorded_with_its_state_name():
    _, data = describe_request(setup(0xA1, 5, length=1), bytes([10]), 0)
    assert data["b_state"] == "dfuERROR"


def test_a_standard_get_descriptor_names_the_descriptor_type():
    kind, data = describe_request(setup(0x80, 6, 0x0302, 0x0409, 255), b"\x04\x03", 0)
    assert kind == "usb_request"
    assert (data["request"], data["descriptor"], data["descriptor_index"]) == ("GET_DESCRIPTOR", "STRING", 2)


def test_a_failed_transfer_keeps_its_urb_status():
    _, data = describe_request(setup(0x00, 9, 1), b"", -32)
    assert (data["request"], data["urb_status"]) == ("SET_CONFIGURATION", -32)


def test_the_flash_scenario_records_the_dfu_session_on_the_machine_events():
    from pathlib import Path

    from emulator.bootflow.scenario import flash_and_boot

    images = Path(__file__).resolve().parent.parent / "fixtures" / "images"
    outcome = flash_and_boot(str(images / "boot_fixed.elf"), str(images / "app_small.bin"), run_ns=50_000_000)
    requests = [e.data["request"] for e in outcome.board.machine.events if e.kind == "dfu_request"]
    assert "DNLOAD" in requests and "GETSTATUS" in requests and "UPLOAD" in requests

"""Every control request the virtual host completes, recorded as a boot-flow event.

The host side is not firmware, so nothing in the models sees a request as a
whole: this monitor turns each completed control URB into one machine event
(``usb_request`` for standard requests, ``dfu_request`` for DFU class
requests with the bStatus/bState of GETSTATUS and GETSTATE answers and the
DfuSe command of a DNLOAD block 0), so ``--explain``, ``--json`` and the HTML
report read the host's side of the conversation from the same event list as
the chip's.
"""

from __future__ import annotations

import struct
from typing import Any

from emulator.core.machine import Machine
from emulator.usb.host import TransferType, Urb, UsbMonitor
from hostside.dfu import DfuRequest, DfuseCommand, state_name, status_name

# USB 2.0 §9.4, table 9-4.
STANDARD_REQUESTS = {0: "GET_STATUS", 1: "CLEAR_FEATURE", 3: "SET_FEATURE", 5: "SET_ADDRESS",
                     6: "GET_DESCRIPTOR", 7: "SET_DESCRIPTOR", 8: "GET_CONFIGURATION",
                     9: "SET_CONFIGURATION", 10: "GET_INTERFACE", 11: "SET_INTERFACE", 12: "SYNCH_FRAME"}
# USB 2.0 §9.4, table 9-5, and the BOS (USB 3.2 §9.6.2) WebUSB devices ask for.
DESCRIPTOR_TYPES = {1: "DEVICE", 2: "CONFIGURATION", 3: "STRING", 4: "INTERFACE", 5: "ENDPOINT",
                    6: "DEVICE_QUALIFIER", 15: "BOS", 0x21: "DFU_FUNCTIONAL"}
CLASS_TYPE = 0x20  # bmRequestType bits 6..5 = 01: class request


def describe_request(setup: bytes, data: bytes, status: int) -> tuple[str, dict[str, Any]]:
    """The event kind and data for one completed control transfer (pure: tested on its own)."""
    bm, b_request, w_value, w_index, w_length = struct.unpack("<BBHHH", setup)
    base: dict[str, Any] = {"w_value": w_value, "w_index": w_index, "w_length": w_length,
                            "length": len(data), "urb_status": status}
    if bm & 0x60 == CLASS_TYPE and b_request in DfuRequest._value2member_map_:
        request = DfuRequest(b_request)
        base["request"] = request.name
        if request is DfuRequest.GETSTATUS and len(data) >= 6:
            base.update(b_status=status_name(data[0]), b_state=state_name(data[4]),
                        poll_timeout_ms=int.from_bytes(data[1:4], "little"))
        elif request is DfuRequest.GETSTATE and len(data) >= 1:
            base.update(b_state=state_name(data[0]))
        elif request is DfuRequest.DNLOAD:
            base["block"] = w_value
            if w_value == 0 and data:
                # DfuSe (UM0424 §5): block 0 carries a command, usually with an address.
                try:
                    base["dfuse_command"] = DfuseCommand(data[0]).name
                except ValueError:
                    base["dfuse_command"] = f"0x{data[0]:02X}"
                if len(data) >= 5:
                    base["address"] = int.from_bytes(data[1:5], "little")
        elif request is DfuRequest.UPLOAD:
            base["block"] = w_value
        return "dfu_request", base
    name = STANDARD_REQUESTS.get(b_request, f"request {b_request}") if bm & 0x60 == 0 else f"request {b_request}"
    base["request"] = name
    if bm & 0x60 == 0 and b_request == 6:
        base["descriptor"] = DESCRIPTOR_TYPES.get(w_value >> 8, f"type {w_value >> 8}")
        base["descriptor_index"] = w_value & 0xFF
    return "usb_request", base


class RequestLog(UsbMonitor):
    """Records each completed control transfer on the machine's event list."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def urb_completed(self, urb: Urb) -> None:
        if urb.transfer_type is not TransferType.CONTROL or urb.setup is None:
            return
        kind, data = describe_request(urb.setup, urb.data, urb.status)
        data["submit_ns"] = urb.submit_ns
        self.machine.port.event(kind, **data)

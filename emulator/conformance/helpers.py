"""Moves through the DFU state machine and small judgements the suite modules share.

Every helper talks to the device as a host would (class requests on its DFU interface),
waits each bwPollTimeout in emulated time, and fails the test with one sentence
saying what the device answered when it does not behave.
"""

from __future__ import annotations

import pytest

from emulator.bootflow.harness import DfuSession, RequestResult
from emulator.conformance.target import DeviceProfile
from hostside.dfu import DfuError, DfuException, DfuState, DfuStatusResponse, state_name, status_name

MAX_BUSY_POLLS = 64
PROBE = bytes(range(0x10, 0x20))  # 16 bytes no erased flash holds


def describe(st: DfuStatusResponse) -> str:
    return f"{state_name(st.state)}/{status_name(st.status)}"


def settle(dfu: DfuSession) -> DfuStatusResponse:
    """GETSTATUS (waiting each bwPollTimeout) until the device is no longer busy with a block
    (dfuDNLOAD-SYNC/dfuDNBUSY) or with manifestation (dfuMANIFEST-SYNC)."""
    st = dfu.status()
    for _ in range(MAX_BUSY_POLLS):
        if st.state not in (DfuState.dfuDNLOAD_SYNC, DfuState.dfuDNBUSY, DfuState.dfuMANIFEST_SYNC) or st.is_error:
            return st
        st = dfu.status()
    pytest.fail(f"the device stays in {describe(st)} after {MAX_BUSY_POLLS} GETSTATUS requests")


def expect_state(dfu: DfuSession, wanted: DfuState, after: str) -> DfuStatusResponse:
    st = dfu.status()
    assert st.state == wanted and not st.is_error, f"after {after} the device is in {describe(st)}, " \
                                                     f"not {state_name(wanted)}"
    return st


def expect_stall_into_error(dfu: DfuSession, result: RequestResult, request: str, *, stay: bool = False) -> None:
    """DFU 1.1 appendix A: a request not allowed in the current state is stalled and the device
    enters (or, in dfuERROR, stays in) dfuERROR with bStatus errSTALLEDPKT or the error it had."""
    st = dfu.status()
    assert result.stalled, f"{request} was {'answered' if result.ok else result.error}, not stalled " \
                           f"(the device is now in {describe(st)})"
    must = "stay in" if stay else "enter"
    assert st.state == DfuState.dfuERROR, f"{request} was stalled but the device is in {describe(st)}: it must " \
                                          f"{must} dfuERROR (DFU 1.1 appendix A)"
    assert st.status != 0, "the device is in dfuERROR with bStatus OK"


def to_dnload_idle(dfu: DfuSession, device: DeviceProfile) -> None:
    """dfuIDLE → dfuDNLOAD-IDLE: a DfuSe SET_ADDRESS_POINTER to the application; for plain DFU
    block 0 of 0xFF bytes (what erased flash holds already)."""
    try:
        if device.is_dfuse:
            dfu.client.set_address(_app_start(device))
        else:
            dfu.client.dnload(0, b"\xff" * min(64, dfu.client.transfer_size))
            settle(dfu)
    except DfuException as e:
        pytest.fail(f"could not reach dfuDNLOAD-IDLE: {e}")
    expect_state(dfu, DfuState.dfuDNLOAD_IDLE, "a first DNLOAD")


def to_upload_idle(dfu: DfuSession, device: DeviceProfile) -> None:
    """dfuIDLE → dfuUPLOAD-IDLE with one full UPLOAD block (DfuSe: from the application region)."""
    if not device.functional.can_upload:
        pytest.skip("the device cannot upload (bitCanUpload = 0)")
    size = dfu.client.transfer_size
    try:
        if device.is_dfuse:
            dfu.client.set_address(_app_start(device))
            dfu.client.abort_to_idle()
            data = dfu.client.upload(2, size)
        else:
            data = dfu.client.upload(0, size)
    except DfuException as e:
        pytest.fail(f"could not reach dfuUPLOAD-IDLE: {e}")
    if len(data) < size:
        pytest.skip(f"the first UPLOAD block was short ({len(data)} of {size} bytes): the upload ended at once")
    expect_state(dfu, DfuState.dfuUPLOAD_IDLE, "a full UPLOAD block")


def to_error(dfu: DfuSession) -> DfuStatusResponse:
    """dfuIDLE → dfuERROR through a request DFU 1.1 does not allow in dfuIDLE."""
    for request in (dfu.client.clr_status, lambda: dfu.client.detach(0)):
        dfu.attempt(request)
        st = dfu.status()
        if st.state == DfuState.dfuERROR:
            return st
    pytest.fail(f"no request the specification refuses in dfuIDLE brought the device into dfuERROR "
                f"(it is in {describe(st)})")


def _app_start(device: DeviceProfile) -> int:
    if device.app_start is None:
        pytest.fail("where the application goes is unknown: give --address")
    return device.app_start


def dfuse_command(dfu: DfuSession, call: object) -> tuple[bool, str]:
    """Run a DfuSe command through the client: (accepted, what the device said)."""
    try:
        call()  # type: ignore[operator]
    except DfuError as e:
        return False, f"{state_name(e.state)}/{status_name(e.status)}"
    except DfuException as e:
        return False, f"{type(e).__name__}: {e}"
    return True, "bStatus OK"


def firmware_trouble(dfu: DfuSession) -> str:
    """What went wrong inside the firmware, if anything: its faults and where it stopped."""
    m = dfu.board.machine
    parts = [f"{f.cause} at 0x{f.pc:08X} ({m.symbol(f.pc)})" for f in m.faults[:2]]
    stop = m.last_stop
    if stop is not None and not stop.clean:
        parts.append(f"then {stop.kind}: {stop.detail}")
    return "; the firmware faulted: " + ", ".join(parts) if parts else ""


def recover(dfu: DfuSession) -> None:
    """Back to dfuIDLE after a refused request (CLRSTATUS/ABORT as dfu-util does)."""
    try:
        dfu.client.ensure_idle()
    except DfuException as e:
        pytest.fail(f"the device does not return to dfuIDLE after a refused request: {e}{firmware_trouble(dfu)}")

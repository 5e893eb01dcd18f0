"""The DFU 1.1 state machine: every request the host may send, in the states it reaches.

USB DFU 1.1, appendix A (state transition summary) and §6.1-6.2.  Each test starts from
a fresh board in dfuIDLE.  A request the table does not list for a state is stalled and
the device enters dfuERROR, where only GETSTATUS, GETSTATE and CLRSTATUS are answered.
DfuSe devices (UM0424, AN3156) follow the same table.  The one difference: a zero-length
DNLOAD in dfuIDLE is their "leave DFU mode" request.
"""

from __future__ import annotations

import pytest

from emulator.bootflow.harness import DfuSession
from emulator.conformance.helpers import (
    PROBE,
    describe,
    expect_stall_into_error,
    expect_state,
    recover,
    to_dnload_idle,
    to_error,
    to_upload_idle,
)
from emulator.conformance.target import DeviceProfile
from hostside.dfu import DfuException, DfuState, DfuStatus, state_name

MANIFEST_STATES = (DfuState.dfuMANIFEST_SYNC, DfuState.dfuMANIFEST, DfuState.dfuMANIFEST_WAIT_RESET)


def _data_block(device: DeviceProfile) -> int:
    return 2 if device.is_dfuse else 0  # DfuSe: blocks 0 and 1 carry commands, data starts at block 2


# -- dfuIDLE -------------------------------------------------------------------------------------

def test_getstatus_in_dfu_idle_reports_status_ok_and_dfu_idle(dfu: DfuSession) -> None:
    st = dfu.status()
    assert st.state == DfuState.dfuIDLE and st.status == DfuStatus.OK, f"GETSTATUS answered {describe(st)}"


def test_getstate_in_dfu_idle_answers_dfu_idle(dfu: DfuSession) -> None:
    state = dfu.client.get_state()
    assert state == DfuState.dfuIDLE, f"GETSTATE answered {state_name(int(state))}"
    expect_state(dfu, DfuState.dfuIDLE, "GETSTATE")


def test_abort_in_dfu_idle_keeps_dfu_idle(dfu: DfuSession) -> None:
    result = dfu.attempt(dfu.client.abort)
    assert result.ok, f"ABORT in dfuIDLE was {'stalled' if result.stalled else result.error}"
    expect_state(dfu, DfuState.dfuIDLE, "ABORT")


def test_clrstatus_in_dfu_idle_is_stalled_and_enters_dfu_error(dfu: DfuSession) -> None:
    expect_stall_into_error(dfu, dfu.attempt(dfu.client.clr_status), "CLRSTATUS in dfuIDLE")


def test_detach_in_dfu_mode_is_stalled_and_enters_dfu_error(dfu: DfuSession) -> None:
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.detach(0)), "DETACH in DFU mode")


def test_zero_length_dnload_in_dfu_idle_is_stalled_and_enters_dfu_error(dfu: DfuSession,
                                                                        device: DeviceProfile) -> None:
    if device.is_dfuse:
        pytest.skip("DfuSe: a zero-length DNLOAD in dfuIDLE is the leave request (AN3156), tested below")
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.dnload(0, b"")),
                            "a zero-length DNLOAD in dfuIDLE (nothing to manifest)")


def test_zero_length_dnload_in_dfu_idle_leaves_dfu_mode_on_dfuse(dfu: DfuSession, device: DeviceProfile) -> None:
    if not device.is_dfuse:
        pytest.skip("plain DFU 1.1: a zero-length DNLOAD in dfuIDLE must be stalled, tested above")
    try:
        result = dfu.client.leave()
    except DfuException as e:
        pytest.fail(f"the DfuSe leave request (zero-length DNLOAD in dfuIDLE) failed: {e}")
    assert result.vanished or result.last_state in MANIFEST_STATES + (DfuState.dfuIDLE,), \
        f"after the leave request the device answered {state_name(result.last_state or 0)}"


def test_upload_in_dfu_idle_is_answered_when_the_device_can_upload(dfu: DfuSession, device: DeviceProfile) -> None:
    if not device.functional.can_upload:
        pytest.skip("the device cannot upload (bitCanUpload = 0)")
    result = dfu.attempt(lambda: dfu.client.upload(0, dfu.client.transfer_size))
    assert result.ok, f"UPLOAD block 0 in dfuIDLE was {'stalled' if result.stalled else result.error}"
    st = dfu.status()
    assert st.state in (DfuState.dfuIDLE, DfuState.dfuUPLOAD_IDLE) and not st.is_error, \
        f"after UPLOAD the device is in {describe(st)}"


def test_upload_without_bitcanupload_is_stalled_and_enters_dfu_error(dfu: DfuSession, device: DeviceProfile) -> None:
    if device.functional.can_upload:
        pytest.skip("the device can upload (bitCanUpload = 1)")
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.upload(0, dfu.client.transfer_size)),
                            "UPLOAD on a device without bitCanUpload")


def test_dnload_longer_than_wtransfersize_is_stalled(dfu: DfuSession, device: DeviceProfile) -> None:
    size = device.functional.transfer_size
    if device.is_dfuse:
        to_dnload_idle(dfu, device)  # the pointer at the application: an accepted block lands there
    before = bytes(dfu.board.machine.flash_storage)
    result = dfu.attempt(lambda: dfu.client.dnload(_data_block(device), b"\x5a" * (size + 1)))
    changed = bytes(dfu.board.machine.flash_storage) != before
    assert result.stalled, f"a DNLOAD of {size + 1} bytes (wTransferSize {size}) was " \
                           f"{'accepted' if result.ok else result.error}" + (", and flash changed" if changed else "")
    recover(dfu)


# -- dfuDNLOAD-SYNC / dfuDNBUSY / dfuDNLOAD-IDLE -----------------------------------------------------

def test_dnload_block_passes_through_dfu_dnbusy_to_dfu_dnload_idle(dfu: DfuSession, device: DeviceProfile) -> None:
    if device.is_dfuse:
        to_dnload_idle(dfu, device)
    dfu.client.dnload(_data_block(device), PROBE)
    seen = []
    for _ in range(64):
        st = dfu.status()
        seen.append(state_name(st.state))
        if st.is_error or st.state not in (DfuState.dfuDNLOAD_SYNC, DfuState.dfuDNBUSY):
            break
    assert st.state == DfuState.dfuDNLOAD_IDLE and not st.is_error, \
        f"after a DNLOAD block GETSTATUS answered {' → '.join(seen)} (last {describe(st)})"


def test_getstate_in_dfu_dnload_idle_answers_dfu_dnload_idle(dfu: DfuSession, device: DeviceProfile) -> None:
    to_dnload_idle(dfu, device)
    state = dfu.client.get_state()
    assert state == DfuState.dfuDNLOAD_IDLE, f"GETSTATE answered {state_name(int(state))}"


def test_upload_in_dfu_dnload_idle_is_stalled_and_enters_dfu_error(dfu: DfuSession, device: DeviceProfile) -> None:
    to_dnload_idle(dfu, device)
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.upload(_data_block(device), 16)),
                            "UPLOAD in dfuDNLOAD-IDLE")


def test_abort_in_dfu_dnload_idle_returns_to_dfu_idle(dfu: DfuSession, device: DeviceProfile) -> None:
    to_dnload_idle(dfu, device)
    result = dfu.attempt(dfu.client.abort)
    assert result.ok, f"ABORT in dfuDNLOAD-IDLE was {'stalled' if result.stalled else result.error}"
    expect_state(dfu, DfuState.dfuIDLE, "ABORT in dfuDNLOAD-IDLE")


# -- dfuUPLOAD-IDLE ----------------------------------------------------------------------------------

def test_dnload_in_dfu_upload_idle_is_stalled_and_enters_dfu_error(dfu: DfuSession, device: DeviceProfile) -> None:
    to_upload_idle(dfu, device)
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.dnload(_data_block(device), PROBE)),
                            "DNLOAD in dfuUPLOAD-IDLE")


def test_abort_in_dfu_upload_idle_returns_to_dfu_idle(dfu: DfuSession, device: DeviceProfile) -> None:
    to_upload_idle(dfu, device)
    result = dfu.attempt(dfu.client.abort)
    assert result.ok, f"ABORT in dfuUPLOAD-IDLE was {'stalled' if result.stalled else result.error}"
    expect_state(dfu, DfuState.dfuIDLE, "ABORT in dfuUPLOAD-IDLE")


# -- dfuERROR ----------------------------------------------------------------------------------------

def test_getstatus_in_dfu_error_reports_an_error_status(dfu: DfuSession) -> None:
    st = to_error(dfu)
    assert st.status != DfuStatus.OK, f"in dfuERROR GETSTATUS answered {describe(st)}: bStatus must say why"


def test_getstate_in_dfu_error_answers_dfu_error(dfu: DfuSession) -> None:
    to_error(dfu)
    state = dfu.client.get_state()
    assert state == DfuState.dfuERROR, f"GETSTATE answered {state_name(int(state))}"


def test_dnload_in_dfu_error_is_stalled_and_stays_in_dfu_error(dfu: DfuSession, device: DeviceProfile) -> None:
    to_error(dfu)
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.dnload(_data_block(device), PROBE)),
                            "DNLOAD in dfuERROR", stay=True)


def test_upload_in_dfu_error_is_stalled_and_stays_in_dfu_error(dfu: DfuSession, device: DeviceProfile) -> None:
    to_error(dfu)
    expect_stall_into_error(dfu, dfu.attempt(lambda: dfu.client.upload(_data_block(device), 16)),
                            "UPLOAD in dfuERROR", stay=True)


def test_abort_in_dfu_error_is_stalled_and_stays_in_dfu_error(dfu: DfuSession) -> None:
    to_error(dfu)
    expect_stall_into_error(dfu, dfu.attempt(dfu.client.abort), "ABORT in dfuERROR (only CLRSTATUS leaves it)",
                            stay=True)


def test_clrstatus_in_dfu_error_returns_to_dfu_idle_with_status_ok(dfu: DfuSession) -> None:
    to_error(dfu)
    result = dfu.attempt(dfu.client.clr_status)
    assert result.ok, f"CLRSTATUS in dfuERROR was {'stalled' if result.stalled else result.error}"
    st = dfu.status()
    assert st.state == DfuState.dfuIDLE and st.status == DfuStatus.OK, f"after CLRSTATUS: {describe(st)}"


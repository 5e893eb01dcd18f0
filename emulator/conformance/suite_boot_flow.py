"""Download, verify, leave, jump: the whole boot flow, as ``python -m emulator check`` runs it.

One download per host erase order on a DfuSe device: all pages first (dfu-util 0.9+), then
page by page as the data goes (older dfu-util, pydfu).  A plain DFU device gets one
download.  Each run is judged from the flash model, the flash journal and the jump
(:mod:`emulator.bootflow.checks`).  Each test reads one behaviour from those runs;
the finding ids it names are the ``check`` command's.
"""

from __future__ import annotations

from typing import Any

import pytest

from emulator.bootflow.checks import CheckReport, Finding
from emulator.conformance.plugin import Application
from emulator.conformance.target import ConformanceTarget
from emulator.core.flashcheck import describe_differences
from emulator.usb.target import DeviceNotAttached

# The findings each test below judges; anything else fails test_check_finds_nothing_else.
DOWNLOAD = ("download-failed", "erase-order-breaks-image", "flash-differs-from-image",
            "erase-destroys-written-data", "dfu-request-busy-too-long", "erase-beyond-end-of-flash")
JUMP = ("no-jump", "state-left-running-at-jump", "interrupt-ran-bootloader-handler", "application-failed")
APPLICATION = ("initial-msp-invalid", "reset-vector-without-thumb-bit", "reset-vector-outside-application",
               "application-linked-over-bootloader", "application-linked-for-another-address",
               "application-too-large", "vtor-misaligned")
ELSEWHERE = ("layout-does-not-match-chip", "layout-unparsable", "bootloader-region-writable", "bootloader-readable",
             "ram-exceeds-chip-sram", "bootloader-never-attached")


def findings(report: CheckReport, finding_id: str, order: str | None = None) -> list[Finding]:
    return [f for f in report.findings
            if f.id == finding_id and (order is None or f.evidence.get("erase_order") in (None, order))]


def explain(found: list[Finding]) -> str:
    f = found[0]
    evidence = "; ".join(f"{k}: {v}" for k, v in f.evidence.items() if k != "erase_order")
    return f"{f.id}: {f.title} ({evidence})"


def run_of(report: CheckReport, order: str) -> dict[str, Any]:
    if order not in report.runs:
        pytest.fail(f"the {order} download did not run: {'; '.join(explain([f]) for f in report.findings[:1])}")
    return report.runs[order]


def test_download_completes(check_report: CheckReport, host_order: str) -> None:
    run = run_of(check_report, host_order)
    assert run["download_ok"] and not run["error"], f"download-failed: {run['error']}"


def test_upload_reads_back_what_was_downloaded(check_report: CheckReport, host_order: str) -> None:
    run = run_of(check_report, host_order)
    if run["verify_method"] != "upload":
        pytest.skip("the device cannot upload after the download: the flash contents are judged instead")
    v = run["verify"]
    assert v is not None and v["ok"], "erase-order-breaks-image: " + (
        "nothing was read back" if v is None else
        f"{v['differing_bytes']} of {v['compared']} bytes read back differ, first at 0x{v['first_difference']:08X}")


def test_flash_holds_exactly_the_image_sent(check_report: CheckReport, host_order: str) -> None:
    check = run_of(check_report, host_order)["flash_check"]
    assert check is not None, "the download never got far enough to compare the flash"
    assert check["ok"], "flash-differs-from-image: " + (check.get("problem") or describe_differences(check))


def test_download_keeps_data_written_earlier_in_the_same_download(check_report: CheckReport, host_order: str) -> None:
    found = findings(check_report, "erase-destroys-written-data", host_order)
    assert not found, explain(found)


def test_each_erase_request_completes_within_a_hosts_timeout(check_report: CheckReport, host_order: str) -> None:
    found = findings(check_report, "dfu-request-busy-too-long", host_order)
    assert not found, explain(found)


def test_erases_stay_inside_the_chips_flash(check_report: CheckReport, host_order: str) -> None:
    found = findings(check_report, "erase-beyond-end-of-flash", host_order)
    assert not found, explain(found)


def test_device_leaves_dfu_mode_after_the_download(check_report: CheckReport, host_order: str) -> None:
    run = run_of(check_report, host_order)
    assert run["left"] is not None, f"the session ended before leaving DFU mode: {run['error']}"


def test_bootloader_jumps_into_the_application(check_report: CheckReport, host_order: str) -> None:
    run = run_of(check_report, host_order)
    if run["jump"] is None:
        found = findings(check_report, "no-jump")
        pytest.fail(explain(found) if found else "the bootloader never reached the application's reset handler")


def test_application_runs_as_built_after_the_jump(check_report: CheckReport, host_order: str,
                                                  application: Application) -> None:
    run = run_of(check_report, host_order)
    if run["jump"] is None:
        pytest.skip("no jump (see the jump test)")
    assert run["stop"] in ("idle", "time-budget", "instruction-budget", "condition"), \
        f"application-failed: the application ended in {run['stop']}"
    if application.expected_uart is not None:
        assert run["app_uart"] == application.expected_uart, \
            f"the test application printed {run['app_uart']!r}, not {application.expected_uart!r}"


def test_jump_leaves_no_timer_or_interrupt_running(check_report: CheckReport) -> None:
    found = findings(check_report, "state-left-running-at-jump")
    assert not found, explain(found)


def test_first_interrupt_after_the_jump_runs_the_applications_handler(check_report: CheckReport) -> None:
    found = findings(check_report, "interrupt-ran-bootloader-handler")
    assert not found, explain(found)


def test_application_image_suits_this_bootloader(check_report: CheckReport) -> None:
    found = [f for f in check_report.findings if f.id in APPLICATION]
    assert not found, explain(found)


def test_bootloader_ram_fits_the_chips_sram(check_report: CheckReport) -> None:
    found = findings(check_report, "ram-exceeds-chip-sram")
    assert not found, explain(found)


def test_check_finds_nothing_else(check_report: CheckReport) -> None:
    known = set(DOWNLOAD + JUMP + APPLICATION + ELSEWHERE)
    found = [f for f in check_report.findings if f.id not in known]
    assert not found, explain(found)


def test_bootloader_stays_in_dfu_mode_when_the_application_region_is_erased(target: ConformanceTarget) -> None:
    board = target.board(after=True)  # the triggers of a boot into the application
    try:
        board.attach_dfu(target.selector)
    except DeviceNotAttached as e:
        faults = ", ".join(f"{f.cause} at 0x{f.pc:08X} ({board.machine.symbol(f.pc)})" for f in board.machine.faults[:2])
        pytest.fail(f"with no application in flash the bootloader did not come up in DFU mode: {e}"
                    + (f"; it faulted: {faults}" if faults else ""))
    finally:
        board.close()

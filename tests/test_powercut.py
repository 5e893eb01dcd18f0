"""Power-cut sweep (docs/SEED_BOOTLOADER.md defect 5): boot_seed's mask-only validity test
jumps into a half-written image after a cut; boot_fixed's commit record + CRC
keeps it in DFU mode instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.bootflow.powercut import (
    BETWEEN,
    MID,
    BootObservation,
    CutPoint,
    FlashOp,
    classify,
    parse_points,
    select_points,
    sweep,
)

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
APP = str(IMAGES / "app_small.bin")
APP_START, APP_END = 0x0800_8000, 0x0800_8000 + 3944


def _programs(ops):
    return [op.index for op in ops if op.kind == "program"]


def _seed_points(ops):
    """Just after the stack-pointer word, and in the middle of the image."""
    p = _programs(ops)
    return [p[2], p[len(p) // 2]]


def _fixed_points(ops):
    """After the stack-pointer word, the middle of the image, the first and last commit-record writes."""
    p = _programs(ops)
    record = [op.index for op in ops if op.address is not None and not APP_START <= op.address < APP_END]
    return [p[2], p[len(p) // 2], record[0], record[-1]]


@pytest.fixture(scope="module")
def seed_report():
    return sweep(str(IMAGES / "boot_seed.elf"), APP, points=_seed_points)


@pytest.fixture(scope="module")
def fixed_report():
    return sweep(str(IMAGES / "boot_fixed.elf"), APP, points=_fixed_points)


def test_reference_download_prints_the_applications_normal_lines(seed_report, fixed_report):
    for rep in (seed_report, fixed_report):
        assert rep.reference_error is None
        assert rep.expected_uart is not None
        lines = rep.expected_uart.splitlines()
        assert lines[0] == "app ok" and lines[-1] == "done"


def test_reference_counts_every_flash_operation_of_the_download(seed_report, fixed_report):
    # app_small is 3944 bytes = 1972 half-words; boot_fixed adds the 5-word commit record.
    assert sum(op.kind == "program" for op in seed_report.ops) == 1972
    assert sum(op.kind == "program" for op in fixed_report.ops) == 1972 + 10
    assert any(op.kind == "out_of_range_erase" for op in seed_report.ops)  # 240 pages up to 0x0807FFFF


def test_seed_jumps_into_a_half_written_image_after_a_cut(seed_report):
    broken = [t for t in seed_report.trials if t.outcome == "broken_app"]
    assert broken
    assert all(t.observation is not None and t.observation.jumped for t in broken)


def test_fixed_never_jumps_into_a_half_written_image(fixed_report):
    outcomes = {t.outcome for t in fixed_report.trials}
    assert outcomes <= {"dfu", "app_ok"}
    assert "dfu" in outcomes


def test_fixed_stays_in_dfu_when_cut_during_the_commit_record(fixed_report):
    record = [t for t in fixed_report.trials
              if t.op is not None and not APP_START <= (t.op.address or 0) < APP_END]
    assert len(record) == 4
    assert {t.outcome for t in record} == {"dfu"}


def test_a_cut_after_the_last_operation_boots_the_application(seed_report, fixed_report):
    for rep in (seed_report, fixed_report):
        last = rep.trials[-1]
        assert last.point.after_last
        assert last.outcome == "app_ok"


def test_between_cuts_leave_exactly_the_operations_before_the_cut(seed_report, fixed_report):
    betweens = [t for rep in (seed_report, fixed_report) for t in rep.trials
                if t.point.mode == BETWEEN and t.same_as is None]
    assert betweens and all(t.prediction_ok for t in betweens)


def test_mid_cut_of_a_program_leaves_it_half_done(seed_report):
    mid = next(t for t in seed_report.trials if t.point.mode == MID)
    between = next(t for t in seed_report.trials if t.point == CutPoint(mid.point.index, BETWEEN))
    assert mid.cut_time_ns - mid.op.start_ns == mid.op.duration_ns // 2
    assert mid.flash_digest != between.flash_digest


# -- classification ----------------------------------------------------------------------------

EXPECTED = "app ok\r\ncrc F0795B09\r\ndone\r\n"


def _obs(**kw) -> BootObservation:
    base = {"jumped": True, "jump_address": 0x0800_8134, "stop_kind": "idle", "stop_clean": True,
            "uart_after_jump": EXPECTED, "usb_attached": False}
    base.update(kw)
    return BootObservation(**base)


def test_jump_with_the_reference_output_and_a_clean_stop_is_app_ok():
    assert classify(_obs(), EXPECTED) == "app_ok"


def test_jump_with_a_different_crc_line_is_a_broken_app():
    assert classify(_obs(uart_after_jump="app ok\r\ncrc 11E1E025\r\ndone\r\n"), EXPECTED) == "broken_app"


def test_jump_that_ends_in_a_fault_hang_is_a_broken_app():
    obs = _obs(stop_kind="fault-hang", stop_clean=False, uart_after_jump="")
    assert classify(obs, EXPECTED) == "broken_app"


def test_jump_that_faults_after_printing_the_right_lines_is_a_broken_app():
    obs = _obs(faults=[{"cause": "UNDEFINSTR", "pc": 0x0800_8200}])
    assert classify(obs, EXPECTED) == "broken_app"


def test_no_jump_with_usb_attached_is_dfu():
    assert classify(_obs(jumped=False, uart_after_jump="", usb_attached=True), EXPECTED) == "dfu"


def test_no_jump_and_no_usb_device_is_bricked():
    assert classify(_obs(jumped=False, uart_after_jump="", stop_kind="lockup", stop_clean=False),
                    EXPECTED) == "bricked"


def test_nothing_is_app_ok_when_the_reference_application_failed():
    assert classify(_obs(), None) == "broken_app"


def test_an_application_that_normally_hangs_is_app_ok_when_it_hangs_the_same_way():
    obs = _obs(stop_kind="hang", stop_clean=False)
    assert classify(obs, EXPECTED, expected_stop="hang") == "app_ok"
    assert classify(obs, EXPECTED) == "broken_app"


# -- point selection ---------------------------------------------------------------------------

def _op(i: int, kind: str, address: int) -> FlashOp:
    new = b"\xff" * 2048 if kind == "page_erase" else b"\x00\x20"
    return FlashOp(i, kind, address, len(new), 1000 * i, 500, "main", address - 0x0800_0000,
                   b"\xff" * len(new), new, 0)


def _download_ops(erases: int, programs: int, record: int = 0) -> list[FlashOp]:
    ops = [_op(i, "page_erase", 0x0800_8000 + 2048 * i) for i in range(erases)]
    ops += [_op(len(ops), "program", 0x0800_8000 + 2 * j) for j in range(programs)]
    ops += [_op(len(ops), "program", 0x0800_7800 + 2 * j) for j in range(record)]
    return [FlashOp(i, o.kind, o.address, o.length, o.start_ns, o.duration_ns, o.area, o.offset, o.old, o.new,
                    o.pc) for i, o in enumerate(ops)]


def test_default_selection_keeps_every_erase_in_both_modes():
    ops = _download_ops(3, 3000)
    pts = select_points(ops, page_size=2048, image_range=(0x0800_8000, 0x0800_8000 + 6000))
    for i in range(3):
        assert CutPoint(i, BETWEEN) in pts and CutPoint(i, MID) in pts


def test_default_selection_keeps_the_first_and_last_programs_of_each_page():
    ops = _download_ops(0, 3000)  # pages of 1024 half-words
    pts = {p.index for p in select_points(ops, page_size=2048, image_range=(0x0800_8000, 0x0800_9800))}
    for first in (0, 1024, 2048):
        assert {first, first + 1, first + 2} <= pts
    for last in (1023, 2047, 2999):
        assert {last - 2, last - 1, last} <= pts


def test_default_selection_keeps_every_write_outside_the_image():
    ops = _download_ops(1, 500, record=10)
    pts = {p.index for p in select_points(ops, page_size=2048, image_range=(0x0800_8000, 0x0800_8000 + 1000))}
    assert set(range(501, 511)) <= pts


def test_default_selection_is_far_smaller_than_all():
    ops = _download_ops(2, 2000, record=10)
    default = select_points(ops, page_size=2048, image_range=(0x0800_8000, 0x0800_8000 + 4000))
    assert len(select_points(ops, "all")) == 2 * len(ops) + 1
    assert len(default) < 120


def test_a_cut_point_beyond_the_download_is_refused():
    with pytest.raises(ValueError, match="outside"):
        select_points(_download_ops(1, 4), [9])


def test_point_specs_parse_ranges_and_keywords():
    assert parse_points("0,5,10-12") == [0, 5, 10, 11, 12]
    assert parse_points("all") == "all"
    with pytest.raises(ValueError):
        parse_points("first")


@given(st.integers(0, 6), st.integers(0, 3000), st.integers(0, 12))
def test_selection_is_sorted_unique_and_ends_after_the_last_operation(erases, programs, record):
    ops = _download_ops(erases, programs, record)
    pts = select_points(ops, page_size=2048, image_range=(0x0800_8000, 0x0800_8000 + 2 * programs))
    assert pts == sorted(set(pts))
    assert pts[-1] == CutPoint(len(ops), BETWEEN, after_last=True)
    assert all(0 <= p.index < len(ops) for p in pts[:-1])
    assert pts == select_points(ops, page_size=2048, image_range=(0x0800_8000, 0x0800_8000 + 2 * programs))


# -- a plain DFU 1.1 bootloader (boot_dfu11 on the STM32F103C8) ------------------------------------------
DFU11 = str(IMAGES / "boot_dfu11.elf")
APP_C8 = str(IMAGES / "app_c8_2000.bin")


def test_plain_dfu_bootloader_that_holds_back_its_vectors_never_jumps_into_a_half_written_image():
    report = sweep(DFU11, APP_C8, chip="STM32F103C8", points=[0, 400, 777])
    assert report.clean and report.reference.jumped
    assert {t.outcome for t in report.trials[:-1]} == {"dfu"} and report.trials[-1].outcome == "app_ok"


def test_the_sweep_fails_loudly_when_the_reference_flash_is_not_the_image_sent():
    report = sweep(DFU11, APP_C8, chip="STM32F103C8", points=[0], app_address=0x0800_4000)
    assert not report.clean
    assert any(p.startswith("reference download: the flash differs from the image sent") and "0x08004000" in p
               for p in report.problems)

"""Boots reused across power cuts (emulator.bootflow.boot_memo): the same rows as booting every cut,
the flash preview the reuse relies on, and what makes a boot reusable or not."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from emulator.bootflow import powercut as pc
from emulator.bootflow.boot_memo import BootMemo, BootReads, merge_ranges
from emulator.bootflow.powercut import BETWEEN, MID, CutPoint, sweep
from emulator.cli import main as emulator_main

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
FIXED, SEED = str(IMAGES / "boot_fixed.elf"), str(IMAGES / "boot_seed.elf")
APP = str(IMAGES / "app_small.bin")
RUN_NS = 300_000_000
RECORD = 0x7800  # boot_fixed's commit record, as an offset into flash (fixtures/boot/boot_commit.h)


def rows(report: dict) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "wall_s"} for t in report["trials"]]


def _points(ops):
    """Erases, programs early and late, and every write of the last dozen (boot_fixed: its commit
    record, written word by word, so boots that read a half-written record)."""
    return [0, 1, 2, 3, 40, 41, 200, 1000, *range(len(ops) - 12, len(ops))]


@pytest.mark.parametrize("boot", [FIXED, SEED])
def test_reused_boots_give_the_rows_of_booting_every_cut(boot: str) -> None:
    reused = sweep(boot, APP, points=_points, run_ns=RUN_NS, jobs=2)
    every = sweep(boot, APP, points=_points, run_ns=RUN_NS, jobs=2, reuse_boots=False)
    assert rows(reused.as_dict()) == rows(every.as_dict())
    assert every.boots_reused == 0 and every.booted == sum(t.same_as is None for t in every.trials)
    assert reused.booted + reused.boots_reused == every.booted


def test_two_sweeps_give_the_same_report_which_cuts_booted_included() -> None:
    def doc() -> dict:
        d = sweep(FIXED, APP, points=_points, run_ns=RUN_NS, jobs=2).as_dict()
        d.pop("wall_s")
        d["trials"] = rows(d)
        return d

    first, second = doc(), doc()
    assert first == second and first["boots_reused"] > 0


def test_boot_fixed_with_a_blank_commit_record_boots_once_for_all_those_cuts() -> None:
    rep = sweep(FIXED, APP, points=_points, run_ns=RUN_NS, jobs=1)
    assert rep.boots_reused > 0 and rep.booted < len(rep.trials) // 2
    blank_record = [t for t in rep.trials if t.point.index < len(rep.ops) - 12 and t.same_as is None]
    assert sum(t.boot_same_as is None for t in blank_record) == 1  # the first one boots, the rest reuse it


def test_the_sweep_summary_says_how_the_cuts_were_covered(capsys: pytest.CaptureFixture[str]) -> None:
    code = emulator_main(["flash", FIXED, APP, "--power-cut-sweep", "--sweep-points", "0-3,40", "--max-time",
                          "300ms"])
    assert code == 0
    err = capsys.readouterr().err
    assert "11 cuts: " in err and " booted, " in err and "reused an earlier boot" in err


def test_boot_every_cut_on_the_command_line_reuses_none(capsys: pytest.CaptureFixture[str]) -> None:
    code = emulator_main(["flash", FIXED, APP, "--power-cut-sweep", "--sweep-points", "0-3", "--max-time",
                          "300ms", "--sweep-boot-every-cut", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["boots_reused"] == 0 and doc["booted"] == sum(t["same_as"] is None for t in doc["trials"])


# -- the flash preview: what a cut would leave, without cutting ---------------------------------------

def test_the_flash_preview_is_what_the_cut_leaves() -> None:
    plan = pc._load_plan(FIXED, APP, None, None, "all-first", "typical")
    changed_any = False
    # Both modes of an erase and of programs early, in the middle and late in the image.
    for point in [CutPoint(k, mode) for k in (0, 5, 500, 1000, 1500) for mode in (BETWEEN, MID)]:
        board = pc._new_board(plan)
        m = board.machine
        seen: dict[str, object] = {}

        def cut(p: CutPoint, op: pc.FlashOp | None, m=m, seen=seen) -> None:  # noqa: ANN001
            seen["preview"] = m.flash.power_cut_preview()
            seen["before"] = bytes(m.flash.storage)
            m.power_cut()
            raise pc._PowerCut("cut")

        tap = pc._Tap(m, [point], cut)
        with pytest.raises(pc._PowerCut):
            pc._download(board, plan)
        tap.detach()
        main, options, changed = seen["preview"]  # type: ignore[misc]
        assert main == bytes(m.flash.storage) and options == m.flash.option_bytes, point
        entry = [e for e in m.flash.journal.entries if e.kind == "power_cut"][-1]
        assert changed == entry.detail.get("changed_bytes"), point
        changed_any |= main != seen["before"]
    assert changed_any  # some cut left half an operation done: the preview is not just the flash as it was


def test_a_cut_ends_the_flash_stall_of_the_operation_it_interrupts() -> None:
    plan = pc._load_plan(FIXED, APP, None, None, "all-first", "typical")
    board = pc._new_board(plan)
    m = board.machine
    stalls: list[tuple[int, int]] = []

    def cut(p: CutPoint, op: pc.FlashOp | None) -> None:
        stalls.append((m.port.stalled_until_ns, m.now_ns))
        m.power_cut()
        stalls.append((m.port.stalled_until_ns, m.now_ns))
        raise pc._PowerCut("cut")

    tap = pc._Tap(m, [CutPoint(0, MID)], cut)  # half-way through a 20 ms page erase
    with pytest.raises(pc._PowerCut):
        pc._download(board, plan)
    tap.detach()
    (before, now), (after, _) = stalls
    assert before > now  # fetches were stalled by the erase
    assert after <= now  # and the board powers on with an idle flash


# -- what a boot reads --------------------------------------------------------------------------------

def _cut_board(points: list[CutPoint], boot: str = FIXED):  # noqa: ANN202 - test helper
    plan = pc._load_plan(boot, APP, None, None, "all-first", "typical")
    board = pc._new_board(plan)
    tap = pc._Tap(board.machine, points)
    with contextlib.suppress(pc._PowerCut):
        pc._download(board, plan)
    tap.detach()
    return board.machine, tap


def test_a_boot_with_a_blank_commit_record_reads_only_its_magic_word() -> None:
    m, tap = _cut_board([CutPoint(100, BETWEEN)])
    reads = BootReads(m, [(RECORD, RECORD + 0x800), (0x8000, 0x8000 + 4096)])
    obs = pc.observe_boot(m, (0x0800_8000, 0x0802_0000), (0x0800_0000, 0x0800_8000), RUN_NS, None, reads)
    assert not obs.jumped and obs.usb_attached
    assert reads.runs == [(RECORD, RECORD + 4)]


def test_a_boot_that_jumps_is_not_reusable() -> None:
    _, whole = _cut_board([])
    m, tap = _cut_board([CutPoint(len(whole.ops), BETWEEN, after_last=True)])
    assert tap.cut_done
    reads = BootReads(m, [(RECORD, RECORD + 0x800), (0x8000, 0x8000 + 4096)])
    obs = pc.observe_boot(m, (0x0800_8000, 0x0802_0000), (0x0800_0000, 0x0800_8000), RUN_NS, None, reads)
    assert obs.jumped and reads.runs is None


def test_after_a_jump_the_application_runs_unwatched() -> None:
    # boot_seed reads the application's stack-pointer word and jumps; app_small then reads
    # all of itself for its CRC line, which the watch must no longer see (nor pay for).
    _, whole = _cut_board([], SEED)
    m, _ = _cut_board([CutPoint(len(whole.ops), BETWEEN, after_last=True)], SEED)
    reads = BootReads(m, [(0x8000, 0x8000 + 4096)])
    obs = pc.observe_boot(m, (0x0800_8000, 0x0802_0000), (0x0800_0000, 0x0800_8000), RUN_NS, None, reads)
    assert obs.jumped and "crc" in obs.uart_after_jump
    assert reads.runs is None and 0 < sum(reads.mask) <= 64  # the vector words the bootloader looked at


def test_a_boot_whose_vector_table_lies_on_the_varying_bytes_is_not_reusable() -> None:
    m, _ = _cut_board([CutPoint(100, BETWEEN)])
    reads = BootReads(m, [(0, 0x100)])  # as if the download rewrote the bootloader's own vectors
    pc.observe_boot(m, (0x0800_8000, 0x0802_0000), (0x0800_0000, 0x0800_8000), RUN_NS, None, reads)
    assert reads.runs is None


# -- the memo itself ----------------------------------------------------------------------------------

def test_the_memo_matches_on_the_bytes_read_and_the_option_bytes_only() -> None:
    memo = BootMemo()
    flash = bytes(range(256)) * 4
    memo.add([(8, 12)], flash, b"\xa5\x5a", "result", "between #3")
    other = bytearray(flash)
    other[100] ^= 0xFF  # a byte the boot never read
    assert memo.lookup(bytes(other), b"\xa5\x5a") == ("result", "between #3")
    other[9] ^= 0xFF  # a byte it read
    assert memo.lookup(bytes(other), b"\xa5\x5a") is None
    assert memo.lookup(flash, b"\xff\xff") is None


def test_ranges_merge_where_they_touch() -> None:
    assert merge_ranges([(10, 20), (0, 4), (4, 8), (15, 30), (40, 40)]) == [(0, 8), (10, 30)]

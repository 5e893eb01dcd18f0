"""The power-cut sweep in forked snapshots, on several cores and in shards: the same rows as replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.bootflow.powercut import merge_shards, sweep
from emulator.cli import main as emulator_main

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
BOOT, APP = str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin")
POINTS = [0, 1, 2, 40, 41, 200]
RUN_NS = 300_000_000


def rows(report: dict) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "wall_s"} for t in report["trials"]]


@pytest.fixture(scope="module")
def replayed() -> dict:
    return sweep(BOOT, APP, points=POINTS, run_ns=RUN_NS, jobs=0).as_dict()


def test_snapshots_give_the_rows_replays_give(replayed: dict) -> None:
    assert rows(sweep(BOOT, APP, points=POINTS, run_ns=RUN_NS, jobs=2).as_dict()) == rows(replayed)


def test_one_job_at_a_time_gives_the_same_rows(replayed: dict) -> None:
    assert rows(sweep(BOOT, APP, points=POINTS, run_ns=RUN_NS, jobs=1).as_dict()) == rows(replayed)


def test_two_shards_merged_are_the_unsharded_sweep(replayed: dict) -> None:
    shards = [sweep(BOOT, APP, points=POINTS, run_ns=RUN_NS, shard=(k, 2)).as_dict() for k in (0, 1)]
    assert all(s["trials"] for s in shards)
    merged = merge_shards(shards)
    assert rows(merged) == rows(replayed)
    assert merged["counts"] == replayed["counts"] and merged["clean"] == replayed["clean"]


def test_merging_reports_of_different_sweeps_is_refused(replayed: dict) -> None:
    other = dict(replayed, app_file="other.bin", shard=[1, 2])
    with pytest.raises(ValueError, match="app_file differs"):
        merge_shards([dict(replayed, shard=[0, 2]), other])


def test_a_missing_shard_is_refused(replayed: dict) -> None:
    with pytest.raises(ValueError, match="not shards 0..2 of 3"):
        merge_shards([dict(replayed, shard=[0, 3]), dict(replayed, shard=[2, 3])])


def test_the_cli_shards_and_sweep_merge_puts_them_together(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          replayed: dict) -> None:
    paths = []
    for k in (0, 1):
        code = emulator_main(["flash", BOOT, APP, "--power-cut-sweep", "--sweep-points", "0-2,40,41,200",
                              "--max-time", "300ms", "--shard", f"{k}/2", "--json"])
        assert code == 0
        path = tmp_path / f"shard{k}.json"
        path.write_text(capsys.readouterr().out)
        paths.append(str(path))
    assert emulator_main(["sweep-merge", *paths, "--json"]) == 0
    assert rows(json.loads(capsys.readouterr().out)) == rows(replayed)


@pytest.mark.parametrize("bad", ["2/2", "x/2", "1", "-1/2"])
def test_a_bad_shard_is_one_line_and_exit_2(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert emulator_main(["flash", BOOT, APP, "--power-cut-sweep", f"--shard={bad}"]) == 2
    assert "shard must be K/N" in capsys.readouterr().err

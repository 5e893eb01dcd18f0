"""Progress for people and CI: tasks on an installed reporter, bars only on a terminal, plain lines in a log,
nothing with --quiet."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from emulator.bootflow import progress_view as cli_progress
from emulator.bootflow.progress_view import PlainReporter, reporter_for
from emulator.bootflow.scenario import flash_and_boot
from emulator.cli import main
from emulator.core import progress
from emulator.usb.device_server import _forward_lines

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"


class Recorder:
    """A reporter that remembers every task it opened and whether it was closed."""

    draws = False

    def __init__(self) -> None:
        self.tasks: list[RecordedTask] = []

    def open(self, description: str, total: float | None = None, unit: str = "") -> progress.Task:
        task = RecordedTask(description, total, unit)
        self.tasks.append(task)
        return task

    def echo(self, text: str) -> None:
        pass


class RecordedTask(progress.Task):
    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.completed: float = 0
        self.closed = False

    def update(self, *, completed=None, total=None, description=None) -> None:
        self.completed = completed if completed is not None else self.completed

    def close(self) -> None:
        self.closed = True


def test_a_task_without_a_reporter_shows_nothing_and_costs_nothing(capsys):
    with progress.task("work", total=3) as t:
        t.advance()
    assert capsys.readouterr() == ("", "")


def test_reporting_installs_a_reporter_only_inside_its_block():
    recorder = Recorder()
    with progress.reporting(recorder):
        progress.task("inside")
    progress.task("outside")
    assert [t.description for t in recorder.tasks] == ["inside"]


def test_a_download_shows_its_erases_download_and_verify_and_closes_them():
    recorder = Recorder()
    with progress.reporting(recorder):
        outcome = flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"))
    names = [t.description for t in recorder.tasks]
    assert outcome.ok and names[:3] == ["erase", "download", "verify"]
    assert all(t.closed for t in recorder.tasks)


def test_the_download_task_counts_every_byte_sent():
    recorder = Recorder()
    with progress.reporting(recorder):
        flash_and_boot(str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"))
    download = next(t for t in recorder.tasks if t.description == "download")
    assert download.unit == "bytes" and download.completed == download.total == 3944


def test_quiet_means_no_reporter():
    assert reporter_for(quiet=True) is None


def test_a_pipe_gets_the_plain_reporter(capsys):
    assert isinstance(reporter_for(quiet=False), PlainReporter)


def test_the_plain_reporter_says_nothing_about_a_short_task(capsys):
    with PlainReporter().open("short", total=10) as t:
        t.advance(10)
    assert capsys.readouterr().err == ""


def test_the_plain_reporter_prints_a_line_for_a_long_task_and_when_it_ends(capsys, monkeypatch):
    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL_S", 0.0)
    with PlainReporter().open("power-cut sweep", total=81, unit="cuts") as t:
        t.update(completed=12)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("progress: power-cut sweep: 12/81 cuts (")
    assert lines[-1].startswith("progress: power-cut sweep: 12/81 cuts, done (")


def test_a_programs_own_progress_line_is_forwarded_in_its_last_state():
    seen: list[str] = []
    _forward_lines(io.BytesIO(b"Download [==   ] 40%\rDownload [=====] 100%\nDone."), seen.append)
    assert seen == ["Download [=====] 100%\n", "Done.\n"]


def test_flash_quiet_prints_only_the_application_output_when_the_boot_flow_works(capsys):
    code = main(["flash", str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("app ok") and err == ""


def test_check_quiet_prints_one_line_per_finding(capsys):
    code = main(["check", str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_small.bin"), "--erase-order",
                 "all-first", "-q"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and lines and all(line.split(":")[0].count(" ") == 0 for line in lines)
    assert any(line.startswith("state-left-running-at-jump: ") for line in lines)


@pytest.mark.parametrize("command", ["flash", "check", "serve", "conformance"])
def test_every_long_command_takes_quiet(command):
    from emulator.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    assert any("--quiet" in a.option_strings for a in sub._actions)

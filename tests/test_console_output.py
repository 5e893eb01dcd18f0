"""Output for people and for CI: plain, unwrapped lines without trailing spaces when stderr is not a terminal."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from rich.table import Table

from hostside.console import console

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"


def _table(long_text: str) -> Table:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row("short", "x")
    t.add_row("long", long_text)
    return t


def test_a_table_printed_to_a_pipe_has_no_trailing_spaces():
    stream = io.StringIO()
    console(stream).print(_table("a value much longer than the first one"))
    assert all(line == line.rstrip() for line in stream.getvalue().splitlines())


def test_a_long_line_printed_to_a_pipe_is_not_wrapped():
    stream = io.StringIO()
    sentence = " ".join(f"word{i}" for i in range(120))
    console(stream).print(_table(sentence))
    assert any(line.endswith(sentence) for line in stream.getvalue().splitlines())


def test_a_pipe_gets_no_colour_codes():
    stream = io.StringIO()
    console(stream).print("[bold red]broken[/]")
    assert stream.getvalue() == "broken\n"


def test_redirected_check_output_keeps_each_row_on_one_line_without_padding():
    proc = subprocess.run([sys.executable, "-m", "emulator", "check", str(IMAGES / "boot_fixed.elf"),
                           str(IMAGES / "app_small.bin"), "--erase-order", "all-first"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 0
    assert all(line == line.rstrip() for line in lines)
    assert any(line.startswith("device") and "wTransferSize 2048)" in line for line in lines)

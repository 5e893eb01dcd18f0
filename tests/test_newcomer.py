"""What a new user meets first: help texts, usage names, exit codes, the README's examples."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import emulator.cli as emulator_cli
import hostside.cli as hostside_cli
from emulator.bootflow.report import at, evidence_text, render_flash
from emulator.cli import main as emulator_main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
COMMANDS = ("run", "flash", "check", "serve", "usb-info")


def help_text(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        emulator_main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


# -- help and usage ----------------------------------------------------------------------------------------------
def test_no_command_names_the_commands_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert emulator_main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(name in err for name in COMMANDS)


def test_top_level_help_has_a_plain_description_without_markup(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys=capsys)
    assert "``" not in text
    assert emulator_cli.DESCRIPTION in " ".join(text.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_lists_its_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(command, capsys=capsys)
    table = text[text.index("exit codes:"):]
    for code, _ in (*emulator_cli.EXIT_CODES[command], *emulator_cli.COMMON_EXITS):
        assert re.search(rf"^\s+{re.escape(code)}\s\s", table, re.MULTILINE), (code, table)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_has_help_text(command: str) -> None:
    parser = emulator_cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert [a.dest for a in sub.choices[command]._actions if not a.help] == []


def test_serve_usage_shows_the_command_after_the_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    usage = help_text("serve", capsys=capsys).split("\n\n")[0]
    assert usage.rstrip().endswith("[-- COMMAND [ARGS ...]]")


@pytest.mark.parametrize(("module", "script"), [(emulator_cli, "stm32-emu"), (hostside_cli, "stm32-dfu")])
def test_console_scripts_show_their_own_name_in_usage(monkeypatch: pytest.MonkeyPatch, module, script: str) -> None:
    monkeypatch.setattr(sys, "argv", [f"/usr/local/bin/{script}"])
    assert module.build_parser().format_usage().startswith(f"usage: {script} ")


@pytest.mark.parametrize(("module", "shown"), [(emulator_cli, "python -m emulator"), (hostside_cli, "python -m hostside")])
def test_python_dash_m_shows_python_dash_m_in_usage(monkeypatch: pytest.MonkeyPatch, module, shown: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(ROOT / module.__name__.split(".")[0] / "__main__.py")])
    assert module.build_parser().format_usage().startswith(f"usage: {shown} ")


def test_hostside_help_lists_the_sysexits_codes() -> None:
    text = hostside_cli.build_parser().format_help()
    for code, _ in hostside_cli.EXIT_CODES:
        assert re.search(rf"^\s+{code}\s\s", text, re.MULTILINE), code


def test_hostside_failure_with_the_progress_bar_on_starts_stderr_with_the_error() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = hostside_cli.main(["--emulate", str(ROOT / "fixtures" / "images" / "boot_fixed.elf"), "-D",
                              str(ROOT / "fixtures" / "images" / "app_small.bin")], stdout=out, stderr=err)
    assert code == 64
    assert err.getvalue().startswith("error: a raw binary needs an address")


# -- output --------------------------------------------------------------------------------------------------------
def test_an_address_without_a_symbol_is_printed_once() -> None:
    assert at(0x08008134, "0x08008134") == "0x08008134"
    assert at(0x9FE1A4A3, "0x9FE1A4A2") == "0x9FE1A4A3"
    assert at(0x08008134, "app:Reset_Handler") == "0x08008134 (app:Reset_Handler)"


def test_flash_summary_jump_line_has_no_repeated_address() -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    render_flash({"app_size": 4, "app_address": 0x08008000, "erase_order": "all-first", "download_ok": True,
                  "download_emulated_ms": 1.0, "erase_busy_ms": [], "error": None, "verify": None,
                  "jump": {"address": 0x08008134, "symbol": "0x08008134", "msp": 0x2000C000, "time_ns": 5},
                  "stop": None, "ok": True}, console)
    text = console.file.getvalue()
    assert "to 0x08008134 with MSP" in text


def test_finding_evidence_reads_as_text_with_full_width_addresses() -> None:
    assert evidence_text("0x8040000") == "0x08040000"
    assert evidence_text(["0x8000000", "0x8008000"]) == "0x08000000, 0x08008000"
    assert evidence_text({"kind": "page_erase", "destroyed": [["0x8008000", "0x8008800"]]}) == \
        "kind=page_erase, destroyed=((0x08008000, 0x08008800))"
    assert evidence_text([]) == "none" and evidence_text(True) == "yes"
    assert evidence_text(["PB2 (BOOT1) = low", "PA0 = high"]) == "PB2 (BOOT1) = low; PA0 = high"


# -- the README -----------------------------------------------------------------------------------------------------
def test_readme_names_only_files_that_exist() -> None:
    for path in sorted(set(re.findall(r"\bfixtures/images/[\w.]+\.(?:elf|bin|hex|dfu)\b", README))):
        assert (ROOT / path).is_file(), path
    assert not re.search(r"(?<![/\w])app\.bin\b", README)


def test_readme_documents_every_exit_code() -> None:
    section = README[README.index("## Exit codes"):README.index("## Fuzzing the DFU path")]
    for code, _ in (*emulator_cli.COMMON_EXITS, *hostside_cli.EXIT_CODES):
        assert re.search(rf"\b{code}\b", section), code
    assert "stm32-emu" in README and "stm32-dfu" in README


def test_readme_python_example_runs_from_another_directory(tmp_path: Path) -> None:
    snippet = next((m for m in re.finditer(r"```python\n(.*?)```", README, re.DOTALL) if "open_emulated" in m.group(1)),
                   None)
    assert snippet is not None
    proc = subprocess.run([sys.executable, "-c", snippet.group(1)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "0x483 0xdf11"

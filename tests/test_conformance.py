"""python -m emulator conformance: the suite passes boot_fixed, fails boot_seed naming its defects,
runs a plain DFU 1.1 bootloader, writes JUnit XML, and refuses bad input in one line."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from emulator.cli import main
from emulator.conformance.plugin import behaviour

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"


@dataclass
class Run:
    code: int
    out: str
    err: str


def conformance(*args: str) -> Run:
    proc = subprocess.run([sys.executable, "-m", "emulator", "conformance", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this session sees (the workers' common temporary root)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def run_once(factory: pytest.TempPathFactory, name: str, *args: str) -> Run:
    """One conformance run per test session, whichever worker asks first (the others wait and read it)."""
    folder = shared_dir(factory)
    result = folder / f"conformance-{name}.json"
    with open(folder / f"conformance-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(asdict(conformance(*args))))
    return Run(**json.loads(result.read_text()))


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    junit = shared_dir(tmp_path_factory) / "conformance-fixed.xml"
    # A short sweep (the first flash operation and after the last): the default selection takes minutes.
    run = run_once(tmp_path_factory, "fixed", str(IMAGES / "boot_fixed.elf"), str(IMAGES / "app_small.bin"),
                   "--sweep-points", "0", "--junitxml", str(junit))
    return run, junit


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_once(tmp_path_factory, "seed", str(IMAGES / "boot_seed.elf"), "-k", "not power_cut", "-n", "2")


@pytest.fixture(scope="module")
def dfu11(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_once(tmp_path_factory, "dfu11", str(IMAGES / "boot_dfu11.elf"), "--chip", "STM32F103C8",
                    "--sweep-points", "0", "--quiet")


def test_boot_fixed_conforms_and_exits_zero(fixed):
    run, _ = fixed
    assert run.code == 0, run.err[-3000:]
    assert "conforms" in run.err.splitlines()[-1]


def test_the_junit_file_lists_every_test_without_a_failure(fixed):
    _, junit = fixed
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "bootsim-conformance"
    assert int(suite.get("tests", "0")) > 60 and suite.get("failures") == "0" and suite.get("errors") == "0"


def test_the_junit_file_names_tests_by_area_and_behaviour(fixed):
    _, junit = fixed
    names = {(case.get("classname"), case.get("name")) for case in ET.parse(junit).getroot().iter("testcase")}
    assert ("suite_dfu_states", "test_abort_in_dfu_error_is_stalled_and_stays_in_dfu_error") in names


def test_boot_seed_does_not_conform_and_exits_one(seed):
    assert seed.code == 1, seed.err[-3000:]


@pytest.mark.parametrize("defect", ["layout-does-not-match-chip", "erase-beyond-end-of-flash",
                                    "dfu-request-busy-too-long", "bootloader-region-writable", "bootloader-readable",
                                    "state-left-running-at-jump", "erase-destroys-written-data"])
def test_boot_seed_failures_name_its_defects(seed, defect):
    failures = [line for line in seed.err.splitlines() if line.startswith("FAIL")]
    assert any(defect in line for line in failures), "\n".join(failures)


def test_boot_seed_upload_past_the_end_of_flash_names_the_fault_in_its_read_routine(seed):
    line = next(line for line in seed.err.splitlines() if line.startswith("FAIL") and "UPLOAD past the end" in line)
    assert "MEM_If_Read_FS" in line


def test_output_to_a_pipe_has_plain_lines_without_trailing_spaces(seed):
    lines = seed.err.splitlines()
    assert lines and all(line == line.rstrip() for line in lines) and "\x1b[" not in seed.err


def test_plain_dfu_bootloader_conforms_with_dfuse_tests_skipped(dfu11):
    assert dfu11.code == 0, dfu11.err[-3000:]
    assert "skipped" in dfu11.err.splitlines()[-1]


def test_quiet_prints_no_line_per_test(dfu11):
    assert not any(line.startswith(("PASS", "SKIP")) for line in dfu11.err.splitlines())


def test_test_names_read_as_sentences():
    assert behaviour("suite_dfu_states.py::test_abort_in_dfu_idle_keeps_dfu_idle") == (
        "DFU 1.1 state machine", "ABORT in dfuIDLE keeps dfuIDLE")


def test_a_parametrized_test_name_carries_the_erase_order():
    assert behaviour("suite_boot_flow.py::test_download_completes[interleaved]")[1] == "download completes (interleaved)"


def test_a_keyword_that_matches_no_test_is_bad_input():
    run = conformance(str(IMAGES / "boot_fixed.elf"), "-k", "no_such_behaviour")
    assert run.code == 2 and run.err.strip() == "error: no conformance test matches -k 'no_such_behaviour'"


@pytest.mark.parametrize(("args", "message"), [
    (["-k", "a and ("], "error: -k 'a and ('"),
    (["-n", "0"], "error: argument -n: -n takes at least 1 worker, not 0"),
    (["--sweep-points", "x"], "error: bad cut point 'x'"),
    (["--junitxml", "/no/such/dir/out.xml"], "error: --junitxml /no/such/dir/out.xml: no such directory"),
    (["-d", "1234:5678"], "error: the emulated device: no DFU device matches -d 1234:5678"),
    (["--address", "0x08008100"], "error: --address 0x08008100: an application at 0x08008100 cannot relocate VTOR"),
    (["--chip", "STM32F103ZZ"], "error: "),
])
def test_bad_input_is_one_line_and_exit_two(capsys, args, message):
    code = main(["conformance", str(IMAGES / "boot_fixed.elf"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1


def test_a_missing_bootloader_image_is_bad_input(capsys):
    code = main(["conformance", str(IMAGES / "no_such.elf")])
    assert code == 2 and capsys.readouterr().err.strip() == f"error: {IMAGES / 'no_such.elf'}: no such file"

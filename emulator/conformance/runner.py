"""Run the conformance suite in-process with pytest, for ``python -m emulator conformance``.

``-n N`` (pytest-xdist: whole modules per worker, so a module's shared runs happen once),
``-k EXPR`` and ``--junitxml FILE`` are passed to pytest as they are.  pytest reads no
configuration file of the current directory's project (an empty ini of our own stands in), writes
no cache, and loads :mod:`emulator.conformance.plugin` for the fixtures, the progress and the
summary table.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

import pytest

from emulator.conformance.plugin import OPTION, QUIET_OPTION
from emulator.conformance.target import ConformanceTarget, profile
from emulator.core.machine import EmulatorError
from emulator.usb.target import DeviceNotAttached

SUITE_DIR = Path(__file__).resolve().parent
MODULES = ("suite_descriptors", "suite_dfu_states", "suite_dfuse", "suite_regions", "suite_boot_flow",
           "suite_power_cut")
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ConformanceUsageError(EmulatorError):
    """A bad -k expression, -n value or selection: one line, exit 2."""


def check_keyword(expression: str) -> None:
    """Refuse a -k expression pytest cannot parse, in one line."""
    from _pytest.mark import expression as mark_expression

    # pytest 8 raises its own ParseError, pytest 9 a SyntaxError.
    errors = tuple(e for e in (getattr(mark_expression, "ParseError", None), SyntaxError) if e is not None)
    try:
        mark_expression.Expression.compile(expression)
    except errors as e:
        raise ConformanceUsageError(f"-k {expression!r}: {e}") from None


def pytest_arguments(target: ConformanceTarget, *, junitxml: str | None = None, jobs: int | None = None,
                     keyword: str | None = None, quiet: bool = False, ini: str) -> list[str]:
    args = [str(SUITE_DIR / f"{m}.py") for m in MODULES]
    args += ["-p", "emulator.conformance.plugin", f"{OPTION}={target.to_json()}",
             "-c", ini, "--rootdir", str(SUITE_DIR), "--confcutdir", str(SUITE_DIR),
             "-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:randomly", "-q", "--capture=no",
             "-o", "junit_suite_name=bootsim-conformance", "-o", "junit_family=xunit2",
             "-o", "junit_logging=no", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if quiet:
        args.append(QUIET_OPTION)
    if junitxml:
        args += ["--junitxml", junitxml]
    if jobs is not None and jobs != 1:
        args += ["-n", str(jobs) if jobs > 0 else "auto", "--dist", "loadfile"]
    else:
        args += ["-p", "no:xdist"]
    if keyword:
        args += ["-k", keyword]
    return args


def run(target: ConformanceTarget, *, junitxml: str | None = None, jobs: int | None = None,
        keyword: str | None = None, quiet: bool = False) -> int:
    """0 when every test passes, 1 when any fails (or the bootloader never attached), 2 on bad input."""
    target.validate()
    if keyword:
        check_keyword(keyword)
    try:
        profile(target.to_json())  # enumerate once up front: a wrong -d/-a is bad input, not a failure
    except DeviceNotAttached as e:
        print(f"FAIL: the bootloader never attached to USB in DFU mode: {e}", file=sys.stderr)
        return EXIT_FAILED
    with tempfile.TemporaryDirectory(prefix="bootsim-conformance-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\npython_files = suite_*.py\n")
        if junitxml:
            junitxml = os.path.abspath(junitxml)
        # pytest's own terminal report goes nowhere: the plugin shows progress and the summary on stderr.
        with contextlib.redirect_stdout(io.StringIO()):
            code = pytest.main(pytest_arguments(target, junitxml=junitxml, jobs=jobs, keyword=keyword,
                                                quiet=quiet, ini=str(ini)))
    if code == pytest.ExitCode.OK:
        return EXIT_PASSED
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise ConformanceUsageError(f"no conformance test matches -k {keyword!r}" if keyword else
                                    "no conformance test was collected")
    if code == pytest.ExitCode.USAGE_ERROR:
        raise ConformanceUsageError("pytest refused the options (see above)")
    return EXIT_FAILED  # failures, errors, or a collection error (the summary says which)

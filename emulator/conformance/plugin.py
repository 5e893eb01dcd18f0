"""The pytest plugin behind ``python -m emulator conformance`` (loaded with ``-p``).

It gives the ``suite_*`` modules their fixtures: the target, one enumeration of it
(:class:`~emulator.conformance.target.DeviceProfile`), the application to download, a
fresh DFU session per test, and the ``check`` and power-cut runs the boot-flow tests
read.  It also parametrizes the host erase orders from the device's protocol.  In the
controlling process it shows progress (a bar on a terminal, one plain line per test
elsewhere) and prints the summary table at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulator.bootflow.checks import ERASE_ORDERS, PLAIN_RUN, CheckReport, check
from emulator.bootflow.harness import DfuSession
from emulator.bootflow.progress_view import PlainReporter, RichReporter
from emulator.bootflow.testapp import BuiltinApplication, build_test_application
from emulator.conformance.target import ConformanceTarget, DeviceProfile, profile
from emulator.core import progress
from hostside.console import console, is_terminal

OPTION = "--bootsim-target"
QUIET_OPTION = "--bootsim-quiet"

AREAS = {
    "suite_descriptors": "enumeration and descriptors",
    "suite_dfu_states": "DFU 1.1 state machine",
    "suite_dfuse": "DfuSe commands",
    "suite_regions": "protected regions",
    "suite_boot_flow": "download, verify, leave, jump",
    "suite_power_cut": "power cuts",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bootsim conformance")
    group.addoption(OPTION, default=None, help="the bootloader under test, as JSON (emulator.conformance.target)")
    group.addoption(QUIET_OPTION, action="store_true", default=False, help="no progress, only the summary")


# -- the target and what it shows -------------------------------------------------------------

@dataclass
class Application:
    """The file downloaded in the boot-flow tests, and what it prints when it runs intact (known
    only for the built-in test application)."""

    path: str
    address: int | None
    expected_uart: str | None
    builtin: BuiltinApplication | None = None


def _target_json(config: pytest.Config) -> str:
    text = config.getoption(OPTION)
    if not text:
        raise pytest.UsageError(f"the conformance suite needs {OPTION} (run it with python -m emulator conformance)")
    return text


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> ConformanceTarget:
    return ConformanceTarget.from_json(_target_json(pytestconfig))


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> DeviceProfile:
    """The bootloader enumerated once in DFU mode (cached per process)."""
    return profile(_target_json(pytestconfig))


@pytest.fixture(scope="session")
def application(target: ConformanceTarget, device: DeviceProfile,
                tmp_path_factory: pytest.TempPathFactory) -> Application:
    """APP as given, or the built-in test application linked for where the bootloader expects one."""
    if target.app is not None:
        return Application(target.app, target.address, None)  # a .bin without --address: where the layout says
    if device.app_start is None:
        pytest.fail("where the application goes is unknown: give --address (or an APP file)", pytrace=False)
    try:
        app = build_test_application(device.app_start, target.chip)
    except ValueError as e:
        pytest.fail(f"the built-in test application cannot go to 0x{device.app_start:08X}: {e}", pytrace=False)
    path = app.write(tmp_path_factory.mktemp("app") / f"bootsim_test_app_{device.app_start:08x}.bin")
    return Application(str(path), device.app_start, app.expected_uart, app)


@pytest.fixture(scope="session")
def check_report(target: ConformanceTarget, application: Application) -> CheckReport:
    """``python -m emulator check`` on the target: one download per host erase order, then the probes."""
    options = target.flow_options()
    options["app_address"] = application.address
    return check(target.boot, application.path, erase_orders=ERASE_ORDERS, run_ns=target.max_time_ns,
                 leave=target.leave, **options)


@pytest.fixture
def dfu(target: ConformanceTarget) -> Iterator[DfuSession]:
    """A fresh board in DFU mode, enumerated, its DFU interface in dfuIDLE."""
    board = target.board()
    session = board.attach_dfu(target.selector)
    try:
        yield session
    finally:
        board.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``host_order``: both DfuSe host erase orders, or the single plain DFU download."""
    if "host_order" in metafunc.fixturenames:
        found = profile(_target_json(metafunc.config))
        orders = list(ERASE_ORDERS) if found.is_dfuse else [PLAIN_RUN]
        metafunc.parametrize("host_order", orders)


# -- progress and the summary (controlling process only) --------------------------------------

_ACRONYMS = [
    (r"\bdfu dnload idle\b", "dfuDNLOAD-IDLE"), (r"\bdfu upload idle\b", "dfuUPLOAD-IDLE"),
    (r"\bdfu dnbusy\b", "dfuDNBUSY"), (r"\bdfu idle\b", "dfuIDLE"), (r"\bdfu error\b", "dfuERROR"),
    (r"\bdfu manifest\b", "dfuMANIFEST"), (r"\bdfuse\b", "DfuSe"), (r"\bdfu\b", "DFU"), (r"\busb\b", "USB"),
    (r"\bdnload\b", "DNLOAD"), (r"\bupload\b", "UPLOAD"), (r"\bgetstatus\b", "GETSTATUS"),
    (r"\bgetstate\b", "GETSTATE"), (r"\bclrstatus\b", "CLRSTATUS"), (r"\babort\b", "ABORT"),
    (r"\bdetach\b", "DETACH"), (r"\bwtransfersize\b", "wTransferSize"), (r"\bbitcanupload\b", "bitCanUpload"),
    (r"\bsram\b", "SRAM"), (r"\bram\b", "RAM"), (r"\bread unprotect\b", "READ_UNPROTECT"),
    (r"\bset address pointer\b", "SET_ADDRESS_POINTER"), (r"\bget commands\b", "GET_COMMANDS"),
    (r"\berase\b", "ERASE"), (r"\bvtor\b", "VTOR"), (r"\bchips\b", "chip's"), (r"\bhosts\b", "host's"),
    (r"\bapplications\b", "application's"), (r"\bbootloaders\b", "bootloader's"), (r"\bread only\b", "read-only"),
    (r"\bzero length\b", "zero-length"), (r"\bstatus ok\b", "status OK"), (r"\bclass fe\b", "class FE"),
    (r"\bhalf written\b", "half-written"), (r"\bpower cut\b", "power cut"),
]


def behaviour(nodeid: str) -> tuple[str, str]:
    """(area, sentence) for a test id: ``suite_dfu_states.py::test_abort_in_dfu_idle_keeps_dfu_idle``
    → ("DFU 1.1 state machine", "ABORT in dfuIDLE keeps dfuIDLE")."""
    path, _, name = nodeid.partition("::")
    area = AREAS.get(Path(path).stem, Path(path).stem)
    name, _, param = name.partition("[")
    text = name.removeprefix("test_").replace("_", " ")
    for pattern, replacement in _ACRONYMS:
        text = re.sub(pattern, replacement, text)
    if param:
        text += f" ({param.rstrip(']')})"
    return area, text


def _short(report: pytest.TestReport) -> str:
    """One line: why a test failed or was skipped."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr or "")
    first = text.strip().splitlines()[0] if text.strip() else ""
    for prefix in ("AssertionError: ", "Failed: ", "assert "):
        first = first.removeprefix(prefix)
    return first


@dataclass
class Result:
    nodeid: str
    outcome: str  # passed, failed, skipped, error
    detail: str = ""


class ResultReporter:
    """Collects each test's result in the controlling process; shows progress; prints the table."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.quiet = config.getoption(QUIET_OPTION)
        self.results: dict[str, Result] = {}
        self.total: int | None = None
        self.started = time.perf_counter()
        self.console = console()
        self.progress: Any = None
        self.task: Any = None
        # What the tests' own long steps report to: our bar on a terminal, plain lines in a log.
        self.inner: progress.Reporter | None = None if self.quiet else PlainReporter()
        self.collect_errors: list[str] = []

    # pytest hooks --------------------------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._start(len(session.items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.total is None:
            self._start(len(ids))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid or 'collection'}: {_short(report)}")  # type: ignore[arg-type]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        previous = self.results.get(report.nodeid)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = "error" if report.when == "setup" and report.failed else report.outcome
            self.results[report.nodeid] = Result(report.nodeid, outcome, "" if report.passed else _short(report))
            self._advance(self.results[report.nodeid])
        elif report.when == "teardown" and report.failed and previous is not None and previous.outcome != "failed":
            previous.outcome, previous.detail = "error", _short(report)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        # Without -n the tests run here: their long steps (downloads, the sweep) show under our bar.
        with progress.reporting(self.inner):
            return (yield)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.print_summary()

    # presentation ----------------------------------------------------------------------------------
    def _start(self, total: int) -> None:
        self.total = total
        if self.quiet or not is_terminal():
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = self.progress.add_task("conformance", total=total, amount=f"0/{total} tests")
        self.inner = RichReporter(shared=self.progress)
        self.progress.start()

    def _advance(self, result: Result) -> None:
        area, text = behaviour(result.nodeid)
        if self.progress is not None:
            done = sum(1 for _ in self.results)
            self.progress.update(self.task, advance=1, description=f"conformance: {area}: {text}",
                                 amount=f"{done}/{self.total} tests")
            if result.outcome in ("failed", "error"):
                self.progress.console.print(f"[bold red]FAIL[/] {area}: {text}: {result.detail}", markup=True,
                                            highlight=False)
            return
        if self.quiet:
            return
        word = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}[result.outcome]
        line = f"{word:5} {area}: {text}" + (f": {result.detail}" if result.detail else "")
        self.console.print(line, markup=False, highlight=False)

    def print_summary(self) -> None:
        from rich.markup import escape
        from rich.table import Table

        out = self.console
        for error in self.collect_errors:
            out.print(f"[bold red]error[/] {escape(error)}")
        if not self.results:
            return
        table = Table(title="conformance summary", show_lines=False)
        for name in ("area", "behaviour", "result", "why"):
            table.add_column(name, overflow="fold")
        style = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}
        ordered = sorted(self.results.values(), key=lambda r: (list(AREAS.values()).index(behaviour(r.nodeid)[0])
                                                               if behaviour(r.nodeid)[0] in AREAS.values() else 99))
        for r in ordered:
            area, text = behaviour(r.nodeid)
            table.add_row(area, escape(text), f"[{style[r.outcome]}]{r.outcome}[/]", escape(r.detail))
        out.print(table)
        counts = {k: sum(1 for r in self.results.values() if r.outcome == k)
                  for k in ("passed", "failed", "error", "skipped")}
        verdict = "[green]conforms[/]" if not counts["failed"] and not counts["error"] else "[bold red]does not conform[/]"
        out.print(", ".join(f"{n} {k}" for k, n in counts.items() if n) +
                  f" in {time.perf_counter() - self.started:.1f} s — {verdict}")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an -n worker: the controlling process reports
    if config.getoption(OPTION, None):
        config.pluginmanager.register(ResultReporter(config), "bootsim-conformance-reporter")

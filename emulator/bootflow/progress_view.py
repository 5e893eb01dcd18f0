"""What people see while a long command works: rich bars on a terminal, a plain line now and then
in a CI log, nothing with ``--quiet``.  The commands (and the conformance suite) install one of
these reporters around their work (:func:`emulator.core.progress.reporting`); the work opens
tasks on it."""

from __future__ import annotations

import sys
import time
from typing import Any

from emulator.core.progress import Reporter, Task
from hostside.console import console, is_terminal

PLAIN_INTERVAL_S = 15.0  # a CI log gets a line per task this often, so a long run is never silent


def _amount(completed: float, total: float | None, unit: str) -> str:
    if unit == "bytes":
        done = f"{completed / 1024:.1f}"
        return f"{done}/{total / 1024:.1f} KiB" if total else f"{done} KiB"
    if total:
        return f"{completed:g}/{total:g} {unit}".rstrip()
    return f"{completed:g} {unit}".rstrip() if completed else ""


class _RichTask(Task):
    def __init__(self, reporter: RichReporter, task_id: Any, total: float | None, unit: str) -> None:
        self.reporter, self.id, self.total, self.unit, self.completed = reporter, task_id, total, unit, 0.0
        self.closed = False

    def advance(self, amount: float = 1) -> None:
        self.update(completed=self.completed + amount)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if self.closed:
            return
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        fields: dict[str, Any] = {"amount": _amount(self.completed, self.total, self.unit)}
        if description is not None:
            fields["description"] = description
        self.reporter.progress.update(self.id, completed=self.completed, total=self.total, **fields)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reporter.closed(self.id)


class RichReporter:
    """Live bars on stderr, one per open task, gone when the task ends (nothing stays in the scrollback)."""

    draws = True

    def __init__(self, shared: Any = None) -> None:
        """``shared``: a running ``rich.progress.Progress`` to add the bars to (started and stopped by
        its owner); by default one of our own, shown while any task is open."""
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = console()
        self.owned = shared is None
        self.progress = shared if shared is not None else Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(), console=self.console, transient=True)
        self.open_tasks = 0

    def open(self, description: str, total: float | None = None, unit: str = "") -> Task:
        if self.open_tasks == 0 and self.owned:
            self.progress.start()
        self.open_tasks += 1
        task_id = self.progress.add_task(description, total=total, amount=_amount(0, total, unit))
        return _RichTask(self, task_id, total, unit)

    def closed(self, task_id: Any) -> None:
        self.progress.remove_task(task_id)
        self.open_tasks -= 1
        if self.open_tasks == 0 and self.owned:
            self.progress.stop()

    def echo(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, end="", soft_wrap=True)


class _PlainTask(Task):
    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0.0
        self.started = self.last = time.perf_counter()
        self.printed = False
        self.closed = False

    def advance(self, amount: float = 1) -> None:
        self.update(completed=self.completed + amount)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        now = time.perf_counter()
        if now - self.last >= PLAIN_INTERVAL_S:
            self.last = now
            self._line("")

    def _line(self, suffix: str) -> None:
        self.printed = True
        amount = _amount(self.completed, self.total, self.unit)
        sys.stderr.write(f"progress: {self.description}{': ' + amount if amount else ''}{suffix} "
                         f"({time.perf_counter() - self.started:.0f} s)\n")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.closed and self.printed:
            self._line(", done")
        self.closed = True


class PlainReporter:
    """For CI logs: no redraws; a task that runs longer than :data:`PLAIN_INTERVAL_S` prints one plain
    line per interval, and a last one when it ends."""

    draws = False

    def open(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return _PlainTask(description, total, unit)

    def echo(self, text: str) -> None:
        sys.stderr.write(text)


def reporter_for(quiet: bool) -> Reporter | None:
    """Nothing with ``--quiet``; bars on a terminal; plain lines elsewhere."""
    if quiet:
        return None
    return RichReporter() if is_terminal() else PlainReporter()

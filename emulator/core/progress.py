"""Progress of long operations (a download, a check, a power-cut sweep, a served session).

Code that works for a long time opens a :func:`task` and advances it.  Whoever runs the
code decides what people see: the CLI installs a reporter with :func:`reporting` (rich
bars on a terminal, a plain line now and then in a CI log, nothing with ``--quiet``).
With no reporter installed, tasks cost nothing and show nothing, so library users and
tests see no output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class Task:
    """One operation's progress.  This base class shows nothing; reporters subclass it."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units done."""

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        """Set what is done so far, the total (None: unknown), or what is happening now."""

    def close(self) -> None:
        """The operation ended (done or not); its bar goes away."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reporter(Protocol):
    """What shows tasks: :meth:`open` one, and :meth:`echo` a line of another program's output
    without breaking a bar that is being drawn."""

    def open(self, description: str, total: float | None = None, unit: str = "") -> Task: ...

    def echo(self, text: str) -> None: ...

    @property
    def draws(self) -> bool:
        """Whether bars are being redrawn on a terminal (other output must then go through :meth:`echo`)."""
        ...


_reporter: ContextVar[Reporter | None] = ContextVar("emulator_progress_reporter", default=None)


def task(description: str, total: float | None = None, unit: str = "") -> Task:
    """Open a task on the installed reporter (a silent one when there is none)."""
    reporter = _reporter.get()
    return reporter.open(description, total, unit) if reporter is not None else Task()


def current() -> Reporter | None:
    return _reporter.get()


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Install ``reporter`` for the code run inside the ``with`` block."""
    token = _reporter.set(reporter)
    try:
        yield reporter
    finally:
        _reporter.reset(token)

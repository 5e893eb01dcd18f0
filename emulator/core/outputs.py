"""Output files checked before a run, so a bad path fails in one line up front, not after the work.

A run can take seconds to minutes; a state file, journal, report or capture that
cannot be written should say so before any of it, not as a traceback at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from emulator.core.machine import EmulatorError


class OutputPathError(EmulatorError):
    """An output file that cannot be created or replaced: reported in one line, exit 2."""


def check_output_path(path: str | os.PathLike[str], what: str) -> None:
    """Make sure ``path`` can be written: its directory exists, the file is not a directory,
    and the file can be opened for writing (tried, then left as it was)."""
    p = Path(path)
    _check_directory(p, what)
    if p.is_dir():
        raise OutputPathError(f"{what} {p}: is a directory")
    existed = p.exists()
    try:
        with open(p, "ab"):  # append mode: an existing file keeps its contents
            pass
    except OSError as e:
        raise OutputPathError(f"{what} {p}: cannot write ({e.strerror})") from None
    if not existed:
        with contextlib.suppress(OSError):
            p.unlink()


def check_replaceable(path: str | os.PathLike[str], what: str) -> None:
    """For a file written atomically (a temporary file beside it, then a rename): its directory
    must exist and take new files, and the path must not be a directory."""
    p = Path(path)
    _check_directory(p, what)
    if p.is_dir():
        raise OutputPathError(f"{what} {p}: is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    except OSError as e:
        raise OutputPathError(f"{what} {p}: cannot create files in {p.parent} ({e.strerror})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _check_directory(p: Path, what: str) -> None:
    parent = p.parent
    if not parent.exists():
        raise OutputPathError(f"{what} {p}: no such directory {parent}")
    if not parent.is_dir():
        raise OutputPathError(f"{what} {p}: {parent} is not a directory")

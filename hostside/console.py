"""Rich consoles that suit both people and CI logs.

On a terminal: rich as usual (colour, the terminal's width, live progress bars).
Anywhere else (a pipe, a file, a CI log): plain text.  No colour codes, no wrapping at
an invented width, and no trailing spaces.  Rich pads every table cell to its column's
width, and a console that is not a terminal would otherwise wrap each line at 80
(or, as before, pad and wrap at 160 columns).  A long line stays one line, so
``grep`` and CI log viewers see whole sentences.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console

PLAIN_WIDTH = 10_000  # wide enough that no table or sentence is ever wrapped
_TRAILING = re.compile(r"[ \t]+(?=\n)")


class PlainLines:
    """A text stream that drops the spaces rich leaves at the end of each line.

    ``stream`` None means the current ``sys.stderr``, looked up at every write, so a
    stream swapped in later (pytest's capture, a redirect) gets the text."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def write(self, text: str) -> int:
        self.stream.write(_TRAILING.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current stderr) is a terminal a person watches."""
    stream = stream if stream is not None else sys.stderr
    return Console(file=stream).is_terminal


def console(stream: TextIO | None = None) -> Console:
    """A console for ``stream`` (default: stderr, looked up at each write).

    A terminal gets rich's usual console.  Anything else gets plain, unwrapped lines
    with no trailing spaces."""
    if is_terminal(stream):
        return Console(file=stream, stderr=stream is None, highlight=False)
    return Console(file=PlainLines(stream), highlight=False, width=PLAIN_WIDTH, no_color=True,
                   color_system=None, force_terminal=False, soft_wrap=False)


def code_table(title: str, rows: Iterable[tuple[object, str]]) -> str:
    """An "exit codes" block for a --help epilog: each code right-aligned, its meaning wrapped at
    80 columns under itself (argparse prints epilogs as they are, with RawDescriptionHelpFormatter)."""
    lines = [title]
    for code, meaning in rows:
        wrapped = textwrap.wrap(meaning, 80)
        lines.append(f"  {code:>3}  {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines)

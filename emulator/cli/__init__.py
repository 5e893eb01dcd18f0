"""``python -m emulator``: run a real STM32F103 image on the emulated board.

Exit codes: 0 clean end (budget spent, or the CPU idles with nothing left to
happen), 1 the firmware faulted, locked up or hangs for good, 2 bad input,
130 interrupted (Ctrl-C), 141 the reader of stdout went away (``| head``),
70 an internal error (a bug: one line; ``STM32_BOOTSIM_TRACEBACK=1`` shows it).

One module per command; each gives ``add_parser(subparsers)`` and sets the
parser's ``func``.  This package is the top layer: nothing below imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

import usb.core

from emulator.cli import check, conformance, flash, run, serve, sweep_merge, usb_info
from emulator.cli.common import EXIT_FAILED, EXIT_USAGE
from emulator.core.arguments import OneLineParser, UsageError
from emulator.core.machine import EmulatorError
from emulator.core.outputs import check_output_path
from emulator.core.port import StrictModeError
from emulator.gdb.session import DebuggerGone
from emulator.usb.host import UsbError
from emulator.usb.target import DeviceNotAttached
from hostside.console import code_table
from hostside.dfu import DfuException

COMMANDS = (run, flash, check, conformance, serve, usb_info, sweep_merge)
DESCRIPTION = "Run a real STM32F103 bootloader and application on an emulated board."
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_INTERNAL = 130, 141, 70
TRACEBACK_VARIABLE = "STM32_BOOTSIM_TRACEBACK"

# The exit codes of each command, shown by its --help (and in the README): (code, meaning).
COMMON_EXITS = (
    ("2", "bad input: a missing, corrupt or foreign image, a bad option value, an output file that "
          "cannot be written (checked before anything runs); one line on stderr"),
    ("130", "interrupted (Ctrl-C)"),
    ("141", "the reader of stdout went away (e.g. | head): stops quietly"),
    ("70", f"an internal error, i.e. a bug: one line; {TRACEBACK_VARIABLE}=1 shows the traceback"),
)
EXIT_CODES: dict[str, tuple[tuple[str, str], ...]] = {
    "run": (("0", "clean end: the budget spent, or the CPU idles (WFI, an empty loop) with nothing left "
                  "to happen"),
            ("1", "the firmware faulted for good (lockup, stuck in a fault handler, spinning with "
                  "interrupts masked) or a --strict violation; --gdb: the debugger disconnected or killed "
                  "the session mid-run")),
    "flash": (("0", "the download, verify and jump worked, the flash holds the image sent and the "
                    "application ended cleanly; --power-cut-sweep: no cut led to broken_app or bricked"),
              ("1", "the boot flow broke (the bootloader never attaching to USB included); "
                    "--power-cut-sweep: a cut led to broken_app or bricked; --gdb: the debugger "
                    "disconnected or killed the session mid-run")),
    "check": (("0", "no findings"), ("1", "findings")),
    "sweep-merge": (("0", "the merged sweep is clean: no cut led to broken_app or bricked"),
                    ("1", "a cut led to broken_app or bricked, or did not happen as planned")),
    "serve": (("N", "the command's own exit code (dfu-util: 0, or 74 after :leave when the device resets)"),
              ("1", "the flash does not hold what the command (or the USB/IP client) sent, whatever it said; "
                    "the firmware never attached to USB; --gdb: the debugger went away mid-run"),
              ("0", "--usbip: the session ended and the flash holds what the client sent")),
    "usb-info": (("0", "the device enumerated and was printed"),
                 ("1", "the firmware never attached to USB (or stopped answering while enumerated)")),
}


def exit_code_table(command: str = "") -> str:
    """The "exit codes:" block of ``command``'s --help."""
    return code_table("exit codes:" if command else "exit codes (all commands; COMMAND --help adds what 0 and 1 mean):",
                      (*EXIT_CODES.get(command, ()), *COMMON_EXITS))


def _prog() -> str:
    """``python -m emulator``, or the console script's own name (``stm32-emu``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name in ("__main__.py", "-c") or name.endswith(".py"):
        return "python -m emulator"
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=_prog(), description=DESCRIPTION, epilog=exit_code_table(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND",
                                title="commands")
    for command in COMMANDS:
        command.add_parser(sub)
    for name, p in sub.choices.items():
        if p.epilog is None:
            p.epilog = exit_code_table(name)
            p.formatter_class = _KeepEpilog
    return parser


class _KeepEpilog(argparse.HelpFormatter):
    """Options wrapped as usual; the exit-code table (the epilog) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit codes:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _stdout_gone()


def _main(argv: Sequence[str] | None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return _error(f"no command given: choose one of {', '.join(c for c in _command_names(parser))} "
                      f"({parser.prog} --help, or {parser.prog} COMMAND --help)", EXIT_USAGE)
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return _error(str(e), EXIT_USAGE)
    if not getattr(args, "verbose", False):
        logging.getLogger("emulator.unmodelled").setLevel(logging.ERROR)
    try:
        _check_outputs(args)
        return args.func(args)
    except DeviceNotAttached as e:  # the firmware's doing, not the input's: the flow failed
        return _error(str(e), EXIT_FAILED)
    except EmulatorError as e:
        return _error(str(e), EXIT_USAGE)
    except (DfuException, UsbError, usb.core.USBError) as e:
        # A transport failure outside a flow that reports it (the flows catch their own): one line.
        return _error(f"USB/DFU: {type(e).__name__}: {e}", EXIT_FAILED)
    except StrictModeError as e:
        return _error(f"--strict: {e}", EXIT_FAILED)
    except DebuggerGone as e:
        return _error(f"--gdb: {e}", EXIT_FAILED)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        raise
    except OSError as e:  # a file that went away or filled up during the run: still one line
        where = f"{e.filename}: " if e.filename else ""
        return _error(f"{where}{e.strerror or e}", EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 - the contract is one line, never a traceback
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        return _error(f"internal error: {type(e).__name__}: {e} (a bug; {TRACEBACK_VARIABLE}=1 shows where)",
                      EXIT_INTERNAL)


# Options that name files a command writes, checked before it runs (the state file --flash is
# checked where boards are built: it is read first).
OUTPUT_OPTIONS = {"flash_journal": "--flash-journal", "report": "--report", "usb_pcap": "--usb-pcap",
                  "uart1": "--uart1"}


def _check_outputs(args: argparse.Namespace) -> None:
    for attr, option in OUTPUT_OPTIONS.items():
        path = getattr(args, attr, None)
        if isinstance(path, str):
            check_output_path(path, option)


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._subparsers._group_actions if parser._subparsers else ():  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _error(message: str, code: int) -> int:
    """One line on stderr: whitespace folded, control characters shown escaped."""
    text = " ".join(str(message).split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(f"error: {text}", file=sys.stderr)
    return code


def _stdout_gone() -> int:
    """The reader of stdout closed it (``| head``): stop quietly, as a C tool killed by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush then goes nowhere
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())

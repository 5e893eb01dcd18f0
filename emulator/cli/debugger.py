"""``--gdb [HOST:]PORT`` and ``--break-on-jump``: the options that put a command's board under GDB."""

from __future__ import annotations

import argparse

from emulator.core.machine import EmulatorError
from emulator.core.session import Board
from emulator.gdb.session import DebugSession, parse_gdb_address

GDB_HELP = ("serve the GDB remote protocol on [HOST:]PORT (host 127.0.0.1 unless given; port 0 = any free "
            "port, printed): the board waits for the debugger before its first instruction, and emulated time "
            "stands still while it is halted")
JUMP_HELP = ("with --gdb: halt at the application's first instruction after the bootloader's jump and print "
             "the state it was handed (MSP, VTOR, SysTick, NVIC, clocks) on the debugger's console")


def gdb_address(text: str) -> tuple[str, int]:
    try:
        return parse_gdb_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_gdb_arguments(p: argparse.ArgumentParser, *, jump: bool) -> None:
    p.add_argument("--gdb", type=gdb_address, default=None, metavar="[HOST:]PORT", help=GDB_HELP)
    if jump:
        p.add_argument("--break-on-jump", action="store_true", help=JUMP_HELP)


def open_session(args: argparse.Namespace) -> DebugSession | None:
    """Listen for the debugger (before any work), or None without --gdb."""
    if getattr(args, "break_on_jump", False) and args.gdb is None:
        raise EmulatorError("--break-on-jump halts for a debugger: give --gdb [HOST:]PORT too")
    if args.gdb is None:
        return None
    session = DebugSession(*args.gdb)
    session.announce()
    return session


def attach_for_run(session: DebugSession, board: Board, break_on_jump: bool) -> None:
    """``run``: the board under the debugger; --break-on-jump halts at the first --app image's reset handler."""
    session.attach(board)
    if not break_on_jump:
        return
    apps = board.layout.images[1:]
    if not apps:
        raise EmulatorError("--break-on-jump on run needs the application beside the bootloader (--app APP)")
    app = apps[0]
    reset = app.word(app.vector_table_address + 4)
    if reset is None:
        raise EmulatorError(f"--break-on-jump: {app.path} has no reset vector at 0x{app.vector_table_address + 4:08X}")
    session.break_at(reset, f"the jump into {app.path.name if hasattr(app.path, 'name') else app.path}")


def attach_for_flash(session: DebugSession, break_on_jump: bool):  # noqa: ANN201 - a flash_and_boot callback
    """``flash``: the flow's board under the debugger from its power-on; --break-on-jump halts where the
    flow sees the bootloader jump into the application; ``monitor findings`` runs the jump checks."""
    from emulator.bootflow.checks import jump_findings

    def on_outcome(outcome) -> None:  # noqa: ANN001 - FlashOutcome
        session.attach(outcome.board)
        session.outcome = outcome
        chip = outcome.board.machine.chip
        session.findings = lambda o: [f"{f.id}: {f.title}  {f.evidence}" for f in jump_findings(o, chip)]
        if break_on_jump:
            session.break_on_jump_event()
    return on_outcome

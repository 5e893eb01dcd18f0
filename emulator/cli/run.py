"""``python -m emulator run``: boot an image and run it for an emulated-time budget."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO

from emulator.bootflow import report, report_data, report_html
from emulator.cli.common import EXIT_CLEAN, EXIT_FAILED, add_board_arguments, board_options
from emulator.cli.debugger import add_gdb_arguments, attach_for_run, open_session
from emulator.core.arguments import parse_duration, parse_int
from emulator.core.machine import EmulatorError, Machine, write_stdout
from emulator.core.session import build_board


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="boot an image and run it")
    add_board_arguments(run)
    run.add_argument("--max-time", type=parse_duration, default=parse_duration("2s"),
                     help="emulated-time budget (default 2s)")
    run.add_argument("--max-instructions", type=parse_int, default=None, help="instruction budget")
    run.add_argument("--uart1", metavar="FILE", help="write USART1 output to FILE instead of stdout")
    run.add_argument("--uart1-rx", metavar="FILE", help="feed FILE's bytes to USART1's receiver")
    run.add_argument("--flash-journal", metavar="FILE", help="write the flash operation journal as JSON")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    run.add_argument("--report", metavar="FILE.html",
                     help="write a self-contained HTML report of the boot flow (timeline, flash map, findings)")
    run.add_argument("--trace", action="store_true", help="log every peripheral access to stderr")
    run.add_argument("-v", "--verbose", action="store_true", help="log unmodelled accesses as they happen")
    add_gdb_arguments(run, jump=True)
    run.set_defaults(func=cmd_run)


def _open_sink(path: str | None, quiet: bool) -> tuple[IO[bytes] | None, object]:
    if path is not None:
        try:
            f = open(path, "wb")  # noqa: SIM115 - closed at the end of the run
        except OSError as e:
            raise EmulatorError(f"cannot write {path}: {e.strerror}") from None

        def to_file(data: bytes) -> None:
            f.write(data)
            f.flush()
        return f, to_file
    if quiet:
        return None, None
    return None, write_stdout


def cmd_run(args: argparse.Namespace) -> int:
    uart_file, uart_sink = _open_sink(args.uart1, quiet=args.json)
    options = board_options(args, uart_sinks={1: uart_sink} if uart_sink else {})
    session = open_session(args)
    try:
        board = build_board(options)
        machine = board.machine
        if session is not None:
            attach_for_run(session, board, args.break_on_jump)
        if args.uart1_rx:
            try:
                machine.models["USART1"].feed(Path(args.uart1_rx).read_bytes())  # type: ignore[attr-defined]
            except OSError as e:
                raise EmulatorError(f"cannot read {args.uart1_rx}: {e.strerror}") from None
        if args.trace:
            _install_trace(machine)
        wall = time.perf_counter()
        stop = machine.run(max_ns=args.max_time, max_instructions=args.max_instructions)
        wall = time.perf_counter() - wall
        if session is not None:
            session.finish(EXIT_CLEAN if stop.clean else EXIT_FAILED, stop)
        board.save()
        if args.flash_journal:
            machine.flash.journal.set_symbolizer(machine.symbol)
            Path(args.flash_journal).write_text(machine.flash.journal.to_json(indent=2))
    finally:
        if uart_file is not None:
            uart_file.close()
        if session is not None:
            session.close()
    data = report.summary(board, stop, wall)
    if args.report:
        report_html.write_html(args.report, report_data.run_document(board, stop, vars(args), wall))
    if args.json:
        print(report.to_json(data))
    else:
        sys.stdout.flush()
        report.render(data)
    return EXIT_CLEAN if stop.clean else EXIT_FAILED


def _install_trace(machine: Machine) -> None:
    def trace(kind: str, address: int, size: int, value: int, name: str) -> None:
        sys.stderr.write(f"{machine.scheduler.cycles:>12} {machine.port.pc():08X} {name:<16} {kind} "
                         f"0x{value:0{size * 2}X}\n")
    machine.bus.tracer = trace

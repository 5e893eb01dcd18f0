"""``python -m emulator flash``: download an application through the bootloader's USB DFU, then boot it.

``--power-cut-sweep`` turns the same command into the power-cut sweep.
"""

from __future__ import annotations

import argparse
import sys
import time

from emulator.bootflow import report, report_data, report_html
from emulator.bootflow.powercut import DEFAULT_RUN_NS, Trial, parse_points, render, sweep
from emulator.bootflow.progress_view import reporter_for
from emulator.bootflow.scenario import flash_and_boot, outcome_summary
from emulator.cli.common import (
    EXIT_CLEAN,
    EXIT_FAILED,
    add_chip_argument,
    add_flash_timing_argument,
    add_flow_arguments,
    add_quiet_argument,
    add_selection_arguments,
    add_trigger_arguments,
    flow_options,
)
from emulator.cli.debugger import add_gdb_arguments, attach_for_flash, open_session
from emulator.core import progress
from emulator.core.arguments import parse_duration, parse_int
from emulator.core.machine import EmulatorError
from emulator.core.progress import reporting


def add_parser(sub: argparse._SubParsersAction) -> None:
    fl = sub.add_parser("flash", help="flash an application through the bootloader's USB DFU and boot it")
    fl.add_argument("image", help="the bootloader image (.elf, .hex or .bin)")
    fl.add_argument("app", help="the application: .bin (at --address), .hex, .elf or .dfu")
    add_chip_argument(fl)
    fl.add_argument("--erase-order", choices=("all-first", "interleaved"), default="all-first",
                    help="DfuSe: all-first as dfu-util 0.9+, interleaved as older dfu-util and pydfu")
    fl.add_argument("--no-verify", action="store_true", help="skip reading the image back")
    add_flow_arguments(fl)
    add_selection_arguments(fl)
    add_trigger_arguments(fl, after=True)
    fl.add_argument("--flash", dest="flash_file", metavar="FILE", help="board state file, loaded and saved")
    add_flash_timing_argument(fl)
    fl.add_argument("--max-time", type=parse_duration, default=None,
                    help="emulated time the application may run after the reset (default 2s; with "
                         "--power-cut-sweep, the boot after each cut: default 500ms)")
    fl.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")
    fl.add_argument("--explain", action="store_true", help="narrate the boot flow step by step on stdout")
    fl.add_argument("--report", metavar="FILE.html",
                    help="write a self-contained HTML report of the boot flow (timeline, flash map, findings)")
    fl.add_argument("--transport", choices=("usb", "fops"), default="usb",
                    help="usb: the bootloader's own USB DFU stack; fops: call its USBD_DFU_fops_FS "
                         "functions directly, USB bypassed")
    fl.add_argument("--fops", type=parse_int, default=None, metavar="ADDR",
                    help="address of the media-interface table when the image has no symbols")
    fl.add_argument("--power-cut-sweep", action="store_true",
                    help="cut the power at the download's flash operations in turn and report each reboot")
    fl.add_argument("--sweep-points", default="default", metavar="SPEC",
                    help="default (erases, page edges, commit record, stride), all (2 cuts per operation) "
                         "or operation indices like 0,5,10-12")
    fl.add_argument("--sweep-all-rows", action="store_true", help="do not fold equal rows of the table")
    fl.add_argument("--sweep-boot-every-cut", action="store_true",
                    help="boot after every cut, even where an earlier boot read the same flash bytes and so "
                         "is known to be the same (slower; the same rows)")
    fl.add_argument("--jobs", type=parse_jobs, default=None, metavar="N",
                    help="power-cut trials at once, each in a forked snapshot of one download (default: every "
                         "core; 0 replays the download from reset for each cut)")
    fl.add_argument("--shard", type=parse_shard, default=None, metavar="K/N",
                    help="run every N-th power-cut trial from the K-th (K in 0..N-1), for a CI matrix; "
                         "merge the --json outputs with `python -m emulator sweep-merge`")
    add_quiet_argument(fl)
    add_gdb_arguments(fl, jump=True)
    fl.set_defaults(func=cmd_flash)


FLOW_RUN_NS = 2_000_000_000


def parse_jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of jobs: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"jobs must be 0 or more: {text!r}")
    return value


def parse_shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = (-1, 0)
    if not sep or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"shard must be K/N with 0 <= K < N, not {text!r}")
    return shard


def cmd_flash(args: argparse.Namespace) -> int:
    if args.gdb is not None and (args.power_cut_sweep or args.transport == "fops"):
        raise EmulatorError("--gdb debugs one board: not with --power-cut-sweep or --transport fops")
    with reporting(reporter_for(args.quiet)):
        if args.power_cut_sweep:
            return cmd_power_cut_sweep(args)
        return _flash(args)


def _flash(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    common = {"app_address": args.address, "erase_order": args.erase_order, "verify": not args.no_verify,
              "chip": args.chip, "flash_file": args.flash_file, "flash_timing": args.flash_timing,
              "run_ns": args.max_time or FLOW_RUN_NS, **flow_options(args)}
    if args.transport == "fops":
        from emulator.bootflow.fops import fops_flash_and_boot
        if common.pop("selector") is not None:
            raise EmulatorError("--transport fops bypasses USB: -d/-a/--intf/--serial do not apply")
        if common.pop("leave") != "auto":
            raise EmulatorError("--transport fops ends with a system reset: --leave does not apply")
        if common.pop("nrst"):
            raise EmulatorError("--transport fops starts the flow itself: --nrst does not apply")
        outcome = fops_flash_and_boot(args.image, args.app, fops_address=args.fops, **common)
    else:
        session = open_session(args)
        try:
            outcome = flash_and_boot(args.image, args.app, **common,
                                     on_outcome=None if session is None else attach_for_flash(session, args.break_on_jump))
            if session is not None:
                session.finish(EXIT_CLEAN if outcome.ok else EXIT_FAILED, outcome.stop)
        finally:
            if session is not None:
                session.close()
    data = outcome_summary(outcome)
    if args.report:
        report_html.write_html(args.report, report_data.flash_document(outcome, args.image, args.app, vars(args),
                                                                       time.perf_counter() - started))
    if args.explain:
        from emulator.bootflow.explain import narrate
        data["explain"] = narrate(outcome)
    if args.json:
        print(report.to_json(data))
    else:
        if args.explain:
            print("\n".join(data["explain"]))
        sys.stdout.write(outcome.app_uart)
        sys.stdout.flush()
        if args.quiet:
            report.render_flash_result(data)
        else:
            report.render_flash(data)
    return EXIT_CLEAN if outcome.ok else EXIT_FAILED


def cmd_power_cut_sweep(args: argparse.Namespace) -> int:
    """Exit 0 when no cut jumps into a half-written image or bricks the board, else 1."""
    try:
        points = parse_points(args.sweep_points)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    try:
        options = flow_options(args)
        if options.pop("leave") != "auto":
            raise EmulatorError("the power-cut sweep leaves DFU mode as the device asks: --leave does not apply")
        if options.pop("nrst"):
            raise EmulatorError("the power-cut sweep boots by power-on only: --nrst does not apply")
        with progress.task("power-cut sweep: reference download", unit="cuts") as cuts:
            def cut_done(trial: Trial) -> None:
                cuts.update(completed=len(seen) + 1, description=f"power-cut sweep: {trial.point.label} "
                                                                 f"{trial.outcome}")
                seen.append(trial)

            seen: list[Trial] = []
            rep = sweep(args.image, args.app, points=points,
                        erase_order=getattr(args, "erase_order", "all-first"),
                        chip=getattr(args, "chip", None),
                        run_ns=getattr(args, "max_time", None) or DEFAULT_RUN_NS,
                        app_address=getattr(args, "address", None),
                        flash_timing=getattr(args, "flash_timing", "typical"), jobs=getattr(args, "jobs", None),
                        shard=getattr(args, "shard", None), progress=cut_done,
                        reuse_boots=not getattr(args, "sweep_boot_every_cut", False),
                        planned=lambda n: cuts.update(total=n, description="power-cut sweep"), **options)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    if getattr(args, "report", None):
        report_html.write_html(args.report, report_data.sweep_document(rep, vars(args)))
    if getattr(args, "json", False):
        print(rep.to_json())
    elif getattr(args, "quiet", False):
        report.render_sweep_counts(rep.counts(), rep.problems)
    else:
        render([rep], all_rows=getattr(args, "sweep_all_rows", False))
    return EXIT_CLEAN if rep.clean else EXIT_FAILED

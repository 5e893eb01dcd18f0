"""``python -m emulator check``: flash with every host erase order and report what breaks the boot flow."""

from __future__ import annotations

import argparse

from emulator.bootflow import report, report_data, report_html
from emulator.bootflow.checks import ERASE_ORDERS, check
from emulator.bootflow.progress_view import reporter_for
from emulator.cli.common import (
    EXIT_CLEAN,
    EXIT_FAILED,
    add_chip_argument,
    add_flow_arguments,
    add_quiet_argument,
    add_selection_arguments,
    add_trigger_arguments,
    flow_options,
)
from emulator.core import progress
from emulator.core.arguments import parse_duration
from emulator.core.progress import reporting


def add_parser(sub: argparse._SubParsersAction) -> None:
    ck = sub.add_parser("check", help="flash through the bootloader with every host erase order and report "
                                      "what breaks the boot flow")
    ck.add_argument("image", help="the bootloader image")
    ck.add_argument("app", help="the application image")
    add_chip_argument(ck)
    ck.add_argument("--erase-order", choices=("both", "all-first", "interleaved"), default="both",
                    help="DfuSe host erase orders to run (a plain DFU download runs once)")
    add_flow_arguments(ck)
    add_selection_arguments(ck)
    add_trigger_arguments(ck, after=True)
    ck.add_argument("--max-time", type=parse_duration, default=parse_duration("2s"),
                    help="emulated time the application may run after the jump (default 2s)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    ck.add_argument("--report", metavar="FILE.html",
                    help="write a self-contained HTML report of the boot flow (timeline, flash map, findings)")
    add_quiet_argument(ck)
    ck.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    orders = ERASE_ORDERS if args.erase_order == "both" else (args.erase_order,)
    with reporting(reporter_for(args.quiet)), progress.task("check"):
        result = check(args.image, args.app, erase_orders=orders, chip=args.chip, app_address=args.address,
                       run_ns=args.max_time, **flow_options(args))  # type: ignore[arg-type]
    if args.report:
        report_html.write_html(args.report, report_data.check_document(result, vars(args), result.wall_s))
    if args.json:
        print(report.to_json(result.as_dict()))
    elif args.quiet:
        report.render_findings(result.as_dict())
    else:
        report.render_check(result.as_dict())
    return EXIT_CLEAN if result.clean else EXIT_FAILED

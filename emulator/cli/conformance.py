"""``python -m emulator conformance``: the conformance suite for any DFU bootloader, as pytest tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from emulator.bootflow.powercut import parse_points
from emulator.cli.common import add_flow_arguments, add_selection_arguments, add_trigger_arguments
from emulator.conformance import runner
from emulator.conformance.target import ConformanceTarget
from emulator.core.arguments import parse_duration
from emulator.core.machine import EmulatorError


def _jobs(text: str) -> int:
    """``-n N`` or ``-n auto`` (0: one worker per CPU)."""
    if text == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"-n takes a number of workers or auto, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"-n takes at least 1 worker, not {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="run the conformance suite (descriptors, DFU 1.1 states, DfuSe commands, "
                                           "protected regions, the boot flow, power cuts) as pytest tests")
    p.add_argument("image", help="the bootloader image (.elf, .hex or .bin)")
    p.add_argument("app", nargs="?", default=None,
                   help="the application to download (default: a built-in test application, generated for "
                        "where the bootloader expects one)")
    p.add_argument("--chip", default=None, help="STM32F103RC (default) or STM32F103C8")
    add_flow_arguments(p)
    add_selection_arguments(p)
    # No --nrst: the suite boots fresh boards (and cuts their power) many times over, and a press at
    # a fixed time would land somewhere different in each; the power-on triggers say it the same way.
    add_trigger_arguments(p, after=True, nrst=False)
    p.add_argument("--max-time", type=parse_duration, default=parse_duration("2s"),
                   help="emulated time the application may run after the jump (default 2s)")
    p.add_argument("--sweep-points", default="default", metavar="SPEC",
                   help="the power-cut sweep's cut points: default, all, or operation indices like 0,5,10-12")
    p.add_argument("--junitxml", metavar="FILE", help="write the results as JUnit XML (for CI dashboards)")
    p.add_argument("-n", dest="jobs", type=_jobs, default=None, metavar="N",
                   help="run the test modules in N processes (pytest-xdist; auto: one per CPU)")
    p.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                   help="only the tests whose names match EXPR (pytest's -k)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress: only the summary table")
    p.set_defaults(func=cmd_conformance)


def cmd_conformance(args: argparse.Namespace) -> int:
    try:
        parse_points(args.sweep_points)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    if args.junitxml is not None and not Path(args.junitxml).resolve().parent.is_dir():
        raise EmulatorError(f"--junitxml {args.junitxml}: no such directory")
    ids = args.device.ids if args.device is not None else []
    target = ConformanceTarget(
        boot=args.image, app=args.app, chip=args.chip, address=args.address, device_ids=list(ids), alt=args.alt,
        interface=args.intf, serial=args.serial, boot1=args.boot1, boot1_after=args.boot1_after,
        pins=list(args.pin), bkp=list(args.bkp), pins_after=list(args.pin_after), bkp_after=list(args.bkp_after),
        leave=args.leave, max_time_ns=args.max_time, sweep_points=args.sweep_points)
    return runner.run(target, junitxml=args.junitxml, jobs=args.jobs, keyword=args.keyword, quiet=args.quiet)

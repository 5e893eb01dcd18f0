"""``python -m emulator``: run a real STM32F103 image on the emulated board.

Exit codes: 0 clean end (budget spent, or the CPU idles with nothing left to
happen), 1 the firmware faulted, locked up or hangs for good, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from emulator.machine import EmulatorError, write_stdout
from emulator.port import StrictModeError
from emulator.session import BoardOptions, build_board

EXIT_CLEAN, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "µs": 1_000, "ns": 1}


class UsageError(Exception):
    pass


def parse_duration(text: str) -> int:
    """'2s', '500ms', '1.5s', '250us', '100ns' -> nanoseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|ms|us|µs|ns)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 2s, 500ms, 250us)")
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return int(value)


def parse_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def parse_level(text: str) -> bool:
    t = text.lower()
    if t in ("high", "1", "h"):
        return True
    if t in ("low", "0", "l"):
        return False
    raise argparse.ArgumentTypeError(f"pin level must be high or low, not {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise UsageError(message)


def add_board_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="bootloader or application image (.elf, .hex or .bin)")
    p.add_argument("--base", type=parse_int, help="load address of a .bin image (default 0x08000000)")
    p.add_argument("--app", action="append", default=[], metavar="APP[@ADDR]",
                   help="an application image to put in flash beside the main image")
    p.add_argument("--chip", default=None, help="STM32F103RC (default) or STM32F103C8")
    p.add_argument("--boot0", type=parse_level, default=False, help="BOOT0 pin (high is not emulated)")
    p.add_argument("--boot1", type=parse_level, default=False, help="BOOT1 pin PB2: high or low (default low)")
    p.add_argument("--strict", action="store_true", help="fail on the first unmodelled register access")
    p.add_argument("--flash", dest="flash_file", metavar="FILE",
                   help="board state file: flash, option bytes and backup registers, loaded and saved")
    p.add_argument("--flash-timing", choices=("typical", "worst"), default="typical",
                   help="datasheet flash program/erase times to use")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m emulator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="boot an image and run it")
    add_board_arguments(run)
    run.add_argument("--max-time", type=parse_duration, default=parse_duration("2s"),
                     help="emulated-time budget (default 2s)")
    run.add_argument("--max-instructions", type=parse_int, default=None, help="instruction budget")
    run.add_argument("--uart1", metavar="FILE", help="write USART1 output to FILE instead of stdout")
    run.add_argument("--uart1-rx", metavar="FILE", help="feed FILE's bytes to USART1's receiver")
    run.add_argument("--flash-journal", metavar="FILE", help="write the flash operation journal as JSON")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    run.add_argument("--trace", action="store_true", help="log every peripheral access to stderr")
    run.add_argument("-v", "--verbose", action="store_true", help="log unmodelled accesses as they happen")
    fl = sub.add_parser("flash", help="flash an application through the bootloader's USB DFU and boot it")
    fl.add_argument("image", help="the bootloader image (.elf, .hex or .bin)")
    fl.add_argument("app", help="the application: .bin (at --address), .hex, .elf or .dfu")
    fl.add_argument("--address", type=parse_int, default=None, help="load address of a .bin (default 0x08008000)")
    fl.add_argument("--chip", default=None)
    fl.add_argument("--erase-order", choices=("all-first", "interleaved"), default="all-first",
                    help="all-first as dfu-util 0.9+, interleaved as older dfu-util and pydfu")
    fl.add_argument("--no-verify", action="store_true", help="skip reading the image back")
    fl.add_argument("--boot1-after", type=parse_level, default=True,
                    help="BOOT1 level when the bootloader resets the chip (default high: run the app)")
    fl.add_argument("--flash", dest="flash_file", metavar="FILE", help="board state file, loaded and saved")
    fl.add_argument("--flash-timing", choices=("typical", "worst"), default="typical")
    fl.add_argument("--max-time", type=parse_duration, default=parse_duration("2s"),
                    help="emulated time the application may run after the reset (default 2s)")
    fl.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")
    fl.add_argument("--explain", action="store_true", help="narrate the boot flow step by step on stdout")
    fl.add_argument("--transport", choices=("usb", "fops"), default="usb",
                    help="usb: the bootloader's own USB DFU stack; fops: call its USBD_DFU_fops_FS "
                         "functions directly, USB bypassed")
    fl.add_argument("--fops", type=parse_int, default=None, metavar="ADDR",
                    help="address of the media-interface table when the image has no symbols")
    from emulator.powercut import add_sweep_arguments
    add_sweep_arguments(fl)
    ck = sub.add_parser("check", help="flash through the bootloader with every host erase order and report "
                                      "what breaks the boot flow")
    ck.add_argument("image", help="the bootloader image")
    ck.add_argument("app", help="the application image")
    ck.add_argument("--address", type=parse_int, default=None, help="load address of a .bin (default 0x08008000)")
    ck.add_argument("--chip", default=None)
    ck.add_argument("--erase-order", choices=("both", "all-first", "interleaved"), default="both")
    ck.add_argument("--max-time", type=parse_duration, default=parse_duration("2s"),
                    help="emulated time the application may run after the jump (default 2s)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    from emulator.serve import add_serve_parser
    add_serve_parser(sub)
    info = sub.add_parser("usb-info", help="boot with BOOT1 low, enumerate the USB device, print it like lsusb -v")
    add_board_arguments(info)
    info.set_defaults(boot1=False)
    info.add_argument("--usb-pcap", metavar="FILE", help="write the enumeration traffic as a usbmon pcap")
    info.add_argument("--attach-timeout", type=parse_duration, default=parse_duration("2s"),
                      help="emulated time the firmware has to connect to USB (default 2s)")
    return parser


def cmd_flash(args: argparse.Namespace) -> int:
    from emulator import report
    from emulator.scenario import flash_and_boot, outcome_summary

    if args.power_cut_sweep:
        from emulator.powercut import cmd_power_cut_sweep
        return cmd_power_cut_sweep(args)

    run = flash_and_boot
    extra = {}
    if args.transport == "fops":
        from emulator.fops import fops_flash_and_boot
        run, extra = fops_flash_and_boot, {"fops_address": args.fops}
    outcome = run(args.image, args.app, app_address=args.address, erase_order=args.erase_order,
                  verify=not args.no_verify, boot1_after=args.boot1_after, chip=args.chip,
                  flash_file=args.flash_file, flash_timing=args.flash_timing, run_ns=args.max_time, **extra)
    data = outcome_summary(outcome)
    if args.explain:
        from emulator.explain import narrate
        data["explain"] = narrate(outcome)
    if args.json:
        print(report.to_json(data))
    else:
        if args.explain:
            print("\n".join(data["explain"]))
        sys.stdout.write(outcome.app_uart)
        sys.stdout.flush()
        report.render_flash(data)
    return EXIT_CLEAN if outcome.ok else EXIT_FAILED


def cmd_check(args: argparse.Namespace) -> int:
    from emulator import report
    from emulator.checks import ERASE_ORDERS, check

    orders = ERASE_ORDERS if args.erase_order == "both" else (args.erase_order,)
    result = check(args.image, args.app, erase_orders=orders, chip=args.chip, app_address=args.address,
                   run_ns=args.max_time)
    if args.json:
        print(report.to_json(result.as_dict()))
    else:
        report.render_check(result.as_dict())
    return EXIT_CLEAN if result.clean else EXIT_FAILED


def cmd_usb_info(args: argparse.Namespace) -> int:
    from emulator.dfu_target import attach
    from hostside.descriptors import render_lsusb
    from hostside.usb_host import UsbError

    board = build_board(BoardOptions(image=args.image, base=args.base, apps=args.app, chip=args.chip,
                                     boot0=args.boot0, boot1=args.boot1, strict=args.strict,
                                     flash_file=args.flash_file, flash_timing=args.flash_timing))
    try:
        target = attach(board, pcap_path=args.usb_pcap, attach_timeout_ns=args.attach_timeout)
    except UsbError as e:
        raise EmulatorError(f"USB enumeration failed: {e}") from None
    info = target.link.host.device
    assert info is not None
    print(render_lsusb(info.device, info.configurations, info.strings, bus=target.link.host.bus_number,
                       address=info.address))
    target.close()
    m = board.machine
    print(f"enumerated after {m.now_ns / 1e6:.3f} ms of emulated time, {target.link.host.transactions} "
          f"USB transactions", file=sys.stderr)
    return EXIT_CLEAN


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
    from emulator import report

    uart_file, uart_sink = _open_sink(args.uart1, quiet=args.json)
    options = BoardOptions(image=args.image, base=args.base, apps=args.app, chip=args.chip, boot0=args.boot0,
                           boot1=args.boot1, strict=args.strict, flash_file=args.flash_file,
                           flash_timing=args.flash_timing,
                           uart_sinks={1: uart_sink} if uart_sink else {})
    try:
        board = build_board(options)
        machine = board.machine
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
        board.save()
        if args.flash_journal:
            machine.flash.journal.set_symbolizer(machine.symbol)
            Path(args.flash_journal).write_text(machine.flash.journal.to_json(indent=2))
    finally:
        if uart_file is not None:
            uart_file.close()
    data = report.summary(board, stop, wall)
    if args.json:
        print(report.to_json(data))
    else:
        sys.stdout.flush()
        report.render(data)
    return EXIT_CLEAN if stop.clean else EXIT_FAILED


def _install_trace(machine) -> None:  # noqa: ANN001
    def trace(kind: str, address: int, size: int, value: int, name: str) -> None:
        sys.stderr.write(f"{machine.scheduler.cycles:>12} {machine.port.pc():08X} {name:<16} {kind} "
                         f"0x{value:0{size * 2}X}\n")
    machine.bus.tracer = trace


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not getattr(args, "verbose", False):
        logging.getLogger("emulator.unmodelled").setLevel(logging.ERROR)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "flash":
            return cmd_flash(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "serve":
            from emulator.serve import cmd_serve
            return cmd_serve(args)
        if args.command == "usb-info":
            return cmd_usb_info(args)
    except EmulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StrictModeError as e:
        print(f"error: --strict: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    parser.print_usage(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

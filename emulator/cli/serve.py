"""``python -m emulator serve``: the emulated board as a USB device for unmodified host tools.

``serve BOOT -- COMMAND ARGS…`` runs COMMAND (e.g. dfu-util) against the device
through umockdev; ``serve BOOT --usbip`` exports it over USB/IP.  The bridges
themselves live in :mod:`emulator.usb`.
"""

from __future__ import annotations

import argparse
import sys

from emulator.bootflow.progress_view import reporter_for
from emulator.cli.common import (
    EXIT_FAILED,
    add_board_arguments,
    add_quiet_argument,
    add_selection_arguments,
    board_options,
    selector_from,
)
from emulator.cli.debugger import add_gdb_arguments, open_session
from emulator.core.arguments import parse_duration, parse_int, parse_port, parse_scale
from emulator.core.machine import EmulatorError
from emulator.core.progress import reporting
from emulator.usb.device_server import format_flash_check, format_summary, serve_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="publish the emulated USB device to real host tools (umockdev or USB/IP)",
                       description="Boot the image with BOOT1 low and either run -- COMMAND ARGS... (e.g. "
                                   "dfu-util) against its USB device through umockdev, or export the device "
                                   "over USB/IP with --usbip.")
    add_board_arguments(p)
    add_selection_arguments(p)
    p.add_argument("--address", type=parse_int, default=None,
                   help="plain DFU: where the bootloader should have written the download (checked against "
                        "the flash; default: where it did write, from the flash journal)")
    p.add_argument("--poll-scale", type=parse_scale, default=1.0,
                   help="factor applied to bwPollTimeout in GETSTATUS answers the program sees "
                        "(the full value is always charged in emulated time; 0 = no wall-clock sleeps)")
    p.add_argument("--transfer-timeout", type=parse_duration, default=parse_duration("5s"),
                   help="emulated timeout of each transfer (usbfs URBs carry none; default 5s, dfu-util's)")
    p.add_argument("--attach-timeout", type=parse_duration, default=parse_duration("2s"),
                   help="emulated time the firmware has to connect to USB (default 2s)")
    p.add_argument("--usb-pcap", metavar="FILE", help="write the USB traffic as a usbmon pcap")
    p.add_argument("--usbip", action="store_true", help="export over USB/IP instead of running -- COMMAND ARGS...")
    p.add_argument("--host", default="127.0.0.1", help="USB/IP listen address (default 127.0.0.1)")
    p.add_argument("--port", type=parse_port, default=3240, help="USB/IP TCP port (default 3240; 0 = any free port)")
    p.add_argument("--idle-timeout", type=parse_duration, default=parse_duration("60s"),
                   help="USB/IP: stop when no client connects or talks for this long (wall time)")
    add_quiet_argument(p)
    add_gdb_arguments(p, jump=False)
    p.set_defaults(boot1=False, program=[], func=cmd_serve)
    # The usage line names what follows "--", which no argparse argument describes.
    formatter = p._get_formatter()
    formatter.add_usage(None, p._actions, p._mutually_exclusive_groups, prefix="")
    p.usage = formatter.format_help().strip() + " [-- COMMAND [ARGS ...]]"
    # Everything after "--" is the program and its own options: argparse cannot
    # say that with positionals (an empty nargs="*" list binds too early), so
    # the subparser splits there first, keeping the class the caller chose.
    p.__class__ = type("ServeParser", (_SplitAtDoubleDash, type(p)), {})


class _SplitAtDoubleDash(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        args = list(sys.argv[1:] if args is None else args)
        program: list[str] = []
        if "--" in args:
            cut = args.index("--")
            args, program = args[:cut], args[cut + 1 :]
        ns, extra = super().parse_known_args(args, namespace)
        ns.program = program
        return ns, extra


def cmd_serve(args: argparse.Namespace) -> int:
    session = open_session(args)
    try:
        with reporting(reporter_for(args.quiet)):
            code = _serve(args, {} if session is None else {"on_built": session.attach})
        if session is not None:
            session.finish(code)
        return code
    finally:
        if session is not None:
            session.close()


def _serve(args: argparse.Namespace, debug: dict[str, object]) -> int:
    command = list(args.program)
    if args.usbip:
        if command:
            raise EmulatorError("serve --usbip runs no command: attach with usbip on the host instead")
        from emulator.usb.usbip_server import serve_usbip

        return serve_usbip(board_options(args, **debug), host=args.host, port=args.port,
                           idle_timeout_s=args.idle_timeout / 1e9, timeout_ms=args.transfer_timeout / 1e6,
                           poll_scale=args.poll_scale,
                           attach_timeout_ns=args.attach_timeout, pcap_path=args.usb_pcap,
                           selector=selector_from(args), plain_address=args.address)
    result = serve_command(board_options(args, **debug), command, poll_scale=args.poll_scale,
                           timeout_ms=args.transfer_timeout / 1e6, attach_timeout_ns=args.attach_timeout,
                           pcap_path=args.usb_pcap, selector=selector_from(args), plain_address=args.address)
    result.board.save()
    if not args.quiet:
        print(format_summary(result), file=sys.stderr)
    line = format_flash_check(result.flash_check)
    if line is not None and not (args.quiet and result.flash_ok):
        print(line, file=sys.stderr)
    # The flash decides, whatever the program's exit code said (a silent false success fails here).
    return result.exit_code if result.flash_ok else EXIT_FAILED

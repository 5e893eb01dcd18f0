"""``python -m hostside``: a dfu-util-like command line over any ``Transport``.

Options follow dfu-util's habits (``-l``, ``-d``, ``-a``, ``-s ADDR:leave``, ``-D``,
``-U``, ``-t``, ``-Z``, ``-R``, ``-e``).  Progress goes to stderr as a rich
progress bar, the summary to stdout, and every failure is one line on stderr
with a non-zero exit status (sysexits.h values, as dfu-util uses them):

====  =================  ==========================================================
code  name               when
====  =================  ==========================================================
 0    EX_OK              success (a device that resets after ``:leave`` is success)
 64   EX_USAGE           bad option, ``-s`` unparsable, address outside every segment,
                         in a read-only segment, image larger than the target,
                         ``:mass-erase``/``:unprotect`` without ``:force``
 65   EX_DATAERR         firmware file is damaged (bad magic, CRC, truncated, overlap)
 66   EX_NOINPUT         firmware file cannot be read
 69   EX_UNAVAILABLE     no USB backend (libusb), emulation not installed
 70   EX_SOFTWARE        a bug in this program (reported in one line, no traceback)
 73   EX_CANTCREAT       upload file cannot be written
 74   EX_IOERR           no device / several devices, DFU status error (errADDRESS ...),
                         stall, timeout, device vanished mid-operation, unparsable
                         memory layout, verify mismatch
 76   EX_PROTOCOL        device in an unexpected DFU state
====  =================  ==========================================================

Tests and the emulator inject devices through ``main(argv, transports=...)``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hostside import selection
from hostside.console import code_table, console, is_terminal
from hostside.dfu import (
    BusyTiming,
    DfuClient,
    DfuDeviceGone,
    DfuError,
    DfuException,
    DfuStall,
    DfuStateError,
    DfuTimeout,
    DfuTransportError,
    DfuUnsupported,
    DfuVerifyError,
    ProgressEvent,
    state_name,
)
from hostside.dfuse_layout import LayoutError, MemoryLayout, RegionError, parse_layout
from hostside.files import FileFormatError, FirmwareImage, LoadedFile, load_file, save_upload
from hostside.transport import (
    DFU_PROTOCOL_RUNTIME,
    NoUsbBackend,
    PyUsbTransport,
    Transport,
    UsbFilter,
    find_pyusb_transports,
)

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_PROTOCOL = 76

EMULATION_MISSING = "emulation is not available in this installation"


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- option parsing ---------------------------------------------------------------------------------
def parse_number(text: str) -> int:
    """C ``strtoul(s, &end, 0)`` rules: 0x hex, leading 0 octal, else decimal."""
    t = text.strip()
    if t.lower().startswith("0x"):
        return int(t[2:], 16)
    if len(t) > 1 and t.startswith("0"):
        return int(t[1:], 8)
    return int(t, 10)


@dataclass
class DfuseOptions:
    """``-s ADDR[:leave][:mass-erase][:force][:unprotect][:will-reset][:LEN]``, dfu-util's syntax."""

    address: int | None = None
    length: int | None = None
    leave: bool = False
    mass_erase: bool = False
    force: bool = False
    unprotect: bool = False
    will_reset: bool = False


def parse_dfuse_options(text: str) -> DfuseOptions:
    opts = DfuseOptions()
    words = text.split(":")
    head, rest = words[0], words[1:]
    if head:
        try:
            opts.address = parse_number(head)
        except ValueError:
            raise CliError(EX_USAGE, f"invalid dfuse address: {head}") from None
    for word in rest:
        if word == "":
            continue
        if word == "leave":
            opts.leave = True
        elif word == "mass-erase":
            opts.mass_erase = True
        elif word == "force":
            opts.force = True
        elif word == "unprotect":
            opts.unprotect = True
        elif word == "will-reset":
            opts.will_reset = True
        else:
            try:
                opts.length = parse_number(word)
            except ValueError:
                raise CliError(EX_USAGE, f"invalid dfuse modifier: {word}") from None
    return opts


def parse_device_ids(text: str) -> UsbFilter:
    """``-d VID:PID[,VID:PID]`` in hex; an empty or ``*`` part matches anything."""
    try:
        return selection.parse_device_ids(text)
    except ValueError as exc:
        raise CliError(EX_USAGE, str(exc)) from None


def _intf(text: str) -> int:
    try:
        value = parse_number(text)
    except ValueError:
        raise CliError(EX_USAGE, f"invalid interface number: {text}") from None
    if not 0 <= value <= 255:
        raise CliError(EX_USAGE, f"invalid interface number: {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(EX_USAGE, message)


EX_BROKEN_PIPE = 141  # the reader of stdout went away (| head): quiet, as a tool killed by SIGPIPE
EX_INTERRUPTED = 130

# What --help says about exit statuses (the table above, as dfu-util uses sysexits.h).
EXIT_CODES = (
    (EX_OK, "success (a device that resets after :leave is success)"),
    (EX_USAGE, "bad option, -s unparsable, address outside every segment or in a read-only one, image "
               "larger than the target, -t above the device's wTransferSize, :mass-erase or :unprotect "
               "without :force, a bad --emulate option"),
    (EX_DATAERR, "firmware file (or --emulate image) damaged: bad magic, CRC, truncated, overlap"),
    (EX_NOINPUT, "firmware file (or --emulate image) cannot be read"),
    (EX_UNAVAILABLE, "no USB backend (libusb), emulation not installed"),
    (EX_SOFTWARE, "a bug in this program (one line, no traceback)"),
    (EX_CANTCREAT, "upload file (or --emulate --flash/--usb-pcap file) cannot be written"),
    (EX_IOERR, "no device or several, DFU status error (errADDRESS ...), stall, timeout, device gone "
               "mid-operation, unparsable memory layout, verify mismatch"),
    (EX_PROTOCOL, "device in an unexpected DFU state"),
    (EX_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EX_BROKEN_PIPE, "the reader of stdout went away (e.g. | head): stops quietly"),
)


def exit_code_table() -> str:
    return code_table("exit codes (sysexits.h, as dfu-util):", EXIT_CODES)


def _prog() -> str:
    """``python -m hostside``, or the console script's own name (``stm32-dfu``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name == "-c" or name.endswith(".py"):
        return "python -m hostside"
    return name


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_prog(), allow_abbrev=False, epilog=exit_code_table(),
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="DFU 1.1 / DfuSe client in the manner of dfu-util.")
    p.add_argument("-l", "--list", action="store_true", help="list DFU capable devices")
    p.add_argument("-d", "--device", metavar="VID:PID[,VID:PID]", help="vendor/product ids (hex)")
    p.add_argument("-S", "--serial", help="serial number of the device")
    p.add_argument("-i", "--intf", type=_intf, metavar="N", help="DFU interface number (bInterfaceNumber)")
    p.add_argument("-a", "--alt", help="alternate setting: number or name")
    p.add_argument("-s", "--dfuse-address", metavar="ADDR[:MODS]",
                   help="DfuSe address and modifiers (leave, mass-erase, force, unprotect, LEN)")
    p.add_argument("-D", "--download", metavar="FILE", help="write FILE to the device")
    p.add_argument("-U", "--upload", metavar="FILE", help="read the device into FILE")
    p.add_argument("-Z", "--upload-size", metavar="SIZE", help="bytes to upload")
    p.add_argument("-t", "--transfer-size", metavar="SIZE", help="bytes per control transfer")
    p.add_argument("-R", "--reset", action="store_true", help="USB reset when finished")
    p.add_argument("-e", "--detach", action="store_true", help="send DFU_DETACH")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per erase on stderr")
    p.add_argument("--verify", action="store_true", help="read back and compare after download")
    p.add_argument("--erase-order", choices=["all-first", "interleaved"], default="all-first",
                   help="all-first: dfu-util 0.9+; interleaved: older dfu-util / pydfu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--emulate", metavar="BOOT_IMAGE",
                   help="run BOOT_IMAGE in the emulator and talk to its USB device; further unknown "
                        "options (--chip, --boot1, ...) are passed to the emulator")
    return p


# -- progress ---------------------------------------------------------------------------------------
class ProgressView:
    """Turns client ProgressEvents into a rich progress bar on stderr (or nothing)."""

    def __init__(self, stream: TextIO, enabled: bool, verbose: bool) -> None:
        self.stream = stream
        self.verbose = verbose
        self.erases: list[BusyTiming] = []
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._started = False
        if enabled and is_terminal(stream):  # a bar is for people: CI logs get no redraws
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
                TimeElapsedColumn(),
                console=console(stream), transient=False,
            )

    def __enter__(self) -> ProgressView:
        return self  # the bar starts with the first event: a run that fails before any prints no blank line

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None and self._started:
            self._progress.stop()

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.timing is not None and ev.phase in ("erase", "mass-erase"):
            self.erases.append(ev.timing)
            if self.verbose:
                where = f"0x{ev.address:08X}" if ev.address is not None else "all"
                print(f"erase {where}: device busy {ev.timing.elapsed_ns / 1e6:.1f} ms "
                      f"({ev.timing.polls} polls, {ev.timing.poll_wait_ms} ms poll timeouts)", file=self.stream)
        if self._progress is None:
            return
        if not self._started:
            self._progress.start()
            self._started = True
        task = self._tasks.get(ev.phase)
        total = ev.total or None
        if task is None:
            task = self._progress.add_task(ev.phase.capitalize(), total=total, amount="")
            self._tasks[ev.phase] = task
        desc = ev.phase.capitalize()
        if ev.timing is not None and ev.address is not None:
            desc = f"{desc} 0x{ev.address:08X} busy {ev.timing.elapsed_ns / 1e6:.1f} ms"
        if ev.phase == "erase":
            amount = f"{ev.done}/{ev.total} pages" if ev.total else f"{ev.done} pages"
        elif ev.phase in ("download", "upload", "verify"):
            amount = f"{ev.done / 1024:.1f}/{ev.total / 1024:.1f} KiB" if ev.total else f"{ev.done / 1024:.1f} KiB"
        else:
            amount = ""
        self._progress.update(task, completed=ev.done, total=total, description=desc, amount=amount)


# -- device selection ------------------------------------------------------------------------------
TransportSource = Callable[[], Sequence[Transport]]


def _list_lines(transports: Sequence[Transport]) -> list[str]:
    lines = []
    for t in transports:
        info = t.device_info()
        for a in info.alt_settings:
            kind = "Runtime" if a.protocol == DFU_PROTOCOL_RUNTIME else "DFU"
            lines.append(
                f'Found {kind}: [{info.vid:04x}:{info.pid:04x}] ver={info.bcd_device:04x}, devnum={info.devnum}, '
                f'cfg={info.configuration}, intf={a.interface}, path="{info.path}", alt={a.alt}, '
                f'name="{a.name}", serial="{info.serial or "UNKNOWN"}"')
    return lines


EMULATOR_ENTRY_POINTS = "hostside.emulators"


def _load_emulator() -> Callable[[str, Sequence[str]], Any]:
    """The emulator registered under the ``hostside.emulators`` entry-point group.

    This is the seam for ``--emulate``: hostside imports no emulator module; an
    installed emulator names a function ``open_emulated(boot_image, options)``
    returning an object with ``device`` (a pyusb device), ``wait_ms``, ``now_ns``
    and ``close``.  An exception it raises with an integer ``exit_code`` attribute
    (a sysexits.h value) is reported in one line with that exit status.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=EMULATOR_ENTRY_POINTS), key=lambda e: e.name):
        try:
            return ep.load()
        except ImportError:
            continue
    raise CliError(EX_UNAVAILABLE, EMULATION_MISSING)


def _open_emulated(boot_image: str, options: list[str]) -> tuple[Transport, Callable[[], None]]:
    open_emulated = _load_emulator()
    try:
        target = open_emulated(boot_image, options)
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the emulator raises becomes one line
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int) and not isinstance(code, bool):  # the emulator names the exit status
            raise CliError(code, str(exc)) from None
        if isinstance(exc, FileNotFoundError):
            raise CliError(EX_NOINPUT, f"cannot start the emulator: {exc}") from None
        raise CliError(EX_SOFTWARE, f"cannot start the emulator: {type(exc).__name__}: {exc}") from None
    return PyUsbTransport(target.device, wait_ms=target.wait_ms, now_ns=target.now_ns), target.close


# -- operations ---------------------------------------------------------------------------------------
def _layout_for(client: DfuClient) -> MemoryLayout:
    try:
        return parse_layout(client.alt_setting.name)
    except LayoutError as exc:
        raise CliError(EX_IOERR, f"cannot parse the memory layout of alt {client.alt_setting.alt}: {exc}") from None


def _load(path: str, address: int | None) -> LoadedFile:
    try:
        return load_file(path, address)
    except FileNotFoundError as exc:
        raise CliError(EX_NOINPUT, str(exc)) from None
    except FileFormatError as exc:
        raise CliError(EX_DATAERR, f"{path}: {exc}") from None


def _check_suffix_ids(loaded: LoadedFile, client: DfuClient) -> None:
    sfx = loaded.suffix
    if sfx is None:
        return
    info = client.info
    if (sfx.vid not in (0xFFFF, info.vid)) or (sfx.pid not in (0xFFFF, info.pid)):
        raise CliError(EX_USAGE, f"file is for {sfx.vid:04x}:{sfx.pid:04x}, "
                                 f"device is {info.vid:04x}:{info.pid:04x}")


def _do_download(args: argparse.Namespace, opts: DfuseOptions, client: DfuClient, out: TextIO) -> None:
    loaded = _load(args.download, opts.address)
    _check_suffix_ids(loaded, client)
    if not client.is_dfuse:
        payload = loaded.raw if loaded.image is None or loaded.kind in ("bin", "dfu-suffix") else loaded.image.to_bin()
        if args.verify and not client.functional.can_upload:
            raise CliError(EX_USAGE, "--verify needs upload, and this device cannot upload (bitCanUpload = 0)")
        if args.verify and not client.functional.manifestation_tolerant:
            raise CliError(EX_USAGE, "--verify on a plain DFU device needs a manifestation-tolerant device")
        report = client.download_plain(payload)
        print(f"Downloaded {report.bytes_written} bytes in {report.chunks} blocks of {client.transfer_size}",
              file=out)
        if args.verify:
            client.ensure_idle()
            client.verify(FirmwareImage.from_segments([(0, payload)]))
            print(f"Verified {len(payload)} bytes", file=out)
        return
    image = _dfuse_image(loaded, opts, client)
    layout = _layout_for(client)
    if not opts.force:
        try:
            client.check_layout_fits(layout, image)
        except RegionError as exc:
            raise CliError(EX_USAGE, str(exc)) from None
    if opts.mass_erase:
        if not opts.force:
            raise CliError(EX_USAGE, "the mass erase command can only be used with :force")
        timing = client.mass_erase()
        client.abort_to_idle()
        print(f"Mass erase: device busy {timing.elapsed_ns / 1e6:.1f} ms", file=out)
    report = client.download_dfuse(image, layout, erase_order=args.erase_order, erase=not opts.mass_erase,
                                   force=opts.force)
    spans = ", ".join(f"0x{s.address:08X}-0x{s.end - 1:08X}" for s in image.segments)
    print(f"Downloaded {report.bytes_written} bytes to {spans} in {report.chunks} chunks of "
          f"{client.transfer_size} bytes (erase order {args.erase_order})", file=out)
    if report.erases:
        longest = max(e.elapsed_ns for e in report.erases)
        print(f"Erased {len(report.erases)} pages: device busy {report.erase_busy_ns / 1e6:.1f} ms in all, "
              f"longest {longest / 1e6:.1f} ms", file=out)
    if args.verify:
        result = client.verify(image)
        print(f"Verified {result.compared} bytes", file=out)
    if opts.leave:
        res = client.leave(image.start)
        how = "the device reset" if res.vanished else f"last state {state_name(res.last_state or 0)}"
        print(f"Left DFU mode ({how})", file=out)


def _dfuse_image(loaded: LoadedFile, opts: DfuseOptions, client: DfuClient) -> FirmwareImage:
    if loaded.kind == "dfuse":
        if opts.address is not None:
            raise CliError(EX_USAGE, "this is a DfuSe file, not meant for raw download (drop the -s address)")
        assert loaded.dfuse is not None
        alt = client.alt_setting.alt
        elems = [e for t in loaded.dfuse.targets if t.alt == alt for e in t.elements]
        if not elems:
            raise CliError(EX_USAGE, f"the DfuSe file has no target for alternate setting {alt}")
        try:
            return FirmwareImage.from_segments(elems)
        except FileFormatError as exc:
            raise CliError(EX_DATAERR, str(exc)) from None
    if loaded.kind in ("hex", "elf"):
        assert loaded.image is not None
        if opts.address is not None and opts.address != loaded.image.start:
            raise CliError(EX_USAGE, f"{loaded.kind} file carries its own addresses (starts at "
                                     f"0x{loaded.image.start:08X}); drop the -s address")
        return loaded.image
    if loaded.image is None:
        raise CliError(EX_USAGE, "a raw binary needs an address: use -s ADDRESS")
    return loaded.image


def _do_upload(args: argparse.Namespace, opts: DfuseOptions, client: DfuClient, out: TextIO) -> None:
    if not client.functional.can_upload:
        # DFU 1.1 §4.1.3: bitCanUpload = 0 says UPLOAD will stall; say why instead of "stalled".
        raise CliError(EX_USAGE, "this device cannot upload (bitCanUpload = 0 in its DFU functional descriptor)")
    length = _size(args.upload_size) if args.upload_size else opts.length
    if client.is_dfuse:
        if opts.address is None:
            raise CliError(EX_USAGE, "upload from a DfuSe device needs an address: use -s ADDRESS")
        layout = _layout_for(client)
        seg = layout.find_segment(opts.address)
        if length is None:
            if seg is None:
                raise CliError(EX_USAGE, f"address 0x{opts.address:08X} is outside every segment; give a length")
            length = layout.run_end(opts.address) - opts.address  # dfu-util: up to the end of the segment
        data = client.upload_dfuse(opts.address, length, layout=None if opts.force else layout)
        address = opts.address
    else:
        data = client.upload_plain(length)
        address = 0
    try:
        kind = save_upload(args.upload, address, data, client.info.vid, client.info.pid,
                           client.alt_setting.alt, client.alt_setting.name)
    except OSError as exc:
        raise CliError(EX_CANTCREAT, f"cannot write {args.upload}: {exc.strerror}") from None
    print(f"Uploaded {len(data)} bytes from 0x{address:08X} to {args.upload} ({kind})", file=out)


def _check_writable(path: str) -> None:
    """The upload file must be creatable before anything is read from the device (EX_CANTCREAT)."""
    p = Path(path)
    if not p.parent.is_dir():
        raise CliError(EX_CANTCREAT, f"cannot write {path}: no such directory {p.parent}")
    if p.is_dir():
        raise CliError(EX_CANTCREAT, f"cannot write {path}: is a directory")
    existed = p.exists()
    try:
        with open(p, "ab"):  # append: an existing file keeps its contents until the upload replaces them
            pass
    except OSError as exc:
        raise CliError(EX_CANTCREAT, f"cannot write {path}: {exc.strerror}") from None
    if not existed:
        p.unlink(missing_ok=True)


def _size(text: str) -> int:
    try:
        value = parse_number(text)
    except ValueError:
        raise CliError(EX_USAGE, f"invalid size: {text}") from None
    if value <= 0:
        raise CliError(EX_USAGE, f"size must be positive: {text}")
    return value


def _run(args: argparse.Namespace, extra: list[str], transports: TransportSource | None,
         out: TextIO, err: TextIO) -> int:
    if extra and not args.emulate:
        raise CliError(EX_USAGE, f"unrecognized arguments: {' '.join(extra)}")
    opts = parse_dfuse_options(args.dfuse_address) if args.dfuse_address else DfuseOptions()
    flt = parse_device_ids(args.device) if args.device else UsbFilter()
    if args.upload:
        _check_writable(args.upload)
    closers: list[Callable[[], None]] = []
    try:
        if args.emulate:
            t, close = _open_emulated(args.emulate, extra)
            closers.append(close)
            found: list[Transport] = [t]
        elif transports is not None:
            found = list(transports())
        else:
            try:
                found = list(find_pyusb_transports(flt))
            except NoUsbBackend as exc:
                raise CliError(EX_UNAVAILABLE, str(exc)) from None
        selector = selection.DfuSelector(ids=flt, serial=args.serial, interface=args.intf,
                                         alt=None if args.alt is None else selection.parse_alt(args.alt))
        found = [t for t in found if selector.matches_device(t.device_info())]
        if args.list:
            for line in _list_lines(found):
                print(line, file=out)
            return EX_OK
        if not (args.download or args.upload or args.detach or opts.mass_erase or opts.unprotect):
            raise CliError(EX_USAGE, "nothing to do: give -l, -D FILE, -U FILE, -e or -s ...:mass-erase")
        if not found:
            raise CliError(EX_IOERR, "No DFU capable USB device available")
        try:
            transport = selection.select_transport(found, selector, first=False)
            alt = selection.select_alt(transport.device_info(), selector)
        except selection.SelectionError as exc:
            raise CliError(EX_IOERR if "more than one" in str(exc) else EX_USAGE, str(exc)) from None
        view = ProgressView(err, enabled=not args.no_progress, verbose=args.verbose)
        transfer = _size(args.transfer_size) if args.transfer_size else None
        client = DfuClient(transport, alt, transfer_size=transfer, progress=view)
        if transfer is not None and transfer > client.functional.transfer_size:
            # DFU 1.1 §4.1.3: wTransferSize is the most a device takes in one DNLOAD or gives in one UPLOAD;
            # a larger block stalls, after the erase has already happened.
            raise CliError(EX_USAGE, f"-t {args.transfer_size}: larger than the device's wTransferSize "
                                     f"({client.functional.transfer_size} bytes), the most it takes per "
                                     "request (DFU 1.1 §4.1.3); nothing was sent")
        if args.detach:
            client.detach()
            if not client.functional.will_detach:
                transport.reset()
            print("Sent DFU_DETACH", file=out)
            if not (args.download or args.upload):
                return EX_OK
        with view:
            client.start()
            if opts.unprotect:
                if not opts.force:
                    raise CliError(EX_USAGE, "the read unprotect command erases the flash: use :unprotect:force")
                client.read_unprotect(confirm=True)
                print("Device disconnects, erases flash and resets now", file=out)
                return EX_OK
            if args.upload:
                _do_upload(args, opts, client, out)
            if args.download:
                _do_download(args, opts, client, out)
            elif opts.mass_erase:
                if not opts.force:
                    raise CliError(EX_USAGE, "the mass erase command can only be used with :force")
                timing = client.mass_erase()
                client.abort_to_idle()
                print(f"Mass erase: device busy {timing.elapsed_ns / 1e6:.1f} ms", file=out)
        if args.reset and not opts.leave:
            transport.reset()
            print("Reset the device", file=out)
        return EX_OK
    finally:
        for close in closers:
            close()


def _error_line(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, RegionError):
        return EX_USAGE, str(exc)
    if isinstance(exc, LayoutError):
        return EX_IOERR, f"cannot parse memory layout: {exc}"
    if isinstance(exc, FileFormatError):
        return EX_DATAERR, str(exc)
    if isinstance(exc, DfuStateError):
        return EX_PROTOCOL, str(exc)
    if isinstance(exc, DfuError | DfuStall | DfuTimeout | DfuDeviceGone | DfuTransportError | DfuVerifyError):
        return EX_IOERR, str(exc)
    if isinstance(exc, DfuUnsupported):
        return EX_USAGE, str(exc)
    if isinstance(exc, DfuException):
        return EX_IOERR, str(exc)
    return EX_SOFTWARE, f"internal error: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None, *, transports: TransportSource | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status.  ``transports`` replaces USB enumeration (tests)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        code = _main(argv, transports, out, err)
        out.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        if out is sys.stdout:
            _silence_stdout()
        return EX_BROKEN_PIPE


def _main(argv: Sequence[str] | None, transports: TransportSource | None, out: TextIO, err: TextIO) -> int:
    try:
        args, extra = build_parser().parse_known_args(list(argv) if argv is not None else None)
        return _run(args, extra, transports, out, err)
    except KeyboardInterrupt:
        _print_error("interrupted", err)
        return EX_INTERRUPTED
    except SystemExit as exc:  # argparse --help
        return int(exc.code or 0) if isinstance(exc.code, int) else EX_OK
    except BrokenPipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI's contract is one line, never a traceback
        code, message = _error_line(exc)
        _print_error(message, err)
        return code


def _print_error(message: str, err: TextIO) -> None:
    """One line: whitespace folded, control characters shown escaped."""
    text = " ".join(message.split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    with contextlib.suppress(BrokenPipeError, ValueError):
        print("error: " + text, file=err)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush of what is left goes nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

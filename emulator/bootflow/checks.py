"""Boot-flow checks: run the real flash-and-boot flow and turn what happened into
named findings with evidence (docs/SEED_BOOTLOADER.md describes the seed's).

``python -m emulator check BOOT APP`` runs the download (a DfuSe bootloader with
both erase orders real hosts use, a plain DFU 1.1 one once), then judges the DFU
layout against the chip, the flash journal, the flash contents against the
image sent, the time each DFU request kept the device busy, and the jump.  The
bootloader region is worked out from the image and the layout (or, for plain
DFU, from where the bootloader put the application), never assumed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import usb.core

from emulator.bootflow.scenario import FlashOutcome, first_writable, flash_and_boot
from emulator.core.chips import Chip, get_chip
from emulator.core.loader import ImageError
from emulator.core.machine import EmulatorError, Machine
from emulator.core.session import BkpSetting, BoardOptions, PinSetting, build_board, load_images
from emulator.usb.host import UsbError
from emulator.usb.target import DeviceNotAttached, attach
from firmware_models import flash_journal as fj
from firmware_models.flash import TIMINGS
from hostside.dfu import DfuClient, DfuException, DfuState, state_name, status_name
from hostside.dfuse_layout import LayoutError, MemoryLayout, parse_layout
from hostside.selection import DfuSelector

HOST_TIMEOUT_MS = 5000  # dfu-util's default control-transfer timeout
ERASE_ORDERS = ("all-first", "interleaved")
PLAIN_RUN = "plain-dfu"  # the run key of a plain DFU download (no erase orders there)
VTOR_ALIGN = 512  # 16 + 60 vectors = 76 words, rounded up to a power of two (B3.2.5)
PROBE_BYTES = 16


@dataclass
class Finding:
    id: str
    title: str
    evidence: dict[str, Any] = field(default_factory=dict)
    reference: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    boot: str
    app: str
    chip: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was done and what could not be, said plainly
    device: dict[str, Any] | None = None  # the DFU interface used, its protocol and functional descriptor
    # Each erase order's run, boards included, for the HTML report (not in as_dict).
    outcomes: dict[str, FlashOutcome] = field(default_factory=dict, repr=False)
    wall_s: float | None = None

    @property
    def clean(self) -> bool:
        return not self.findings

    def add(self, finding: Finding) -> None:
        if not any(f.id == finding.id and f.evidence == finding.evidence for f in self.findings):
            self.findings.append(finding)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {"boot": self.boot, "app": self.app, "chip": self.chip, "clean": self.clean,
                "device": self.device, "runs": self.runs, "findings": [f.as_dict() for f in self.findings],
                "notes": self.notes}


def check(boot: str, app: str, *, erase_orders: tuple[str, ...] = ERASE_ORDERS, chip: str | None = None,
          app_address: int | None = None, run_ns: int = 2_000_000_000, selector: DfuSelector | None = None,
          boot1: bool = False, boot1_after: bool = True, pins: Sequence[PinSetting] = (),
          bkp: Sequence[BkpSetting] = (), pins_after: Sequence[PinSetting] = (),
          bkp_after: Sequence[BkpSetting] = (), leave: str = "auto", nrst: Sequence[int] = ()) -> CheckReport:
    started = time.perf_counter()
    report = _check(boot, app, erase_orders=erase_orders, chip=chip, app_address=app_address, run_ns=run_ns,
                    selector=selector, boot1=boot1, boot1_after=boot1_after, pins=pins, bkp=bkp,
                    pins_after=pins_after, bkp_after=bkp_after, leave=leave, nrst=nrst)
    report.wall_s = time.perf_counter() - started
    return report


def _check(boot: str, app: str, *, erase_orders: tuple[str, ...], chip: str | None, app_address: int | None,
           run_ns: int, selector: DfuSelector | None, boot1: bool, boot1_after: bool,
           pins: Sequence[PinSetting], bkp: Sequence[BkpSetting], pins_after: Sequence[PinSetting],
           bkp_after: Sequence[BkpSetting], leave: str, nrst: Sequence[int]) -> CheckReport:
    try:
        the_chip = get_chip(chip)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    report = CheckReport(boot, app, the_chip.name)
    try:
        boot_layout = load_images(BoardOptions(image=boot, chip=chip), the_chip)
    except ImageError as e:
        raise EmulatorError(str(e)) from None
    for warning in boot_layout.warnings:
        report.add(Finding("ram-exceeds-chip-sram", "the bootloader's RAM (.data/.bss) does not fit this chip's SRAM",
                           {"warning": warning, "sram_bytes": the_chip.sram_size},
                           "the linker placed .data/.bss past the end of SRAM (docs/SEED_BOOTLOADER.md defect 6 "
                           "shows one cause: a 32 KiB DFU transfer buffer)"))
    flow = {"app_address": app_address, "chip": chip, "run_ns": run_ns, "selector": selector, "boot1": boot1,
            "boot1_after": boot1_after, "pins": pins, "bkp": bkp, "pins_after": pins_after,
            "bkp_after": bkp_after, "leave": leave, "nrst": nrst}
    outcomes: dict[str, FlashOutcome] = {}
    try:
        for order in erase_orders:
            outcome = flash_and_boot(boot, app, erase_order=order, **flow)  # type: ignore[arg-type]
            if outcome.protocol == "dfu":
                outcome.erase_order = PLAIN_RUN
                outcomes = {PLAIN_RUN: outcome}
                report.note("plain DFU 1.1: one download (host erase orders are a DfuSe matter)")
                break
            outcomes[order] = outcome
    except DeviceNotAttached as e:
        report.add(Finding("bootloader-never-attached", "the bootloader never connected to USB in DFU mode",
                           {"detail": str(e)}, "RM0008 §23.4.2"))
        return report
    first = next(iter(outcomes.values()))
    report.device = _device(first)
    report.outcomes = outcomes
    for order, outcome in outcomes.items():
        report.runs[order] = _run_summary(outcome)
        _download_checks(report, order, outcome, the_chip)
        for note in outcome.notes:
            report.note(note)
    # The jump is judged on the run whose download worked best (verify passed, if any did).
    best = next((o for o in outcomes.values() if o.verify and o.verify["ok"]), first)
    layout = _layout_checks(report, best, the_chip)
    app_start = _application_start(best, layout, app_address)
    boot_end = max(i.end for i in boot_layout.images)
    _jump_checks(report, best, the_chip, app_start)
    _probe_bootloader_region(report, boot, chip, best, app_start, boot_end,
                             BoardOptions(image=boot, chip=chip, boot1=boot1, pins=pins, bkp=bkp, nrst=nrst), selector)
    return report


def jump_findings(outcome: FlashOutcome, chip: Chip) -> list[Finding]:
    """The jump checks on one flash-and-boot run as it stands (a debugger's ``monitor findings``)."""
    report = CheckReport("", "", chip.name)
    _jump_checks(report, outcome, chip, outcome.app_address)
    return report.findings


def _device(o: FlashOutcome) -> dict[str, Any] | None:
    if o.alt is None:
        return None
    return {"protocol": o.protocol, "interface": o.alt.interface, "alt": o.alt.alt, "name": o.alt.name,
            "functional": o.functional}


def _application_start(o: FlashOutcome, layout: Any, app_address: int | None) -> int:
    """Where the application region begins: --address, else the DfuSe layout's first writable
    segment, else where a plain DFU bootloader put the download, else the image's own address."""
    if app_address is not None:
        return app_address
    if layout is not None:
        start = first_writable(layout)
        if start is not None:
            return start
    if o.landed_at is not None:
        return o.landed_at
    return o.app_address


def _probe_bootloader_region(report: CheckReport, boot: str, chip: str | None, o: FlashOutcome, app_start: int,
                             boot_end: int, options: BoardOptions, selector: DfuSelector | None) -> None:
    """Ask the bootloader, as any host could, to overwrite and read out its own region
    [flash base, application start), on a throwaway board.  A transport failure ends the probe
    with a note; it never escapes."""
    if o.alt is None:
        return  # the session never reached a DFU interface: nothing to probe with
    board = build_board(options)
    m = board.machine
    try:
        target = attach(board, selector=selector)
    except (EmulatorError, UsbError, usb.core.USBError) as e:
        report.note(f"bootloader-region probe skipped: {e}")
        return
    try:
        client = DfuClient(target.transport, target.select(selector))
        client.start()
        if client.is_dfuse:
            _probe_dfuse(report, client, m, app_start, boot_end)
        else:
            _probe_plain(report, client, m, app_start)
    except (DfuException, UsbError, usb.core.USBError, EmulatorError) as e:
        report.note(f"bootloader-region probe stopped: {type(e).__name__}: {e}")
    finally:
        target.close()


def _erased_spot(m: Machine, low: int, high: int) -> int | None:
    """The highest 16-byte-aligned run of erased flash in [low, high): a place a write would show."""
    address = (high - PROBE_BYTES) & ~(PROBE_BYTES - 1)
    while address >= low:
        if m.read_flash(address, PROBE_BYTES) == b"\xff" * PROBE_BYTES:
            return address
        address -= PROBE_BYTES
    return None


def _writer(m: Machine, low: int, high: int) -> str | None:
    """The code that programmed or erased flash in [low, high), from the flash journal."""
    for e in m.flash.journal.entries:
        if e.kind in (fj.PROGRAM, fj.PAGE_ERASE, fj.MASS_ERASE) and e.address is not None and low <= e.address < high:
            return m.symbol(e.pc)
    return None


def _probe_dfuse(report: CheckReport, client: DfuClient, m: Machine, app_start: int, boot_end: int) -> None:
    """DfuSe: SET_ADDRESS into the bootloader region (after its own bytes, where flash is still
    erased) and DNLOAD 16 bytes of 0x00; then UPLOAD the vector table at the flash base (UM0424 §5 / AN3156 §6)."""
    base = m.chip.flash_base
    probe = _erased_spot(m, max(base, boot_end), app_start)
    if probe is None:
        report.note(f"bootloader-region write probe skipped: no erased flash between the bootloader's end "
                    f"(0x{boot_end:08X}) and the application (0x{app_start:08X})")
    else:
        try:
            client.set_address(probe)
            client.dnload(2, bytes(PROBE_BYTES))
            client.get_status()
            client.get_status()
        except DfuException:
            client.ensure_idle()
        if m.read_flash(probe, PROBE_BYTES) == bytes(PROBE_BYTES):
            report.add(Finding("bootloader-region-writable",
                               "a host can overwrite the bootloader's own flash through DFU",
                               {"probe_address": hex(probe), "bytes_written": PROBE_BYTES,
                                "bootloader_region": [hex(base), hex(app_start)],
                                "code": _writer(m, probe, probe + PROBE_BYTES)},
                               "UM0424 §4.3.2: the memory layout marks the region the host may write; the "
                               "bootloader's write routine must refuse addresses outside it"))
    try:
        client.ensure_idle()
        head = client.upload_dfuse(base, 8)
    except DfuException:
        head = b""
    if head and head == m.read_flash(base, 8):
        report.add(Finding("bootloader-readable", "a host can read the bootloader out through DFU upload",
                           {"read_from": hex(base), "first_words": head.hex()},
                           "AN3156 §6: UPLOAD reads through the address pointer; the bootloader's read "
                           "routine must refuse its own region"))


def _probe_plain(report: CheckReport, client: DfuClient, m: Machine, app_start: int) -> None:
    """Plain DFU: a host names no address, only block numbers.  Send the first block past the end of
    flash and the last block number there is (DFU 1.1 §6.1.1: wValue is a 16-bit block counter),
    and see whether anything outside the application region changed; UPLOAD block 0 if the device
    says it can upload (bitCanUpload)."""
    base, end = m.chip.flash_base, m.chip.flash_base + m.chip.flash_size
    before = bytes(m.flash_storage)
    size = client.transfer_size
    blocks = sorted({max(0, (end - app_start + size - 1) // size), 0xFFFF})
    answers = []
    for block in blocks:
        try:
            client.dnload(block, bytes(PROBE_BYTES))
            st = client.get_status()
            for _ in range(8):
                client.transport.wait_ms(st.poll_timeout_ms)
                if st.is_error or st.state != DfuState.dfuDNBUSY:
                    break
                st = client.get_status()
            answers.append(f"block {block}: {'refused' if st.is_error else 'accepted'} "
                           f"({status_name(st.status)}, {state_name(st.state)})")
        except DfuException as e:
            answers.append(f"block {block}: refused ({e})")
        client.ensure_idle()
    after = bytes(m.flash_storage)
    outside = [base + i for i in range(len(before)) if before[i] != after[i] and not app_start <= base + i < end]
    if outside:
        report.add(Finding("bootloader-region-writable",
                           "a DFU download changed flash outside the application region",
                           {"blocks": blocks, "first_changed": hex(outside[0]), "bytes_changed": len(outside),
                            "bootloader_region": [hex(base), hex(app_start)],
                            "code": _writer(m, outside[0], outside[0] + 1)},
                           "DFU 1.1 §6.1.1: the bootloader maps block numbers to addresses and must keep "
                           "them inside the application region"))
    else:
        report.note("bootloader-region probe (plain DFU: a host names block numbers, not addresses): "
                    + "; ".join(answers) + f"; nothing changed outside 0x{app_start:08X}-0x{end - 1:08X}")
    if not client.functional.can_upload:
        report.note("read-out probe skipped: the device cannot upload (bitCanUpload = 0)")
        return
    try:
        head = client.upload(0, 8)
    except DfuException:
        head = b""
    if head and head == m.read_flash(base, 8):
        report.add(Finding("bootloader-readable", "a host can read the bootloader out through DFU upload",
                           {"read_from": hex(base), "first_words": head.hex()},
                           "DFU 1.1 §6.2: UPLOAD should return the application, not the bootloader"))


def _run_summary(o: FlashOutcome) -> dict[str, Any]:
    return {"download_ok": o.download_ok, "verify": o.verify, "error": o.error,
            "erase_busy_ms": [round(b, 1) for b in o.erase_busy_ms],
            "download_emulated_ms": round(o.download_emulated_ns / 1e6, 1),
            "jumped": o.jump is not None, "stop": None if o.stop is None else o.stop.kind,
            "app_uart": o.app_uart, "verify_method": o.verify_method, "flash_check": o.flash_check,
            "jump": None if o.jump is None else {"address": o.jump.address, "msp": o.jump.msp,
                                                 "time_ns": o.jump.time_ns,
                                                 "symbol": o.board.machine.symbol(o.jump.address)},
            "left": o.left}


# -- the download ---------------------------------------------------------------------------
def _download_checks(report: CheckReport, order: str, o: FlashOutcome, chip: Chip) -> None:
    m = o.board.machine
    journal = m.flash.journal
    dfuse = o.protocol != "dfu"
    run = f"with erase order {order}" if dfuse else "(plain DFU)"
    if o.error:
        report.add(Finding("download-failed", f"the download failed {run}",
                           {"erase_order": order, "error": o.error},
                           "USB DFU 1.1 §6.1; UM0424 (DfuSe)" if dfuse else "USB DFU 1.1 §6.1, §7"))
    order_broke = False
    if dfuse and o.verify_method == "upload" and o.verify is not None and not o.verify["ok"]:
        order_broke = True
        report.add(Finding(
            "erase-order-breaks-image",
            f"with erase order {order} the image read back differs from the file",
            {"erase_order": order, "first_difference": hex(o.verify["first_difference"]),
             "differing_bytes": o.verify["differing_bytes"], "compared": o.verify["compared"],
             "hosts": "dfu-util 0.9+" if order == "all-first" else "older dfu-util, pydfu and other DfuSe hosts"},
            "AN3156 §6 (ERASE); DfuSe hosts erase all pages first (dfu-util 0.9+) or page by page as they write"))
    check_ = o.flash_check
    if check_ is not None and not check_["ok"] and not order_broke:
        said = ("the upload read back matched: a silent false success" if o.verify_method == "upload"
                and o.verify is not None and o.verify["ok"] else
                "verified from the flash contents" if o.verify_method == "flash" else "not verified by the host")
        evidence: dict[str, Any] = {"erase_order": order, "host_verify": said}
        if check_.get("problem"):
            evidence["problem"] = check_["problem"]
        else:
            evidence.update(first_difference=hex(check_["first_difference"]),
                            differing_bytes=check_["differing_bytes"], compared=check_["compared"],
                            differences=[f"0x{d['address']:08X}: sent {d['sent']:02X}, flash "
                                         + ("-" if d["flash"] is None else f"{d['flash']:02X}")
                                         for d in check_["differences"]])
        if check_.get("landed_at") is not None:
            evidence["bootloader_wrote_at"] = hex(check_["landed_at"])
        report.add(Finding("flash-differs-from-image",
                           f"after the download {run} the flash does not hold the image that was sent",
                           evidence, "USB DFU 1.1 §7: after manifestation the device holds the new firmware"))
    destroyed = journal.destroyed_data()
    if destroyed:
        total = sum(d.bytes_destroyed for d in destroyed)
        first = destroyed[0]
        report.add(Finding(
            "erase-destroys-written-data",
            f"{len(destroyed)} erases wiped {total} bytes programmed earlier in the same download ({order})",
            {"erase_order": order, "erases": len(destroyed), "bytes": total,
             "first_erase": {"kind": first.erase_kind, "code": m.symbol(first.erase_pc),
                             "time_ms": round(first.erase_time_ns / 1e6, 3),
                             "destroyed": [[hex(a), hex(b)] for a, b in first.destroyed[:4]]},
             "ranges": [[hex(a), hex(b)] for d in destroyed[:8] for a, b in d.destroyed[:1]]},
            "RM0008 §3.3.3: a page erase sets the whole page to 0xFF; the erase routine must erase only "
            "the pages the host asked for"))
    entries = journal.as_dicts()
    beyond = [e for e in entries if e["kind"] == "out_of_range_erase"]
    if beyond:
        report.add(Finding(
            "erase-beyond-end-of-flash",
            f"{len(beyond)} page erases were requested for addresses past the end of the "
            f"{chip.flash_size // 1024} KiB flash",
            {"erase_order": order, "count": len(beyond), "first": hex(beyond[0]["address"]),
             "last": hex(beyond[-1]["address"]), "flash_end": hex(chip.flash_end),
             "code": m.symbol(beyond[0]["pc"])},
            f"RM0008 §3.3.3; the {chip.name} has {chip.flash_size // 1024} KiB of main flash"))
    if o.erase_busy_ms:
        typical, worst = TIMINGS["typical"], TIMINGS["worst"]
        scale = worst.page_erase_ns / typical.page_erase_ns
        longest = max(o.erase_busy_ms)
        if longest * scale > HOST_TIMEOUT_MS:
            report.add(Finding(
                "dfu-request-busy-too-long",
                f"one DFU ERASE kept the device busy {longest:.0f} ms at typical flash timings, "
                f"about {longest * scale:.0f} ms at worst-case timings: dfu-util gives up after "
                f"{HOST_TIMEOUT_MS} ms",
                {"erase_order": order, "longest_typical_ms": round(longest, 1),
                 "longest_worst_case_ms_estimate": round(longest * scale, 1),
                 "host_timeout_ms": HOST_TIMEOUT_MS, "erase_requests": len(o.erase_busy_ms)},
                "datasheet tERASE 20-40 ms per page; DFU 1.1 §6.1.2: bwPollTimeout must cover the "
                "operation, and the request itself must complete within the host's timeout"))


def layout_problems(layout: MemoryLayout, chip: Chip) -> list[str]:
    """Where a DfuSe memory layout does not describe ``chip``'s flash: segments outside it, units that
    are not its pages (UM0424 §4.3.2; RM0008 §3.3.3).  Empty when it does."""
    problems: list[str] = []
    for region in layout.regions:
        for seg in region.segments:
            end = seg.start + seg.count * seg.size
            if seg.start < chip.flash_base or end > chip.flash_end:
                problems.append(f"segment 0x{seg.start:08X}-0x{end - 1:08X} lies outside the "
                                f"{chip.flash_size // 1024} KiB flash (ends 0x{chip.flash_end - 1:08X})")
            if seg.size % chip.page_size or seg.start % chip.page_size:
                problems.append(f"segment unit {seg.size // 1024} KiB at 0x{seg.start:08X} is not a whole "
                                f"number of {chip.page_size // 1024} KiB pages")
            elif seg.size != chip.page_size:
                problems.append(f"segment unit {seg.size // 1024} KiB is not the chip's "
                                f"{chip.page_size // 1024} KiB page: the host erases only at unit starts")
    return list(dict.fromkeys(problems))


def _layout_checks(report: CheckReport, o: FlashOutcome, chip: Chip) -> Any:
    """DfuSe only: the layout string against the chip; returns the parsed layout (or None)."""
    name = o.layout_string
    if name is None or o.protocol == "dfu":
        return None
    try:
        layout = parse_layout(name)
    except LayoutError as e:
        report.add(Finding("layout-unparsable", "the DfuSe memory-layout string cannot be parsed",
                           {"layout": name, "error": str(e)}, "UM0424 §4.3.2"))
        return None
    problems = layout_problems(layout, chip)
    if problems:
        report.add(Finding("layout-does-not-match-chip",
                           "the DFU memory-layout string does not describe this chip's flash",
                           {"layout": name, "problems": problems}, "UM0424 §4.3.2; RM0008 §3.3.3"))
    return layout


def _pins_read_after_last_reset(m: Machine) -> list[str]:
    """The labelled pins (BOOT1, and every --pin) the firmware read after the last reset."""
    last = max((i for i, e in enumerate(m.events) if e.kind == "reset"), default=0)
    out = []
    for e in m.events[last:]:
        if e.kind == "gpio_read":
            name = f"P{e.data['port'][-1]}{e.data['pin']}"
            label = e.data.get("label")
            out.append(f"{name}{f' ({label})' if label and label != name else ''} = "
                       f"{'high' if e.data['level'] else 'low'}")
    return out


def _jump_checks(report: CheckReport, o: FlashOutcome, chip: Chip, expected_app_address: int) -> None:
    m = o.board.machine
    app = o.app_address
    if app < expected_app_address:
        report.add(Finding("application-linked-over-bootloader",
                           f"the application is linked at 0x{app:08X}, inside the bootloader region below "
                           f"0x{expected_app_address:08X}",
                           {"linked_at": hex(app), "application_region": hex(expected_app_address), "error": o.error},
                           f"link the application at the bootloader's application address "
                           f"(0x{expected_app_address:08X} here)"))
        return
    if o.protocol == "dfu" and o.landed_at is not None and o.landed_at != app:
        report.add(Finding("application-linked-for-another-address",
                           f"the application is linked at 0x{app:08X} but the bootloader wrote it at "
                           f"0x{o.landed_at:08X}",
                           {"linked_at": hex(app), "bootloader_wrote_at": hex(o.landed_at)},
                           "USB DFU 1.1 §6.1.1: a plain DFU download carries no address; the bootloader "
                           "decides where it goes"))
    image = o.image_bytes
    word0 = int.from_bytes(image[0:4], "little")
    word1 = int.from_bytes(image[4:8], "little")
    if not app <= (word1 & ~1) < chip.flash_end:
        report.add(Finding("reset-vector-outside-application",
                           "the application's reset vector points outside its own region",
                           {"reset_vector": hex(word1), "application_start": hex(app)},
                           "ARMv7-M B1.5.3; an image linked at the wrong address"))
    if not word1 & 1:
        report.add(Finding("reset-vector-without-thumb-bit", "the application's reset vector lacks the Thumb bit",
                           {"reset_vector": hex(word1)}, "ARMv7-M B1.5.3: EPSR.T comes from bit 0"))
    if not chip.in_sram(word0 - 4, 4) or word0 % 8:
        report.add(Finding("initial-msp-invalid",
                           "the application's initial stack pointer is outside SRAM or not 8-byte aligned",
                           {"msp": hex(word0), "sram": [hex(chip.sram_base), hex(chip.sram_end)]},
                           "ARMv7-M B1.5.3; AAPCS 8-byte stack alignment"))
    if o.jump is None:
        report.add(Finding("no-jump", "the bootloader never jumped into the application",
                           {"stop": None if o.stop is None else o.stop.kind, "error": o.error,
                            "left_dfu_mode": o.left, "pins_read_after_last_reset": _pins_read_after_last_reset(m),
                            "bootloader_printed": o.uart_after_leave[-200:].replace("\r\n", " | ").strip(" |")},
                           "the bootloader's boot decision: give the levels and backup registers it reads "
                           "after the download with --boot1-after, --pin-after and --bkp-after, or let a "
                           "DFU timeout run out with --leave none and a longer --max-time"))
        return
    state = o.jump.state
    left = [k for k in ("systick_enabled", "pll_on") if state.get(k)]
    if left or state.get("nvic_enabled") or state.get("nvic_pending"):
        report.add(Finding("state-left-running-at-jump",
                           "the bootloader jumped with peripherals and interrupts still running",
                           {**{k: state[k] for k in ("systick_enabled", "systick_interrupt", "nvic_enabled",
                                                     "nvic_pending", "pll_on")},
                            "vtor": hex(state["vtor"]), "primask": state["primask"]},
                           "PM0056 §4.4 (SysTick), RM0008 §7.3: stop and reset what the bootloader started "
                           "before the jump (docs/SEED_BOOTLOADER.md defect 4 shows the consequences)"))
    first = o.first_interrupt
    if first is not None and not app <= first.handler < chip.flash_end:
        report.add(Finding("interrupt-ran-bootloader-handler",
                           f"the first interrupt after the jump ({first.exception}) ran the bootloader's handler",
                           {"exception": first.exception, "handler": m.symbol(first.handler),
                            "vtor": hex(first.vtor), "ms_after_jump": round((first.time_ns - o.jump.time_ns) / 1e6, 3)},
                           "ARMv7-M B1.5.2: vectors come through VTOR; the application (or the bootloader "
                           "before the jump) must point VTOR at the application's table"))
    vtor_writes = [e for e in m.events if e.kind == "vtor_write" and e.time_ns >= o.jump.time_ns]
    if vtor_writes:
        value = int(vtor_writes[-1].data["value"])
        if value % VTOR_ALIGN:
            report.add(Finding("vtor-misaligned", f"VTOR set to 0x{value:08X}, not {VTOR_ALIGN}-byte aligned",
                               {"vtor": hex(value)}, "ARMv7-M B3.2.5"))
    if o.stop is not None and not o.stop.clean:
        report.add(Finding("application-failed", f"the application ended in {o.stop.kind}",
                           {"stop": o.stop.kind, "detail": o.stop.detail}, "ARMv7-M B1.5.8"))
    size = o.app_size
    if app + size > chip.flash_end:
        report.add(Finding("application-too-large", "the application does not fit between its address "
                           "and the end of flash", {"size": size, "room": chip.flash_end - app}, ""))

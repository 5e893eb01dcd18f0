"""Boot-flow checks: run the real flash-and-boot flow and turn what happened into
named findings with evidence (docs/SEED_BOOTLOADER.md).

``python -m emulator check BOOT APP`` runs the download with both erase orders
real hosts use, then judges the DFU layout against the chip, the flash journal,
the time each DFU request kept the device busy, and the jump.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from emulator.bootflow.scenario import DEFAULT_APP_ADDRESS, FlashOutcome, flash_and_boot
from emulator.core.chips import Chip, get_chip
from emulator.core.loader import ImageError
from emulator.core.machine import EmulatorError
from emulator.core.session import BoardOptions, build_board, load_images
from emulator.usb.target import DeviceNotAttached, attach
from firmware_models.flash import TIMINGS
from hostside.dfu import DfuClient, DfuException
from hostside.dfuse_layout import LayoutError, parse_layout
from hostside.transport import PyUsbTransport

HOST_TIMEOUT_MS = 5000  # dfu-util's default control-transfer timeout
ERASE_ORDERS = ("all-first", "interleaved")
VTOR_ALIGN = 512  # 16 + 60 vectors = 76 words, rounded up to a power of two (B3.2.5)


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
    # Each erase order's run, boards included, for the HTML report (not in as_dict).
    outcomes: dict[str, FlashOutcome] = field(default_factory=dict, repr=False)
    wall_s: float | None = None

    @property
    def clean(self) -> bool:
        return not self.findings

    def add(self, finding: Finding) -> None:
        if not any(f.id == finding.id and f.evidence == finding.evidence for f in self.findings):
            self.findings.append(finding)

    def as_dict(self) -> dict[str, Any]:
        return {"boot": self.boot, "app": self.app, "chip": self.chip, "clean": self.clean,
                "runs": self.runs, "findings": [f.as_dict() for f in self.findings]}


def check(boot: str, app: str, *, erase_orders: tuple[str, ...] = ERASE_ORDERS, chip: str | None = None,
          app_address: int | None = None, run_ns: int = 2_000_000_000) -> CheckReport:
    started = time.perf_counter()
    report = _check(boot, app, erase_orders, chip, app_address, run_ns)
    report.wall_s = time.perf_counter() - started
    return report


def _check(boot: str, app: str, erase_orders: tuple[str, ...], chip: str | None, app_address: int | None,
           run_ns: int) -> CheckReport:
    try:
        the_chip = get_chip(chip)
    except ValueError as e:
        raise EmulatorError(str(e)) from None
    report = CheckReport(boot, app, the_chip.name)
    try:
        warnings = load_images(BoardOptions(image=boot, chip=chip), the_chip).warnings
    except ImageError as e:
        raise EmulatorError(str(e)) from None
    for warning in warnings:
        report.add(Finding("ram-exceeds-chip-sram", "the bootloader's RAM (.data/.bss) does not fit this chip's SRAM",
                           {"warning": warning, "sram_bytes": the_chip.sram_size},
                           "docs/SEED_BOOTLOADER.md defect 6: USBD_DFU_XFER_SIZE 32768 reserves a 32 KiB buffer"))
    try:
        outcomes = {order: flash_and_boot(boot, app, app_address=app_address, erase_order=order, chip=chip,
                                          run_ns=run_ns) for order in erase_orders}
    except DeviceNotAttached as e:
        report.add(Finding("bootloader-never-attached", "the bootloader never connected to USB in DFU mode",
                           {"detail": str(e)}, "RM0008 §23.4.2"))
        return report
    report.outcomes = outcomes
    for order, outcome in outcomes.items():
        report.runs[order] = _run_summary(outcome)
        _download_checks(report, order, outcome, the_chip)
    # The jump is judged on the run whose download worked best (verify passed, if any did).
    best = next((o for o in outcomes.values() if o.verify and o.verify["ok"]), next(iter(outcomes.values())))
    _layout_checks(report, best, the_chip)
    _jump_checks(report, best, the_chip, app_address if app_address is not None else DEFAULT_APP_ADDRESS)
    _probe_bootloader_region(report, boot, chip, max(best.app_address, DEFAULT_APP_ADDRESS))
    return report


def _probe_bootloader_region(report: CheckReport, boot: str, chip: str | None, app_address: int) -> None:
    """Ask the bootloader, as any host could, to read and overwrite its own region.

    A throwaway board: the probe writes 16 bytes of 0x00 just below the
    application (normally erased flash at the top of the bootloader region)
    and uploads the vector table at the flash base (docs/SEED_BOOTLOADER.md defect 3).
    """
    board = build_board(BoardOptions(image=boot, chip=chip, boot1=False))
    m = board.machine
    target = attach(board)
    client = DfuClient(PyUsbTransport(target.device, wait_ms=target.wait_ms, now_ns=target.now_ns), 0)
    probe_address = app_address - 16
    try:
        client.start()
        try:
            client.set_address(probe_address)
            client.dnload(2, bytes(16))
            client.get_status()
            client.get_status()
        except DfuException:
            client.abort_to_idle()
        written = m.read_flash(probe_address, 16) == bytes(16)
        if written:
            report.add(Finding("bootloader-region-writable",
                               "a host can overwrite the bootloader's own flash through DFU",
                               {"probe_address": hex(probe_address), "bytes_written": 16},
                               "docs/SEED_BOOTLOADER.md defect 3: MEM_If_Write_FS checks no address range"))
        try:
            client.abort_to_idle()
            head = client.upload_dfuse(m.chip.flash_base, 8)
        except DfuException:
            head = b""
        if head and head == m.read_flash(m.chip.flash_base, 8):
            report.add(Finding("bootloader-readable",
                               "a host can read the bootloader out through DFU upload",
                               {"read_from": hex(m.chip.flash_base), "first_words": head.hex()},
                               "docs/SEED_BOOTLOADER.md defect 3: MEM_If_Read_FS checks no address range"))
    finally:
        target.close()


def _run_summary(o: FlashOutcome) -> dict[str, Any]:
    return {"download_ok": o.download_ok, "verify": o.verify, "error": o.error,
            "erase_busy_ms": [round(b, 1) for b in o.erase_busy_ms],
            "download_emulated_ms": round(o.download_emulated_ns / 1e6, 1),
            "jumped": o.jump is not None, "stop": None if o.stop is None else o.stop.kind,
            "app_uart": o.app_uart}


# -- the download ---------------------------------------------------------------------------
def _download_checks(report: CheckReport, order: str, o: FlashOutcome, chip: Chip) -> None:
    m = o.board.machine
    journal = m.flash.journal
    if o.error:
        report.add(Finding("download-failed", f"the download failed with erase order {order}",
                           {"erase_order": order, "error": o.error},
                           "USB DFU 1.1 §6.1; UM0424 (DfuSe)"))
    if o.verify is not None and not o.verify["ok"]:
        report.add(Finding(
            "erase-order-breaks-image",
            f"with erase order {order} the image read back differs from the file",
            {"erase_order": order, "first_difference": hex(o.verify["first_difference"]),
             "differing_bytes": o.verify["differing_bytes"], "compared": o.verify["compared"],
             "hosts": "dfu-util 0.9+" if order == "all-first" else "older dfu-util, pydfu and other DfuSe hosts"},
            "docs/SEED_BOOTLOADER.md, DFU hosts: hosts erase all pages first or chunk by chunk"))
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
            "RM0008 §3.3.3: a page erase sets the whole page to 0xFF; docs/SEED_BOOTLOADER.md defect 2a"))
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
            "RM0008 §3.3.3; datasheet: 256 KiB main flash on the STM32F103RC"))
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
                "datasheet tERASE 20-40 ms per page; docs/SEED_BOOTLOADER.md defect 2c"))


def _layout_checks(report: CheckReport, o: FlashOutcome, chip: Chip) -> None:
    name = o.layout_string
    if name is None:
        return
    try:
        layout = parse_layout(name)
    except LayoutError as e:
        report.add(Finding("layout-unparsable", "the DfuSe memory-layout string cannot be parsed",
                           {"layout": name, "error": str(e)}, "UM0424 §4.3.2"))
        return
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
    problems = list(dict.fromkeys(problems))
    if problems:
        report.add(Finding("layout-does-not-match-chip",
                           "the DFU memory-layout string does not describe this chip's flash",
                           {"layout": name, "problems": problems}, "UM0424 §4.3.2; RM0008 §3.3.3"))


def _jump_checks(report: CheckReport, o: FlashOutcome, chip: Chip, expected_app_address: int) -> None:
    m = o.board.machine
    app = o.app_address
    if app < expected_app_address:
        report.add(Finding("application-linked-over-bootloader",
                           f"the application is linked at 0x{app:08X}, inside the bootloader region below "
                           f"0x{expected_app_address:08X}",
                           {"linked_at": hex(app), "application_region": hex(expected_app_address), "error": o.error},
                           "the seed tutorial: link the application at USBD_DFU_APP_DEFAULT_ADD"))
        return
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
                           {"stop": None if o.stop is None else o.stop.kind, "error": o.error},
                           "the seed's main(): BOOT1 high and a valid stack pointer word"))
        return
    state = o.jump.state
    left = [k for k in ("systick_enabled", "pll_on") if state.get(k)]
    if left or state.get("nvic_enabled") or state.get("nvic_pending"):
        report.add(Finding("state-left-running-at-jump",
                           "the bootloader jumped with peripherals and interrupts still running",
                           {k: state[k] for k in ("systick_enabled", "systick_interrupt", "nvic_enabled",
                                                  "nvic_pending", "pll_on", "vtor", "primask")},
                           "docs/SEED_BOOTLOADER.md defect 4; PM0056 §4.4 (SysTick), RM0008 §7.3"))
    first = o.first_interrupt
    if first is not None and not app <= first.handler < chip.flash_end:
        report.add(Finding("interrupt-ran-bootloader-handler",
                           f"the first interrupt after the jump ({first.exception}) ran the bootloader's handler",
                           {"exception": first.exception, "handler": m.symbol(first.handler),
                            "vtor": hex(first.vtor), "ms_after_jump": round((first.time_ns - o.jump.time_ns) / 1e6, 3)},
                           "ARMv7-M B1.5.2: vectors come through VTOR; docs/SEED_BOOTLOADER.md defect 4"))
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


"""The data behind each picture of the HTML report (``--report FILE.html``).

Pure functions from what a run recorded: the machine's boot-flow events
(``machine.events``, the list ``--explain`` and ``--json`` read), the flash
model's journal, the scenario's jump and the sweep's trials.  Nothing here
scrapes text or renders HTML: :mod:`emulator.bootflow.report_html` draws what
these functions return, and the unit tests check the data itself.

* :func:`timeline` — items on lanes in emulated time, boot phases, markers;
* :func:`flash_map` — one cell per flash page (and per page asked for past the
  chip's end) coloured by what happened to it, beside the DfuSe layout;
* :func:`jump_card` — the application's vector table, MSP, VTOR before and
  after, what was left running and the first interrupt's handler;
* :func:`sweep_grid` — one cell per power-cut point coloured by outcome;
* :func:`check_document`, :func:`flash_document`, :func:`run_document`,
  :func:`sweep_document` — the whole report for each command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from emulator.bootflow.checks import CheckReport, Finding
from emulator.bootflow.explain import STEPS
from emulator.bootflow.powercut import SweepReport, Trial, _evidence, _op_text
from emulator.bootflow.report import at, format_ns
from emulator.bootflow.scenario import FlashOutcome
from emulator.core.chips import Chip
from emulator.core.machine import StopReason
from emulator.core.port import Event
from emulator.core.session import Board
from firmware_models import flash_journal as fj
from firmware_models.nvic import exception_name
from hostside.dfuse_layout import LayoutError, parse_layout

Symbolizer = Callable[[int], str]

HOST_TIMEOUT_NS = 5_000_000_000  # dfu-util's control-transfer timeout: a longer request fails on real hosts
SLOW_REQUEST_NS = 1_000_000_000  # a request this long is worth a second look
PAGES_PER_ROW = 32
MERGE_GAP_NS = 50_000_000  # a page erase takes 20-40 ms: a longer pause starts a new burst

# -- lanes -----------------------------------------------------------------------------------------

LANES: tuple[tuple[str, str], ...] = (
    ("cpu", "CPU / clocks / resets"),
    ("gpio", "GPIO / BOOT1"),
    ("usb", "USB device"),
    ("dfu", "DFU requests"),
    ("flash", "Flash operations"),
    ("faults", "Faults / firmware errors"),
)
CUTS_LANE = ("cuts", "Power cuts (sweep)")

EVENT_LANES: dict[str, str] = {
    "gpio_read": "gpio", "gpio": "gpio", "gpio_lock": "gpio",
    "usb_state": "usb", "usb_request": "usb",
    "dfu_request": "dfu",
    "flash_unlock": "flash", "flash_lock": "flash", "flash_lockout": "flash", "flash_option_unlock": "flash",
    "flash_error": "faults", "flash_interrupted": "flash",
    "fault": "faults", "lockup": "faults", "bus_error": "faults", "erased_vector": "faults",
    "guest_error": "faults", "unmodelled": "faults", "unmapped_read": "faults",
}
# The flash lane is drawn from the journal, which has each operation's busy time;
# the matching completion events would only repeat it.
JOURNAL_EVENTS = frozenset({"flash_page_erase", "flash_mass_erase", "flash_option_erase",
                            "flash_option_program", "flash_out_of_range_erase"})


@dataclass
class TimelineItem:
    lane: str
    start_ns: int
    end_ns: int  # == start_ns for an instant
    kind: str
    label: str
    pc: int = 0
    symbol: str = ""
    tone: str = "n"  # n, ok, info, busy, warn, bad, destroy, beyond, jump
    reference: str = ""
    detail: str = ""
    count: int = 1
    group: Any = None  # equal groups next to each other in a lane merge into one item

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class Phase:
    name: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Marker:
    time_ns: int
    label: str
    tone: str


@dataclass
class Timeline:
    lanes: list[tuple[str, str]]
    items: list[TimelineItem]
    phases: list[Phase]
    markers: list[Marker]
    end_ns: int

    def lane_items(self, lane: str) -> list[TimelineItem]:
        return [i for i in self.items if i.lane == lane]


def symbol_or_blank(symbol: Symbolizer, address: int) -> str:
    """The symbol for ``address``, or "" when there is none (the machine then gives the bare address)."""
    if not address:
        return ""
    name = symbol(address)
    return "" if name.startswith("0x") else name


def _hex(value: Any) -> str:
    return f"0x{value:08X}" if isinstance(value, int) else str(value)


def _request_item(e: Event) -> TimelineItem:
    d = e.data
    start = int(d.get("submit_ns", e.time_ns))
    request = str(d.get("request", "?"))
    tone = "n"
    if e.kind == "usb_request":
        label = request + (f" {d['descriptor']} {d['descriptor_index']}" if "descriptor" in d else "")
        if request in ("SET_ADDRESS", "SET_CONFIGURATION"):
            label += f" {d.get('w_value')}"
        reference = "USB 2.0 §9.4"
    else:
        reference = "DFU 1.1 §6"
        if request == "GETSTATUS" and "b_state" in d:
            label = f"GETSTATUS → {d['b_status']} / {d['b_state']}, poll {d['poll_timeout_ms']} ms"
            reference = "DFU 1.1 §6.1.2"
            if d["b_state"] == "dfuDNBUSY":
                tone = "busy"
            if d["b_status"] != "OK" or d["b_state"] == "dfuERROR":
                tone = "bad"
        elif request == "GETSTATE" and "b_state" in d:
            label = f"GETSTATE → {d['b_state']}"
        elif request == "DNLOAD" and d.get("block") == 0 and "dfuse_command" in d:
            where = f" {_hex(d['address'])}" if "address" in d else ""
            label = f"DNLOAD block 0: {d['dfuse_command']}{where}"
            reference = "UM0424 §5"
        elif request in ("DNLOAD", "UPLOAD"):
            label = f"{request} block {d.get('block')} ({d.get('length', 0)} bytes)"
            if request == "DNLOAD" and not d.get("length"):
                label = f"DNLOAD block {d.get('block')} (0 bytes: leave / manifest)"
        else:
            label = request
    if d.get("urb_status"):
        label += f" [transfer status {d['urb_status']}]"
        tone = "warn" if tone != "bad" else tone
    duration = e.time_ns - start
    if duration > HOST_TIMEOUT_NS:
        tone = "bad"
        label += f" — took {format_ns(duration)}, past a host's 5 s timeout"
    elif duration > SLOW_REQUEST_NS:
        tone = "bad" if tone == "bad" else "warn"
        label += f" — took {format_ns(duration)}"
    return TimelineItem("usb" if e.kind == "usb_request" else "dfu", start, e.time_ns, e.kind, label, e.pc,
                        tone=tone, reference=reference)


def _event_item(e: Event) -> TimelineItem | None:
    """One event as a timeline item, or None for those the journal draws."""
    if e.kind in JOURNAL_EVENTS:
        return None
    if e.kind in ("usb_request", "dfu_request"):
        return _request_item(e)
    lane = EVENT_LANES.get(e.kind, "cpu")
    reference, text = STEPS.get(e.kind, ("", None))
    try:
        label = text(e) if text is not None else _generic_label(e)
    except (KeyError, TypeError, ValueError):
        label = _generic_label(e)
    tone, group = "n", None
    detail = ""
    if lane == "faults":
        tone = "bad" if e.kind in ("fault", "lockup", "bus_error", "flash_error", "erased_vector") else "warn"
        group = (e.kind, e.pc, e.data.get("periph"))
        if e.kind == "guest_error":
            label, detail = f"{e.data.get('periph')}: firmware error", str(e.data.get("message", ""))
    if e.kind in ("jump", "first_interrupt_after_jump"):
        tone = "jump"
    elif e.kind == "reset" or e.kind == "power_cut":
        tone = "info"
    elif e.kind == "gpio":
        group = ("gpio", e.data.get("port"), e.data.get("pin"))
    elif e.kind == "usb_state":
        tone = "ok" if e.data.get("state") in ("attached", "address") else "n"
    elif e.kind == "flash_interrupted":
        tone = "bad"
    return TimelineItem(lane, e.time_ns, e.time_ns, e.kind, label, e.pc, tone=tone, reference=reference,
                        detail=detail, group=group)


def _generic_label(e: Event) -> str:
    parts = [f"{k}={_hex(v) if k in ('address', 'value', 'handler') else v}" for k, v in e.data.items()]
    return e.kind.replace("_", " ") + (": " + ", ".join(parts) if parts else "")


def flash_items(entries: Sequence[fj.JournalEntry], page_size: int, flash_end: int) -> list[TimelineItem]:
    """Flash operations from the journal, each with its busy time; erases that wiped
    data programmed earlier and erases past the end of flash get their own tones."""
    destroying = {d.erase_seq: d for d in fj.find_destroyed_data(entries, page_size)}
    items: list[TimelineItem] = []
    for e in entries:
        end = e.end_ns if e.end_ns is not None else e.time_ns
        if e.kind == fj.PROGRAM:
            page = None if e.address is None else e.address - e.address % page_size
            items.append(TimelineItem("flash", e.time_ns, end, e.kind, f"program page {_hex(page)}", e.pc,
                                      tone="ok", reference="PM0075 §2.3.3", group=("program", page),
                                      detail=_range(e.address, e.length)))
        elif e.kind in (fj.PAGE_ERASE, fj.MASS_ERASE):
            hit = destroying.get(e.seq)
            if hit is not None:
                wiped = _range(hit.destroyed[0][0], hit.destroyed[-1][1] - hit.destroyed[0][0])
                items.append(TimelineItem(
                    "flash", e.time_ns, end, e.kind, f"{e.kind.replace('_', ' ')} wiped data programmed earlier",
                    e.pc, tone="destroy", reference="RM0008 §3.3.3", group=("destroy", e.kind), detail=wiped))
            else:
                items.append(TimelineItem("flash", e.time_ns, end, e.kind, e.kind.replace("_", " "), e.pc,
                                          tone="info", reference="PM0075 §2.3.4", group=("erase", e.kind),
                                          detail=_range(e.address, e.length)))
        elif e.kind == fj.OUT_OF_RANGE_ERASE:
            items.append(TimelineItem("flash", e.time_ns, end, e.kind,
                                      f"page erase past the end of flash (ends {_hex(flash_end)})", e.pc,
                                      tone="beyond", reference="RM0008 §3.3.3", group=("beyond",),
                                      detail=_range(e.address, e.length)))
        elif e.kind == fj.POWER_CUT:
            items.append(TimelineItem("flash", e.time_ns, end, e.kind, "power cut", e.pc, tone="bad"))
        elif e.kind in (fj.OPTION_ERASE, fj.OPTION_PROGRAM, fj.ERROR, fj.LOCKOUT, fj.IGNORED_STORE):
            tone = "bad" if e.kind in (fj.ERROR, fj.LOCKOUT) else "warn" if e.kind == fj.IGNORED_STORE else "n"
            items.append(TimelineItem("flash", e.time_ns, end, e.kind, e.kind.replace("_", " "), e.pc, tone=tone,
                                      reference="PM0075 §2.3", group=(e.kind,), detail=_range(e.address, e.length)))
    return items


def _range(address: int | None, length: int) -> str:
    if address is None:
        return ""
    return f"0x{address:08X}–0x{address + max(length, 1) - 1:08X}"


def merge_items(items: Sequence[TimelineItem], max_gap_ns: int = MERGE_GAP_NS) -> list[TimelineItem]:
    """Neighbours in a lane with the same ``group`` and less than ``max_gap_ns`` apart
    become one item with a count and the whole span: 25 000 half-word programs draw
    as a few dozen page runs, while separate bursts stay separate."""
    by_lane: dict[str, list[TimelineItem]] = {}
    for item in sorted(items, key=lambda i: (i.start_ns, i.end_ns)):
        lane = by_lane.setdefault(item.lane, [])
        last = lane[-1] if lane else None
        if (last is not None and item.group is not None and last.group == item.group
                and item.start_ns - last.end_ns <= max_gap_ns):
            last.end_ns = max(last.end_ns, item.end_ns)
            last.count += 1
            last.detail = _merge_detail(last.detail, item.detail)
            continue
        lane.append(TimelineItem(**{**item.__dict__}))
    merged = [i for lane in by_lane.values() for i in lane]
    for i in merged:
        if i.count > 1:
            i.label = f"{i.count} × {i.label}"
    return sorted(merged, key=lambda i: (i.start_ns, i.lane))


def _merge_detail(first: str, last: str) -> str:
    """Address ranges merge into first–last; other details keep the first and the last."""
    if "–" in first and "–" in last and first.startswith("0x") and last.startswith("0x"):
        return first.split("–")[0] + "–" + last.split("–")[-1]
    if first == last or not last:
        return first
    return f"{first.split(' … last: ')[0]} … last: {last}"


def phases(events: Sequence[Event], end_ns: int) -> list[Phase]:
    """Boot phases from landmarks in the events: power-on, USB attach, the first DNLOAD,
    the first UPLOAD (verify), the leave request, the reset after it, the jump."""
    marks: list[tuple[int, str]] = [(0, "boot")]

    def first(pred: Callable[[Event], bool], after: int = -1) -> Event | None:
        return next((e for e in events if e.time_ns > after and pred(e)), None)

    attached = first(lambda e: e.kind == "usb_state" and e.data.get("state") == "attached")
    if attached is not None:
        marks.append((attached.time_ns, "enumeration"))
    dnload = first(lambda e: e.kind == "dfu_request" and e.data.get("request") == "DNLOAD")
    if dnload is not None:
        marks.append((int(dnload.data.get("submit_ns", dnload.time_ns)), "download"))
    upload = first(lambda e: e.kind == "dfu_request" and e.data.get("request") == "UPLOAD"
                   and e.data.get("block", 0) >= 2)
    if upload is not None:
        # The verify starts with the ABORT/SET_ADDRESS before its first block; the
        # upload's own start is close enough at this scale.
        marks.append((int(upload.data.get("submit_ns", upload.time_ns)), "verify"))
    leave = first(lambda e: e.kind == "dfu_request" and e.data.get("request") == "DNLOAD"
                  and not e.data.get("length") and e.data.get("block", 0) >= 2)
    if leave is not None:
        start = int(leave.data.get("submit_ns", leave.time_ns))
        marks.append((start, "leave / manifest"))
        reset = first(lambda e: e.kind == "reset", after=start)
        if reset is not None:
            marks.append((reset.time_ns, "restart"))
    jump = first(lambda e: e.kind == "jump")
    if jump is not None:
        marks.append((jump.time_ns, "application"))
    marks.sort()
    out: list[Phase] = []
    for (t, name), (t_next, _) in zip(marks, [*marks[1:], (max(end_ns, marks[-1][0]), "")], strict=True):
        if t_next > t or (t_next == t and t == end_ns):
            out.append(Phase(name, t, t_next))
    return out


def markers(events: Sequence[Event], items: Sequence[TimelineItem] = ()) -> list[Marker]:
    """Vertical lines across every lane: resets after power-on, power cuts, the jump, the
    first interrupt, and each burst of erases that wiped data programmed earlier."""
    out: list[Marker] = [Marker(i.start_ns, "erase wipes written data", "destroy") for i in items
                         if i.tone == "destroy"]
    for e in events:
        if e.kind == "reset" and e.time_ns > 0:
            out.append(Marker(e.time_ns, f"{e.data.get('cause', '')} reset".replace("_", "-").strip(), "info"))
        elif e.kind == "power_cut":
            out.append(Marker(e.time_ns, "power cut", "bad"))
        elif e.kind == "jump":
            out.append(Marker(e.time_ns, "jump", "jump"))
        elif e.kind == "first_interrupt_after_jump":
            out.append(Marker(e.time_ns, f"first IRQ: {e.data.get('exception')}", "jump"))
    return out


def timeline(events: Sequence[Event], entries: Sequence[fj.JournalEntry], *, page_size: int, flash_end: int,
             end_ns: int, symbol: Symbolizer | None = None) -> Timeline:
    """Every event and journal entry of one machine on the lanes of :data:`LANES`."""
    items = [i for i in (_event_item(e) for e in events) if i is not None]
    items += flash_items(entries, page_size, flash_end)
    items = merge_items(items)
    if symbol is not None:
        for i in items:
            i.symbol = symbol_or_blank(symbol, i.pc)
    last = max([end_ns, *(i.end_ns for i in items)])
    marks = sorted(markers(events, items), key=lambda mk: mk.time_ns)
    return Timeline(list(LANES), items, phases(events, last), marks, last)


# -- flash map ------------------------------------------------------------------------------------

PAGE_STATES = ("bootloader", "untouched", "erased", "programmed", "erased_after_programmed", "erased_beyond_end")
PAGE_STATE_TITLES = {
    "bootloader": "bootloader image",
    "untouched": "untouched",
    "erased": "erased",
    "programmed": "programmed",
    "erased_after_programmed": "erased after being programmed",
    "erased_beyond_end": "erase asked past the chip's end",
}


@dataclass
class PageCell:
    index: int
    address: int
    size: int
    state: str
    beyond_end: bool = False
    in_bootloader: bool = False
    in_application: bool = False
    erases: int = 0
    programs: int = 0
    destroyed_bytes: int = 0
    reprogrammed_after_wipe: bool = False
    first_ns: int | None = None
    last_ns: int | None = None

    def describe(self) -> str:
        parts = [f"page {self.index}, 0x{self.address:08X}–0x{self.address + self.size - 1:08X}: "
                 f"{PAGE_STATE_TITLES[self.state]}"]
        if self.beyond_end:
            parts.append(f"{self.erases} erase request(s) for an address the chip does not have")
        else:
            if self.erases:
                parts.append(f"erased {self.erases}×")
            if self.programs:
                parts.append(f"{self.programs} half-words programmed")
            if self.destroyed_bytes:
                parts.append(f"{self.destroyed_bytes} programmed bytes wiped by a later erase")
            if self.reprogrammed_after_wipe:
                parts.append("programmed again after the wipe")
            if self.in_bootloader:
                parts.append("holds the bootloader")
            if self.in_application:
                parts.append("in the application's range")
        if self.first_ns is not None and self.last_ns is not None:
            parts.append(f"from {format_ns(self.first_ns)} to {format_ns(self.last_ns)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class LayoutBand:
    """One DfuSe segment unit (a 'sector' the host erases at its start)."""

    start: int
    end: int
    text: str  # e.g. "16K g"
    erasable: bool
    writable: bool
    beyond_end: bool
    not_page_multiple: bool


@dataclass
class FlashMap:
    flash_base: int
    flash_size: int
    page_size: int
    pages: list[PageCell]
    layout: list[LayoutBand]
    layout_string: str | None
    layout_error: str | None = None

    @property
    def flash_end(self) -> int:
        return self.flash_base + self.flash_size

    @property
    def rows(self) -> int:
        return -(-len(self.pages) // PAGES_PER_ROW)

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(PAGE_STATES, 0)
        for p in self.pages:
            c[p.state] += 1
        return c


def flash_map(entries: Sequence[fj.JournalEntry], *, flash_base: int, flash_size: int, page_size: int,
              bootloader: Iterable[tuple[int, int]] = (), application: tuple[int, int] | None = None,
              layout_string: str | None = None) -> FlashMap:
    """What happened to every page, from the journal alone.

    ``bootloader`` ranges mark pages holding the bootloader image (drawn as such
    when nothing touched them); ``application`` is the range the host downloaded.
    Erases asked for addresses past the end of flash add cells beyond the chip's
    last page, one per page-sized step, up to the highest address asked for.
    """
    n = flash_size // page_size
    flash_end = flash_base + flash_size
    boot_ranges = list(bootloader)
    pages = [PageCell(i, flash_base + i * page_size, page_size, "untouched") for i in range(n)]

    def touch(cell: PageCell, t: int) -> None:
        cell.first_ns = t if cell.first_ns is None else min(cell.first_ns, t)
        cell.last_ns = t if cell.last_ns is None else max(cell.last_ns, t)

    beyond: dict[int, PageCell] = {}
    wiped_at: dict[int, int] = {}  # page index -> time of the last wipe
    destroyed = fj.find_destroyed_data(entries, page_size)
    for d in destroyed:
        for s, t in d.destroyed:
            a = s
            while a < t:
                i = (a - flash_base) // page_size
                page_end = flash_base + (i + 1) * page_size
                if 0 <= i < n:
                    pages[i].destroyed_bytes += min(t, page_end) - a
                    wiped_at[i] = max(wiped_at.get(i, 0), d.erase_time_ns)
                a = page_end
    for e in entries:
        if e.address is None or e.end_ns is None:
            continue
        if e.kind == fj.OUT_OF_RANGE_ERASE:
            if e.address < flash_end:
                continue
            i = (e.address - flash_base) // page_size
            cell = beyond.get(i)
            if cell is None:
                cell = beyond[i] = PageCell(i, flash_base + i * page_size, page_size, "erased_beyond_end",
                                            beyond_end=True)
            cell.erases += 1
            touch(cell, e.time_ns)
            continue
        if e.kind not in (fj.PROGRAM, fj.PAGE_ERASE, fj.MASS_ERASE):
            continue
        first = max(0, (e.address - flash_base) // page_size)
        last = min(n - 1, (e.address + max(e.length, 1) - 1 - flash_base) // page_size)
        for i in range(first, last + 1):
            cell = pages[i]
            touch(cell, e.time_ns)
            if e.kind == fj.PROGRAM:
                cell.programs += 1
                if i in wiped_at and e.time_ns > wiped_at[i]:
                    cell.reprogrammed_after_wipe = True
            else:
                cell.erases += 1
    for cell in pages:
        cell.in_bootloader = any(s < cell.address + page_size and cell.address < t for s, t in boot_ranges)
        if application is not None:
            cell.in_application = application[0] < cell.address + page_size and cell.address < application[1]
        if cell.destroyed_bytes:
            cell.state = "erased_after_programmed"
        elif cell.programs:
            cell.state = "programmed"
        elif cell.erases:
            cell.state = "erased"
        elif cell.in_bootloader:
            cell.state = "bootloader"
    if beyond:
        # Fill the gap up to the highest page asked for, so the cells keep the address scale.
        for i in range(n, max(beyond) + 1):
            pages.append(beyond.get(i) or PageCell(i, flash_base + i * page_size, page_size, "untouched",
                                                    beyond_end=True))
    bands, error = layout_bands(layout_string, flash_end, page_size)
    return FlashMap(flash_base, flash_size, page_size, pages, bands, layout_string, error)


def layout_bands(layout_string: str | None, flash_end: int, page_size: int) -> tuple[list[LayoutBand], str | None]:
    """The DfuSe layout's segment units, each as an address range (UM0424 §4.3.2)."""
    if not layout_string:
        return [], None
    try:
        layout = parse_layout(layout_string)
    except LayoutError as e:
        return [], str(e)
    bands: list[LayoutBand] = []
    for seg in layout.segments:
        size = seg.size
        text = f"{size // 1024}K" if size % 1024 == 0 else f"{size}B"
        for k in range(seg.count):
            start = seg.start + k * size
            bands.append(LayoutBand(start, start + size, f"{text} {seg.type_letter}", seg.erasable, seg.writable,
                                    start + size > flash_end, bool(size % page_size or start % page_size)))
    return bands, None


# -- the jump --------------------------------------------------------------------------------------

USED_SYSTEM_VECTORS = frozenset({1, 2, 3, 4, 5, 6, 11, 12, 14, 15})  # ARMv7-M B1.5.2; 7-10 and 13 reserved


@dataclass(frozen=True)
class VectorRow:
    index: int
    name: str
    value: int
    symbol: str
    note: str
    tone: str


@dataclass(frozen=True)
class StateRow:
    name: str
    value: str
    tone: str


@dataclass
class JumpCard:
    jumped: bool
    app_address: int
    time_ns: int | None = None
    address: int | None = None
    address_symbol: str = ""
    msp: int | None = None
    vectors: list[VectorRow] = field(default_factory=list)
    vtor_at_jump: int | None = None
    vtor_after: int | None = None
    vtor_writes: list[tuple[int, int]] = field(default_factory=list)  # (time, value) after the jump
    left_running: list[StateRow] = field(default_factory=list)
    first_interrupt: dict[str, Any] | None = None


def vector_rows(image: bytes, app_address: int, chip: Chip, symbol: Symbolizer, count: int = 16) -> list[VectorRow]:
    """The first ``count`` words of the application's vector table, judged (ARMv7-M B1.5.3)."""
    rows: list[VectorRow] = []
    app_end = app_address + len(image)
    for i in range(min(count, len(image) // 4)):
        value = int.from_bytes(image[4 * i:4 * i + 4], "little")
        if i == 0:
            ok = chip.in_sram(value - 4, 4) and value % 8 == 0
            rows.append(VectorRow(0, "initial MSP", value, "", "top of SRAM stack" if ok else
                                  "outside SRAM or not 8-byte aligned", "ok" if ok else "bad"))
            continue
        name = exception_name(i) if i in USED_SYSTEM_VECTORS else "reserved"
        if value == 0 or value == 0xFFFFFFFF:
            rows.append(VectorRow(i, name, value, "", "unused" if value == 0 else "erased", "n"))
            continue
        target = value & ~1
        notes, tone = [], "ok"
        if not value & 1:
            notes.append("no Thumb bit")
            tone = "bad"
        if not app_address <= target < app_end:
            notes.append("outside the application")
            tone = "bad"
        rows.append(VectorRow(i, name, value, symbol_or_blank(symbol, target), ", ".join(notes), tone))
    return rows


def jump_card(outcome: FlashOutcome) -> JumpCard:
    """The jump into the application, from the scenario's records and the machine's events."""
    m = outcome.board.machine
    card = JumpCard(outcome.jump is not None, outcome.app_address,
                    vectors=vector_rows(outcome.image_bytes, outcome.app_address, m.chip, m.symbol))
    jump = outcome.jump
    if jump is None:
        return card
    card.time_ns, card.address, card.msp = jump.time_ns, jump.address, jump.msp
    card.address_symbol = symbol_or_blank(m.symbol, jump.address)
    state = jump.state
    card.vtor_at_jump = state.get("vtor")
    card.vtor_writes = [(e.time_ns, int(e.data["value"])) for e in m.events
                        if e.kind == "vtor_write" and e.time_ns >= jump.time_ns]
    card.vtor_after = card.vtor_writes[-1][1] if card.vtor_writes else m.nvic.vtor
    card.left_running = left_running_rows(state)
    first = outcome.first_interrupt
    if first is not None:
        app_end = m.chip.flash_end
        card.first_interrupt = {
            "exception": first.exception, "handler": first.handler, "symbol": symbol_or_blank(m.symbol, first.handler),
            "vtor": first.vtor, "after_jump_ns": first.time_ns - jump.time_ns,
            "in_application": outcome.app_address <= first.handler < app_end,
        }
    return card


def left_running_rows(state: Mapping[str, Any]) -> list[StateRow]:
    """What the bootloader left behind at the jump (docs/SEED_BOOTLOADER.md defect 4), each judged."""
    rows = []
    if "systick_enabled" in state:
        on = bool(state["systick_enabled"])
        rows.append(StateRow("SysTick", ("running" + (", interrupt enabled" if state.get("systick_interrupt") else ""))
                             if on else "stopped", "bad" if on else "ok"))
    if "nvic_enabled" in state:
        enabled = list(state["nvic_enabled"])
        rows.append(StateRow("NVIC enabled IRQs", ", ".join(f"IRQ{i}" for i in enabled) or "none",
                             "bad" if enabled else "ok"))
    if "nvic_pending" in state:
        pending = list(state["nvic_pending"])
        rows.append(StateRow("pending exceptions", ", ".join(pending) or "none", "bad" if pending else "ok"))
    if "primask" in state:
        rows.append(StateRow("PRIMASK", "set (interrupts masked)" if state["primask"] else "clear", "n"))
    if "pll_on" in state:
        hz = state.get("sysclk_hz")
        rows.append(StateRow("PLL / SYSCLK", ("PLL on" if state["pll_on"] else "PLL off")
                             + (f", SYSCLK {hz / 1e6:g} MHz" if hz else ""), "warn" if state["pll_on"] else "ok"))
    if "usb_powered" in state:
        rows.append(StateRow("USB peripheral", "powered" if state["usb_powered"] else "powered down",
                             "warn" if state["usb_powered"] else "ok"))
    return rows


# -- the power-cut sweep ------------------------------------------------------------------------------

SWEEP_OUTCOME_TONES = {"dfu": "ok", "app_ok": "ok2", "broken_app": "bad", "bricked": "bricked"}


@dataclass(frozen=True)
class SweepCell:
    label: str
    index: int
    mode: str
    after_last: bool
    outcome: str
    operation: str
    time_ns: int | None
    evidence: str


@dataclass
class SweepView:
    boot: str
    app: str
    erase_order: str
    operations: int
    cells: list[SweepCell]
    counts: dict[str, int]
    clean: bool
    problems: list[str]
    wall_s: float


def sweep_grid(trials: Sequence[Trial]) -> list[SweepCell]:
    """One cell per cut, in the order of the operations they cut (texts as the sweep's table has them)."""
    cells = []
    for t in trials:
        op = t.op
        cells.append(SweepCell(t.point.label, t.point.index, t.point.mode, t.point.after_last, t.outcome,
                               _op_text(op), None if op is None else op.start_ns, _evidence(t)))
    return sorted(cells, key=lambda c: (c.index, c.after_last, c.mode))


def sweep_view(rep: SweepReport) -> SweepView:
    return SweepView(rep.boot_image, rep.app_file, rep.erase_order, len(rep.ops), sweep_grid(rep.trials),
                     rep.counts(), rep.clean, rep.problems, rep.wall_s)


def cut_items(cells: Sequence[SweepCell]) -> list[TimelineItem]:
    """The sweep's cut points on the reference download's timeline, coloured by outcome."""
    tone = {"dfu": "ok", "app_ok": "ok", "broken_app": "bad", "bricked": "bricked"}
    return [TimelineItem("cuts", c.time_ns, c.time_ns, "power_cut_point", f"{c.label}: {c.outcome}",
                         tone=tone.get(c.outcome, "n"), detail=f"{c.operation}; {c.evidence}")
            for c in cells if c.time_ns is not None]


# -- the whole document ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageInfo:
    role: str
    name: str
    path: str
    size: int | None
    sha256: str


@dataclass
class Header:
    command: str
    chip: str
    images: list[ImageInfo]
    options: dict[str, str]
    emulated_ns: int
    wall_s: float | None
    tool_version: str


@dataclass
class RunView:
    """One machine's boot flow: a timeline, a flash map, the jump, the USART output."""

    key: str
    title: str
    summary: list[tuple[str, str, str]]  # (name, text, tone)
    timeline: Timeline
    flash: FlashMap | None
    jump: JumpCard | None
    uart: dict[str, str]
    emulated_ns: int


@dataclass
class ReportDoc:
    title: str
    verdict: str
    verdict_tone: str
    header: Header
    findings: list[Finding]
    runs: list[RunView]
    sweep: SweepView | None = None


def image_info(role: str, path: str) -> ImageInfo:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return ImageInfo(role, p.name, str(path), None, "")
    return ImageInfo(role, p.name, str(path), len(data), hashlib.sha256(data).hexdigest())


def tool_version() -> str:
    try:
        return f"stm32-bootsim {metadata.version('stm32-bootsim')}"
    except metadata.PackageNotFoundError:
        return "stm32-bootsim (not installed)"


def options_text(options: Mapping[str, Any]) -> dict[str, str]:
    """The command's options as shown in the header (callables and the report path left out)."""
    skip = {"func", "report", "image", "app", "command", "json"}
    sweeping = bool(options.get("power_cut_sweep"))
    out = {}
    for k, v in options.items():
        if k in skip or callable(v) or v is None or v is False or v == []:
            continue
        if k.startswith("sweep") and not sweeping:
            continue
        if k in ("max_time",) and isinstance(v, int):
            v = duration_text(v)
        elif k in ("address", "base", "fops") and isinstance(v, int):
            v = f"0x{v:08X}"
        out[k.replace("_", "-")] = str(v)
    return out


def duration_text(ns: int) -> str:
    """A duration as a user would type it (``2s``, ``500ms``): what ``--max-time`` accepts."""
    for unit, scale in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if ns >= scale and ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def machine_timeline(board: Board, extra: Iterable[TimelineItem] = ()) -> Timeline:
    m = board.machine
    t = timeline(m.events, m.flash.journal.entries, page_size=m.chip.page_size, flash_end=m.chip.flash_end,
                 end_ns=m.now_ns, symbol=m.symbol)
    extra = list(extra)
    if extra:
        t.lanes.append(CUTS_LANE)
        t.items = sorted([*t.items, *extra], key=lambda i: (i.start_ns, i.lane))
    return t


def _bootloader_ranges(board: Board, app_range: tuple[int, int] | None) -> list[tuple[int, int]]:
    images = board.layout.images
    if not images:
        return []
    # The main image is the bootloader; with --app beside it, only the first image is.
    first = images[0]
    ranges = [(a, a + len(d)) for a, d in first.segments]
    if app_range is not None:
        ranges = [(s, min(t, app_range[0])) for s, t in ranges if s < app_range[0]]
    return ranges


def machine_flash_map(board: Board, *, app_range: tuple[int, int] | None = None,
                      layout_string: str | None = None) -> FlashMap:
    m = board.machine
    return flash_map(m.flash.journal.entries, flash_base=m.chip.flash_base, flash_size=m.chip.flash_size,
                     page_size=m.chip.page_size, bootloader=_bootloader_ranges(board, app_range),
                     application=app_range, layout_string=layout_string)


def outcome_run_view(key: str, title: str, outcome: FlashOutcome) -> RunView:
    """One flash-and-boot run (``flash``, each erase order of ``check``)."""
    m = outcome.board.machine
    app_range = (outcome.app_address, outcome.app_address + outcome.app_size)
    summary: list[tuple[str, str, str]] = [
        ("download", f"{outcome.app_size} bytes at 0x{outcome.app_address:08X}, "
                     f"{'ok' if outcome.download_ok else 'failed'} "
                     f"({format_ns(outcome.download_emulated_ns)} emulated)", "ok" if outcome.download_ok else "bad")]
    if outcome.erase_busy_ms:
        busy = outcome.erase_busy_ms
        summary.append(("erase requests", f"{len(busy)}, device busy {sum(busy):.1f} ms in all, longest "
                                          f"{max(busy):.1f} ms", "bad" if max(busy) > HOST_TIMEOUT_NS / 1e6 * 0.9
                        else "ok"))
    if outcome.error:
        summary.append(("error", outcome.error, "bad"))
    v = outcome.verify
    if v is not None:
        summary.append(("verify", "ok" if v["ok"] else f"{v['differing_bytes']} of {v['compared']} bytes differ, "
                                                       f"first at 0x{v['first_difference']:08X}",
                        "ok" if v["ok"] else "bad"))
    j = outcome.jump
    summary.append(("jump", "never reached the application's reset handler" if j is None else
                    f"to 0x{j.address:08X} ({m.symbol(j.address)}) with MSP 0x{j.msp:08X} at {format_ns(j.time_ns)}",
                    "bad" if j is None else "ok"))
    if outcome.stop is not None:
        summary.append(("ended", f"{outcome.stop.kind}: {outcome.stop.detail}", "ok" if outcome.stop.clean else "bad"))
    return RunView(key, title, summary, machine_timeline(outcome.board),
                   machine_flash_map(outcome.board, app_range=app_range, layout_string=outcome.layout_string),
                   jump_card(outcome), {"USART1 (after the jump)": outcome.app_uart}, m.now_ns)


def check_document(result: CheckReport, options: Mapping[str, Any], wall_s: float | None = None) -> ReportDoc:
    runs = [outcome_run_view(order, f"erase order {order}", o) for order, o in result.outcomes.items()]
    header = Header("check", result.chip, [image_info("bootloader", result.boot), image_info("application", result.app)],
                    options_text(options), sum(r.emulated_ns for r in runs), wall_s, tool_version())
    n = len(result.findings)
    verdict = "no findings: the boot flow is sound" if result.clean else f"{n} finding{'s' if n != 1 else ''}"
    return ReportDoc("check", verdict, "ok" if result.clean else "bad", header, list(result.findings), runs)


def flash_document(outcome: FlashOutcome, boot: str, app: str, options: Mapping[str, Any],
                   wall_s: float | None = None) -> ReportDoc:
    run = outcome_run_view(outcome.erase_order, f"erase order {outcome.erase_order}", outcome)
    m = outcome.board.machine
    header = Header("flash", m.chip.name, [image_info("bootloader", boot), image_info("application", app)],
                    options_text(options), m.now_ns, wall_s, tool_version())
    verdict = "boot flow ok" if outcome.ok else "boot flow broken"
    return ReportDoc("flash", verdict, "ok" if outcome.ok else "bad", header, [], [run])


def run_document(board: Board, stop: StopReason, options: Mapping[str, Any], wall_s: float | None = None) -> ReportDoc:
    m = board.machine
    summary = [("ended", f"{stop.kind}: {stop.detail}", "ok" if stop.clean else "bad"),
               ("reset", f"MSP 0x{m.reset_msp:08X}, PC {at(m.reset_pc, m.symbol(m.reset_pc & ~1))}", "n")]
    for f in m.faults:
        summary.append(("fault", f"{exception_name(f.exception)} ({f.cause}) at {at(f.pc, m.symbol(f.pc))}", "bad"))
    images = board.layout.images
    view = RunView("run", "run", summary, machine_timeline(board), machine_flash_map(board), None,
                   {f"USART{n}": bytes(v).decode("latin-1") for n, v in sorted(m.uart_output.items())}, m.now_ns)
    header = Header("run", m.chip.name, [image_info(i.label or ("image" if k == 0 else "application"), str(i.path))
                                         for k, i in enumerate(images)],
                    options_text(options), m.now_ns, wall_s, tool_version())
    return ReportDoc("run", "clean end" if stop.clean else f"ended in {stop.kind}", "ok" if stop.clean else "bad",
                     header, [], [view])


def sweep_document(rep: SweepReport, options: Mapping[str, Any]) -> ReportDoc:
    view = sweep_view(rep)
    runs: list[RunView] = []
    board = rep.reference_board
    chip = "?"
    emulated = 0
    if board is not None:
        m = board.machine
        chip, emulated = m.chip.name, m.now_ns
        app_range = rep.app_range
        runs.append(RunView("reference", "reference download (no cut), then the boot with BOOT1 high",
                            [("operations", f"{len(rep.ops)} flash operations in the download", "n"),
                             ("reference", rep.reference_error or "download ok",
                              "bad" if rep.reference_error else "ok")],
                            machine_timeline(board, cut_items(view.cells)),
                            machine_flash_map(board, app_range=app_range, layout_string=rep.layout_string),
                            None, {"USART1 (after the jump)": rep.reference.uart_after_jump}, m.now_ns))
    header = Header("power-cut sweep", chip, [image_info("bootloader", rep.boot_image),
                                              image_info("application", rep.app_file)],
                    options_text(options), emulated, rep.wall_s, tool_version())
    counts = ", ".join(f"{k} {v}" for k, v in view.counts.items())
    verdict = (("never jumps into a half-written image" if not rep.jumps_into_broken_image
                else "jumps into a half-written image") + f" ({counts})")
    return ReportDoc("power-cut sweep", verdict, "ok" if rep.clean else "bad", header, [], runs, view)

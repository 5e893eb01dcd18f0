"""A journal of everything the firmware does to non-volatile memory.

The flash model (:mod:`firmware_models.flash`) appends one
:class:`JournalEntry` per unlock, lock, wrong-key lockout, erase (page, mass,
option bytes), half-word program, option-byte program, ignored store, error
and power cut.  Each entry carries the emulated time, the PC of the
instruction that started it, the address range it touched and CRC-32 digests
of the old and new contents of that range, so a report can say *what* changed
*when* and *from where* without storing every byte.

On top of the raw journal sit two analyses whose findings are plain
dataclasses:

* :func:`find_destroyed_data` reports every erase that wipes data programmed
  earlier in the same session — the symptom of docs/SEED_BOOTLOADER.md defect 2(a), where
  the seed's ``MEM_If_Erase_FS`` erases every page from the application start
  on each call, so a host that erases and writes chunk by chunk has later
  erases destroy what it already wrote.
* :func:`page_erase_counts` counts erases per page (endurance, and the sheer
  number of erases bug 2 asks for).

A *session* is the span between two power cuts: data programmed before a cut
and erased after it is not reported, because the board was (re)started in
between and the erase is then a fresh host's decision.

The journal is JSON-serialisable (:meth:`FlashJournal.to_json`).  A
*symbolizer* (``pc -> symbol name or None``), typically built by the machine
from the firmware's ELF, can be attached at any time; names are added when
entries are turned into dicts, so attaching it late still names every entry.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Symbolizer = Callable[[int], "str | None"]

# Entry kinds.  Strings, not an enum, so the JSON is readable and stable.
UNLOCK = "unlock"
LOCK = "lock"
LOCKOUT = "wrong_key_lockout"
OPTION_UNLOCK = "option_unlock"
OPTION_LOCK = "option_lock"
PROGRAM = "program"
PAGE_ERASE = "page_erase"
MASS_ERASE = "mass_erase"
OPTION_ERASE = "option_erase"
OPTION_PROGRAM = "option_program"
OUT_OF_RANGE_ERASE = "out_of_range_erase"
IGNORED_STORE = "ignored_store"
ERROR = "error"
POWER_CUT = "power_cut"

ERASE_KINDS = frozenset({PAGE_ERASE, MASS_ERASE})


def digest(data: bytes | bytearray | memoryview) -> str:
    """CRC-32 of ``data`` as 8 hex digits (the same CRC as zlib/DfuSe files)."""
    if data == _ERASED_HALFWORD:
        return _ERASED_HALFWORD_DIGEST  # the old contents of nearly every half-word programmed
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


_ERASED_HALFWORD = b"\xff\xff"
_ERASED_HALFWORD_DIGEST = f"{zlib.crc32(_ERASED_HALFWORD) & 0xFFFFFFFF:08x}"


@dataclass(slots=True)  # one per half-word programmed: slots make it cheaper to build
class JournalEntry:
    seq: int
    kind: str
    time_ns: int  # when the operation started (the store or STRT)
    pc: int
    address: int | None = None
    length: int = 0
    old_digest: str | None = None
    new_digest: str | None = None
    end_ns: int | None = None  # when it completed (BSY fell); None for instantaneous entries
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def end_address(self) -> int | None:
        return None if self.address is None else self.address + self.length

    def as_dict(self, symbolizer: Symbolizer | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind,
            "time_ns": self.time_ns,
            "pc": self.pc,
        }
        if symbolizer is not None:
            d["symbol"] = symbolizer(self.pc)
        if self.address is not None:
            d["address"] = self.address
            d["length"] = self.length
        if self.end_ns is not None:
            d["end_ns"] = self.end_ns
        if self.old_digest is not None:
            d["old_crc32"] = self.old_digest
        if self.new_digest is not None:
            d["new_crc32"] = self.new_digest
        d.update(self.detail)
        return d


class FlashJournal:
    """Append-only list of :class:`JournalEntry`, plus the flash geometry the
    analyses need (which page an address is in)."""

    def __init__(self, flash_base: int, flash_size: int, page_size: int) -> None:
        self.flash_base = flash_base
        self.flash_size = flash_size
        self.page_size = page_size
        self.entries: list[JournalEntry] = []
        self.symbolizer: Symbolizer | None = None

    def add(self, kind: str, time_ns: int, pc: int, *, address: int | None = None, length: int = 0,
            old: bytes | None = None, new: bytes | None = None, end_ns: int | None = None,
            **detail: Any) -> JournalEntry:
        entries = self.entries
        # Positional, in field order (seq, kind, time_ns, pc, address, length, old_digest,
        # new_digest, end_ns, detail): the cheaper call.
        entry = JournalEntry(len(entries), kind, time_ns, pc, address, length,
                             None if old is None else digest(old), None if new is None else digest(new),
                             end_ns, detail)
        entries.append(entry)
        return entry

    def set_symbolizer(self, symbolizer: Symbolizer | None) -> None:
        self.symbolizer = symbolizer

    def of_kind(self, *kinds: str) -> list[JournalEntry]:
        return [e for e in self.entries if e.kind in kinds]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [e.as_dict(self.symbolizer) for e in self.entries]

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(
            {
                "flash_base": self.flash_base,
                "flash_size": self.flash_size,
                "page_size": self.page_size,
                "entries": self.as_dicts(),
            },
            indent=indent,
        )

    def clear(self) -> None:
        self.entries.clear()

    # -- analyses --------------------------------------------------------------
    def destroyed_data(self) -> list[DestroyedData]:
        return find_destroyed_data(self.entries, self.page_size)

    def erase_counts(self) -> list[PageEraseCount]:
        return page_erase_counts(self.entries, self.flash_base, self.flash_size, self.page_size)


# -- findings ----------------------------------------------------------------------
@dataclass(frozen=True)
class DestroyedData:
    """An erase that wiped half-words programmed earlier in the same session."""

    erase_seq: int
    erase_kind: str
    erase_time_ns: int
    erase_pc: int
    erase_start: int  # the whole range the erase covered
    erase_end: int
    destroyed: tuple[tuple[int, int], ...]  # merged [start, end) ranges of programmed data it wiped
    program_seqs: tuple[int, ...]  # journal entries that had programmed that data
    first_program_ns: int
    last_program_ns: int

    @property
    def bytes_destroyed(self) -> int:
        return sum(end - start for start, end in self.destroyed)

    def describe(self) -> str:
        ranges = ", ".join(f"0x{s:08X}..0x{e - 1:08X}" for s, e in self.destroyed)
        return (f"{self.erase_kind} #{self.erase_seq} at {self.erase_time_ns} ns (pc=0x{self.erase_pc:08X}) "
                f"destroyed {self.bytes_destroyed} bytes programmed between {self.first_program_ns} ns and "
                f"{self.last_program_ns} ns by {len(self.program_seqs)} program operations: {ranges}")


@dataclass(frozen=True)
class PageEraseCount:
    page_index: int
    page_address: int
    count: int
    first_ns: int
    last_ns: int


def _merge(addresses: Iterable[int], width: int) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for a in sorted(addresses):
        if out and out[-1][1] == a:
            out[-1][1] = a + width
        else:
            out.append([a, a + width])
    return tuple((s, e) for s, e in out)


def find_destroyed_data(entries: Iterable[JournalEntry], page_size: int) -> list[DestroyedData]:
    """Report each erase that wipes data programmed earlier in the same session.

    Only programs that changed the flash count (programming 0xFFFF into an
    erased cell leaves nothing to destroy), and a half-word already wiped by an
    earlier erase is not reported again.  A power cut ends the session.
    """
    # live[page_base][address] = (program seq, time) of the latest program still in flash
    live: dict[int, dict[int, tuple[int, int]]] = {}
    findings: list[DestroyedData] = []
    for e in entries:
        if e.kind == POWER_CUT:
            live.clear()
            continue
        if e.kind == PROGRAM and e.end_ns is not None:
            if e.detail.get("new_value") == 0xFFFF and e.detail.get("old_value") == 0xFFFF:
                continue
            assert e.address is not None
            page = e.address - e.address % page_size
            live.setdefault(page, {})[e.address] = (e.seq, e.time_ns)
            continue
        if e.kind not in ERASE_KINDS or e.address is None or e.end_ns is None:
            continue
        start, end = e.address, e.address + e.length
        hit: dict[int, tuple[int, int]] = {}
        page = start - start % page_size
        while page < end:
            cells = live.get(page)
            if cells:
                inside = {a: v for a, v in cells.items() if start <= a < end}
                hit.update(inside)
                for a in inside:
                    del cells[a]
            page += page_size
        if hit:
            times = [t for _, t in hit.values()]
            findings.append(DestroyedData(
                erase_seq=e.seq, erase_kind=e.kind, erase_time_ns=e.time_ns, erase_pc=e.pc,
                erase_start=start, erase_end=end, destroyed=_merge(hit, 2),
                program_seqs=tuple(sorted({s for s, _ in hit.values()})),
                first_program_ns=min(times), last_program_ns=max(times),
            ))
    return findings


def page_erase_counts(entries: Iterable[JournalEntry], flash_base: int, flash_size: int,
                      page_size: int) -> list[PageEraseCount]:
    """Completed erases per page (a mass erase counts once for every page), sorted by page."""
    counts: dict[int, list[int]] = {}  # page index -> [count, first, last]
    for e in entries:
        if e.kind not in ERASE_KINDS or e.address is None or e.end_ns is None:
            continue
        first = (e.address - flash_base) // page_size
        last = (e.address + e.length - 1 - flash_base) // page_size
        for index in range(max(first, 0), min(last, flash_size // page_size - 1) + 1):
            c = counts.get(index)
            if c is None:
                counts[index] = [1, e.time_ns, e.time_ns]
            else:
                c[0] += 1
                c[2] = e.time_ns
    return [PageEraseCount(i, flash_base + i * page_size, c[0], c[1], c[2]) for i, c in sorted(counts.items())]

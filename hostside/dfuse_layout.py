"""DfuSe memory-layout strings (the alt-setting name), UM0424 §4.3.2.

``@Internal Flash  /0x08000000/16*002Ka,112*002Kg`` names the memory, gives a
start address and a comma-separated list of segments ``COUNT*SIZE<unit><type>``:
unit ``B``/``K``/``M`` (a space also means bytes), type ``a``..``g`` whose low
three bits are readable (1), erasable (2) and writable (4) — the encoding
dfu-util's ``dfuse_mem.c`` uses (``memtype & 7``).  Several ``/0xADDR/segments``
groups may follow one name (e.g. an option-byte area after the flash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

READABLE = 1
ERASABLE = 2
WRITABLE = 4

_UNITS = {"B": 1, " ": 1, "K": 1024, "M": 1024 * 1024}
_SEGMENT_RE = re.compile(r"\s*(\d+)\s*\*\s*(\d+)\s*([BKM ]?)([a-g])\s*")
_ADDRESS_RE = re.compile(r"/\s*0[xX]([0-9a-fA-F]+)\s*/")


class LayoutError(ValueError):
    """The layout string cannot be parsed."""


class RegionError(ValueError):
    """An address range does not fit the layout (outside, read-only, too large)."""

    def __init__(self, kind: str, message: str, address: int) -> None:
        super().__init__(message)
        self.kind = kind  # "outside", "read-only", "not-readable", "too-large"
        self.address = address


@dataclass(frozen=True)
class Segment:
    """``count`` pages of ``size`` bytes from ``start``, with one access type."""

    start: int
    count: int
    size: int
    readable: bool
    erasable: bool
    writable: bool

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.start + self.count * self.size

    @property
    def type_letter(self) -> str:
        bits = (READABLE if self.readable else 0) | (ERASABLE if self.erasable else 0) | (
            WRITABLE if self.writable else 0)
        return chr(0x60 + bits)

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end

    def page_start(self, address: int) -> int:
        """Start of the page holding ``address`` (pages count from the segment start)."""
        return self.start + (address - self.start) // self.size * self.size

    def render(self) -> str:
        size, unit = self.size, "B"
        if size % (1024 * 1024) == 0:
            size, unit = size // (1024 * 1024), "M"
        elif size % 1024 == 0:
            size, unit = size // 1024, "K"
        return f"{self.count:02d}*{size:03d}{unit}{self.type_letter}"


@dataclass(frozen=True)
class Page:
    start: int
    size: int
    segment: Segment

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Region:
    """One ``/0xADDR/segments`` group: contiguous segments from ``address``."""

    name: str
    address: int
    segments: tuple[Segment, ...]

    @property
    def end(self) -> int:
        return self.segments[-1].end if self.segments else self.address


@dataclass(frozen=True)
class MemoryLayout:
    name: str
    regions: tuple[Region, ...]

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(s for r in self.regions for s in r.segments)

    # -- lookup ------------------------------------------------------------------
    def find_segment(self, address: int) -> Segment | None:
        for seg in self.segments:
            if seg.contains(address):
                return seg
        return None

    def page_containing(self, address: int) -> Page | None:
        seg = self.find_segment(address)
        if seg is None:
            return None
        return Page(seg.page_start(address), seg.size, seg)

    def pages_touched(self, address: int, length: int) -> list[Page]:
        """Every page the bytes ``[address, address+length)`` touch, in address order.

        Bytes outside every segment are skipped (dfu-util cannot erase what it
        has no page size for)."""
        pages: list[Page] = []
        a, end = address, address + length
        while a < end:
            page = self.page_containing(a)
            if page is None:
                nxt = min((s.start for s in self.segments if s.start > a), default=end)
                a = nxt
                continue
            pages.append(page)
            a = page.end
        return pages

    def run_end(self, address: int) -> int:
        """End of the contiguous run of segments starting at the one holding ``address``."""
        segs = sorted(self.segments, key=lambda s: s.start)
        end = None
        for s in segs:
            if end is None:
                if s.contains(address):
                    end = s.end
            elif s.start == end:
                end = s.end
        return end if end is not None else address

    # -- checks ------------------------------------------------------------------
    def check_write(self, address: int, length: int) -> None:
        """Raise ``RegionError`` unless every byte is in a writable segment."""
        self._check(address, length, "write")

    def check_read(self, address: int, length: int) -> None:
        """Raise ``RegionError`` unless every byte is in a readable segment."""
        self._check(address, length, "read")

    def _check(self, address: int, length: int, what: str) -> None:
        if length <= 0:
            return
        first = self.find_segment(address)
        if first is None:
            raise RegionError(
                "outside", f"address 0x{address:08X} is outside every segment of '{self.name}'", address)
        end = address + length
        run_end = self.run_end(address)
        if end > run_end:
            raise RegionError(
                "too-large",
                f"{length} bytes at 0x{address:08X} end at 0x{end:08X}, beyond the end of "
                f"'{self.name}' at 0x{run_end:08X}",
                address,
            )
        a = address
        while a < end:
            seg = self.find_segment(a)
            assert seg is not None  # the run check above covers every byte
            ok = seg.writable if what == "write" else seg.readable
            if not ok:
                kind = "read-only" if what == "write" else "not-readable"
                label = "read-only" if what == "write" else "not readable"
                raise RegionError(
                    kind,
                    f"address 0x{max(a, seg.start):08X} is in a {label} segment "
                    f"({seg.render()} at 0x{seg.start:08X}) of '{self.name}'",
                    max(a, seg.start),
                )
            a = seg.end

    # -- text ----------------------------------------------------------------------
    def render(self) -> str:
        parts = [f"@{self.name}"]
        for r in self.regions:
            parts.append(f"/0x{r.address:08X}/" + ",".join(s.render() for s in r.segments))
        return "".join(parts)


def parse_layout(text: str) -> MemoryLayout:
    """Parse a DfuSe alt-setting name into a ``MemoryLayout``; ``LayoutError`` if it is not one."""
    if not text.startswith("@"):
        raise LayoutError(f"memory layout must start with '@': {text!r}")
    slash = text.find("/")
    if slash < 0:
        raise LayoutError(f"memory layout has no '/0xADDRESS/' part: {text!r}")
    name = text[1:slash].strip()
    pos = slash
    regions: list[Region] = []
    while pos < len(text):
        m = _ADDRESS_RE.match(text, pos)
        if m is None:
            raise LayoutError(f"expected '/0xADDRESS/' at column {pos} of {text!r}")
        address = int(m.group(1), 16)
        pos = m.end()
        segments: list[Segment] = []
        start = address
        while True:
            s = _SEGMENT_RE.match(text, pos)
            if s is None:
                raise LayoutError(f"expected COUNT*SIZE<unit><type> at column {pos} of {text!r}")
            count, size = int(s.group(1)), int(s.group(2)) * _UNITS[s.group(3) or "B"]
            if count == 0 or size == 0:
                raise LayoutError(f"empty segment '{s.group(0).strip()}' in {text!r}")
            bits = ord(s.group(4)) & 7
            segments.append(Segment(start, count, size, bool(bits & READABLE), bool(bits & ERASABLE),
                                    bool(bits & WRITABLE)))
            start += count * size
            pos = s.end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            break
        regions.append(Region(name, address, tuple(segments)))
        if text[pos:].strip() == "":
            break
    return MemoryLayout(name, tuple(regions))

"""Symbol tables: turn addresses into "name+0x12" for traces, reports and faults.

A :class:`SymbolTable` holds the function and object symbols of one or more
ELF images.  Each image's symbols carry an *origin* tag ("bootloader", "app")
so that a merged table can tell ``bootloader:SysTick_Handler`` from
``app:SysTick_Handler`` -- the difference that matters when an interrupt
fires between the bootloader's jump and the application's VTOR write.

Lookups run once per traced instruction, so the table is flattened at build
time into disjoint, sorted address intervals: a lookup is one ``bisect`` plus a
dict-cached string format.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import IO

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

# An assembly function without ``.size`` gets size 0.  It is taken to extend
# to the next symbol, the end of its section, or this many bytes, whichever
# comes first, so an address far past the last symbol stays a bare address.
MAX_UNSIZED_EXTENT = 0x1000

_CACHE_LIMIT = 1 << 16

_BINDING_RANK = {"global": 0, "weak": 1, "local": 2}


@dataclass(frozen=True)
class Symbol:
    """One named address range.

    ``address`` is the address the CPU sees: the Thumb bit is cleared for
    functions (ELF keeps it set in ``st_value``, ARM ELF ABI §5.5.3), and data
    objects have their run-time (VMA) address.  ``kind`` is "func", "object"
    or "label" (an untyped symbol: a linker-script symbol or an assembly label).
    """

    name: str
    address: int
    size: int
    kind: str
    binding: str = "global"
    origin: str | None = None
    # End of the symbol's section: the furthest an unsized code symbol may reach.
    section_end: int | None = None
    in_code: bool = False

    @property
    def end(self) -> int:
        return self.address + self.size

    @property
    def is_function(self) -> bool:
        return self.kind == "func"

    @property
    def qualified_name(self) -> str:
        return f"{self.origin}:{self.name}" if self.origin else self.name

    def describe(self, address: int) -> str:
        """``address`` relative to this symbol: "name" or "name+0x12"."""
        offset = address - self.address
        return self.qualified_name if offset == 0 else f"{self.qualified_name}+0x{offset:x}"


def _priority(sym: Symbol) -> tuple[int, int, str]:
    """Sort key among symbols at the same place: smaller is preferred.

    A strong global beats the weak aliases that startup files point at
    Default_Handler, a function beats an object, and the name breaks ties so
    the choice never depends on symbol-table order.
    """
    return (_BINDING_RANK.get(sym.binding, 3), 0 if sym.kind == "func" else 1, sym.name)


class SymbolTable:
    """Symbols of one or more images, indexed for fast address lookups."""

    def __init__(self, symbols: Iterable[Symbol] = ()) -> None:
        self._symbols: tuple[Symbol, ...] = tuple(symbols)
        self._origins: tuple[str | None, ...] = tuple(dict.fromkeys(s.origin for s in self._symbols))
        self._by_name: dict[str, list[Symbol]] = {}
        for sym in self._symbols:
            self._by_name.setdefault(sym.name, []).append(sym)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._hits: list[tuple[Symbol, ...]] = []
        self._cache: dict[tuple[int, str | None], str] = {}
        self._build_index()

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_elf(cls, path: str | os.PathLike[str], origin: str | None = None) -> SymbolTable:
        with open(path, "rb") as f:
            return cls.from_elffile(ELFFile(f), origin)

    @classmethod
    def from_stream(cls, stream: IO[bytes], origin: str | None = None) -> SymbolTable:
        return cls.from_elffile(ELFFile(stream), origin)

    @classmethod
    def from_elffile(cls, elf: ELFFile, origin: str | None = None) -> SymbolTable:
        """Functions, objects and labels of ``elf``'s symbol table (empty if stripped)."""
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            symtab = next((s for s in elf.iter_sections() if isinstance(s, SymbolTableSection)), None)
        if symtab is None:
            return cls()
        sections = list(elf.iter_sections())
        symbols = []
        for sym in symtab.iter_symbols():
            name = sym.name
            # "$t", "$a", "$d" are ARM mapping symbols (ARM ELF ABI §5.5.5), not names.
            if not name or name.startswith("$"):
                continue
            st_type = sym["st_info"]["type"]
            kind = {"STT_FUNC": "func", "STT_OBJECT": "object", "STT_NOTYPE": "label"}.get(st_type)
            shndx = sym["st_shndx"]
            if kind is None or shndx == "SHN_UNDEF":
                continue
            section_end = None
            in_code = False
            if isinstance(shndx, int) and shndx < len(sections):
                hdr = sections[shndx].header
                if not hdr["sh_flags"] & SH_FLAGS.SHF_ALLOC:
                    continue  # debug or other non-memory sections
                section_end = hdr["sh_addr"] + hdr["sh_size"]
                in_code = bool(hdr["sh_flags"] & SH_FLAGS.SHF_EXECINSTR)
            value = sym["st_value"]
            if kind == "func" or (kind == "label" and in_code):
                value &= ~1  # Thumb bit: the code starts at the even address
            binding = {"STB_GLOBAL": "global", "STB_WEAK": "weak"}.get(sym["st_info"]["bind"], "local")
            symbols.append(
                Symbol(
                    name, value, sym["st_size"], kind, binding, origin, section_end, in_code or kind == "func"
                )
            )
        return cls(symbols)

    def with_origin(self, origin: str | None) -> SymbolTable:
        """A copy whose symbols are all tagged ``origin``."""
        return SymbolTable(replace(s, origin=origin) for s in self._symbols)

    @classmethod
    def merge(cls, tables: Iterable[SymbolTable]) -> SymbolTable:
        """One table over several images; each input must carry its own origin tag.

        Origins are kept in the order given, which is also the order in which
        ``lookup`` lists several images' symbols for one address (RAM is
        shared: the bootloader's ``uwTick`` and the application's variables
        can sit at the same address).
        """
        tables = list(tables)
        seen: set[str | None] = set()
        for table in tables:
            for origin in table.origins:
                if origin in seen:
                    raise ValueError(
                        f"two symbol tables share the origin {origin!r}; tag them with with_origin()"
                    )
            seen.update(table.origins)
        return cls(s for table in tables for s in table)

    # -- index ------------------------------------------------------------------------
    def _build_index(self) -> None:
        per_origin = [self._origin_intervals(o) for o in self._origins]
        # Combine the (internally disjoint) interval lists of every origin: each
        # elementary piece lists the winning symbol of each origin covering it.
        bounds = sorted({b for intervals in per_origin for lo, hi, _ in intervals for b in (lo, hi)})
        starts: list[int] = []
        ends: list[int] = []
        hits: list[tuple[Symbol, ...]] = []
        cursors = [0] * len(per_origin)
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            found = []
            for k, intervals in enumerate(per_origin):
                i = cursors[k]
                while i < len(intervals) and intervals[i][1] <= lo:
                    i += 1
                cursors[k] = i
                if i < len(intervals) and intervals[i][0] <= lo:
                    found.append(intervals[i][2])
            if not found:
                continue
            piece = tuple(found)
            if hits and ends[-1] == lo and hits[-1] == piece:
                ends[-1] = hi
            else:
                starts.append(lo)
                ends.append(hi)
                hits.append(piece)
        self._starts, self._ends, self._hits = starts, ends, hits

    def _origin_intervals(self, origin: str | None) -> list[tuple[int, int, Symbol]]:
        """Disjoint (start, end, symbol) intervals of one origin, sorted.

        Where sized symbols nest or overlap, the innermost (latest start, then
        smallest) wins; unsized code symbols fill the gaps between them.
        """
        mine = [s for s in self._symbols if s.origin == origin]
        sized = [s for s in mine if s.size > 0 and s.kind != "label"]
        bounds = sorted({b for s in sized for b in (s.address, s.end)})
        by_start = sorted(sized, key=lambda s: s.address)
        intervals: list[tuple[int, int, Symbol]] = []
        active: list[Symbol] = []
        j = 0
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            while j < len(by_start) and by_start[j].address <= lo:
                active.append(by_start[j])
                j += 1
            active = [s for s in active if s.end > lo]
            if not active:
                continue
            best = min(active, key=lambda s: (-s.address, s.size, _priority(s)))
            if intervals and intervals[-1][1] == lo and intervals[-1][2] is best:
                intervals[-1] = (intervals[-1][0], hi, best)
            else:
                intervals.append((lo, hi, best))

        unsized = [s for s in mine if s.size == 0 and s.in_code]
        if unsized:
            covered_starts = [lo for lo, _, _ in intervals]
            # Every place a symbol begins bounds the reach of an unsized one before it.
            all_starts = sorted({s.address for s in unsized} | set(covered_starts))
            best_at: dict[int, Symbol] = {}
            for s in unsized:
                if s.address not in best_at or _priority(s) < _priority(best_at[s.address]):
                    best_at[s.address] = s
            extra = []
            for address, s in best_at.items():
                i = bisect_right(covered_starts, address) - 1
                if i >= 0 and address < intervals[i][1]:
                    continue  # a label inside a sized function: the function names it
                limit = address + MAX_UNSIZED_EXTENT
                if s.section_end is not None:
                    limit = min(limit, s.section_end)
                k = bisect_right(all_starts, address)
                if k < len(all_starts):
                    limit = min(limit, all_starts[k])
                if limit > address:
                    extra.append((address, limit, s))
            intervals = sorted(intervals + extra, key=lambda t: t[0])
        return intervals

    # -- queries ----------------------------------------------------------------------
    @property
    def origins(self) -> tuple[str | None, ...]:
        return self._origins

    def __len__(self) -> int:
        return len(self._symbols)

    def __iter__(self) -> Iterator[Symbol]:
        return iter(self._symbols)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.symbols_named(name))

    def _covering(self, address: int) -> tuple[Symbol, ...]:
        i = bisect_right(self._starts, address) - 1
        if i < 0 or address >= self._ends[i]:
            return ()
        return self._hits[i]

    def lookup(self, address: int, origin: str | None = None) -> str:
        """Name ``address``: "name", "name+0x12", "app:name+0x12", or "0x08001234" if no symbol covers it.

        With several images covering one address (shared RAM), their names are
        joined with "/".  ``origin`` restricts the answer to one image.
        """
        key = (address, origin)
        text = self._cache.get(key)
        if text is not None:
            return text
        hits = self._covering(address)
        if origin is not None:
            hits = tuple(s for s in hits if s.origin == origin)
        text = "/".join(s.describe(address) for s in hits) if hits else f"0x{address:08X}"
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = text
        return text

    def symbol_at(self, address: int, origin: str | None = None) -> Symbol | None:
        """The symbol covering ``address`` (the first image's, if several do)."""
        for sym in self._covering(address):
            if origin is None or sym.origin == origin:
                return sym
        return None

    def function_at(self, address: int, origin: str | None = None) -> Symbol | None:
        """The function (or unsized code label) covering ``address``, if any."""
        for sym in self._covering(address):
            if sym.in_code and (origin is None or sym.origin == origin):
                return sym
        return None

    def symbols_named(self, name: str) -> list[Symbol]:
        """Every symbol called ``name``; "origin:name" restricts to one image."""
        found = self._by_name.get(name)
        if found is None and ":" in name:
            origin, _, bare = name.partition(":")
            return [s for s in self._by_name.get(bare, ()) if s.origin == origin]
        return list(found or ())

    def address_of(self, name: str) -> int | None:
        """Address of ``name`` (Thumb bit cleared for functions), or None if absent.

        A name defined by several images must be qualified ("app:main"); a
        bare name that is ambiguous raises ValueError rather than guess.
        Within one image a global definition beats weak and local ones.
        """
        found = self.symbols_named(name)
        if not found:
            return None
        origins = list(dict.fromkeys(s.origin for s in found))
        if len(origins) > 1:
            choices = ", ".join(f"{o}:{name}" for o in origins)
            raise ValueError(f"{name!r} is defined in several images; say which: {choices}")
        return min(found, key=lambda s: (_priority(s), s.address)).address

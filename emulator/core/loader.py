"""Load firmware images (ELF, Intel HEX, raw binary) and place them in flash.

The machine gets its flash contents from here: :func:`load_image` reads one
file into an :class:`Image` (address-sorted byte segments, plus symbols for an
ELF), and :func:`place_images` checks a bootloader and its applications
against a chip's flash and lays them into one :class:`FlashLayout`, whose
:attr:`FlashLayout.data` is the flat, erased-to-0xFF flash array.

Every problem with an input file is an :class:`ImageError` with a one-line
message that names the file, so a CLI can print it as it is.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.descriptions import describe_e_machine
from elftools.elf.elffile import ELFFile
from intelhex import IntelHex, IntelHexError

from emulator.core.chips import FLASH_BASE, Chip
from emulator.core.symbols import SymbolTable

ELF_MAGIC = b"\x7fELF"
DEFAULT_BIN_BASE = FLASH_BASE
ERASED = 0xFF  # erased NOR flash reads as all ones (RM0008 §3.3.3)

# Names for machines a firmware file is commonly confused with; pyelftools'
# descriptions ("Advanced Micro Devices X86-64") cover the rest.
_MACHINE_NAMES = {"EM_AARCH64": "AArch64", "EM_X86_64": "x86-64", "EM_386": "x86", "EM_RISCV": "RISC-V"}


# The largest STM32F10x flash (XL density, 1 MiB) and SRAM (96 KiB): the
# regions an image's vector table and variables can use whatever the part.
_MAX_F1_FLASH = 1024 * 1024
_MAX_F1_SRAM = 96 * 1024


class ImageError(Exception):
    """A firmware file cannot be used; the message is one line and names the file."""


@dataclass
class Image:
    """One loaded firmware file.

    ``segments`` is sorted by address, with adjacent pieces merged, so each
    entry is a maximal contiguous run of bytes.  ``entry`` is the ELF entry
    point (or an Intel HEX start-linear-address record, which objcopy writes
    from it); ``None`` for a raw binary.
    """

    path: Path
    kind: str  # "elf" | "hex" | "bin"
    segments: list[tuple[int, bytes]]
    symbols: SymbolTable | None = None
    entry: int | None = None
    label: str = ""  # origin tag for merged symbol tables: "bootloader", "app"...
    # Run-time (VMA) address ranges of an ELF's PT_LOAD segments, .bss included:
    # the memory the program expects to own once started.  Empty for HEX/BIN.
    run_ranges: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.path.stem

    @property
    def start(self) -> int:
        return self.segments[0][0]

    @property
    def end(self) -> int:
        """First address past the highest loaded byte."""
        address, data = self.segments[-1]
        return address + len(data)

    @property
    def size(self) -> int:
        """Bytes of data loaded (gaps not counted)."""
        return sum(len(data) for _, data in self.segments)

    @property
    def vector_table_address(self) -> int:
        """Lowest flash address loaded: where the image's vector table must be.

        Falls back to the lowest address of all for an image with nothing in
        the flash region (place_images rejects such an image anyway).
        """
        for address, _ in self.segments:
            if FLASH_BASE <= address < FLASH_BASE + _MAX_F1_FLASH:
                return address
        return self.start

    def read(self, address: int, length: int) -> bytes | None:
        """``length`` bytes at ``address`` if the image supplies all of them."""
        for seg_address, data in self.segments:
            if seg_address <= address and address + length <= seg_address + len(data):
                offset = address - seg_address
                return data[offset : offset + length]
        return None

    def word(self, address: int) -> int | None:
        """The little-endian 32-bit word at ``address``, if loaded (vector table checks)."""
        raw = self.read(address, 4)
        return None if raw is None else struct.unpack("<I", raw)[0]

    def describe(self) -> str:
        ranges = ", ".join(f"0x{a:08X}-0x{a + len(d) - 1:08X}" for a, d in self.segments)
        return f"{self.path} ({self.kind}, {self.size} bytes at {ranges})"


# -- app specs --------------------------------------------------------------------------
def parse_app_spec(spec: str) -> tuple[Path, int | None]:
    """Split "app.bin@0x08008000" into (path, address); "app.elf" gives (path, None).

    The address accepts Python integer syntax (0x..., decimal, underscores).
    An "@" followed by something containing a path separator is part of the
    file name, not an address.
    """
    path, sep, suffix = spec.rpartition("@")
    if not sep or "/" in suffix or os.sep in suffix:
        if not spec:
            raise ImageError("empty image name")
        return Path(spec), None
    if not path:
        raise ImageError(f"bad image spec {spec!r}: no file name before '@'")
    try:
        address = int(suffix.strip(), 0)
    except ValueError:
        raise ImageError(f"bad address {suffix!r} in {spec!r}: expected e.g. {path}@0x08008000") from None
    if not 0 <= address <= 0xFFFF_FFFF:
        raise ImageError(f"bad address {suffix!r} in {spec!r}: not a 32-bit address")
    return Path(path), address


def load_app_spec(spec: str, label: str = "") -> Image:
    """:func:`load_image` for a "file[@address]" command-line argument."""
    path, address = parse_app_spec(spec)
    return load_image(path, address, label=label)


# -- loading ----------------------------------------------------------------------------
def load_image(path: str | os.PathLike[str], base: int | None = None, *, label: str = "") -> Image:
    """Read an ELF, Intel HEX or raw binary file, recognised by its content.

    ``base`` places a raw binary (default 0x08000000).  For ELF and HEX files,
    which carry their own addresses, ``base`` is accepted only as a check:
    it must equal the image's lowest address.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not raw:
        raise ImageError(f"{p}: file is empty")

    if raw.startswith(ELF_MAGIC):
        image = _load_elf(p, raw, label)
    elif raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b":"):
        image = _load_hex(p, raw, label)
    else:
        if base is not None and base % 4:
            # A raw binary is a whole image from objcopy: it starts with words (a vector table, code).
            raise ImageError(f"{p}: load address 0x{base:08X} is not word-aligned (a multiple of 4)")
        return Image(p, "bin", [(DEFAULT_BIN_BASE if base is None else base, raw)], label=label)

    if base is not None and base != image.start:
        raise ImageError(
            f"{p}: {image.kind.upper()} file starts at 0x{image.start:08X}, not at the requested "
            f"0x{base:08X} (an @address only places raw .bin files)"
        )
    return image


def _merge_segments(p: Path, pieces: Iterable[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Sort pieces, join touching ones, reject overlapping ones."""
    merged: list[tuple[int, bytearray]] = []
    for address, data in sorted((a, d) for a, d in pieces if d):
        if merged:
            last_address, last = merged[-1]
            last_end = last_address + len(last)
            if address < last_end:
                raise ImageError(
                    f"{p}: loadable data overlaps itself at 0x{address:08X}-0x{min(last_end, address + len(data)) - 1:08X}"
                )
            if address == last_end:
                last.extend(data)
                continue
        merged.append((address, bytearray(data)))
    if merged and merged[-1][0] + len(merged[-1][1]) > 1 << 32:
        raise ImageError(f"{p}: data extends past the 4 GiB address space")
    return [(a, bytes(d)) for a, d in merged]


def _load_elf(p: Path, raw: bytes, label: str) -> Image:
    try:
        elf = ELFFile(io.BytesIO(raw))
        machine = elf["e_machine"]
        if machine != "EM_ARM":
            name = _MACHINE_NAMES.get(machine) if isinstance(machine, str) else None
            raise ImageError(f"{p} is an ELF for {name or describe_e_machine(machine)}, not ARM")
        if elf.elfclass != 32:
            raise ImageError(f"{p} is a 64-bit ELF; Cortex-M3 firmware is ELFCLASS32")
        if not elf.little_endian:
            raise ImageError(f"{p} is a big-endian ARM ELF; the STM32F103 runs little-endian code")
        pieces = _elf_load_pieces(p, elf, len(raw))
        if not pieces:
            raise ImageError(f"{p}: ELF has no loadable segments (PT_LOAD with file data)")
        segments = _merge_segments(p, pieces)
        symbols = SymbolTable.from_elffile(elf)
        entry = elf["e_entry"]
        run_ranges = sorted(
            (seg["p_vaddr"], seg["p_vaddr"] + seg["p_memsz"])
            for seg in elf.iter_segments()
            if seg["p_type"] == "PT_LOAD" and seg["p_memsz"] > 0
        )
    except ImageError:
        raise
    except (ELFError, ConstructError, struct.error, ValueError, KeyError, IndexError, EOFError) as exc:
        raise ImageError(f"{p}: corrupt or truncated ELF: {_one_line(exc)}") from None
    return Image(p, "elf", segments, symbols, entry, label, run_ranges)


def _elf_load_pieces(p: Path, elf: ELFFile, file_size: int) -> list[tuple[int, bytes]]:
    """(LMA, bytes) for every PT_LOAD segment that has file contents.

    The load address is p_paddr, not p_vaddr: a .data section runs in SRAM
    (VMA) but its initialiser is stored in flash right after .text (LMA, the
    linker's ``AT>``), which the startup code copies at reset.  A segment
    whose p_filesz is shorter than p_memsz has .bss in the rest: nothing to
    load there.

    When section headers exist, each segment is trimmed to the allocated
    sections inside it: a linker may start the first segment at file offset 0,
    dragging the ELF and program headers in front of the vector table, and
    objcopy -O binary (which works from sections) does not emit those bytes.
    """
    alloc_sections = [
        s
        for s in elf.iter_sections()
        if s.header["sh_flags"] & SH_FLAGS.SHF_ALLOC
        and s.header["sh_type"] != "SHT_NOBITS"
        and s.header["sh_size"]
    ]
    pieces = []
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD" or seg["p_filesz"] == 0:
            continue
        offset, filesz = seg["p_offset"], seg["p_filesz"]
        if offset + filesz > file_size:
            raise ImageError(
                f"{p}: corrupt or truncated ELF: segment at 0x{seg['p_paddr']:08X} needs file bytes "
                f"up to {offset + filesz}, the file has {file_size}"
            )
        lo, hi = offset, offset + filesz
        inside = [
            s
            for s in alloc_sections
            if offset <= s.header["sh_offset"] and s.header["sh_offset"] + s.header["sh_size"] <= hi
        ]
        if inside:
            lo = min(s.header["sh_offset"] for s in inside)
            hi = max(s.header["sh_offset"] + s.header["sh_size"] for s in inside)
        data = seg.data()[lo - offset : hi - offset]
        pieces.append((seg["p_paddr"] + (lo - offset), data))
    return pieces


def _load_hex(p: Path, raw: bytes, label: str) -> Image:
    try:
        # Some Windows tools write a UTF-8 byte-order mark before the first record.
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("ascii")
    except UnicodeDecodeError as exc:
        raise ImageError(f"{p}: corrupt Intel HEX: non-ASCII byte at offset {exc.start}") from None
    records = [line.strip() for line in text.splitlines() if line.strip()]
    # intelhex stops at the end-of-file record but does not insist on one; a
    # file cut off between two lines would otherwise load as a shorter image.
    if not records or len(records[-1]) < 9 or records[-1][7:9] != "01":
        raise ImageError(f"{p}: corrupt or truncated Intel HEX: the last record is not an end-of-file record")
    ih = IntelHex()
    try:
        ih.loadhex(io.StringIO(text))
    except IntelHexError as exc:
        raise ImageError(f"{p}: corrupt Intel HEX: {_one_line(exc)}") from None
    except ValueError as exc:  # some malformed fields reach int()/unhexlify directly
        raise ImageError(f"{p}: corrupt Intel HEX: {_one_line(exc)}") from None
    pieces = [(start, ih.tobinstr(start=start, end=end - 1)) for start, end in ih.segments()]
    if not pieces:
        raise ImageError(f"{p}: Intel HEX file has no data records")
    entry = None
    start_addr = ih.start_addr or {}
    if "EIP" in start_addr:
        entry = start_addr["EIP"]
    return Image(p, "hex", _merge_segments(p, pieces), None, entry, label)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- placing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    start: int
    end: int  # exclusive
    image: Image


@dataclass(frozen=True)
class FlashLayout:
    """Images checked against one chip's flash, ready to become its contents."""

    chip: Chip
    images: tuple[Image, ...]
    placements: tuple[Placement, ...] = field(default=())  # every segment, sorted by address
    # Problems that do not stop loading but will show at run time, one line each.
    warnings: tuple[str, ...] = ()

    @cached_property
    def data(self) -> bytes:
        """The whole main flash, 0xFF where no image put anything."""
        flash = bytearray([ERASED]) * self.chip.flash_size
        base = self.chip.flash_base
        for image in self.images:
            for address, chunk in image.segments:
                flash[address - base : address - base + len(chunk)] = chunk
        return bytes(flash)

    def to_bytes(self) -> bytes:
        return self.data

    def image_at(self, address: int) -> Image | None:
        """The image that loaded the byte at ``address``, if any."""
        for placement in self.placements:
            if placement.start <= address < placement.end:
                return placement.image
        return None

    @cached_property
    def symbols(self) -> SymbolTable | None:
        """Every image's symbols, each tagged with its image's label."""
        tables = [img.symbols.with_origin(img.label) for img in self.images if img.symbols is not None]
        return SymbolTable.merge(tables) if tables else None


def place_images(images: Sequence[Image], chip: Chip) -> FlashLayout:
    """Check that ``images`` fit ``chip``'s main flash without overlapping.

    Every loaded byte must be in main flash: a bootloader image has no
    business writing SRAM at load time, and code linked for the 0x00000000
    boot alias must be linked at 0x08000000 to be flashed.
    """
    flash_range = f"0x{chip.flash_base:08X}-0x{chip.flash_end - 1:08X}"
    # Labels become symbol origins ("bootloader:main"), which must be unique.
    labels = [img.label for img in images if img.symbols is not None]
    if len(set(labels)) != len(labels):
        raise ImageError(
            f"two ELF images share the label {_first_duplicate(labels)!r}; give each its own label"
        )
    placements: list[Placement] = []
    for image in images:
        if not image.segments:
            raise ImageError(f"{image.path}: nothing to load")
        if image.size > chip.flash_size:
            raise ImageError(
                f"{image.path} holds {image.size} bytes, more than the {chip.flash_size_kib} KiB "
                f"({chip.flash_size} bytes) of {chip.name} flash"
            )
        for address, data in image.segments:
            end = address + len(data)
            if not chip.in_flash(address, len(data)):
                hint = ""
                if address < chip.flash_size:
                    hint = " (linked for the 0x00000000 boot alias? link it at 0x08000000)"
                elif chip.in_sram(address):
                    hint = " (a RAM-loaded section: give it a flash load address with AT> FLASH)"
                raise ImageError(
                    f"{image.path}: data at 0x{address:08X}-0x{end - 1:08X} is outside "
                    f"{chip.name} flash {flash_range}{hint}"
                )
            placements.append(Placement(address, end, image))
    placements.sort(key=lambda pl: pl.start)
    for before, after in zip(placements, placements[1:], strict=False):
        if after.start < before.end:
            if before.image is after.image:  # cannot happen after _merge_segments; be explicit anyway
                raise ImageError(f"{before.image.path}: overlaps itself at 0x{after.start:08X}")
            raise ImageError(
                f"{before.image.path} and {after.image.path} overlap at "
                f"0x{after.start:08X}-0x{min(before.end, after.end) - 1:08X}"
            )
    return FlashLayout(chip, tuple(images), tuple(placements), tuple(_ram_warnings(images, chip)))


def _ram_warnings(images: Sequence[Image], chip: Chip) -> list[str]:
    """Images whose variables (.data + .bss) need more SRAM than ``chip`` has.

    Such firmware links and flashes fine when built for a larger part; it then
    faults on the first access past the end of SRAM (docs/SEED_BOOTLOADER.md defect 6: a 32 KiB
    DFU buffer fits a 48 KiB STM32F103RC, not a 20 KiB STM32F103C8).
    """
    warnings = []
    for image in images:
        for start, end in image.run_ranges:
            if chip.sram_base <= start < chip.sram_base + _MAX_F1_SRAM and end > chip.sram_end:
                warnings.append(
                    f"{image.path}: RAM 0x{start:08X}-0x{end - 1:08X} ends past {chip.name} SRAM "
                    f"0x{chip.sram_base:08X}-0x{chip.sram_end - 1:08X} ({chip.sram_size // 1024} KiB)"
                )
    return warnings


def _first_duplicate(items: Sequence[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""


def flash_contents(images: Sequence[Image], chip: Chip) -> bytes:
    """Shortcut for the machine: the flat flash array of ``images`` on ``chip``."""
    return place_images(images, chip).data

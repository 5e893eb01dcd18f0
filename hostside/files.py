"""Firmware image files: raw .bin, Intel .hex, ELF, DfuSe .dfu and plain DFU suffix files.

Every reader returns a ``FirmwareImage``: address-sorted segments, contiguous
ones merged, overlaps rejected.  The DFU suffix (DFU 1.1 Appendix B) and the
DfuSe container (ST UM0391) are written the way dfu-util reads them: the suffix
CRC is the reflected CRC-32 (poly 0xEDB88320) started at 0xFFFFFFFF with *no*
final inversion, taken over the whole file except the CRC field itself
(dfu-util ``dfu_file.c``: ``crc32_byte`` from ``0xffffffff``) — i.e. the
bitwise complement of ``zlib.crc32``.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

DFU_SUFFIX_LENGTH = 16
DFUSE_BCD = 0x011A
DFU_BCD = 0x0100
_DFUSE_PREFIX = struct.Struct("<5sBIB")  # szSignature, bVersion, DFUImageSize, bTargets (11 bytes)
_TARGET_PREFIX = struct.Struct("<6sBI255sII")  # 'Target', bAlternateSetting, bTargetNamed, name, size, n (274)
_ELEMENT = struct.Struct("<II")  # dwElementAddress, dwElementSize


class FileFormatError(ValueError):
    """The file is not what it claims to be (truncated, bad magic, bad CRC, overlap)."""


@dataclass(frozen=True)
class ImageSegment:
    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass(frozen=True)
class FirmwareImage:
    """Sorted, non-overlapping, merged ``(address, bytes)`` segments."""

    segments: tuple[ImageSegment, ...] = ()

    @classmethod
    def from_segments(cls, segments: list[tuple[int, bytes]] | list[ImageSegment]) -> FirmwareImage:
        segs = sorted(
            (s if isinstance(s, ImageSegment) else ImageSegment(int(s[0]), bytes(s[1])) for s in segments),
            key=lambda s: s.address,
        )
        merged: list[ImageSegment] = []
        for s in segs:
            if not s.data:
                continue
            if s.address < 0 or s.end > 1 << 32:
                raise FileFormatError(f"segment at 0x{s.address:X} lies outside the 32-bit address space")
            if merged and s.address < merged[-1].end:
                raise FileFormatError(
                    f"segments overlap: 0x{s.address:08X} is inside "
                    f"0x{merged[-1].address:08X}-0x{merged[-1].end - 1:08X}")
            if merged and s.address == merged[-1].end:
                merged[-1] = ImageSegment(merged[-1].address, merged[-1].data + s.data)
            else:
                merged.append(s)
        return cls(tuple(merged))

    @property
    def start(self) -> int:
        return self.segments[0].address if self.segments else 0

    @property
    def end(self) -> int:
        return self.segments[-1].end if self.segments else 0

    @property
    def size(self) -> int:
        """Bytes of data (not the span)."""
        return sum(len(s.data) for s in self.segments)

    def to_bin(self, fill: int = 0xFF) -> bytes:
        """One flat block from ``start`` to ``end``, gaps filled."""
        out = bytearray([fill]) * (self.end - self.start)
        for s in self.segments:
            out[s.address - self.start:s.end - self.start] = s.data
        return bytes(out)


# -- CRC and DFU suffix -------------------------------------------------------------------
def dfu_crc32(data: bytes) -> int:
    """dfu-util's suffix CRC: CRC-32 from 0xFFFFFFFF without the final XOR."""
    return zlib.crc32(data) ^ 0xFFFFFFFF


@dataclass(frozen=True)
class DfuSuffix:
    bcd_device: int = 0xFFFF
    pid: int = 0xFFFF
    vid: int = 0xFFFF
    bcd_dfu: int = DFU_BCD
    length: int = DFU_SUFFIX_LENGTH
    crc: int = 0


def add_suffix(payload: bytes, vid: int = 0xFFFF, pid: int = 0xFFFF, bcd_device: int = 0xFFFF,
               bcd_dfu: int = DFU_BCD) -> bytes:
    """``payload`` followed by a 16-byte DFU suffix with its CRC."""
    body = payload + struct.pack("<HHHH3sB", bcd_device, pid, vid, bcd_dfu, b"UFD", DFU_SUFFIX_LENGTH)
    return body + struct.pack("<I", dfu_crc32(body))


def read_suffix(data: bytes) -> DfuSuffix | None:
    """The DFU suffix, ``None`` if there is no 'UFD' signature; ``FileFormatError`` if it is damaged."""
    if len(data) < DFU_SUFFIX_LENGTH or data[-8:-5] != b"UFD":
        return None
    bcd_device, pid, vid, bcd_dfu, _sig, length, crc = struct.unpack("<HHHH3sBI", data[-16:])
    if length < DFU_SUFFIX_LENGTH or length > len(data):
        raise FileFormatError(f"DFU suffix length {length} is invalid")
    actual = dfu_crc32(data[:-4])
    if actual != crc:
        raise FileFormatError(f"DFU suffix CRC mismatch: file says 0x{crc:08X}, contents give 0x{actual:08X}")
    return DfuSuffix(bcd_device, pid, vid, bcd_dfu, length, crc)


def strip_suffix(data: bytes) -> tuple[bytes, DfuSuffix | None]:
    suffix = read_suffix(data)
    if suffix is None:
        return data, None
    return data[:-suffix.length], suffix


# -- DfuSe container (UM0391) ---------------------------------------------------------------
@dataclass
class DfuSeTarget:
    alt: int
    name: str = ""
    elements: list[ImageSegment] = field(default_factory=list)

    def image(self) -> FirmwareImage:
        return FirmwareImage.from_segments(list(self.elements))


@dataclass
class DfuSeFile:
    targets: list[DfuSeTarget]
    vid: int = 0xFFFF
    pid: int = 0xFFFF
    bcd_device: int = 0xFFFF


def write_dfuse(dfu: DfuSeFile) -> bytes:
    """Serialise a DfuSe file: prefix, targets with elements, suffix with bcdDFU 0x011A."""
    body = bytearray()
    for t in dfu.targets:
        elems = b"".join(_ELEMENT.pack(e.address, len(e.data)) + e.data for e in t.elements)
        name = t.name.encode("latin-1")
        if len(name) > 254:
            raise FileFormatError("DfuSe target name longer than 254 bytes")
        body += _TARGET_PREFIX.pack(b"Target", t.alt, 1 if t.name else 0, name, len(elems), len(t.elements))
        body += elems
    prefix = _DFUSE_PREFIX.pack(b"DfuSe", 0x01, _DFUSE_PREFIX.size + len(body), len(dfu.targets))
    return add_suffix(prefix + bytes(body), dfu.vid, dfu.pid, dfu.bcd_device, DFUSE_BCD)


def parse_dfuse(data: bytes) -> DfuSeFile:
    """Parse a DfuSe file; ``FileFormatError`` on bad magic, CRC or a truncated file."""
    if len(data) < _DFUSE_PREFIX.size + DFU_SUFFIX_LENGTH:
        raise FileFormatError("file too short for a DfuSe file")
    if data[:5] != b"DfuSe":
        raise FileFormatError("no 'DfuSe' signature")
    suffix = read_suffix(data)
    if suffix is None:
        raise FileFormatError("DfuSe file has no DFU suffix (truncated?)")
    if suffix.bcd_dfu != DFUSE_BCD:
        raise FileFormatError(f"DfuSe file suffix has bcdDFU 0x{suffix.bcd_dfu:04X}, expected 0x011A")
    body = data[:-suffix.length]
    _sig, version, image_size, n_targets = _DFUSE_PREFIX.unpack_from(body, 0)
    if version != 0x01:
        raise FileFormatError(f"DfuSe format version {version} not supported")
    if image_size != len(body):
        raise FileFormatError(f"DfuSe image size {image_size} does not match the {len(body)} bytes present")
    pos = _DFUSE_PREFIX.size
    targets: list[DfuSeTarget] = []
    for i in range(n_targets):
        if pos + _TARGET_PREFIX.size > len(body):
            raise FileFormatError(f"DfuSe file truncated in the prefix of target {i}")
        sig, alt, named, raw_name, size, n_elem = _TARGET_PREFIX.unpack_from(body, pos)
        if sig != b"Target":
            raise FileFormatError(f"target {i} has no 'Target' signature")
        pos += _TARGET_PREFIX.size
        name = raw_name.split(b"\0", 1)[0].decode("latin-1") if named else ""
        end = pos + size
        if end > len(body):
            raise FileFormatError(f"DfuSe file truncated in target {i}")
        elements: list[ImageSegment] = []
        for j in range(n_elem):
            if pos + _ELEMENT.size > end:
                raise FileFormatError(f"DfuSe file truncated in element {j} of target {i}")
            addr, esize = _ELEMENT.unpack_from(body, pos)
            pos += _ELEMENT.size
            if pos + esize > end:
                raise FileFormatError(f"element {j} of target {i} is larger than its target")
            elements.append(ImageSegment(addr, bytes(body[pos:pos + esize])))
            pos += esize
        if pos != end:
            raise FileFormatError(f"target {i} size does not match its elements")
        targets.append(DfuSeTarget(alt, name, elements))
    if pos != len(body):
        raise FileFormatError(f"{len(body) - pos} unexpected bytes after the last DfuSe target")
    return DfuSeFile(targets, suffix.vid, suffix.pid, suffix.bcd_device)


# -- Intel HEX ----------------------------------------------------------------------------------
def parse_hex(text: str) -> FirmwareImage:
    from intelhex import IntelHex, IntelHexError

    if ":00000001FF" not in text.upper():
        raise FileFormatError("Intel HEX file has no end-of-file record (truncated?)")
    ih = IntelHex()
    try:
        ih.loadhex(io.StringIO(text))
    except IntelHexError as exc:
        raise FileFormatError(f"bad Intel HEX: {exc}") from exc
    except ValueError as exc:  # non-hex characters in a record
        raise FileFormatError(f"bad Intel HEX: {exc}") from exc
    segs = [(a, ih.tobinstr(start=a, end=b - 1)) for a, b in ih.segments()]
    return FirmwareImage.from_segments(segs)


def write_hex(image: FirmwareImage) -> str:
    from intelhex import IntelHex

    ih = IntelHex()
    for s in image.segments:
        ih.puts(s.address, s.data)
    out = io.StringIO()
    ih.write_hex_file(out, write_start_addr=False)
    return out.getvalue()


# -- ELF ----------------------------------------------------------------------------------------
def parse_elf(data: bytes) -> FirmwareImage:
    """PT_LOAD segments at their physical (load) address, ``p_filesz`` bytes each (.bss excluded)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        segs = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_filesz"] == 0:
                continue
            payload = seg.data()[: seg["p_filesz"]]
            if len(payload) != seg["p_filesz"]:
                raise FileFormatError("ELF file truncated inside a PT_LOAD segment")
            segs.append((seg["p_paddr"], payload))
    except (ELFError, struct.error) as exc:
        raise FileFormatError(f"bad ELF file: {exc}") from exc
    if not segs:
        raise FileFormatError("ELF file has no loadable data")
    return FirmwareImage.from_segments(segs)


# -- detection --------------------------------------------------------------------------------------
@dataclass
class LoadedFile:
    """What ``load_file`` found: an image, and the container details that matter for download."""

    kind: str  # "bin", "hex", "elf", "dfuse", "dfu-suffix"
    image: FirmwareImage | None  # None for a raw file without an address
    raw: bytes = b""  # payload of bin / suffix files
    suffix: DfuSuffix | None = None
    dfuse: DfuSeFile | None = None


def load_file(path: str | Path, address: int | None = None) -> LoadedFile:
    """Read ``path`` by content (ELF magic, DfuSe prefix, HEX records), falling back to raw binary."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {p}: {exc.strerror}") from exc
    return load_bytes(data, address=address, name=p.name)


def load_bytes(data: bytes, address: int | None = None, name: str = "") -> LoadedFile:
    if data[:4] == b"\x7fELF":
        return LoadedFile("elf", parse_elf(data))
    if data[:5] == b"DfuSe":
        dfu = parse_dfuse(data)
        segs = [e for t in dfu.targets for e in t.elements]
        return LoadedFile("dfuse", FirmwareImage.from_segments(segs), suffix=read_suffix(data), dfuse=dfu)
    lower = name.lower()
    if lower.endswith((".hex", ".ihex", ".ihx")) or (data[:1] == b":" and _looks_like_hex(data)):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FileFormatError("Intel HEX file contains non-ASCII bytes") from exc
        return LoadedFile("hex", parse_hex(text))
    payload, suffix = strip_suffix(data)
    kind = "dfu-suffix" if suffix else "bin"
    image = FirmwareImage.from_segments([(address, payload)]) if address is not None else None
    return LoadedFile(kind, image, raw=payload, suffix=suffix)


def _looks_like_hex(data: bytes) -> bool:
    head = data[:64].split(b"\n", 1)[0].strip()
    return len(head) >= 11 and all(c in b"0123456789abcdefABCDEF" for c in head[1:])


def save_upload(path: str | Path, address: int, data: bytes, vid: int = 0xFFFF, pid: int = 0xFFFF,
                alt: int = 0, target_name: str = "") -> str:
    """Write uploaded memory by extension: .hex, .dfu (DfuSe), anything else raw. Returns the kind."""
    p = Path(path)
    ext = p.suffix.lower()
    image = FirmwareImage.from_segments([(address, data)])
    if ext in (".hex", ".ihex", ".ihx"):
        p.write_text(write_hex(image))
        return "hex"
    if ext == ".dfu":
        p.write_bytes(write_dfuse(DfuSeFile([DfuSeTarget(alt, target_name, list(image.segments))], vid, pid)))
        return "dfuse"
    p.write_bytes(data)
    return "bin"

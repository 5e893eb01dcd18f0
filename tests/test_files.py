"""Firmware file formats: bin, Intel HEX, ELF, DfuSe .dfu and the DFU suffix."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostside.files import (
    DfuSeFile,
    DfuSeTarget,
    FileFormatError,
    FirmwareImage,
    ImageSegment,
    add_suffix,
    dfu_crc32,
    load_bytes,
    load_file,
    parse_dfuse,
    parse_elf,
    parse_hex,
    read_suffix,
    save_upload,
    strip_suffix,
    write_dfuse,
    write_hex,
)


def _elf32(segments: list[tuple[int, int, bytes, int]]) -> bytes:
    """A little-endian ARM ELF32 executable with PT_LOAD (vaddr, paddr, data, memsz) segments."""
    ehsize, phentsize = 52, 32
    data_off = ehsize + phentsize * len(segments)
    phdrs, blobs = b"", b""
    for vaddr, paddr, data, memsz in segments:
        phdrs += struct.pack("<IIIIIIII", 1, data_off + len(blobs), vaddr, paddr, len(data), memsz, 5, 4)
        blobs += data
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 40, 1, 0, ehsize, 0, 0x5000200, ehsize, phentsize,
                                 len(segments), 40, 0, 0)
    return header + phdrs + blobs


# -- DFU suffix CRC --------------------------------------------------------------------------------
def test_suffix_crc_is_crc32_without_final_inversion_like_dfu_util() -> None:
    # CRC-32 check value of "123456789" is 0xCBF43926; dfu-util keeps the un-inverted register.
    assert dfu_crc32(b"123456789") == 0xCBF43926 ^ 0xFFFFFFFF


def test_suffix_fields_sit_where_dfu_util_reads_them() -> None:
    raw = add_suffix(b"abc", vid=0x0483, pid=0xDF11, bcd_device=0x0200, bcd_dfu=0x011A)
    sfx = raw[-16:]
    assert sfx[8:11] == b"UFD" and sfx[11] == 16
    assert struct.unpack_from("<HHHH", sfx) == (0x0200, 0xDF11, 0x0483, 0x011A)
    assert struct.unpack_from("<I", sfx, 12)[0] == dfu_crc32(raw[:-4])


@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_suffix_round_trips(payload: bytes, vid: int, pid: int, bcd: int) -> None:
    body, sfx = strip_suffix(add_suffix(payload, vid, pid, bcd))
    assert body == payload
    assert sfx is not None and (sfx.vid, sfx.pid, sfx.bcd_device) == (vid, pid, bcd)


@given(st.binary(max_size=200), st.data())
def test_any_flipped_bit_breaks_the_suffix_crc(payload: bytes, data: st.DataObject) -> None:
    raw = bytearray(add_suffix(payload, 0x0483, 0xDF11))
    pos = data.draw(st.integers(0, len(raw) - 1).filter(lambda i: not len(raw) - 8 <= i < len(raw) - 5))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(FileFormatError):
        read_suffix(bytes(raw))


def test_file_without_ufd_signature_has_no_suffix() -> None:
    assert read_suffix(b"\x00" * 64) is None


# -- DfuSe -------------------------------------------------------------------------------------------
_names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_elements = st.lists(st.builds(ImageSegment, st.integers(0, 0xFFFF_0000), st.binary(min_size=0, max_size=64)),
                     max_size=4)
_targets = st.lists(st.builds(DfuSeTarget, st.integers(0, 255), _names, _elements), min_size=1, max_size=3)


@given(_targets, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_dfuse_file_round_trips(targets: list[DfuSeTarget], vid: int, pid: int) -> None:
    raw = write_dfuse(DfuSeFile(targets, vid, pid, 0x0200))
    back = parse_dfuse(raw)
    assert back.targets == targets
    assert (back.vid, back.pid, back.bcd_device) == (vid, pid, 0x0200)
    assert read_suffix(raw).bcd_dfu == 0x011A  # type: ignore[union-attr]


@settings(max_examples=60)
@given(_targets, st.data())
def test_truncated_dfuse_file_is_rejected(targets: list[DfuSeTarget], data: st.DataObject) -> None:
    raw = write_dfuse(DfuSeFile(targets))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(FileFormatError):
        parse_dfuse(raw[:cut])


@settings(max_examples=60)
@given(_targets, st.data())
def test_corrupted_byte_in_dfuse_file_fails_the_crc(targets: list[DfuSeTarget], data: st.DataObject) -> None:
    raw = bytearray(write_dfuse(DfuSeFile(targets)))
    pos = data.draw(st.integers(5, len(raw) - 17))
    raw[pos] ^= 0x5A
    with pytest.raises(FileFormatError):
        parse_dfuse(bytes(raw))


def test_dfuse_prefix_and_target_layout_match_um0391() -> None:
    raw = write_dfuse(DfuSeFile([DfuSeTarget(0, "ST...", [ImageSegment(0x08008000, b"\x01\x02\x03\x04")])]))
    assert raw[:6] == b"DfuSe\x01"
    assert struct.unpack_from("<I", raw, 6)[0] == len(raw) - 16  # DFUImageSize excludes the suffix
    assert raw[10] == 1 and raw[11:17] == b"Target"
    assert raw[17] == 0 and raw[18] == 1  # bAlternateSetting, bTargetNamed
    assert raw[22:27] == b"ST..."
    assert struct.unpack_from("<II", raw, 277) == (12, 1)  # dwTargetSize, dwNbElements
    assert struct.unpack_from("<II", raw, 285) == (0x08008000, 4)


def test_dfuse_file_with_wrong_signature_is_rejected_even_with_a_valid_crc() -> None:
    good = write_dfuse(DfuSeFile([DfuSeTarget(0, "", [ImageSegment(0x08000000, b"xy")])]))
    body = bytearray(good[:-16])
    body[11:17] = b"Tarxet"
    bad = add_suffix(bytes(body), bcd_dfu=0x011A)
    with pytest.raises(FileFormatError, match="Target"):
        parse_dfuse(bad)


def test_dfuse_file_needs_the_dfuse_magic() -> None:
    with pytest.raises(FileFormatError, match="DfuSe"):
        parse_dfuse(add_suffix(b"DfuSx" + bytes(40), bcd_dfu=0x011A))


# -- Intel HEX -------------------------------------------------------------------------------------
_segments = st.lists(st.tuples(st.integers(0, 0xFFFF) .map(lambda a: 0x0800_0000 + a * 64),
                               st.binary(min_size=1, max_size=60)), max_size=5)


def _image(segs: list[tuple[int, bytes]]) -> FirmwareImage:
    # keep the segments apart so the strategy never produces overlaps
    return FirmwareImage.from_segments([(a + i * 0x100_0000, d) for i, (a, d) in enumerate(sorted(segs))])


@given(_segments)
def test_intel_hex_round_trips(segs: list[tuple[int, bytes]]) -> None:
    img = _image(segs)
    assert parse_hex(write_hex(img)) == img


def test_hex_without_end_of_file_record_is_truncated() -> None:
    text = write_hex(FirmwareImage.from_segments([(0x08000000, bytes(range(40)))]))
    with pytest.raises(FileFormatError, match="end-of-file"):
        parse_hex(text.replace(":00000001FF", ""))


def test_hex_with_bad_record_checksum_is_rejected() -> None:
    lines = write_hex(FirmwareImage.from_segments([(0x08000000, bytes(range(40)))])).splitlines()
    rec = lines[1]
    lines[1] = rec[:-2] + f"{(int(rec[-2:], 16) + 1) & 0xFF:02X}"
    with pytest.raises(FileFormatError):
        parse_hex("\n".join(lines) + "\n")


# -- ELF ----------------------------------------------------------------------------------------------
def test_elf_uses_physical_addresses_and_file_size_only() -> None:
    elf = _elf32([(0x08008000, 0x08008000, b"\xAA" * 16, 16),
                  (0x20000000, 0x08008010, b"\xBB" * 8, 64)])  # .data: LMA in flash, plus .bss
    img = parse_elf(elf)
    assert img.segments == (ImageSegment(0x08008000, b"\xAA" * 16 + b"\xBB" * 8),)


def test_elf_skips_segments_without_file_contents() -> None:
    elf = _elf32([(0x08000000, 0x08000000, b"\x01\x02", 2), (0x20000000, 0x20000000, b"", 512)])
    assert parse_elf(elf).size == 2


def test_truncated_elf_is_rejected() -> None:
    elf = _elf32([(0x08000000, 0x08000000, b"\x01" * 64, 64)])
    with pytest.raises(FileFormatError):
        parse_elf(elf[:-10])


# -- FirmwareImage and detection ---------------------------------------------------------------------
def test_image_sorts_and_merges_contiguous_segments() -> None:
    img = FirmwareImage.from_segments([(0x10, b"cd"), (0x0, b"ab"), (0x2, b"xy")])
    assert img.segments == (ImageSegment(0x0, b"abxy"), ImageSegment(0x10, b"cd"))


def test_overlapping_segments_are_rejected() -> None:
    with pytest.raises(FileFormatError, match="overlap"):
        FirmwareImage.from_segments([(0x0, b"abcd"), (0x3, b"z")])


def test_to_bin_fills_gaps_with_erased_flash() -> None:
    assert FirmwareImage.from_segments([(0, b"a"), (3, b"b")]).to_bin() == b"a\xff\xffb"


def test_raw_binary_needs_an_address_to_become_an_image() -> None:
    assert load_bytes(b"\x01\x02", None, "a.bin").image is None
    assert load_bytes(b"\x01\x02", 0x08008000, "a.bin").image.start == 0x08008000  # type: ignore[union-attr]


def test_binary_with_plain_dfu_suffix_is_stripped() -> None:
    loaded = load_bytes(add_suffix(b"firmware", 0x1234, 0x5678), 0x08000000, "fw.dfu")
    assert loaded.kind == "dfu-suffix" and loaded.raw == b"firmware"
    assert loaded.suffix is not None and loaded.suffix.vid == 0x1234


def test_files_are_recognised_by_content(tmp_path: Path) -> None:
    img = FirmwareImage.from_segments([(0x08008000, b"\x10" * 32)])
    (tmp_path / "a.hex").write_text(write_hex(img))
    (tmp_path / "a.elf").write_bytes(_elf32([(0x08008000, 0x08008000, b"\x10" * 32, 32)]))
    (tmp_path / "a.dfu").write_bytes(write_dfuse(DfuSeFile([DfuSeTarget(0, "", list(img.segments))])))
    kinds = {p.suffix: load_file(p) for p in tmp_path.iterdir()}
    assert {k: v.kind for k, v in kinds.items()} == {".hex": "hex", ".elf": "elf", ".dfu": "dfuse"}
    assert all(v.image == img for v in kinds.values())


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "nope.bin")


@pytest.mark.parametrize(("name", "kind"), [("up.bin", "bin"), ("up.hex", "hex"), ("up.dfu", "dfuse")])
def test_uploads_are_saved_by_extension_and_read_back(tmp_path: Path, name: str, kind: str) -> None:
    assert save_upload(tmp_path / name, 0x08000000, b"\x12\x34" * 10, 0x0483, 0xDF11) == kind
    loaded = load_file(tmp_path / name, 0x08000000)
    assert loaded.image == FirmwareImage.from_segments([(0x08000000, b"\x12\x34" * 10)])

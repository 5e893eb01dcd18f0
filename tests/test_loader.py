"""Image loading (ELF / Intel HEX / raw binary) and placement in flash.

The ELF, HEX and BIN files under tests/data/loader/ are built by the Makefile
there (see its header); app.bin and app.hex are objcopy's view of app.elf and
serve as the oracle for where each byte belongs.  Malformed and foreign-machine
ELF files are written byte by byte by :func:`minimal_elf` below.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from intelhex import IntelHex

from emulator.core.chips import STM32F103C8, STM32F103RC
from emulator.core.loader import (
    ImageError,
    load_app_spec,
    load_image,
    parse_app_spec,
    place_images,
)

DATA = Path(__file__).parent / "data" / "loader"
APP_ELF = DATA / "app.elf"
APP_BIN = DATA / "app.bin"
APP_HEX = DATA / "app.hex"
BOOT_ELF = DATA / "boot.elf"

APP_BASE = 0x0800_8000
# From `arm-none-eabi-readelf -lS tests/data/loader/app.elf`: the .data
# initialiser (counter = 0x12345678) is loaded right after .text in flash.
APP_DATA_LMA = 0x0800_80EC
APP_ENTRY = 0x0800_809D  # Reset_Handler | 1

EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV = 40, 62, 183, 243


def minimal_elf(
    machine: int = EM_ARM,
    elfclass: int = 32,
    little: bool = True,
    segments: tuple[tuple[int, int, bytes, int], ...] = (),
) -> bytes:
    """An executable ELF with only a header and PT_LOAD program headers.

    ``segments`` are (p_vaddr, p_paddr, file bytes, p_memsz).  No section
    headers, so the loader must work from segments alone.
    """
    e = "<" if little else ">"
    ident = b"\x7fELF" + bytes([1 if elfclass == 32 else 2, 1 if little else 2, 1, 0]) + bytes(8)
    if elfclass == 64:
        header = ident + struct.pack(e + "HHIQQQIHHHHHH", 2, machine, 1, 0x1000, 0, 0, 0, 64, 56, 0, 64, 0, 0)
        return header
    phoff = 52
    offset = phoff + 32 * len(segments)
    phdrs = b""
    payload = b""
    for vaddr, paddr, data, memsz in segments:
        phdrs += struct.pack(e + "8I", 1, offset + len(payload), vaddr, paddr, len(data), memsz, 5, 4)
        payload += data
    header = ident + struct.pack(
        e + "HHIIIIIHHHHHH", 2, machine, 1, 0x0800_0001, phoff if segments else 0, 0, 0x0500_0200, 52, 32,
        len(segments), 40, 0, 0,
    )  # fmt: skip
    return header + phdrs + payload


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


# -- ELF ----------------------------------------------------------------------------------
def test_elf_data_initialiser_is_loaded_at_its_flash_load_address() -> None:
    image = load_image(APP_ELF)
    assert image.word(APP_DATA_LMA) == 0x1234_5678
    assert all(address < 0x2000_0000 for address, _ in image.segments)


def test_elf_contents_match_objcopy_binary() -> None:
    image = load_image(APP_ELF)
    assert image.segments == [(APP_BASE, APP_BIN.read_bytes())]


def test_elf_headers_inside_the_first_segment_are_not_loaded() -> None:
    image = load_image(DATA / "hdr.elf")
    # hdr.ld places the vector table right after the headers (0x08008074).
    assert image.segments == [(0x0800_8074, (DATA / "hdr.bin").read_bytes())]


def test_elf_entry_is_the_elf_entry_point() -> None:
    assert load_image(APP_ELF).entry == APP_ENTRY


def test_elf_keeps_its_symbol_table() -> None:
    symbols = load_image(APP_ELF).symbols
    assert symbols is not None
    assert symbols.address_of("Reset_Handler") == APP_ENTRY & ~1


def test_elf_kind_and_path_are_recorded() -> None:
    image = load_image(APP_ELF)
    assert (image.kind, image.path) == ("elf", APP_ELF)


def test_elf_segments_are_loaded_at_paddr_not_vaddr(tmp_path: Path) -> None:
    elf = minimal_elf(
        segments=((0x2000_0000, 0x0800_0100, b"DATA", 8), (0x0800_0000, 0x0800_0000, b"T" * 16, 16))
    )
    image = load_image(write(tmp_path, "lma.elf", elf))
    assert image.segments == [(0x0800_0000, b"T" * 16), (0x0800_0100, b"DATA")]


def test_elf_bss_only_segment_loads_nothing(tmp_path: Path) -> None:
    elf = minimal_elf(segments=((0x0800_0000, 0x0800_0000, b"T" * 8, 8), (0x2000_0000, 0x2000_0000, b"", 64)))
    image = load_image(write(tmp_path, "bss.elf", elf))
    assert image.segments == [(0x0800_0000, b"T" * 8)]


def test_adjacent_elf_segments_are_merged(tmp_path: Path) -> None:
    elf = minimal_elf(
        segments=((0x0800_0000, 0x0800_0000, b"A" * 8, 8), (0x2000_0000, 0x0800_0008, b"B" * 4, 4))
    )
    image = load_image(write(tmp_path, "adjacent.elf", elf))
    assert image.segments == [(0x0800_0000, b"A" * 8 + b"B" * 4)]


def test_elf_segments_that_overlap_each_other_are_rejected(tmp_path: Path) -> None:
    elf = minimal_elf(
        segments=((0x0800_0000, 0x0800_0000, b"A" * 8, 8), (0x0800_0004, 0x0800_0004, b"B" * 8, 8))
    )
    with pytest.raises(ImageError, match=r"overlaps itself at 0x08000004-0x08000007"):
        load_image(write(tmp_path, "self.elf", elf))


def test_elf_without_loadable_segments_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.elf", minimal_elf())
    with pytest.raises(ImageError, match=r"empty\.elf: ELF has no loadable segments"):
        load_image(path)


@pytest.mark.parametrize(
    ("machine", "elfclass", "described"),
    [(EM_X86_64, 64, "x86-64"), (EM_AARCH64, 64, "AArch64"), (EM_RISCV, 32, "RISC-V"), (8, 32, "MIPS")],
)
def test_elf_for_another_machine_is_rejected_naming_it(
    tmp_path: Path, machine: int, elfclass: int, described: str
) -> None:
    path = write(tmp_path, "foreign.elf", minimal_elf(machine, elfclass))
    with pytest.raises(ImageError, match=rf"foreign\.elf is an ELF for {described}.*, not ARM$"):
        load_image(path)


def test_host_x86_64_program_is_rejected_as_wrong_architecture() -> None:
    with pytest.raises(ImageError) as info:
        load_image(DATA / "x86_64.elf")
    assert str(info.value) == f"{DATA / 'x86_64.elf'} is an ELF for x86-64, not ARM"


def test_big_endian_arm_elf_is_rejected() -> None:
    with pytest.raises(ImageError, match=r"armbe\.elf is a big-endian ARM ELF"):
        load_image(DATA / "armbe.elf")


@pytest.mark.parametrize("length", [4, 5, 16, 30, 52, 0x1000, 0x2002, -1])
def test_truncated_elf_is_reported_as_corrupt(tmp_path: Path, length: int) -> None:
    path = write(tmp_path, "cut.elf", APP_ELF.read_bytes()[:length])
    with pytest.raises(ImageError, match=r"cut\.elf: corrupt or truncated ELF"):
        load_image(path)


def test_elf_segment_reaching_past_the_end_of_file_is_reported_as_truncated(tmp_path: Path) -> None:
    elf = minimal_elf(segments=((0x0800_0000, 0x0800_0000, b"A" * 64, 64),))
    path = write(tmp_path, "short.elf", elf[:-16])
    with pytest.raises(ImageError, match=r"short\.elf: corrupt or truncated ELF: segment at 0x08000000"):
        load_image(path)


def test_elf_with_garbage_after_the_magic_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, "junk.elf", b"\x7fELF" + b"\xa5" * 200)
    with pytest.raises(ImageError, match=r"junk\.elf: corrupt or truncated ELF"):
        load_image(path)


def test_elf_with_matching_base_is_accepted() -> None:
    assert load_image(APP_ELF, APP_BASE).start == APP_BASE


def test_elf_with_a_different_base_is_rejected() -> None:
    with pytest.raises(ImageError, match=r"starts at 0x08008000, not at the requested 0x08000000"):
        load_image(APP_ELF, 0x0800_0000)


# -- Intel HEX ----------------------------------------------------------------------------
def test_hex_contents_match_the_elf() -> None:
    assert load_image(APP_HEX).segments == load_image(APP_ELF).segments


def test_hex_start_linear_address_record_gives_the_entry_point() -> None:
    assert load_image(APP_HEX).entry == APP_ENTRY


def test_hex_has_no_symbols() -> None:
    image = load_image(APP_HEX)
    assert (image.kind, image.symbols) == ("hex", None)


def test_hex_with_a_byte_order_mark_and_crlf_lines_loads(tmp_path: Path) -> None:
    text = "\r\n".join(APP_HEX.read_text().splitlines()) + "\r\n"
    path = write(tmp_path, "bom.hex", b"\xef\xbb\xbf" + text.encode())
    assert load_image(path).segments == load_image(APP_ELF).segments


def test_hex_without_end_of_file_record_is_reported_as_truncated(tmp_path: Path) -> None:
    lines = APP_HEX.read_text().splitlines()
    path = write(tmp_path, "cut.hex", "\n".join(lines[:-1]) + "\n")
    with pytest.raises(ImageError, match=r"cut\.hex: corrupt or truncated Intel HEX"):
        load_image(path)


def test_hex_cut_in_the_middle_of_a_record_is_reported_as_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "cut.hex", APP_HEX.read_text()[:200])
    with pytest.raises(ImageError, match=r"cut\.hex: corrupt or truncated Intel HEX"):
        load_image(path)


def test_hex_with_a_bad_checksum_is_reported_as_corrupt(tmp_path: Path) -> None:
    lines = APP_HEX.read_text().splitlines()
    lines[1] = lines[1][:-2] + ("00" if lines[1][-2:] != "00" else "01")
    path = write(tmp_path, "sum.hex", "\n".join(lines) + "\n")
    with pytest.raises(ImageError, match=r"sum\.hex: corrupt Intel HEX: .*line 2.*checksum"):
        load_image(path)


def test_hex_with_non_hex_digits_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, "junk.hex", ":hello world\n:00000001FF\n")
    with pytest.raises(ImageError, match=r"junk\.hex: corrupt Intel HEX"):
        load_image(path)


def test_hex_with_binary_garbage_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, "bin.hex", b":\xff\xfe\x00")
    with pytest.raises(ImageError, match=r"bin\.hex: corrupt Intel HEX: non-ASCII"):
        load_image(path)


def test_hex_writing_one_address_twice_is_reported_as_corrupt(tmp_path: Path) -> None:
    lines = APP_HEX.read_text().splitlines()
    path = write(tmp_path, "twice.hex", "\n".join(lines[:3] + [lines[1]] + lines[3:]) + "\n")
    with pytest.raises(ImageError, match=r"twice\.hex: corrupt Intel HEX: .*overlap"):
        load_image(path)


def test_hex_with_only_an_end_of_file_record_has_nothing_to_load(tmp_path: Path) -> None:
    path = write(tmp_path, "nothing.hex", ":00000001FF\n")
    with pytest.raises(ImageError, match=r"nothing\.hex: Intel HEX file has no data records"):
        load_image(path)


@settings(max_examples=40, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(st.integers(0, 0x3_FFF0), st.binary(min_size=1, max_size=64)), min_size=1, max_size=8
    )
)
def test_hex_round_trips_any_set_of_chunks(tmp_path_factory: pytest.TempPathFactory, chunks) -> None:
    expected: dict[int, int] = {}
    ih = IntelHex()
    for offset, data in chunks:
        for i, byte in enumerate(data):
            expected[0x0800_0000 + offset + i] = byte
    for address, byte in expected.items():
        ih[address] = byte
    path = tmp_path_factory.mktemp("hex") / "random.hex"
    ih.write_hex_file(str(path))
    image = load_image(path)
    loaded = {address + i: byte for address, data in image.segments for i, byte in enumerate(data)}
    assert loaded == expected
    # Segments are maximal runs: no two touch.
    ends = [address + len(data) for address, data in image.segments]
    assert all(end < nxt for end, (nxt, _) in zip(ends, image.segments[1:], strict=False))


# -- raw binary ---------------------------------------------------------------------------
def test_bin_defaults_to_the_start_of_flash() -> None:
    image = load_image(APP_BIN)
    assert (image.kind, image.start) == ("bin", 0x0800_0000)


def test_bin_is_placed_at_the_given_base() -> None:
    image = load_image(APP_BIN, APP_BASE)
    assert image.segments == load_image(APP_ELF).segments


def test_bin_has_no_entry_point_or_symbols() -> None:
    image = load_image(APP_BIN)
    assert (image.entry, image.symbols) == (None, None)


@settings(max_examples=50, deadline=None)
@given(
    content=st.binary(min_size=1, max_size=256).filter(
        lambda b: not b.startswith(b"\x7fELF") and b[:1] not in b": \t\r\n\xef"
    ),
    base=st.integers(0x0800_0000 // 4, 0x0803_FF00 // 4).map(lambda n: n * 4),
)
def test_bin_loads_any_content_verbatim_at_its_base(
    tmp_path_factory: pytest.TempPathFactory, content, base
) -> None:
    path = tmp_path_factory.mktemp("bin") / "any.bin"
    path.write_bytes(content)
    assert load_image(path, base).segments == [(base, content)]


@pytest.mark.parametrize("base", [0x0800_0001, 0x0800_0002, 0x0800_8003])
def test_bin_at_an_address_that_is_not_word_aligned_is_refused(tmp_path: Path, base: int) -> None:
    path = write(tmp_path, "app.bin", b"\x00\xc0\x00\x20\x35\x01\x00\x08")
    with pytest.raises(ImageError, match=f"0x{base:08X} is not word-aligned"):
        load_image(path, base)


def test_format_is_detected_by_content_not_by_file_name(tmp_path: Path) -> None:
    hex_named_bin = write(tmp_path, "app.bin", APP_HEX.read_bytes())
    elf_named_hex = write(tmp_path, "app.hex", APP_ELF.read_bytes())
    assert load_image(hex_named_bin).kind == "hex"
    assert load_image(elf_named_hex).kind == "elf"


def test_vector_table_address_is_the_lowest_flash_address_loaded() -> None:
    assert load_image(APP_ELF).vector_table_address == APP_BASE
    assert load_image(APP_BIN, 0x0800_4000).vector_table_address == 0x0800_4000


def test_word_reads_the_initial_stack_pointer_of_the_vector_table() -> None:
    image = load_image(APP_ELF)
    assert image.word(image.vector_table_address) == 0x2000_5000  # _estack in app.ld


def test_word_outside_the_image_is_none() -> None:
    assert load_image(APP_ELF).word(0x0800_0000) is None


def test_label_defaults_to_the_file_stem() -> None:
    assert load_image(APP_ELF).label == "app"
    assert load_image(APP_ELF, label="application").label == "application"


# -- file errors --------------------------------------------------------------------------
def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "nope.bin")
    assert str(info.value) == f"{tmp_path / 'nope.bin'}: no such file"


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "locked.bin", b"\x00" * 4)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # Tests may run as root, which chmod cannot lock out; fail the read itself.
    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: cannot read: Permission denied"


def test_empty_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"empty\.bin: file is empty"):
        load_image(write(tmp_path, "empty.bin", b""))


@pytest.mark.parametrize(
    "content",
    [b"", b"\x7fELF\x01", b"\x7fELF" + b"\x00" * 60, ":0\n:00000001FF\n", ":00000001FF\n"],
)
def test_every_error_message_is_one_line(tmp_path: Path, content: bytes | str) -> None:
    with pytest.raises(ImageError) as info:
        load_image(write(tmp_path, "bad.img", content))
    assert "\n" not in str(info.value)
    assert "bad.img" in str(info.value)


# -- app specs ----------------------------------------------------------------------------
def test_app_spec_with_address_is_split() -> None:
    assert parse_app_spec("app.bin@0x08008000") == (Path("app.bin"), 0x0800_8000)


def test_app_spec_without_address_has_none() -> None:
    assert parse_app_spec("build/app.elf") == (Path("build/app.elf"), None)


@pytest.mark.parametrize(
    ("text", "value"), [("0x0800_8000", 0x0800_8000), ("134250496", 0x0800_8000), ("0X8008000", 0x0800_8000)]
)
def test_app_spec_address_accepts_python_integer_syntax(text: str, value: int) -> None:
    assert parse_app_spec(f"app.bin@{text}") == (Path("app.bin"), value)


def test_at_sign_inside_a_directory_name_is_part_of_the_path() -> None:
    assert parse_app_spec("builds@v2/app.bin") == (Path("builds@v2/app.bin"), None)


@pytest.mark.parametrize(
    "spec",
    [
        "app.bin@",
        "app.bin@zz",
        "app.bin@0x",
        "app.bin@08008000",
        "@0x08008000",
        "app.bin@0x100000000",
        "app.bin@-1",
    ],
)
def test_bad_app_spec_is_rejected_with_one_line(spec: str) -> None:
    with pytest.raises(ImageError) as info:
        parse_app_spec(spec)
    assert spec in str(info.value) and "\n" not in str(info.value)


def test_empty_app_spec_is_rejected() -> None:
    with pytest.raises(ImageError, match="empty image name"):
        parse_app_spec("")


@given(path=st.from_regex(r"[A-Za-z0-9_.\-/]{1,20}", fullmatch=True), address=st.integers(0, 0xFFFF_FFFF))
def test_app_spec_round_trips_any_path_and_address(path: str, address: int) -> None:
    assert parse_app_spec(f"{path}@0x{address:08X}") == (Path(path), address)


def test_load_app_spec_places_a_binary_at_its_address() -> None:
    image = load_app_spec(f"{APP_BIN}@0x08008000", label="app")
    assert (image.start, image.label) == (APP_BASE, "app")


# -- placing in flash ---------------------------------------------------------------------
def test_bootloader_and_application_are_placed_side_by_side() -> None:
    boot, app = load_image(BOOT_ELF, label="bootloader"), load_image(APP_BIN, APP_BASE, label="app")
    flash = place_images([boot, app], STM32F103RC).data
    assert len(flash) == STM32F103RC.flash_size
    assert flash[: boot.size] == boot.segments[0][1]
    assert flash[0x8000 : 0x8000 + app.size] == APP_BIN.read_bytes()


def test_flash_not_covered_by_any_image_reads_erased() -> None:
    flash = place_images([load_image(APP_ELF)], STM32F103C8).data
    assert flash[:0x8000] == b"\xff" * 0x8000
    assert flash[0x8000 + load_image(APP_ELF).size :] == b"\xff" * (0x8000 - load_image(APP_ELF).size)


def test_image_at_names_the_image_that_loaded_an_address() -> None:
    boot, app = load_image(BOOT_ELF, label="bootloader"), load_image(APP_ELF, label="app")
    layout = place_images([app, boot], STM32F103RC)
    assert layout.image_at(0x0800_0000) is boot
    assert layout.image_at(APP_DATA_LMA) is app
    assert layout.image_at(0x0800_4000) is None


def test_overlapping_images_are_rejected_naming_both_files_and_the_range() -> None:
    boot = load_image(BOOT_ELF)
    late = load_image(APP_BIN, 0x0800_0080)
    with pytest.raises(ImageError) as info:
        place_images([boot, late], STM32F103RC)
    message = str(info.value)
    assert str(BOOT_ELF) in message and str(APP_BIN) in message
    assert f"0x08000080-0x{boot.end - 1:08X}" in message


def test_image_running_past_the_end_of_flash_is_rejected_naming_both_ranges(tmp_path: Path) -> None:
    image = load_image(write(tmp_path, "tail.bin", b"\x00" * 32), 0x0803_FFF0)
    with pytest.raises(ImageError) as info:
        place_images([image], STM32F103RC)
    message = str(info.value)
    assert "0x0803FFF0-0x0804000F" in message
    assert "STM32F103RC flash 0x08000000-0x0803FFFF" in message


def test_application_beyond_a_medium_density_flash_is_rejected() -> None:
    image = load_image(APP_BIN, 0x0801_0000)
    with pytest.raises(ImageError, match=r"outside STM32F103C8 flash 0x08000000-0x0800FFFF"):
        place_images([image], STM32F103C8)


def test_ram_loaded_data_is_rejected_with_a_hint(tmp_path: Path) -> None:
    elf = minimal_elf(
        segments=((0x0800_0000, 0x0800_0000, b"T" * 8, 8), (0x2000_0000, 0x2000_0000, b"D" * 4, 4))
    )
    image = load_image(write(tmp_path, "ramfunc.elf", elf))
    with pytest.raises(ImageError, match=r"0x20000000-0x20000003 is outside .*AT> FLASH"):
        place_images([image], STM32F103RC)


def test_image_linked_at_the_boot_alias_is_rejected_with_a_hint() -> None:
    image = load_image(APP_BIN, 0x0000_0000)
    with pytest.raises(ImageError, match=r"0x00000000 boot alias"):
        place_images([image], STM32F103RC)


def test_image_larger_than_flash_is_rejected_with_sizes(tmp_path: Path) -> None:
    image = load_image(write(tmp_path, "huge.bin", b"\x00" * (65 * 1024)))
    with pytest.raises(ImageError) as info:
        place_images([image], STM32F103C8)
    assert (
        str(info.value)
        == f"{image.path} holds 66560 bytes, more than the 64 KiB (65536 bytes) of STM32F103C8 flash"
    )


def test_image_filling_the_whole_flash_fits(tmp_path: Path) -> None:
    image = load_image(write(tmp_path, "full.bin", b"\x5a" * STM32F103C8.flash_size))
    assert place_images([image], STM32F103C8).data == b"\x5a" * STM32F103C8.flash_size


def test_two_elf_images_with_the_same_label_are_rejected() -> None:
    with pytest.raises(ImageError, match="share the label 'x'"):
        place_images([load_image(BOOT_ELF, label="x"), load_image(APP_ELF, label="x")], STM32F103RC)


def test_layout_symbols_are_tagged_with_each_images_label() -> None:
    boot, app = load_image(BOOT_ELF, label="bootloader"), load_image(APP_ELF, label="app")
    symbols = place_images([boot, app], STM32F103RC).symbols
    assert symbols is not None
    assert symbols.lookup(boot.symbols.address_of("SysTick_Handler")) == "bootloader:SysTick_Handler"
    assert symbols.lookup(app.symbols.address_of("SysTick_Handler")) == "app:SysTick_Handler"


def test_elf_run_ranges_include_bss_at_run_addresses() -> None:
    # .isr_vector+.text in flash; .data (4 bytes) + .bss (4 bytes) in SRAM.
    assert load_image(APP_ELF).run_ranges == [(0x0800_8000, 0x0800_80EC), (0x2000_0000, 0x2000_0008)]


def test_variables_larger_than_the_chips_sram_give_a_warning(tmp_path: Path) -> None:
    # A 32 KiB buffer in .bss, as the seed bootloader's USBD_DFU_XFER_SIZE makes.
    elf = minimal_elf(
        segments=((0x0800_0000, 0x0800_0000, b"T" * 8, 8), (0x2000_0000, 0x2000_0000, b"", 0x8800))
    )
    image = load_image(write(tmp_path, "bigbuf.elf", elf))
    assert place_images([image], STM32F103C8).warnings == (
        f"{image.path}: RAM 0x20000000-0x200087FF ends past STM32F103C8 SRAM 0x20000000-0x20004FFF (20 KiB)",
    )


def test_variables_that_fit_the_chips_sram_give_no_warning(tmp_path: Path) -> None:
    elf = minimal_elf(
        segments=((0x0800_0000, 0x0800_0000, b"T" * 8, 8), (0x2000_0000, 0x2000_0000, b"", 0x8800))
    )
    image = load_image(write(tmp_path, "bigbuf.elf", elf))
    assert place_images([image], STM32F103RC).warnings == ()


def test_layout_of_images_without_symbols_has_no_symbol_table() -> None:
    assert place_images([load_image(APP_BIN)], STM32F103RC).symbols is None


def test_image_describe_lists_its_ranges() -> None:
    assert load_image(APP_BIN, APP_BASE).describe() == f"{APP_BIN} (bin, 240 bytes at 0x08008000-0x080080EF)"


# -- against a freshly built ELF (only where the cross compiler exists) -------------------
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc and objcopy")
@pytest.mark.parametrize("origin", [0x0800_0000, 0x0800_4000, 0x0802_0000])
def test_freshly_linked_elf_loads_exactly_as_objcopy_lays_it_out(tmp_path: Path, origin: int) -> None:
    script = (DATA / "app.ld").read_text().replace("0x08008000", f"0x{origin:08X}")
    (tmp_path / "x.ld").write_text(script)
    elf, binary = tmp_path / "x.elf", tmp_path / "x.bin"
    subprocess.run(
        ["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-Os", "-std=c11", "-ffreestanding", "-DAPP",
         "-nostdlib", "-nostartfiles", "-Wl,--gc-sections", f"-T{tmp_path / 'x.ld'}", "-o", str(elf),
         str(DATA / "tiny.c")],
        check=True,
    )  # fmt: skip
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    image = load_image(elf)
    assert image.segments == [(origin, binary.read_bytes())]
    assert (
        place_images([image], STM32F103RC).data[origin - 0x0800_0000 :][: image.size] == binary.read_bytes()
    )


# -- the project's fixture firmware (fixtures/images, built by fixtures/Makefile) ---------
FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
FIXTURE_NAMES = [
    "hello_base",
    "hello_app",
    "app_small",
    "app_big",
    "bad_base",
    "bad_vtor",
    "bad_msp",
    "bad_thumb",
]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_elf_hex_and_bin_load_to_the_same_bytes(name: str) -> None:
    elf = load_image(FIXTURES / f"{name}.elf")
    assert load_image(FIXTURES / f"{name}.hex").segments == elf.segments
    assert load_image(FIXTURES / f"{name}.bin", elf.start).segments == elf.segments


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_entry_point_is_its_reset_handler(name: str) -> None:
    elf = load_image(FIXTURES / f"{name}.elf")
    assert elf.symbols is not None
    assert elf.symbols.address_of("Reset_Handler") == elf.entry & ~1


def test_fixture_base_image_and_application_share_the_rc_flash() -> None:
    base = load_image(FIXTURES / "hello_base.elf", label="base")
    app = load_image(FIXTURES / "hello_app.bin", APP_BASE, label="app")
    flash = place_images([base, app], STM32F103RC).data
    assert flash[0x8000 : 0x8000 + app.size] == (FIXTURES / "hello_app.bin").read_bytes()
    assert flash[: base.size] == (FIXTURES / "hello_base.bin").read_bytes()


def test_fixture_application_linked_at_flash_start_overlaps_an_image_there() -> None:
    base = load_image(FIXTURES / "hello_base.elf")
    wrong = load_image(FIXTURES / "bad_base.elf")
    with pytest.raises(ImageError, match=r"hello_base\.elf and .*bad_base\.elf overlap at 0x08000000-"):
        place_images([base, wrong], STM32F103RC)


def test_fixture_big_application_does_not_fit_behind_a_bootloader_on_a_c8() -> None:
    big = load_image(FIXTURES / "app_big.elf")
    with pytest.raises(ImageError, match=r"app_big\.elf: data at 0x08008000-.* outside STM32F103C8 flash"):
        place_images([big], STM32F103C8)

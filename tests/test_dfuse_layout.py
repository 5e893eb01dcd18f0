"""DfuSe memory-layout strings (UM0424 §4.3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostside.dfuse_layout import (
    LayoutError,
    MemoryLayout,
    Region,
    RegionError,
    Segment,
    parse_layout,
)

F103RC = "@Internal Flash  /0x08000000/16*002Ka,112*002Kg"
SEED = "@Internal Flash   /0x08000000/02*016Ka,02*016Kg,01*064Kg,03*128Kg"


def test_f103_layout_parses_into_read_only_then_writable_pages() -> None:
    lay = parse_layout(F103RC)
    assert lay.name == "Internal Flash"
    ro, rw = lay.segments
    assert (ro.start, ro.count, ro.size, ro.readable, ro.erasable, ro.writable) == (
        0x08000000, 16, 2048, True, False, False)
    assert (rw.start, rw.count, rw.size, rw.readable, rw.erasable, rw.writable) == (
        0x08008000, 112, 2048, True, True, True)
    assert rw.end == 0x08040000


def test_seed_layout_describes_f4_sectors_totalling_512_kib() -> None:
    lay = parse_layout(SEED)
    assert [(s.count, s.size) for s in lay.segments] == [(2, 16384), (2, 16384), (1, 65536), (3, 131072)]
    assert lay.regions[0].end - 0x08000000 == 512 * 1024


def test_space_unit_means_bytes_in_option_bytes_layout() -> None:
    lay = parse_layout("@Option Bytes  /0x1FFFF800/01*016 e")
    (seg,) = lay.segments
    assert (seg.start, seg.size, seg.readable, seg.erasable, seg.writable) == (0x1FFFF800, 16, True, False, True)


def test_megabyte_unit_multiplies_by_two_to_the_twenty() -> None:
    assert parse_layout("@Ext /0x90000000/02*001Mg").segments[0].size == 1 << 20


def test_each_address_group_becomes_a_region() -> None:
    lay = parse_layout("@Flash /0x08000000/04*016Kg/0x1FFF0000/01*030Ka")
    assert [r.address for r in lay.regions] == [0x08000000, 0x1FFF0000]
    assert lay.find_segment(0x1FFF0010) is lay.regions[1].segments[0]


@pytest.mark.parametrize(
    ("letter", "bits"),
    [("a", (1, 0, 0)), ("b", (0, 1, 0)), ("c", (1, 1, 0)), ("d", (0, 0, 1)), ("e", (1, 0, 1)),
     ("f", (0, 1, 1)), ("g", (1, 1, 1))],
)
def test_type_letter_low_bits_are_readable_erasable_writable(letter: str, bits: tuple[int, int, int]) -> None:
    seg = parse_layout(f"@M /0x0/01*001K{letter}").segments[0]
    assert (seg.readable, seg.erasable, seg.writable) == tuple(bool(b) for b in bits)


@pytest.mark.parametrize(
    "text",
    ["", "Internal Flash /0x08000000/16*002Ka", "@Flash", "@Flash /0x08000000/", "@F /0x08000000/16*2Kz",
     "@F /0xZZ/01*001Ka", "@F /0x08000000/16*002Ka,", "@F /0x08000000/00*002Ka", "@F /0x08000000/16*002Ka junk",
     "@F /08000000/16*002Ka"],
)
def test_unparsable_layout_raises_layout_error(text: str) -> None:
    with pytest.raises(LayoutError):
        parse_layout(text)


def test_page_containing_gives_page_start_size_and_segment() -> None:
    lay = parse_layout(SEED)
    page = lay.page_containing(0x08012345)
    assert page is not None
    assert (page.start, page.size) == (0x08010000, 65536)


def test_page_containing_an_unmapped_address_is_none() -> None:
    assert parse_layout(F103RC).page_containing(0x08040000) is None


def test_pages_touched_lists_each_page_once_in_address_order() -> None:
    lay = parse_layout(F103RC)
    assert [p.start for p in lay.pages_touched(0x08008100, 4096)] == [0x08008000, 0x08008800, 0x08009000]


def test_address_outside_every_segment_is_rejected() -> None:
    with pytest.raises(RegionError) as ei:
        parse_layout(F103RC).check_write(0x20000000, 4)
    assert ei.value.kind == "outside"


def test_write_into_read_only_segment_is_rejected_naming_the_address() -> None:
    with pytest.raises(RegionError) as ei:
        parse_layout(F103RC).check_write(0x08007F00, 0x200)
    assert ei.value.kind == "read-only"
    assert ei.value.address == 0x08007F00


def test_image_running_past_the_end_of_the_region_is_too_large() -> None:
    with pytest.raises(RegionError) as ei:
        parse_layout(F103RC).check_write(0x08008000, 0x38001)
    assert ei.value.kind == "too-large"


def test_image_filling_the_writable_part_exactly_fits() -> None:
    parse_layout(F103RC).check_write(0x08008000, 0x38000)


def test_read_check_accepts_read_only_segment() -> None:
    parse_layout(F103RC).check_read(0x08000000, 0x40000)


# -- properties ------------------------------------------------------------------------------------
@st.composite
def layouts(draw: st.DrawFn) -> MemoryLayout:
    name = draw(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                               blacklist_characters="/@"), min_size=1, max_size=20)
                .map(str.strip).filter(bool))
    regions = []
    address = draw(st.integers(0, 0x1000_0000)) & ~0x3FF
    for _ in range(draw(st.integers(1, 3))):
        segs = []
        start = address
        for _ in range(draw(st.integers(1, 4))):
            count = draw(st.integers(1, 300))
            size = draw(st.sampled_from([16, 128, 1000, 1024, 2048, 16384, 65536, 1 << 20]))
            bits = draw(st.integers(1, 7))
            segs.append(Segment(start, count, size, bool(bits & 1), bool(bits & 2), bool(bits & 4)))
            start += count * size
        regions.append(Region(name, address, tuple(segs)))
        address = start + draw(st.integers(0, 16)) * 1024
    return MemoryLayout(name, tuple(regions))


@given(layouts())
def test_render_then_parse_gives_the_same_layout(lay: MemoryLayout) -> None:
    assert parse_layout(lay.render()) == lay


@given(layouts(), st.data())
def test_page_lookup_is_consistent_with_the_segment(lay: MemoryLayout, data: st.DataObject) -> None:
    seg = data.draw(st.sampled_from(lay.segments))
    addr = data.draw(st.integers(seg.start, seg.end - 1))
    page = lay.page_containing(addr)
    assert page is not None and page.segment == seg
    assert page.start <= addr < page.end
    assert (page.start - seg.start) % seg.size == 0 and page.size == seg.size
    assert lay.page_containing(page.start) == page


@given(layouts(), st.data())
def test_pages_touched_cover_every_mapped_byte_of_a_range(lay: MemoryLayout, data: st.DataObject) -> None:
    seg = data.draw(st.sampled_from(lay.segments))
    addr = data.draw(st.integers(seg.start, seg.end - 1))
    length = data.draw(st.integers(1, 3 * seg.size))
    pages = lay.pages_touched(addr, length)
    starts = [p.start for p in pages]
    assert starts == sorted(set(starts))
    for probe in (addr, min(addr + length, lay.segments[-1].end) - 1):
        hit = lay.page_containing(probe)
        if hit is not None:
            assert hit in pages

"""Symbol tables: naming addresses for traces and reports.

ELF-based tests read tests/data/loader/{app,boot}.elf (tiny.c linked at
0x08008000 and 0x08000000; see the Makefile there).  Symbol values quoted
below come from `arm-none-eabi-readelf -s` of those files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.core.symbols import MAX_UNSIZED_EXTENT, Symbol, SymbolTable

DATA = Path(__file__).parent / "data" / "loader"

# app.elf
SYSTICK = 0x0800_8048  # SysTick_Handler, 16 bytes (st_value 0x08008049)
BARE_LABEL = 0x0800_8040  # assembly function without .size
DEFAULT_HANDLER = 0x0800_8058  # 2 bytes; NMI_Handler and HardFault_Handler are weak aliases
APP_ONLY = 0x0800_805C  # 24 bytes; image_only is an alias
MAIN = 0x0800_8074  # 40 bytes
COUNTER = 0x2000_0000  # 4-byte .data object
# boot.elf
BOOT_SYSTICK = 0x0800_0048


@pytest.fixture(scope="module")
def app() -> SymbolTable:
    return SymbolTable.from_elf(DATA / "app.elf")


@pytest.fixture(scope="module")
def merged() -> SymbolTable:
    return SymbolTable.merge(
        [
            SymbolTable.from_elf(DATA / "boot.elf", origin="bootloader"),
            SymbolTable.from_elf(DATA / "app.elf", origin="app"),
        ]
    )


def func(name: str, address: int, size: int, **kw) -> Symbol:
    return Symbol(name, address, size, "func", in_code=True, **kw)


# -- one image ----------------------------------------------------------------------------
def test_function_start_is_named_without_offset(app: SymbolTable) -> None:
    assert app.lookup(SYSTICK) == "SysTick_Handler"


def test_address_inside_a_function_is_named_with_a_hex_offset(app: SymbolTable) -> None:
    assert app.lookup(SYSTICK + 0x0E) == "SysTick_Handler+0xe"


def test_address_past_the_end_of_a_function_is_not_named_after_it(app: SymbolTable) -> None:
    assert not app.lookup(MAIN + 40).startswith("main")


def test_address_covered_by_no_symbol_is_a_bare_hex_address(app: SymbolTable) -> None:
    assert app.lookup(0x0800_1234) == "0x08001234"


def test_function_addresses_have_the_thumb_bit_cleared(app: SymbolTable) -> None:
    assert app.address_of("SysTick_Handler") == SYSTICK
    assert app.address_of("main") == MAIN


def test_unsized_assembly_function_extends_to_the_next_symbol(app: SymbolTable) -> None:
    assert app.lookup(BARE_LABEL) == "bare_label"
    assert app.lookup(BARE_LABEL + 6) == "bare_label+0x6"
    assert app.lookup(SYSTICK) == "SysTick_Handler"


def test_strong_handler_name_wins_over_its_weak_aliases(app: SymbolTable) -> None:
    assert app.lookup(DEFAULT_HANDLER) == "Default_Handler"


def test_equal_aliases_resolve_by_name_so_output_is_stable(app: SymbolTable) -> None:
    # app_only and image_only: same address, size and binding.
    assert app.lookup(APP_ONLY + 2) == "app_only+0x2"


def test_data_objects_are_named_at_their_run_address(app: SymbolTable) -> None:
    assert app.lookup(COUNTER + 2) == "counter+0x2"


def test_linker_script_symbols_are_found_but_do_not_name_addresses(app: SymbolTable) -> None:
    assert app.address_of("_estack") == 0x2000_5000
    assert app.lookup(0x2000_5000) == "0x20005000"


def test_arm_mapping_symbols_are_not_names(app: SymbolTable) -> None:
    assert "$t" not in app and "$d" not in app


def test_address_of_an_unknown_name_is_none(app: SymbolTable) -> None:
    assert app.address_of("no_such_function") is None


def test_address_of_a_weak_alias_is_its_target(app: SymbolTable) -> None:
    assert app.address_of("NMI_Handler") == DEFAULT_HANDLER


def test_function_at_returns_the_containing_function(app: SymbolTable) -> None:
    sym = app.function_at(MAIN + 10)
    assert sym is not None and (sym.name, sym.address, sym.size) == ("main", MAIN, 40)


def test_function_at_a_data_address_is_none(app: SymbolTable) -> None:
    assert app.function_at(COUNTER) is None


def test_symbol_at_a_data_address_is_the_object(app: SymbolTable) -> None:
    sym = app.symbol_at(COUNTER + 1)
    assert sym is not None and sym.kind == "object" and sym.name == "counter"


def test_stripped_elf_gives_an_empty_table() -> None:
    table = SymbolTable.from_elf(DATA / "x86_64.elf")
    assert len(table) == 0
    assert table.lookup(0x1000) == "0x00001000"


# -- several images -----------------------------------------------------------------------
def test_merged_table_tags_each_name_with_its_image(merged: SymbolTable) -> None:
    assert merged.lookup(BOOT_SYSTICK) == "bootloader:SysTick_Handler"
    assert merged.lookup(SYSTICK + 4) == "app:SysTick_Handler+0x4"


def test_shared_ram_address_lists_every_images_name_in_order(merged: SymbolTable) -> None:
    assert merged.lookup(COUNTER + 1) == "bootloader:counter+0x1/app:counter+0x1"


def test_lookup_can_be_restricted_to_one_image(merged: SymbolTable) -> None:
    assert merged.lookup(COUNTER, origin="app") == "app:counter"
    assert merged.lookup(SYSTICK, origin="bootloader") == "0x08008048"


def test_qualified_name_selects_the_image(merged: SymbolTable) -> None:
    assert merged.address_of("bootloader:SysTick_Handler") == BOOT_SYSTICK
    assert merged.address_of("app:SysTick_Handler") == SYSTICK


def test_name_defined_by_one_image_needs_no_qualifier(merged: SymbolTable) -> None:
    assert merged.address_of("app_only") == APP_ONLY


def test_ambiguous_bare_name_is_refused_rather_than_guessed(merged: SymbolTable) -> None:
    with pytest.raises(ValueError, match="bootloader:main, app:main"):
        merged.address_of("main")


def test_merging_two_tables_with_the_same_origin_is_refused() -> None:
    table = SymbolTable([func("f", 0x0800_0000, 4, origin="app")])
    with pytest.raises(ValueError, match="origin 'app'"):
        SymbolTable.merge([table, table])


def test_function_at_reports_the_origin(merged: SymbolTable) -> None:
    sym = merged.function_at(BOOT_SYSTICK + 2)
    assert sym is not None and sym.qualified_name == "bootloader:SysTick_Handler"


def test_with_origin_retags_every_symbol(app: SymbolTable) -> None:
    assert {s.origin for s in app.with_origin("x")} == {"x"}


# -- rules, on hand-made tables -------------------------------------------------------------
def test_unsized_function_stops_at_its_section_end() -> None:
    table = SymbolTable([func("tail", 0x0800_0100, 0, section_end=0x0800_0110)])
    assert table.lookup(0x0800_010E) == "tail+0xe"
    assert table.lookup(0x0800_0110) == "0x08000110"


def test_unsized_function_stops_at_a_sane_distance() -> None:
    table = SymbolTable([func("last", 0x0800_0000, 0)])
    assert table.lookup(0x0800_0000 + MAX_UNSIZED_EXTENT - 2) == f"last+0x{MAX_UNSIZED_EXTENT - 2:x}"
    assert table.lookup(0x0800_0000 + MAX_UNSIZED_EXTENT) == f"0x{0x0800_0000 + MAX_UNSIZED_EXTENT:08X}"


def test_unsized_label_inside_a_sized_function_does_not_split_it() -> None:
    table = SymbolTable([func("Reset_Handler", 0x100, 0x40), func("LoopCopy", 0x110, 0)])
    assert table.lookup(0x112) == "Reset_Handler+0x12"


def test_unsized_function_stops_where_a_sized_one_starts() -> None:
    table = SymbolTable([func("asm_fn", 0x100, 0), func("c_fn", 0x108, 8)])
    assert table.lookup(0x106) == "asm_fn+0x6"
    assert table.lookup(0x10A) == "c_fn+0x2"
    assert table.lookup(0x110) == "0x00000110"


def test_unsized_data_label_names_nothing() -> None:
    table = SymbolTable([Symbol("_sdata", 0x2000_0000, 0, "label")])
    assert table.lookup(0x2000_0000) == "0x20000000"
    assert table.address_of("_sdata") == 0x2000_0000


def test_innermost_of_nested_symbols_names_the_address() -> None:
    table = SymbolTable([Symbol("buffer", 0x100, 0x100, "object"), Symbol("header", 0x120, 0x10, "object")])
    assert table.lookup(0x124) == "header+0x4"
    assert table.lookup(0x134) == "buffer+0x34"


def test_repeated_lookups_give_the_same_answer() -> None:
    table = SymbolTable([func("f", 0x100, 0x10)])
    assert [table.lookup(0x104) for _ in range(3)] == ["f+0x4"] * 3


def _reference_lookup(symbols: list[Symbol], address: int) -> str:
    """What lookup must answer, computed the slow way."""
    covering = [s for s in symbols if s.address <= address < s.end]
    if not covering:
        return f"0x{address:08X}"
    binding_rank = {"global": 0, "weak": 1, "local": 2}
    best = min(
        covering, key=lambda s: (-s.address, s.size, binding_rank[s.binding], s.kind != "func", s.name)
    )
    return best.describe(address)


_sized = st.builds(
    Symbol,
    name=st.sampled_from(["a", "b", "c", "d", "e"]),
    address=st.integers(0, 0x200),
    size=st.integers(1, 0x80),
    kind=st.sampled_from(["func", "object"]),
    binding=st.sampled_from(["global", "weak", "local"]),
)


@given(symbols=st.lists(_sized, max_size=12), address=st.integers(0, 0x300))
def test_lookup_agrees_with_a_linear_scan_for_any_sized_symbols(symbols: list[Symbol], address: int) -> None:
    assert SymbolTable(symbols).lookup(address) == _reference_lookup(symbols, address)


@given(
    boot=st.lists(_sized, max_size=6),
    app=st.lists(_sized, max_size=6),
    address=st.integers(0, 0x300),
)
def test_merged_lookup_joins_each_images_own_answer(
    boot: list[Symbol], app: list[Symbol], address: int
) -> None:
    merged = SymbolTable.merge([SymbolTable(boot).with_origin("bl"), SymbolTable(app).with_origin("app")])
    parts = [SymbolTable(s).with_origin(o).lookup(address) for o, s in (("bl", boot), ("app", app))]
    named = [p for p in parts if not p.startswith("0x")]
    assert merged.lookup(address) == ("/".join(named) if named else f"0x{address:08X}")


@given(
    layout=st.lists(st.tuples(st.integers(0, 0x40), st.integers(0, 0x40)), min_size=1, max_size=10),
    probe=st.integers(0, 0x600),
)
def test_unsized_functions_reach_exactly_to_the_next_symbol(
    layout: list[tuple[int, int]], probe: int
) -> None:
    # Functions laid out one after another; size 0 stands for an unsized one.
    symbols, address = [], 0x100
    for k, (gap, size) in enumerate(layout):
        address += gap * 2
        symbols.append(func(f"f{k}", address, size))
        address += max(size, 2)
    starts = sorted({s.address for s in symbols})
    expected = _reference_lookup([s for s in symbols if s.size], probe)
    if expected.startswith("0x"):
        before = [s for s in symbols if s.size == 0 and s.address <= probe]
        if before:
            s = max(before, key=lambda s: (s.address, -int(s.name[1:])))
            following = [a for a in starts if a > s.address]
            limit = min([*following, s.address + MAX_UNSIZED_EXTENT])
            covered = any(t.size and t.address <= s.address < t.end for t in symbols)
            if probe < limit and not covered:
                same = [t for t in symbols if t.size == 0 and t.address == s.address]
                expected = min(same, key=lambda t: t.name).describe(probe)
    assert SymbolTable(symbols).lookup(probe) == expected


# -- the project's fixture firmware ---------------------------------------------------------
FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"


def test_fixture_images_name_their_own_reset_handlers_apart() -> None:
    base = SymbolTable.from_elf(FIXTURES / "hello_base.elf", origin="base")
    app = SymbolTable.from_elf(FIXTURES / "hello_app.elf", origin="app")
    merged = SymbolTable.merge([base, app])
    base_reset = merged.address_of("base:Reset_Handler")
    app_reset = merged.address_of("app:Reset_Handler")
    assert base_reset is not None and app_reset is not None
    assert merged.lookup(base_reset + 2) == "base:Reset_Handler+0x2"
    assert merged.lookup(app_reset) == "app:Reset_Handler"
    assert app_reset - base_reset == 0x8000

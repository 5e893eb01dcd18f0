"""The data behind each picture of the HTML report (emulator.bootflow.report_data), from
hand-made events and journals: no emulation here."""

from __future__ import annotations

from emulator.bootflow import report_data as rd
from emulator.bootflow.powercut import BETWEEN, MID, BootObservation, CutPoint, FlashOp, Trial
from emulator.core.chips import get_chip
from emulator.core.port import Event
from firmware_models import flash_journal as fj

BASE = 0x0800_0000
PAGE = 2048
SIZE = 8 * PAGE  # a small chip keeps the expectations readable


def journal() -> fj.FlashJournal:
    return fj.FlashJournal(BASE, SIZE, PAGE)


def program(j: fj.FlashJournal, address: int, t: int, value: int = 0x1234) -> None:
    j.add(fj.PROGRAM, t, 0x100, address=address, length=2, end_ns=t + 50_000, old_value=0xFFFF, new_value=value)


def erase(j: fj.FlashJournal, address: int, t: int) -> None:
    j.add(fj.PAGE_ERASE, t, 0x200, address=address, length=PAGE, end_ns=t + 20_000_000)


def request(kind: str, start: int, end: int, **data: object) -> Event:
    return Event(end, kind, 0x0800_0100, {"submit_ns": start, "urb_status": 0, **data})


# -- timeline ---------------------------------------------------------------------------------------

def test_every_timeline_has_the_six_lanes_in_order():
    t = rd.timeline([], [], page_size=PAGE, flash_end=BASE + SIZE, end_ns=1000)
    assert [lane for lane, _ in t.lanes] == ["cpu", "gpio", "usb", "dfu", "flash", "faults"]


def test_a_getstatus_item_spans_the_request_and_names_its_bstatus_and_bstate():
    e = request("dfu_request", 1_000, 51_000, request="GETSTATUS", b_status="OK", b_state="dfuDNBUSY",
                poll_timeout_ms=50)
    (item,) = rd.timeline([e], [], page_size=PAGE, flash_end=BASE + SIZE, end_ns=60_000).items
    assert (item.lane, item.start_ns, item.end_ns, item.tone) == ("dfu", 1_000, 51_000, "busy")
    assert "OK / dfuDNBUSY" in item.label


def test_a_request_longer_than_a_hosts_timeout_is_marked_bad():
    e = request("dfu_request", 0, 6_000_000_000, request="GETSTATUS", b_status="OK", b_state="dfuDNBUSY",
                poll_timeout_ms=50)
    (item,) = rd.timeline([e], [], page_size=PAGE, flash_end=BASE + SIZE, end_ns=1).items
    assert item.tone == "bad" and "past a host's 5 s timeout" in item.label


def test_a_dfuse_erase_command_shows_its_address():
    e = request("dfu_request", 0, 10, request="DNLOAD", block=0, length=5, dfuse_command="ERASE",
                address=0x0800_8000)
    (item,) = rd.timeline([e], [], page_size=PAGE, flash_end=BASE + SIZE, end_ns=10).items
    assert item.label == "DNLOAD block 0: ERASE 0x08008000"


def test_each_item_carries_its_pc_and_symbol():
    e = Event(5, "clock_switch", 0x0800_0123, {"previous": "HSI", "source": "PLL", "sysclk": 72_000_000})
    (item,) = rd.timeline([e], [], page_size=PAGE, flash_end=BASE + SIZE, end_ns=10,
                          symbol=lambda pc: f"boot:SystemClock_Config+0x{pc & 0xFF:x}").items
    assert (item.lane, item.pc, item.symbol) == ("cpu", 0x0800_0123, "boot:SystemClock_Config+0x23")
    assert item.reference.startswith("RM0008")


def test_half_word_programs_of_one_page_merge_into_one_item_with_their_busy_time():
    j = journal()
    for k in range(4):
        program(j, BASE + 2 * k, 1_000_000 + k * 60_000)
    (item,) = rd.flash_items(j.entries, PAGE, BASE + SIZE)[:1]
    merged = rd.merge_items(rd.flash_items(j.entries, PAGE, BASE + SIZE))
    assert item.duration_ns == 50_000
    assert len(merged) == 1 and merged[0].count == 4
    assert (merged[0].start_ns, merged[0].end_ns) == (1_000_000, 1_000_000 + 3 * 60_000 + 50_000)


def test_items_further_apart_than_the_merge_gap_stay_separate():
    j = journal()
    program(j, BASE, 0)
    program(j, BASE + 2, rd.MERGE_GAP_NS + 100_000)
    assert len(rd.merge_items(rd.flash_items(j.entries, PAGE, BASE + SIZE))) == 2


def test_an_erase_of_programmed_data_gets_the_destroy_tone_and_a_marker():
    j = journal()
    program(j, BASE + PAGE, 0)
    erase(j, BASE + PAGE, 1_000_000)
    t = rd.timeline([], j.entries, page_size=PAGE, flash_end=BASE + SIZE, end_ns=0)
    tones = [i.tone for i in t.lane_items("flash")]
    assert tones == ["ok", "destroy"]
    assert [m.tone for m in t.markers] == ["destroy"]


def test_an_erase_past_the_end_of_flash_gets_its_own_tone():
    j = journal()
    j.add(fj.OUT_OF_RANGE_ERASE, 0, 0x200, address=BASE + SIZE, length=PAGE, end_ns=20_000_000)
    (item,) = rd.flash_items(j.entries, PAGE, BASE + SIZE)
    assert item.tone == "beyond" and "past the end of flash" in item.label


def test_phases_follow_the_landmarks_of_a_dfu_session():
    events = [
        Event(0, "reset", 0, {"cause": "power_on"}),
        Event(10, "usb_state", 0, {"state": "attached"}),
        request("dfu_request", 20, 25, request="DNLOAD", block=0, length=5),
        request("dfu_request", 40, 45, request="UPLOAD", block=2, length=64),
        request("dfu_request", 50, 55, request="DNLOAD", block=2, length=0),
        Event(60, "reset", 0, {"cause": "software"}),
        Event(70, "jump", 0, {"address": 0x0800_8000, "msp": 0x2000_5000}),
    ]
    phases = rd.phases(events, 100)
    assert [(p.name, p.start_ns, p.end_ns) for p in phases] == [
        ("boot", 0, 10), ("enumeration", 10, 20), ("download", 20, 40), ("verify", 40, 50),
        ("leave / manifest", 50, 60), ("restart", 60, 70), ("application", 70, 100)]


def test_a_run_without_usb_is_one_boot_phase():
    assert [p.name for p in rd.phases([Event(0, "reset", 0, {"cause": "power_on"})], 500)] == ["boot"]


def test_resets_power_cuts_and_the_jump_are_markers():
    events = [Event(0, "reset", 0, {"cause": "power_on"}), Event(5, "power_cut", 0, {}),
              Event(7, "reset", 0, {"cause": "software"}), Event(9, "jump", 0, {}),
              Event(11, "first_interrupt_after_jump", 0, {"exception": "SysTick"})]
    assert [(m.time_ns, m.label) for m in rd.markers(events)] == [
        (5, "power cut"), (7, "software reset"), (9, "jump"), (11, "first IRQ: SysTick")]


# -- flash map --------------------------------------------------------------------------------------

def test_the_flash_map_has_one_cell_per_page_of_the_chip():
    fm = rd.flash_map([], flash_base=BASE, flash_size=SIZE, page_size=PAGE)
    assert [p.address for p in fm.pages] == [BASE + k * PAGE for k in range(8)]
    assert {p.state for p in fm.pages} == {"untouched"}


def test_pages_are_coloured_by_what_happened_to_them():
    j = journal()
    erase(j, BASE + 2 * PAGE, 0)
    erase(j, BASE + 3 * PAGE, 0)
    program(j, BASE + 3 * PAGE, 30_000_000)
    program(j, BASE + 4 * PAGE, 30_000_000)
    erase(j, BASE + 4 * PAGE, 40_000_000)
    fm = rd.flash_map(j.entries, flash_base=BASE, flash_size=SIZE, page_size=PAGE,
                      bootloader=[(BASE, BASE + PAGE + 10)])
    assert [p.state for p in fm.pages] == ["bootloader", "bootloader", "erased", "programmed",
                                           "erased_after_programmed", "untouched", "untouched", "untouched"]
    assert fm.pages[4].destroyed_bytes == 2


def test_a_page_programmed_again_after_its_wipe_says_so():
    j = journal()
    program(j, BASE, 0)
    erase(j, BASE, 1_000_000)
    program(j, BASE, 30_000_000)
    cell = rd.flash_map(j.entries, flash_base=BASE, flash_size=SIZE, page_size=PAGE).pages[0]
    assert cell.state == "erased_after_programmed" and cell.reprogrammed_after_wipe


def test_erases_past_the_end_add_cells_beyond_the_chip_up_to_the_highest_address_asked_for():
    j = journal()
    for k in (0, 2):
        j.add(fj.OUT_OF_RANGE_ERASE, k, 0x200, address=BASE + SIZE + k * PAGE, length=PAGE, end_ns=k + 1)
    fm = rd.flash_map(j.entries, flash_base=BASE, flash_size=SIZE, page_size=PAGE)
    beyond = [p for p in fm.pages if p.beyond_end]
    assert [(p.index, p.state) for p in beyond] == [(8, "erased_beyond_end"), (9, "untouched"),
                                                   (10, "erased_beyond_end")]
    assert fm.counts()["erased_beyond_end"] == 2


def test_the_dfuse_layout_is_drawn_unit_by_unit_with_units_past_the_chips_end_flagged():
    bands, error = rd.layout_bands("@Internal Flash  /0x08000000/02*016Ka,01*064Kg", BASE + 64 * 1024, PAGE)
    assert error is None
    assert [(b.start, b.end, b.text, b.beyond_end) for b in bands] == [
        (BASE, BASE + 0x4000, "16K a", False), (BASE + 0x4000, BASE + 0x8000, "16K a", False),
        (BASE + 0x8000, BASE + 0x18000, "64K g", True)]


def test_an_unparsable_layout_string_is_reported_not_raised():
    bands, error = rd.layout_bands("@Flash /nonsense/", BASE + SIZE, PAGE)
    assert bands == [] and error


# -- the jump -----------------------------------------------------------------------------------------

def test_the_vector_table_rows_judge_msp_and_thumb_bits():
    chip = get_chip("STM32F103RC")
    app = 0x0800_8000
    image = (0x2000_C000).to_bytes(4, "little") + (app + 0x100).to_bytes(4, "little") + bytes(0x200)
    rows = rd.vector_rows(image, app, chip, lambda a: f"0x{a:08X}")
    assert (rows[0].name, rows[0].tone) == ("initial MSP", "ok")
    assert (rows[1].name, rows[1].tone, rows[1].note) == ("Reset", "bad", "no Thumb bit")
    assert rows[7].name == "reserved"


def test_an_msp_outside_sram_is_marked_bad():
    chip = get_chip("STM32F103RC")
    rows = rd.vector_rows((0x1000_0000).to_bytes(4, "little") + (0x0800_8101).to_bytes(4, "little"),
                          0x0800_8000, chip, str)
    assert rows[0].tone == "bad"


def test_a_running_systick_at_the_jump_is_marked_bad():
    rows = rd.left_running_rows({"systick_enabled": True, "systick_interrupt": True, "nvic_enabled": [],
                                 "nvic_pending": [], "primask": False, "pll_on": False, "sysclk_hz": 8_000_000})
    by_name = {r.name: r for r in rows}
    assert by_name["SysTick"].tone == "bad" and by_name["NVIC enabled IRQs"].tone == "ok"


# -- the sweep ----------------------------------------------------------------------------------------

def _trial(index: int, mode: str, outcome: str, after_last: bool = False) -> Trial:
    op = FlashOp(index, "program", BASE + 2 * index, 2, 1000 * index, 50, "main", 2 * index, b"\xff\xff",
                 b"\x00\x00", 0x100)
    return Trial(CutPoint(index, mode, after_last), outcome, op, BootObservation(jumped=False))


def test_the_sweep_grid_has_one_cell_per_cut_in_operation_order():
    cells = rd.sweep_grid([_trial(5, MID, "broken_app"), _trial(1, BETWEEN, "dfu"), _trial(5, BETWEEN, "dfu")])
    assert [(c.index, c.mode, c.outcome) for c in cells] == [(1, BETWEEN, "dfu"), (5, BETWEEN, "dfu"),
                                                             (5, MID, "broken_app")]


def test_cut_points_land_on_the_timeline_at_their_operation_coloured_by_outcome():
    items = rd.cut_items(rd.sweep_grid([_trial(3, MID, "broken_app")]))
    assert [(i.lane, i.start_ns, i.tone) for i in items] == [("cuts", 3000, "bad")]


# -- the header ---------------------------------------------------------------------------------------

def test_images_in_the_header_carry_their_sha256(tmp_path):
    f = tmp_path / "app.bin"
    f.write_bytes(b"abc")
    info = rd.image_info("application", str(f))
    assert (info.name, info.size) == ("app.bin", 3)
    assert info.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_header_options_leave_out_the_report_path_and_unset_flags():
    opts = rd.options_text({"report": "x.html", "json": False, "chip": None, "erase_order": "both",
                            "address": 0x0800_8000, "func": print, "max_time": 2_000_000_000})
    assert opts == {"erase-order": "both", "address": "0x08008000", "max-time": "2s"}

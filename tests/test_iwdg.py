"""IWDG model against RM0008 §19."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.core.port import SimPort
from firmware_models.iwdg import IWDG

KR, PR, RLR, SR = 0x00, 0x04, 0x08, 0x0C
US = 1_000
MS = 1_000_000


def make(**options: object) -> tuple[SimPort, IWDG]:
    port = SimPort()
    return port, IWDG(port, **options)


def configure(port: SimPort, iwdg: IWDG, pr: int, rlr: int) -> None:
    """HAL_IWDG_Init order: start, unlock, PR, RLR, wait for SR=0, reload."""
    iwdg.write(KR, 4, 0xCCCC)
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(PR, 4, pr)
    iwdg.write(RLR, 4, rlr)
    while iwdg.read(SR, 4):
        port.advance(25 * US)
    iwdg.write(KR, 4, 0xAAAA)


def test_registers_reset_to_rm0008_values() -> None:
    _, iwdg = make()
    assert [iwdg.read(o, 4) for o in (KR, PR, RLR, SR)] == [0, 0, 0xFFF, 0]


def test_watchdog_does_not_run_before_it_is_started() -> None:
    port, iwdg = make()
    port.advance(60_000 * MS)
    assert port.reset_requests == []


def test_started_watchdog_counts_down_from_0xfff() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    port.advance(100 * US)  # one tick is 4 / 40 kHz = 100 µs
    assert iwdg.counter == 0xFFE


def test_default_watchdog_resets_after_409_6_ms() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    port.advance(409_600 * US - 1)
    before = list(port.reset_requests)
    port.advance(1)
    assert (before, port.reset_requests) == ([], ["iwdg"])


def test_reset_time_follows_pr_and_rlr() -> None:
    port, iwdg = make()
    configure(port, iwdg, pr=4, rlr=624)  # /64, 625 ticks: 1 s
    reloaded = port.now_ns()
    port.advance(reloaded + 1_000 * MS - port.now_ns() - 1)
    before = list(port.reset_requests)
    port.advance(1)
    assert (before, port.reset_requests) == ([], ["iwdg"])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 7), st.integers(0, 0xFFF))
def test_timeout_is_prescaler_times_reload_plus_one_over_lsi(pr: int, rlr: int) -> None:
    port, iwdg = make()
    configure(port, iwdg, pr, rlr)
    divider = min(4 << pr, 256)
    assert iwdg.timeout_ns() == divider * (rlr + 1) * 25 * US


def test_reload_postpones_the_reset() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    for _ in range(10):
        port.advance(300 * MS)
        iwdg.write(KR, 4, 0xAAAA)
    assert port.reset_requests == []


def test_expiry_is_recorded_as_an_event() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    port.advance(500 * MS)
    assert [e.kind for e in port.events] == ["iwdg_start", "iwdg_expired"]


def test_no_key_stops_a_started_watchdog() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    for key in (0x0000, 0x5555, 0x1234, 0xFFFF):
        iwdg.write(KR, 4, key)
    port.advance(500 * MS)
    assert port.reset_requests == ["iwdg"]


def test_starting_the_watchdog_starts_lsi() -> None:
    started: list[bool] = []
    port, iwdg = make(start_lsi=lambda: started.append(True))
    iwdg.write(KR, 4, 0xCCCC)
    assert started == [True]


def test_kr_reads_as_zero() -> None:
    _, iwdg = make()
    iwdg.write(KR, 4, 0x5555)
    assert iwdg.read(KR, 4) == 0


def test_pr_write_without_the_access_key_is_ignored() -> None:
    port, iwdg = make()
    iwdg.write(PR, 4, 3)
    port.advance(1 * MS)
    assert (iwdg.read(PR, 4), len(port.guest_errors)) == (0, 1)


def test_any_other_key_protects_pr_and_rlr_again() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(KR, 4, 0xAAAA)
    iwdg.write(RLR, 4, 10)
    port.advance(1 * MS)
    assert iwdg.read(RLR, 4) == 0xFFF


def test_pvu_is_set_while_the_prescaler_update_is_in_flight() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(PR, 4, 3)
    port.advance(124 * US)
    assert (iwdg.read(SR, 4), iwdg.read(PR, 4)) == (0b01, 0)


def test_pvu_clears_after_five_lsi_cycles_and_pr_takes_the_new_value() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(PR, 4, 3)
    port.advance(125 * US)
    assert (iwdg.read(SR, 4), iwdg.read(PR, 4)) == (0, 3)


def test_rvu_is_set_while_the_reload_update_is_in_flight() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(RLR, 4, 100)
    assert iwdg.read(SR, 4) == 0b10


def test_a_second_pr_write_while_pvu_is_set_is_ignored() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(PR, 4, 3)
    iwdg.write(PR, 4, 5)
    port.advance(1 * MS)
    assert iwdg.read(PR, 4) == 3


def test_prescaler_change_slows_a_running_counter() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    iwdg.write(KR, 4, 0x5555)
    iwdg.write(PR, 4, 6)  # /256
    port.advance(125 * US)
    port.advance(1_000 * MS)
    assert port.reset_requests == []


def test_counter_is_readable_for_reports() -> None:
    port, iwdg = make()
    configure(port, iwdg, pr=0, rlr=1000)
    port.advance(10 * MS)  # 100 ticks of 100 µs
    assert iwdg.counter == 900


def test_system_reset_stops_a_software_watchdog() -> None:
    port, iwdg = make()
    iwdg.write(KR, 4, 0xCCCC)
    iwdg.reset()
    port.advance(1_000 * MS)
    assert port.reset_requests == []


def test_hardware_watchdog_runs_from_reset() -> None:
    port, iwdg = make(hardware=True)
    port.advance(410 * MS)
    assert port.reset_requests == ["iwdg"]

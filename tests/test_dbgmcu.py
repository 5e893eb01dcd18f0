"""DBGMCU model against RM0008 §31.6.1 and §31.16."""

from __future__ import annotations

from emulator.core.port import SimPort
from firmware_models.dbgmcu import DBGMCU

IDCODE, CR = 0x00, 0x04


def make(**options: object) -> DBGMCU:
    return DBGMCU(SimPort(), **options)


def test_stm32f103rc_idcode_is_high_density_revision_y() -> None:
    assert make(dev_id=0x414).read(IDCODE, 4) == 0x1003_0414


def test_stm32f103c8_idcode_is_medium_density_revision_y() -> None:
    assert make(dev_id=0x410).read(IDCODE, 4) == 0x2003_0410


def test_an_explicit_revision_is_reported() -> None:
    assert make(dev_id=0x410, rev_id=0x2000).read(IDCODE, 4) >> 16 == 0x2000


def test_idcode_is_read_only() -> None:
    dbg = make(dev_id=0x414)
    dbg.write(IDCODE, 4, 0)
    assert dbg.read(IDCODE, 4) == 0x1003_0414


def test_cr_resets_to_zero() -> None:
    assert make().read(CR, 4) == 0


def test_cr_keeps_its_debug_bits() -> None:
    dbg = make()
    dbg.write(CR, 4, 0x0000_0127)  # DBG_SLEEP/STOP/STANDBY, TRACE_IOEN, DBG_IWDG_STOP
    assert dbg.read(CR, 4) == 0x0000_0127


def test_cr_reserved_bits_read_as_zero() -> None:
    dbg = make()
    dbg.write(CR, 4, 0xFFFF_FFFF)
    assert dbg.read(CR, 4) == 0x7FFF_FFE7


def test_cr_survives_a_system_reset() -> None:
    dbg = make()
    dbg.write(CR, 4, 0x100)
    dbg.reset()
    assert dbg.read(CR, 4) == 0x100


def test_cr_is_cleared_by_a_power_on_reset() -> None:
    dbg = make()
    dbg.write(CR, 4, 0x100)
    dbg.power_on_reset()
    assert dbg.read(CR, 4) == 0


def test_errata_mode_reads_idcode_as_zero_without_a_debugger() -> None:
    assert make(user_reads_zero=True).read(IDCODE, 4) == 0
